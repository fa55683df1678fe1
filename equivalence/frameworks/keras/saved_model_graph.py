"""Read a TensorFlow SavedModel (a folder, or what ``tf.saved_model.load`` returns) into units, and run each on
TensorFlow.

The serving signature's function is frozen (``convert_variables_to_constants_v2``: variables become ``Const`` nodes,
called functions are inlined) and its graph read as a graph: a dense unit is a ``MatMul`` (its ``transpose_b`` read)
of the chain's tensor by a constant, then optionally a ``Mul`` by the constant 1 (onnx2tf writes a ``Gemm``'s
``alpha`` so), then a ``BiasAdd``/``AddV2``/``Add`` of a constant bias, then the activation's ops (``Relu``,
``Sigmoid``, ``Sigmoid``+``Mul`` for SiLU...). ``Conv2D`` (a bias add after it), ``MaxPool``, ``AvgPool``, a
``Reshape`` of a spatial tensor, ``FusedBatchNormV3`` and the BatchNorm and LayerNorm Keras 3 writes as ops start
units of the core's other kinds (``equivalence.frameworks.keras.saved_model_kinds``), channels-last as TensorFlow
computes; so do onnx2tf's forms of a torch conv net (a ``Transpose`` to channels-first and the ``Reshape`` of
torch's ``Flatten``, one unit whose output is put in the canonical order, the next dense unit's rows permuted to it;
a ``Transpose`` that moves nothing, or the one of a channels-first input, read with the op after it; a ``Mul`` and
an ``AddV2`` of per-channel constants, a BatchNorm folded; its LayerNorm ops; a norm between the flatten and the dense
unit read in the canonical order, ``in_flatten_order``). A Keras model of token ids gives an Embedding (its id wrap and
``GatherV2``, the unit fed the ids), dense layers (``Tensordot``) and LayerNorms token by token and a ``Mean`` over the
tokens (``saved_model_sequence``); a Keras ``MultiHeadAttention`` called as self-attention (its projections,
einsums, ``Softmax`` and layout ops) is one ``SelfAttention`` unit (``saved_model_attention``); loops, and einsums and
batch matmuls outside such a region, are refused wherever they are. Nodes computed from
constants alone (a conv bias'
``Reshape``, a BatchNorm's ``rsqrt(var + epsilon) * gamma``) are constants, their values computed by TensorFlow;
nodes computed from a ``Shape`` (a flatten's target) are read with the node taking them. ``Identity`` and
``Reshape`` between dense units are skipped; anything else or a branch is refused with the op's name, type and
position.

Each unit runs where the model lives: its own ``NodeDef``s and the constants they read, copied into a graph of
their own whose input is a placeholder ``(None, *per-sample shape)``, imported and pruned by
``tf.compat.v1.wrap_function``. The units' label is ``keras_graph``: TensorFlow's kernels in a graph, as Keras'
``tf.function`` runs them, so the named differences of TensorFlow's ops (flushed subnormals) apply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from equivalence.core.activations import activation_name
from equivalence.core.folded import ChannelAffine
from equivalence.core.kinds import DENSE
from equivalence.core.norms import BatchNorm, LayerNorm
from equivalence.core.residual import branch_unit, check_residuals
from equivalence.core.spatial import Conv, flatten_permutation
from equivalence.core.walk import DenseUnit, ModelNotSupported, Refused, check_chain, in_flatten_order
from equivalence.frameworks.graph_kinds import folded_batch_norm, not_read_yet
from equivalence.frameworks.graph_residual import Forks, Value, residual_kind
from equivalence.frameworks.keras.saved_model_attention import AttentionRefused, AttentionRegion, find_attentions
from equivalence.frameworks.keras.saved_model_kinds import (
    ADDS,
    LAYER_NORM_SUB_OPS,
    Graph,
    node_of,
    read_kind,
    starts,
    tensor,
    token_layer_norm,
)
from equivalence.frameworks.keras.saved_model_sequence import (
    GATHERS,
    SEQUENCE_REFUSED,
    embedding,
    id_prelude,
    ids_tensor,
    ids_used_otherwise,
    not_read_sequence_op,
    sequence_mean,
    sequence_refusal,
    starts_layer_norm,
    tensordot,
)

FRAMEWORK = "keras_graph"
FORM = "saved_model"
PASS = ("Identity", "Reshape", "IdentityN")
_SINGLE = {"Relu": "relu", "Relu6": "relu6", "Sigmoid": "sigmoid", "Tanh": "tanh", "Selu": "selu",
           "Softplus": "softplus", "Softsign": "softsign", "Softmax": "softmax", "LogSoftmax": "log_softmax"}
JUDGED = ("MatMul (a bias add), Conv2D (a BiasAdd), MaxPool, AvgPool, a Reshape of a spatial tensor, FusedBatchNormV3, "
          "the BatchNorm and LayerNorm Keras writes as ops, onnx2tf's LayerNorm ops")
PER_FEATURE = (BatchNorm, LayerNorm, ChannelAffine)
"""The kinds that keep the features' order: one between a channels-first flatten and its dense unit is read in the
canonical order (``in_flatten_order``), as the torch walker reads a norm after its Flatten."""
DTYPES = {np.dtype("float32"): "float32", np.dtype("float64"): "float64", np.dtype("float16"): "float16"}


@dataclass(frozen=True)
class SavedModelGraph:
    """A SavedModel's serving function, frozen: its ``GraphDef`` and input and output tensor names."""

    path: str
    graph_def: Any = field(repr=False)
    input: str
    output: str
    source: str = FORM  # what the graph was read from, as the units' kind and refusals name it
    equivalence_form = FORM


