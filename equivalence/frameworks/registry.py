"""The framework registry: one entry per framework, everything known about it without importing it.

An entry (``Framework``) names the adapter (``"module:attribute"``, imported on first use), the packages
whose absence means "not installed" and how to install them, the build styles, save formats and the styles
whose parameters the framework registers, the optional capabilities it has (gradients, an SGD step,
save/load), which of its ``versions()`` keys are versions and which choose kernels (so the guard can tell
"the framework changed" from "the machine changed"), and a few words for the fingerprint's summary line.

The CLI, the fingerprint, the report, the golden vectors, the benchmark and the tests all read this registry.
Adding a framework is one adapter module plus one entry:

* in code: ``equivalence.frameworks.registry.register(Framework(...))``;
* from another package, without changing ``equivalence``: an entry point in the group
  ``equivalence.frameworks`` whose value (``"module:attribute"``) is a ``Framework`` named as the entry point
  or a callable returning one (``examples/equivalence-numpy`` is such a package), or a tuple of
  ``Framework``s (a package's several frameworks, in its order).

The built-in frameworks register the second way too (``equivalence``'s own entry point ``builtin`` in
``pyproject.toml``: the tuple ``equivalence.frameworks.builtin.FRAMEWORKS``), so the registry imports none of
them; they come first.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from equivalence.core.adapter import Adapter, FrameworkUnavailable, provide_registry
from equivalence.core.conditions import Probe
from equivalence.core.known_differences import KnownDifference

ENTRY_POINT_GROUP = "equivalence.frameworks"
CAPABILITIES = ("gradients", "sgd", "save_load")
"""Optional capabilities: ``loss_gradients``, ``sgd_step``, ``save``/``load``. A runtime that cannot train
declares none of them, and the tests that need one skip, naming it."""

DEFAULT_INSTALL_HINT = "make venv installs the pinned CPU builds"


@dataclass(frozen=True)
class Framework:
    """A registry entry. ``adapter`` is ``"module:attribute"``: a class or factory returning the ``Adapter``."""

    name: str
    adapter: str
    packages: tuple[str, ...]
    styles: tuple[str, ...]
    save_formats: tuple[str, ...] = ()
    registering_styles: tuple[str, ...] | None = None
    """Styles whose parameters the framework registers (default: every style)."""
    capabilities: frozenset[str] = frozenset(CAPABILITIES)
    install_hint: str = DEFAULT_INSTALL_HINT
    default: bool = False
    """Run by ``report`` and ``record`` when no ``--framework`` is given."""
    version_keys: tuple[str, ...] = ()
    """Keys of ``Adapter.versions()`` whose change means the framework changed."""
    kernel_keys: tuple[str, ...] = ()
    """Keys of ``Adapter.versions()`` that choose kernels: their change means the machine (or its settings) changed."""
    describe: Callable[[Mapping[str, str]], str] | None = field(default=None, compare=False)
    """``versions()`` -> a few words for the fingerprint's one-line summary (default: name and first version)."""
    check_environment: Callable[[], str | None] | None = field(default=None, compare=False)
    """A problem with the environment found before the framework is imported (one line), or None."""
    walker: str | None = None
    """``"module:function"`` walking a user's own model into dense units (``equivalence.own``), if it can."""
    in_suite_default: bool = True
    """Whether the registry-wide tests (those parametrized over ``framework``) take it when no selection is
    given (``make check``): False for a runtime, whose every extra run of them costs minutes; ``make runtimes``
    selects the runtimes for the whole suite."""
    runs_on: str | None = None
    """The framework whose ops it runs (keras_xla: Keras' activations through XLA; torch_compile: torch's modules
    compiled), so that framework's known differences apply to it too (measured in
    ``tests/frameworks/test_runtimes.py`` and ``tests/frameworks/test_torch_export.py``); None: its own kernels
    only (LiteRT)."""
    weights_dtype: str | None = None
    """The dtype it stores a layer's weights in, where not the layer's (LiteRT's float16 weight quantisation:
    ``litert_fp16w``); the error model adds the rounding to it (``tolerance.rounded_weights_error``)."""
    known_differences: tuple[KnownDifference, ...] = field(default=(), compare=False)
    """Its measured differences from the reference (``equivalence.core.known_differences``: each names this
    framework, its conditions and its evidence test); those of the framework it ``runs_on`` cover it too."""
    probes: tuple[Probe, ...] = field(default=(), compare=False)
    """The start-up probes its differences' conditions name (``equivalence.core.conditions.Probe``)."""
    own_tests_default: bool = True
    """Whether the tests written for it alone (its own fixture, e.g. ``ort_adapter`` in
    ``tests/frameworks/test_runtimes.py``) run when no selection is given: False for a runtime too slow to start in
    ``make check`` (torch.compile)."""

    def __post_init__(self) -> None:
        module, _, attribute = self.adapter.partition(":")
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"framework name {self.name!r} must be letters, digits and underscores")
        if not module or not attribute:
            raise ValueError(f"{self.name}: adapter {self.adapter!r} must be 'module:attribute'")
        unknown = set(self.capabilities) - set(CAPABILITIES)
        if unknown:
            raise ValueError(f"{self.name}: unknown capabilities {sorted(unknown)}; use some of {CAPABILITIES}")
        if not self.styles:
            raise ValueError(f"{self.name}: at least one build style")
        strangers = sorted({f"{d.name} ({d.framework})" for d in self.known_differences if d.framework != self.name}
                           | {f"{p.name} ({p.framework})" for p in self.probes if p.framework != self.name})
        if strangers:
            raise ValueError(f"{self.name}: known differences and probes must name it, got {', '.join(strangers)}")
        extra = set(self.registering_styles or ()) - set(self.styles)
        if extra:
            raise ValueError(f"{self.name}: registering styles {sorted(extra)} are not among its styles")

    @property
    def registering(self) -> tuple[str, ...]:
        return self.styles if self.registering_styles is None else self.registering_styles

    def summary(self, versions: Mapping[str, str]) -> str:
        if self.describe is not None:
            return self.describe(versions)
        first = next(iter(versions.values()), "?")
        return f"{self.name} {first}"


