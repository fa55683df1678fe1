"""Measured, named differences between a framework and the float64 reference, and where each holds.

The machinery; the entries live beside each framework's adapter (``equivalence/frameworks/*/known_differences.py``)
and reach the core through the registry: an entry's ``known_differences`` and ``probes``
(``equivalence.core.adapter.registered``), so the core names no framework, and a third party's framework brings
its own.

Nothing here is a blanket skip: every entry names one framework, the activations
and dtypes it concerns, exactly what it allows, the conditions under which it holds
(``when``: the backend, the kernel path, versions; ``equivalence.core.conditions``)
and the test that measures it (the evidence test fails the day an
entry stops being true where its conditions hold, so the list cannot silently outlive
the difference; where they do not hold, the entry grants nothing and its evidence
test skips, naming the condition). Measured on the kernel paths of ``docs/measurements.md``.

The kinds:

* ``extra_error``: the framework computes a float64 activation with a float32
  constant (or a float32-sized cut-off), so it is off by a fraction of the
  *float32* epsilon. The per-framework bound grows by ``extra_error * scale``
  (``scale`` as in ``equivalence.core.kinds.Dense.scale``); the float64 check
  stays ~10^7 times tighter than a float32 computation would need.
* ``excuse``: a position whose non-finite class (NaN, +inf, -inf, finite)
  differs from the reference in a documented way.
* ``definition``: the framework computes another function under the same name (Keras 2's
  ``hard_sigmoid`` is ``clip(0.2 z + 0.5, 0, 1)``, Keras 3's and torch's ``relu6(z + 3) / 6``).
  Its outputs are judged against a float64 reference of *its* definition, with the same
  error model (its own largest slope), so a bug in it is still caught; the pair with
  another framework is not compared at that layer (they differ by design, up to 1/12
  here). Golden vectors do not excuse it: an output that moved beyond the error model
  since it was recorded fails ``verify`` whatever each side's definition.
* ``by_design``: a difference the comparison tolerates without any exception,
  because it compares values with an absolute bound (signed zeros, subnormals
  flushed to zero); listed so the evidence is kept and tested.
* ``noted``: measured where an adapter was written, granting nothing: the adapter computes around it (its own
  formula, another op) or the comparison never meets it; listed so the evidence is kept and tested.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from equivalence.core.activations import ACTIVATIONS, family_of
from equivalence.core.adapter import entry_for, registered
from equivalence.core.conditions import Condition, CurrentFacts, Facts, Probe
from equivalence.core.dtypes import EPSILON

Excuse = Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]
"""``(z, got, x) -> mask`` of positions excused; ``z`` is the reference pre-activation (float64), ``x`` the
layer's input (None where the caller has none: an excuse that needs it then excuses nothing)."""


def all_nan(activation: str, x: Callable[[], np.ndarray]) -> Callable[[Any, str], bool]:
    """A probe: the framework's ``activation`` of ``x()`` is NaN everywhere."""
    return lambda adapter, dtype: bool(np.all(np.isnan(adapter.activation(activation, x(), dtype))))


FLOAT32_MATMUL = 8.0 * EPSILON["float32"]
"""A float32 matmul (or activation) behind a float64 layer: the float32 error model (``tolerance.SAFETY``
eps32 of the scale)."""

FLOAT32_CONSTANT = 0.25 * EPSILON["float32"]
"""A float32-rounded constant is off by at most eps32/2 relative; measured at most 0.125 eps32 of
``max(1, |h|)`` (leaky slope: exactly the rounding of 0.2). 0.25 eps32 leaves 2x headroom."""


def runs_on(framework: str) -> str | None:
    """The framework whose ops ``framework`` runs (its registry entry's ``runs_on``), whose entries cover it too:
    Keras on TensorFlow through ``tf.function`` and XLA compute Keras' activations with the same float32
    constants, inductor compiles torch's own definitions (softplus' threshold 20), as does a torch.export program
    (its graph calls the same ATen ops). LiteRT runs its own kernels, not TensorFlow's."""
    entry = entry_for(framework)
    return entry.runs_on if entry is not None else None


@dataclass(frozen=True)
class KnownDifference:
    name: str
    framework: str
    activations: tuple[str, ...]
    dtypes: tuple[str, ...]
    kind: str  # "extra_error" | "excuse" | "definition" | "by_design" | "noted"
    evidence: str
    extra_error: float = 0.0
    excuse: Excuse | None = None
    scope: tuple[str, ...] = ("forward", "gradient")
    families: tuple[str, ...] = ()
    """Parametric activation families (``equivalence.core.activations.PARAMETRIC_FAMILIES``) it covers at every
    parameter, e.g. ``"leaky_relu"``: ``leaky_relu_0.01``, ``leaky_relu_0.3``, ... (not the fixed table's names)."""
    when: tuple[Condition, ...] = ()
    """Every condition must hold for the entry to apply; empty: on every kernel path measured."""
    definition: Callable[[np.ndarray], np.ndarray] | None = None
    """``definition`` entries: the framework's own function, float64 numpy (``z -> h``)."""
    definition_slope: float = 0.0
    """``definition`` entries: its largest slope (the error model's ``slope``)."""
    native_bias_shift: float = 0.0
    """``native_weights`` scope: the framework stores the bias plus this (a converter folding the activation's
    shift into the layer), in its storage dtype."""
    layer_kinds: tuple[str, ...] = ()
    """The layer kinds (``Kind.name``: ``"batchnorm"``, ``"conv"``, ...) it is limited to; empty: every kind."""
    whole_graph_computes_in: str | None = None
    """``whole_graph`` scope: the dtype the framework's whole-model graph computes in, rounding to the layer
    dtype only at its output (so the model's own forward is its layers chained in that dtype, not in the
    layer dtype; each layer alone still rounds at its output)."""

    def active(self, facts: Facts | None = None, dtype: str | None = None) -> bool:
        """Whether the entry's conditions hold in ``facts`` (this process's when ``None``); with ``dtype``, there
        (a probe's measured scope is per dtype)."""
        return all(c.holds(facts or FACTS, dtype) for c in self.when)

    def unmet(self, facts: Facts | None = None, dtype: str | None = None) -> list[Condition]:
        return [c for c in self.when if not c.holds(facts or FACTS, dtype)]

    def conditions(self) -> str:
        return "; ".join(c.describe() for c in self.when) or "always (every kernel path measured)"

    def applies(self, framework: str, activation: str, dtype: str, *, facts: Facts | None = None) -> bool:
        """Whether the entry covers this layer; ``facts``: where the outputs came from (recorded outputs keep
        the facts they were recorded under), this process's when ``None``."""
        return (self.framework in (framework, runs_on(framework)) and dtype in self.dtypes
                and (activation in self.activations or _parametric_family(activation) in self.families)
                and self.active(facts, dtype))


