"""The error model: how far a layer computed in ``dtype`` may be from float64.

For one dense layer ``h = act(x @ W + b)`` computed in a dtype with epsilon ``eps``:

* the pre-activation error is about ``eps * S`` with ``S = max(|x| @ |W| + |b|)``,
  the largest magnitude the sum can reach (the error follows magnitude, not
  fan-in: measured over 300 stacks, ``docs/measurements.md``);
* the activation turns it into at most ``slope * eps * S`` in the output, where
  ``slope`` is its largest slope (1/4 for the sigmoid);
* rounding the output itself, and the activation's own error (TF's sigmoid is
  off by up to 4 eps relative), cost a few eps of ``max |h|``, with 1 as a floor.

So ``bound = SAFETY * eps * max(1, slope * S, max|h|)``. For a sigmoid layer this
is exactly ``8 eps max(1, S/4)``, which over 2,200 random trials (depth 1–10,
widths 1–512, input scales 0.1–100) had a worst error/bound ratio of 0.29 and
caught every transposed square layer by more than 3,000x.

Two frameworks each within ``bound`` of the reference are within ``2 * bound``
of each other (``PAIR_FACTOR``).

Every comparison takes its bound from here (``Bound``: ``forward_bound`` for layer outputs, ``gradient_bound``
and ``sgd_bound`` for the backward pass), so each caller adds the same terms: the dtype's rounding, the named
known differences of each framework, and the rounding of weights a framework stores narrower. The formulae of a
layer kind (its ``S``, its weight rounding) live with the kind, ``equivalence.core.kinds``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from equivalence.core.activations import ACTIVATIONS
from equivalence.core.adapter import entry_for
from equivalence.core.conditions import Facts
from equivalence.core.dtypes import EPSILON, SMALLEST_NORMAL
from equivalence.core.kinds import DENSE, Kind, LayerTrace, LayerWeights
from equivalence.core.known_differences import KnownDifference, definition, extra_error

SAFETY = 8.0
"""Multiplier on eps; the measured worst ratio 0.29 leaves 3.4x headroom."""

PAIR_FACTOR = 2.0
"""Framework vs framework: both errors may add (triangle inequality)."""


RECORDED = "@recorded"
"""Label suffix for a framework's outputs read from golden vectors rather than computed now."""


def framework_of(label: str) -> str:
    """The framework behind an outputs label: ``"torch"`` for ``"torch"`` and ``"torch@recorded"``."""
    return label.partition("@")[0]


def magnitude(x: np.ndarray, W: np.ndarray, b: np.ndarray | None) -> float:
    """``S = max(|x| @ |W| + |b|)`` of a dense layer (``Dense.magnitude``)."""
    return DENSE.magnitude(x, LayerWeights(W, b))


def layer_scale(*, x: np.ndarray, W: np.ndarray, b: np.ndarray | None, h: np.ndarray, activation: str,
                kind: Kind = DENSE) -> float:
    """``max(1, slope * S, max|h|)``: the magnitude a layer's rounding errors scale with (``Dense.scale``)."""
    return kind.scale(LayerTrace(np.asarray(x), np.asarray(h), np.asarray(h)), LayerWeights(W, b),
                      slope=ACTIVATIONS[activation].max_slope)


def layer_bound(*, x: np.ndarray, W: np.ndarray, b: np.ndarray | None, h: np.ndarray,
                activation: str, dtype: str) -> float:
    """Absolute error bound of one layer computed in ``dtype`` against float64, before any named difference.

    ``x`` is the layer's input, ``h`` the float64 reference output.
    """
    return SAFETY * EPSILON[dtype] * layer_scale(x=x, W=W, b=b, h=h, activation=activation)


def smallest_normal(dtype: str) -> float:
    """``dtype``'s smallest normal number (float16: 2**-14): below it values are subnormal, which a CPU in
    flush-to-zero mode (TensorFlow sets it) turns into zero."""
    return SMALLEST_NORMAL[dtype]


def weight_rounding_error(*, x: np.ndarray, W: np.ndarray, b: np.ndarray | None, activation: str,
                          weight_dtype: str) -> float:
    """How far rounding a dense layer's ``W`` and ``b`` to ``weight_dtype`` moves its output
    (``Dense.weight_rounding_error``)."""
    return DENSE.weight_rounding_error(x, LayerWeights(W, b), slope=ACTIVATIONS[activation].max_slope,
                                       weight_dtype=weight_dtype)


def rounded_weights_error(framework: str, *, x: np.ndarray, weights: LayerWeights, activation: str, dtype: str,
                          kind: Kind = DENSE) -> float:
    """The weight rounding term of a framework that stores a layer's weights narrower than the layer computes
    (its registry entry's ``weights_dtype``: LiteRT's float16 weight quantisation writes them as float16 and
    dequantises them to float32 before its float32 kernels; ``tests/frameworks/test_litert.py`` checks that the
    reference with its weights rounded to float16 first agrees with it at the plain float32 bound); else 0."""
    entry = entry_for(framework)
    weight_dtype = entry.weights_dtype if entry is not None else None
    if weight_dtype is None or EPSILON[weight_dtype] <= EPSILON[dtype]:
        return 0.0
    return kind.weight_rounding_error(x, weights, slope=ACTIVATIONS[activation].max_slope,
                                      weight_dtype=weight_dtype)


