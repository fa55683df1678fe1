"""Hypothesis profiles, the report header, and framework fixtures that skip cleanly.

Profiles: ``dev`` (default), ``ci`` (loaded when ``CI`` is set: derandomized,
no deadline, failing blobs printed) and ``thorough`` (``--hypothesis-profile thorough``).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from equivalence.adapters import FRAMEWORKS, FrameworkUnavailable, get_adapter

# Keras' first call of a new shape is slow (~15 ms to build), so no per-example deadline.
_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100, **_COMMON)
settings.register_profile("ci", max_examples=100, derandomize=True, print_blob=True, database=None, **_COMMON)
settings.register_profile("thorough", max_examples=2000, print_blob=True, **_COMMON)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_report_header(config: pytest.Config) -> list[str]:
    import numpy

    lines = [f"numpy {numpy.__version__}, hypothesis profile {settings._current_profile}"]
    for name in FRAMEWORKS:
        try:
            versions = get_adapter(name).versions()
        except FrameworkUnavailable as exc:
            lines.append(f"{name}: not installed ({exc})")
            continue
        lines.append(f"{name}: " + ", ".join(f"{k}={v}" for k, v in versions.items()))
    return lines


def adapter_or_skip(name: str):
    try:
        return get_adapter(name)
    except FrameworkUnavailable as exc:
        pytest.skip(str(exc))


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
def layer_pool():
    from equivalence.check import LayerPool

    return LayerPool()


def _cross_framework_cases() -> int:
    from tests.helpers import CROSS_FRAMEWORK_CASES

    return CROSS_FRAMEWORK_CASES["count"]


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: hand the count to the controller
        workeroutput["cross_framework_cases"] = _cross_framework_cases()


@pytest.hookimpl(optionalhook=True)  # an xdist hook: .venv-mxnet has no xdist
def pytest_testnodedown(node, error) -> None:  # xdist controller hook
    node.config._cross_framework_from_workers = (
        getattr(node.config, "_cross_framework_from_workers", 0) + node.workeroutput.get("cross_framework_cases", 0)
    )


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    total = _cross_framework_cases() + getattr(config, "_cross_framework_from_workers", 0)
    terminalreporter.write_line(f"cross-framework cases checked (torch and Keras together): {total}")
