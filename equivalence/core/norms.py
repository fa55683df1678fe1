"""Normalisation kinds: LayerNorm over the last axis, and BatchNorm over the channels (the last axis, canonical).

Parameters in the canonical layout: one ``W`` of stacked rows (the Keras weight order), no ``b``:
``LayerNorm``: ``(gamma, beta)``, ``(2, C)``; ``BatchNorm``: ``(gamma, beta, moving_mean, moving_variance)``,
``(4, C)``. ``momentum`` is kept in Keras' meaning (the weight of the old average: torch's ``momentum=0.1`` is
Keras' 0.9, their meanings inverse), so equal kinds are equal layers, in inference and in training.

The error bound (derived in ``docs/layer-kinds.md``): ``h = gamma (x - mu) / sqrt(var + epsilon) + beta`` costs a
few roundings of ``|gamma| (|x| + |mu|) / sigma + |beta|`` (the centred value's error divided by ``sigma``, then the
affine part); ``scale = max(1, slope * max of that)``, with Dense's ``SAFETY * eps`` on top. For LayerNorm ``mu``'s
own rounding is ``eps`` of ``mean|x|`` (the row's magnitude), so ``|mu|`` is replaced by ``mean|x|``: a row with a
large offset and a small spread has a large scale, as its cancellation deserves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from equivalence.core.dtypes import EPSILON
from equivalence.core.kinds import LayerTrace, LayerWeights
from equivalence.core.spatial import apply_activation


def _rows(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _finite_max(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(np.max(a)) if a.size else 0.0


class _Normalisation:
    """What the norms share: ``ROWS`` stacked parameter rows of ``features``, the input's shape out, and the scale
    and weight rounding of their ``magnitude``."""

    ROWS = 0
    features: int

    def magnitude(self, x: np.ndarray, weights: LayerWeights) -> float:
        raise NotImplementedError

    def parameter_shapes(self, *, bias: bool = False) -> tuple[tuple[int, ...], ...]:
        return ((self.ROWS, self.features),)

    def parameter_count(self, *, bias: bool = False) -> int:
        return self.ROWS * self.features

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return in_shape

    def scale(self, trace: LayerTrace, weights: LayerWeights, *, slope: float) -> float:
        return max(1.0, slope * self.magnitude(trace.x, weights), _finite_max(np.abs(_rows(trace.h))))

    def weight_rounding_error(self, x: np.ndarray, weights: LayerWeights, *, slope: float,
                              weight_dtype: str) -> float:
        """Every parameter rounded moves by at most ``u`` of itself: ``u`` of the magnitude, to first order."""
        return slope * EPSILON[weight_dtype] / 2 * self.magnitude(x, weights)


@dataclass(frozen=True)
class LayerNorm(_Normalisation):
    """Layer normalisation over the last axis, with a scale and an offset (``gamma``, ``beta``)."""

    features: int
    epsilon: float

    name = "layernorm"
    FORMS = ("two-pass", "var")
    ROWS = 2

    def describe(self) -> str:
        return f"LayerNorm {self.features} epsilon {self.epsilon:g}"

    def _statistics(self, x: np.ndarray, form: str) -> tuple[np.ndarray, np.ndarray]:
        if form == "two-pass":
            mean = x.sum(axis=-1, keepdims=True) / x.shape[-1]
            return mean, ((x - mean) ** 2).sum(axis=-1, keepdims=True) / x.shape[-1]
        if form == "var":
            return np.mean(x, axis=-1, keepdims=True), np.var(x, axis=-1, keepdims=True)
        raise ValueError(f"unknown reference form {form!r}; use one of {list(self.FORMS)}")

    def reference(self, x: np.ndarray, weights: LayerWeights, activation: str | Callable[[np.ndarray], np.ndarray],
                  *, form: str = "two-pass") -> LayerTrace:
        x64 = _rows(x)
        gamma, beta = np.asarray(weights.W, dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            mean, var = self._statistics(x64, form)
            z = (x64 - mean) / np.sqrt(var + self.epsilon) * gamma + beta
            return LayerTrace(x64, z, apply_activation(activation, z))

    def magnitude(self, x: np.ndarray, weights: LayerWeights) -> float:
        """``max(|gamma| (|x| + mean|x|) / sqrt(var + epsilon) + |beta|)`` over the finite rows."""
        x64 = _rows(x)
        gamma, beta = np.abs(np.asarray(weights.W, dtype=np.float64))
        with np.errstate(invalid="ignore", over="ignore"):
            _, var = self._statistics(x64, "two-pass")
            spread = np.abs(x64) + np.mean(np.abs(x64), axis=-1, keepdims=True)
            return _finite_max(gamma * spread / np.sqrt(var + self.epsilon) + beta)


@dataclass(frozen=True)
class BatchNorm(_Normalisation):
    """Batch normalisation over the channels (the canonical last axis). ``batch_statistics``: normalised by the
    batch's own mean and variance (torch in training mode) rather than the moving ones (inference)."""

    features: int
    epsilon: float
    momentum: float | None  # Keras' meaning: the weight of the old moving average; None: not recorded (a graph)
    batch_statistics: bool = False

    name = "batchnorm"
    FORMS = ("direct", "folded")
    ROWS = 4

    def describe(self) -> str:
        stats = "batch statistics" if self.batch_statistics else "moving statistics"
        momentum = "not recorded" if self.momentum is None else f"{self.momentum:g}"
        return f"BatchNorm {self.features} epsilon {self.epsilon:g} momentum {momentum}, {stats}"

    def _statistics(self, x: np.ndarray, weights: LayerWeights) -> tuple[np.ndarray, np.ndarray]:
        W = np.asarray(weights.W, dtype=np.float64)
        if not self.batch_statistics:
            return W[2], W[3]
        axes = tuple(range(x.ndim - 1))
        return np.mean(x, axis=axes), np.var(x, axis=axes)

    def reference(self, x: np.ndarray, weights: LayerWeights, activation: str | Callable[[np.ndarray], np.ndarray],
                  *, form: str = "direct") -> LayerTrace:
        x64 = _rows(x)
        gamma, beta = np.asarray(weights.W, dtype=np.float64)[:2]
        with np.errstate(invalid="ignore", over="ignore"):
            mean, var = self._statistics(x64, weights)
            if form == "direct":
                z = (x64 - mean) / np.sqrt(var + self.epsilon) * gamma + beta
            elif form == "folded":
                factor = gamma / np.sqrt(var + self.epsilon)
                z = x64 * factor + (beta - mean * factor)
            else:
                raise ValueError(f"unknown reference form {form!r}; use one of {list(self.FORMS)}")
            return LayerTrace(x64, z, apply_activation(activation, z))

    def magnitude(self, x: np.ndarray, weights: LayerWeights) -> float:
        """``max(|gamma| (|x| + |mu|) / sqrt(var + epsilon) + |beta|)``."""
        x64 = _rows(x)
        gamma, beta = np.abs(np.asarray(weights.W, dtype=np.float64)[:2])
        with np.errstate(invalid="ignore", over="ignore"):
            mean, var = self._statistics(np.where(np.isfinite(x64), x64, 0.0), weights)
            return _finite_max(gamma * (np.abs(x64) + np.abs(mean)) / np.sqrt(var + self.epsilon) + beta)
