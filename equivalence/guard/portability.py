"""``make portability``: the suite and the guard on every kernel path this CPU can emulate, as one table.

A kernel path is chosen by environment variables read when the frameworks load, so each cell runs in a
process of its own: ``python -m equivalence.guard.portability --cell NAME`` runs pytest in-process, then verifies
the golden vectors, then writes a JSON summary; the parent runs every cell this CPU supports and prints
the table (Markdown, also written to ``--out``; appended to ``$GITHUB_STEP_SUMMARY`` when set).

The cells (``CELLS``) cover each axis the frameworks expose: torch's ATen kernels (``ATEN_CPU_CAPABILITY``),
TensorFlow's oneDNN switch (``TF_ENABLE_ONEDNN_OPTS``), the oneDNN ISA both bundle (``ONEDNN_MAX_CPU_ISA``),
what an AVX2-only CPU runs, and the lowest path. Each cell runs the whole suite: it fits (about a minute a
cell on 2 cores), and a subset would leave out exactly the test a kernel path breaks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from equivalence.core.kernels import cpu_flags

AVX512 = ("avx512f", "avx512bw", "avx512vl", "avx512dq")


@dataclass(frozen=True)
class Cell:
    """One kernel path: the variables that choose it, the CPU flags it needs, and what it stands for."""

    name: str
    env: Mapping[str, str]
    needs: tuple[str, ...]
    stands_for: str
    not_a_machine: str = ""
    """Why the cell is listed but never run: an emulated combination no real CPU has."""

    def why_not(self, flags: Sequence[str]) -> str:
        """Empty when this CPU can run the cell, else the reason."""
        if self.not_a_machine:
            return self.not_a_machine
        missing = [f for f in self.needs if f not in flags]
        return f"this CPU lacks {', '.join(missing)}" if missing else ""


LOWEST = {"ATEN_CPU_CAPABILITY": "default", "TF_ENABLE_ONEDNN_OPTS": "0", "ONEDNN_MAX_CPU_ISA": "SSE41"}

CELLS: tuple[Cell, ...] = (
    Cell("native", {}, (), "this CPU's defaults"),
    Cell("torch-avx512", {"ATEN_CPU_CAPABILITY": "avx512"}, AVX512, "torch's AVX-512 ATen kernels"),
    Cell("torch-avx2", {"ATEN_CPU_CAPABILITY": "avx2"}, ("avx2",), "torch's AVX2 ATen kernels"),
    Cell("torch-default", {"ATEN_CPU_CAPABILITY": "default"}, (), "torch's baseline ATen kernels"),
    Cell("tf-onednn-on", {"TF_ENABLE_ONEDNN_OPTS": "1"}, (), "TensorFlow's oneDNN ops on"),
    Cell("tf-onednn-off", {"TF_ENABLE_ONEDNN_OPTS": "0"}, (), "TensorFlow's oneDNN ops off (its default on AVX2)"),
    Cell("onednn-avx2-tf-onednn-on", {"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_ENABLE_ONEDNN_OPTS": "1"}, ("avx2",),
         "TF's oneDNN on, capped at AVX2",
         not_a_machine="on an AVX-512 CPU TF picks its oneDNN primitives by the real CPU: under the cap its softmax "
         "cannot create one (AbortedError) and the suite's process dies (measured); a real AVX2 CPU runs "
         "avx2-machine, where TF's oneDNN is off"),
    Cell("onednn-avx512-bf16", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16", "TF_ENABLE_ONEDNN_OPTS": "0"},
         (*AVX512, "avx512_bf16"), "oneDNN (torch's) at AVX512_CORE_BF16: on an AMX CPU, its kernels without AMX "
         "(an AVX-512 EPYC's level; there, the native ISA)"),
    Cell("onednn-avx2", {"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_ENABLE_ONEDNN_OPTS": "0"}, ("avx2",),
         "oneDNN (torch's) at AVX2"),
    Cell("avx2-machine", {"ATEN_CPU_CAPABILITY": "avx2", "TF_ENABLE_ONEDNN_OPTS": "0", "ONEDNN_MAX_CPU_ISA": "AVX2"},
         ("avx2",), "an AVX2-only CPU (e.g. an AVX2 EPYC: TF leaves oneDNN off there)"),
    Cell("lowest", LOWEST, (), "the lowest path: baseline ATen, TF without oneDNN, oneDNN at SSE4.1"),
)
_BY_NAME = {cell.name: cell for cell in CELLS}
_VARIABLES = sorted({var for cell in CELLS for var in cell.env})


# --- one cell, in its own process ---------------------------------------------------------------

def run_cell(name: str, out: Path, pytest_args: Sequence[str], golden: Path) -> int:
    """Run inside a cell's environment: pytest, then the guard; write ``out/<name>.json``."""
    import pytest

    from equivalence.frameworks.registry import get_adapter
    from equivalence.guard import golden as gold
    from equivalence.guard.fingerprint import fingerprint

    start = time.perf_counter()
    exit_code = int(pytest.main(["-p", "no:cacheprovider", *pytest_args]))
    tests_seconds = time.perf_counter() - start
    adapters = {name: get_adapter(name) for name in ("torch", "keras")}
    fp = fingerprint(tuple(adapters))
    vectors = gold.load(golden)
    result = gold.verify(vectors, adapters)
    summary = {
        "cell": name,
        "env": {var: os.environ.get(var, "unset") for var in _VARIABLES},
        "tests": {"exit_code": exit_code, "passed": exit_code == 0, "seconds": round(tests_seconds, 1)},
        "kernel": {"torch": fp["frameworks"]["torch"].get("cpu_capability"),
                   "tf_onednn": fp["frameworks"]["keras"].get("onednn_enabled"),
                   "onednn_isa": fp["kernel"]["onednn_isa"], "blas_core": fp["kernel"].get("blas_core")},
        "active": fp["known_differences"]["active"],
        "probes": fp["probes"],
        "guard": {"passed": result.passed, "cases": len(vectors.cases),
                  "moved": {source: len(result.changed_cases(source)) for source in ("torch", "keras", "reference")}},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return 0 if exit_code == 0 and result.passed else 1


# --- every cell: the table -------------------------------------------------------------------------

def table(summaries: Sequence[Mapping[str, Any]], skipped: Sequence[tuple[Cell, str]], always: set[str]) -> str:
    """The Markdown table: cell, kernel path, tests, guard, the kernel-dependent known differences active."""
    lines = ["| cell | variables | kernel path (torch, TF oneDNN, oneDNN ISA) | tests | guard (cases moved: "
             "torch / keras / reference) | known differences active (beyond those active everywhere) |",
             "|---|---|---|---|---|---|"]
    for s in summaries:
        env = " ".join(f"{k}={v}" for k, v in s["env"].items() if v != "unset") or "(none)"
        k, g = s["kernel"], s["guard"]
        moved = " / ".join(str(g["moved"][src]) for src in ("torch", "keras", "reference"))
        extra = [name for name in s["active"] if name not in always]
        lines.append(f"| {s['cell']} | `{env}` | {k['torch']}, {k['tf_onednn']}, {k['onednn_isa']} | "
                     f"{'pass' if s['tests']['passed'] else 'FAIL'} ({s['tests']['seconds']:.0f} s) | "
                     f"{'pass' if g['passed'] else 'FAIL'} ({moved} of {g['cases']}) | {', '.join(extra) or '-'} |")
    for cell, why in skipped:
        lines.append(f"| {cell.name} | `{' '.join(f'{k}={v}' for k, v in cell.env.items())}` | not run: {why} "
                     "| - | - | - |")
    return "\n".join(lines) + "\n"


def probe_here(out: Path) -> str:
    """Every named difference's probe on this machine's native path, beside the recorded CPUs (written to
    ``out/probes.md``): a new CPU shows up here as a table, before any cell runs."""
    from equivalence.core.known_differences import FACTS, probes
    from equivalence.guard.cpus import probe_table

    markdown = probe_table(probes(), FACTS)
    (out / "probes.md").write_text(markdown, encoding="utf-8")
    return markdown


def run_all(cells: Sequence[Cell], out: Path, pytest_args: Sequence[str], golden: Path) -> int:
    flags = cpu_flags()
    out.mkdir(parents=True, exist_ok=True)
    probes = probe_here(out)
    print("portability: the named differences' probes here, beside the CPUs they were recorded on\n\n" + probes)
    summaries, skipped, failed = [], [], []
    for cell in cells:
        why = cell.why_not(flags)
        if why:
            skipped.append((cell, why))
            continue
        env = {**{k: v for k, v in os.environ.items() if k not in _VARIABLES}, **cell.env}
        log = out / f"{cell.name}.log"
        print(f"portability: {cell.name} ({cell.stands_for}) ... ", end="", flush=True)
        with open(log, "w", encoding="utf-8") as f:
            code = subprocess.call([sys.executable, "-m", "equivalence.guard.portability", "--cell", cell.name,
                                    "--in-this-process", "--out", str(out), "--golden", str(golden), "--",
                                    *pytest_args],
                                   env=env, stdout=f, stderr=subprocess.STDOUT)
        summary_path = out / f"{cell.name}.json"
        if not summary_path.is_file():
            print(f"crashed (exit {code}), see {log}")
            print("".join(log.read_text(encoding="utf-8").splitlines(keepends=True)[-40:]))
            failed.append(cell.name)
            continue
        summaries.append(json.loads(summary_path.read_text(encoding="utf-8")))
        print("pass" if code == 0 else f"FAIL, see {log}")
        if code:
            failed.append(cell.name)
            print("".join(log.read_text(encoding="utf-8").splitlines(keepends=True)[-40:]))
    always = set.intersection(*(set(s["active"]) for s in summaries)) if summaries else set()
    markdown = table(summaries, skipped, always)
    markdown += ("\nKnown differences active in every cell: " + (", ".join(sorted(always)) or "none") + ".\n")
    (out / "portability.md").write_text(markdown, encoding="utf-8")
    (out / "portability.json").write_text(json.dumps({"cells": summaries, "always_active": sorted(always),
                                                      "not_run": {c.name: why for c, why in skipped}}, indent=1)
                                          + "\n", encoding="utf-8")
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as f:
            f.write("## Portability\n\n### Probes\n\n" + probes + "\n### Cells\n\n" + markdown)
    print(markdown)
    if failed:
        print(f"portability: FAIL in {', '.join(failed)} (logs in {out})")
        return 1
    print(f"portability: every cell this CPU supports passed ({len(summaries)} run, {len(skipped)} not supported)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m equivalence.guard.portability",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--cell", choices=list(_BY_NAME), action="append", dest="cells",
                        help="run only this cell (repeat for several; default: every cell this CPU supports)")
    parser.add_argument("--out", type=Path, default=Path("report/portability"), help="folder for logs and tables")
    parser.add_argument("--golden", type=Path, default=Path("golden"), help="golden-vector folder for the guard")
    parser.add_argument("--probes", action="store_true",
                        help="only probe the named differences here and print them beside the recorded CPUs")
    parser.add_argument("--in-this-process", action="store_true", help=argparse.SUPPRESS)  # a cell's own process
    parser.add_argument("pytest_args", nargs="*", help="arguments for pytest after --")
    args = parser.parse_args(argv)
    if args.in_this_process:
        return run_cell(args.cells[0], args.out, args.pytest_args, args.golden)
    if args.probes:
        args.out.mkdir(parents=True, exist_ok=True)
        print(probe_here(args.out))
        return 0
    cells = [_BY_NAME[name] for name in args.cells] if args.cells else list(CELLS)
    return run_all(cells, args.out, args.pytest_args, args.golden)


if __name__ == "__main__":
    raise SystemExit(main())
