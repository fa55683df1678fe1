"""The layout is the architecture: the core imports no framework and nothing of the guard, the frameworks
import nothing of the guard, no module-level import circle, and the CLI stays lean."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "equivalence"
FRAMEWORK_PACKAGES = {"torch", "tensorflow", "keras", "jax", "mxnet", "onnx", "onnxruntime", "tf_keras",
                      "ai_edge_litert"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path) -> set[str]:
    """Modules imported when ``path`` is imported: module-level statements, not ``if TYPE_CHECKING`` blocks
    nor imports inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _top_level_imports(path) if m in modules and m != "equivalence" and m != name}
            for name, path in modules.items()}


def test_no_module_level_import_circle():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt]
                raise AssertionError(f"got the import circle {' -> '.join(cycle)}, but should be none")
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_the_core_imports_no_framework_and_nothing_above_it():
    for path in (PACKAGE / "core").rglob("*.py"):
        for imported in _top_level_imports(path):
            top = imported.split(".")[0]
            assert top not in FRAMEWORK_PACKAGES, f"{path.name} imports {imported}: the core talks numpy"
            assert not imported.startswith(("equivalence.guard", "equivalence.cli", "equivalence.own")), (
                f"{path.name} imports {imported}, but the core should import nothing above it")


def test_the_frameworks_import_nothing_of_the_guard():
    for path in (PACKAGE / "frameworks").rglob("*.py"):
        for imported in _top_level_imports(path):
            assert not imported.startswith(("equivalence.guard", "equivalence.cli")), f"{path} imports {imported}"


def test_report_and_verify_import_neither_hypothesis_nor_a_framework_they_were_not_asked_for(torch_adapter):
    """The CLI stays lean: ``report`` and ``verify`` never load hypothesis; ``verify --framework torch`` never
    loads TensorFlow."""
    code = ("import sys; from equivalence import cli; "
            "code = cli.main(['verify', sys.argv[1], '--framework', 'torch']); "
            "print(code, 'hypothesis' in sys.modules, 'tensorflow' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code, str(PACKAGE.parent / "golden")], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "0 False False", run.stdout[-2000:]