def load_model(path: str | Path | Any) -> SavedModelGraph:
    """The serving signature of a SavedModel folder (or of what ``tf.saved_model.load`` returned), frozen;
    ``ValueError`` with one line otherwise."""
    if isinstance(path, (str, Path)):
        folder = Path(path)
        if not (folder / "saved_model.pb").is_file():
            raise ValueError("not a SavedModel folder: no saved_model.pb in it")
        try:
            loaded = tf.saved_model.load(str(folder))
        except Exception as exc:  # noqa: BLE001 - protobuf, checkpoint and op-registry errors come in many types
            raise ValueError(f"not a readable SavedModel, truncated or corrupt? ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:160]})") from None
    else:
        loaded, folder = path, Path("<loaded>")
    signatures = getattr(loaded, "signatures", None) or {}
    if not signatures:
        raise ValueError("the SavedModel has no serving signature to read (save it with a signature, e.g. "
                         "model.export(path) or tf.saved_model.save(obj, path, signatures=...))")
    function = signatures["serving_default"] if "serving_default" in signatures else next(iter(signatures.values()))
    return frozen(function, str(folder))


def frozen(function: Any, path: str, source: str = FORM) -> SavedModelGraph:
    """A concrete ``tf.function`` frozen (variables and captured tensors as ``Const`` nodes) and read as a graph."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    graph = convert_variables_to_constants_v2(function)
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ValueError(f"its signature takes {len(graph.inputs)} inputs and gives {len(graph.outputs)} outputs; "
                         "the suite judges a model of one input and one output")
    return SavedModelGraph(path, graph.graph.as_graph_def(), graph.inputs[0].name, graph.outputs[0].name, source)


@dataclass
class _Pending:
    index: int
    input: str
    nodes: list[Any]
    W: np.ndarray
    native: np.ndarray
    b: np.ndarray | None = None
    pre: str = ""
    act_nodes: list[Any] = field(default_factory=list)
    layer_kind: Any = DENSE
    in_shape: tuple[int, ...] = ()  # canonical per sample (a dense unit: empty)
    out_shape: tuple[int, ...] = ()
    ops: str = ""  # the ops matched, as the report names them (a dense unit: its MatMul and bias add)
    channels_first: bool = False  # a flatten of the tensor made channels-first: its output put in canonical order
    per_sample: bool = False  # a unit whose ops fix the batch at 1 (the graph's): run a sample at a time
    fed_channels_first: bool = False  # a unit starting at the Transpose of a channels-first input: fed so
    permutation: np.ndarray | None = None  # a dense unit after a channels-first flatten: its rows, stored order
    flatten_order: np.ndarray | None = None  # a norm between a channels-first flatten and its dense unit: its order
    feeds: np.dtype | None = None  # the dtype its input is fed in, when not its weights' (an Embedding's token ids)
    name: str = ""  # the unit's name, when not its first node's (an Embedding: its gather's, after the ids' wrap)
    skip: str = ""  # a residual Add's second operand (its first: ``input``)


def walk(model: Any) -> list[DenseUnit]:
    """The units of a SavedModel's serving function in execution order; ``ModelNotSupported`` names what cannot be
    judged."""
    if not isinstance(model, SavedModelGraph):
        model = load_model(model)
    nodes = {n.name: n for n in model.graph_def.node}
    order = _topological(model.graph_def)
    folded = _computed_from(order, ("Const",), frozenset())
    shaped = _computed_from(order, ("Shape",), folded)
    skipped = folded | shaped
    constant = _constants(nodes, folded)
    consumers: dict[str, list[Any]] = {}
    for node in order:
        for t in node.input if node.name not in skipped else ():
            consumers.setdefault(tensor(t), []).append(node)
    placeholder = nodes[node_of(model.input)]
    dims = [d.size for d in placeholder.attr["shape"].shape.dim]
    transpose = _input_transpose(model.input, len(dims), consumers, constant)
    graph = Graph(nodes, consumers, constant, dims[0] if dims and dims[0] > 0 else None, transpose)
    shape = tuple(dims[1:]) if len(dims) > 2 else None  # canonical per sample while spatial; None once 2-D
    if shape is not None and transpose is not None:  # a channels-first input: (C, *spatial) made canonical
        shape = (*shape[1:], shape[0])
    if shape is not None and min(shape) < 1:
        raise ModelNotSupported(model.source, placeholder.name, "input", None, f"a spatial input of shape {dims}: "
                                "the suite needs its per-sample sizes fixed (padding and flatten order depend on them)")
    context = _Context(model, nodes, np.dtype(tf.as_dtype(placeholder.attr["dtype"].type).as_numpy_dtype), constant)
    attentions = _attentions(order, graph, skipped, model.source)  # self-attention regions, by their first node
    unread = not_read_sequence_op(order, frozenset().union(*(a.nodes for a in attentions.values())))
    if unread is not None:
        position, node, problem = unread
        raise ModelNotSupported(model.source, node.name, node.op, position, problem)
    ids, passed = ids_tensor(model.input, graph)
    prelude = id_prelude(order, ids, graph, skipped, passed)  # Keras' wrap of negative ids, and the gather
    current = model.input
    units: list[DenseUnit] = []
    pending: _Pending | None = None
    permutation = None  # a channels-first flatten's: the next dense unit's rows
    tokens: tuple[int, int] | None = None  # (L, features) while the chain's tensor is a token sequence
    absorbed: set[str] = {n.name for n in prelude[1]} if prelude else set()  # the nodes of a norm written as ops, read
    forks = _forks(order, consumers, model.source)  # the values a residual Add or a second branch takes
    where = {n.name: i for i, n in enumerate(order)}  # a node's position in the walk's order
    for position, node in enumerate(order):                                  # with its first; the ids' wrap
        if node.op in ("Placeholder", "NoOp") or node.name in skipped or node.name in absorbed:
            continue
        dynamic = [tensor(t) for t in node.input if not t.startswith("^") and node_of(t) not in skipped]

        def refuse(problem: str, node: Any = node, position: int = position) -> ModelNotSupported:
            return ModelNotSupported(model.source, node.name, node.op, position, problem)

        out = f"{node.name}:0"
        begins = starts(node, graph, shape)
        if pending is not None and pending.act_nodes:
            inside = {pending.pre} | {f"{n.name}:0" for n in pending.act_nodes}
            if not begins and node.op not in ("MatMul", "Reshape") and dynamic and set(dynamic) <= inside:
                pending.act_nodes.append(node)  # the activation's next op (x * sigmoid(x): two)
                current = out
                continue
            units.append(_close(pending, context))
            pending = None
        if node.op in GATHERS:
            pending = _embedding(position, node, prelude, ids, graph, dims, context, refuse)
            context = replace(context, dtype=pending.W.dtype)  # the chain's dtype from here: the table's
            tokens, current = pending.out_shape, out
            continue
        if node.name in attentions:  # x + att(x): the region's last node stands for the branch through it
            forks.tap(Value(current, len(units) - (pending is None), shape, tokens),
                      [where[n] for n in attentions[node.name].nodes if n in where])
            if pending is not None:
                units.append(_close(pending, context))
            pending = _attention(position, attentions[node.name], order, current, tokens, refuse)
            absorbed.update(attentions[node.name].nodes)
            current = attentions[node.name].end
            continue
        if prelude is None and context.dtype.kind in "iu" and node.op not in PASS:
            raise refuse(ids_used_otherwise(node.op))
        chain = Value(current, len(units) - (pending is None), shape, tokens)  # whose output (INPUT: the input's)
        skip = forks.joined(position, dynamic, current)  # residual Adds and branches: graph_residual
        start = forks.second_branch(position, dynamic, chain) if skip is None else None
        if pending is not None and (skip or start) is not None:
            units.append(_close(pending, context))
            pending = None
        if skip is not None:  # x + f(x): one unit, its activation's ops after it read with it
            kind = residual_kind(position, units, skip, chain, forks.refuse)
            empty = np.zeros((0,))
            pending = _Pending(position, current, [node], empty, empty, layer_kind=kind, in_shape=kind.operands_shape,
                               out_shape=tuple(kind.features), ops=node.op, skip=str(skip.tensor))
            current = out
            continue
        if start is not None:  # a(x) + b(x): a's end waits for the Add, b starts from x again (a Branch unit)
            units.append(branch_unit(FRAMEWORK, "branch", position, units, start.unit))
            current, shape, tokens = str(start.tensor), start.shape, start.tokens
        if dynamic != [current]:
            raise refuse(f"a branch: it takes {len(dynamic)} computed tensors, but should take the previous layer's "
                         "output alone (a residual Add of it and an earlier value is judged; concatenations are not)")
        if forks.forks(current) and node.op != "Mean" and (pending is None or begins or node.op in (
                "MatMul", "Transpose", "Reshape", *GATHERS)):
            forks.tap(chain)  # a fork: both paths must meet at an Add (a Mean's unit taps once read: a norm's reads
                              # the tensor more than once)
        if tokens is not None and (node.op == "Mean" or node.op in SEQUENCE_REFUSED):
            if pending is not None:
                units.append(_close(pending, context))
            pending, tokens = _on_tokens(position, node, current, graph, tokens, refuse)
            forks.tap(chain, [where[n.name] for n in pending.nodes])
            absorbed.update(n.name for n in pending.nodes)
            current = f"{pending.nodes[-1].name}:0"
            continue
        if node.op == "MatMul":
            if pending is not None:
                units.append(_close(pending, context))
            if shape is not None:
                raise refuse(f"a MatMul on a spatial tensor (per sample {shape}): the suite judges a dense layer "
                             "after a Flatten")
            pending = _dense(position, node, current, constant, refuse, permutation)
            permutation = None
        elif begins:
            if pending is not None:
                units.append(_close(pending, context))
            try:
                read = read_kind(node, shape, graph)
            except Refused as exc:
                raise refuse(str(exc)) from None
            in_shape = shape or (read.kind.layer_kind.features,)
            pending = _Pending(position, current, read.nodes, read.kind.W, read.kind.native, read.kind.b,
                               layer_kind=read.kind.layer_kind, in_shape=in_shape,
                               out_shape=read.kind.layer_kind.output_shape(in_shape), ops=read.ops,
                               channels_first=read.channels_first, per_sample=read.per_sample,
                               fed_channels_first=read.fed_channels_first)
            if permutation is not None and isinstance(read.kind.layer_kind, PER_FEATURE):
                pending.flatten_order = permutation  # between a C,H,W flatten and its dense unit: columns permuted
            else:
                permutation = flatten_permutation(in_shape) if read.channels_first else None
            absorbed.update(n.name for n in read.nodes)
            forks.tap(chain, [where[n.name] for n in read.nodes])
            shape, out = read.kind.next_shape, f"{read.nodes[-1].name}:0"
        elif node.op == "Mul" and pending is not None and pending.b is None and len(pending.nodes) == 1 \
                and pending.layer_kind is DENSE:
            scale = next(constant(t) for t in node.input if constant(t) is not None)
            if np.size(scale) != 1 or float(np.asarray(scale).reshape(-1)[0]) != 1.0:
                raise refuse(f"scales the MatMul by {scale}: the suite judges dense layers (a scale of 1, as onnx2tf "
                             "writes a Gemm's alpha, is read as none)")
            pending.nodes.append(node)
        elif node.op in ADDS and pending is not None and pending.b is None and _biased(pending):
            bias = next(constant(t) for t in node.input if constant(t) is not None)
            if bias.size != pending.W.shape[-1]:
                raise refuse(f"adds a constant of shape {bias.shape}, but a bias of {pending.W.shape[-1]} values "
                             f"should follow the {pending.nodes[0].op}")
            pending.b = bias.reshape(-1).astype(pending.W.dtype)
            pending.nodes.append(node)
            pending.ops += f"+{node.op}"
        elif node.op in PASS:
            if pending is not None and node.op != "Identity":
                units.append(_close(pending, context))
                pending = None
        elif pending is None or not_read_yet(node.op):
            raise refuse(not_read_yet(node.op) or f"not a layer the suite reads, and before any: it judges {JUDGED} "
                         "and their activations")
        else:
            pending.pre, pending.act_nodes = current, [node]
        current = out
    if pending is not None:
        units.append(_close(pending, context))
    if tensor(model.output) != current and not _same_through_identity(model.output, current, nodes):
        raise ModelNotSupported(model.source, model.output, "output", None,
                                "the signature's output is not the end of its single chain of ops")
    return check_residuals(check_chain(units, model.source), model.source)


def _forks(order: list[Any], consumers: dict[str, list[Any]], source: str) -> Forks:
    """The fork tracker (``graph_residual``) of the graph's nodes in the walk's order, a ``Shape``'s and the
    constants' computations left out (they are not in ``consumers``)."""
    position = {n.name: i for i, n in enumerate(order)}
    readers: dict[str, set[int]] = {}  # a node's name: the nodes reading one of its outputs
    for t, users in consumers.items():
        readers.setdefault(node_of(t), set()).update(position[u.name] for u in users)

    def refuse(index: int, problem: str) -> ModelNotSupported:
        return ModelNotSupported(source, order[index].name, order[index].op, index, problem)

    return Forks(lambda i: order[i].op, lambda t: [position[u.name] for u in consumers.get(str(t), [])
                                                    if u.op != "NoOp"],
                 lambda i: readers.get(order[i].name, ()), refuse, ADDS)


