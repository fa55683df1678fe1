"""Traps of a port named from the weights, before any value is computed: a layer kind's known wrong layouts
(``wrong_layouts``: a transposed embedding table, a wrong head split) and torch's ``padding_idx`` row when it
alone differs.

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
    """torch's ``padding_idx`` row, named when it is the one row in which the two tables differ.

    ``padding_idx`` changes no forward value (torch looks the row up as any other); it keeps the row out of
    training (no gradient) and zeroes it in a fresh model, whatever the row holds (``from_pretrained(w,
    padding_idx=p)`` keeps a non-zero row). So equal tables are a faithful port, zero row or not; a row ``p``
    that differs, the rest being equal, is a value difference whose likely cause is that training difference
    (a Keras model trained on after the port)."""
    kind = t.layer_kind
    if not isinstance(kind, Embedding) or kind.padding_idx is None or t.W.shape != k.W.shape \
            or t.dtype != k.dtype:
        return []
    p = kind.padding_idx
    if _same(t.W[p], k.W[p]) or not _same(np.delete(t.W, p, axis=0), np.delete(k.W, p, axis=0)):
        return []  # the same row; or the tables differ elsewhere too: the kernel comparison says where
    off = float(np.max(np.abs(t.W[p].astype(np.float64) - k.W[p].astype(np.float64))))
    return [("padding_idx", f"{where}: padding_idx: the keras row {p} differs from the torch padding_idx={p} row "
                            f"(greatest abs diff {off:.3g}), the rest of the tables being equal: torch keeps that "
                            "row out of training, Keras trains every row (port the table, padding row included)")]
