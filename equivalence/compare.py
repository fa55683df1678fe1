"""Layer-by-layer comparison of frameworks against the float64 reference and each other.

Every framework computes layer ``l`` on the same input: the reference's output of
layer ``l-1`` rounded to the spec's dtype. Errors therefore never carry over from
one layer to the next, and each layer is judged on its own error. (End-to-end
checking alone misses most transposed layers that have six or more sigmoid layers
after them, because each later sigmoid shrinks the error about tenfold.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np

from equivalence.layout import LayerWeights
from equivalence.reference import LayerTrace, layerwise_reference
from equivalence.spec import StackSpec
from equivalence.tolerance import PAIR_FACTOR, layer_bound

if TYPE_CHECKING:
    from equivalence.adapters import ParamCount

REFERENCE = "reference"


@dataclass(frozen=True)
class LayerResult:
    """One pair compared at one layer. ``ratio`` is the greatest |diff| over the bound."""

    pair: tuple[str, str]
    layer: int
    shape: tuple[int, ...]
    expected_shape: tuple[int, ...]
    bound: float
    max_abs: float
    max_rel: float  # over all elements when failing; at the worst-abs element when passing
    index: tuple[int, ...]
    got: float
    expected: float
    mismatches: int

    @property
    def ratio(self) -> float:
        if self.shape != self.expected_shape:
            return float("inf")
        return self.max_abs / self.bound if self.bound > 0 else (0.0 if self.max_abs == 0 else float("inf"))

    @property
    def passed(self) -> bool:
        return self.ratio <= 1.0

    @property
    def pair_name(self) -> str:
        return f"{self.pair[0]} vs {self.pair[1]}"

    def describe(self) -> str:
        where = f"{self.pair_name}, layer {self.layer}"
        if self.shape != self.expected_shape:
            return f"{where}: output shape {self.shape}, expected {self.expected_shape}"
        size = int(np.prod(self.shape))
        return (
            f"{where}: {self.mismatches} / {size} elements exceed the bound; "
            f"greatest abs diff {self.max_abs:.3g} at index {self.index} "
            f"({self.pair[0]} {self.got!r}, {self.pair[1]} {self.expected!r}), "
            f"greatest rel diff {self.max_rel:.3g}; bound {self.bound:.3g}, ratio {self.ratio:.3g}"
        )


def compare_arrays(got: np.ndarray, expected: np.ndarray, *, bound: float,
                   pair: tuple[str, str], layer: int) -> LayerResult:
    """Compare two arrays of one layer against an absolute ``bound``.

    The relative difference and the count over the bound are only worked out when
    the layer fails: on the hot path a passing layer costs one subtraction and one argmax.
    """
    got = np.asarray(got)
    expected = np.asarray(expected)
    if got.shape != expected.shape:
        return LayerResult(pair, layer, got.shape, expected.shape, bound, float("inf"), float("inf"),
                           (), float("nan"), float("nan"), -1)
    if got.size == 0:
        return LayerResult(pair, layer, got.shape, expected.shape, bound, 0.0, 0.0, (), 0.0, 0.0, 0)
    e = expected.astype(np.float64, copy=False)
    diff = np.abs(got.astype(np.float64, copy=False) - e)
    flat = int(np.argmax(diff))
    max_abs = float(diff.flat[flat])
    index = tuple(int(i) for i in np.unravel_index(flat, diff.shape))
    if max_abs <= bound:
        scale = abs(float(e.flat[flat]))
        max_rel = 0.0 if max_abs == 0 else (max_abs / scale if scale else float("inf"))
        mismatches = 0
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            max_rel = float(np.max(np.where(diff == 0, 0.0, diff / np.abs(e))))
        mismatches = int(np.count_nonzero(diff > bound))
    return LayerResult(pair=pair, layer=layer, shape=got.shape, expected_shape=expected.shape, bound=bound,
                       max_abs=max_abs, max_rel=max_rel, index=index, got=float(got.flat[flat]),
                       expected=float(e.flat[flat]), mismatches=mismatches)


def _as_float64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(np.float64, copy=False)


@dataclass(frozen=True)
class Comparison:
    """All pairs at all layers of one case."""

    case_id: str
    results: tuple[LayerResult, ...]

    @property
    def failures(self) -> tuple[LayerResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def worst_ratio(self) -> float:
        return max((r.ratio for r in self.results), default=0.0)

    def first_failure(self, pair: tuple[str, str] | None = None) -> LayerResult | None:
        """The first diverging layer (of ``pair``, or of any pair)."""
        for r in sorted(self.failures, key=lambda r: r.layer):
            if pair is None or r.pair == pair:
                return r
        return None

    def failing_pairs(self) -> dict[str, int]:
        """``{"torch vs reference": first failing layer, ...}``."""
        out: dict[str, int] = {}
        for r in sorted(self.failures, key=lambda r: r.layer):
            out.setdefault(r.pair_name, r.layer)
        return out

    def message(self) -> str:
        if self.passed:
            return f"{self.case_id}: all layers agree (worst ratio {self.worst_ratio:.3g})"
        lines = [f"{self.case_id}: {len(self.failures)} layer comparisons exceed the error model"]
        for pair, layer in self.failing_pairs().items():
            first = next(r for r in self.failures if r.pair_name == pair and r.layer == layer)
            lines.append(f"  first divergence, {first.describe()}")
        return "\n".join(lines)


def compare_layers(spec: StackSpec, weights: Sequence[LayerWeights], x: np.ndarray,
                   outputs: Mapping[str, Sequence[np.ndarray]], *, case_id: str | None = None,
                   reference: Sequence[LayerTrace] | None = None) -> Comparison:
    """Compare each framework's per-layer outputs with the reference, and with each other.

    ``outputs[name][l]`` is framework ``name``'s layer ``l`` fed ``reference[l].x``
    rounded to the dtype (see ``equivalence.reference.layerwise_reference``).
    """
    traces = list(reference) if reference is not None else layerwise_reference(spec, weights, x)
    results: list[LayerResult] = []
    for layer, (trace, (W, b), act) in enumerate(zip(traces, weights, spec.activations)):
        bound = layer_bound(x=trace.x, W=W, b=b, h=trace.h, activation=act, dtype=spec.dtype)
        as64 = {name: _as_float64(outs[layer]) for name, outs in outputs.items()}
        for name, out in as64.items():
            results.append(compare_arrays(out, trace.h, bound=bound, pair=(name, REFERENCE), layer=layer))
        for a, b_name in combinations(as64, 2):
            results.append(compare_arrays(as64[a], as64[b_name], bound=PAIR_FACTOR * bound,
                                          pair=(a, b_name), layer=layer))
    return Comparison(case_id or spec.id, tuple(results))


def param_count_problems(spec: StackSpec, count: ParamCount, *, framework: str) -> list[str]:
    """What is wrong with a framework's parameter count for ``spec`` (empty when all agree).

    Expected: ``in*out (+ out)`` per layer, their sum in total, and one kernel
    (+ one bias) trainable tensor per layer.
    """
    problems = []
    if count.per_layer != spec.param_counts:
        problems.append(f"{framework}: per-layer parameters {count.per_layer}, expected {spec.param_counts}")
    if count.total != spec.total_params:
        hint = " (layers held in a plain python list are not registered)" if count.total == 0 else ""
        problems.append(f"{framework}: total trainable parameters {count.total}, expected {spec.total_params}{hint}")
    expected_tensors = spec.tensors_per_layer * spec.depth
    if count.trainable_tensors != expected_tensors:
        problems.append(f"{framework}: {count.trainable_tensors} trainable tensors, expected {expected_tensors}")
    return problems
