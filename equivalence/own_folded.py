"""A BatchNorm a converter folded away, matched with the layers it was folded from.

A graph read from a converter's file may hold a BatchNorm (moving statistics) in another form than the model it
came from: ``torch.onnx.export`` in eval mode folds a ``BatchNorm2d`` into the ``Conv`` before it (one conv of
folded weights where the model has two layers), tf2onnx writes a Keras ``BatchNormalization`` as a ``Mul`` and an
``Add`` of per-channel constants (a scale and a shift where the model has four parameters). ``fold_norms`` rewrites
the model's side of such a pair into the graph's kinds (``equivalence.core.folded``), its BatchNorm folded exactly
in float64, so the pair is judged layer by layer; the report names what was matched with what.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from equivalence.core.dtypes import EPSILON, numpy_dtype
from equivalence.core.folded import FOLD_SAFETY, ChannelAffine, FoldedConv, fold_batch_norm, fold_tolerance, shift
from equivalence.core.kinds import LayerWeights
from equivalence.core.norms import BatchNorm
from equivalence.core.spatial import Conv
from equivalence.core.walk import DenseUnit

FOLDED = (FoldedConv, ChannelAffine)
"""The kinds of a BatchNorm folded."""
CONV_FOLDED = "the BatchNorm folded into the conv by the converter"
AFFINE_FOLDED = "the BatchNorm's statistics folded into a scale and a shift by the converter"


def _folds(unit: DenseUnit) -> bool:
    return isinstance(unit.layer_kind, BatchNorm) and not unit.layer_kind.batch_statistics


def _conv_with_norm(units: Sequence[DenseUnit], i: int) -> bool:
    """``units[i]`` a conv with no activation of its own, and ``units[i + 1]`` a BatchNorm of moving statistics."""
    return i + 1 < len(units) and isinstance(units[i].layer_kind, Conv) and units[i].activation == "linear" \
        and _folds(units[i + 1]) and units[i + 1].layer_kind.features == units[i].layer_kind.out_channels


def _merged(conv: DenseUnit, norm: DenseUnit) -> DenseUnit:
    """The model's conv and BatchNorm as one unit of ``FoldedConv``: folded weights, run as the two layers."""
    W, b = fold_batch_norm(norm.layer_kind, norm.W, conv.W, conv.b)

    def run(x: np.ndarray) -> np.ndarray:
        return norm.run(conv.run(x))

    return replace(conv, name=f"{conv.name}+{norm.name}", kind=f"{conv.kind}+{norm.kind}", W=W, b=b, run=run,
                   write=None, activation=norm.activation, activation_source=norm.activation_source,
                   layer_kind=FoldedConv(conv.layer_kind), out_shape=norm.out_shape)


def _as_affine(norm: DenseUnit) -> DenseUnit:
    """The model's BatchNorm as the scale and shift it computes (``ChannelAffine``), folded exactly."""
    W, b = fold_batch_norm(norm.layer_kind, norm.W)
    return replace(norm, W=W, b=b, write=None, layer_kind=ChannelAffine(norm.layer_kind.features))


def _fold_into(model: Sequence[DenseUnit], graph: Sequence[DenseUnit]) -> tuple[list[DenseUnit], list[DenseUnit]]:
    """``model`` with each BatchNorm the ``graph`` holds folded rewritten as the graph holds it, and ``graph`` with
    its convs that stand for a conv and a BatchNorm read as such; unchanged where the two do not line up."""
    out_model: list[DenseUnit] = []
    out_graph: list[DenseUnit] = []
    i = 0
    for j, unit in enumerate(graph):
        if i >= len(model):
            return list(model), list(graph)
        mine = model[i]
        following = graph[j + 1] if j + 1 < len(graph) else None
        if isinstance(unit.layer_kind, Conv) and unit.layer_kind == mine.layer_kind and _conv_with_norm(model, i) \
                and not (following is not None and isinstance(following.layer_kind, (BatchNorm, ChannelAffine))):
            out_model.append(_merged(mine, model[i + 1]))
            out_graph.append(replace(unit, kind=f"{unit.kind}, {CONV_FOLDED}", layer_kind=FoldedConv(unit.layer_kind)))
            i += 2
            continue
        if isinstance(unit.layer_kind, ChannelAffine) and _folds(mine) \
                and mine.layer_kind.features == unit.layer_kind.features:
            out_model.append(_as_affine(mine))
            out_graph.append(replace(unit, kind=f"{unit.kind}, {AFFINE_FOLDED}"))
            i += 1
            continue
        out_model.append(mine)
        out_graph.append(unit)
        i += 1
    if i != len(model):
        return list(model), list(graph)
    return out_model, out_graph