def _embedding(position: int, node: Any, prelude: tuple[Any, list[Any]] | None, ids: str, graph: Graph,
               dims: list[int], context: _Context, refuse: Any) -> _Pending:
    """The Embedding unit of the gather ``node``: the nodes computing its ids from the model's input (``ids``, past
    its ``Identity`` nodes) and the gather, fed the ids in the input's dtype."""
    if prelude is None or prelude[0] is not node:
        raise refuse(f"a {node.op} that does not look up the model's token ids in a constant table: the suite judges "
                     "an Embedding (a gather of a constant table by the token ids, Keras' wrap of negative ids before "
                     "it)")
    try:
        read = embedding(node, graph, dims)
    except Refused as exc:
        raise refuse(str(exc)) from None
    kind, nodes = read.layer_kind, [*prelude[1], node]
    return _Pending(position, ids, nodes, read.W, read.native, layer_kind=kind, in_shape=(kind.length,),
                    out_shape=kind.output_shape((kind.length,)), ops="+".join(n.op for n in nodes), feeds=context.dtype,
                    name=node.name)


def _attentions(order: list[Any], graph: Graph, skipped: frozenset[str], source: str) -> dict[str, AttentionRegion]:
    """The self-attention regions of the frozen graph (``saved_model_attention``) by their first node's name in
    ``order``; one the suite does not judge refused naming its node."""
    try:
        found = find_attentions(order, graph, skipped)
    except AttentionRefused as exc:
        position = next(i for i, n in enumerate(order) if n.name == exc.node.name)
        raise ModelNotSupported(source, exc.node.name, exc.node.op, position, exc.problem) from None
    return {next(n.name for n in order if n.name in region.nodes): region for region in found}


