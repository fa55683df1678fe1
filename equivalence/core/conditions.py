"""Where a known difference holds: conditions on the environment's facts, judged here or as recorded.

A *fact* is one line of the flattened fingerprint (``equivalence.guard.fingerprint.flatten``): for example
``frameworks.keras.keras_backend``, ``frameworks.keras.onednn_enabled``, ``frameworks.torch.cpu_capability``,
``kernel.onednn_isa``, ``frameworks.keras.keras`` (the version), or ``probes.<name>`` (``yes``/``no``).

* ``Fact`` names a condition in advance: a fact in a set of values.
* ``AtLeast`` is a version floor, ``Below`` a version ceiling (together: the range where an entry holds).
* ``Probe`` measures a condition that cannot be named in advance (a kernel path nobody has measured,
  such as an arm64 CPU): the framework's own activation on a few elements, once per process, cached.
  A probe also says which named facts it was measured to follow (``follows``); a test checks that
  it still does wherever those facts are known, so the name stays honest.

``CurrentFacts`` computes this process's facts lazily (a framework's facts load only that framework);
``RecordedFacts`` reads them from a recorded fingerprint (golden vectors keep the facts they were
recorded under, so recorded outputs are judged by the differences active *then*).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np


class Facts(Protocol):
    recorded: bool
    """True for facts read from a recording: a fact missing there (vectors older than the fact) counts as
    holding, since the recorded outputs passed the error model when recorded."""

    def get(self, key: str) -> str | None: ...


@dataclass(frozen=True)
class Fact:
    """``key`` is one of ``values``."""

    key: str
    values: tuple[str, ...]
    label: str

    def holds(self, facts: Facts) -> bool:
        value = facts.get(self.key)
        return facts.recorded if value is None else value in self.values

    def describe(self) -> str:
        return f"{self.label} ({self.key} in {', '.join(self.values)})"


@dataclass(frozen=True)
class AtLeast:
    """The version in ``key`` is ``version`` or newer (``+cpu``-style local parts ignored)."""

    key: str
    version: str
    label: str
    symbol: ClassVar[str] = ">="

    @staticmethod
    def _compare(found: tuple[int, ...], bound: tuple[int, ...]) -> bool:
        return found >= bound

    def holds(self, facts: Facts) -> bool:
        value = facts.get(self.key)
        if value is None:
            return facts.recorded
        return self._compare(version_tuple(value), version_tuple(self.version))

    def describe(self) -> str:
        return f"{self.label} ({self.key} {self.symbol} {self.version})"


@dataclass(frozen=True)
class Below(AtLeast):
    """The version in ``key`` is older than ``version`` (``+cpu``-style local parts ignored)."""

    symbol: ClassVar[str] = "<"

    @staticmethod
    def _compare(found: tuple[int, ...], bound: tuple[int, ...]) -> bool:
        return found < bound


def version_tuple(version: str) -> tuple[int, ...]:
    """``"2.13.0+cpu"`` -> ``(2, 13, 0)``; stops at the first part that is not a number."""
    out = []
    for part in version.split("+")[0].split("."):
        digits = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


@dataclass(frozen=True)
class Probe:
    """A condition measured at start-up: does ``framework``'s ``activation`` of ``x()`` in ``dtype`` show it?

    ``follows``: the named facts the behaviour was measured to follow (``docs/measurements.md``).
    """

    name: str
    framework: str
    activation: str
    dtype: str
    x: Callable[[], np.ndarray]
    shows: Callable[[np.ndarray], bool]
    label: str
    follows: tuple[Fact, ...] = field(default=())

    @property
    def key(self) -> str:
        return f"probes.{self.name}"

    def holds(self, facts: Facts) -> bool:
        value = facts.get(self.key)
        return facts.recorded if value is None else value == "yes"

    def describe(self) -> str:
        follows = "; ".join(f.label for f in self.follows)
        return f"{self.label} (probed: {self.key}" + (f"; measured to follow: {follows})" if follows else ")")

    def measure(self) -> str:
        """``"yes"`` or ``"no"``, computed with the framework's adapter now."""
        from equivalence.core.adapter import adapter_for

        with np.errstate(invalid="ignore", over="ignore"):
            return "yes" if self.shows(adapter_for(self.framework).activation(self.activation, self.x(),
                                                                              self.dtype)) else "no"


Condition = Fact | AtLeast | Below | Probe


class CurrentFacts:
    """This process's facts, computed on first use and cached (``reset`` after changing the environment)."""

    recorded = False

    def __init__(self, probes: Mapping[str, Probe]) -> None:
        self._probes = probes
        self._cache: dict[str, str | None] = {}

    def get(self, key: str) -> str | None:
        if key not in self._cache:
            self._cache[key] = self._compute(key)
        return self._cache[key]

    def _compute(self, key: str) -> str | None:
        from equivalence.core.adapter import FrameworkUnavailable, adapter_for
        from equivalence.core.kernels import kernel_facts

        section, _, rest = key.partition(".")
        if section == "kernel":
            return kernel_facts().get(rest)
        if section == "frameworks":
            framework, _, name = rest.partition(".")
            try:
                return adapter_for(framework).versions().get(name)
            except FrameworkUnavailable:
                return None
        if section == "probes" and rest in self._probes:
            probe = self._probes[rest]
            try:
                return probe.measure()
            except FrameworkUnavailable:
                return None
        return None

    def reset(self) -> None:
        self._cache.clear()


@dataclass(frozen=True)
class RecordedFacts:
    """Facts as a recording's flattened fingerprint holds them."""

    flat: Mapping[str, str]
    recorded: bool = True

    def get(self, key: str) -> str | None:
        return self.flat.get(key)
