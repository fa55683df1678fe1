"""The docs cannot rot: the README stays short, every relative link resolves, and every Python example runs.

Each page's ```python blocks run in order in one namespace (a later block may use an earlier one's names), in this
process, so the frameworks load once. A block that needs a framework not installed here skips with its name.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
README_MAX_LINES = 250
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_the_readme_is_read_in_minutes():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md got {lines} lines, but should have at most {README_MAX_LINES}"


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_every_relative_link_resolves(page):
    text = page.read_text(encoding="utf-8")
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists() or (anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved)):
            broken.append(target)
    assert not broken, f"{_id(page)}: got links {broken}, but every relative link should resolve"


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


EXAMPLES = [page for page in PAGES if PYTHON_BLOCK.search(page.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("page", EXAMPLES, ids=_id)
@pytest.mark.usefixtures("keras_walker_or_skip")  # the examples port to Keras 3 models
def test_every_python_example_runs(page, torch_adapter, keras_adapter, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example that writes a file writes it here
    namespace: dict = {"__name__": f"docs_example_{page.stem}"}
    for i, block in enumerate(PYTHON_BLOCK.findall(page.read_text(encoding="utf-8"))):
        code = compile(block, f"{_id(page)} (python block {i + 1})", "exec")
        exec(code, namespace)  # noqa: S102 - the docs' own examples
