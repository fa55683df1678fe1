"""Hypothesis profiles, the report header, and the frameworks under test: chosen once, tests parametrized over them.

Frameworks: every registered one the registry puts in the suite's default (``equivalence.frameworks.registry``),
or those ``--frameworks`` (or ``EQUIVALENCE_FRAMEWORKS``) names, comma-separated, as einops' and
array-api-tests' test backends are chosen in one place. A test that
takes a ``framework`` argument runs once per selected framework, its id naming it; with ``style`` (or
``registering_style``, ``save_format``) too, once per build style (registering style, save format) the
framework's registry entry lists. Its ``adapter`` fixture is that framework's adapter, or a skip saying why
not (not installed, not selected). ``@pytest.mark.needs("sgd")`` skips the frameworks whose entry does not
declare the capability, with the reason ("mxnet does not declare sgd"). So a new framework gets every shared
test by its registry entry alone.

Profiles: ``dev`` (default), ``ci`` (loaded when ``CI`` is set: derandomized,
no deadline, failing blobs printed), ``thorough`` (``--hypothesis-profile thorough``) and ``smoke``
(10 examples a property: a quick pass while developing).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, settings

from equivalence.frameworks.builtin import keras_backend_problem
from equivalence.frameworks.registry import (
    CAPABILITIES,
    FrameworkUnavailable,
    entry,
    get_adapter,
    loaded_adapters,
    names,
)

pytest_plugins = ["pytester"]  # tests/own/test_own_plugin_and_cli.py runs the pytest plugin in a temporary project

if os.environ.get("KERAS_BACKEND") == "jax":
    # Keras on jax truncates float64 to float32 unless x64 is on; the suite checks float64 stacks.
    os.environ.setdefault("JAX_ENABLE_X64", "1")

# Keras' first call of a new shape is slow (~15 ms to build), so no per-example deadline.
_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("dev", max_examples=100, **_COMMON)
settings.register_profile("ci", max_examples=100, derandomize=True, database=None, **_COMMON)
settings.register_profile("thorough", max_examples=2000, **_COMMON)
# A quick pass over every property while developing (e.g. on jax, which compiles every new shape); never CI's.
settings.register_profile("smoke", max_examples=10, **_COMMON)
# make soak: 40 pooled shards x 2,500 + 10 style shards x 125 = 101,250 cases, never derandomized.
# make runtimes: the runtimes' properties (tests/frameworks/test_runtimes.py) at 4x make check's examples.
settings.register_profile("runtimes", max_examples=400, **_COMMON)
# make runtimes' second step: the registry-wide tests over the seven runtimes, at a quarter of make check's examples
# (their own properties ran at 4x just before); at 100, XLA alone takes ~6 min of one of them.
settings.register_profile("registry", max_examples=25, **_COMMON)
settings.register_profile("soak", max_examples=2500, derandomize=False, database=None, **_COMMON)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_configure(config: pytest.Config) -> None:
    """A bad ``KERAS_BACKEND`` (unknown, or its package missing) is one usage error, before anything runs:
    not Keras' traceback as an INTERNALERROR, and not a green run with every Keras test skipped."""
    problem = keras_backend_problem()
    if problem:
        raise pytest.UsageError(problem)
    global _FRAMEWORKS_OPTION
    _FRAMEWORKS_OPTION = config.getoption("--frameworks", None)
    selected_frameworks()  # an unknown name in --frameworks: one usage error too
    config.addinivalue_line("markers", f"needs(*capabilities): skip the frameworks whose registry entry does not "
                                       f"declare them (some of {', '.join(CAPABILITIES)})")


def pytest_report_header(config: pytest.Config) -> list[str]:
    import numpy

    lines = [f"numpy {numpy.__version__}, hypothesis profile {settings._current_profile}"]
    for name in selected_frameworks():
        try:
            versions = get_adapter(name).versions()
        except FrameworkUnavailable as exc:
            lines.append(f"{name}: not installed ({exc})")
            continue
        lines.append(f"{name}: " + ", ".join(f"{k}={v}" for k, v in versions.items()))
    return lines


