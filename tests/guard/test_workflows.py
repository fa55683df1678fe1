"""The GitHub Actions workflow is valid, safe, and runs only what make runs locally (linted offline)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from equivalence.guard.portability import CELLS

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def _tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).with_name(name))
    if not Path(path).exists():
        pytest.skip(f"{name} is not installed (pip install -e '.[test]' installs it)")
    return path


def test_there_is_a_workflow():
    assert WORKFLOWS, "no workflow under .github/workflows"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_the_workflow_matches_githubs_schema(workflow):
    run = subprocess.run([_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(workflow)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_zizmor_finds_nothing_offline(workflow):
    run = subprocess.run([_tool("zizmor"), "--offline", "--no-progress", str(workflow)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_every_job_command_is_a_make_target_and_every_cell_exists(workflow):
    text = workflow.read_text(encoding="utf-8")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.M))
    commands = re.findall(r"^\s*run:\s*(.+)$", text, flags=re.M)
    assert commands
    for command in commands:
        assert command.startswith("make "), f"got {command!r}, but every job command should be a make target"
        assert command.split()[1] in targets, f"make {command.split()[1]} is not in the Makefile"
    cells = {cell.name for cell in CELLS}
    listed = re.search(r"cell: \[([^\]]*)\]", text)
    if listed:
        named = {c.strip() for c in listed.group(1).split(",")}
        assert named <= cells, f"got cells {sorted(named - cells)}, but should be among {sorted(cells)}"
        runnable = {cell.name for cell in CELLS if not cell.not_a_machine}
        assert named == runnable, f"the workflow runs {sorted(named)}, but the runnable cells are {sorted(runnable)}"
