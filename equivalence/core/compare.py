"""Layer-by-layer comparison of frameworks against the float64 reference and each other.

Every framework computes layer ``l`` on the same input: the reference's output of
layer ``l-1`` rounded to the spec's dtype. Errors therefore never carry over from
one layer to the next, and each layer is judged on its own error. (End-to-end
checking alone misses most transposed layers that have six or more sigmoid layers
after them, because each later sigmoid shrinks the error about tenfold.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np

from equivalence.core.conditions import Facts
from equivalence.core.diagnosis import diagnose
from equivalence.core.known_differences import definition, excused
from equivalence.core.layout import LayerWeights
from equivalence.core.reference import LayerTrace, layerwise_reference
from equivalence.core.spec import ChainSpec, StackSpec
from equivalence.core.tolerance import forward_bound, framework_of, own_definition

if TYPE_CHECKING:
    from equivalence.core.types import ParamCount

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
    max_rel: float  # at the worst-abs element (over all elements, a value that underflowed would be 100 % off)
    index: tuple[int, ...]
    got: float
    expected: float
    mismatches: int
    nonfinite_mismatches: int = 0
    nonfinite_index: tuple[int, ...] = ()
    nonfinite_got: float = 0.0
    nonfinite_expected: float = 0.0
    excused: int = 0
    kind: str = ""
    """A layer of another kind than dense: its kind and configuration (``"conv: Conv2D 3x3 ..."``), for messages."""
    cause: str = ""
    """The well-known mistake a failing output matches (``equivalence.core.diagnosis``), or empty."""
    unjudged: str = ""
    """Why the bound judges nothing at this layer (it is not below the outputs' range), or empty: not a pass."""

    @property
    def ratio(self) -> float:
        if self.shape != self.expected_shape or self.nonfinite_mismatches:
            return float("inf")
        return self.max_abs / self.bound if self.bound > 0 else (0.0 if self.max_abs == 0 else float("inf"))

    @property
    def passed(self) -> bool:
        return self.ratio <= 1.0 and not self.unjudged

    def failure_line(self) -> str:
        """How a pair's first failing layer is reported: its divergence, or why it was not judged."""
        return self.describe() if self.unjudged else f"first divergence, {self.describe()}"

    @property
    def pair_name(self) -> str:
        return f"{self.pair[0]} vs {self.pair[1]}"

    def describe(self) -> str:
        where = f"{self.pair_name}, layer {self.layer}" + (f" ({self.kind})" if self.kind else "")
        if self.shape != self.expected_shape:
            return f"{where}: output shape {self.shape}, expected {self.expected_shape}"
        if self.unjudged:
            return f"{where}: not judged: {self.unjudged}"
        size = int(np.prod(self.shape))
        if self.nonfinite_mismatches:
            return (
                f"{where}: {self.nonfinite_mismatches} / {size} elements differ in finiteness (NaN, +inf, -inf "
                f"or finite); first at index {self.nonfinite_index} ({self.pair[0]} {self.nonfinite_got!r}, "
                f"{self.pair[1]} {self.nonfinite_expected!r})"
            )
        return (
            f"{where}: {self.mismatches} / {size} elements exceed the bound; "
            f"greatest abs diff {self.max_abs:.3g} at index {self.index} "
            f"({self.pair[0]} {self.got!r}, {self.pair[1]} {self.expected!r}), "
            f"rel diff there {self.max_rel:.3g}; bound {self.bound:.3g}, ratio {self.ratio:.3g}"
            + (f"; looks like: {self.cause}" if self.cause else "")
        )


def finiteness(a: np.ndarray) -> np.ndarray:
    """Class of every element: 0 finite, 1 NaN, 2 +inf, 3 -inf (zeros of either sign are finite)."""
    a = np.asarray(a, dtype=np.float64)
    return np.select([np.isnan(a), np.isposinf(a), np.isneginf(a)], [1, 2, 3], default=0)


def compare_arrays(got: np.ndarray, expected: np.ndarray, *, bound: float,
                   pair: tuple[str, str], layer: int, excused: np.ndarray | None = None) -> LayerResult:
    """Compare two arrays of one layer: non-finite positions by class, finite ones against ``bound``.

    NaN, +inf and -inf must sit at the same positions in both arrays; the finite
    elements of both must be within the absolute ``bound``. ``excused`` marks
    positions a named known difference (``equivalence.core.known_differences``) exempts.

    When nothing is excused and every difference is finite (the hot path), a
    passing layer costs one subtraction and one argmax; the count over the bound is
    only worked out when the layer fails.
    """
    got = np.asarray(got)
    expected = np.asarray(expected)
    if got.shape != expected.shape:
        return LayerResult(pair, layer, got.shape, expected.shape, bound, float("inf"), float("inf"),
                           (), float("nan"), float("nan"), -1)
    g = got.astype(np.float64, copy=False)
    e = expected.astype(np.float64, copy=False)
    if g.size == 0:
        return LayerResult(pair, layer, got.shape, expected.shape, bound, 0.0, 0.0, (), 0.0, 0.0, 0)
    if excused is None or not excused.any():
        finite = _compare_finite(g, e, bound=bound, pair=pair, layer=layer)
        if finite is not None:
            return finite
    skip = np.zeros(g.shape, dtype=bool) if excused is None else np.broadcast_to(excused, g.shape)
    cg, ce = finiteness(g), finiteness(e)
    wrong_class = (cg != ce) & ~skip
    both_finite = (cg == 0) & (ce == 0) & ~skip
    diff = np.where(both_finite, np.abs(np.where(both_finite, g, 0.0) - np.where(both_finite, e, 0.0)), 0.0)
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
    scale = abs(float(e[index]))
    max_rel = 0.0 if diff[index] == 0 else (float(diff[index]) / scale if scale else float("inf"))
    nonfinite = {}
    if wrong_class.any():
        first = tuple(int(i) for i in np.argwhere(wrong_class)[0])
        nonfinite = dict(nonfinite_mismatches=int(np.count_nonzero(wrong_class)), nonfinite_index=first,
                         nonfinite_got=float(g[first]), nonfinite_expected=float(e[first]))
    return LayerResult(
        pair=pair, layer=layer, shape=got.shape, expected_shape=expected.shape, bound=bound,
        max_abs=float(diff[index]), max_rel=max_rel, index=index,
        got=float(g[index]), expected=float(e[index]), mismatches=int(np.count_nonzero(diff > bound)),
        excused=int(np.count_nonzero(skip & (cg != ce))), **nonfinite,
    )


def _compare_finite(g: np.ndarray, e: np.ndarray, *, bound: float, pair: tuple[str, str],
                    layer: int) -> LayerResult | None:
    """The comparison when every element of both is finite; ``None`` when one is not.

    No separate finiteness pass: a NaN or an infinity in ``g`` or ``e`` makes that
    element's difference NaN or infinite, and ``argmax`` lands on the first such
    element, so a finite greatest difference means every element is finite.
    """
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: the slow path takes it
        diff = np.abs(g - e)
    flat = int(np.argmax(diff))
    max_abs = float(diff.flat[flat])
    if not np.isfinite(max_abs):
        return None
    index = tuple(int(i) for i in np.unravel_index(flat, diff.shape))
    scale = abs(float(e.flat[flat]))
    max_rel = 0.0 if max_abs == 0 else (max_abs / scale if scale else float("inf"))
    mismatches = 0 if max_abs <= bound else int(np.count_nonzero(diff > bound))
    return LayerResult(pair=pair, layer=layer, shape=g.shape, expected_shape=e.shape, bound=bound,
                       max_abs=max_abs, max_rel=max_rel, index=index, got=float(g.flat[flat]),
                       expected=float(e.flat[flat]), mismatches=mismatches)


def _as_float64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(np.float64, copy=False)


@dataclass(frozen=True)
class Comparison:
    """All pairs at all layers of one case."""

    case_id: str
    results: tuple[LayerResult, ...]
    not_run: Mapping[str, str] = field(default_factory=dict)
    """Framework -> why it was not run on this case (no kernel for an activation and dtype, or it refused)."""

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
        unjudged = sum(bool(r.unjudged) for r in self.failures)
        lines = [f"{self.case_id}: {len(self.failures) - unjudged} layer comparisons exceed the error model"
                 + (f", {unjudged} not judged" if unjudged else "")]
        for pair, layer in self.failing_pairs().items():
            first = next(r for r in self.failures if r.pair_name == pair and r.layer == layer)
            lines.append(f"  {first.failure_line()}")
        return "\n".join(lines)


def compare_layers(spec: StackSpec | ChainSpec, weights: Sequence[LayerWeights], x: np.ndarray,
                   outputs: Mapping[str, Sequence[np.ndarray | None]], *, case_id: str | None = None,
                   reference: Sequence[LayerTrace] | None = None,
                   facts: Mapping[str, Facts] | None = None) -> Comparison:
    """Compare each framework's per-layer outputs with the reference, and with each other.

    ``outputs[name][l]`` is framework ``name``'s layer ``l`` fed ``reference[l].x``
    rounded to the dtype (see ``equivalence.core.reference.layerwise_reference``), or None for a layer
    the framework has no activation for (Keras 2 has no ``celu``): its other layers are still compared.
    ``facts[name]``: the facts behind outputs not computed in this process
    (``"keras@recorded"``: those they were recorded under: backend, kernel path, probes), so the
    named known differences that apply are those active there, not this process's.
    """
    traces = list(reference) if reference is not None else layerwise_reference(spec, weights, x)
    facts = facts or {}
    results: list[LayerResult] = []
    for layer, (trace, layer_weights, act, kind) in enumerate(zip(traces, weights, spec.activations, spec.kinds)):
        start = len(results)
        ran = {name: outs[layer] for name, outs in outputs.items() if outs[layer] is not None}
        bound = forward_bound(trace, layer_weights, act, spec.dtype, {name: facts.get(name) for name in ran},
                              kind=kind)
        excuse = {name: excused(framework_of(name), act, spec.dtype, trace.z, np.asarray(out), x=trace.x,
                                facts=facts.get(name), layer_kind=kind.name)
                  for name, out in ran.items()}
        as64 = {name: _as_float64(out) for name, out in ran.items()}
        redefined = {name: d for name in ran
                     if (d := definition(framework_of(name), act, spec.dtype, facts=facts.get(name)))}
        for name, out in as64.items():
            expected = trace.h
            if name in redefined:  # judged against its own definition, by the same error model
                expected = own_definition(redefined[name], trace, layer_weights, kind=kind).h
            result = compare_arrays(out, expected, bound=bound.against_reference(name), pair=(name, REFERENCE),
                                    layer=layer, excused=excuse[name])
            if not result.passed and hasattr(kind, "describe"):
                result = replace(result, cause=diagnose(kind, trace, layer_weights, act, out, result.bound) or "")
            results.append(result)
        for a, b_name in combinations(as64, 2):
            if (a in redefined) != (b_name in redefined):  # different functions by design: each judged alone
                continue
            results.append(compare_arrays(as64[a], as64[b_name], bound=bound.between(a, b_name),
                                          pair=(a, b_name), layer=layer, excused=excuse[a] | excuse[b_name]))
        if hasattr(kind, "describe"):  # every kind but dense, whose layers a stack's spec describes
            results[start:] = [replace(r, kind=f"{kind.name}: {kind.describe()}") for r in results[start:]]
        if hasattr(kind, "unjudged"):  # a kind whose affordable bound can pass its outputs' range
            results[start:] = [replace(r, unjudged=kind.unjudged(trace, r.bound)) for r in results[start:]]
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