# --- the bounds every comparison uses ------------------------------------------------------------

@dataclass(frozen=True)
class Bound:
    """The error model at one comparison point (a layer's outputs, a gradient, new weights), for each
    framework label compared there.

    ``base``: what computing in the dtype may cost any framework; ``granted[label]``: what the named known
    differences and the weight storage of ``label``'s framework add; ``own[label]``: the base of a framework
    judged against its own definition of the activation (a ``definition`` difference) instead of ``base``.
    """

    base: float
    granted: Mapping[str, float] = field(default_factory=dict)
    own: Mapping[str, float] = field(default_factory=dict)

    def against_reference(self, label: str) -> float:
        return self.own.get(label, self.base) + self.granted[label]

    def between(self, a: str, b: str) -> float:
        """Two frameworks each within their bound of the reference (triangle inequality)."""
        return PAIR_FACTOR * self.base + self.granted[a] + self.granted[b]


def forward_bound(trace: LayerTrace, weights: LayerWeights, activation: str, dtype: str,
                  frameworks: Mapping[str, Facts | None], *, kind: Kind = DENSE) -> Bound:
    """The bound of one layer's outputs for every label of ``frameworks``.

    ``trace``: the layer's float64 reference at the input the frameworks got; ``frameworks[label]``: the facts
    the label's outputs were computed under (None: this process's), which decide the named differences
    (``equivalence.core.known_differences``) that apply: those of the activation after the layer, and of the
    activations a kind computes with inside (``inner_activations``: an LSTM's tanh and sigmoid).
    """
    slope = ACTIVATIONS[activation].max_slope
    scale = kind.scale(trace, weights, slope=slope)
    eps = EPSILON[dtype]
    inner = getattr(kind, "inner_activations", ())  # a cell's own activations
    granted, own = {}, {}
    for label, facts in frameworks.items():
        name = framework_of(label)
        named = extra_error(name, activation, dtype, facts=facts, layer_kind=kind.name, inner=inner)
        granted[label] = (named * scale + rounded_weights_error(name, x=trace.x, weights=weights,
                                                                activation=activation, dtype=dtype, kind=kind))
        entry = definition(name, activation, dtype, facts=facts)
        if entry is not None:
            own_trace = own_definition(entry, trace, weights, kind=kind)
            own[label] = SAFETY * eps * kind.scale(own_trace, weights, slope=entry.definition_slope)
    return Bound(SAFETY * eps * scale, granted, own)


def own_definition(entry: KnownDifference, trace: LayerTrace, weights: LayerWeights, *,
                   kind: Kind = DENSE) -> LayerTrace:
    """The layer's float64 reference under a ``definition`` entry's function, at the same input."""
    return kind.reference(trace.x, weights, entry.definition)


GRADIENT_SAFETY = 16.0
"""Multiplier on ``eps * G_l`` (``equivalence.core.gradients``): the measured worst gap was 2.6 eps G_l, so 6x
headroom."""


def stack_extra(framework: str, activations: Sequence[str], dtype: str) -> float:
    """Named float32-sized errors anywhere in a stack, relative: a forward error reaches every later
    layer's input (so every ``dL/dW`` after it), a backward one every gradient before it."""
    return sum(extra_error(framework, act, dtype, scope=scope)
               for act in activations for scope in ("forward", "gradient"))


def gradient_bound(scale: float, activations: Sequence[str], dtype: str, frameworks: Iterable[str]) -> Bound:
    """The bound of a gradient whose scale (``gradients.gradient_scales``) is ``scale``, in a stack of
    ``activations``: ``GRADIENT_SAFETY * eps * scale`` plus the dtype's smallest normal (the subnormal grid
    or flush-to-zero below it), and every named difference in the stack, relative to ``scale``."""
    return Bound(GRADIENT_SAFETY * EPSILON[dtype] * scale + smallest_normal(dtype),
                 {name: stack_extra(name, activations, dtype) * scale for name in frameworks})


def sgd_bound(weight_scale: float, gradient_scale: float, learning_rate: float, activations: Sequence[str],
              dtype: str, frameworks: Iterable[str]) -> Bound:
    """The bound of new weights ``W - lr g``: rounding the new weight (``SAFETY * eps * max|W_new|``) plus
    ``lr`` times the gradient's bound (its named differences included)."""
    eps = EPSILON[dtype]
    return Bound(SAFETY * eps * weight_scale + learning_rate * GRADIENT_SAFETY * eps * gradient_scale,
                 {name: learning_rate * stack_extra(name, activations, dtype) * gradient_scale
                  for name in frameworks})
