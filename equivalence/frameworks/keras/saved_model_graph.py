"""Read a TensorFlow SavedModel (a folder, or what ``tf.saved_model.load`` returns) into dense units, and run each
on TensorFlow.

The serving signature's function is frozen (``convert_variables_to_constants_v2``: variables become ``Const``
nodes, called functions are inlined) and its graph read as a graph: a dense unit is a ``MatMul`` (its
``transpose_b`` read) of the chain's tensor by a constant, then optionally a ``Mul`` by the constant 1 (onnx2tf
writes a ``Gemm``'s ``alpha`` so), then a ``BiasAdd``/``AddV2``/``Add`` of a constant bias, then the
activation's ops (``Relu``, ``Sigmoid``, ``Sigmoid``+``Mul`` for SiLU...). ``Identity`` and ``Reshape`` between
units are skipped; anything else or a branch is refused with the op's name, type and position.

Each unit runs where the model lives: its own ``NodeDef``s and the constants they read, copied into a graph of
their own whose input is a placeholder ``(None, in)``, imported and pruned by ``tf.compat.v1.wrap_function``.
The units' label is ``keras_graph``: TensorFlow's kernels in a graph, as Keras' ``tf.function`` runs them, so
the named differences of TensorFlow's ops (flushed subnormals) apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from equivalence.core.activations import activation_name
from equivalence.core.walk import DenseUnit, ModelNotSupported, check_chain
from equivalence.frameworks.graph_kinds import not_read_yet

FRAMEWORK = "keras_graph"
FORM = "saved_model"
ADDS = ("BiasAdd", "AddV2", "Add")
PASS = ("Identity", "Reshape", "IdentityN")
_SINGLE = {"Relu": "relu", "Relu6": "relu6", "Sigmoid": "sigmoid", "Tanh": "tanh", "Selu": "selu",
           "Softplus": "softplus", "Softsign": "softsign", "Softmax": "softmax", "LogSoftmax": "log_softmax"}
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


def _tensor(name: str) -> str:
    name = name.lstrip("^")
    return name if ":" in name else f"{name}:0"


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


def walk(model: Any) -> list[DenseUnit]:
    """The dense units of a SavedModel's serving function in execution order; ``ModelNotSupported`` names what
    cannot be judged."""
    if not isinstance(model, SavedModelGraph):
        model = load_model(model)
    nodes = {n.name: n for n in model.graph_def.node}

    def constant(tensor: str) -> np.ndarray | None:
        node = nodes.get(_tensor(tensor).rsplit(":", 1)[0])
        while node is not None and node.op == "Identity":
            node = nodes.get(_tensor(node.input[0]).rsplit(":", 1)[0])
        if node is None or node.op != "Const":
            return None
        return tf.make_ndarray(node.attr["value"].tensor)

    order = _topological(model.graph_def)
    current = model.input
    units: list[DenseUnit] = []
    pending: _Pending | None = None
    for position, node in enumerate(order):
        if node.op in ("Const", "Placeholder", "NoOp") or constant(f"{node.name}:0") is not None:
            continue
        dynamic = [_tensor(t) for t in node.input if not t.startswith("^") and constant(t) is None]

        def refuse(problem: str, node: Any = node, position: int = position) -> ModelNotSupported:
            return ModelNotSupported(model.source, node.name, node.op, position, problem)

        out = f"{node.name}:0"
        if pending is not None and pending.act_nodes:
            inside = {pending.pre} | {f"{n.name}:0" for n in pending.act_nodes}
            if node.op not in ("MatMul", "Reshape") and dynamic and set(dynamic) <= inside:
                pending.act_nodes.append(node)  # the activation's next op (x * sigmoid(x): two)
                current = out
                continue
            units.append(_close(pending, model, nodes))
            pending = None
        if dynamic != [current]:
            raise refuse(f"a branch: it takes {len(dynamic)} computed tensors, but should take the previous layer's "
                         "output alone (residual connections and concatenations are not judged)")
        if node.op == "MatMul":
            if pending is not None:
                units.append(_close(pending, model, nodes))
            pending = _dense(position, node, current, constant, refuse)
        elif node.op == "Mul" and pending is not None and pending.b is None and len(pending.nodes) == 1:
            scale = next(constant(t) for t in node.input if constant(t) is not None)
            if np.size(scale) != 1 or float(np.asarray(scale).reshape(-1)[0]) != 1.0:
                raise refuse(f"scales the MatMul by {scale}: the suite judges dense layers (a scale of 1, as onnx2tf "
                             "writes a Gemm's alpha, is read as none)")
            pending.nodes.append(node)
        elif node.op in ADDS and pending is not None and pending.b is None:
            bias = next(constant(t) for t in node.input if constant(t) is not None)
            if bias.size != pending.W.shape[1]:
                raise refuse(f"adds a constant of shape {bias.shape}, but a bias of {pending.W.shape[1]} values "
                             "should follow the MatMul")
            pending.b = bias.reshape(-1).astype(pending.W.dtype)
            pending.nodes.append(node)
        elif node.op in PASS:
            if pending is not None and node.op != "Identity":
                units.append(_close(pending, model, nodes))
                pending = None
        elif pending is None or not_read_yet(node.op):
            raise refuse(not_read_yet(node.op) or "not a MatMul, and before any: the suite judges dense layers and "
                         "their activations")
        else:
            pending.pre, pending.act_nodes = current, [node]
        current = out
    if pending is not None:
        units.append(_close(pending, model, nodes))
    if _tensor(model.output) != current and not _same_through_identity(model.output, current, nodes):
        raise ModelNotSupported(model.source, model.output, "output", None,
                                "the signature's output is not the end of its single chain of ops")
    return check_chain(units, model.source)


def _same_through_identity(output: str, current: str, nodes: dict[str, Any]) -> bool:
    node = nodes.get(_tensor(output).rsplit(":", 1)[0])
    while node is not None and node.op == "Identity":
        if _tensor(node.input[0]) == current:
            return True
        node = nodes.get(_tensor(node.input[0]).rsplit(":", 1)[0])
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
                stack.append((_tensor(t).rsplit(":", 1)[0], False))

    for n in graph_def.node:
        visit(n.name)
    return order


def _dense(position: int, node: Any, current: str, constant: Any, refuse: Any) -> _Pending:
    if node.attr["transpose_a"].b:
        raise refuse("MatMul with transpose_a transposes the layer's input: not a dense layer")
    weight = constant(node.input[1])
    if _tensor(node.input[0]) != current or weight is None:
        raise refuse("multiplies by a computed tensor, not a constant weight")
    if weight.dtype not in DTYPES or weight.ndim != 2:
        raise refuse(f"a weight of dtype {weight.dtype}, shape {weight.shape}: the suite judges "
                     f"{', '.join(DTYPES.values())} 2-D weights")
    W = weight.T.copy() if node.attr["transpose_b"].b else weight.copy()
    return _Pending(position, current, [node], W, weight)


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


def _close(p: _Pending, model: SavedModelGraph, nodes: dict[str, Any]) -> DenseUnit:
    try:
        act = _activation(p.act_nodes)
    except KeyError as exc:
        first = p.act_nodes[0]
        raise ModelNotSupported(model.source, first.name, first.op, None,
                                f"the op pattern {exc.args[0]} after the MatMul is not a dense layer's activation the "
                                "suite knows") from None
    act_source = "none" if not p.act_nodes else "+".join(n.op for n in p.act_nodes) + f" {p.act_nodes[0].name!r}"
    unit = p.nodes + p.act_nodes
    function = _unit_function(model, nodes, unit, p.input, f"{unit[-1].name}:0", p.W)
    dtype = DTYPES[p.W.dtype]

    def run(x: np.ndarray) -> np.ndarray:
        return function(tf.constant(np.ascontiguousarray(x, dtype=p.W.dtype))).numpy()

    kind = f"{model.source} " + "+".join(n.op for n in p.nodes if n.op in ("MatMul", *ADDS))
    return DenseUnit(FRAMEWORK, p.nodes[0].name, kind, p.index, p.W, p.b, p.native, act, act_source, dtype, run)


def _unit_function(model: SavedModelGraph, nodes: dict[str, Any], unit: list[Any], input_tensor: str,
                   output: str, W: np.ndarray) -> Any:
    """The unit's own nodes and the constants they read, in a graph of their own fed by a placeholder."""
    graph_def = tf.compat.v1.GraphDef()
    placeholder = graph_def.node.add()
    placeholder.name, placeholder.op = "unit_input", "Placeholder"
    placeholder.attr["dtype"].type = tf.as_dtype(W.dtype).as_datatype_enum
    placeholder.attr["shape"].shape.CopyFrom(tf.TensorShape([None, W.shape[0]]).as_proto())
    wanted: list[str] = []
    for node in unit:
        wanted += [_tensor(t).rsplit(":", 1)[0] for t in node.input if _tensor(t) != input_tensor]
    copied = {n.name for n in unit}
    while wanted:
        name = wanted.pop()
        if name in copied or name not in nodes:
            continue
        copied.add(name)
        copy = graph_def.node.add()
        copy.CopyFrom(nodes[name])
        del copy.input[:]  # a constant's control inputs (the caller's ordering) are not the unit's
        copy.input.extend(t for t in nodes[name].input if not t.startswith("^"))
        wanted += [_tensor(t).rsplit(":", 1)[0] for t in copy.input]
    for node in unit:
        copy = graph_def.node.add()
        copy.CopyFrom(node)
        del copy.input[:]
        copy.input.extend("unit_input:0" if _tensor(t) == input_tensor else t for t in node.input
                          if not t.startswith("^"))
    for node in graph_def.node:
        node.attr.pop("_output_shapes", None)  # shapes are inferred again from the placeholder's free batch axis
    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
    return wrapped.prune(wrapped.graph.get_tensor_by_name("unit_input:0"), wrapped.graph.get_tensor_by_name(output))
