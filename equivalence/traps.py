"""Traps of a port named from the weights, before any value is computed: a layer kind's known wrong layouts
(``wrong_layouts``: a transposed embedding table, a wrong head split) and torch's ``padding_idx`` row.

``equivalence.own`` asks these for every pair of layers of a kind that has them.
"""

from __future__ import annotations

import numpy as np

from equivalence.core.embedding import Embedding
from equivalence.core.kinds import LayerWeights
from equivalence.core.walk import DenseUnit


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return np.shape(a) == np.shape(b) and np.array_equal(np.asarray(a, dtype=np.float64),
                                                         np.asarray(b, dtype=np.float64), equal_nan=True)


def layout_traps(where: str, t: DenseUnit, k: DenseUnit, a: str = "torch", b: str = "keras") -> list[tuple[str, str]]:
    """``(what, message)`` when each of ``k``'s parameters is ``t``'s, or ``t``'s in one of its kind's known wrong
    layouts (``kind.wrong_layouts``), at least one of them wrong; nothing when some parameter differs otherwise
    (its values differ: the kernel comparison names it)."""
    kind = t.layer_kind
    if not hasattr(kind, "wrong_layouts") or (_same(k.W, t.W) and _same(k.b, t.b)):
        return []
    mine, theirs = kind.parts(LayerWeights(t.W, t.b)), kind.parts(LayerWeights(k.W, k.b))
    wrong = kind.wrong_layouts(LayerWeights(t.W, t.b))
    named: list[tuple[str, str, str]] = []
    for name, expected in mine.items():
        if _same(theirs.get(name), expected):
            continue
        hit = next(((what, why) for what, array, why in wrong.get(name, ()) if _same(theirs.get(name), array)), None)
        if hit is None:
            return []
        named.append((name, *hit))
    if not named:
        return []
    what, why = named[0][1], named[0][2]
    names = ", ".join(name for name, _, _ in named)
    return [(what, f"{where}: {what}: the {b} {names} {'is' if len(named) == 1 else 'are'} the {a} one"
                   f"{'' if len(named) == 1 else 's'} with a wrong layout: {why}")]


def padding_row(where: str, t: DenseUnit, k: DenseUnit) -> list[tuple[str, str]]:
    """torch's ``padding_idx`` row: kept at zero by torch (never trained), a plain row in Keras. Named when the
    torch row is not zero (torch would keep it out of training, Keras trains it), or when the Keras row differs
    from torch's zero, the tables being equal everywhere else (so nothing else is left to name in them)."""
    kind = t.layer_kind
    if not isinstance(kind, Embedding) or kind.padding_idx is None or t.W.shape != k.W.shape \
            or t.dtype != k.dtype:
        return []
    p = kind.padding_idx
    if not _same(np.delete(t.W, p, axis=0), np.delete(k.W, p, axis=0)):
        return []  # the tables differ elsewhere too: the kernel comparison says where
    if np.any(t.W[p] != 0):
        return [("padding_idx", f"{where}: padding_idx: the torch row {p} (padding_idx={p}) is not zero (greatest "
                                f"|w| {float(np.max(np.abs(t.W[p].astype(np.float64)))):.3g}): torch keeps that row "
                                "out of training and zeroes it in a fresh model, while Keras trains every row; "
                                "port a table whose padding row is zero, or drop padding_idx")]
    if np.any(k.W[p] != 0):
        return [("padding_idx", f"{where}: padding_idx: the keras row {p} is not zero, but torch keeps its "
                                f"padding_idx={p} row at zero (port the torch table, padding row included)")]
    return []


def padding_write_problem(where: str, target: DenseUnit, W: np.ndarray) -> str | None:
    """Why ``port_weights`` must not write ``W`` into a torch embedding: a non-zero row at its ``padding_idx``."""
    kind = target.layer_kind
    if target.framework != "torch" or not isinstance(kind, Embedding) or kind.padding_idx is None:
        return None
    if np.any(np.asarray(W)[kind.padding_idx] != 0):
        return f"{where}: the source's row {kind.padding_idx} is not zero, but torch's padding_idx=" \
               f"{kind.padding_idx} keeps it at zero (set that row to zero first, or drop padding_idx)"
    return None