_FRAMEWORKS_OPTION: str | None = None
"""``--frameworks`` as given on the command line (set by ``pytest_configure``)."""


def _frameworks_wanted() -> tuple[str, str]:
    """The comma-separated names asked for and where they came from: ``--frameworks`` first, then
    ``EQUIVALENCE_FRAMEWORKS`` (what make targets and CI set), else nothing."""
    if _FRAMEWORKS_OPTION:
        return _FRAMEWORKS_OPTION, "--frameworks"
    return os.environ.get("EQUIVALENCE_FRAMEWORKS", ""), "EQUIVALENCE_FRAMEWORKS"


def selected_frameworks() -> tuple[str, ...]:
    """The frameworks under test: those ``--frameworks`` (or ``EQUIVALENCE_FRAMEWORKS``) names, else every
    registered one the registry puts in the suite's default (as einops' and array-api-tests' test backends are
    chosen in one place)."""
    wanted, source = _frameworks_wanted()
    chosen = tuple(name.strip() for name in wanted.split(",") if name.strip()) or tuple(
        name for name in names() if entry(name).in_suite_default)
    unknown = [name for name in chosen if name not in names()]
    if unknown:
        raise pytest.UsageError(f"{source} names {', '.join(unknown)}, which is not registered; "
                                f"use some of {', '.join(names())}")
    return chosen


def adapter_or_skip(name: str, *, own: bool = False):
    """``name``'s adapter, or a skip saying why not. ``own``: for a test written for that framework alone, which
    runs by default when its registry entry says ``own_tests_default`` (the runtimes' own properties in
    ``make check``), even where the registry-wide tests leave the framework out."""
    wanted, source = _frameworks_wanted()
    by_default = not wanted and own and entry(name).own_tests_default
    if name not in selected_frameworks() and not by_default:
        if not wanted:
            pytest.skip(f"{name} is left out of the default selection (slow to start): make runtimes, or "
                        f"--frameworks ...,{name}, selects it")
        pytest.skip(f"{name} is not selected ({source}={wanted})")
    try:
        return get_adapter(name)
    except FrameworkUnavailable as exc:
        pytest.skip(str(exc))


def undeclared(framework: str, capabilities: Sequence[str]) -> str | None:
    """Why ``framework`` cannot run a test that needs ``capabilities`` ("mxnet does not declare sgd"), or None:
    the one place a missing optional capability becomes a skip reason."""
    unknown = sorted(set(capabilities) - set(CAPABILITIES))
    if unknown:
        raise pytest.UsageError(f"@pytest.mark.needs names {', '.join(unknown)}; use some of {', '.join(CAPABILITIES)}")
    missing = [c for c in capabilities if c not in entry(framework).capabilities]
    return f"{framework} does not declare {', '.join(missing)}" if missing else None


FRAMEWORK_AXES = {
    "style": lambda framework: framework.styles,
    "registering_style": lambda framework: framework.registering,
    "save_format": lambda framework: framework.save_formats,
}
"""Arguments a test may take beside ``framework``: each runs over what the framework's registry entry lists."""


def _framework_params(metafunc: pytest.Metafunc) -> tuple[list[str], list]:
    axes = [name for name in FRAMEWORK_AXES if name in metafunc.fixturenames]
    needs = [c for marker in metafunc.definition.iter_markers("needs") for c in marker.args]
    params = []
    for name in selected_frameworks():
        reason = undeclared(name, needs)
        if reason:  # one skipped test for the framework, however many styles or formats it lists
            params.append(pytest.param(name, *[None] * len(axes), id=name, marks=pytest.mark.skip(reason=reason)))
            continue
        for values in itertools.product(*(FRAMEWORK_AXES[axis](entry(name)) for axis in axes)):
            params.append(pytest.param(name, *values, id="-".join((name, *values))))
    return ["framework", *axes], params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per selected framework (and per style, registering style or save format it takes).

    A test that parametrizes ``framework`` itself (the pair-specific meta tests, which patch torch or Keras
    code) is left alone. Module scope: the ``adapter`` fixture is set up once per framework and module, so
    hypothesis' ``@given`` tests may take it.
    """
    if "framework" not in metafunc.fixturenames:
        return
    if any("framework" in _argnames(marker) for marker in metafunc.definition.iter_markers("parametrize")):
        return
    argnames, params = _framework_params(metafunc)
    metafunc.parametrize(argnames, params, scope="module")


def _argnames(marker: pytest.Mark) -> list[str]:
    argnames = marker.args[0] if marker.args else marker.kwargs.get("argnames", ())
    return [n.strip() for n in argnames.split(",")] if isinstance(argnames, str) else list(argnames)


@pytest.fixture(scope="module")
def adapter(framework: str):
    """The adapter of the test's ``framework`` (see ``pytest_generate_tests``), or a skip naming why not."""
    return adapter_or_skip(framework)


