"""The pytest plugin (entry point ``pytest11``): check your own port inside your own test suite.

::

    def test_port(equivalence):
        equivalence.assert_equivalent(torch_model, keras_model)

``--equivalence-table=PATH`` writes every check's per-layer table (Markdown) to PATH at the end
of the session. Loading the plugin imports neither torch nor TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

_TABLES = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
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
        from equivalence.own import compare_models

        result = compare_models(torch_model, keras_model, x, **options)
        self._tables.append(f"## {self._test}\n\n{result.table()}")
        return result

    def assert_equivalent(self, torch_model: Any, keras_model: Any, x: Any = None, **options: Any) -> Any:
        result = self.compare_models(torch_model, keras_model, x, **options)
        if not result.passed:
            raise AssertionError(result.message())
        return result

    def port_weights(self, source: Any, target: Any) -> None:
        from equivalence.own import port_weights

        port_weights(source, target)


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
