"""Sequence layer kinds: an embedding table, and a mean over the sequence, in the canonical batch-first layout.

Canonical layout: token ids ``(N, L)`` (integers), sequences ``(N, L, features)``; the embedding table
``(rows, dim)``, one row per id, in both frameworks (a transposed square table fits the shape: the trap "row
layout", named in ``equivalence.own``).

The error bounds (derived in ``docs/layer-kinds.md``):

* ``Embedding``: a row gather, exact (bound 0, like max pooling): any difference fails.
* ``SequenceMean``: a sum of ``L`` terms and one division. The recursive sum's worst case is ``(L - 1) u sum|x|``
  and the division adds ``u |h|``; divided by ``L`` that is at most ``(L/2) eps`` of ``S = max(sum|x| / L)``. The
  bound is ``SAFETY * eps * max(1, max(1, L / (2 SAFETY)) S, max|h|)``: average pooling's for ``L <= 16``, and
  the worst case outright for longer sequences.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from equivalence.core.dtypes import EPSILON
from equivalence.core.kinds import LayerTrace, LayerWeights
from equivalence.core.spatial import NoParameters, apply_activation, exact_scale
from equivalence.core.tolerance import SAFETY

SAFETY_WINDOW = 2 * SAFETY
"""The longest sum whose worst-case rounding, ``(L/2) eps S``, ``SAFETY * eps * S`` covers outright."""


def check_ids(x: np.ndarray, rows: int, length: int) -> np.ndarray:
    """``x`` as int64 token ids ``(N, L)``; ``ValueError`` in one line naming what is wrong (not integers, an id
    outside the table, another sequence length)."""
    x = np.asarray(x)
    if x.ndim == 1 and x.size == length:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != length or x.shape[0] < 1:
        raise ValueError(f"x has shape {x.shape}, but should be token ids (batch, {length})")
    integral = np.issubdtype(x.dtype, np.integer) or (
        np.issubdtype(x.dtype, np.floating) and np.all(np.isfinite(x)) and np.all(x == np.round(x)))
    if not integral:
        raise ValueError(f"x has dtype {x.dtype} with non-integer values, but should hold token ids (integers)")
    bad = (x < 0) | (x >= rows)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"x holds the id {x[where].item()!r} at {where}, but the embedding has {rows} rows (ids 0 to "
                         f"{rows - 1})")
    return x.astype(np.int64)


def ids_from_draw(x: np.ndarray, rows: int) -> np.ndarray:
    """Token ids from a drawn float input (``equivalence.core.case.drawn_input``): a deterministic map, so a
    failing draw shrinks and replays. Ids at both ends of the table (0, ``rows - 1``) come up often."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=rows, neginf=0.0)
    scaled = np.floor(np.abs(x) / max(float(np.max(np.abs(x))), 1e-300) * rows) if x.size else x
    return np.clip(scaled, 0, rows - 1).astype(np.int64)