def _attention(position: int, region: AttentionRegion, order: list[Any], current: str,
               tokens: tuple[int, int] | None, refuse: Any) -> _Pending:
    """The self-attention unit of ``region``: its nodes run as one, on the chain's token sequence."""
    kind = region.layer_kind
    if region.start != current or tokens != (kind.length, kind.embed_dim):
        raise refuse(f"a self-attention on a tensor other than the chain's token sequence (batch, L, E) (now "
                     f"{tokens}): the suite reads one after an Embedding or a layer on its tokens")
    nodes = [n for n in order if n.name in region.nodes]
    return _Pending(position, current, nodes, region.W, region.native, region.b, layer_kind=kind, in_shape=tokens,
                    out_shape=tokens, ops=f"self-attention ({len(nodes)} nodes)")


def _on_tokens(position: int, node: Any, current: str, graph: Graph, tokens: tuple[int, int],
               refuse: Any) -> tuple[_Pending, tuple[int, int] | None]:
    """The unit ``node`` starts on a token sequence (``saved_model_sequence``): a dense layer token by token (a
    ``Tensordot``), a LayerNorm over each token's features, a mean over the tokens; and the sequence after it (None:
    no longer one). ``Refused`` (an op the suite does not read on a sequence) named."""
    try:
        if node.op == "Mean":
            norm = starts_layer_norm(node, graph)
            read = token_layer_norm(node, graph) if norm else sequence_mean(node, graph, tokens)
            after = tokens if norm else None
            return _Pending(position, current, read.nodes, read.kind.W, read.kind.native,
                            layer_kind=read.kind.layer_kind, in_shape=tokens, out_shape=after or (tokens[1],),
                            ops=read.ops), after
        nodes = tensordot(node, graph, tokens) if node.op in ("Transpose", "Reshape") else None
    except Refused as exc:
        raise refuse(str(exc)) from None
    if nodes is None:
        raise refuse(sequence_refusal(node.op, tokens))
    matmul = nodes[-2]
    pending = _dense(position, matmul, tensor(matmul.input[0]), graph.constant, refuse)
    if pending.W.shape[0] != tokens[1]:
        raise refuse(f"takes {pending.W.shape[0]} features, but the sequence before it has {tokens[1]}")
    after = (tokens[0], int(pending.W.shape[1]))
    return replace(pending, input=current, nodes=nodes, in_shape=tokens, out_shape=after,
                   ops="+".join(n.op for n in nodes)), after


