"""A batch normalisation a converter folded away, as a layer kind of its own.

At inference (moving statistics) a BatchNorm is one affine map per channel, ``h = x * s + t`` with
``s = gamma / sqrt(var + epsilon)`` and ``t = beta - mean * s``. Converters fold it: into the conv before it
(``W * s`` and ``(b - mean) * s + beta``: ``FoldedConv``), into the dense layer before it (the same fold:
``FoldedDense``; ``TFLiteConverter`` does), or into one ``Mul`` and one ``Add`` of per-channel constants
(``ChannelAffine``). The graph then holds other parameters than the model it came from, so the pair is
judged as one of these kinds: the model's side folded exactly, in float64 (``fold_batch_norm``), the graph's as
stored.

Canonical layout: ``W`` the folded conv kernel ``(*kernel, in, out)`` or the per-channel scale ``(C,)``; ``b`` the
shift, either one row ``(C,)`` (what a graph stores) or the rows it is the sum of, ``(rows, C)`` (the model's side:
``b * s``, ``-mean * s``, ``beta``), so that the error model sees the magnitudes that cancel in the sum.

The error bound (derived in ``docs/layer-kinds.md``): ``S = max(|x| @ |W| + sum|b rows|)`` (a conv's at its
patches), the magnitude of every term before the sums cancel. The unfolded side computes two layers (a conv or
nothing, then the BatchNorm), each within ``SAFETY eps`` of ``S``; the folded side computes one with parameters
the converter rounded once, which ``fold_tolerance`` holds within ``SAFETY eps`` of the terms they sum, so they
move the output by at most ``SAFETY eps S``. Either side is within ``2 SAFETY eps max(1, slope S, max|h|)`` of the
exact folded layer: ``scale`` is twice Dense's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from equivalence.core.dtypes import EPSILON, SMALLEST_SUBNORMAL
from equivalence.core.kinds import DENSE, LayerTrace, LayerWeights, finite_rows
from equivalence.core.norms import BatchNorm
from equivalence.core.spatial import Conv, apply_activation

FOLD_SAFETY = 8.0
"""Multiplier on ``eps`` of the magnitudes a folded parameter sums: each is at most five roundings of them (``var +
epsilon``, the square root, the division by it or the product with ``gamma``, the product with ``W`` or ``mean``,
the sum with ``beta``), ``5 u = 2.5 eps``; the same headroom as ``tolerance.SAFETY``."""

NAMED_FOLD = "its constants named after a BatchNormalization"
"""What a graph reader appends to the kind of a layer whose constants carry a BatchNorm's name (``TFLiteConverter``
names what it folded a Keras ``BatchNormalization`` into after the norm's ops): a fold to be matched with the
model's layers, or refused where the model has none to match it with (``equivalence.own_folded``)."""

LAYERS = 2.0
"""The layers the unfolded side computes (a conv or the identity, then the BatchNorm), each within its bound; on
the folded side, the layer and the fold's rounding."""


def shift(b: np.ndarray | None) -> np.ndarray | float:
    """The shift ``t``: ``b`` itself, or the sum of its rows."""
    if b is None:
        return 0.0
    b = np.asarray(b, dtype=np.float64)
    return b.sum(axis=0) if b.ndim == 2 else b


def spread(b: np.ndarray | None) -> np.ndarray | None:
    """``sum |b rows|``: the magnitude of the shift's terms before they cancel."""
    if b is None:
        return None
    b = np.abs(np.asarray(b, dtype=np.float64))
    return b.sum(axis=0) if b.ndim == 2 else b


def fold_batch_norm(norm: BatchNorm, rows: np.ndarray, W: np.ndarray | None = None,
                    b: np.ndarray | None = None) -> LayerWeights:
    """A BatchNorm of moving statistics (``rows``: gamma, beta, mean, var) folded into the layer before it (kernel
    ``W`` whose last axis is the channels, bias ``b``), exactly in float64: ``(W * s, rows of the shift)``; with no
    ``W``, the per-channel scale ``s`` itself."""
    if norm.batch_statistics:
        raise ValueError("a BatchNorm normalising by each batch's own statistics is no affine map: nothing to fold")
    gamma, beta, mean, var = np.asarray(rows, dtype=np.float64)
    s = gamma / np.sqrt(var + norm.epsilon)
    terms = [-mean * s, beta] if b is None else [np.asarray(b, dtype=np.float64) * s, -mean * s, beta]
    return LayerWeights(s if W is None else np.asarray(W, dtype=np.float64) * s, np.stack(terms))


