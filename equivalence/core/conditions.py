"""Where a known difference holds: conditions on the environment's facts, judged here or as recorded.

A *fact* is one line of the flattened fingerprint (``equivalence.guard.fingerprint.flatten``): for example
``frameworks.keras.keras_backend``, ``frameworks.keras.onednn_enabled``, ``frameworks.torch.cpu_capability``,
``kernel.onednn_isa``, ``frameworks.keras.keras`` (the version), or ``probes.<name>`` (the probe's measured
scope: ``"float32, bfloat16"``, ``"bfloat16 (17x17x17 33x33x33)"`` or ``"none"``; see ``Scope``).

* ``Fact`` names a condition in advance: a fact in a set of values.
* ``AtLeast`` is a version floor, ``Below`` a version ceiling (together: the range where an entry holds).
* ``Probe`` measures a condition that cannot be named in advance (a kernel path nobody has measured,
  such as an arm64 CPU, or a CPU with an ISA the recording machine could not emulate): the framework's own
  ops on a few elements, once per process, cached. It measures its *scope* where it runs: every dtype, and
  for a shape-dependent behaviour the shapes of a small grid, so an entry's dtypes come from the machine at
  hand, not from the CPUs it was first seen on. A probe also says, per dtype, which named facts it was
  measured to follow (``follows``); a test checks that it still does wherever those facts are known, and
  that it is never found in a dtype where no named cause allows it, so the name stays honest.

``CurrentFacts`` computes this process's facts lazily (a framework's facts load only that framework);
``RecordedFacts`` reads them from a recorded fingerprint (golden vectors keep the facts they were
recorded under, so recorded outputs are judged by the differences active *then*).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from equivalence.core.kernels import AVX512_ISAS, ONEDNN_ISAS


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

    def holds(self, facts: Facts, dtype: str | None = None) -> bool:
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

    def holds(self, facts: Facts, dtype: str | None = None) -> bool:
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


Shape = tuple[int, ...]


@dataclass(frozen=True)
class Scope:
    """Where a probe found its behaviour: the dtypes, and for a shape-dependent probe the shapes of its grid.

    Written into fingerprints as one string (``encode``): ``"none"``, ``"float32, bfloat16"``, or with shapes
    ``"bfloat16 (17x17x17 33x33x33)"``. Fingerprints recorded before scopes were measured hold ``"yes"`` or
    ``"no"``: ``parse`` reads ``"yes"`` as the dtypes the probe stood for then (``Probe.legacy_yes``).
    """

    shapes: Mapping[str, tuple[Shape, ...]]
    """dtype -> the grid shapes where it shows (empty for a probe that does not depend on shapes)."""

    @property
    def dtypes(self) -> tuple[str, ...]:
        return tuple(self.shapes)

    def encode(self) -> str:
        parts = [dtype + (" (" + " ".join("x".join(map(str, s)) for s in shapes) + ")" if shapes else "")
                 for dtype, shapes in self.shapes.items()]
        return ", ".join(parts) or "none"

    @classmethod
    def parse(cls, value: str, legacy_yes: tuple[str, ...] = ()) -> Scope:
        if value in ("yes", "no"):
            return cls({dtype: () for dtype in legacy_yes} if value == "yes" else {})
        if value == "none":
            return cls({})
        shapes: dict[str, tuple[Shape, ...]] = {}
        for part in value.split(", "):
            dtype, _, grid = part.partition(" (")
            shapes[dtype] = tuple(tuple(int(n) for n in s.split("x")) for s in grid.rstrip(")").split()) if grid \
                else ()
        return cls(shapes)


ProbeResult = bool | tuple[Shape, ...]
"""What a probe's ``shows`` returns for one dtype: whether the behaviour shows, or the grid shapes where it does."""