def _input_transpose(name: str, rank: int, consumers: dict[str, list[Any]],
                     constant: Callable[[str], np.ndarray | None]) -> str | None:
    """The ``Transpose`` to channels-last (``perm [0, 2, ..., 1]``) a channels-first input goes through first
    (onnx2tf keeps torch's ``N, C, H, W`` input so, with ``-kt``), ``Identity`` nodes passed; None when there is
    none."""
    found = consumers.get(tensor(name), [])
    while len(found) == 1 and found[0].op == "Identity":
        found = consumers.get(tensor(found[0].name), [])
    if rank < 4 or len(found) != 1 or found[0].op != "Transpose":
        return None
    perm = constant(found[0].input[1])
    into_last = perm is not None and [int(v) for v in np.reshape(perm, -1)] == [0, *range(2, rank), 1]
    return found[0].name if into_last else None


def _biased(pending: _Pending) -> bool:
    """Whether a bias add after ``pending`` is its bias: a dense unit's or a conv's, not yet added."""
    return pending.b is None and not pending.act_nodes and (pending.layer_kind is DENSE or
                                                            isinstance(pending.layer_kind, Conv))


@dataclass(frozen=True)
class _Context:
    """What closing a unit needs of its graph: the model, its nodes by name, the dtype its input is fed in (a unit
    without weights runs in it), the values of its constants."""

    model: SavedModelGraph
    nodes: dict[str, Any]
    dtype: np.dtype
    constant: Callable[[str], np.ndarray | None]