@pytest.fixture(autouse=True)
def _no_stale_compiled_forms():
    """Meta tests patch framework code; a layer compiled in an earlier test (Keras on jax: ``jax.jit``)
    would keep the unpatched code, so every test starts with none."""
    for adapter in loaded_adapters():
        adapter.forget_compiled()


def _adapter_fixture(name: str):
    @pytest.fixture(scope="session", name=f"{name}_adapter")
    def fixture():
        return adapter_or_skip(name, own=True)

    fixture.__doc__ = (f"The {name} adapter for the tests written for it alone, or a skip naming why not (not "
                       f"installed: {entry(name).install_hint}; not selected).")
    return fixture


for _name in names():  # torch_adapter, keras_adapter, ..., one per registered framework
    globals()[f"{_name}_adapter"] = _adapter_fixture(_name)


@pytest.fixture(scope="module")
def keras_walker_or_skip(keras_adapter):
    """The own-model tests need the Keras walker to read a plain ``Sequential`` (use it with
    ``pytest.mark.usefixtures``): a skip naming why it cannot here."""
    from tests.helpers import keras_walker_problem

    problem = keras_walker_problem()
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="session")
def layer_pool():
    from equivalence.core.check import LayerPool

    return LayerPool()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--frameworks", default=None, metavar="NAMES",
                     help="comma-separated frameworks to test (default: the registry's default selection; "
                          "EQUIVALENCE_FRAMEWORKS is the same as an environment variable)")
    parser.addoption("--stats-json", default=None, help="write cases seen and worst error/bound ratios here")


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests.stats import STATS

    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: hand what it saw to the controller
        workeroutput["equivalence_stats"] = STATS


@pytest.hookimpl(optionalhook=True)  # an xdist hook: .venv-mxnet has no xdist
def pytest_testnodedown(node, error) -> None:  # xdist controller hook
    from tests.stats import STATS, merge

    merge(STATS, node.workeroutput.get("equivalence_stats", {"cross_framework_cases": 0, "cases": 0, "worst": {}}))


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    import json

    from tests.stats import STATS

    write = terminalreporter.write_line
    write(f"cross-framework cases checked (torch and Keras together): {STATS['cross_framework_cases']}")
    if STATS["worst"]:
        worst = max(STATS["worst"].items(), key=lambda kv: kv[1][0])
        write(f"worst error/bound ratio over {STATS['cases']} compared cases: {worst[1][0]:.3g} "
              f"({worst[0]}, {worst[1][1]}, {worst[1][2]})")
    loaded = {adapter.name for adapter in loaded_adapters()}
    if loaded:
        from equivalence.core.kernels import kernel_facts
        from equivalence.core.known_differences import KNOWN_DIFFERENCES

        named = [d for d in KNOWN_DIFFERENCES if d.framework in loaded]
        active = [d.name for d in named if d.active()]
        kernel = kernel_facts()
        write(f"kernel path: {kernel['cpu_model']}, {kernel['cpu_isa']}, oneDNN at {kernel['onednn_isa']}, "
              f"{kernel['blas']} {kernel.get('blas_core', '')}")
        write(f"known differences active here ({len(active)} of {len(named)} for {', '.join(sorted(loaded))}): "
              + (", ".join(active) or "none"))
    if config.getoption("--stats-json"):
        with open(config.getoption("--stats-json"), "w") as f:
            json.dump(STATS, f, indent=2, sort_keys=True)