@dataclass(frozen=True)
class Probe:
    """A condition measured at start-up: in which dtypes (and shapes) does ``framework`` show the behaviour?

    ``shows(adapter, dtype)`` runs the framework's own ops through its adapter. ``follows``: per dtype, the
    named facts the behaviour was measured to follow there (``docs/measurements.md``); a measured dtype not in
    ``follows`` is one where no named cause allows it, so finding it there is a finding, not a scope.
    """

    name: str
    framework: str
    label: str
    shows: Callable[[Any, str], ProbeResult]
    follows: Mapping[str, tuple[Fact, ...]]
    open_dtypes: tuple[str, ...] = ()
    """Dtypes where no CPU measured so far decides it: the probe alone does (a find there is new, not wrong)."""
    dtypes: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")
    """The dtypes it measures (those the framework cannot compute are left out where it runs); a measured dtype
    neither in ``follows`` nor in ``open_dtypes`` is one where no named cause allows the behaviour."""
    legacy_yes: tuple[str, ...] = ()
    """The dtypes a recorded ``"yes"`` stood for (fingerprints from before scopes were measured)."""
    shape_class: Callable[[Shape], bool] | None = None
    """Shape-dependent probes: the class of (batch, in, out) shapes where the named cause allows it."""
    shape_class_label: str = ""

    @property
    def key(self) -> str:
        return f"probes.{self.name}"

    @property
    def candidate_dtypes(self) -> tuple[str, ...]:
        """The dtypes where it may show: named (``follows``) or open. Its entries cover exactly these."""
        return tuple(d for d in self.dtypes if d in self.follows or d in self.open_dtypes)

    def expected(self, facts: Facts, dtype: str) -> bool | None:
        """What the named facts say of ``dtype``: True (it shows), False (it cannot), None (not known here: a
        fact missing or ``n/a``, or an open dtype)."""
        if dtype in self.open_dtypes:
            return None
        named = self.follows.get(dtype, ())
        if any((facts.get(f.key) or "n/a").startswith("n/a") for f in named):
            return None
        return dtype in self.follows and all(f.holds(facts) for f in named)

    def scope(self, facts: Facts) -> Scope | None:
        """The scope ``facts`` hold for this probe, or None where they hold none."""
        value = facts.get(self.key)
        return None if value is None else Scope.parse(value, self.legacy_yes)

    def holds(self, facts: Facts, dtype: str | None = None) -> bool:
        """Whether the probe found its behaviour (in ``dtype``; in any dtype when None)."""
        scope = self.scope(facts)
        if scope is None:
            return facts.recorded
        return bool(scope.dtypes) if dtype is None else dtype in scope.shapes

    def describe(self) -> str:
        follows = "; ".join(f"{dtype}: " + (" and ".join(f.label for f in facts) or "always")
                            for dtype, facts in self.follows.items())
        return f"{self.label} (probed: {self.key}" + (f"; measured to follow, {follows})" if follows else ")")

    def measure(self, adapter: Any) -> str:
        """The scope on ``adapter``'s framework now, encoded (``Scope.encode``)."""
        shapes: dict[str, tuple[Shape, ...]] = {}
        with np.errstate(invalid="ignore", over="ignore"):
            for dtype in self.dtypes:
                if adapter.cannot("linear", dtype):
                    continue
                found = self.shows(adapter, dtype)
                if found is True or (found is not False and found):
                    shapes[dtype] = () if found is True else tuple(found)
        return Scope(shapes).encode()


Condition = Fact | AtLeast | Below | Probe


class CurrentFacts:
    """This process's facts, computed on first use and cached (``reset`` after changing the environment)."""

    recorded = False

    def __init__(self, probes: Callable[[], Mapping[str, Probe]]) -> None:
        self._probes = probes
        """The probes by name, as they are when a fact is first asked for (the registered frameworks')."""
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
        probe = self._probes().get(rest) if section == "probes" else None
        if probe is not None:
            try:
                return probe.measure(adapter_for(probe.framework))
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


def onednn_from(isa: str, label: str) -> Fact:
    """oneDNN runs at ``isa`` or a higher level (``kernel.onednn_isa``: the CPU's own, capped by ONEDNN_MAX_CPU_ISA)."""
    return Fact("kernel.onednn_isa", ONEDNN_ISAS[ONEDNN_ISAS.index(isa):], label)


def onednn_below(isa: str, label: str) -> Fact:
    """oneDNN runs below ``isa`` (the CPU has no such level, or ONEDNN_MAX_CPU_ISA caps it lower)."""
    return Fact("kernel.onednn_isa", ONEDNN_ISAS[:ONEDNN_ISAS.index(isa)], label)


ONEDNN_AT_AVX512 = Fact("kernel.onednn_isa", AVX512_ISAS, "oneDNN at an AVX-512 ISA")
ONEDNN_AT_AVX512_FP16 = onednn_from("AVX512_CORE_FP16", "oneDNN at AVX512_CORE_FP16 or higher (a CPU with "
                                    "AVX512-FP16, e.g. an Intel Xeon of the Sapphire Rapids class)")
ONEDNN_BELOW_AVX512_FP16 = onednn_below("AVX512_CORE_FP16", "oneDNN below AVX512_CORE_FP16 (a CPU without AVX512-FP16, "
                                        "e.g. an AMD EPYC with AVX-512, or an ISA capped lower)")
ONEDNN_AT_AMX = onednn_from("AVX512_CORE_AMX", "oneDNN at AVX512_CORE_AMX or higher (a CPU with AMX tiles)")