def _computed_from(order: list[Any], seeds: tuple[str, ...], known: frozenset[str]) -> frozenset[str]:
    """The nodes computed from ``seeds`` ops (and ``known`` nodes) alone: the constants' computations (a conv's bias
    ``Reshape``, a BatchNorm's ``rsqrt(var + epsilon) * gamma``), or a ``Reshape`` target's from a ``Shape``."""
    out: set[str] = set()
    for node in order:
        inputs = [node_of(t) for t in node.input if not t.startswith("^")]
        if node.op in seeds or (inputs and all(t in out or t in known for t in inputs)
                                and any(t in out for t in inputs)):
            out.add(node.name)
    return frozenset(out)


def _constants(nodes: dict[str, Any], folded: frozenset[str]) -> Callable[[str], np.ndarray | None]:
    """The value of a tensor computed from constants alone (None for any other): a ``Const`` (through ``Identity``
    nodes) read, any other computed once by TensorFlow from its constants."""
    cache: dict[str, np.ndarray] = {}

    def constant(name: str) -> np.ndarray | None:
        name = tensor(name)
        node = nodes.get(node_of(name))
        while node is not None and node.op == "Identity" and node_of(node.input[0]) in folded:
            name, node = tensor(node.input[0]), nodes.get(node_of(node.input[0]))
        if node is None or node.name not in folded:
            return None
        if node.op == "Const":
            return tf.make_ndarray(node.attr["value"].tensor)
        if name not in cache:
            cache[name] = _function(nodes, [node.name], name)().numpy()
        return cache[name]

    return constant


