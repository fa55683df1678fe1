"""The layout is the architecture: dependencies run one way (core <- frameworks <- guard, own models, CLI), the
core imports no framework and nothing above it, the registry imports no framework of its own, no import circle
of any kind (module level, lazy or type-only), and the CLI stays lean."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "equivalence"
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


def _all_imports(path: Path) -> set[str]:
    """Every module ``path`` names in an import: module level, inside functions, under ``if TYPE_CHECKING``,
    relative ones resolved; ``from a import b`` counts as ``a`` and ``a.b``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join([*parts, *([node.module] if node.module else [])])
            found |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return found


def _package_imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of the package ``path`` imports in any way (``_all_imports``), but itself and the root."""
    own = set()
    for imported in _all_imports(path):
        while imported and imported not in modules:
            imported = imported.rpartition(".")[0]
        if imported and imported not in ("equivalence", _module_name(path)):
            own.add(imported)
    return own


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _package_imports(path, modules) for name, path in modules.items()}


def test_no_import_circle_of_any_kind():
    """Lazy and type-only imports count: a circle through them still ties the modules into one."""
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


def test_the_core_imports_nothing_above_it_not_even_lazily():
    for name, imported in _graph().items():
        if name.startswith("equivalence.core"):
            above = sorted(m for m in imported if not m.startswith("equivalence.core"))
            assert not above, f"got {name} importing {above}, but the core should import only the core"


def _documentation(tree: ast.AST) -> set[int]:
    """The string statements: docstrings, and those documenting the name assigned above them."""
    return {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}


def test_the_core_names_no_framework():
    """A framework's facts (its known differences, probes, where it runs) live beside its adapter and reach the
    core through its registry entry: no string in the core's code names a registered framework, alone or as a
    word of it (``"torch"``, ``"keras_float64_..."``). Docstrings may, to explain."""
    from equivalence.frameworks.registry import names

    word = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(sorted(map(re.escape, names()), key=len, reverse=True))
                      + r")(?![A-Za-z0-9])")
    found = []
    for path in sorted((PACKAGE / "core").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        documentation = _documentation(tree)
        found += [f"{path.name}:{node.lineno} {node.value[:50]!r}" for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in documentation
                  and word.search(node.value)]
    assert not found, f"got framework names in the core: {'; '.join(found)}, but should be none"


def test_the_frameworks_facts_load_without_their_frameworks():
    """The registry reads every framework's known differences and probes without importing one framework."""
    code = ("import sys; from equivalence.core.known_differences import known_differences, probes; "
            "n = len(known_differences()), len(probes()); "
            f"print(n[0] > 0, n[1] > 0, sorted(set({sorted(FRAMEWORK_PACKAGES)!r}) & set(sys.modules)))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "True True []", run.stdout


def test_the_registry_imports_no_framework_of_its_own():
    """The built-in frameworks register through the package's entry points, as a third party's do."""
    imported = _graph()["equivalence.frameworks.registry"]
    assert all(m.startswith("equivalence.core") for m in imported), (
        f"got the registry importing {sorted(imported)}, but it should import only the core")


def test_the_built_in_frameworks_are_the_packages_entry_point():
    import importlib.metadata

    from equivalence.frameworks import builtin
    from equivalence.frameworks.registry import ENTRY_POINT_GROUP, Framework, names

    points = [p.value for p in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if p.dist.name == "equivalence"]
    assert points == ["equivalence.frameworks.builtin:FRAMEWORKS"], (
        f"got the entry points {points}, but should be builtin's FRAMEWORKS (reinstall after changing "
        "pyproject.toml: make venv)")
    declared = [value.name for value in vars(builtin).values() if isinstance(value, Framework)]
    assert sorted(f.name for f in builtin.FRAMEWORKS) == sorted(declared), "an entry of builtin.py is not listed"
    assert names()[:len(declared)] == tuple(f.name for f in builtin.FRAMEWORKS)


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
