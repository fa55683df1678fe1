"""Hypothesis profiles, the report header, and framework fixtures that skip cleanly.

Profiles: ``dev`` (default), ``ci`` (loaded when ``CI`` is set: derandomized,
no deadline, failing blobs printed), ``thorough`` (``--hypothesis-profile thorough``) and ``smoke``
(10 examples a property: a quick pass while developing).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from equivalence.frameworks.builtin import keras_backend_problem
from equivalence.frameworks.registry import FrameworkUnavailable, get_adapter, loaded_adapters, names

pytest_plugins = ["pytester"]  # tests/test_own_plugin_and_cli.py runs the pytest plugin in a temporary project

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
# make runtimes: the runtimes' properties (tests/test_runtimes.py) at 4x make check's examples.
settings.register_profile("runtimes", max_examples=400, **_COMMON)
settings.register_profile("soak", max_examples=2500, derandomize=False, database=None, **_COMMON)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_configure(config: pytest.Config) -> None:
    """A bad ``KERAS_BACKEND`` (unknown, or its package missing) is one usage error, before anything runs:
    not Keras' traceback as an INTERNALERROR, and not a green run with every Keras test skipped."""
    problem = keras_backend_problem()
    if problem:
        raise pytest.UsageError(problem)


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


def selected_frameworks() -> tuple[str, ...]:
    """The frameworks under test: ``EQUIVALENCE_FRAMEWORKS`` (comma-separated), else every registered one the
    registry puts in the suite's default (as einops' and array-api-tests' test backends are chosen in one place)."""
    from equivalence.frameworks.registry import entry

    wanted = os.environ.get("EQUIVALENCE_FRAMEWORKS", "")
    chosen = tuple(name.strip() for name in wanted.split(",") if name.strip()) or tuple(
        name for name in names() if entry(name).in_suite_default)
    unknown = [name for name in chosen if name not in names()]
    if unknown:
        raise pytest.UsageError(f"EQUIVALENCE_FRAMEWORKS names {', '.join(unknown)}, which is not registered; "
                                f"use some of {', '.join(names())}")
    return chosen


def adapter_or_skip(name: str):
    if name not in selected_frameworks():
        if not os.environ.get("EQUIVALENCE_FRAMEWORKS"):
            pytest.skip(f"{name} is left out of the default selection (slow to start): make runtimes, or "
                        f"EQUIVALENCE_FRAMEWORKS=...,{name}, selects it")
        pytest.skip(f"{name} is not selected (EQUIVALENCE_FRAMEWORKS={os.environ.get('EQUIVALENCE_FRAMEWORKS')})")
    try:
        return get_adapter(name)
    except FrameworkUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(autouse=True)
def _no_stale_compiled_forms():
    """Meta tests patch framework code; a layer compiled in an earlier test (Keras on jax: ``jax.jit``)
    would keep the unpatched code, so every test starts with none."""
    for adapter in loaded_adapters():
        adapter.forget_compiled()


@pytest.fixture(scope="session")
def torch_adapter():
    return adapter_or_skip("torch")


@pytest.fixture(scope="session")
def keras_adapter():
    return adapter_or_skip("keras")


@pytest.fixture(scope="session")
def mxnet_adapter():
    """Only in ``make mxnet``'s .venv-mxnet: MXNet 1.9.1 needs numpy<1.24, which TensorFlow cannot share."""
    return adapter_or_skip("mxnet")


@pytest.fixture(scope="session")
def ort_adapter():
    """ONNX Runtime on torch's export (``pip install 'equivalence[ort]'``; inference only)."""
    return adapter_or_skip("ort")


@pytest.fixture(scope="session")
def torch_compile_adapter():
    """torch.compile (inductor, a C++ compiler needed): only in make runtimes, ~17 s to start."""
    return adapter_or_skip("torch_compile")


@pytest.fixture(scope="session")
def keras_graph_adapter():
    """Keras on TensorFlow through ``tf.function`` (predict's graph)."""
    return adapter_or_skip("keras_graph")


@pytest.fixture(scope="session")
def keras_xla_adapter():
    """Keras on TensorFlow through XLA (``tf.function(jit_compile=True)``)."""
    return adapter_or_skip("keras_xla")


@pytest.fixture(scope="session")
def litert_adapter():
    """LiteRT on TensorFlow's converter, float32 weights: only in make runtimes."""
    return adapter_or_skip("litert")


@pytest.fixture(scope="session")
def litert_fp16w_adapter():
    """LiteRT with float16 weight quantisation: only in make runtimes."""
    return adapter_or_skip("litert_fp16w")


@pytest.fixture(scope="session")
def torch_export_adapter():
    """torch.export, run as the exported program: only in make runtimes."""
    return adapter_or_skip("torch_export")


@pytest.fixture(scope="session")
def layer_pool():
    from equivalence.core.check import LayerPool

    return LayerPool()


def pytest_addoption(parser: pytest.Parser) -> None:
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