def _parametric_family(activation: str) -> str | None:
    """``"leaky_relu"`` for ``"leaky_relu_0.01"``; None for a name of the fixed table (``"leaky_relu_0.2"``)."""
    if dict.__contains__(ACTIVATIONS, activation) or activation not in ACTIVATIONS:
        return None
    return family_of(activation)[0]


def known_differences() -> tuple[KnownDifference, ...]:
    """Every registered framework's entries, in the registry's order (each framework's in its own)."""
    return tuple(d for entry in registered() for d in entry.known_differences)


def probes() -> dict[str, Probe]:
    """Every registered framework's probes, by name."""
    return {p.name: p for entry in registered() for p in entry.probes}


FACTS = CurrentFacts(probes)
"""This process's facts (lazy, cached)."""


def __getattr__(name: str) -> Any:
    """``KNOWN_DIFFERENCES`` and ``PROBES``: ``known_differences()`` and ``probes()`` as they are now (a framework
    registered later counts)."""
    if name == "KNOWN_DIFFERENCES":
        return known_differences()
    if name == "PROBES":
        return probes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def active(facts: Facts | None = None) -> tuple[KnownDifference, ...]:
    """The entries whose conditions hold in ``facts`` (this process's when ``None``)."""
    return tuple(d for d in known_differences() if d.active(facts))


def whole_graph_difference(framework: str, activations: Sequence[str], dtype: str, *,
                           facts: Facts | None = None) -> KnownDifference | None:
    """The ``whole_graph`` entry that covers every layer of ``framework``'s stack of ``activations``: its own
    forward is then not bit for bit its chained layers (``whole_graph_computes_in`` says what it is instead;
    unset, it agrees with them within the last layer's error model). None: bit for bit."""
    return next((d for d in known_differences() if "whole_graph" in d.scope
                 and all(d.applies(framework, a, dtype, facts=facts) for a in activations)), None)


def native_bias_shift(framework: str, activation: str, dtype: str) -> float:
    """What ``framework`` adds to a layer's bias in the weights it stores (``native_weights`` entries); 0: none."""
    return sum(d.native_bias_shift for d in known_differences()
               if "native_weights" in d.scope and d.applies(framework, activation, dtype))


def extra_error(framework: str, activation: str, dtype: str, *, scope: str = "forward",
                facts: Facts | None = None, layer_kind: str = "dense", inner: Sequence[str] = ()) -> float:
    """Extra bound (in units of the layer scale) the named differences grant ``framework``.

    ``scope``: ``"forward"`` (layer outputs) or ``"gradient"`` (the backward pass); ``facts``: as in
    ``KnownDifference.applies``; ``layer_kind``: the layer's ``Kind.name`` (an entry limited to other kinds grants
    nothing); ``inner``: the activations the layer computes with inside, beside ``activation`` after it (an LSTM
    cell's tanh and sigmoid). An entry covering several of them is granted once: it is one difference of the layer.
    """
    return sum(d.extra_error for d in known_differences()
               if d.kind == "extra_error" and scope in d.scope and (not d.layer_kinds or layer_kind in d.layer_kinds)
               and any(d.applies(framework, act, dtype, facts=facts) for act in (activation, *inner)))


def definition(framework: str, activation: str, dtype: str, *,
               facts: Facts | None = None) -> KnownDifference | None:
    """The ``definition`` entry by which ``framework`` computes ``activation`` otherwise, or None."""
    return next((d for d in known_differences()
                 if d.kind == "definition" and d.applies(framework, activation, dtype, facts=facts)), None)


def excused(framework: str, activation: str, dtype: str, z: np.ndarray, got: np.ndarray, *,
            x: np.ndarray | None = None, facts: Facts | None = None, layer_kind: str = "dense") -> np.ndarray:
    """Positions where ``framework``'s non-finite class may differ from the reference, by name; ``layer_kind``: the
    layer's ``Kind.name`` (an entry limited to other kinds excuses nothing)."""
    mask = np.zeros(np.shape(got), dtype=bool)
    for d in known_differences():
        if (d.kind == "excuse" and (not d.layer_kinds or layer_kind in d.layer_kinds)
                and d.applies(framework, activation, dtype, facts=facts) and np.shape(z) == np.shape(got)):
            mask |= d.excuse(np.asarray(z), np.asarray(got), None if x is None else np.asarray(x))
    return mask
