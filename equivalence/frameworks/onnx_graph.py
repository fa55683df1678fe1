"""Read an ONNX graph (a ``ModelProto`` or a ``.onnx`` file) into dense units, and run each on ONNX Runtime.

What converters emit is read as a graph, never as a model class: a dense unit is a ``MatMul`` or a ``Gemm``
(its ``transB`` read; ``alpha``/``beta`` other than 1 refused) on the chain's tensor and a constant weight,
then an ``Add`` of a constant bias (``MatMul+Add``: the same unit as a ``Gemm`` with its ``C``), then the
nodes of its activation: one op (``Relu``, ``Gelu``, ``Softmax``...) or the decompositions exporters write
(``Sigmoid``+``Mul`` for SiLU, ``Softplus``+``Tanh``+``Mul`` for Mish, ``Abs``+``Add``+``Div`` for softsign,
``Clip(0, 6)`` for relu6, the ``Erf`` form of the exact GELU). Weights are the initializers and ``Constant``
nodes. ``Identity``, ``Dropout``, ``Flatten`` and ``Reshape`` between units are skipped; any other op, a
branch, or a second input is refused with the node's name, op and index in ``graph.node``.

Each unit runs where the model lives: its own nodes, cut out of a copy of the graph into a graph of their
own (input the tensor feeding the ``MatMul``, output the activation's, the batch axis left free), in an ORT
CPU session. The units' outputs are those intermediate tensors of the user's graph, computed by its nodes
with its weights; the user's ``ModelProto`` is never modified. The label of the units is the ``ort``
framework's, so its named differences (``equivalence.core.known_differences``) apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from equivalence.core.activations import activation_name
from equivalence.core.walk import DenseUnit, ModelNotSupported, check_chain
from equivalence.frameworks.graph_kinds import not_read_yet
from equivalence.frameworks.ort_errors import ORT_ERRORS, refusal

FRAMEWORK = "ort"
"""The label of the units: ORT runs them, and the ``ort`` entries of the named differences apply."""
DENSE_OPS = ("MatMul", "Gemm")
SKIPPED = ("Identity", "Dropout", "Flatten", "Reshape")
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
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute:
            values[node.output[0]] = np.asarray(helper.get_attribute_value(node.attribute[0]) if
                                                node.attribute[0].name != "value" else
                                                numpy_helper.to_array(node.attribute[0].t))
    return values


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _f32(value: float) -> float:
    """A float attribute as written (ONNX stores float32: 0.01 reads 0.009999999776482582)."""
    return float(str(np.float32(value)))


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


def _name(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


def walk(model: Any) -> list[DenseUnit]:
    """The dense units of an ONNX graph in execution order; ``ModelNotSupported`` names what cannot be judged."""
    if isinstance(model, (str, Path)):
        model = load_model(model)
    if not isinstance(model, onnx.ModelProto):
        raise ModelNotSupported("onnx", "model", type(model).__name__, None, "is not an onnx.ModelProto")
    graph = model.graph
    consts = _constants(graph)
    inputs = [i.name for i in graph.input if i.name not in consts]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ModelNotSupported("onnx", graph.name or "graph", "graph", None,
                                f"takes {len(inputs)} inputs and gives {len(graph.output)} outputs; the suite judges "
                                "a model of one input and one output")
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(graph.node):
        for t in node.input:
            consumers.setdefault(t, []).append(index)
    current = inputs[0]
    units: list[DenseUnit] = []
    pending: _Pending | None = None
    for index, node in enumerate(graph.node):
        if node.op_type == "Constant":
            continue
        dynamic = [t for t in node.input if t and t not in consts]

        def refuse(problem: str, node: onnx.NodeProto = node, index: int = index) -> ModelNotSupported:
            return ModelNotSupported("onnx", _name(node, index), node.op_type, index, problem)

        if pending is not None and pending.act_nodes is not None:
            inside = {pending.pre} | {o for _, n in pending.act_nodes for o in n.output}
            if node.op_type not in DENSE_OPS + SKIPPED and dynamic and set(dynamic) <= inside:
                pending.act_nodes.append((index, node))  # the activation's next node (x * sigmoid(x): two)
                current = node.output[0]
                continue
            units.append(_close(pending, model, consts, consumers))
            pending = None
        if dynamic != [current]:
            raise refuse(f"a branch: it takes {', '.join(map(repr, dynamic)) or 'no tensor'}, but should take the "
                         f"previous layer's output {current!r} alone (residual connections and concatenations are "
                         "not judged)")
        if len(set(consumers.get(current, []))) > 1 and not (pending is not None and node.op_type not in DENSE_OPS):
            raise refuse(f"a branch: {current!r} feeds {len(set(consumers[current]))} nodes")
        if node.op_type in DENSE_OPS:
            if pending is not None:
                units.append(_close(pending, model, consts, consumers))
            try:
                pending = _dense(index, node, current, consts)
            except _Refuse as exc:
                raise refuse(str(exc)) from None
        elif node.op_type == "Add" and pending is not None and pending.b is None and pending.kind == "MatMul":
            bias = consts[next(t for t in node.input if t in consts)]
            if bias.size != pending.W.shape[1] or bias.ndim > 2:
                raise refuse(f"adds a constant of shape {bias.shape}, but a bias of {pending.W.shape[1]} values "
                             "should follow the MatMul")
            pending.b, pending.kind = bias.reshape(-1).astype(pending.W.dtype), "MatMul+Add"
            pending.nodes.append(node)
        elif node.op_type in SKIPPED:
            if pending is not None:
                units.append(_close(pending, model, consts, consumers))
                pending = None
        elif pending is None or not_read_yet(node.op_type):
            raise refuse(not_read_yet(node.op_type) or "not a MatMul or Gemm, and before any: the suite judges dense "
                         "layers (MatMul/Gemm, a bias Add) and their activations")
        else:
            pending.pre, pending.act_nodes = current, [(index, node)]
        current = node.output[0]
    if pending is not None:
        units.append(_close(pending, model, consts, consumers))
    if graph.output[0].name != current:
        raise ModelNotSupported("onnx", graph.output[0].name, "output", None,
                                f"the graph's output is not the end of its single chain of nodes ({current!r})")
    return check_chain(units, "onnx")


def _dense(index: int, node: onnx.NodeProto, current: str, consts: dict[str, np.ndarray]) -> _Pending:
    weights = [t for t in node.input[1:] if t]
    if node.input[0] != current or not weights or weights[0] not in consts:
        raise _Refuse("multiplies by a computed tensor, not a constant weight (initializer or Constant)")
    stored = consts[weights[0]]
    if stored.dtype not in DTYPES:
        raise _Refuse(f"weights in {stored.dtype}: the suite judges {', '.join(DTYPES.values())} ONNX graphs")
    if stored.ndim != 2:
        raise _Refuse(f"a weight of shape {stored.shape}: a dense layer's is 2-D")
    if node.op_type == "MatMul":
        return _Pending(index, node, current, stored.copy(), stored, "MatMul", [node])
    if _attr(node, "transA", 0):
        raise _Refuse("Gemm with transA=1 transposes the layer's input: not a dense layer")
    alpha, beta = _attr(node, "alpha", 1.0), _attr(node, "beta", 1.0)
    if alpha != 1.0 or (len(weights) > 1 and beta != 1.0):
        raise _Refuse(f"Gemm with alpha={alpha}, beta={beta}: the suite judges alpha=1, beta=1 (a dense layer)")
    trans_b = bool(_attr(node, "transB", 0))
    W = stored.T.copy() if trans_b else stored.copy()
    b = None
    if len(weights) > 1:
        if weights[1] not in consts:
            raise _Refuse("adds a computed tensor as its C, not a constant bias")
        b = consts[weights[1]]
        if b.size != W.shape[1]:
            raise _Refuse(f"a C of shape {b.shape}, but a bias of {W.shape[1]} values is a dense layer's")
        b = b.reshape(-1).astype(W.dtype)
    return _Pending(index, node, current, W, stored, f"Gemm(transB={int(trans_b)})", [node], b)


# --- activations: the op pattern after the dense op -----------------------------------------------

def _single(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> str:
    op = node.op_type
    fixed = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Softplus": "softplus", "Softsign": "softsign",
             "HardSwish": "hard_silu", "Mish": "mish"}
    if op in fixed:
        return fixed[op]
    if op == "Gelu":
        return "gelu" if _attr(node, "approximate", "none") == "none" else "gelu_tanh"
    if op in ("Elu", "Celu"):
        return activation_name(op.lower(), _f32(_attr(node, "alpha", 1.0)))
    if op == "LeakyRelu":
        return activation_name("leaky_relu", _f32(_attr(node, "alpha", 0.01)))
    if op in ("Softmax", "LogSoftmax"):
        return activation_name("softmax_axis" if op == "Softmax" else "log_softmax_axis", _attr(node, "axis", -1))
    if op == "Selu":
        alpha, gamma = _attr(node, "alpha", 1.67326319217681884765625), _attr(node, "gamma", 1.05070102214813232421875)
        if not (np.isclose(alpha, 1.6732632, rtol=1e-6) and np.isclose(gamma, 1.0507010, rtol=1e-6)):
            raise _Refuse(f"Selu(alpha={alpha}, gamma={gamma}): only the standard SELU constants are judged")
        return "selu"
    if op == "HardSigmoid":
        alpha, beta = _attr(node, "alpha", 0.2), _attr(node, "beta", 0.5)
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


def _close(p: _Pending, model: onnx.ModelProto, consts: dict[str, np.ndarray],
           consumers: dict[str, list[int]]) -> DenseUnit:
    act_nodes = p.act_nodes or []
    first_index, first = act_nodes[0] if act_nodes else (p.index, p.dense)
    try:
        act = _activation(p, consts)
    except _Refuse as exc:
        raise ModelNotSupported("onnx", _name(first, first_index), first.op_type, first_index, str(exc)) from None
    except KeyError as exc:
        ops = exc.args[0]
        raise ModelNotSupported("onnx", _name(first, first_index), first.op_type, first_index,
                                f"the op pattern {ops} after the {p.kind} is not a dense layer's activation the "
                                "suite knows (it judges MatMul/Gemm, a bias Add, and one activation)") from None
    nodes = p.nodes + [n for _, n in act_nodes]
    output = nodes[-1].output[0]
    own = {i for i, _ in act_nodes}
    for i, node in act_nodes[:-1]:
        outside = set(consumers.get(node.output[0], [])) - own
        if outside:
            raise ModelNotSupported("onnx", _name(node, i), node.op_type, i,
                                    f"a branch: its output also feeds node {min(outside)}, outside the activation")
    outside = set(consumers.get(p.pre, [])) - own if act_nodes else set()
    if outside:
        raise ModelNotSupported("onnx", _name(first, first_index), first.op_type, first_index,
                                f"a branch: the {p.kind}'s output also feeds node {min(outside)}")
    dtype = DTYPES[p.W.dtype]
    name = _name(p.dense, p.index)
    act_source = "none" if not act_nodes else \
        f"{'+'.join(n.op_type for n in nodes[len(p.nodes):])} node{'s' if len(act_nodes) > 1 else ''} " \
        f"{', '.join(str(i) for i, _ in act_nodes)}"
    session = _session(model, nodes, p.input, output, p.W.shape, dtype, name, p.index)
    return DenseUnit(FRAMEWORK, name, f"onnx {p.kind}", p.index, p.W, p.b, p.native, act, act_source, dtype,
                     lambda x, s=session, d=p.W.dtype: s.run(None, {"x": np.ascontiguousarray(x, dtype=d)})[0])


def _session(model: onnx.ModelProto, nodes: Sequence[onnx.NodeProto], input_name: str, output: str,
             shape: tuple[int, int], dtype: str, name: str, index: int) -> Any:
    """An ORT session of ``nodes`` alone, cut out of the graph: input ``x`` (batch, in), output (batch, out)."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    needed = {t for n in nodes for t in n.input if t}
    initializers = [init for init in model.graph.initializer if init.name in needed]
    constants = [n for n in model.graph.node if n.op_type == "Constant" and n.output[0] in needed]
    renamed = [onnx.NodeProto() for _ in nodes]
    for copy, node in zip(renamed, nodes):
        copy.CopyFrom(node)
        copy.input[:] = ["x" if t == input_name else t for t in copy.input]
    graph = helper.make_graph(constants + renamed, f"unit {name}",
                              [helper.make_tensor_value_info("x", elem, ["batch", shape[0]])],
                              [helper.make_tensor_value_info(output, elem, ["batch", shape[1]])], initializers)
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
