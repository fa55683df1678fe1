"""Layer kinds: everything the core knows about one kind of layer, in one object.

A kind owns, for its layers: the canonical parameter layout (the shapes adapters read and write, in order),
the parameter count, the float64 reference, and the magnitude its rounding errors scale with, which the error
model (``equivalence.core.tolerance``) turns into a bound. Adding a kind means writing one such object; the
comparison, the golden vectors and the CLI ask it rather than knowing its formulae.

``DENSE`` is the first kind: ``h = act(x @ W + b)``, ``W`` shaped ``(in, out)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple, Protocol

import numpy as np

from equivalence.core.activations import ACTIVATIONS
from equivalence.core.dtypes import EPSILON, SMALLEST_SUBNORMAL


class LayerWeights(NamedTuple):
    """A dense layer's parameters in the canonical layout (``equivalence.core.layout``)."""

    W: np.ndarray  # (in, out)
    b: np.ndarray | None  # (out,) or None


class LayerTrace(NamedTuple):
    """One layer of the reference: its input, pre-activation and output, in float64."""

    x: np.ndarray
    z: np.ndarray
    h: np.ndarray


def finite_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` without NaN or inf: the error model bounds finite arithmetic only. A row is a vector along the
    last axis: ``(N, L, features)`` gives ``N * L`` rows (a token-wise layer's)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim > 2:
        x = x.reshape(-1, x.shape[-1])
    return x[np.all(np.isfinite(x), axis=-1)] if x.ndim == 2 else x[np.isfinite(x)]


def _affine_matmul(x: np.ndarray, W: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    z = x @ W.astype(np.float64)
    return z if b is None else z + b.astype(np.float64)


def _affine_dot(x: np.ndarray, W: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    z = (x[..., :, None] * W.astype(np.float64)).sum(axis=-2)
    return z if b is None else z + b.astype(np.float64)


class Dense:
    """A dense layer ``h = act(x @ W + b)``: kernel ``(in, out)``, optional bias ``(out,)``.

    ``x`` is ``(N, in)``, or ``(N, *tokens, in)`` for a layer applied to every token of a sequence alike (a
    transformer's projection): its leading axes are rows, so the layer is a dense layer on ``N * L`` rows, and its
    bound is the same per row (each output a dot product of length ``in``).

    The reference has two independent forms of the affine part: ``matmul`` (through BLAS) and ``dot``
    (an elementwise product and a plain sum for every sample and neuron, sharing no code path with BLAS).
    """

    name = "dense"
    FORMS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]] = {
        "matmul": _affine_matmul, "dot": _affine_dot}

    def parameter_shapes(self, n_in: int, n_out: int, *, bias: bool) -> tuple[tuple[int, ...], ...]:
        """The canonical layout: the kernel ``(in, out)`` (the Keras layout, so ``x @ W + b``), then the bias."""
        return ((n_in, n_out), (n_out,)) if bias else ((n_in, n_out),)

    def parameter_count(self, n_in: int, n_out: int, *, bias: bool) -> int:
        return sum(math.prod(shape) for shape in self.parameter_shapes(n_in, n_out, bias=bias))

    def reference(self, x: np.ndarray, weights: LayerWeights, activation: str | Callable[[np.ndarray], np.ndarray],
                  *, form: str = "matmul") -> LayerTrace:
        """The float64 layer; ``activation`` a name or a float64 function ``z -> h`` (a framework's own
        definition). NaN or inf inputs give NaN where ``inf - inf`` or ``inf * 0`` does, as in the frameworks."""
        act = ACTIVATIONS[activation].reference if isinstance(activation, str) else activation
        W, b = weights
        x64 = np.asarray(x, dtype=np.float64)
        if np.all(np.isfinite(x64)):
            z = self.FORMS[form](x64, W, b)
            return LayerTrace(x64, z, act(z))
        with np.errstate(invalid="ignore"):
            z = self.FORMS[form](x64, W, b)
            return LayerTrace(x64, z, act(z))

    def magnitude(self, x: np.ndarray, weights: LayerWeights) -> float:
        """``S = max(|x| @ |W| + |b|)`` in float64: the largest sum the layer accumulates."""
        W, b = weights
        s = np.abs(np.asarray(x, dtype=np.float64)) @ np.abs(W.astype(np.float64))
        if b is not None:
            s = s + np.abs(b.astype(np.float64))
        return float(np.max(s)) if s.size else 0.0

    def scale(self, trace: LayerTrace, weights: LayerWeights, *, slope: float) -> float:
        """``max(1, slope * S, max|h|)``: the magnitude the layer's rounding errors scale with, ``slope`` the
        activation's largest.

        Rows of ``x`` holding NaN or inf and non-finite outputs are left out: their positions are compared by
        class (``equivalence.core.compare``), not by size.
        """
        h = np.asarray(trace.h, dtype=np.float64)
        finite_h = h[np.isfinite(h)]
        out = float(np.max(np.abs(finite_h))) if finite_h.size else 0.0
        return max(1.0, slope * self.magnitude(finite_rows(trace.x), weights), out)

    def weight_rounding_error(self, x: np.ndarray, weights: LayerWeights, *, slope: float,
                              weight_dtype: str) -> float:
        """Absolute bound on how far rounding ``W`` and ``b`` to ``weight_dtype`` (to nearest) moves the output.

        A weight in the dtype's normal range moves by at most ``u |w|`` (``u = eps/2``, the unit roundoff), one
        below it by at most half the subnormal spacing ``t``; so ``|dz_j| <= u (|x| @ |W| + |b|)_j +
        t (sum|x| + 1)``, and the activation passes at most ``slope`` times the row's largest ``|dz|`` on. Not a
        safety multiple: a worst case, added to the computing dtype's own bound. Weights beyond the dtype's
        range are not rounded but overflow (the adapter refuses them).
        """
        x = finite_rows(x)
        if x.size == 0:
            return 0.0
        unit = EPSILON[weight_dtype] / 2
        half_subnormal = SMALLEST_SUBNORMAL[weight_dtype] / 2
        rows = float(np.max(np.abs(x).sum(axis=-1))) + (weights[1] is not None)
        return slope * (unit * self.magnitude(x, weights) + half_subnormal * rows)


class Kind(Protocol):
    """What the comparison and the error model ask of any layer kind (``Dense`` here; ``Conv``, ``Pool``,
    ``Flatten`` in ``equivalence.core.spatial``; ``BatchNorm``, ``LayerNorm`` in ``equivalence.core.norms``;
    ``Embedding``, ``SequenceMean`` in ``equivalence.core.embedding``; ``SelfAttention`` in
    ``equivalence.core.attention``; ``Residual``, the Add of a skip connection, in ``equivalence.core.residual``)."""

    name: str

    def reference(self, x: np.ndarray, weights: LayerWeights,
                  activation: str | Callable[[np.ndarray], np.ndarray]) -> LayerTrace: ...

    def scale(self, trace: LayerTrace, weights: LayerWeights, *, slope: float) -> float: ...

    def weight_rounding_error(self, x: np.ndarray, weights: LayerWeights, *, slope: float,
                              weight_dtype: str) -> float: ...


DENSE = Dense()
"""The dense layer kind, the one every stack of ``StackSpec`` is made of."""
