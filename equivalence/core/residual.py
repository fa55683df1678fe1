"""The residual Add as a layer kind: ``h = act(branch + skip)``, a chain's output plus an earlier value of the chain.

A residual block ``out = x + f(x)`` is judged as the units of ``f``, then one Add unit; ``a(x) + b(x)`` as the
units of ``a``, a ``Branch`` unit (``b`` starts from ``x``: an exact copy), the units of ``b``, then the Add. In the
canonical layout the Add's input is its two operands side by side along the last axis, ``[branch, skip]`` shaped
``(..., 2 C)``, so the Add runs, and is fed the reference's input, like every other unit (``layerwise_reference``
asks ``operands`` to place them). ``skip`` says whose output the second operand is: a unit's index in the chain,
or ``INPUT`` (-1, the model's input).

The error bound (derived in ``docs/layer-kinds.md``): operands ``a``, ``b`` carrying errors ``e_a``, ``e_b``
give ``fl(a + b) = (a + b)(1 + d)``, ``|d| <= u = eps / 2``, so the sum is off by at most ``|e_a| + |e_b| +
u |a + b|``. The per-layer check feeds the Add the reference's operands rounded to the dtype (each operand's own
error was judged at its own layer), so ``e_a = e_b = 0`` and one rounding is left: at most ``u max(|a| + |b|)``,
which an activation after it passes on times its largest slope. That is Dense's bound with
``S = max(|a| + |b|)``: ``SAFETY * eps * max(1, slope * S, max|h|)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from equivalence.core.kinds import LayerTrace, LayerWeights, finite_rows
from equivalence.core.spatial import NoParameters, apply_activation
from equivalence.core.walk import DenseUnit, ModelNotSupported

INPUT = -1
"""``Residual.skip`` of an Add whose skip operand is the model's input."""


@dataclass(frozen=True)
class Residual(NoParameters):
    """An Add of the chain's output (the branch) and the output of unit ``skip`` (``INPUT``: the model's input),
    both shaped ``features`` per sample (channels-last), then an activation."""

    features: tuple[int, ...]
    skip: int

    name = "add"
    FORMS = ("add", "sum")
    INDEX_FIELDS = ("skip",)
    """Fields holding a unit's index, ``INPUT`` (-1) or more (a chain's JSON form reads them so)."""

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """One operand's shape, ``features``, whether ``in_shape`` is the branch's (a chain's previous layer) or the
        two operands side by side (``operands_shape``)."""
        return tuple(self.features)

    @property
    def operands_shape(self) -> tuple[int, ...]:
        """One sample's shape of the Add's canonical input: the two operands side by side (``operands``)."""
        return (*self.features[:-1], 2 * self.features[-1])

    def describe(self) -> str:
        return f"Add {'x'.join(map(str, self.features))} + {skip_source(self.skip)}"

    def operands(self, branch: np.ndarray, earlier: Sequence[np.ndarray]) -> np.ndarray:
        """The Add's canonical input: ``branch`` and the skip operand side by side; ``earlier[0]`` is the model's
        input, ``earlier[j + 1]`` unit ``j``'s output."""
        return np.concatenate([branch, earlier[self.skip + 1]], axis=-1)

    def split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(branch, skip)`` of a canonical input."""
        n = np.asarray(x).shape[-1] // 2
        return x[..., :n], x[..., n:]

    def reference(self, x: np.ndarray, weights: LayerWeights | None = None,
                  activation: str | Callable[[np.ndarray], np.ndarray] = "linear", *, form: str = "add") -> LayerTrace:
        """The float64 sum; ``sum``, the independent form, stacks the operands and sums the new axis."""
        if form not in self.FORMS:
            raise ValueError(f"unknown reference form {form!r}; use one of {list(self.FORMS)}")
        x64 = np.asarray(x, dtype=np.float64)
        a, b = self.split(x64)
        with np.errstate(invalid="ignore"):
            z = a + b if form == "add" else np.stack([a, b]).sum(axis=0)
            return LayerTrace(x64, z, apply_activation(activation, z))

    def magnitude(self, x: np.ndarray, weights: LayerWeights | None = None) -> float:
        """``S = max(|a| + |b|)`` over the finite elements: the largest sum the Add forms."""
        a, b = self.split(np.abs(np.asarray(x, dtype=np.float64)))
        s = a + b
        s = s[np.isfinite(s)]
        return float(np.max(s)) if s.size else 0.0

    def scale(self, trace: LayerTrace, weights: LayerWeights | None = None, *, slope: float = 1.0) -> float:
        """``max(1, slope * S, max|h|)`` as Dense's, non-finite rows left out."""
        h = np.asarray(trace.h, dtype=np.float64)
        finite = h[np.isfinite(h)]
        x = np.asarray(trace.x)
        x = finite_rows(x) if x.ndim == 2 else x
        return max(1.0, slope * self.magnitude(x), float(np.max(np.abs(finite))) if finite.size else 0.0)


