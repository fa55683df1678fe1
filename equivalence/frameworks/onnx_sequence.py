"""The sequence kinds in an ONNX graph: an Embedding (a ``Gather`` of a constant table by the graph's token ids), a
``LayerNormalization`` over a sequence's features, and a mean over the tokens (``ReduceMean`` over axis 1 without
keepdims), read into the core's kinds (``equivalence.core.embedding``, ``equivalence.core.norms``). A dense layer
token by token (a ``MatMul`` of the ``(batch, L, features)`` sequence by a 2-D weight, then a bias ``Add``) is read
by the graph reader's dense unit (``equivalence.frameworks.onnx_graph``).

A token sequence is batch-first in ONNX, as in torch, Keras and the canonical layout: nothing is transposed around
its units. torch's exporter (``dynamo=False``) writes ``nn.Embedding`` as ``Gather(weight, ids)`` on int64 ids and
``x.mean(1)`` as ``ReduceMean`` (``axes`` an attribute below opset 18, an input from it). tf2onnx writes Keras'
``GlobalAveragePooling1D`` the same way, its ``Embedding`` on int32 ids wrapped first (``ids < 0 ? ids + rows :
ids``, element-wise ops read with the ``Gather``: ``id_prelude``), and a ``Dense`` on a sequence as TensorFlow's
``Tensordot`` (``Reshape``, ``MatMul``, ``Reshape``: ``tensordot``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from equivalence.core.embedding import Embedding, SequenceMean
from equivalence.core.walk import Refused
from equivalence.frameworks.graph_kinds import KindRead
from equivalence.frameworks.onnx_kinds import attr, read_kind

NOT_READ_SEQUENCE_OPS = {"RNN": "a simple recurrent layer (RNN)", "Attention": "an attention layer",
                         "MultiHeadAttention": "an attention layer"}
"""Ops refused wherever they are in a graph, before the walk reaches them (torch's exporter writes a ``Transpose``
to ``(L, batch, features)`` before an RNN: the refusal names the recurrent node, not the Transpose). LSTM and GRU
nodes are read (``equivalence.frameworks.onnx_recurrent``), their settings checked as early."""

SEQUENCE_REFUSED = {
    op: f"a{'n' if op[0] in 'AEIOU' else ''} {op} of a (batch, tokens, features) token sequence: the suite reads an "
        "Embedding (Gather), a dense layer token by token (MatMul by a 2-D weight, a bias Add), its activation, a "
        "LayerNormalization over the features, a mean over the tokens (ReduceMean over axis 1), self-attention "
        "(its whole region of ops) and an LSTM or a GRU node (after the Transpose torch writes before it) from ONNX "
        "graphs, not other layers of a sequence (compare the models they were converted from)"
    for op in ("Transpose", "Split", "Slice", "Conv", "MaxPool", "AveragePool", "BatchNormalization")}
"""Ops refused on a token sequence, in one line naming the node (torch's exporter writes a MultiheadAttention as
``Transpose``, ``MatMul``, ``Softmax``... ops, its first a ``Transpose``: read as one region when it is
self-attention, ``equivalence.frameworks.onnx_attention``)."""


def not_read_sequence_op(graph: onnx.GraphProto) -> tuple[int, onnx.NodeProto, str] | None:
    """The first node of ``graph`` that is a recurrent or attention op (``NOT_READ_SEQUENCE_OPS``): its index, the
    node and why it is refused; else None."""
    for index, node in enumerate(graph.node):
        if node.op_type in NOT_READ_SEQUENCE_OPS:
            return index, node, (f"{NOT_READ_SEQUENCE_OPS[node.op_type]}: the suite does not read simple RNN nodes "
                                 "or fused attention ops from converted graphs yet (it reads LSTM and GRU nodes, and "
                                 "self-attention written as ops); compare the models they were converted from")
    return None


def token_layer_norm(node: onnx.NodeProto, consts: dict[str, np.ndarray], tokens: tuple[int, int]) -> KindRead:
    """A ``LayerNormalization`` of a ``(batch, L, features)`` sequence over its last axis: the ``LayerNorm`` kind
    token by token (torch's ``nn.LayerNorm(features)`` on a sequence, opset 17+)."""
    if attr(node, "axis", -1) not in (-1, 2):
        raise Refused(f"a LayerNormalization over axis {attr(node, 'axis', -1)} of the (batch, {tokens[0]}, "
                      f"{tokens[1]}) token sequence: the suite judges one over the features (axis -1)")
    plain = onnx.NodeProto()
    plain.CopyFrom(node)
    del plain.attribute[:]
    plain.attribute.extend(a for a in node.attribute if a.name != "axis")  # read as over a 2-D input's features
    read = read_kind(plain, consts, None)
    if read.layer_kind.features != tokens[1]:
        raise Refused(f"normalises {read.layer_kind.features} features, but the sequence before it has {tokens[1]}")
    return read


def embedding(node: onnx.NodeProto, consts: dict[str, np.ndarray], graph_input: onnx.ValueInfoProto, current: str,
              ids_dtype: np.dtype, *, prepared: bool = False) -> KindRead:
    """A ``Gather`` of a constant 2-D table (axis 0) by the graph's integer input ``(batch, L)``, ``L`` fixed: the
    ``Embedding`` kind, its table ``(rows, dim)`` already canonical. ``prepared``: its ids computed from the graph's
    input alone (``id_prelude``). ``Refused`` naming what differs."""
    if len(node.input) != 2 or node.input[0] not in consts or (node.input[1] != current and not prepared):
        raise Refused("a Gather that does not look up the chain's tensor in a constant table: the suite judges an "
                      "Embedding (Gather of an initializer by the token ids)")
    if current != graph_input.name:
        raise Refused("a Gather after another layer: the suite judges an Embedding of the graph's token ids")
    if attr(node, "axis", 0) != 0:
        raise Refused(f"a Gather over axis {attr(node, 'axis', 0)}: an Embedding gathers the table's rows (axis 0)")
    if not np.issubdtype(ids_dtype, np.integer):
        raise Refused(f"a Gather by a {ids_dtype} input: an Embedding's ids are integers (int64 or int32)")
    table = consts[node.input[0]]
    if table.ndim != 2:
        raise Refused(f"a table of shape {table.shape}: an Embedding's is 2-D (rows, dim)")
    dims = graph_input.type.tensor_type.shape.dim
    length = dims[1].dim_value if len(dims) == 2 and dims[1].HasField("dim_value") else None
    if not length:
        shown = [d.dim_param or d.dim_value for d in dims]
        raise Refused(f"token ids of shape {shown}: the suite judges ids (batch, L) with the sequence length L fixed "
                      "(export without a dynamic sequence axis)")
    kind = Embedding(int(table.shape[0]), int(table.shape[1]), int(length))
    return KindRead(kind, table.copy(), None, table, None)


def sequence_mean(node: onnx.NodeProto, consts: dict[str, np.ndarray], tokens: tuple[int, int]) -> KindRead:
    """A ``ReduceMean`` of a ``(batch, L, features)`` sequence over axis 1 (or -2), not keeping it: the
    ``SequenceMean`` kind. ``Refused`` for another axis or keepdims."""
    axes = [int(a) for a in consts[node.input[1]].reshape(-1)] if len(node.input) > 1 and node.input[1] in consts \
        else [int(a) for a in attr(node, "axes", [])]
    keepdims = attr(node, "keepdims", 1)
    if len(node.input) > 1 and node.input[1] and node.input[1] not in consts:
        raise Refused("a ReduceMean over computed axes: the suite judges a mean over the tokens (axes [1])")
    if axes not in ([1], [-2]) or keepdims:
        raise Refused(f"a ReduceMean over axes {axes or 'all'} with keepdims={keepdims} of the (batch, {tokens[0]}, "
                      f"{tokens[1]}) token sequence: the suite judges a mean over the tokens (axes [1], keepdims=0; "
                      "torch's x.mean(1), Keras' GlobalAveragePooling1D)" + (
                          "; over the features keeping them, it starts a LayerNorm written as ops (torch's exporter "
                          "below opset 17), which is read on a 2-D tensor only: export at opset 17 or later (one "
                          "LayerNormalization node)" if axes in ([-1], [2]) and keepdims else ""))
    return KindRead.without_weights(SequenceMean(*tokens), None)


PRELUDE_OPS = ("Add", "Sub", "Cast", "Less", "Greater", "Equal", "Not", "And", "Or", "Mul", "Where")
"""Element-wise ops a converter computes the ids with before the ``Gather`` (tf2onnx writes Keras' wrap of negative
ids, ``ids < 0 ? ids + rows : ids``, as ``Add``, ``Cast``, ``Less``, ``Mul``, ``Not``, ``Cast``, ``Mul``, ``Add``)."""


def id_prelude(graph: onnx.GraphProto, consts: dict[str, np.ndarray], computed: frozenset[str],
               ids: str) -> tuple[int, list[int]] | None:
    """When the graph's first nodes compute a ``Gather``'s ids from its input ``ids`` alone (and constants), with
    element-wise ops (``PRELUDE_OPS``): the ``Gather``'s index and theirs, run with it as one Embedding unit (what
    they compute is judged with the gather: exactly, the ids given in range); else None."""
    seen, prelude = {ids}, []
    for index, node in enumerate(graph.node):
        if node.output[0] in consts or node.output[0] in computed:
            continue
        inputs = [t for t in node.input if t and t not in consts and t not in computed]
        if node.op_type == "Gather" and node.input[0] in consts and node.input[1] in seen and node.input[1] != ids:
            return (index, prelude) if set(inputs) == {node.input[1]} else None
        if node.op_type not in PRELUDE_OPS or not inputs or not set(inputs) <= seen:
            return None
        seen.update(node.output)
        prelude.append(index)
    return None


def tensordot(node: onnx.NodeProto, graph: onnx.GraphProto, context: Any,
              tokens: tuple[int, int]) -> tuple[onnx.NodeProto, onnx.NodeProto, onnx.NodeProto] | None:
    """TensorFlow's ``Tensordot`` (a Keras ``Dense`` on a sequence) as tf2onnx writes it: a ``Reshape`` of the
    ``(batch, L, in)`` sequence to ``(-1, in)``, its one consumer a ``MatMul`` by a constant, whose one consumer is
    a ``Reshape`` back to a shape computed from the sequence's: the three nodes, else None."""
    consts, consumers = context.consts, context.consumers
    target = consts.get(node.input[1]) if len(node.input) > 1 else None
    if target is None or [int(v) for v in target.reshape(-1)] != [-1, tokens[1]]:
        return None
    following = []
    for tensor in (node.output[0], None):
        users = set(consumers.get(tensor if tensor is not None else following[-1].output[0], []))
        if len(users) != 1:
            return None
        following.append(graph.node[min(users)])
    matmul, back = following
    if matmul.op_type != "MatMul" or matmul.input[0] != node.output[0] or back.op_type != "Reshape" or \
            back.input[0] != matmul.output[0] or back.input[1] not in context.computed:
        return None
    return node, matmul, back
