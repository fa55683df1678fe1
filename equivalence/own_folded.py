"""A BatchNorm a converter folded away, matched with the layers it was folded from.

A graph read from a converter's file may hold a BatchNorm (moving statistics) in another form than the model it
came from: ``torch.onnx.export`` in eval mode folds a ``BatchNorm2d`` into the ``Conv`` before it (one conv of
folded weights where the model has two layers), ``TFLiteConverter`` a Keras ``BatchNormalization`` into the
``Conv2D`` or ``Dense`` before it; tf2onnx and ``TFLiteConverter`` (after a fused ReLU, a pool) write one as a
``Mul`` and an ``Add`` of per-channel constants (a scale and a shift where the model has four parameters).
``fold_norms`` rewrites the model's side of such a pair into the graph's kinds (``equivalence.core.folded``), its
BatchNorm folded exactly in float64, so the pair is judged layer by layer; the report names what was matched with
what. ``TFLiteConverter`` also folds a ``BatchNormalization`` into the ``Dense`` after it: matched as
``FoldedDense(norm_first=True)``. A graph's layer whose constants are named after a BatchNorm (``NAMED_FOLD`` in its
kind) that lines up with none of these is refused: between two ``Dense`` layers with no activation, the converter
folds the norm and the first ``Dense``'s bias into the second, which no layer-by-layer match can follow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from equivalence.core.folded import (
    FOLD_SAFETY,
    NAMED_FOLD,
    ChannelAffine,
    FoldedConv,
    FoldedDense,
    fold_batch_norm,
    fold_batch_norm_into_next,
    fold_tolerance,
    shift,
)
from equivalence.core.kinds import DENSE, LayerWeights
from equivalence.core.norms import BatchNorm
from equivalence.core.spatial import Conv
from equivalence.core.walk import DenseUnit, ModelNotSupported

FOLDED = (FoldedConv, FoldedDense, ChannelAffine)
"""The kinds of a BatchNorm folded."""
CONV_FOLDED = "the BatchNorm folded into the conv by the converter"
DENSE_FOLDED = "the BatchNorm folded into the dense layer by the converter"
NEXT_FOLDED = "the BatchNorm before it folded into the dense layer by the converter"
AFFINE_FOLDED = "the BatchNorm's statistics folded into a scale and a shift by the converter"


def _folds(unit: DenseUnit) -> bool:
    return isinstance(unit.layer_kind, BatchNorm) and not unit.layer_kind.batch_statistics


def _outputs(unit: DenseUnit) -> int | None:
    """The channels a conv or dense layer gives (None for another kind)."""
    if isinstance(unit.layer_kind, Conv):
        return unit.layer_kind.out_channels
    return int(unit.W.shape[1]) if unit.layer_kind is DENSE and unit.W.ndim == 2 else None


def _with_norm(units: Sequence[DenseUnit], i: int) -> bool:
    """``units[i]`` a conv or dense layer with no activation of its own, and ``units[i + 1]`` a BatchNorm of moving
    statistics over its outputs."""
    return i + 1 < len(units) and units[i].activation == "linear" and _outputs(units[i]) is not None \
        and _folds(units[i + 1]) and units[i + 1].layer_kind.features == _outputs(units[i])


def _folded_kind(unit: DenseUnit) -> FoldedConv | FoldedDense:
    kind = unit.layer_kind
    return FoldedConv(kind) if isinstance(kind, Conv) else FoldedDense(*(int(n) for n in unit.W.shape))


def _dense_shapes(unit: DenseUnit) -> dict:
    """A dense layer's widths as a unit of another kind holds them (``in_shape``, ``out_shape``); nothing for a conv."""
    if isinstance(unit.layer_kind, Conv):
        return {}
    in_shape = unit.in_shape or (int(unit.W.shape[0]),)
    return {"in_shape": in_shape, "out_shape": (*in_shape[:-1], int(unit.W.shape[1]))}


def _merged(layer: DenseUnit, norm: DenseUnit) -> DenseUnit:
    """The model's conv or dense layer and BatchNorm as one unit of ``FoldedConv`` or ``FoldedDense``: folded
    weights, run as the two layers."""
    W, b = fold_batch_norm(norm.layer_kind, norm.W, layer.W, layer.b)

    def run(x: np.ndarray) -> np.ndarray:
        return norm.run(layer.run(x))

    shapes = _dense_shapes(layer) or {"out_shape": norm.out_shape}
    return replace(layer, name=f"{layer.name}+{norm.name}", kind=f"{layer.kind}+{norm.kind}", W=W, b=b, run=run,
                   write=None, activation=norm.activation, activation_source=norm.activation_source,
                   layer_kind=_folded_kind(layer), **shapes)


