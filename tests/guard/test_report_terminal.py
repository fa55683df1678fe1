"""The report's terminal output reads at 80, 100 and 200 columns: the grouped summary by default, the full
table with ``-v``, every failing case and pair always; no line wider than the terminal, no figure cut.

Most tests render a report of the real matrix's case ids (the longest ids the suite has) with drawn
figures, some failing and one a shape mismatch; one runs ``equivalence report`` itself.
"""

from __future__ import annotations

import io
import random
import re
from importlib.util import find_spec

import pytest

from equivalence import cli
from equivalence.guard import report as rep
from equivalence.guard.matrix import report_cases
from tests.helpers import keras3_only

needs_rich = pytest.mark.skipif(find_spec("rich") is None,
                                reason="the terminal table needs rich (pip install -e '.[report]'; not in .venv-mxnet)")
PAIRS = ("torch vs reference", "keras vs reference", "torch vs keras")
WIDTHS = (80, 100, 200)


def drawn_report(*, failing: int = 5, seed: int = 0) -> dict:
    """The report matrix's cases and rows, with drawn ratios: ``failing`` rows fail, one is a shape mismatch."""
    rng = random.Random(seed)
    cases, rows = [], []
    for mcase in report_cases():
        build = dict(mcase.styles) or rep.build_name(mcase)
        case = {"id": mcase.id, "build": build, "dtype": mcase.spec.dtype, "layers": []}
        for pair in PAIRS:
            ratio = rng.uniform(0, 0.5) * 10 ** -rng.randint(0, 3)
            rows.append({"case": mcase.id, "build": rep.build_name(mcase), "pair": pair, "worst_ratio": ratio,
                         "worst_layer": rng.randrange(mcase.spec.depth), "first_failing_layer": None, "passed": True})
        cases.append(case)
    by_id = {c["id"]: c for c in cases}
    for row in rng.sample(rows, failing):
        row.update(worst_ratio=rng.uniform(2, 5e5), passed=False, first_failing_layer=row["worst_layer"])
        by_id[row["case"]]["layers"].append({"pair": row["pair"], "detail": f"{row['pair']}, layer "
                                             f"{row['worst_layer']}: ratio {row['worst_ratio']:.3g}"})
    rows[7].update(worst_ratio=None, passed=False, first_failing_layer=0)
    shape = f"{rows[7]['pair']}, layer 0: output shape (1, 2), expected (1, 1)"
    by_id[rows[7]["case"]]["layers"].append({"pair": rows[7]["pair"], "detail": shape})
    return {"cases": cases, "rows": rows}


def render(renderable, width: int) -> str:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def assert_fits(text: str, width: int) -> None:
    widest = max(text.splitlines(), key=len)
    assert len(widest) <= width, f"a line of {len(widest)} columns at width {width}: {widest!r}"
    assert "…" not in text, "rich cut a cell short"


@needs_rich
@pytest.mark.parametrize("width", WIDTHS)
def test_the_grouped_summary_fits_and_shows_every_figure_whole(width):
    report = drawn_report()
    text = render(rep.terminal_view(report, width=width), width)
    assert_fits(text, width)
    groups = rep.group_rows(report)
    assert len(groups) == 17 * len(PAIRS)  # 4 dtypes of pooled layers, 9 build pairings, 4 dtypes of built chains
    assert len(text.splitlines()) < len(report["rows"]) / 3, "the summary is not a summary"
    for g in groups:
        fail = f"fail {g.failing}" if g.failing else "0"
        figures = rf"\s{g.cases}\s+{re.escape(rep._ratio_text(g.worst_ratio))}\s+{g.worst_layer}\s+{fail}\s"
        assert re.search(figures, text), f"{g} not shown whole at width {width}:\n{text}"
    assert sum(g.failing for g in groups) == 6
    assert "shape!" in text


@needs_rich
@pytest.mark.parametrize("width", WIDTHS)
def test_the_full_table_wraps_its_text_but_never_its_figures(width):
    report = drawn_report()
    text = render(rep.terminal_view(report, width=width, verbose=True), width)
    assert_fits(text, width)
    for r in report["rows"]:
        result = "pass" if r["passed"] else f"FAIL at {r['first_failing_layer']}"
        figures = rf"\s{re.escape(rep._ratio_text(r['worst_ratio']))}\s+{r['worst_layer']}\s+{result}"
        assert re.search(figures, text), f"row {r} not shown whole at width {width}"
    if width == 200:
        assert all(r["case"] in text for r in report["rows"]), "case ids fold at 200 columns"


@needs_rich
@pytest.mark.parametrize("verbose", [False, True], ids=["summary", "full"])
def test_too_narrow_for_a_table_every_row_is_a_wrapped_line(verbose):
    report = drawn_report()
    text = render(rep.terminal_view(report, width=40, verbose=verbose), 40)
    assert_fits(text, 40)
    joined = " ".join(text.split())
    assert joined.count("worst ") == (len(report["rows"]) if verbose else len(rep.group_rows(report)))


def test_every_failing_case_and_pair_is_listed():
    report = drawn_report(failing=40)
    lines = rep.failing_rows(report)
    failing = [r for r in report["rows"] if not r["passed"]]
    assert len(lines) == len(failing) == 41
    for line, r in zip(lines, failing):
        assert line.startswith(f"FAIL {r['case']}: {r['pair']}")


@keras3_only
@pytest.mark.parametrize("columns", WIDTHS)
def test_report_at_columns(columns, tmp_path, monkeypatch, torch_adapter, keras_adapter, capsys):
    """The real command: the summary at COLUMNS, every failing case and pair, the headline."""
    import keras.src.ops

    original = keras.src.ops.tanh
    monkeypatch.setattr(keras.src.ops, "tanh", lambda x: original(x) * (1 + 1e-3))
    monkeypatch.setenv("COLUMNS", str(columns))
    code = cli.main(["report", "--out", str(tmp_path), "-k", "4-4-4-4-4-4-4-4-4_tanh", "-k", "3-5-5-2_tanh_f32_n1_"])
    out = capsys.readouterr().out
    assert code == cli.EXIT_DISAGREE
    assert_fits(out, columns)
    assert "worst error / bound per group of cases and pair" in out
    ids = ["3-5-5-2_tanh_f32_n1_x1_unit_layers"] + [f"4-4-4-4-4-4-4-4-4_tanh_f32_{i}_layers"
                                                     for i in ("n1_x1_unit", "n16_x100_unit", "n7_x1_fan_in")]
    flat = " ".join(out.split())
    for case_id in ids:
        for pair in ("keras vs reference", "torch vs keras"):
            assert f"FAIL {case_id}: {pair}, layer 0:" in flat, f"{case_id}, {pair} not listed:\n{out}"
    assert "4 cases, 12 case x pair rows" in flat
