"""Read an ONNX graph (a ``ModelProto`` or a ``.onnx`` file) into dense units, and run each on ONNX Runtime.

What converters emit is read as a graph, never as a model class: a dense unit is a ``MatMul`` or a ``Gemm`` (its
``transB`` read; ``alpha``/``beta`` other than 1 refused) on the chain's tensor and a constant weight, then an
``Add`` of a constant bias (``MatMul+Add``: the same unit as a ``Gemm`` with its ``C``), then the nodes of its
activation: one op (``Relu``, ``Gelu``, ``Softmax``...) or the decompositions exporters write (``Sigmoid``+``Mul``
for SiLU, ``Softplus``+``Tanh``+``Mul`` for Mish, ``Abs``+``Add``+``Div`` for softsign, ``Clip(0, 6)`` for relu6,
the ``Erf`` form of the exact GELU). Weights are the initializers, ``Constant`` nodes and ``Identity`` nodes of
those. ``Conv``, ``MaxPool``, ``AveragePool``, a ``Flatten`` or ``Reshape`` of a spatial tensor,
``BatchNormalization`` and ``LayerNormalization`` start units of the core's other kinds
(``equivalence.frameworks.onnx_kinds``), each with its activation; a spatial unit runs channels-first, as ONNX
computes, on the canonical channels-last input made channels-first. A ``Gather`` of a constant table by the graph's
integer ids, a ``MatMul``+``Add`` or a ``LayerNormalization`` per token and a ``ReduceMean`` over the tokens are the
sequence kinds (``equivalence.frameworks.onnx_sequence``), batch-first as canonical; a self-attention on such a
sequence (or on the graph's float ``(batch, L, E)`` input) is one unit of its whole region of ops
(``equivalence.frameworks.onnx_attention``); an ``LSTM`` or ``GRU`` node, with the ``Transpose`` and selection
exporters write around it, is one ``Recurrent`` unit (``equivalence.frameworks.onnx_recurrent``). ``Identity``,
``Dropout``, ``Flatten`` and ``Reshape`` between dense units are skipped; a LayerNorm torch's exporter writes as
nine ops below opset 17 (``ReduceMean`` ... ``Add``) is read as one unit of them. An ``Add`` of the chain's
tensor and an earlier one is a residual unit, a second branch ``a(x) + b(x)`` a branch unit
(``equivalence.frameworks.onnx_residual``); any other op, any other branch, or a second input is refused with the
node's name, op and index in ``graph.node``.

Each unit runs where the model lives: its own nodes, cut out of a copy of the graph into a graph of their
own (input the tensor feeding the ``MatMul``, output the activation's, the batch axis left free), in an ORT
CPU session. The units' outputs are those intermediate tensors of the user's graph, computed by its nodes
with its weights; the user's ``ModelProto`` is never modified. The label of the units is the ``ort``
framework's, so its named differences (``equivalence.core.known_differences``) apply.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from equivalence.core.activations import activation_name
from equivalence.core.kinds import DENSE
from equivalence.core.norms import BatchNorm, LayerNorm
from equivalence.core.residual import Residual, branch_unit, check_residuals
from equivalence.core.spatial import Flatten, flatten_permutation
from equivalence.core.walk import DenseUnit, ModelNotSupported, Refused, check_chain, in_flatten_order
from equivalence.frameworks.graph_kinds import KindRead, not_read_yet
from equivalence.frameworks.onnx_attention import InBatches, read_attention, sequence_input
from equivalence.frameworks.onnx_kinds import (
    FLATTEN_OPS,
    KIND_OPS,
    LAYER_NORM_OPS,
    WRITTEN_LAYER_NORMS,
    attr,
    channels_first,
    decomposed_layer_norm,
    f32,
    input_shape,
    per_channel,
    read_kind,
    scale_shift,
    transpose_direction,
)
from equivalence.frameworks.onnx_recurrent import float_sequence, not_read_recurrent, read_recurrent, recurrent_node
from equivalence.frameworks.onnx_residual import Forks, Value, residual_read, residual_runner, walk_order
from equivalence.frameworks.onnx_sequence import (
    SEQUENCE_REFUSED,
    embedding,
    id_prelude,
    not_read_sequence_op,
    sequence_mean,
    tensordot,
    token_layer_norm,
)
from equivalence.frameworks.ort_errors import ORT_ERRORS, refusal

FRAMEWORK = "ort"
"""The label of the units: ORT runs them, and the ``ort`` entries of the named differences apply."""
DENSE_OPS = ("MatMul", "Gemm")
STARTS = DENSE_OPS + KIND_OPS
"""Ops that start a unit (a Flatten or a Reshape of a spatial tensor does too)."""
SKIPPED = ("Identity", "Dropout", "Flatten", "Reshape")
"""Ops skipped between dense units (2-D tensors: a Flatten changes nothing)."""
JUDGED = ("MatMul/Gemm (a bias Add), Conv, MaxPool, AveragePool, Flatten, BatchNormalization, LayerNormalization, "
          "Gather of an embedding table, ReduceMean over the tokens, LSTM and GRU nodes")
DTYPES = {np.dtype("float32"): "float32", np.dtype("float64"): "float64", np.dtype("float16"): "float16"}


class _Refuse(Exception):
    """Raised inside a mapping; turned into ``ModelNotSupported`` with the node's name, op and index."""


# --- loading ------------------------------------------------------------------------------------

def load_model(path: str | Path) -> onnx.ModelProto:
    """An ONNX model from ``path`` (protobuf, no pickled objects); ``ValueError`` with one line otherwise."""
    from google.protobuf.message import DecodeError

    data = Path(path).read_bytes()
    try:
        model = onnx.load_from_string(data)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise ValueError(f"not an ONNX model (a protobuf ModelProto), random bytes or a truncated file "
                         f"({type(exc).__name__})") from None
    if not model.graph.node or not model.opset_import:
        raise ValueError("not an ONNX model: it parses, but holds no graph nodes or no opset (a truncated file, "
                         "or another format's file)")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ValueError(f"not a valid ONNX model ({' '.join(str(exc).split())[:200]})") from None
    return model


