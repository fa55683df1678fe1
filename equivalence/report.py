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

from equivalence.adapters import Adapter
from equivalence.check import LayerPool, check_case
from equivalence.compare import Comparison, LayerResult
from equivalence.fingerprint import summary
from equivalence.matrix import MatrixCase

REPORT_SCHEMA_VERSION = 1
FILES = ("report.json", "report.md", "report.png")


def run_case(mcase: MatrixCase, adapters: Mapping[str, Adapter], pool: LayerPool) -> Comparison:
    """Pooled bare layers when the case has no styles, else freshly built models of its styles."""
    case = mcase.make()
    models = {}
    for name, adapter in adapters.items():
        style = mcase.style(name)
        model = pool.stack(adapter, case.spec) if style is None else adapter.build(case.spec, style)
        models[name] = (adapter, model)
    return replace(check_case(case, models), case_id=mcase.id)


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


def build_name(mcase: MatrixCase) -> str:
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
            "id": mcase.id, "spec": mcase.spec.id, "seed": mcase.seed, "batch": mcase.inputs.batch,
            "input_scale": mcase.inputs.input_scale, "weight_scale": mcase.inputs.weight_scale,
            "build": dict(mcase.styles) or "pooled layers", "passed": comparison.passed,
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


def rich_table(report: Mapping[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title="equivalence report", show_lines=False, header_style="bold")
    for name, justify in (("case", "left"), ("build", "left"), ("pair", "left"), ("error / bound", "right"),
                          ("at layer", "right"), ("first failing layer", "right"), ("result", "left")):
        table.add_column(name, justify=justify, no_wrap=name in ("case", "build"), overflow="fold")
    for r in report["rows"]:
        ratio = "shape!" if r["worst_ratio"] is None else f"{r['worst_ratio']:.3g}"
        first = "" if r["first_failing_layer"] is None else str(r["first_failing_layer"])
        result = "[green]pass[/green]" if r["passed"] else "[bold red]FAIL[/bold red]"
        table.add_row(r["case"], r["build"], r["pair"], ratio, str(r["worst_layer"]), first, result)
    return table


def json_text(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=1, allow_nan=False) + "\n"


def output_paths(folder: Path) -> dict[str, Path]:
    return {name.split(".")[1]: folder / name for name in FILES}