def fold_norms(first: Sequence[DenseUnit], second: Sequence[DenseUnit], *,
               graph: tuple[bool, bool]) -> tuple[list[DenseUnit], list[DenseUnit]]:
    """Both sides, the BatchNorms a converter folded matched with their folded form: ``graph`` says which side is
    a converter's graph (a hand port missing a BatchNorm is not folded, it is a difference)."""
    if graph[1] and not graph[0]:
        return _fold_into(first, second)
    if graph[0] and not graph[1]:
        folded_second, folded_first = _fold_into(second, first)
        return folded_first, folded_second
    return list(first), list(second)


def folded_pair(t: DenseUnit, k: DenseUnit) -> bool:
    """One side of the pair is a model's BatchNorm ``fold_norms`` folded (its shift held as the rows it sums)."""
    return isinstance(t.layer_kind, FOLDED) and (np.ndim(t.b) == 2 or np.ndim(k.b) == 2)


def folded_weight_differences(where: str, t: DenseUnit, k: DenseUnit, a: str, b: str,
                              narrower: str | None = None) -> list[tuple[str, str]]:
    """The folded parameters of ``k`` (as a converter stored them) against ``t``'s folded exactly, within the fold's
    rounding (``fold_tolerance``); ``t`` is the side holding the shift's terms as rows (the model's). ``narrower``:
    the dtype the graph's side stores its weights in, narrower than the one it computes in (``litert_fp16w``:
    float16), whose rounding to nearest of the converter's folded values is allowed on top."""
    exact, stored, first, second = (t, k, a, b) if np.ndim(t.b) == 2 else (k, t, b, a)
    allowed = fold_tolerance(LayerWeights(exact.W, exact.b), exact.dtype)
    if narrower is not None:
        allowed = LayerWeights(*(None if tol is None else stored_rounding(value, tol, narrower)
                                 for value, tol in ((exact.W, allowed.W), (shift(exact.b), allowed.b))))
    out = []
    parts = exact.layer_kind.PARTS
    for what, got, expected, tol in ((parts[0], stored.W, exact.W, allowed.W),
                                     (parts[1], stored.b, shift(exact.b), allowed.b)):
        if got is None or tol is None:
            continue
        with np.errstate(invalid="ignore"):
            diff = np.abs(np.asarray(got, dtype=np.float64) - expected)
        off = ~(diff <= tol)
        if off.any():
            index = tuple(int(j) for j in np.unravel_index(int(np.argmax(np.where(off, diff, -1.0))), diff.shape))
            out.append(("kernel" if what == parts[0] else "bias values",
                        f"{where}: {what}: {int(off.sum())} / {diff.size} elements differ from the {first} layers "
                        f"folded (beyond the fold's rounding, {fold_note(exact.dtype, narrower)}); greatest abs diff "
                        f"{float(diff[index]):.3g} at index {index} ({second} {float(got[index])!r}, {first} "
                        f"{float(np.broadcast_to(expected, diff.shape)[index])!r})"))
    return out


def fold_note(dtype: str, narrower: str | None = None) -> str:
    """How far the fold's rounding (and the storing in ``narrower``) may move a folded parameter."""
    stored = f", then rounded to {narrower} as stored" if narrower is not None else ""
    return f"{FOLD_SAFETY:g} eps of {dtype} of the terms each sums{stored}"


def stored_rounding(value: np.ndarray | float, tol: np.ndarray, narrower: str) -> np.ndarray:
    """``tol`` (the fold's rounding of ``value``) widened by storing the converter's folded value in ``narrower``, to
    nearest: half its eps of the value (within ``tol`` of ``value``), or, where the value is subnormal there and
    rounds to a fixed grid, half that grid's spacing."""
    info = np.finfo(numpy_dtype(narrower))
    unit = EPSILON[narrower] / 2
    return tol + np.maximum(unit * (np.abs(np.asarray(value, dtype=np.float64)) + tol),
                            float(info.smallest_subnormal) / 2)