# --- the walk -----------------------------------------------------------------------------------

def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Initializers, ``Constant`` nodes, and ``Identity`` nodes of those (torch's exporter writes one for a
    parameter whose values another shares)."""
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute:
            values[node.output[0]] = np.asarray(helper.get_attribute_value(node.attribute[0]) if
                                                node.attribute[0].name != "value" else
                                                numpy_helper.to_array(node.attribute[0].t))
        elif node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    return values


@dataclass
class _Pending:
    index: int
    dense: onnx.NodeProto
    input: str
    W: np.ndarray
    native: np.ndarray
    kind: str
    nodes: list[onnx.NodeProto]
    b: np.ndarray | None = None
    pre: str = ""  # the tensor before the activation
    act_nodes: list[tuple[int, onnx.NodeProto]] | None = None
    layer_kind: Any = DENSE
    in_shape: tuple[int, ...] = ()  # canonical, per sample (a dense unit: empty)
    out_shape: tuple[int, ...] = ()
    permutation: np.ndarray | None = None  # a dense unit after a Flatten: its canonical rows' ONNX positions
    transposes: list[tuple[int, onnx.NodeProto]] = field(default_factory=list)  # a converter's, around a conv
    in_last: bool = False  # the unit takes channels-last input (a Transpose to channels-first is its first node)
    out_last: bool = False  # it gives channels-last output (a Transpose back is its last node)
    flatten_order: np.ndarray | None = None  # a norm between a Flatten and its dense unit: the Flatten's permutation
    tokens: bool = False  # takes a token sequence (batch, L, features) or token ids: batch-first, as canonical
    feeds: np.dtype | None = None  # the dtype its input is fed in, when not its weights' (an Embedding's ids)
    skip: str = ""  # a residual Add's second operand (its first: ``input``)
    batch: int | None = None  # the graph's fixed batch, baked into the unit's nodes: run in chunks of it


def _name(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


def walk(model: Any) -> list[DenseUnit]:
    """The units of an ONNX graph in execution order; ``ModelNotSupported`` names what cannot be judged."""
    if isinstance(model, (str, Path)):
        model = load_model(model)
    if not isinstance(model, onnx.ModelProto):
        raise ModelNotSupported("onnx", "model", type(model).__name__, None, "is not an onnx.ModelProto")
    graph = model.graph
    consts = _constants(graph)
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ModelNotSupported("onnx", graph.name or "graph", "graph", None,
                                f"takes {len(inputs)} inputs and gives {len(graph.output)} outputs; the suite judges "
                                "a model of one input and one output")
    computed = _shape_computations(graph, consts)
    shape_only = _read_for_shapes_alone(graph, computed)
    recurrent = not_read_sequence_op(graph) or not_read_recurrent(graph, consts)
    if recurrent is not None:
        index, node, problem = recurrent
        raise ModelNotSupported("onnx", _name(node, index), node.op_type, index, problem)
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(graph.node):
        for t in node.input if node.output[0] not in computed and index not in shape_only else ():
            consumers.setdefault(t, []).append(index)
    first = [graph.node[i] for i in consumers.get(inputs[0].name, [])]
    rank = len(inputs[0].type.tensor_type.shape.dim)
    layout_last = _channels_last_input(model, first, rank)
    try:
        tokens = float_sequence(graph, inputs[0], consumers)  # (L, features) while the chain is a token sequence
        shape = None if tokens else input_shape(inputs[0], channels_last=layout_last)  # per sample while spatial
    except Refused as exc:
        raise ModelNotSupported("onnx", inputs[0].name, "input", None, str(exc)) from None
    leading: tuple[int, onnx.NodeProto] | None = None  # a Transpose to channels-first, awaiting its conv
    context = _Context(model, consts, consumers, _input_dtype(inputs[0]), computed)
    current = inputs[0].name
    forks = Forks(graph, consumers)  # the values a residual Add or a second branch takes (onnx_residual)
    units: list[DenseUnit] = []
    pending: _Pending | None = None
    permutation = None  # a Flatten's: the next dense unit's rows
    absorbed: set[int] = set()  # the nodes of a norm written as ops, read with its first
    prelude = id_prelude(graph, consts, computed, inputs[0].name)  # tf2onnx's wrap of negative ids, before its Gather
    input_tokens = sequence_input(inputs[0])  # (L, E) of a float (batch, L, E) input: a sequence an attention may take
    if prelude is not None:
        absorbed.update(prelude[1])
    for index in walk_order(model):  # the graph's order (tf2onnx's: two branches in their Add's operands' order)
        node = graph.node[index]
        if index in shape_only:  # its values unused: read by Shape nodes alone
            continue
        if node.output[0] in consts or node.output[0] in computed or index in absorbed:  # a Constant, an Identity
            continue                                                                    # of one; a shape
        dynamic = [t for t in node.input if t and t not in consts and t not in computed]
        ids_prepared = prelude is not None and index == prelude[0]  # the Gather whose ids the prelude computes
        if ids_prepared:
            dynamic = [current]

        def refuse(problem: str, node: onnx.NodeProto = node, index: int = index) -> ModelNotSupported:
            return ModelNotSupported("onnx", _name(node, index), node.op_type, index, problem)

        cell_at = recurrent_node(index, node, graph, consumers)  # an LSTM or GRU (its Transpose): its index
        written = node.op_type == LAYER_NORM_OPS[0] and shape is None and tokens is None  # a LayerNorm as ops?
        affine = _shift_after(node, context, current, shape, layout_last, pending) if node.op_type == "Mul" else None
        starts = node.op_type in STARTS or (node.op_type in FLATTEN_OPS and shape is not None) or written \
            or affine is not None or node.op_type == "Gather" or (node.op_type == "ReduceMean" and tokens is not None) \
            or cell_at is not None
        direction = transpose_direction(node, len(shape) + 1) if node.op_type == "Transpose" and shape else None
        trailing = direction == "last" and not layout_last and pending is not None and len(pending.out_shape) > 1
        sequence = tokens or (input_tokens if current == inputs[0].name else None)
        attention = _self_attention(index, context, current, sequence, absorbed) \
            if sequence and current in node.input else None
        if attention is not None:  # its nodes, from this one: one unit
            region = [i for i, n in enumerate(graph.node) if any(n is a for a in attention.nodes)]
            forks.tap_region(Value(current, len(units) - (pending is None), shape, layout_last, tokens or sequence),
                             region, permutation)  # x + att(x)
            if pending is not None:
                units.append(_close(pending, context))
            pending, current, tokens, shape = attention, attention.nodes[-1].output[0], sequence, None
            continue
        if tokens is not None and node.op_type in SEQUENCE_REFUSED and cell_at is None:
            raise refuse(SEQUENCE_REFUSED[node.op_type])
        if tokens is not None and node.op_type == "ReduceMean":  # refused as what it is before it is a branch
            try:
                sequence_mean(node, consts, tokens)
            except Refused as exc:
                raise refuse(str(exc)) from None
        if pending is not None and pending.act_nodes is not None:
            inside = {pending.pre} | {o for _, n in pending.act_nodes for o in n.output}
            if not starts and node.op_type not in SKIPPED + ("Transpose",) and dynamic and set(dynamic) <= inside:
                pending.act_nodes.append((index, node))  # the activation's next node (x * sigmoid(x): two)
                current = node.output[0]
                continue
            if not trailing:
                units.append(_close(pending, context))
                pending = None
        if leading is not None and node.op_type not in KIND_OPS:
            raise refuse(f"follows the Transpose to channels-first {_name(leading[1], leading[0])!r}, but is no "
                         "conv, pooling or norm: the suite reads the Transposes converters put around those")
        chain = Value(current, len(units) - (pending is None), shape, layout_last, tokens)  # whose output (INPUT)
        skip = forks.joined(node, index, dynamic, current)  # residual Adds and branches: onnx_residual
        start = forks.second_branch(node, index, dynamic, chain) if skip is None else None
        if pending is not None and (skip or start) is not None:
            units.append(_close(pending, context))
            pending = None
        if skip is not None:  # x + f(x): one unit, its activation after it
            pending, current = _residual(index, node, units, skip, chain), node.output[0]
            continue
        if start is not None:  # a(x) + b(x): a's end waits for the Add, b starts from x again (a Branch unit)
            units.append(branch_unit(FRAMEWORK, "branch", index, units, start.unit))
            current, shape, layout_last, tokens = start.tensor, start.shape, start.layout_last, start.tokens
        if dynamic != [current]:
            raise refuse(f"a branch: it takes {', '.join(map(repr, dynamic)) or 'no tensor'}, but should take the "
                         f"previous layer's output {current!r} alone (a residual Add of it and an earlier value is "
                         "judged; concatenations are not)")
        if len(set(consumers.get(current, []))) > 1 and not (pending is not None and not starts) and not written \
                and not ids_prepared:  # a fork: both paths must meet at an Add
            forks.tap(chain, permutation)
        if trailing:  # the way back to channels-last: the unit's last node
            pending.transposes.append((index, node))
            pending.out_last, layout_last = True, True
        elif direction == "first" and layout_last:  # to channels-first: the next unit's first node
            if pending is not None:
                units.append(_close(pending, context))
                pending = None
            leading, layout_last = (index, node), False
        elif cell_at is not None:
            if pending is not None:
                units.append(_close(pending, context))
            try:
                block = read_recurrent(index, cell_at, graph, consts, consumers, tokens)
            except Refused as exc:
                raise refuse(str(exc), graph.node[cell_at], cell_at) from None
            pending = _Pending(block.index, block.node, block.input, block.read.W, block.read.native, block.kind,
                               [n for _, n in block.nodes], block.read.b, layer_kind=block.read.layer_kind,
                               in_shape=tokens, out_shape=block.read.layer_kind.output_shape(tokens), in_last=True,
                               out_last=True, tokens=True)
            absorbed.update(i for i, _ in block.nodes)
            current, tokens = block.output, block.tokens
            continue
        elif node.op_type == "Gather":
            if pending is not None:
                units.append(_close(pending, context))
            try:
                read = embedding(node, consts, inputs[0], current, context.dtype, prepared=ids_prepared)
            except Refused as exc:
                raise refuse(str(exc)) from None
            kind = read.layer_kind
            ops = [graph.node[i] for i in prelude[1]] if ids_prepared else []
            pending = _Pending(index, node, current, read.W, read.native, "+".join(n.op_type for n in ops + [node]),
                               ops + [node], layer_kind=kind,
                               in_shape=(kind.length,), out_shape=kind.output_shape((kind.length,)), in_last=True,
                               out_last=True, tokens=True, feeds=context.dtype)
            context = replace(context, dtype=read.W.dtype)  # the chain's dtype from here: the table's
            tokens = (kind.length, kind.dim)
        elif node.op_type == "LayerNormalization" and tokens is not None:  # token by token
            if pending is not None:
                units.append(_close(pending, context))
            try:
                read = token_layer_norm(node, consts, tokens)
            except Refused as exc:
                raise refuse(str(exc)) from None
            pending = _Pending(index, node, current, read.W, read.native, node.op_type, [node], read.b,
                               layer_kind=read.layer_kind, in_shape=tokens, out_shape=tokens, in_last=True,
                               out_last=True, tokens=True)
        elif node.op_type == "ReduceMean" and tokens is not None:
            if pending is not None:
                units.append(_close(pending, context))
            try:
                read = sequence_mean(node, consts, tokens)
            except Refused as exc:
                raise refuse(str(exc)) from None
            pending = _Pending(index, node, current, read.W, read.native, "ReduceMean", [node],
                               layer_kind=read.layer_kind, in_shape=tokens, out_shape=(tokens[1],), in_last=True,
                               out_last=True, tokens=True)
            tokens = None
        elif node.op_type in DENSE_OPS:
            if pending is not None:
                units.append(_close(pending, context))
            try:
                pending = _dense(index, node, current, consts, shape, permutation, tokens)
            except _Refuse as exc:
                raise refuse(str(exc)) from None
            permutation = None
            if tokens is not None:
                tokens = (tokens[0], pending.W.shape[1])
        elif written:
            if pending is not None:
                units.append(_close(pending, context))
            pending, current = _written_layer_norm(index, graph, context, current, absorbed, refuse)
            pending.flatten_order = permutation
            continue
        elif affine is not None:  # a BatchNormalization tf2onnx wrote as a Mul and an Add: one unit of both
            if pending is not None:
                units.append(_close(pending, context))
            add, read = affine
            features = shape or (read.layer_kind.features,)
            pending = _Pending(index, node, current, read.W, read.native, "Mul+Add", [node, graph.node[add]], read.b,
                               layer_kind=read.layer_kind, in_shape=features, out_shape=features, in_last=layout_last,
                               out_last=layout_last,  # per channel on the axis it finds them: layout kept
                               flatten_order=permutation)
            absorbed.add(add)
            current = graph.node[add].output[0]
            continue
        elif starts:
            if pending is not None:
                units.append(_close(pending, context))
            if layout_last and node.op_type not in FLATTEN_OPS and shape is not None:
                raise refuse(f"a {node.op_type} on a channels-last tensor: ONNX computes it channels-first (a "
                             "converter puts a Transpose to channels-first before it)")
            try:
                read = read_kind(node, consts, shape, computed)
            except Refused as exc:
                raise refuse(str(exc)) from None
            in_shape = shape or (read.layer_kind.features,)
            pending = _Pending(index, node, current if leading is None else leading[1].input[0], read.W, read.native,
                               node.op_type, [node], read.b, layer_kind=read.layer_kind, in_shape=in_shape,
                               out_shape=read.layer_kind.output_shape(in_shape),
                               transposes=[leading] if leading is not None else [],
                               in_last=leading is not None or layout_last)
            leading = None
            if isinstance(read.layer_kind, (BatchNorm, LayerNorm)):
                pending.flatten_order = permutation
            if isinstance(read.layer_kind, Flatten):
                permutation = None if layout_last else flatten_permutation(read.layer_kind.in_shape)
            shape, layout_last = read.next_shape, layout_last and read.next_shape is not None
        elif node.op_type == "Reshape" and tokens is not None and tensordot(node, graph, context, tokens):
            if pending is not None:
                units.append(_close(pending, context))
            reshape, matmul, back = tensordot(node, graph, context, tokens)
            try:
                pending = _dense(index, matmul, matmul.input[0], consts, None, None, None)
            except _Refuse as exc:
                raise refuse(str(exc)) from None
            if pending.W.shape[0] != tokens[1]:
                raise refuse(f"takes {pending.W.shape[0]} features, but the sequence before it has {tokens[1]}")
            pending = replace(pending, index=index, dense=node, input=current, nodes=[reshape, matmul, back],
                              kind="Reshape+MatMul+Reshape", in_shape=tokens, out_shape=(tokens[0], pending.W.shape[1]),
                              in_last=True, out_last=True, tokens=True)
            tokens = (tokens[0], pending.W.shape[1])
            absorbed.update(i for i, n in enumerate(graph.node) if n is matmul or n is back)
            current = back.output[0]
            continue
        elif node.op_type == "Add" and pending is not None and pending.b is None and \
                pending.kind in ("MatMul", "Reshape+MatMul+Reshape"):
            stored = next((t for t in node.input if t in consts), None)
            if stored is None:
                raise refuse("adds a value computed from shapes, not a constant bias, to the MatMul's output: the "
                             "suite judges a bias Add of an initializer or a Constant")
            bias = consts[stored]
            if bias.size != pending.W.shape[1] or bias.ndim > 2:
                raise refuse(f"adds a constant of shape {bias.shape}, but a bias of {pending.W.shape[1]} values "
                             "should follow the MatMul")
            pending.b, pending.kind = bias.reshape(-1).astype(pending.W.dtype), pending.kind + "+Add"
            pending.nodes.append(node)
        elif node.op_type in SKIPPED:
            if node.op_type == "Dropout" and _drops(node, consts):
                raise refuse("a Dropout in training mode (its training_mode input set): dropout that drops is not "
                             "judged; export the model in eval mode")
            if tokens is not None and node.op_type in FLATTEN_OPS:
                raise refuse(f"a {node.op_type} of the (batch, {tokens[0]}, {tokens[1]}) token sequence: the suite "
                             "judges a sequence's dense layers token by token, and a mean over its tokens "
                             "(ReduceMean over axis 1)")
            if pending is not None:
                units.append(_close(pending, context))
                pending = None
        elif pending is None or not_read_yet(node.op_type):
            raise refuse(not_read_yet(node.op_type) or "not a layer the suite reads, and before any: it judges "
                         f"{JUDGED} and their activations")
        else:
            pending.pre, pending.act_nodes = current, [(index, node)]
        current = node.output[0]
    if pending is not None:
        units.append(_close(pending, context))
    if graph.output[0].name != current:
        raise ModelNotSupported("onnx", graph.output[0].name, "output", None,
                                f"the graph's output is not the end of its single chain of nodes ({current!r})")
    return check_residuals(check_chain(units, "onnx"), "onnx")



def _residual(index: int, node: onnx.NodeProto, units: list[DenseUnit], skip: Value, chain: Value) -> _Pending:
    """The residual Add ``node`` of the chain's output and ``skip``: channels-first on a spatial tensor ONNX computes
    so (``residual_runner`` moves the canonical operands' axes)."""
    read = residual_read(node, index, units, skip, chain)
    last = chain.shape is None or chain.layout_last
    return _Pending(index, node, chain.tensor, read.W, read.native, "Add", [node], layer_kind=read.layer_kind,
                    in_shape=read.layer_kind.operands_shape, out_shape=read.layer_kind.features, in_last=last,
                    out_last=last, tokens=chain.tokens is not None, skip=skip.tensor)


def _drops(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> bool:
    """A ``Dropout`` whose ``training_mode`` input is set (a constant true, or computed): it drops values."""
    mode = node.input[2] if len(node.input) > 2 else ""
    return bool(mode) and (mode not in consts or bool(np.asarray(consts[mode]).reshape(-1)[0]))


def _channels_last_input(model: onnx.ModelProto, first: list[onnx.NodeProto], rank: int) -> bool:
    """Whether the graph's spatial input is channels-last: its first node a Transpose to ONNX's channels-first, or,
    with no Transpose first, a graph tf2onnx wrote from TensorFlow, which is channels-last on the CPU (a Keras model
    starting with a Flatten or a BatchNormalization: tf2onnx flattens ``H, W, C`` or scales the last axis before any
    Transpose). Else channels-first, as torch's exporter writes it, and as any graph whose first node is an op ONNX
    computes channels-first (tf2onnx's ``--inputs-as-nchw`` cancels its input Transpose against the conv's)."""
    if rank < 3:
        return False
    if len(first) == 1 and first[0].op_type == "Transpose":
        return transpose_direction(first[0], rank) == "first"
    if any(node.op_type in _CHANNELS_FIRST_OPS for node in first):
        return False
    return model.producer_name == "tf2onnx"


_CHANNELS_FIRST_OPS = ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "BatchNormalization", "GlobalAveragePool",
                       "GlobalMaxPool", "LpPool", "InstanceNormalization")
"""ONNX ops whose input is channels-first by definition: a graph's input feeding one is read so."""


def _written_layer_norm(index: int, graph: onnx.GraphProto, context: _Context, current: str, absorbed: set[int],
                        refuse: Callable[[str], ModelNotSupported]) -> tuple[_Pending, str]:
    """A LayerNorm an exporter wrote as ops (torch's below opset 17, tf2onnx's), from its first ``ReduceMean``: one
    unit of its nodes, which ``absorbed`` collects; the unit and the tensor it gives."""
    following = [(i, n) for i, n in enumerate(graph.node) if i >= index and n.output[0] not in context.consts
                 and n.output[0] not in context.computed][:max(map(len, WRITTEN_LAYER_NORMS))]
    try:
        read, form = decomposed_layer_norm(following, context.consts, current)
    except Refused as exc:
        raise refuse(str(exc)) from None
    following = following[:len(form)]
    outside = set(context.consumers.get(current, [])) - {i for i, _ in following}
    if outside:
        raise refuse(f"a branch: {current!r} also feeds node {min(outside)}, outside the LayerNorm's ops")
    absorbed.update(i for i, _ in following[1:])
    nodes = [n for _, n in following]
    features = (read.layer_kind.features,)
    return _Pending(index, nodes[0], current, read.W, read.native, "+".join(form), nodes,
                    layer_kind=read.layer_kind, in_shape=features, out_shape=features), nodes[-1].output[0]


def _self_attention(index: int, context: _Context, current: str, sequence: tuple[int, int],
                    absorbed: set[int]) -> _Pending | None:
    """The self-attention region (``equivalence.frameworks.onnx_attention``) starting at node ``index`` on the
    sequence ``current`` ``(batch, *sequence)``: one unit of its nodes, which ``absorbed`` collects; else None."""
    read = read_attention(context.model, context.consts, current, sequence, index)
    if read is None:
        return None
    absorbed.update(read.nodes)
    nodes = [context.model.graph.node[i] for i in read.nodes]
    return _Pending(index, nodes[0], current, read.W, read.native, f"self-attention ({len(nodes)} nodes)", nodes,
                    read.b, layer_kind=read.layer_kind, in_shape=sequence, out_shape=sequence, in_last=True,
                    out_last=True, tokens=True, batch=read.batch)


def _shift_after(node: onnx.NodeProto, context: _Context, current: str, shape: tuple[int, ...] | None,
                 layout_last: bool, pending: _Pending | None) -> tuple[int, KindRead] | None:
    """A ``Mul`` of the chain's tensor by one constant per channel whose one consumer is an ``Add`` of another
    (tf2onnx's BatchNormalization, its statistics folded in): the ``Add``'s index and the unit read; else None."""
    consts, scale = context.consts, [t for t in node.input if t != current]
    if list(node.input).count(current) != 1 or len(scale) != 1 or scale[0] not in consts:
        return None
    users = set(context.consumers.get(node.output[0], []))
    add = context.model.graph.node[min(users)] if len(users) == 1 else None
    offset = [] if add is None else [t for t in add.input if t != node.output[0]]
    if add is None or add.op_type != "Add" or len(offset) != 1 or offset[0] not in consts:
        return None
    rank = len(shape) + 1 if shape else 2
    axis = rank - 1 if layout_last or not shape else 1
    channels = shape[-1] if shape else None if pending is None else \
        pending.W.shape[1] if pending.layer_kind is DENSE else pending.out_shape[-1]
    if not all(per_channel(consts[t], channels, rank, axis) for t in (scale[0], offset[0])):
        return None
    try:
        return min(users), scale_shift(consts[scale[0]], consts[offset[0]], shape)
    except Refused:
        return None


@dataclass(frozen=True)
class _Context:
    """What closing a unit needs of its graph: the model, its constants, each tensor's consumers, the dtype its
    input is fed in (a unit without weights runs in it)."""

    model: onnx.ModelProto
    consts: dict[str, np.ndarray]
    consumers: dict[str, list[int]]
    dtype: np.dtype
    computed: frozenset[str]


def _shape_computations(graph: onnx.GraphProto, consts: dict[str, np.ndarray]) -> frozenset[str]:
    """Tensors computed from a ``Shape`` node and constants alone (tf2onnx's Keras ``Flatten``: ``Shape``,
    ``Gather``, ``Slice``, ``Concat`` into a ``Reshape`` of ``(batch, -1)``): not part of the chain, read with the
    node that takes them."""
    out: set[str] = set()
    for node in graph.node:
        inputs = [t for t in node.input if t and t not in consts]
        if node.op_type == "Shape" or (node.op_type != "Constant" and inputs and set(inputs) <= out):
            out.update(node.output)
    return frozenset(out)


def _read_for_shapes_alone(graph: onnx.GraphProto, computed: frozenset[str]) -> frozenset[int]:
    """The nodes (not ``Shape`` ones) whose outputs only ``Shape`` nodes read, and no graph output: their values are
    unused (torch's exporter transposes a stacked recurrent layer's output back to batch-first only to take its
    shape for the next layer's zero initial state)."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for t in node.input:
            readers.setdefault(t, []).append(node)
    outputs = {o.name for o in graph.output}
    return frozenset(i for i, node in enumerate(graph.node)
                     if node.op_type != "Shape" and node.output and node.output[0] not in computed
                     and not outputs.intersection(node.output)
                     and all(readers.get(t) for t in node.output[:1])
                     and all(r.op_type == "Shape" for t in node.output for r in readers.get(t, [])))


def _input_dtype(value: onnx.ValueInfoProto) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))


def _dense(index: int, node: onnx.NodeProto, current: str, consts: dict[str, np.ndarray],
           shape: tuple[int, ...] | None, permutation: np.ndarray | None,
           tokens: tuple[int, int] | None = None) -> _Pending:
    """A ``MatMul`` or ``Gemm`` unit; after a Flatten (``permutation``) its canonical rows are the stored ones in
    the canonical (channels-last) flatten order. On a token sequence (``tokens``: ``(L, features)``) a ``MatMul``
    by a 2-D weight is a dense layer token by token (``equivalence.core.kinds.Dense`` on ``(N, L, in)``)."""
    if shape is not None:
        raise _Refuse(f"a {node.op_type} on a spatial tensor (per sample {shape}): the suite judges a dense layer "
                      "after a Flatten")
    weights = [t for t in node.input[1:] if t]
    if node.input[0] != current or not weights or weights[0] not in consts:
        raise _Refuse("multiplies by a computed tensor, not a constant weight (initializer or Constant)")
    stored = consts[weights[0]]
    if stored.dtype not in DTYPES:
        raise _Refuse(f"weights in {stored.dtype}: the suite judges {', '.join(DTYPES.values())} ONNX graphs")
    if stored.ndim != 2:
        raise _Refuse(f"a weight of shape {stored.shape}: a dense layer's is 2-D")
    W, b, kind = _weights(node, weights, stored, consts)
    if tokens is not None:
        if node.op_type != "MatMul":
            raise _Refuse(f"a Gemm on the (batch, {tokens[0]}, {tokens[1]}) token sequence: ONNX's Gemm takes a 2-D "
                          "tensor (a dense layer token by token is a MatMul)")
        if W.shape[0] != tokens[1]:
            raise _Refuse(f"takes {W.shape[0]} features, but the sequence before it has {tokens[1]}")
        return _Pending(index, node, current, W, stored, kind, [node], b, in_shape=tokens,
                        out_shape=(tokens[0], W.shape[1]), in_last=True, out_last=True, tokens=True)
    if permutation is not None:
        if W.shape[0] != len(permutation):
            raise _Refuse(f"takes {W.shape[0]} features, but the Flatten before it gives {len(permutation)}")
        W = W[permutation]
    return _Pending(index, node, current, W, stored, kind, [node], b, permutation=permutation)


def _weights(node: onnx.NodeProto, weights: list[str], stored: np.ndarray,
             consts: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None, str]:
    """``(W (in, out), b, kind)`` of a ``MatMul`` (stored ``(in, out)``) or a ``Gemm`` (``transB`` read)."""
    if node.op_type == "MatMul":
        return stored.copy(), None, "MatMul"
    if attr(node, "transA", 0):
        raise _Refuse("Gemm with transA=1 transposes the layer's input: not a dense layer")
    alpha, beta = attr(node, "alpha", 1.0), attr(node, "beta", 1.0)
    if alpha != 1.0 or (len(weights) > 1 and beta != 1.0):
        raise _Refuse(f"Gemm with alpha={alpha}, beta={beta}: the suite judges alpha=1, beta=1 (a dense layer)")
    trans_b = bool(attr(node, "transB", 0))
    W = stored.T.copy() if trans_b else stored.copy()
    b = None
    if len(weights) > 1:
        if weights[1] not in consts:
            raise _Refuse("adds a computed tensor as its C, not a constant bias")
        b = consts[weights[1]]
        if b.size != W.shape[1]:
            raise _Refuse(f"a C of shape {b.shape}, but a bias of {W.shape[1]} values is a dense layer's")
        b = b.reshape(-1).astype(W.dtype)
    return W, b, f"Gemm(transB={int(trans_b)})"


# --- activations: the op pattern after the dense op -----------------------------------------------

def _single(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> str:
    op = node.op_type
    fixed = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Softplus": "softplus", "Softsign": "softsign",
             "HardSwish": "hard_silu", "Mish": "mish"}
    if op in fixed:
        return fixed[op]
    if op == "Gelu":
        return "gelu" if attr(node, "approximate", "none") == "none" else "gelu_tanh"
    if op in ("Elu", "Celu"):
        return activation_name(op.lower(), f32(attr(node, "alpha", 1.0)))
    if op == "LeakyRelu":
        return activation_name("leaky_relu", f32(attr(node, "alpha", 0.01)))
    if op in ("Softmax", "LogSoftmax"):
        return activation_name("softmax_axis" if op == "Softmax" else "log_softmax_axis", attr(node, "axis", -1))
    if op == "Selu":
        alpha, gamma = attr(node, "alpha", 1.67326319217681884765625), attr(node, "gamma", 1.05070102214813232421875)
        if not (np.isclose(alpha, 1.6732632, rtol=1e-6) and np.isclose(gamma, 1.0507010, rtol=1e-6)):
            raise _Refuse(f"Selu(alpha={alpha}, gamma={gamma}): only the standard SELU constants are judged")
        return "selu"
    if op == "HardSigmoid":
        alpha, beta = attr(node, "alpha", 0.2), attr(node, "beta", 0.5)
        if np.isclose(alpha, 1 / 6, rtol=1e-6) and beta == 0.5:
            return "hard_sigmoid"  # relu6(x + 3) / 6: torch's and Keras 3's
        raise _Refuse(f"HardSigmoid(alpha={alpha}, beta={beta}): only alpha=1/6, beta=0.5 (relu6(x+3)/6) is judged")
    if op == "Clip":
        bounds = [float(consts[t]) if t in consts else None for t in list(node.input[1:3]) + [""] * 2][:2]
        if bounds == [0.0, 6.0]:
            return "relu6"
        if bounds == [0.0, None]:
            return "relu"
        raise _Refuse(f"Clip({bounds[0]}, {bounds[1]}): only Clip(0, 6) (relu6) is judged")
    raise KeyError(op)


def _activation(p: _Pending, consts: dict[str, np.ndarray]) -> str:
    nodes = [n for _, n in p.act_nodes or []]
    ops = tuple(n.op_type for n in nodes)
    if not nodes:
        return "linear"
    if len(nodes) == 1:
        return _single(nodes[0], consts)
    if ops == ("Sigmoid", "Mul") and set(nodes[1].input) == {p.pre, nodes[0].output[0]}:
        return "silu"
    if ops == ("Softplus", "Tanh", "Mul") and set(nodes[2].input) == {p.pre, nodes[1].output[0]}:
        return "mish"
    if ops == ("Abs", "Add", "Div") and list(nodes[2].input) == [p.pre, nodes[1].output[0]]:
        return "softsign"
    if ops in (("Div", "Erf", "Add", "Mul", "Mul"), ("Mul", "Erf", "Add", "Mul", "Mul")):
        return "gelu"  # x * 0.5 * (1 + erf(x / sqrt 2)): the values are judged against the exact GELU
    raise KeyError("+".join(ops))


def _close(p: _Pending, context: _Context) -> DenseUnit:
    act_nodes = p.act_nodes or []
    first_index, first = act_nodes[0] if act_nodes else (p.index, p.dense)
    try:
        act = _activation(p, context.consts)
        if p.tokens and act_nodes and act_nodes[0][1].op_type in ("Softmax", "LogSoftmax") and \
                attr(act_nodes[0][1], "axis", -1) not in (-1, 2):
            raise _Refuse(f"a {act_nodes[0][1].op_type} over axis {attr(act_nodes[0][1], 'axis', -1)} of the "
                          "(batch, tokens, features) sequence: the suite judges one over the features (axis -1)")
    except _Refuse as exc:
        raise ModelNotSupported("onnx", _name(first, first_index), first.op_type, first_index, str(exc)) from None
    except KeyError as exc:
        ops = exc.args[0]
        if ops.startswith("Mul+Add") and all(t in context.consts for _, n in act_nodes[:2] for t in n.input
                                             if t not in (p.pre, act_nodes[0][1].output[0])):
            raise ModelNotSupported("onnx", _name(first, first_index), first.op_type, first_index,
                                    f"a Mul and an Add of constants after the {p.kind}, but not one scale and one "
                                    "shift per channel (a BatchNormalization a converter folded into ops, as tf2onnx "
                                    "does, is read as such): the suite does not read it") from None
        raise ModelNotSupported("onnx", _name(first, first_index), first.op_type, first_index,
                                f"the op pattern {ops} after the {p.kind} is not "
                                f"{'a dense layer' if p.layer_kind is DENSE else 'a layer'}'s activation the suite "
                                "knows (it judges MatMul/Gemm, a bias Add, the kinds of layer it reads, and one "
                                "activation after each)") from None
    head = [n for i, n in p.transposes if i < p.index]
    tail = sorted(act_nodes + [(i, n) for i, n in p.transposes if i > p.index], key=lambda pair: pair[0])
    nodes = head + p.nodes + [n for _, n in tail]
    own = {i for i, _ in act_nodes}
    for i, node in act_nodes[:-1]:
        outside = set(context.consumers.get(node.output[0], [])) - own
        if outside:
            raise ModelNotSupported("onnx", _name(node, i), node.op_type, i,
                                    f"a branch: its output also feeds node {min(outside)}, outside the activation")
    outside = set(context.consumers.get(p.pre, [])) - own if act_nodes else set()
    if outside:
        raise ModelNotSupported("onnx", _name(first, first_index), first.op_type, first_index,
                                f"a branch: the {p.kind}'s output also feeds node {min(outside)}")
    computes = p.W.dtype if p.W.size else context.dtype
    dtype = DTYPES.get(computes)
    name = _name(p.dense, p.index)
    if dtype is None:
        raise ModelNotSupported("onnx", name, p.dense.op_type, p.index, f"computes in {computes}: the suite judges "
                                f"{', '.join(DTYPES.values())} ONNX graphs")
    act_source = "none" if not act_nodes else \
        f"{'+'.join(n.op_type for _, n in act_nodes)} node{'s' if len(act_nodes) > 1 else ''} " \
        f"{', '.join(str(i) for i, _ in act_nodes)}"
    dense = p.layer_kind is DENSE
    plain = dense and p.permutation is None and not p.tokens  # a dense chain's unit: its width alone
    dims = ((p.W.shape[0],), (p.W.shape[1],)) if dense and not p.in_shape else \
        (p.in_shape if p.in_last else channels_first(p.in_shape), p.out_shape if p.out_last else
         channels_first(p.out_shape))
    feeds = p.feeds or np.dtype(dtype)
    if isinstance(p.layer_kind, Residual):  # two operands, each shaped as its output (before a Transpose after it)
        dims = (p.out_shape if p.in_last else channels_first(p.out_shape), dims[1])
    session = _session(context, nodes, p.input, nodes[-1].output[0], dims, dtype, name, p.index, feeds=feeds,
                       skip=p.skip)
    session = session if p.batch is None else InBatches(session, p.batch)
    kind = "+".join(n.op_type for n in nodes if not any(n is a for _, a in act_nodes)) if p.transposes else p.kind
    run = _runner(session, p, feeds) if not p.skip else residual_runner(
        session, p.layer_kind, into=not p.in_last, back=not p.out_last, dtype=feeds,
        refuse=lambda problem: ModelNotSupported("onnx", name, p.dense.op_type, p.index, problem))
    unit = DenseUnit(FRAMEWORK, name, f"onnx {kind}", p.index, p.W, p.b, p.native, act, act_source,
                     dtype if p.W.size else "", run, layer_kind=p.layer_kind,
                     in_shape=() if plain else p.in_shape or (p.W.shape[0],),
                     out_shape=() if plain else p.out_shape or (p.W.shape[1],))
    return unit if p.flatten_order is None else in_flatten_order(unit, p.flatten_order)


def _runner(session: Any, p: _Pending, dtype: np.dtype) -> Callable[[np.ndarray], np.ndarray]:
    """The unit on canonical (channels-last) numpy: made channels-first for ORT and back (unless the unit's own
    Transposes do it); a Flatten's output in the canonical order, a dense unit after one fed its input in ONNX's."""
    rows = None if p.permutation is None else np.argsort(p.permutation)
    flat = flatten_permutation(p.in_shape) if isinstance(p.layer_kind, Flatten) and not p.in_last else None
    into = len(p.in_shape) > 1 and not p.in_last
    back = len(p.out_shape) > 1 and not p.out_last

    def run(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if rows is not None:
            x = x[:, rows]
        if into:
            x = np.moveaxis(x, -1, 1)
        try:
            y = session.run(None, {"x": np.ascontiguousarray(x, dtype=dtype)})[0]
        except ORT_ERRORS as exc:  # the input's layout read wrong, most likely: one line, not ORT's traceback
            layout = "channels-last" if p.in_last else "channels-first (ONNX's layout)"
            raise ModelNotSupported("onnx", _name(p.dense, p.index), p.dense.op_type, p.index,
                                    f"not run on an input of shape {x.shape}, the graph's input read {layout}: "
                                    f"{refusal(exc, str(dtype), '?')} (a graph's spatial input is read channels-last "
                                    "when its first node is a Transpose to channels-first or tf2onnx wrote it)"
                                    ) from None
        return y[:, flat] if flat is not None else np.moveaxis(y, 1, -1) if back else y

    return run


def _in_order(nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """``nodes`` ordered so each comes after the nodes whose outputs it reads (a shape computation of a tensor the
    unit computes, as the initial state of torch's LSTM, comes after that tensor's node); the order kept otherwise."""
    given = {t for n in nodes for t in n.output}
    ready, left, out = set(), list(nodes), []
    while left:
        node = next((n for n in left if all(t in ready or t not in given for t in n.input)), left[0])
        left.remove(node)
        out.append(node)
        ready.update(node.output)
    return out


def _session(context: _Context, nodes: Sequence[onnx.NodeProto], input_name: str, output: str,
             dims: tuple[tuple[int, ...], tuple[int, ...]], dtype: str, name: str, index: int, *,
             feeds: np.dtype | None = None, skip: str = "") -> Any:
    """An ORT session of ``nodes`` alone, cut out of the graph: input ``x`` (batch, *dims[0]) in ``feeds`` (the
    graph's integer ids for an Embedding; else ``dtype``), output (batch, *dims[1]) in ``dtype``, ONNX's layout;
    a residual Add's second operand ``skip`` its second input ``skip``, shaped as ``x``."""
    model = context.model
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    elem_in = elem if feeds is None else helper.np_dtype_to_tensor_dtype(np.dtype(feeds))
    needed = {t for n in nodes for t in n.input if t}
    produced = {t for n in nodes for t in n.output}  # the unit's own shape arithmetic (an attention's) among them
    constants = []  # Constant nodes, Identity nodes of constants, shape computations the unit reads (graph order)
    for node in reversed(model.graph.node):
        if node.output[0] in needed and (node.output[0] in context.consts or node.op_type == "Constant"):
            constants.insert(0, node)
            needed.update(t for t in node.input if t)
        elif node.output[0] in needed and node.output[0] in context.computed and node.output[0] not in produced:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            if node.op_type == "Shape" and node.input[0] not in produced:  # of a tensor before the unit: its
                copy.input[0] = "x"                                        # batch is the unit's input's
            constants.insert(0, copy)
            needed.update(t for t in copy.input if t)
    initializers = [init for init in model.graph.initializer if init.name in needed]
    renamed = [onnx.NodeProto() for _ in nodes]
    for copy, node in zip(renamed, nodes):
        copy.CopyFrom(node)
        copy.input[:] = ["x" if t == input_name else "skip" if t == skip and skip else t for t in copy.input]
    operands = ["x", "skip"] if skip else ["x"]
    graph = helper.make_graph(_in_order(constants + renamed), f"unit {name}",
                              [helper.make_tensor_value_info(t, elem_in, ["batch", *dims[0]]) for t in operands],
                              [helper.make_tensor_value_info(output, elem, ["batch", *dims[1]])], initializers)
    unit = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    try:
        return ort.InferenceSession(unit.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except ORT_ERRORS as exc:
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), "?")
        raise ModelNotSupported("onnx", name, nodes[0].op_type, index, f"not run: {refusal(exc, dtype, opset)}") \
            from None