def fold_batch_norm_into_next(norm: BatchNorm, rows: np.ndarray, W: np.ndarray,
                              b: np.ndarray | None = None) -> LayerWeights:
    """A BatchNorm of moving statistics (``rows``) folded into the dense layer after it (kernel ``W``, ``(n_in,
    n_out)``, bias ``b``), exactly in float64: ``(s[:, None] * W, rows of the shift)``, the shift
    ``b + (beta - mean * s) @ W`` held as its terms, ``b``, then ``-mean_i s_i W_i`` and ``beta_i W_i`` for every
    input ``i``: their magnitudes are the norm's own (``|x - mean| |s| + |beta|`` carried through ``|W|``), so the
    folded kind's bound covers the model's two layers."""
    if norm.batch_statistics:
        raise ValueError("a BatchNorm normalising by each batch's own statistics is no affine map: nothing to fold")
    gamma, beta, mean, var = np.asarray(rows, dtype=np.float64)
    s = gamma / np.sqrt(var + norm.epsilon)
    W = np.asarray(W, dtype=np.float64)
    terms = [*([] if b is None else [np.asarray(b, dtype=np.float64)]), *((-mean * s)[:, None] * W),
             *(beta[:, None] * W)]
    return LayerWeights(s[:, None] * W, np.stack(terms))


def fold_tolerance(weights: LayerWeights, dtype: str, stored: str | None = None) -> LayerWeights:
    """How far a converter's folded ``W`` and shift, rounded in ``dtype``, may be from the exact ones (``weights``,
    the model's side): ``FOLD_SAFETY eps`` of the magnitudes each sums; with ``stored`` (a narrower dtype the file
    stores them in, float16), also their rounding to it, to nearest: ``eps / 2`` of the value, or half the
    subnormal spacing below the normal range, whichever is larger (no wider: the float16 neighbour one spacing
    further is outside it, ``tests/own/test_onnx_folded_norms.py``)."""
    eps = EPSILON[dtype]
    W = np.asarray(weights.W, dtype=np.float64)
    allowed = LayerWeights(FOLD_SAFETY * eps * np.abs(W),
                           FOLD_SAFETY * eps * spread(weights.b) if weights.b is not None else None)
    if stored is None:
        return allowed

    def rounded(value: np.ndarray, fold: np.ndarray) -> np.ndarray:
        return fold + np.maximum(EPSILON[stored] / 2 * (np.abs(value) + fold), SMALLEST_SUBNORMAL[stored] / 2)

    return LayerWeights(rounded(W, allowed.W),
                        None if allowed.b is None else rounded(np.abs(shift(weights.b)), allowed.b))


def _scale(h: np.ndarray, magnitude: float, slope: float) -> float:
    h = np.asarray(h, dtype=np.float64)
    finite = h[np.isfinite(h)]
    return LAYERS * max(1.0, slope * magnitude, float(np.max(np.abs(finite))) if finite.size else 0.0)


