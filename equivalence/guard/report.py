"""``equivalence report``: run the report matrix and write the results as JSON, Markdown and a PNG.

One row per case and pair: the worst error as a multiple of its bound, the layer
where it is, the first failing layer, pass or fail. The JSON also holds every
layer's error and bound, which the PNG plots. rich and matplotlib are imported
only by the functions that draw.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from equivalence.core.check import LayerPool, reference_inputs, run_available
from equivalence.core.compare import Comparison, LayerResult, compare_layers
from equivalence.core.reference import layerwise_reference
from equivalence.frameworks.base import Adapter
from equivalence.guard.fingerprint import summary
from equivalence.guard.matrix import ChainCase, MatrixCase

REPORT_SCHEMA_VERSION = 1
FILES = ("report.json", "report.md", "report.png")


def run_case(mcase: MatrixCase | ChainCase, adapters: Mapping[str, Adapter], pool: LayerPool) -> Comparison:
    """Pooled bare layers when the case has no styles, else freshly built models of its styles."""
    case = mcase.make()
    traces = layerwise_reference(case.spec, case.weights, case.x)

    pooled = pool.model_for(case.spec, case.weights)

    def model_for(name: str, adapter: Adapter) -> Any:
        style = mcase.style(name)
        return pooled(name, adapter) if style is None else adapter.build(case.spec, style)

    outputs, not_run = run_available(case.spec, case.weights, reference_inputs(case.spec, traces), adapters,
                                     model_for)
    comparison = compare_layers(case.spec, case.weights, case.x, outputs, case_id=mcase.id, reference=traces)
    return replace(comparison, not_run=not_run)


@dataclass(frozen=True)
class PairRow:
    """One case and one pair, over all layers."""

    case_id: str
    build: str
    pair: str
    worst_ratio: float
    worst_layer: int
    first_failing_layer: int | None
    detail: str  # the first failure's description, or ""

    @property
    def passed(self) -> bool:
        return self.first_failing_layer is None


def build_name(mcase: MatrixCase | ChainCase) -> str:
    """How the case's models were built: its styles, pooled dense layers, or a chain's models (``ChainCase``)."""
    if isinstance(mcase, ChainCase):
        return "built chains"
    return " + ".join(f"{fw} {style}" for fw, style in mcase.styles) if mcase.styles else "pooled layers"


def pair_rows(mcase: MatrixCase, comparison: Comparison) -> list[PairRow]:
    by_pair: dict[str, list[LayerResult]] = {}
    for r in comparison.results:
        by_pair.setdefault(r.pair_name, []).append(r)
    rows = []
    for pair, results in by_pair.items():
        worst = max(results, key=lambda r: r.ratio)
        failing = [r for r in results if not r.passed]
        first = min(failing, key=lambda r: r.layer) if failing else None
        rows.append(PairRow(mcase.id, build_name(mcase), pair, worst.ratio, worst.layer,
                            None if first is None else first.layer, "" if first is None else first.describe()))
    return rows


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no inf: a shape mismatch is null with a detail


def to_json(results: Sequence[tuple[MatrixCase, Comparison]], *, fingerprint: Mapping[str, Any],
            elapsed: float) -> dict[str, Any]:
    rows = [row for m, c in results for row in pair_rows(m, c)]
    cases = []
    for mcase, comparison in results:
        cases.append({
            "id": mcase.id, "spec": mcase.spec.id, "dtype": mcase.spec.dtype, "seed": mcase.seed,
            "batch": mcase.inputs.batch,
            "input_scale": mcase.inputs.input_scale, "weight_scale": mcase.inputs.weight_scale,
            "build": dict(mcase.styles) or build_name(mcase), "passed": comparison.passed,
            "not_run": dict(comparison.not_run),
            "layers": [{"pair": r.pair_name, "layer": r.layer, "max_abs": _finite(r.max_abs), "bound": r.bound,
                        "ratio": _finite(r.ratio), "passed": r.passed, "mismatches": r.mismatches,
                        **({} if r.passed else {"detail": r.describe()})} for r in comparison.results],
        })
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "kind": "equivalence-report",
        "fingerprint": dict(fingerprint),
        "summary": _summary(results, rows, elapsed),
        "rows": [{"case": r.case_id, "build": r.build, "pair": r.pair, "worst_ratio": _finite(r.worst_ratio),
                  "worst_layer": r.worst_layer, "first_failing_layer": r.first_failing_layer, "passed": r.passed}
                 for r in rows],
        "cases": cases,
    }


def _summary(results: Sequence[tuple[MatrixCase, Comparison]], rows: Sequence[PairRow],
             elapsed: float) -> dict[str, Any]:
    layer_results = [r for _, c in results for r in c.results]
    worst = max(layer_results, key=lambda r: r.ratio, default=None)
    return {
        "cases": len(results), "rows": len(rows), "failing_rows": sum(not r.passed for r in rows),
        "layer_comparisons": len(layer_results), "failing_layer_comparisons": sum(not r.passed for r in layer_results),
        "worst_ratio": None if worst is None else _finite(worst.ratio),
        "worst_at": None if worst is None else f"{next(m.id for m, c in results if worst in c.results)}, "
                                               f"{worst.pair_name}, layer {worst.layer}",
        "passed": all(c.passed for _, c in results), "seconds": round(elapsed, 2),
    }


def headline(report: Mapping[str, Any]) -> str:
    s = report["summary"]
    verdict = "all agree" if s["passed"] else f"{s['failing_rows']} of {s['rows']} rows FAIL"
    worst = "n/a" if s["worst_ratio"] is None else f"{s['worst_ratio']:.3g}"
    return (f"{s['cases']} cases, {s['rows']} case x pair rows, {s['layer_comparisons']} layer comparisons: "
            f"{verdict}; worst error/bound {worst} ({s['worst_at']}); {s['seconds']:.1f} s")


def short_headline(report: Mapping[str, Any]) -> str:
    s = report["summary"]
    verdict = "all agree" if s["passed"] else f"{s['failing_layer_comparisons']} FAIL"
    worst = "n/a" if s["worst_ratio"] is None else f"{s['worst_ratio']:.3g}"
    return f"{s['cases']} cases, {s['layer_comparisons']} layer comparisons: {verdict}; worst error/bound {worst}"


def to_markdown(report: Mapping[str, Any]) -> str:
    lines = [
        "## equivalence report",
        "",
        f"**{headline(report)}**",
        "",
        f"Environment: {summary(report['fingerprint'])}; CPU {report['fingerprint'].get('cpu_model', '?')}.",
        "",
        "| case | build | pair | worst error / bound | at layer | first failing layer | result |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        ratio = "shape mismatch" if r["worst_ratio"] is None else f"{r['worst_ratio']:.3g}"
        first = "" if r["first_failing_layer"] is None else str(r["first_failing_layer"])
        lines.append(f"| `{r['case']}` | {r['build']} | {r['pair']} | {ratio} | {r['worst_layer']} | {first} | "
                     f"{'pass' if r['passed'] else '**FAIL**'} |")
    failures = [(c["id"], layer["detail"]) for c in report["cases"] for layer in c["layers"] if "detail" in layer]
    if failures:
        lines += ["", "### Failures", ""] + [f"- `{case}`: {detail}" for case, detail in failures]
    return "\n".join(lines) + "\n"


def plot_png(report: Mapping[str, Any], *, title: str) -> bytes:
    """Every layer comparison: error against its bound on log axes, with the pass line error = bound."""
    from matplotlib.figure import Figure  # Agg canvas; no pyplot, no global state

    points: dict[str, list[tuple[float, float]]] = {}
    failing: list[tuple[float, float]] = []
    for case in report["cases"]:
        for layer in case["layers"]:
            if layer["max_abs"] is None:
                continue
            points.setdefault(layer["pair"], []).append((layer["bound"], layer["max_abs"]))
            if not layer["passed"]:
                failing.append((layer["bound"], layer["max_abs"]))
    all_points = [p for pts in points.values() for p in pts]
    bounds = [b for b, _ in all_points] or [1e-7]
    nonzero = [e for _, e in all_points if e > 0]
    floor = min([*nonzero, *bounds]) / 10  # exact (zero) errors cannot sit on a log axis: drawn at the floor

    fig = Figure(figsize=(9, 6.5), dpi=110)
    ax = fig.add_subplot()
    for (pair, pts), marker, colour in zip(sorted(points.items()), "os^D", ("C0", "C2", "C1", "C4")):
        xs = [b for b, _ in pts]
        ys = [e if e > 0 else floor for _, e in pts]
        zeros = sum(e == 0 for _, e in pts)
        label = f"{pair} ({len(pts)} layers" + (f", {zeros} exactly 0, drawn at the floor)" if zeros else ")")
        ax.scatter(xs, ys, s=14, marker=marker, alpha=0.55, color=colour, label=label, linewidths=0)
    if failing:
        ax.scatter([b for b, _ in failing], [e for _, e in failing], s=60, marker="x", color="red",
                   label=f"FAIL ({len(failing)})", zorder=5)
    lo, hi = min(bounds) / 3, max(bounds) * 3
    ax.plot([lo, hi], [lo, hi], color="red", lw=1.5, label="pass line: error = bound")
    for ratio, style in ((0.1, "--"), (0.01, ":")):
        ax.plot([lo, hi], [ratio * lo, ratio * hi], color="grey", lw=0.8, ls=style, label=f"error = {ratio:g} x bound")
    ax.axhline(floor, color="lightgrey", lw=0.8)
    ax.annotate("exactly 0", (hi, floor), xytext=(-4, 4), textcoords="offset points", ha="right", fontsize=8,
                color="grey")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("bound from the error model (absolute; 2x for framework vs framework)")
    ax.set_ylabel("greatest absolute error of the layer")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# --- the terminal: a grouped summary by default, every failing row, the full table with -v -------------

@dataclass(frozen=True)
class GroupRow:
    """One group of cases (a build and a dtype) and one pair: how many cases, the worst, how many fail."""

    group: str
    pair: str
    cases: int
    worst_ratio: float | None  # None: a shape mismatch (no finite ratio)
    worst_case: str
    worst_layer: int
    failing: int


def group_name(case: Mapping[str, Any]) -> str:
    """``"pooled layers, float32"``, ``"torch modulelist + keras functional, float32"``."""
    build = case["build"]
    if isinstance(build, Mapping):
        build = " + ".join(f"{fw} {style}" for fw, style in build.items())
    return f"{build}, {case.get('dtype', '?')}"


def _ratio_key(ratio: float | None) -> float:
    return math.inf if ratio is None else ratio


def group_rows(report: Mapping[str, Any]) -> list[GroupRow]:
    """One row per group and pair, in the order the groups first appear in the matrix."""
    group_of = {case["id"]: group_name(case) for case in report["cases"]}
    by_key: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in report["rows"]:
        by_key.setdefault((group_of[row["case"]], row["pair"]), []).append(row)
    out = []
    for (group, pair), rows in by_key.items():
        worst = max(rows, key=lambda r: _ratio_key(r["worst_ratio"]))
        out.append(GroupRow(group, pair, len(rows), worst["worst_ratio"], worst["case"], worst["worst_layer"],
                            sum(not r["passed"] for r in rows)))
    return out


def _ratio_text(ratio: float | None) -> str:
    return "shape!" if ratio is None else f"{ratio:.3g}"


def _short_case(case_id: str) -> str:
    """The case id without its build suffix (``_layers``, ``_torch-..._keras-...``, ``_chain``): the group names
    the build."""
    for marker in ("_layers", "_torch-", "_chain"):
        head, found, _ = case_id.rpartition(marker)
        if found and head:
            return head
    return case_id


def _group_labels(group: str, rows: int) -> list[str]:
    """``group`` spread over the ``rows`` rows of its pairs, one part a row (the build of each framework, then
    the dtype), so a group costs no extra lines: ``["torch modulelist +", "keras functional", "float32"]``."""
    build, _, dtype = group.rpartition(", ")
    parts = [p for p in build.split(" + ")]
    parts = [f"{p} +" for p in parts[:-1]] + parts[-1:] + [dtype]
    if len(parts) > rows:
        parts = parts[:rows - 1] + [" ".join(parts[rows - 1:])]
    return parts + [""] * (rows - len(parts))


@dataclass(frozen=True)
class Column:
    name: str
    wraps: bool  # text that may fold over lines (ids, names); figures never do
    min_width: int = 0
    justify: str = "left"


GAP = 2
"""Columns between two table columns (one of padding, one of the box's blank divider)."""


def fit_widths(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> list[int] | None:
    """Column widths that fit ``width``: figures at their full width; the widest text columns (long case ids)
    fold first, down to a common level, never below their ``min_width``. None when even that does not fit."""
    natural = [max([len(c.name)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    fixed = sum(n for n, c in zip(natural, columns) if not c.wraps) + GAP * (len(columns) - 1)
    text = [i for i, c in enumerate(columns) if c.wraps]
    floor = {i: min(natural[i], max(columns[i].min_width, len(columns[i].name))) for i in text}
    available = width - fixed

    def used(level: int) -> int:
        return sum(min(natural[i], max(floor[i], level)) for i in text)

    if used(0) > available:
        return None
    level = max(natural)
    while level > 0 and used(level) > available:  # at most the longest id's length steps
        level -= 1
    return [min(natural[i], max(floor[i], level)) if i in floor else natural[i] for i in range(len(columns))]


def _table(title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int,
           sections: Sequence[int] = ()) -> Any:
    """A rich table of plain-text cells with the widths ``fit_widths`` chose; "FAIL" cells in red."""
    from rich import box
    from rich.table import Table

    widths = fit_widths(columns, rows, width)
    if widths is None:
        return None
    table = Table(title=title, box=box.SIMPLE_HEAD, header_style="bold", show_edge=False, pad_edge=False,
                  title_justify="left", padding=(0, 1, 0, 0))
    for column, w in zip(columns, widths):
        table.add_column(column.name, width=w, justify=column.justify, overflow="fold", no_wrap=not column.wraps)
    for index, row in enumerate(rows):
        if index in sections:
            table.add_section()
        table.add_row(*(f"[bold red]{cell}[/bold red]" if cell.startswith("FAIL") or cell.startswith("fail ")
                        else cell for cell in (c.replace("[", "\\[") for c in row)))
    return table


SUMMARY_COLUMNS = (Column("group", True, 8), Column("pair", True, 8), Column("cases", False, justify="right"),
                   Column("worst", False, justify="right"), Column("layer", False, justify="right"),
                   Column("fail", False, justify="right"), Column("at case", True, 16))
FULL_COLUMNS = (Column("case", True, 16), Column("build", True, 8), Column("pair", True, 8),
                Column("worst", False, justify="right"), Column("layer", False, justify="right"),
                Column("result", False))


def summary_table(report: Mapping[str, Any], *, width: int = 100) -> Any:
    """The default terminal view: one row per group (build and dtype) and pair: its cases, the worst
    error/bound and where, how many fail. Fits 100 columns; None when ``width`` is too narrow for a table."""
    rows, sections = [], []
    groups: dict[str, list[GroupRow]] = {}
    for g in group_rows(report):
        groups.setdefault(g.group, []).append(g)
    for group, members in groups.items():
        sections.append(len(rows))
        for label, g in zip(_group_labels(group, len(members)), members):
            rows.append([label, g.pair, str(g.cases), _ratio_text(g.worst_ratio), str(g.worst_layer),
                         f"fail {g.failing}" if g.failing else "0", _short_case(g.worst_case)])
    return _table("worst error / bound per group of cases and pair (pass <= 1)", SUMMARY_COLUMNS, rows, width,
                  sections[1:])


def failing_rows(report: Mapping[str, Any]) -> list[str]:
    """Every failing case and pair, one line each: the first failing layer and what is wrong there."""
    first_failure: dict[tuple[str, str], str] = {}
    for case in report["cases"]:
        for layer in case["layers"]:
            if "detail" in layer:
                first_failure.setdefault((case["id"], layer["pair"]), layer["detail"])
    return [f"FAIL {r['case']}: {first_failure.get((r['case'], r['pair']), r['pair'])}"
            for r in report["rows"] if not r["passed"]]


def not_run_lines(report: Mapping[str, Any]) -> list[str]:
    """One line per framework and reason: how many cases it did not run, and why."""
    reasons: dict[tuple[str, str], int] = {}
    for case in report["cases"]:
        for framework, reason in case.get("not_run", {}).items():
            reasons[framework, reason] = reasons.get((framework, reason), 0) + 1
    total = len(report["cases"])
    return [f"not run: {framework}, {count} of {total} cases: {reason}"
            for (framework, reason), count in reasons.items()]


def rich_table(report: Mapping[str, Any], *, width: int = 200) -> Any:
    """The full table (``report -v``): one row per case and pair; text columns fold, figures never do.
    None when ``width`` is too narrow for a table."""
    rows = [[r["case"], r["build"], r["pair"], _ratio_text(r["worst_ratio"]), str(r["worst_layer"]),
             "pass" if r["passed"] else f"FAIL at {r['first_failing_layer']}"] for r in report["rows"]]
    return _table("equivalence report: one row per case and pair", FULL_COLUMNS, rows, width)


def terminal_view(report: Mapping[str, Any], *, width: int, verbose: bool = False) -> Any:
    """What ``report`` prints: the grouped summary, or with ``verbose`` the full table; where ``width`` is
    too narrow for the table, the same rows as lines that wrap at spaces."""
    table = rich_table(report, width=width) if verbose else summary_table(report, width=width)
    if table is not None:
        return table
    from rich.text import Text

    if verbose:
        lines = [f"{r['case']} | {r['build']} | {r['pair']}: worst {_ratio_text(r['worst_ratio'])} at layer "
                 f"{r['worst_layer']}, " + ("pass" if r["passed"] else f"FAIL at {r['first_failing_layer']}")
                 for r in report["rows"]]
    else:
        lines = [f"{g.group} | {g.pair}: {g.cases} cases, worst {_ratio_text(g.worst_ratio)} at layer "
                 f"{g.worst_layer} of {_short_case(g.worst_case)}, {g.failing} failing" for g in group_rows(report)]
    return Text("\n".join(lines), overflow="fold")


def json_text(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=1, allow_nan=False) + "\n"


ACCURACY_PNG = "accuracy.png"
"""The activations' ulp histograms (``equivalence.guard.accuracy.plot_png``)."""


def output_paths(folder: Path) -> dict[str, Path]:
    return {**{name.split(".")[1]: folder / name for name in FILES}, "accuracy": folder / ACCURACY_PNG}
