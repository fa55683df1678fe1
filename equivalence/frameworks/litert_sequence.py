"""The sequence kinds in a LiteRT flatbuffer: an Embedding (a ``GATHER`` of a constant table by the model's token ids),
a dense layer token by token, a LayerNormalization over a sequence's features (``litert_norms``, on a 3-D tensor) and
a mean over the tokens, read into the core's kinds (``equivalence.core.embedding``), batch-first as canonical.

What ``TFLiteConverter`` writes from a Keras 3 ``Input((L,), dtype="int32") -> Embedding -> Dense -> ...
-> GlobalAveragePooling1D -> Dense``:

* the ``Embedding`` as Keras' wrap of negative ids (``ids < 0 ? ids + rows : ids``: ``LESS``, ``ADD``, ``SELECT_V2``
  or ``SELECT``; a ``CAST`` first when the input is float) then ``GATHER(table, ids)``: one unit, the wrap read with
  the gather (``id_prelude``; what it computes is judged with the gather, exactly, on ids in range);
* a ``Dense`` on ``(batch, L, in)`` as TensorFlow's ``Tensordot`` with a free batch: a ``RESHAPE`` to ``(-1, in)``
  (its target computed from ``SHAPE``), ``FULLY_CONNECTED``, a ``RESHAPE`` back to ``(batch, L, out)``, the bias an
  ``ADD`` after it (``tensordot``); with the batch fixed, one ``FULLY_CONNECTED`` with ``keep_num_dims``;
* ``GlobalAveragePooling1D`` as ``MEAN`` over axis 1 without ``keep_dims`` (``sequence_mean``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from equivalence.core.embedding import Embedding, SequenceMean
from equivalence.core.walk import Refused
from equivalence.frameworks.graph_kinds import KindRead

NOT_READ_SEQUENCE_OPS = {
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "an LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM": "a bidirectional LSTM",
    "LSTM": "an LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN": "a recurrent layer (RNN)",
    "BIDIRECTIONAL_SEQUENCE_RNN": "a bidirectional recurrent layer (RNN)", "RNN": "a recurrent layer (RNN)",
    "WHILE": "a loop (the converter writes a Keras LSTM, GRU or RNN as one)",
    "BATCH_MATMUL": "a product of two computed tensors outside a self-attention the suite reads (litert_attention)",
}
"""Ops refused wherever they are in a flatbuffer, before the walk reaches them (a ``BATCH_MATMUL`` outside the
self-attention regions ``litert_attention`` reads, which the walk would meet as a branch)."""

SEQUENCE_REFUSED = ("TRANSPOSE", "EXPAND_DIMS", "CONV_2D", "SPLIT", "SPLIT_V", "STRIDED_SLICE", "SLICE", "UNPACK",
                    "PACK", "CONCATENATION", "SQUEEZE", "SUM", "REDUCE_MAX", "AVERAGE_POOL_2D", "MAX_POOL_2D")
"""Ops refused on a token sequence, in one line naming the op (``sequence_refusal``)."""

PRELUDE_OPS = ("CAST", "LESS", "GREATER", "GREATER_EQUAL", "LESS_EQUAL", "EQUAL", "NOT_EQUAL", "ADD", "SUB", "MUL",
               "SELECT", "SELECT_V2", "LOGICAL_NOT", "LOGICAL_AND", "LOGICAL_OR", "MAXIMUM", "MINIMUM")
"""Element-wise ops a converter computes the ids with before the ``GATHER`` (Keras' wrap of negative ids: ``LESS``,
``ADD``, ``SELECT_V2``)."""

INTEGER_TYPES = {2: np.dtype("int32"), 4: np.dtype("int64")}
FEED_TYPES = {**INTEGER_TYPES, 0: np.dtype("float32")}
"""The schema's ``TensorType`` codes of the ids a model may take (float ids: Keras casts them, ``CAST`` first)."""


def sequence_refusal(name: str, tokens: tuple[int, int]) -> str:
    """Why an op (``SEQUENCE_REFUSED``) on the ``(batch, L, features)`` sequence ``tokens`` is refused."""
    return (f"a{'n' if name[0] in 'AEIOU' else ''} {name} of the (batch, {tokens[0]}, {tokens[1]}) token sequence: "
            "the suite reads an Embedding (GATHER), a dense layer token by token (FULLY_CONNECTED), its activation, a "
            "LayerNormalization over the features, a mean over the tokens (MEAN over axis 1) and self-attention "
            "(mha(h, h), one region) from LiteRT files; LSTM, GRU and convolutions over the tokens are not read from "
            "converted graphs yet (compare the models they were converted from)")


def ids_used_otherwise(op: str) -> str:
    """Why an op on a model's integer input is refused when the ops from it are no Embedding's lookup."""
    return (f"a{'n' if op[0] in 'AEIOU' else ''} {op} of the token ids, but not the lookup of an Embedding (a GATHER "
            "of a constant table by the ids, Keras' wrap of negative ids before it, and nothing else reading them): "
            "a mask of the ids (Keras' mask_zero=True, whose masked mean the converter writes) is not read from "
            "converted graphs yet")


def not_read_sequence_op(names: list[str]) -> tuple[int, str] | None:
    """The first op (by its name in ``names``, the subgraph's ops in order) that is a recurrent or attention op
    (``NOT_READ_SEQUENCE_OPS``): its index and why it is refused; else None."""
    for index, name in enumerate(names):
        if name in NOT_READ_SEQUENCE_OPS:
            return index, (f"{name} is {NOT_READ_SEQUENCE_OPS[name]}: the suite does not read recurrent or attention "
                           "layers from converted graphs yet; compare the models they were converted from")
    return None