def _norm_before_dense(units: Sequence[DenseUnit], i: int) -> bool:
    """``units[i]`` a BatchNorm of moving statistics with no activation, and ``units[i + 1]`` a dense layer over its
    features."""
    return i + 1 < len(units) and _folds(units[i]) and units[i].activation == "linear" \
        and units[i + 1].layer_kind is DENSE and units[i + 1].W.ndim == 2 \
        and units[i + 1].W.shape[0] == units[i].layer_kind.features


def _merged_before(norm: DenseUnit, dense: DenseUnit) -> DenseUnit:
    """The model's BatchNorm and the dense layer after it as one ``FoldedDense(norm_first=True)`` unit: folded
    weights, run as the two layers."""
    W, b = fold_batch_norm_into_next(norm.layer_kind, norm.W, dense.W, dense.b)

    def run(x: np.ndarray) -> np.ndarray:
        return dense.run(norm.run(x))

    n_in, n_out = (int(n) for n in dense.W.shape)
    in_shape = dense.in_shape or (n_in,)
    return replace(dense, name=f"{norm.name}+{dense.name}", kind=f"{norm.kind}+{dense.kind}", W=W, b=b, run=run,
                   write=None, position=norm.position, layer_kind=FoldedDense(n_in, n_out, norm_first=True),
                   in_shape=in_shape, out_shape=(*in_shape[:-1], n_out))


def _same_layer(unit: DenseUnit, mine: DenseUnit) -> bool:
    """The graph's ``unit`` is the model's conv or dense layer ``mine`` (its configuration; a dense one's widths)."""
    if isinstance(unit.layer_kind, Conv):
        return unit.layer_kind == mine.layer_kind
    return unit.layer_kind is DENSE and mine.layer_kind is DENSE and unit.W.shape == mine.W.shape


def _unnamed(kind: str) -> str:
    return kind.replace(f", {NAMED_FOLD}", "")


def _as_affine(norm: DenseUnit) -> DenseUnit:
    """The model's BatchNorm as the scale and shift it computes (``ChannelAffine``), folded exactly."""
    W, b = fold_batch_norm(norm.layer_kind, norm.W)
    return replace(norm, W=W, b=b, write=None, layer_kind=ChannelAffine(norm.layer_kind.features))


def _fold_into(model: Sequence[DenseUnit], graph: Sequence[DenseUnit]) -> tuple[list[DenseUnit], list[DenseUnit]]:
    """``model`` with each BatchNorm the ``graph`` holds folded rewritten as the graph holds it, and ``graph`` with
    its convs that stand for a conv and a BatchNorm read as such; unchanged where the two do not line up."""
    out_model: list[DenseUnit] = []
    out_graph: list[DenseUnit] = []
    moved: dict[int, int] = {}  # each model layer's index in ``out_model`` (a pair folded: both at the one unit)
    i = 0
    for j, unit in enumerate(graph):
        moved.update({i: len(out_model), i + 1: len(out_model)})
        if i >= len(model):
            return list(model), list(graph)
        mine = model[i]
        following = graph[j + 1] if j + 1 < len(graph) else None
        if _same_layer(unit, mine) and _with_norm(model, i) \
                and not (following is not None and isinstance(following.layer_kind, (BatchNorm, ChannelAffine))):
            out_model.append(_merged(mine, model[i + 1]))
            what = CONV_FOLDED if isinstance(unit.layer_kind, Conv) else DENSE_FOLDED
            out_graph.append(replace(unit, kind=f"{_unnamed(unit.kind)}, {what}", layer_kind=_folded_kind(unit),
                                     **_dense_shapes(unit)))
            i += 2
            continue
        if _norm_before_dense(model, i) and _same_layer(unit, model[i + 1]):  # the graph has no norm there
            out_model.append(_merged_before(mine, model[i + 1]))
            n_in, n_out = (int(n) for n in unit.W.shape)
            out_graph.append(replace(unit, kind=f"{_unnamed(unit.kind)}, {NEXT_FOLDED}",
                                     layer_kind=FoldedDense(n_in, n_out, norm_first=True), **_dense_shapes(unit)))
            i += 2
            continue
        if isinstance(unit.layer_kind, ChannelAffine) and _folds(mine) \
                and mine.layer_kind.features == unit.layer_kind.features:
            out_model.append(_as_affine(mine))
            out_graph.append(replace(unit, kind=f"{unit.kind}, {AFFINE_FOLDED}"))
            i += 1
            continue
        out_model.append(mine)
        out_graph.append(unit)
        i += 1
    if i != len(model):
        return list(model), list(graph)
    return [_reindexed(unit, moved) for unit in out_model], out_graph