@dataclass(frozen=True)
class ChannelAffine:
    """``h = act(x * s + t)`` over the channels (the canonical last axis): a BatchNorm at inference, its four
    parameters folded into a scale and a shift (tf2onnx writes a Keras BatchNormalization as a ``Mul`` and an
    ``Add``)."""

    features: int

    name = "channel_affine"
    FORMS = ("affine",)
    PARTS = ("scale", "shift")  # what W and b are called in a report

    def describe(self) -> str:
        return f"scale and shift of {self.features} channels (a BatchNorm folded)"

    def parameter_shapes(self, *, bias: bool = True) -> tuple[tuple[int, ...], ...]:
        return ((self.features,), (self.features,))

    def parameter_count(self, *, bias: bool = True) -> int:
        return 2 * self.features

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return in_shape

    def reference(self, x: np.ndarray, weights: LayerWeights, activation: str | Callable[[np.ndarray], np.ndarray],
                  *, form: str = "affine") -> LayerTrace:
        x64 = np.asarray(x, dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            z = x64 * np.asarray(weights.W, dtype=np.float64) + shift(weights.b)
            return LayerTrace(x64, z, apply_activation(activation, z))

    def magnitude(self, x: np.ndarray, weights: LayerWeights) -> float:
        """``max(|x| |s| + sum|t terms|)`` over the finite inputs."""
        x64 = np.abs(np.asarray(x, dtype=np.float64))
        terms = spread(weights.b)
        with np.errstate(invalid="ignore", over="ignore"):
            s = x64 * np.abs(np.asarray(weights.W, dtype=np.float64)) + (0.0 if terms is None else terms)
        s = s[np.isfinite(s)]
        return float(np.max(s)) if s.size else 0.0

    def scale(self, trace: LayerTrace, weights: LayerWeights, *, slope: float) -> float:
        return _scale(trace.h, self.magnitude(trace.x, weights), slope)

    def weight_rounding_error(self, x: np.ndarray, weights: LayerWeights, *, slope: float,
                              weight_dtype: str) -> float:
        return slope * EPSILON[weight_dtype] / 2 * self.magnitude(x, weights)


@dataclass(frozen=True)
class FoldedConv:
    """A conv and the BatchNorm after it, as one conv of folded weights (``torch.onnx.export`` in eval mode and
    ``TFLiteConverter`` fold them so). Its configuration is the conv's: equal kinds are equal convs."""

    conv: Conv

    name = "folded_conv"
    FORMS = Conv.FORMS
    PARTS = ("kernel", "bias")

    kernel = property(lambda self: self.conv.kernel)
    strides = property(lambda self: self.conv.strides)
    padding = property(lambda self: self.conv.padding)
    in_channels = property(lambda self: self.conv.in_channels)
    out_channels = property(lambda self: self.conv.out_channels)

    def describe(self) -> str:
        return f"{self.conv.describe()}, a BatchNorm folded in"

    def parameter_shapes(self, *, bias: bool = True) -> tuple[tuple[int, ...], ...]:
        return self.conv.parameter_shapes(bias=True)

    def parameter_count(self, *, bias: bool = True) -> int:
        return self.conv.parameter_count(bias=True)

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return self.conv.output_shape(in_shape)

    def reference(self, x: np.ndarray, weights: LayerWeights, activation: str | Callable[[np.ndarray], np.ndarray],
                  *, form: str = "im2col") -> LayerTrace:
        return self.conv.reference(x, LayerWeights(weights.W, np.broadcast_to(shift(weights.b), (
            self.out_channels,))), activation, form=form)

    def _spread(self, weights: LayerWeights) -> LayerWeights:
        return LayerWeights(np.asarray(weights.W).reshape(-1, self.out_channels), spread(weights.b))

    def magnitude(self, x: np.ndarray, weights: LayerWeights) -> float:
        """Dense's ``S`` at the patches, the shift's terms summed in magnitude."""
        return DENSE.magnitude(self.conv.patches(x), self._spread(weights))

    def scale(self, trace: LayerTrace, weights: LayerWeights, *, slope: float) -> float:
        h = np.asarray(trace.h).reshape(-1, self.out_channels)
        finite = self.conv.patches(trace.x)
        rows = np.all(np.isfinite(finite), axis=-1)
        return _scale(h, DENSE.magnitude(finite[rows], self._spread(weights)) if rows.any() else 0.0, slope)

    def weight_rounding_error(self, x: np.ndarray, weights: LayerWeights, *, slope: float,
                              weight_dtype: str) -> float:
        return DENSE.weight_rounding_error(self.conv.patches(x), self._spread(weights), slope=slope,
                                           weight_dtype=weight_dtype)


@dataclass(frozen=True)
class FoldedDense:
    """A dense layer and the BatchNorm after it, as one dense layer of folded weights (``TFLiteConverter`` folds a
    Keras ``Dense`` and the ``BatchNormalization`` after it so): ``(n_in, n_out)`` kernel ``W * s``, the shift's
    rows ``b * s``, ``-mean * s``, ``beta`` on the model's side. Its bound is ``FoldedConv``'s, the dense layer's
    ``S`` for the patches'. ``norm_first``: the BatchNorm before the dense layer, folded into it
    (``fold_batch_norm_into_next``; ``TFLiteConverter`` folds a ``BatchNormalization`` before a ``Dense`` so)."""

    n_in: int
    n_out: int
    norm_first: bool = False  # the BatchNorm before the dense layer (TFLiteConverter folds it into the next Dense)

    name = "folded_dense"
    FORMS = tuple(DENSE.FORMS)
    PARTS = ("kernel", "bias")

    def describe(self) -> str:
        return f"dense {self.n_in}->{self.n_out}, the BatchNorm {'before' if self.norm_first else 'after'} it folded in"

    def parameter_shapes(self, *, bias: bool = True) -> tuple[tuple[int, ...], ...]:
        return DENSE.parameter_shapes(self.n_in, self.n_out, bias=True)

    def parameter_count(self, *, bias: bool = True) -> int:
        return DENSE.parameter_count(self.n_in, self.n_out, bias=True)

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*in_shape[:-1], self.n_out)

    def reference(self, x: np.ndarray, weights: LayerWeights, activation: str | Callable[[np.ndarray], np.ndarray],
                  *, form: str = "matmul") -> LayerTrace:
        b = None if weights.b is None else np.asarray(shift(weights.b))
        return DENSE.reference(x, LayerWeights(np.asarray(weights.W, dtype=np.float64), b), activation, form=form)

    @staticmethod
    def _spread(weights: LayerWeights) -> LayerWeights:
        return LayerWeights(np.asarray(weights.W), spread(weights.b))

    def magnitude(self, x: np.ndarray, weights: LayerWeights) -> float:
        """Dense's ``S``, the shift's terms summed in magnitude."""
        return DENSE.magnitude(finite_rows(x), self._spread(weights))

    def scale(self, trace: LayerTrace, weights: LayerWeights, *, slope: float) -> float:
        return _scale(trace.h, self.magnitude(trace.x, weights), slope)

    def weight_rounding_error(self, x: np.ndarray, weights: LayerWeights, *, slope: float,
                              weight_dtype: str) -> float:
        return DENSE.weight_rounding_error(x, self._spread(weights), slope=slope, weight_dtype=weight_dtype)
