"""What this test process has seen: cross-framework cases, and the worst error/bound ratios.

conftest hands these from xdist workers to the controller, prints them at the end,
and writes them to a JSON file when asked (``--stats-json``, used by ``make soak``).
"""

from __future__ import annotations

from equivalence.core.compare import REFERENCE, Comparison
from equivalence.core.spec import StackSpec

STATS: dict = {"cross_framework_cases": 0, "cases": 0, "worst": {}}
"""``worst[(dtype, activation)] = [ratio, pair, case id]`` over every layer compared."""


def count_cross_framework_case() -> None:
    STATS["cross_framework_cases"] += 1


def record(spec: StackSpec, comparison: Comparison) -> None:
    STATS["cases"] += 1
    if any(REFERENCE not in r.pair for r in comparison.results):  # a framework against another framework
        count_cross_framework_case()
    for r in comparison.results:
        key = f"{spec.dtype} {spec.activations[r.layer]}"
        if r.ratio > STATS["worst"].get(key, (-1.0,))[0]:
            STATS["worst"][key] = (r.ratio, r.pair_name, comparison.case_id)


def merge(into: dict, other: dict) -> None:
    into["cross_framework_cases"] += other["cross_framework_cases"]
    into["cases"] += other["cases"]
    for key, value in other["worst"].items():
        if value[0] > into["worst"].get(key, (-1.0,))[0]:
            into["worst"][key] = tuple(value)