@dataclass(frozen=True)
class Embedding:
    """A lookup table ``h[n, l] = W[ids[n, l]]``, ``W`` shaped ``(rows, dim)``, over sequences of ``length``.

    ``padding_idx``: torch's row kept at zero (never trained); ``mask_zero``: Keras' masking of id 0 in every
    layer after it. Neither changes the gather itself; both are named when the two sides differ
    (``equivalence.own``). Forms: ``take`` (a gather) and ``one-hot`` (one-hot rows times the table, BLAS).
    """

    rows: int
    dim: int
    length: int
    mask_zero: bool = False
    padding_idx: int | None = None

    name = "embedding"
    FORMS = ("take", "one-hot")
    integer_input = True

    def describe(self) -> str:
        extra = f", padding_idx {self.padding_idx}" if self.padding_idx is not None else ""
        return f"Embedding {self.rows}x{self.dim} over {self.length} tokens{extra}" + \
            (", mask_zero" if self.mask_zero else "")

    def parameter_shapes(self, *, bias: bool = False) -> tuple[tuple[int, ...], ...]:
        """The canonical layout: the table ``(rows, dim)``, as both frameworks store it."""
        return ((self.rows, self.dim),)

    def parameter_count(self, *, bias: bool = False) -> int:
        return self.rows * self.dim

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*in_shape, self.dim)

    def reference(self, x: np.ndarray, weights: LayerWeights,
                  activation: str | Callable[[np.ndarray], np.ndarray] = "linear", *,
                  form: str = "take") -> LayerTrace:
        ids = check_ids(x, self.rows, self.length)
        W = np.asarray(weights.W, dtype=np.float64)
        if form == "take":
            z = W[ids]
        elif form == "one-hot":
            with np.errstate(invalid="ignore"):
                z = np.eye(self.rows)[ids] @ W
        else:
            raise ValueError(f"unknown reference form {form!r}; use one of {list(self.FORMS)}")
        return LayerTrace(ids, z, apply_activation(activation, z))

    def parts(self, weights: LayerWeights) -> dict[str, np.ndarray]:
        return {"table": np.asarray(weights.W)}

    def wrong_layouts(self, weights: LayerWeights) -> dict[str, list[tuple[str, np.ndarray, str]]]:
        """A square table transposed: rows read as columns (``(dim, rows)`` stored as ``(rows, dim)``)."""
        W = np.asarray(weights.W)
        if W.shape[0] != W.shape[1]:
            return {}
        return {"table": [("row layout", W.T, "transposed (its rows are the other framework's columns), but should "
                           "hold one row per id in both")]}

    def magnitude(self, x: np.ndarray, weights: LayerWeights) -> float:
        return 0.0

    def scale(self, trace: LayerTrace, weights: LayerWeights, *, slope: float = 1.0) -> float:
        """A gather is exact: ``exact_scale`` (0 without an activation after it)."""
        return exact_scale(trace)

    def weight_rounding_error(self, x: np.ndarray, weights: LayerWeights, *, slope: float = 1.0,
                              weight_dtype: str = "float32") -> float:
        """A row rounded to ``weight_dtype`` moves by ``u`` of its largest gathered element."""
        rows = np.asarray(weights.W, dtype=np.float64)[check_ids(x, self.rows, self.length)]
        finite = np.abs(rows[np.isfinite(rows)])
        return slope * EPSILON[weight_dtype] / 2 * (float(finite.max()) if finite.size else 0.0)


@dataclass(frozen=True)
class SequenceMean(NoParameters):
    """The mean over the sequence axis, ``(N, L, C) -> (N, C)``: Keras ``GlobalAveragePooling1D``, torch
    ``x.mean(1)``. Forms: ``sum`` (a sum, then a division by ``L``) and ``mean`` (``np.mean``, pairwise)."""

    length: int
    features: int

    name = "mean"
    FORMS = ("sum", "mean")

    def describe(self) -> str:
        return f"mean over {self.length} tokens of {self.features} features"

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return in_shape[1:]

    def reference(self, x: np.ndarray, weights: LayerWeights | None = None,
                  activation: str | Callable[[np.ndarray], np.ndarray] = "linear", *,
                  form: str = "sum") -> LayerTrace:
        x64 = np.asarray(x, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            if form == "sum":
                z = x64.sum(axis=1) / self.length
            elif form == "mean":
                z = np.mean(x64, axis=1)
            else:
                raise ValueError(f"unknown reference form {form!r}; use one of {list(self.FORMS)}")
            return LayerTrace(x64, z, apply_activation(activation, z))

    def magnitude(self, x: np.ndarray, weights: LayerWeights | None = None) -> float:
        """``S = max(sum|x| / L)``: the largest sum the mean accumulates, divided."""
        x = np.abs(np.asarray(x, dtype=np.float64))
        s = np.where(np.isfinite(x), x, 0.0).sum(axis=1) / self.length
        return float(np.max(s)) if s.size else 0.0

    def scale(self, trace: LayerTrace, weights: LayerWeights | None = None, *, slope: float = 1.0) -> float:
        """``max(1, max(1, L / 16) slope S, max|h|)``: the worst case of a recursive sum of ``L`` terms."""
        h = np.asarray(trace.h, dtype=np.float64)
        finite = h[np.isfinite(h)]
        longer = max(1.0, self.length / SAFETY_WINDOW)
        return max(1.0, longer * slope * self.magnitude(trace.x), float(np.max(np.abs(finite))) if finite.size
                   else 0.0)

