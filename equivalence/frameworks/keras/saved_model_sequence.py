"""The sequence kinds in a SavedModel's frozen graph: an Embedding (a ``GatherV2`` of a constant table by the model's
token ids), a dense layer token by token, a LayerNormalization over a sequence's features and a mean over the tokens,
read into the core's kinds (``equivalence.core.embedding``, ``equivalence.core.norms``), batch-first as canonical.

What Keras 3's ``model.export`` writes from ``Input((L,), dtype="int32") -> Embedding -> Dense -> LayerNormalization
-> GlobalAveragePooling1D -> Dense``, frozen (its variables ``Const`` nodes):

* the ``Embedding`` as its wrap of negative ids (``ids < 0 ? ids + rows : ids``: ``Less``, ``AddV2``, ``SelectV2``; a
  ``Cast`` first when the input is float) then ``GatherV2(table, ids, axis 0)``: one unit, the wrap read with the
  gather (``id_prelude``; what it computes is judged with the gather, exactly, on ids in range);
* a ``Dense`` on ``(batch, L, in)`` as TensorFlow's ``Tensordot``: a ``Transpose`` by the identity permutation, a
  ``Reshape`` to ``(batch * L, in)``, ``MatMul``, a ``Reshape`` back to ``(batch, L, out)`` (both targets computed from
  ``Shape``), then its ``BiasAdd`` and activation (``tensordot``);
* the ``LayerNormalization`` as the ops it writes on a 2-D input (``saved_model_kinds``), over the last of three axes;
* ``GlobalAveragePooling1D`` as ``Mean`` over axis 1 without ``keep_dims`` (``sequence_mean``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from equivalence.core.embedding import Embedding, SequenceMean
from equivalence.core.walk import Refused
from equivalence.frameworks.graph_kinds import KindRead
from equivalence.frameworks.keras.saved_model_kinds import Graph, Read, node_of, tensor

NOT_READ_SEQUENCE_OPS = {
    "Einsum": "an einsum (Keras' attention and EinsumDense layers)",
    "BatchMatMul": "a product of two computed tensors (attention's scores and weighted values)",
    "BatchMatMulV2": "a product of two computed tensors (attention's scores and weighted values)",
    "BatchMatMulV3": "a product of two computed tensors (attention's scores and weighted values)",
    "While": "a loop (a recurrent layer: LSTM, GRU, RNN)", "StatelessWhile": "a loop (a recurrent layer: LSTM, "
                                                                              "GRU, RNN)",
    "Enter": "a loop in TensorFlow's v1 control flow (Enter, Merge, Switch...: a recurrent layer, LSTM, GRU, RNN)",
    "TensorListFromTensor": "a tensor list (a recurrent layer's steps: LSTM, GRU, RNN)",
    "CudnnRNN": "a recurrent layer (cuDNN)", "CudnnRNNV3": "a recurrent layer (cuDNN)",
    "BlockLSTM": "an LSTM", "BlockLSTMV2": "an LSTM",
}
"""Ops refused wherever they are in the frozen graph, before the walk reaches them (a Keras ``LSTM`` starts with a
``Transpose`` of the sequence to time-major: the refusal names its loop, not the ``Transpose``)."""

SEQUENCE_REFUSED = ("ExpandDims", "Conv2D", "Split", "SplitV", "StridedSlice", "Slice", "Unpack", "Pack", "ConcatV2",
                    "Squeeze", "Sum", "Max", "MaxPool", "AvgPool", "MatMul", "Transpose", "Reshape")
"""Ops refused on a token sequence (a ``Transpose`` or a ``Reshape`` when not TensorFlow's ``Tensordot``), in one line
naming the op (``sequence_refusal``)."""

PRELUDE_OPS = ("Identity", "Cast", "Less", "LessEqual", "Greater", "GreaterEqual", "Equal", "NotEqual", "AddV2",
               "Add", "Sub", "Mul", "SelectV2", "Select", "LogicalNot", "LogicalAnd", "LogicalOr", "Maximum",
               "Minimum")
"""Element-wise ops a model computes the ids with before the gather (Keras' wrap of negative ids: ``Less``,
``AddV2``, ``SelectV2``)."""
GATHERS = ("GatherV2", "Gather", "ResourceGather")


def sequence_refusal(op: str, tokens: tuple[int, int]) -> str:
    """Why an op (``SEQUENCE_REFUSED``) on the ``(batch, L, features)`` sequence ``tokens`` is refused."""
    return (f"a{'n' if op[0] in 'AEIOU' else ''} {op} of the (batch, {tokens[0]}, {tokens[1]}) token sequence: the "
            "suite reads an Embedding (GatherV2), a dense layer token by token (Tensordot: Transpose, Reshape, MatMul, "
            "Reshape), its activation, a LayerNormalization over the features, a mean over the tokens (Mean over "
            "axis 1) and self-attention (mha(h, h), one region) from SavedModels; LSTM, GRU and convolutions over the "
            "tokens are not read from converted graphs yet (compare the models they were converted from)")


def ids_used_otherwise(op: str) -> str:
    """Why a node on a model's integer input is refused when the nodes from it are no Embedding's lookup."""
    return (f"a{'n' if op[0] in 'AEIOU' else ''} {op} of the token ids, but not the lookup of an Embedding (a "
            "GatherV2 of a constant table by the ids, Keras' wrap of negative ids before it, and nothing else reading "
            "them): a mask of the ids (Keras' mask_zero=True, whose masked mean the export writes) is not read from "
            "converted graphs yet")


def not_read_sequence_op(order: list[Any], read: frozenset[str] = frozenset()) -> tuple[int, Any, str] | None:
    """The first node of ``order`` that is a recurrent or attention op (``NOT_READ_SEQUENCE_OPS``) outside the
    self-attention regions read (``read``: their nodes' names): its position, the node and why it is refused; else
    None."""
    for position, node in enumerate(order):
        if node.op in NOT_READ_SEQUENCE_OPS and node.name not in read:
            return position, node, (f"{node.op} is {NOT_READ_SEQUENCE_OPS[node.op]}: the suite does not read "
                                    "recurrent or attention layers from converted graphs yet; compare the models "
                                    "they were converted from")
    return None


def ids_tensor(name: str, graph: Graph) -> tuple[str, set[str]]:
    """The graph's input ``name`` past the ``Identity`` nodes it goes through (the frozen call's ``input/_0``), and
    those nodes' names."""
    current, passed = tensor(name), set()
    found = graph.consumers.get(current, [])
    while len(found) == 1 and found[0].op == "Identity":
        current = tensor(found[0].name)
        passed.add(found[0].name)
        found = graph.consumers.get(current, [])
    return current, passed


def id_prelude(order: list[Any], ids: str, graph: Graph, skipped: frozenset[str],
               passed: set[str]) -> tuple[Any, list[Any]] | None:
    """When the chain's first nodes (``skipped`` ones passed: constants, shape computations; and ``passed``: the
    input's ``Identity`` nodes) compute a gather's ids from ``ids`` alone (and constants) with element-wise ops
    (``PRELUDE_OPS``), or the gather takes ``ids`` itself: the gather node and the prelude's; else None."""
    seen, prelude = {ids}, []
    for node in order:
        if node.name in skipped or node.name in passed or node.op in ("Placeholder", "NoOp"):
            continue
        inputs = [tensor(t) for t in node.input if not t.startswith("^") and node_of(t) not in skipped]
        if node.op in GATHERS and graph.constant(node.input[0]) is not None:
            return (node, prelude) if inputs == [tensor(node.input[1])] and inputs[0] in seen else None
        if node.op not in PRELUDE_OPS or not inputs or not set(inputs) <= seen:
            return None
        seen.add(tensor(node.name))
        prelude.append(node)
    return None


def embedding(node: Any, graph: Graph, dims: list[int]) -> KindRead:
    """A gather of a constant 2-D table (axis 0) by the token ids ``(batch, L)`` (``dims``: the placeholder's shape,
    -1 where free), ``L`` fixed: the ``Embedding`` kind, its table ``(rows, dim)`` already canonical. ``Refused``
    naming what differs."""
    axis = graph.constant(node.input[2]) if node.op == "GatherV2" and len(node.input) > 2 else np.asarray(0)
    if axis is None or int(np.reshape(axis, -1)[0]) != 0 or node.attr["batch_dims"].i:
        raise Refused(f"a {node.op} over axis {axis} (batch_dims {node.attr['batch_dims'].i}): an Embedding gathers "
                      "the table's rows (axis 0)")
    table = graph.constant(node.input[0])
    if table.dtype.kind != "f" or table.ndim != 2:
        raise Refused(f"a {node.op} of a {table.dtype} table of shape {table.shape}: an Embedding's is a float "
                      "(rows, dim)")
    length = dims[1] if len(dims) == 2 else -1
    if length < 1:
        raise Refused(f"token ids of shape {dims}: the suite judges ids (batch, L) with the sequence length L fixed "
                      "(export a model whose Input declares its length)")
    kind = Embedding(int(table.shape[0]), int(table.shape[1]), int(length))
    return KindRead(kind, table.copy(), None, table, None)


def sequence_mean(node: Any, graph: Graph, tokens: tuple[int, int]) -> Read:
    """A ``Mean`` of a ``(batch, L, features)`` sequence over axis 1 (or -2), not keeping it: the ``SequenceMean``
    kind. ``Refused`` for another axis or ``keep_dims``."""
    axes = graph.constant(node.input[1])
    axes = None if axes is None else [int(a) for a in np.reshape(axes, -1)]
    keep = bool(node.attr["keep_dims"].b)
    if axes not in ([1], [-2]) or keep:
        raise Refused(f"a Mean over axes {axes} with keep_dims={keep} of the (batch, {tokens[0]}, {tokens[1]}) token "
                      "sequence: the suite judges a mean over the tokens (axis 1, no keep_dims: Keras' "
                      "GlobalAveragePooling1D) and a LayerNormalization's ops (a Mean over the features, keeping them)")
    return Read(KindRead.without_weights(SequenceMean(*tokens), None), [node], "Mean")


def starts_layer_norm(node: Any, graph: Graph) -> bool:
    """Whether a ``Mean`` of a token sequence starts a LayerNormalization's ops (over the features, keeping them)."""
    axes = graph.constant(node.input[1])
    return axes is not None and [int(a) for a in np.reshape(axes, -1)] in ([-1], [2]) and node.attr["keep_dims"].b


def tensordot(node: Any, graph: Graph, tokens: tuple[int, int]) -> list[Any] | None:
    """TensorFlow's ``Tensordot`` (a Keras ``Dense`` on a sequence) from ``node``: a ``Transpose`` by the identity
    permutation (optional), a ``Reshape`` of the ``(batch, L, in)`` sequence to ``(-1, in)``, its one consumer a
    ``MatMul`` by a constant, whose one consumer is a ``Reshape`` back (both targets computed from ``Shape``, or the
    constants ``[-1, in]`` and ``[-1, L, out]``): the nodes, else None."""
    nodes = [node]
    if node.op == "Transpose":
        perm = graph.constant(node.input[1])
        if perm is None or [int(v) for v in np.reshape(perm, -1)] != [0, 1, 2]:
            return None
        nodes.append(_only_consumer(node, graph))
    for op in ("MatMul", "Reshape"):
        nodes.append(_only_consumer(nodes[-1], graph))
        if nodes[-1] is None or nodes[-1].op != op:
            return None
    reshape, matmul, back = nodes[-3:]
    if reshape.op != "Reshape" or tensor(matmul.input[0]) != tensor(reshape.name) or \
            tensor(back.input[0]) != tensor(matmul.name):
        return None
    weight = graph.constant(matmul.input[1])
    if weight is None or weight.ndim != 2:
        return None
    out = weight.shape[0] if matmul.attr["transpose_b"].b else weight.shape[1]
    if not (_target(reshape, graph, [-1, tokens[1]]) and _target(back, graph, [-1, tokens[0], int(out)])):
        return None
    return nodes


def _only_consumer(node: Any | None, graph: Graph) -> Any | None:
    found = graph.consumers.get(tensor(node.name), []) if node is not None else []
    return found[0] if len(found) == 1 else None


def _target(reshape: Any, graph: Graph, expected: list[int]) -> bool:
    """Whether a ``Tensordot`` ``Reshape``'s target is computed (from ``Shape``: not a constant) or ``expected``."""
    target = graph.constant(reshape.input[1])
    return target is None or [int(v) for v in np.reshape(target, -1)] == expected
