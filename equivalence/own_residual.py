"""The traps of porting a residual block, named from the structure before any value: one model has the skip
connection (``x + f(x)``) or a second branch and the other does not, or the two Adds take their operands from
different places (the Add joins different branches)."""

from __future__ import annotations

from collections.abc import Sequence

from equivalence.core.residual import Branch, residual_adds, what_it_does
from equivalence.core.walk import DenseUnit

ORDER_HINT = (" (both models add two computed branches at some point: they are matched in the order torch's forward "
              "evaluates them and the order of the Keras Add's operands, so a(x) + b(x) against Add()([b, a]) differs "
              "here; write them in the same order)")


def residual_differences(first: Sequence[DenseUnit], second: Sequence[DenseUnit], a: str,
                         b: str) -> list[tuple[int, str]]:
    """``(layer, message)`` of every residual Add or second branch one model has where the other has none, or with
    other operands."""
    found = dict(residual_adds(first)), dict(residual_adds(second))
    kinds = [[kind for kind, _ in f.values()] for f in found]
    hint = ORDER_HINT if Branch.name in kinds[0] and kinds[0] == kinds[1] else ""
    out = []
    for i in sorted(set(found[0]) | set(found[1])):
        did = found[0].get(i), found[1].get(i)
        if did[0] == did[1]:
            continue
        if None not in did:
            lacks = a if did[1][0] == "branch" else b
            cause = "the Add joins different branches" if did[0][0] == did[1][0] else \
                f"a(x) + b(x) against x + a(x): the shortcut's layers are missing from {lacks}"
            out.append((i, f"layer {i} ({a} {first[i].name!r}, {b} {second[i].name!r}): residual: {b} "
                           f"{what_it_does(did[1], second)}, but {a} {what_it_does(did[0], first)} ({cause}){hint}"))
            continue
        has, lacks, units, what = (a, b, first, did[0]) if did[0] is not None else (b, a, second, did[1])
        out.append((i, f"layer {i} ({has} {units[i].name!r}): residual: {has} {what_it_does(what, units)} here, but "
                       f"{lacks} does not: the skip connection (x + f(x)) or a branch is missing from {lacks}{hint}"))
    return out
