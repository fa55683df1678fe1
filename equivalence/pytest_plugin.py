"""The pytest plugin (entry point ``pytest11``): check your own port inside your own test suite.

::

    def test_port(equivalence):
        equivalence.assert_equivalent(torch_model, keras_model)

``--equivalence-table=PATH`` writes every check's per-layer table (Markdown) to PATH at the end
of the session. Loading the plugin imports neither torch nor TensorFlow. ``pytest -p no:equivalence``
turns it off (the entry point's name is ``equivalence``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

_TABLES = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    if pluginmanager.get_plugin("equivalence") is sys.modules[__name__]:
        # Loaded from the entry point: a conftest's pytest_plugins = ["equivalence.pytest_plugin"] would register
        # this module again under its module name (pluggy refuses one plugin under two names).
        pluginmanager.set_blocked(__name__)
    group = parser.getgroup("equivalence", "checking a torch model against its Keras port")
    group.addoption("--equivalence-table", metavar="PATH", default=None,
                    help="write the per-layer table of every equivalence check to PATH (Markdown)")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_TABLES] = []


class Checker:
    """What the ``equivalence`` fixture gives a test: ``assert_equivalent`` and ``compare_models``
    of ``equivalence.own``, each result's table kept for ``--equivalence-table``."""

    def __init__(self, tables: list, test: str) -> None:
        self._tables, self._test = tables, test

    def compare_models(self, torch_model: Any, keras_model: Any, x: Any = None, **options: Any) -> Any:
        __tracebackhide__ = True
        from equivalence.own import compare_models

        result = _at_the_user_s_line(compare_models, torch_model, keras_model, x, **options)
        self._tables.append(f"## {self._test}\n\n{result.table()}")
        return result

    def assert_equivalent(self, torch_model: Any, keras_model: Any, x: Any = None, **options: Any) -> Any:
        __tracebackhide__ = True
        result = self.compare_models(torch_model, keras_model, x, **options)
        if not result.passed:
            raise AssertionError(result.message())
        return result

    def port_weights(self, source: Any, target: Any) -> None:
        __tracebackhide__ = True
        from equivalence.own import port_weights

        _at_the_user_s_line(port_weights, source, target)


def _at_the_user_s_line(function: Any, *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)``; a model the suite refuses (``ValueError``: ``ModelNotSupported``,
    ``PortMismatch``, inputs of the wrong shape) fails the user's test at the user's line: the one-line message
    says it all, the frames inside the walkers say nothing to the user."""
    __tracebackhide__ = True
    try:
        return function(*args, **kwargs)
    except ValueError as exc:
        raise exc.with_traceback(None) from None


@pytest.fixture
def equivalence(request: pytest.FixtureRequest) -> Checker:
    """Check a torch model against its Keras port: ``equivalence.assert_equivalent(torch_model, keras_model)``."""
    return Checker(request.config.stash[_TABLES], request.node.nodeid)


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--equivalence-table")
    tables = session.config.stash.get(_TABLES, [])
    if path and not hasattr(session.config, "workerinput"):  # xdist workers: the controller has no tables
        from equivalence.core.atomic import write_text_atomic

        write_text_atomic(Path(path), "# equivalence: per-layer tables\n\n" + "\n".join(tables))


def pytest_report_header(config: pytest.Config) -> str | None:
    path = config.getoption("--equivalence-table")
    return f"equivalence: per-layer tables to {path}" if path else None