def _reindexed(unit: DenseUnit, moved: dict[int, int]) -> DenseUnit:
    """``unit`` with the earlier layers it takes (a residual Add's skip, a second branch's source: its kind's
    ``INDEX_FIELDS``) counted in the folded model (``moved``); the model's input (``INPUT``, -1) stays."""
    fields = getattr(unit.layer_kind, "INDEX_FIELDS", ())
    if not fields:
        return unit
    kind = replace(unit.layer_kind, **{f: moved.get(getattr(unit.layer_kind, f), getattr(unit.layer_kind, f))
                                       for f in fields})
    return replace(unit, layer_kind=kind)


def fold_norms(first: Sequence[DenseUnit], second: Sequence[DenseUnit], *,
               graph: tuple[bool, bool]) -> tuple[list[DenseUnit], list[DenseUnit]]:
    """Both sides, the BatchNorms a converter folded matched with their folded form: ``graph`` says which side is
    a converter's graph (a hand port missing a BatchNorm is not folded, it is a difference). ``ModelNotSupported``
    names a graph's layer whose constants are named after a BatchNorm when the model has none to match it with."""
    if graph[1] and not graph[0]:
        folded_first, folded_second = _fold_into(first, second)
        _refuse_unmatched(folded_second)
        return folded_first, folded_second
    if graph[0] and not graph[1]:
        folded_second, folded_first = _fold_into(second, first)
        _refuse_unmatched(folded_first)
        return folded_first, folded_second
    return list(first), list(second)


def _refuse_unmatched(graph: Sequence[DenseUnit]) -> None:
    """Refuse the first of ``graph``'s layers whose constants are named after a BatchNorm the converter folded in
    (``NAMED_FOLD``) that was not matched with a conv or dense layer and BatchNorm of the model."""
    unit = next((u for u in graph if NAMED_FOLD in u.kind and not isinstance(u.layer_kind, FOLDED)), None)
    if unit is not None:
        raise ModelNotSupported(
            unit.framework, unit.name, _unnamed(unit.kind), unit.position,
            f"holds a BatchNormalization the converter folded into its weights ({NAMED_FOLD}), but the model has no "
            f"{'conv' if isinstance(unit.layer_kind, Conv) else 'dense'} layer with a BatchNormalization (moving "
            "statistics, no activation between) right after it, nor one right before a Dense, here to match it "
            "with: between two Dense layers with no activation TFLiteConverter folds the norm and the first Dense's "
            "bias into the second, which the suite does not match layer by layer; compare the models it was "
            "converted from")


def folded_pair(t: DenseUnit, k: DenseUnit) -> bool:
    """One side of the pair is a model's BatchNorm ``fold_norms`` folded (its shift held as the rows it sums)."""
    return isinstance(t.layer_kind, FOLDED) and (np.ndim(t.b) == 2 or np.ndim(k.b) == 2)


def folded_weight_differences(where: str, t: DenseUnit, k: DenseUnit, a: str, b: str,
                              stored: str | None = None) -> list[tuple[str, str]]:
    """The folded parameters of ``k`` (as a converter stored them) against ``t``'s folded exactly, within the fold's
    rounding (``fold_tolerance``); ``t`` is the side holding the shift's terms as rows (the model's). ``stored``: a
    narrower dtype one side stores its weights in (float16), whose rounding is allowed too."""
    exact, kept, first, second = (t, k, a, b) if np.ndim(t.b) == 2 else (k, t, b, a)
    allowed = fold_tolerance(LayerWeights(exact.W, exact.b), exact.dtype, stored)
    out = []
    parts = exact.layer_kind.PARTS
    for what, got, expected, tol in ((parts[0], kept.W, exact.W, allowed.W),
                                     (parts[1], kept.b, shift(exact.b), allowed.b)):
        if got is None or tol is None:
            continue
        with np.errstate(invalid="ignore"):
            diff = np.abs(np.asarray(got, dtype=np.float64) - expected)
        off = ~(diff <= tol)
        if off.any():
            index = tuple(int(j) for j in np.unravel_index(int(np.argmax(np.where(off, diff, -1.0))), diff.shape))
            out.append(("kernel" if what == parts[0] else "bias values",
                        f"{where}: {what}: {int(off.sum())} / {diff.size} elements differ from the {first} layers "
                        f"folded (beyond the fold's rounding, {fold_note(exact.dtype, stored)}); greatest abs diff "
                        f"{float(diff[index]):.3g} at index {index} ({second} {float(got[index])!r}, {first} "
                        f"{float(np.broadcast_to(expected, diff.shape)[index])!r})"))
    return out


def fold_note(dtype: str, stored: str | None = None) -> str:
    """How far the fold's rounding may move a folded parameter."""
    note = f"{FOLD_SAFETY:g} eps of {dtype} of the terms each sums"
    return note if stored is None else f"{note}, then rounded to the {stored} the file stores"
