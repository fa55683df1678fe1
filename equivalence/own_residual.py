"""The trap of porting a residual block, named from the structure before any value: one model has the skip
connection (``x + f(x)``) and the other does not, or the two Adds take their skip from different places (the Add
joins different branches)."""

from __future__ import annotations

from collections.abc import Sequence

from equivalence.core.residual import residual_adds, skip_source
from equivalence.core.walk import DenseUnit


def residual_differences(first: Sequence[DenseUnit], second: Sequence[DenseUnit], a: str,
                         b: str) -> list[tuple[int, str]]:
    """``(layer, message)`` of every residual Add one model has where the other has none, or with another skip."""
    adds = dict(residual_adds(first)), dict(residual_adds(second))
    out = []
    for i in sorted(set(adds[0]) | set(adds[1])):
        skips = adds[0].get(i), adds[1].get(i)
        if skips[0] == skips[1]:
            continue
        if None not in skips:
            out.append((i, f"layer {i} ({a} {first[i].name!r}, {b} {second[i].name!r}): residual: the {b} Add "
                           f"takes {skip_source(skips[1], second)} as its skip, but the {a} Add takes "
                           f"{skip_source(skips[0], first)} (the Add joins different branches)"))
            continue
        has, lacks, units, skip = (a, b, first, skips[0]) if skips[0] is not None else (b, a, second, skips[1])
        out.append((i, f"layer {i} ({has} {units[i].name!r}): residual: {has} adds {skip_source(skip, units)} to its "
                       f"branch's output here, but {lacks} has no Add there: the skip connection (x + f(x)) or a "
                       f"branch is missing from {lacks}"))
    return out