def _same_through_identity(output: str, current: str, nodes: dict[str, Any]) -> bool:
    node = nodes.get(node_of(output))
    while node is not None and node.op == "Identity":
        if tensor(node.input[0]) == current:
            return True
        node = nodes.get(node_of(node.input[0]))
    return False


def _topological(graph_def: Any) -> list[Any]:
    nodes = {n.name: n for n in graph_def.node}
    seen: set[str] = set()
    order: list[Any] = []

    def visit(name: str) -> None:
        stack = [(name, False)]
        while stack:
            current, done = stack.pop()
            if done:
                order.append(nodes[current])
                continue
            if current in seen or current not in nodes:
                continue
            seen.add(current)
            stack.append((current, True))
            for t in reversed(nodes[current].input):
                stack.append((node_of(t), False))

    for n in graph_def.node:
        visit(n.name)
    return order


def _dense(position: int, node: Any, current: str, constant: Any, refuse: Any,
           permutation: np.ndarray | None = None) -> _Pending:
    """A ``MatMul`` unit; after a channels-first flatten (``permutation``) its canonical rows are the stored ones in
    the canonical (channels-last) flatten order."""
    if node.attr["transpose_a"].b:
        raise refuse("MatMul with transpose_a transposes the layer's input: not a dense layer")
    weight = constant(node.input[1])
    if tensor(node.input[0]) != current or weight is None:
        raise refuse("multiplies by a computed tensor, not a constant weight")
    if weight.dtype not in DTYPES or weight.ndim != 2:
        raise refuse(f"a weight of dtype {weight.dtype}, shape {weight.shape}: the suite judges "
                     f"{', '.join(DTYPES.values())} 2-D weights")
    W = weight.T.copy() if node.attr["transpose_b"].b else weight.copy()
    if permutation is not None:
        if W.shape[0] != len(permutation):
            raise refuse(f"takes {W.shape[0]} features, but the flatten before it gives {len(permutation)}")
        W = W[permutation]
    return _Pending(position, current, [node], W, weight, ops="MatMul", permutation=permutation)


def _activation(act_nodes: list[Any]) -> str:
    """The activation of the ops after a dense unit (``Identity``/``IdentityN``, Keras' custom-gradient wrappers,
    left out); ``KeyError`` when they are none the suite knows."""
    ops = tuple(n.op for n in act_nodes if n.op not in ("Identity", "IdentityN"))
    if not ops:
        return "linear"
    if ops in (("Sigmoid", "Mul"), ("Mul", "Sigmoid", "Mul")):  # x * sigmoid(x), Keras' with sigmoid(1 * x)
        return "silu"
    if len(ops) != 1:
        raise KeyError("+".join(ops))
    node = next(n for n in act_nodes if n.op == ops[0])
    if node.op in _SINGLE:
        return _SINGLE[node.op]
    if node.op == "Elu":
        return "elu"
    if node.op == "LeakyRelu":
        return activation_name("leaky_relu", float(str(np.float32(node.attr["alpha"].f))))
    raise KeyError(node.op)