@dataclass(frozen=True)
class Branch(NoParameters):
    """Where a second branch starts (``y = a(x) + b(x)``: after ``a``'s units, ``b``'s start from ``x`` again): the
    chain continues from the output of unit ``source`` (``INPUT``: the model's input), exactly (a copy: bound 0)."""

    features: tuple[int, ...]
    source: int

    name = "branch"
    FORMS = ("copy",)
    INDEX_FIELDS = ("source",)

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The source's shape, ``features`` (``in_shape``, the previous layer's output, is not its input)."""
        return tuple(self.features)

    def describe(self) -> str:
        return f"a second branch from {skip_source(self.source)}"

    def operands(self, previous: np.ndarray, earlier: Sequence[np.ndarray]) -> np.ndarray:
        """The value the branch starts from, not the previous layer's output."""
        return earlier[self.source + 1]

    def reference(self, x: np.ndarray, weights: LayerWeights | None = None,
                  activation: str | Callable[[np.ndarray], np.ndarray] = "linear", *, form: str = "copy") -> LayerTrace:
        x64 = np.asarray(x, dtype=np.float64)
        return LayerTrace(x64, x64, apply_activation(activation, x64))

    def scale(self, trace: LayerTrace, weights: LayerWeights | None = None, *, slope: float = 1.0) -> float:
        return 0.0  # a copy is exact


def value_shape(units: Sequence[DenseUnit], index: int) -> tuple[int, ...]:
    """One sample's shape of unit ``index``'s output (``INPUT``: of the model's input); a dense chain's unit that
    holds its width alone (a graph reader's), its width."""
    if index == INPUT:
        return tuple(units[0].in_shape or (units[0].shape[0],))
    return tuple(units[index].out_shape or (units[index].shape[1],))


def branch_unit(framework: str, name: str, position: int, units: Sequence[DenseUnit], source: int) -> DenseUnit:
    """The unit where a second branch starts from ``source``'s output: a copy, in every framework alike."""
    features = value_shape(units, source)
    return DenseUnit.without_weights(framework, name, "branch", position, "linear", "none",
                                     lambda x: np.array(x, copy=True), layer_kind=Branch(features, source),
                                     in_shape=features, out_shape=features)


def skip_source(skip: int, units: Sequence[DenseUnit] = ()) -> str:
    """``the model's input`` or ``layer 2's output`` (``'fc2'`` named when ``units`` are given)."""
    if skip == INPUT:
        return "the model's input"
    name = f" ({units[skip].name!r})" if skip < len(units) else ""
    return f"layer {skip}'s output{name}"


def residual_adds(units: Sequence[DenseUnit]) -> list[tuple[int, tuple[str, int]]]:
    """``(position in the chain, (kind name, the layer it takes))`` of every residual Add and second branch of a
    walked model."""
    return [(i, (u.layer_kind.name, u.layer_kind.skip if isinstance(u.layer_kind, Residual) else u.layer_kind.source))
            for i, u in enumerate(units) if isinstance(u.layer_kind, (Residual, Branch))]


def what_it_does(found: tuple[str, int], units: Sequence[DenseUnit]) -> str:
    """``adds the model's input``, ``starts a second branch from layer 0's output ('stem')``."""
    kind, index = found
    return f"{'adds' if kind == Residual.name else 'starts a second branch from'} {skip_source(index, units)}"


def check_links(kinds: Sequence[object], shapes: Sequence[tuple[int, ...]]) -> str | None:
    """What is wrong with the Adds and branches of a chain (``kinds``; ``shapes``: the input's shape, then every
    layer's output shape), or None: each takes an earlier value of the shape it names; an Add's branch has a layer
    after its skip."""
    for i, kind in enumerate(kinds):
        if not isinstance(kind, (Residual, Branch)):
            continue
        if isinstance(kind, Residual) and (i == 0 or isinstance(kinds[i - 1], Branch)):
            return f"layer {i} (add) has no layer of its branch before it"
        index = kind.skip if isinstance(kind, Residual) else kind.source
        latest = i - 2 if isinstance(kind, Residual) else i - 1
        if not INPUT <= index <= latest:
            return (f"layer {i} ({kind.name}) takes {skip_source(index)}, but it may take the model's input ({INPUT}) "
                    f"or a layer's output up to layer {latest}")
        if tuple(shapes[index + 1]) != tuple(kind.features):
            return (f"layer {i} ({kind.name}) names features {tuple(kind.features)}, but {skip_source(index)} is "
                    f"shaped {tuple(shapes[index + 1])}")
        if isinstance(kind, Residual) and tuple(shapes[i]) != tuple(kind.features):
            return f"layer {i} (add) adds a branch shaped {tuple(shapes[i])} to {tuple(kind.features)}"
    return None


def check_residuals(units: list[DenseUnit], framework: str) -> list[DenseUnit]:
    """Refuse an Add whose operands differ in shape (broadcasting is not a residual connection) or whose branch
    computes nothing since its skip (``x + x``)."""
    for i, unit in enumerate(units):
        kind = unit.layer_kind
        if not isinstance(kind, Residual):
            continue
        skip_shape = value_shape(units, kind.skip)
        if kind.skip >= i - 1 or isinstance(units[i - 1].layer_kind, Branch):
            raise ModelNotSupported(framework, unit.name, unit.kind, unit.position,
                                    f"a residual Add whose branch has no layer after {skip_source(kind.skip, units)}")
        if skip_shape != tuple(kind.features):
            raise ModelNotSupported(framework, unit.name, unit.kind, unit.position,
                                    f"a residual Add of shapes {tuple(kind.features)} (the branch) and {skip_shape} "
                                    f"({skip_source(kind.skip, units)}): the suite judges an Add of equal shapes, "
                                    "not a broadcast")
    return units