def id_prelude(ops: list[tuple[str, Any]], ids: int, constant: Callable[[int], np.ndarray | None],
               skipped: Callable[[int, Any], bool]) -> tuple[int, list[int]] | None:
    """When the subgraph's first ops (``ops``: names and ops in order; ``skipped`` ones passed: a ``DEQUANTIZE``, a
    shape computation) compute a ``GATHER``'s ids from the input tensor ``ids`` alone (and constants) with element-wise
    ops (``PRELUDE_OPS``), or the ``GATHER`` takes ``ids`` itself: the ``GATHER``'s index and the prelude's; else
    None."""
    seen, prelude = {ids}, []
    for index, (name, op) in enumerate(ops):
        if skipped(index, op):
            continue
        inputs = [int(t) for t in op.inputs if int(t) >= 0 and constant(int(t)) is None]
        if name == "GATHER" and len(op.inputs) == 2 and constant(int(op.inputs[0])) is not None:
            return (index, prelude) if inputs == [int(op.inputs[1])] and inputs[0] in seen else None
        if name not in PRELUDE_OPS or not inputs or not set(inputs) <= seen:
            return None
        seen.update(int(t) for t in op.outputs)
        prelude.append(index)
    return None


def embedding(op: Any, table: np.ndarray | None, ids_signature: tuple[int, ...], ids_type: int) -> KindRead:
    """A ``GATHER`` of a constant 2-D table (axis 0) by token ids ``(batch, L)`` (``ids_signature``: the model
    input's declared shape, -1 where free; ``ids_type``: its ``TensorType``), ``L`` fixed: the ``Embedding`` kind, its
    table ``(rows, dim)`` already canonical. ``Refused`` naming what differs."""
    options = op.builtinOptions
    if int(getattr(options, "axis", 0)) != 0 or int(getattr(options, "batchDims", 0)) != 0:
        raise Refused(f"a GATHER over axis {options.axis} (batch_dims {options.batchDims}): an Embedding gathers the "
                      "table's rows (axis 0)")
    if table is None or table.dtype != np.float32 or table.ndim != 2:
        raise Refused("a GATHER that does not look up a float32 table (rows, dim) (float16 ones through DEQUANTIZE): "
                      "the suite judges an Embedding of a constant table")
    if ids_type not in FEED_TYPES:
        raise Refused(f"token ids of TensorType {ids_type}: the suite judges int32, int64 (or float, cast) ids")
    length = ids_signature[1] if len(ids_signature) == 2 else -1
    if length < 1:
        raise Refused(f"token ids of shape {list(ids_signature)}: the suite judges ids (batch, L) with the sequence "
                      "length L fixed (convert a model whose Input declares its length)")
    kind = Embedding(int(table.shape[0]), int(table.shape[1]), int(length))
    return KindRead(kind, table.copy(), None, table, None)


def sequence_mean(axes: list[int] | None, keep: bool, tokens: tuple[int, int]) -> KindRead:
    """A ``MEAN`` of a ``(batch, L, features)`` sequence over axis 1 (or -2), not keeping it: the ``SequenceMean``
    kind. ``Refused`` for another axis or ``keep_dims``."""
    if axes not in ([1], [-2]) or keep:
        raise Refused(f"a MEAN over axes {axes} with keep_dims={keep} of the (batch, {tokens[0]}, {tokens[1]}) token "
                      "sequence: the suite judges a mean over the tokens (axis 1, no keep_dims: Keras' "
                      "GlobalAveragePooling1D) and a LayerNormalization's ops (a MEAN over the features, keeping them)")
    return KindRead.without_weights(SequenceMean(*tokens), None)


def starts_layer_norm(axes: list[int] | None, keep: bool) -> bool:
    """Whether a ``MEAN`` of a token sequence starts a LayerNormalization's ops (over the features, keeping them)."""
    return axes in ([-1], [2]) and keep


def tensordot(reshape: Any, following: list[tuple[int, str, Any]], tokens: tuple[int, int],
              declared: Callable[[int], tuple[int, ...]]) -> tuple[int, Any, int, Any] | None:
    """TensorFlow's ``Tensordot`` as the converter writes a ``Dense`` on a sequence with a free batch: the ``RESHAPE``
    ``reshape`` of the ``(batch, L, in)`` sequence, then (``following``: the next ops, indices and names) a
    ``FULLY_CONNECTED`` of its output (without ``keep_num_dims``), then a ``RESHAPE`` of that back to ``(batch, L,
    out)`` (``declared``: a tensor's declared shape): the two ops with their indices, else None."""
    if len(following) < 2:
        return None
    (fc_index, fc_name, fc), (back_index, back_name, back) = following[:2]
    if fc_name != "FULLY_CONNECTED" or int(fc.inputs[0]) != int(reshape.outputs[0]) or \
            getattr(fc.builtinOptions, "keepNumDims", False) or back_name != "RESHAPE" or \
            int(back.inputs[0]) != int(fc.outputs[0]):
        return None
    out = declared(int(back.outputs[0]))
    if len(out) != 3 or out[1] != tokens[0]:
        return None
    return fc_index, fc, back_index, back


def tensordot_target(target: list[int] | None, tokens: tuple[int, int]) -> bool:
    """Whether the first ``RESHAPE`` of a ``Tensordot`` flattens the tokens into the batch: its target computed from
    ``SHAPE`` (None here), or the constant ``[-1, in]``."""
    return target is None or target == [-1, tokens[1]]