def _close(p: _Pending, context: _Context) -> DenseUnit:
    source = context.model.source
    try:
        act = _activation(p.act_nodes)
    except KeyError as exc:
        first = p.act_nodes[0]
        scaled = [n for n in p.act_nodes if any(context.constant(t) is not None for t in n.input)]
        if [n.op for n in scaled] in (["Mul", *ADDS[i:i + 1]] for i in range(len(ADDS))):
            raise ModelNotSupported(source, scaled[0].name, scaled[0].op, None,
                                    folded_batch_norm(p.ops, "onnx2tf")) from None
        raise ModelNotSupported(source, first.name, first.op, None,
                                f"the op pattern {exc.args[0]} after the {p.ops} is not an activation the suite "
                                "knows") from None
    act_source = "none" if not p.act_nodes else "+".join(n.op for n in p.act_nodes) + f" {p.act_nodes[0].name!r}"
    unit = p.nodes + p.act_nodes
    dtype = p.W.dtype if p.W.size else context.dtype
    if dtype not in DTYPES:
        raise ModelNotSupported(source, unit[0].name, unit[0].op, p.index, f"computes in {dtype}: the suite judges "
                                f"{', '.join(DTYPES.values())} graphs")
    fed_shape = (p.in_shape[-1], *p.in_shape[:-1]) if p.fed_channels_first else p.in_shape or (p.W.shape[0],)
    feeds = p.feeds or dtype
    fed = [(p.input, feeds, fed_shape)] if not p.skip else [(t, feeds, p.out_shape) for t in (p.input, p.skip)]
    function = _function(context.nodes, [n.name for n in unit], f"{unit[-1].name}:0", *fed)

    rows = None if p.permutation is None else np.argsort(p.permutation)  # canonical features in the stored order
    flat = flatten_permutation(p.in_shape) if p.channels_first else None  # channels-first features made canonical

    unremapped = p.ops == "+".join(LAYER_NORM_SUB_OPS)

    def once(x: np.ndarray) -> np.ndarray:
        if p.skip:  # a residual Add: the canonical [branch, skip] split into its two placeholders
            return function(*(tf.constant(np.ascontiguousarray(part, dtype=feeds))
                              for part in p.layer_kind.split(np.asarray(x)))).numpy()
        if not unremapped:
            return function(tf.constant(np.ascontiguousarray(x, dtype=feeds))).numpy()
        remapping = tf.config.optimizer.get_experimental_options().get("remapping", True)
        tf.config.optimizer.set_experimental_options({"remapping": False})  # see LAYER_NORM_SUB_OPS
        try:
            return function(tf.constant(np.ascontiguousarray(x, dtype=feeds))).numpy()
        finally:
            tf.config.optimizer.set_experimental_options({"remapping": remapping})

    def run(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x) if rows is None else np.asarray(x)[:, rows]
        x = np.moveaxis(x, -1, 1) if p.fed_channels_first else x
        y = np.concatenate([once(x[i:i + 1]) for i in range(len(x))]) if p.per_sample and len(x) else once(x)
        return y if flat is None else y[:, flat]

    dense = p.layer_kind is DENSE and p.permutation is None and not p.in_shape  # a dense chain's: its width alone
    unit = DenseUnit(FRAMEWORK, p.name or unit[0].name, f"{source} {p.ops}", p.index, p.W, p.b, p.native, act,
                     act_source, DTYPES[dtype] if p.W.size else "", run, layer_kind=p.layer_kind,
                     in_shape=() if dense else p.in_shape or (p.W.shape[0],),
                     out_shape=() if dense else p.out_shape or (p.W.shape[1],))
    return unit if p.flatten_order is None else in_flatten_order(unit, p.flatten_order)


def _function(nodes: dict[str, Any], roots: list[str], output: str,
              *fed: tuple[str, np.dtype, tuple[int, ...]]) -> Any:
    """The nodes ``roots`` and everything they read (constants, a ``Reshape`` target's ``Shape``), copied into a
    graph of their own, control inputs dropped; ``fed``: the tensors replaced by placeholders ``(None, *shape)`` of
    the dtype, the unit's inputs (a residual Add's two operands; none: a computation of constants alone)."""
    graph_def = tf.compat.v1.GraphDef()
    placeholders = {}  # a fed tensor: its placeholder's tensor
    for k, (fed_tensor, dtype, shape) in enumerate(fed):
        placeholder = graph_def.node.add()
        placeholder.name, placeholder.op = "unit_input" if k == 0 else f"unit_input_{k}", "Placeholder"
        placeholder.attr["dtype"].type = tf.as_dtype(dtype).as_datatype_enum
        placeholder.attr["shape"].shape.CopyFrom(tf.TensorShape([None, *shape]).as_proto())
        placeholders[tensor(fed_tensor)] = f"{placeholder.name}:0"
    feed = fed[0][0] if fed else None
    wanted, copied = list(roots), set()
    while wanted:
        name = wanted.pop()
        if name in copied or name not in nodes:
            continue
        copied.add(name)
        copy = graph_def.node.add()
        copy.CopyFrom(nodes[name])
        del copy.input[:]
        copy.input.extend(placeholders.get(tensor(t)) or ("unit_input:0" if copy.op == "Shape" and feed is not None
                                                           else t)
                          for t in nodes[name].input if not t.startswith("^"))  # a Shape's batch: the unit's input's
        copy.attr.pop("_output_shapes", None)  # shapes are inferred again from the placeholder's free batch axis
        wanted += [node_of(t) for t in copy.input if t not in placeholders.values()]
    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
    feeds = [wrapped.graph.get_tensor_by_name(t) for t in placeholders.values()]
    return wrapped.prune(feeds if len(feeds) != 1 else feeds[0], wrapped.graph.get_tensor_by_name(output))
