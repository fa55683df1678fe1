"""The likely cause of a failing layer: which well-known mistake its output matches.

When a layer of a kind other than dense fails against its reference, each of the kind's suspects (``SUSPECTS``:
a kernel flipped, another epsilon, the other variance, ...) gives the float64 output the layer would have had
with that mistake; the first the framework's output matches within the same bound is named in the failure
("looks like: epsilon 1e-05 instead of 0.001"). Only failing layers are diagnosed, so a passing run pays nothing.
A new kind adds its suspects with one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np

from equivalence.core.kinds import LayerTrace, LayerWeights
from equivalence.core.spatial import apply_activation


class Suspect(NamedTuple):
    """A mistake: what to call it, and the float64 output of the layer had it been made (None: not applicable)."""

    cause: str
    """Formatted with the layer's kind (``{kind.epsilon:g}``)."""
    output: Callable[[Any, LayerTrace, LayerWeights, str], np.ndarray | None]


def _with_kind(**fields: Any) -> Callable[[Any, LayerTrace, LayerWeights, str], np.ndarray | None]:
    def output(kind: Any, trace: LayerTrace, weights: LayerWeights, activation: str) -> np.ndarray | None:
        if all(getattr(kind, name) == value for name, value in fields.items()):
            return None
        return replace(kind, **fields).reference(trace.x, weights, activation).h
    return output


def _flipped_kernel(kind: Any, trace: LayerTrace, weights: LayerWeights, activation: str) -> np.ndarray | None:
    W = np.asarray(weights.W)
    flipped = W[(*(slice(None, None, -1),) * kind.rank, Ellipsis)]
    if np.array_equal(flipped, W):
        return None
    return kind.reference(trace.x, LayerWeights(flipped, weights.b), activation).h


def _unbiased_variance(kind: Any, trace: LayerTrace, weights: LayerWeights, activation: str) -> np.ndarray | None:
    x = np.asarray(trace.x, dtype=np.float64)
    n = x.shape[-1]
    if n < 2:
        return None
    gamma, beta = np.asarray(weights.W, dtype=np.float64)[:2]
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (x - x.mean(axis=-1, keepdims=True)) / np.sqrt(x.var(axis=-1, ddof=1, keepdims=True) + kind.epsilon)
        return apply_activation(activation, z * gamma + beta)


_EPSILONS = (1e-5, 1e-3, 1e-6, 1e-12, 0.0)
"""Epsilons frameworks and papers default to (torch 1e-5, Keras 1e-3, BERT's LayerNorm 1e-12)."""


def _epsilons() -> list[Suspect]:
    return [Suspect(f"epsilon {eps:g} instead of {{kind.epsilon:g}}", _with_kind(epsilon=eps)) for eps in _EPSILONS]


SUSPECTS: dict[str, Sequence[Suspect]] = {
    "conv": (Suspect("kernel flipped (a true convolution, where frameworks compute a cross-correlation)",
                     _flipped_kernel),),
    "pool": (Suspect("padding counted in the average (count_include_pad) or not, the other way round",
                     lambda kind, trace, weights, act: None if kind.op == "max" else replace(
                         kind, count_include_pad=not kind.count_include_pad).reference(trace.x, weights, act).h),),
    "batchnorm": (*_epsilons(),
                  Suspect("batch statistics where the moving ones are due, or the other way round",
                          lambda kind, trace, weights, act: replace(
                              kind, batch_statistics=not kind.batch_statistics).reference(trace.x, weights, act).h)),
    "layernorm": (*_epsilons(),
                  Suspect("variance divided by n - 1 (unbiased) instead of n", _unbiased_variance)),
}
"""Each kind's suspects, tried in order."""


def diagnose(kind: Any, trace: LayerTrace, weights: LayerWeights, activation: str, got: np.ndarray,
             bound: float) -> str | None:
    """The first suspect of ``kind`` whose output ``got`` matches within ``bound`` (finite elements), or None."""
    got = np.asarray(got, dtype=np.float64)
    for suspect in SUSPECTS.get(getattr(kind, "name", ""), ()):
        with np.errstate(invalid="ignore", over="ignore"):
            expected = suspect.output(kind, trace, weights, activation)
        if expected is None or np.shape(expected) != got.shape:
            continue
        finite = np.isfinite(expected) & np.isfinite(got)
        if finite.any() and np.array_equal(np.isfinite(expected), np.isfinite(got)) \
                and float(np.max(np.abs(got[finite] - expected[finite]))) <= bound:
            return suspect.cause.format(kind=kind)
    return None