_registry: dict[str, Framework] = {}
_cache: dict[str, Adapter] = {}
_entry_points_loaded = False


def register(framework: Framework, *, replace: bool = False) -> None:
    """Add ``framework`` to the registry (``replace``: allow a name already there, dropping its adapter)."""
    if framework.name in _registry and not replace and _registry[framework.name] != framework:
        raise ValueError(f"a framework named {framework.name!r} is registered already; pass replace=True")
    _registry[framework.name] = framework
    _cache.pop(framework.name, None)


def unregister(name: str) -> None:
    """Remove ``name`` (tests and plugins that registered a temporary framework)."""
    _registry.pop(name, None)
    _cache.pop(name, None)


def _load_entry_points() -> None:
    """Register the frameworks other installed packages declare (once per process)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    own = [point for point in points if point.dist is not None and point.dist.name == "equivalence"]
    for point in own + [point for point in points if point not in own]:  # the built-ins first
        if point.name in _registry:
            continue
        try:
            loaded = point.load()
        except ImportError as exc:
            adapter = point.value if ":" in point.value else f"{point.value}:framework"
            register(Framework(point.name, adapter, packages=(), styles=("sequential",),
                               check_environment=_broken(point.name, point.value, exc)))
            continue
        made = loaded() if callable(loaded) and not isinstance(loaded, (Framework, tuple)) else loaded
        if isinstance(made, tuple) and made and all(isinstance(f, Framework) for f in made):
            for framework in made:  # a package's several frameworks, in its order
                if framework.name not in _registry:
                    register(framework)
            continue
        if not isinstance(made, Framework) or made.name != point.name:
            raise ValueError(f"entry point {point.name} = {point.value} (group {ENTRY_POINT_GROUP}) must give a "
                             f"Framework named {point.name!r} or a tuple of Frameworks, got {made!r}")
        register(made)


def _broken(name: str, value: str, exc: ImportError) -> Callable[[], str]:
    return lambda: f"{name}: its entry point {value} does not import ({type(exc).__name__}: {exc})"


def names() -> tuple[str, ...]:
    """Every registered framework: the built-ins, then those of installed packages' entry points."""
    _load_entry_points()
    return tuple(_registry)


def defaults() -> tuple[str, ...]:
    """What ``report`` and ``record`` run without ``--framework``."""
    return tuple(name for name in names() if _registry[name].default)


def entry(name: str) -> Framework:
    """The registry entry for ``name``; ``ValueError`` naming the registered ones if there is none."""
    _load_entry_points()
    if name not in _registry:
        raise ValueError(f"unknown framework {name!r}; use one of {', '.join(_registry)}")
    return _registry[name]


def loaded_adapters() -> tuple[Adapter, ...]:
    """The adapters ``get_adapter`` has created so far (imports nothing)."""
    return tuple(_cache.values())


def get_adapter(name: str) -> Adapter:
    """The adapter for ``name``, importing its framework on first use.

    Raises ``FrameworkUnavailable`` (with the install hint) when the framework is missing or its environment
    is unusable, ``ValueError`` for a name nobody registered.
    """
    if name in _cache:
        return _cache[name]
    framework = entry(name)
    problem = framework.check_environment() if framework.check_environment else None
    if problem:
        raise FrameworkUnavailable(problem)
    module_name, _, attribute = framework.adapter.partition(":")
    try:  # the factory may import the framework itself (the keras entry chooses Keras 2 or 3 first)
        adapter = getattr(importlib.import_module(module_name), attribute)()
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in framework.packages:
            raise FrameworkUnavailable(f"{name} adapter needs the {exc.name!r} package, which is not installed "
                                       f"({framework.install_hint})") from exc
        raise
    adapter.framework = framework
    _cache[name] = adapter
    return adapter


provide_registry(get_adapter, entry, names)
