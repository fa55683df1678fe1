"""The layer kinds beyond dense in a SavedModel's frozen graph, read into the core's kinds
(``equivalence.core.spatial``, ``equivalence.core.norms``).

TensorFlow computes channels-last (``NHWC``), the canonical layout: a ``Conv2D`` filter is stored ``(kh, kw, in,
out)``, already canonical; ``padding`` ``SAME`` is TensorFlow's (the odd pad at the end), ``VALID`` none, ``EXPLICIT``
its ``explicit_paddings``. ``MaxPool`` and ``AvgPool`` (whose ``SAME`` averages the inputs only) are ``Pool``; a
``Reshape`` of a spatial tensor to ``(batch, features)`` (Keras' ``Flatten``: its target computed from ``Shape``,
``StridedSlice``, ``Pack``) is ``Flatten``, already in the canonical order. ``FusedBatchNormV3`` (inference) is
``BatchNorm``, and so are the ops Keras 3 writes for one: ``x * m + (beta - mean * m)`` with ``m = rsqrt(var +
epsilon) * gamma`` computed from the constants. The ops Keras 3 writes for a ``LayerNormalization`` (``Mean``,
``StopGradient``, ``SquaredDifference``, ``Mean``, ``AddV2``, ``Rsqrt``, ``Mul``, ``Mul``, ``Neg``, ``Mul``,
``AddV2``, ``AddV2``) are one ``LayerNorm`` unit, every wire checked. A graph does not record a BatchNorm's momentum
(it only matters in training): the kind's ``momentum`` is None, which no other's is compared against.

onnx2tf's SavedModel of a torch conv net adds a ``Transpose`` to channels-first before the ``Reshape`` of torch's
``Flatten`` (to ``[1, features]``: torch's export fixes the batch at 1), read with it as one flatten in torch's ``C,
H, W`` order; a ``Transpose`` that moves nothing, or the one of a channels-first input (``-kt``), read with the op it
leads into; a BatchNorm it could not fold into a conv as a ``Mul`` and an ``AddV2`` of per-channel constants,
read as ``ChannelAffine``; and torch's ``LayerNorm`` as tf_keras' ops (``LAYER_NORM_SUB_OPS``) or, exported below
opset 17, as the nine ONNX ops one by one (``LAYER_NORM_DECOMPOSED_OPS``), each one ``LayerNorm`` unit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from equivalence.core.folded import ChannelAffine
from equivalence.core.norms import BatchNorm, LayerNorm
from equivalence.core.spatial import Conv, Flatten, Pool
from equivalence.core.walk import Refused
from equivalence.frameworks.graph_kinds import KindRead, f32, tf_padding

KIND_OPS = ("Conv2D", "MaxPool", "AvgPool", "FusedBatchNormV3")
"""Ops that start a unit of another kind than dense (so do a ``Reshape`` of a spatial tensor, the ``Mul`` of a
BatchNorm written as ops and the ``Mean`` of a LayerNorm written as ops)."""
ADDS = ("BiasAdd", "AddV2", "Add")
LAYER_NORM_OPS = ("Mean", "StopGradient", "SquaredDifference", "Mean", "AddV2", "Rsqrt", "Mul", "Mul", "Neg", "Mul",
                  "AddV2", "AddV2")
"""Keras 3's LayerNormalization as ops."""
LAYER_NORM_SUB_OPS = ("Mean", "StopGradient", "SquaredDifference", "Mean", "AddV2", "Rsqrt", "Mul", "Mul", "Mul",
                      "Sub", "AddV2")
"""tf_keras' LayerNormalization as ops: onnx2tf writes an ONNX ``LayerNormalization`` (opset 17 on) so. Frozen into a
unit of its own (gamma and beta constants, not the SavedModel's variables), TensorFlow 2.21's grappler remapper with
oneDNN on fuses these ops into one ``_MklLayerNorm`` built without the graph's epsilon, which computes with 0.001
(errors ~600x the bound on features of variance ~0.1: ``tf_onednn_layer_norm_fusion_epsilon_0_001``); the
SavedModel's own signature computes with its epsilon, and so does the unit with the remapper off: it runs so, as the
model computes."""
LAYER_NORM_DECOMPOSED_OPS = ("Mean", "Sub", "Pow", "Mean", "AddV2", "Sqrt", "RealDiv", "Mul", "AddV2")
"""The ONNX form of a LayerNorm below opset 17, as onnx2tf writes it op by op."""


def tensor(name: str) -> str:
    """A ``NodeDef`` input as a tensor name (``node:0``), its control marker dropped."""
    name = name.lstrip("^")
    return name if ":" in name else f"{name}:0"


def node_of(name: str) -> str:
    return tensor(name).rsplit(":", 1)[0]


@dataclass(frozen=True)
class Graph:
    """What reading a kind needs of the frozen graph: its nodes by name, each computed tensor's consumers (the
    chain's nodes, not the constants' or the shapes'), and the value of a tensor computed from constants alone."""

    nodes: dict[str, Any]
    consumers: dict[str, list[Any]]
    constant: Callable[[str], np.ndarray | None]
    batch: int | None = None  # the input's batch where the graph fixes it (onnx2tf's, from torch's export: 1)
    input_transpose: str | None = None  # the Transpose making a channels-first input channels-last (onnx2tf -kt)

    def producer(self, name: str) -> Any:
        """The node giving tensor ``name``, ``Identity`` nodes passed through."""
        node = self.nodes.get(node_of(name))
        while node is not None and node.op == "Identity":
            node = self.nodes.get(node_of(node.input[0]))
        return node

    def only(self, name: str, ops: tuple[str, ...], where: str) -> Any:
        found = [n for n in self.consumers.get(tensor(name), []) if n.op in ops]
        if len(found) != 1:
            raise Refused(f"{where}: {len(found)} {'/'.join(ops)} ops take {name!r}, one was expected")
        return found[0]


@dataclass(frozen=True)
class Read:
    """A kind's reading: its ``KindRead``, the chain's nodes it spans (in execution order: the last gives its output)
    and the ops matched, as the report names them."""

    kind: KindRead
    nodes: list[Any]
    ops: str
    channels_first: bool = False  # a flatten of the tensor made channels-first (torch's C, H, W order)
    per_sample: bool = False  # a flatten to the graph's fixed batch: the unit runs a sample at a time
    fed_channels_first: bool = False  # the unit starts at the Transpose of the graph's channels-first input


def starts(node: Any, graph: Graph, shape: tuple[int, ...] | None) -> bool:
    """Whether ``node`` starts a unit of another kind than dense."""
    if node.op in KIND_OPS or (node.op in ("Reshape", "Transpose") and shape is not None) or node.op == "Mean":
        return True
    return node.op == "Mul" and (any(_factor(t, graph) is not None for t in node.input)
                                 or _scale_and_shift(node, graph, shape) is not None)


def read_kind(node: Any, shape: tuple[int, ...] | None, graph: Graph) -> Read:
    """The layer starting at ``node`` on an input of canonical per-sample ``shape`` (None: 2-D); ``Refused`` naming
    what the suite does not judge."""
    if node.op == "Mean":
        return _layer_norm(node, shape, graph)
    if node.op == "Mul" and any(_factor(t, graph) is not None for t in node.input):
        return _batch_norm_ops(node, shape, graph)  # Keras': its four parameters in the constants' computation
    if node.op == "Mul" and (read := _scale_and_shift(node, graph, shape)) is not None:
        return read
    if node.op == "FusedBatchNormV3":
        return _fused_batch_norm(node, shape, graph)
    if shape is None:
        raise Refused(f"a {node.op} on a 2-D tensor: the suite judges it on (N, H, W, C)")
    if node.op == "Transpose":
        return _transpose(node, shape, graph)
    if node.op == "Reshape":
        kind, per_sample = _flatten(node, shape, graph)
        return Read(kind, [node], "Reshape", per_sample=per_sample)
    if len(shape) != 3 or node.attr["data_format"].s not in (b"", b"NHWC"):
        raise Refused(f"a {node.op} on a tensor of {len(shape) + 1} axes, data_format "
                      f"{node.attr['data_format'].s.decode() or 'NHWC'}: the suite judges it on (N, H, W, C)")
    if node.op == "Conv2D":
        return Read(_conv(node, shape, graph), [node], "Conv2D")
    size, strides = _window(node, "ksize"), _window(node, "strides")
    kind = Pool("max" if node.op == "MaxPool" else "avg", size, strides, _padding(node, shape, size, strides))
    return Read(KindRead.without_weights(kind, kind.output_shape(shape)), [node], node.op)


def _window(node: Any, name: str) -> tuple[int, int]:
    values = list(node.attr[name].list.i)
    if len(values) != 4 or values[0] != 1 or values[3] != 1:
        raise Refused(f"{name} {values}: the suite judges windows over the spatial axes alone ([1, h, w, 1])")
    return values[1], values[2]


def _padding(node: Any, shape: tuple[int, ...], kernel: tuple[int, int],
             strides: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    padding = node.attr["padding"].s.decode()
    if padding != "EXPLICIT":
        return tf_padding(padding, shape, kernel, strides)
    pads = list(node.attr["explicit_paddings"].list.i)
    if len(pads) != 8 or pads[:2] != [0, 0] or pads[6:] != [0, 0]:
        raise Refused(f"explicit_paddings {pads}: the suite judges padding of the spatial axes alone")
    return (pads[2], pads[3]), (pads[4], pads[5])


def _conv(node: Any, shape: tuple[int, ...], graph: Graph) -> KindRead:
    if set(node.attr["dilations"].list.i) - {1}:
        raise Refused(f"dilations {list(node.attr['dilations'].list.i)}: the suite judges none")
    native = graph.constant(node.input[1])
    if native is None or native.ndim != 4 or native.shape[2] != shape[-1]:
        raise Refused(f"a filter that is not a constant (kh, kw, in, out) on the input's {shape[-1]} channels: the "
                      "suite judges convolutions of one group by a constant filter")
    kernel, strides = (int(native.shape[0]), int(native.shape[1])), _window(node, "strides")
    kind = Conv(kernel, strides, _padding(node, shape, kernel, strides), int(native.shape[2]), int(native.shape[3]))
    return KindRead(kind, native.copy(), None, native, kind.output_shape(shape))


def _flatten(node: Any, shape: tuple[int, ...], graph: Graph) -> tuple[KindRead, bool]:
    """A flatten of all but the batch axis: a ``Reshape`` to a computed shape (Keras' ``(batch, -1)``, its output's
    shape checked as every unit's is), to a constant ``[-1, features]``, or to ``[1, features]`` where the graph fixes
    its input's batch at 1 (onnx2tf writes the batch of torch's export): then the unit runs a sample at a time, as
    the graph does."""
    size = int(np.prod(shape))
    target = graph.constant(node.input[1])
    values = None if target is None else [int(v) for v in target.reshape(-1)]
    per_sample = graph.batch == 1 and values == [1, size]
    if values is not None and values != [-1, size] and not per_sample:
        raise Refused(f"a Reshape to {values}: the suite judges a flatten to (batch, {size}) (shape [-1, {size}], or "
                      f"[1, {size}] where the graph's input fixes its batch at 1; this one's is "
                      f"{graph.batch or 'free'})")
    return KindRead.without_weights(Flatten(shape), None), per_sample


def _transpose(node: Any, shape: tuple[int, ...], graph: Graph) -> Read:
    """A ``Transpose`` of a spatial tensor, read with the op it leads into: onnx2tf writes one of ``perm [0, 1, 2,
    3]`` (nothing moved) before a conv, and one to channels-first (``[0, 3, 1, 2]``) before the ``Reshape`` of
    torch's ``Flatten``, so the features come in torch's ``C, H, W`` order (the graph reader permutes the next dense
    layer's rows to the canonical ``H, W, C``, as the torch walker permutes a ``Linear``'s). With the input kept
    channels-first (onnx2tf's ``-kt``), the graph's first op is a ``Transpose`` to channels-last (``[0, 2, 3, 1]``):
    read with the op after it, the unit fed channels-first."""
    perm = graph.constant(node.input[1])
    perm = None if perm is None else [int(v) for v in np.reshape(perm, -1)]
    rank = len(shape) + 1
    after = [n for n in graph.consumers.get(tensor(node.name), [])]
    if len(after) != 1:
        raise Refused(f"a Transpose (perm {perm}) whose output {len(after)} ops take: the suite reads one read with "
                      "the op it leads into")
    nxt = after[0]
    into_last = node.name == graph.input_transpose and perm == [0, *range(2, rank), 1]
    if (perm == list(range(rank)) or into_last) and nxt.op in KIND_OPS + ("Reshape",):
        inner = read_kind(nxt, shape, graph)
        return Read(inner.kind, [node, *inner.nodes], f"Transpose+{inner.ops}", inner.channels_first,
                    inner.per_sample, fed_channels_first=into_last)
    if perm == [0, rank - 1, *range(1, rank - 1)] and nxt.op == "Reshape":
        kind, per_sample = _flatten(nxt, shape, graph)
        return Read(kind, [node, nxt], "Transpose+Reshape", channels_first=True, per_sample=per_sample)
    raise Refused(f"a Transpose (perm {perm}) before a {nxt.op}: the suite reads a Transpose that moves nothing before "
                  "a layer, and one to channels-first before a flatten (torch's C, H, W order, as onnx2tf writes)")


def _parameters(graph: Graph, names: list[str], features: int, what: str) -> np.ndarray:
    """The constant rows ``names`` of a norm of ``features``, stacked; ``Refused`` when one is computed."""
    values = [graph.constant(n) for n in names]
    if any(v is None or v.size != features for v in values):
        raise Refused(f"{what} with parameters that are not constants of {features} values")
    return np.stack([np.asarray(v).reshape(-1) for v in values])


def _fused_batch_norm(node: Any, shape: tuple[int, ...] | None, graph: Graph) -> Read:
    if node.attr["is_training"].b or node.attr["data_format"].s not in (b"", b"NHWC"):
        raise Refused("a FusedBatchNormV3 in training or channels-first: the suite judges one at inference, NHWC")
    features = shape[-1] if shape is not None else int(np.size(graph.constant(node.input[1])))
    rows = _parameters(graph, list(node.input[1:5]), features, "a FusedBatchNormV3")
    kind = BatchNorm(features, f32(node.attr["epsilon"].f), None)
    return Read(KindRead(kind, rows.copy(), None, rows, shape), [node], "FusedBatchNormV3")


def _factor(name: str, graph: Graph) -> tuple[Any, str] | None:
    """A BatchNorm's factor ``rsqrt(var + epsilon) * gamma``, computed from constants: its ``Rsqrt`` node and the
    tensor of ``gamma``; None when ``name`` is not one."""
    if graph.constant(name) is None:
        return None
    node = graph.producer(name)
    if node is None or node.op != "Mul":
        return None
    for i, t in enumerate(node.input[:2]):
        rsqrt = graph.producer(t)
        if rsqrt is not None and rsqrt.op == "Rsqrt":
            return rsqrt, node.input[1 - i]
    return None


def _scale_and_shift(mul: Any, graph: Graph, shape: tuple[int, ...] | None) -> Read | None:
    """A ``Mul`` of the chain's tensor by one constant per channel, then an ``Add`` of another (onnx2tf writes a
    ``BatchNormalization`` it could not fold into a conv so: ``x * s + t``, its statistics folded into the two): the
    ``ChannelAffine`` kind; None when ``mul`` is not one. Not a ``Mul`` right after a ``MatMul`` (onnx2tf's
    ``Gemm`` ``alpha``)."""
    constants = [graph.constant(t) for t in mul.input[:2]]
    if sum(c is not None for c in constants) != 1:
        return None
    scale = next(c for c in constants if c is not None)
    source = graph.producer(next(t for t, c in zip(mul.input, constants) if c is None))
    adds = graph.consumers.get(tensor(mul.name), [])
    if source is None or source.op == "MatMul" or len(adds) != 1 or adds[0].op not in ADDS:
        return None
    offset = next((graph.constant(t) for t in adds[0].input[:2] if node_of(t) != mul.name), None)
    channels = shape[-1] if shape is not None else scale.size
    per_channel = [c is not None and c.size == channels and c.shape[-1:] == (channels,) and c.dtype.kind == "f"
                   for c in (scale, offset)]
    if not all(per_channel):
        return None
    W, b = scale.reshape(-1).copy(), offset.reshape(-1).astype(scale.dtype)
    kind = KindRead(ChannelAffine(channels), W, b, np.stack([W, b]), shape)
    return Read(kind, [mul, adds[0]], f"Mul+{adds[0].op}")


def _batch_norm_ops(mul: Any, shape: tuple[int, ...] | None, graph: Graph) -> Read:
    """``x * m + (beta - mean * m)``, ``m = rsqrt(var + epsilon) * gamma``: Keras 3's BatchNormalization."""
    factor = next(t for t in mul.input if _factor(t, graph) is not None)
    rsqrt, gamma = _factor(factor, graph)
    add = graph.producer(rsqrt.input[0])
    shift = graph.only(mul.name, ADDS, "a BatchNorm written as ops")
    sub = graph.producer(next((t for t in shift.input if node_of(t) != mul.name), ""))
    scaled = graph.producer(sub.input[1]) if sub is not None and sub.op == "Sub" else None
    wired = [add is not None and add.op in ADDS, sub is not None and sub.op == "Sub",
             scaled is not None and scaled.op == "Mul" and tensor(factor) in map(tensor, scaled.input),
             add is not None and any(_scalar(graph, t) for t in add.input[:2])]
    if not all(wired):
        raise Refused(f"a Mul by rsqrt(...) * gamma, but not wired as a BatchNorm's x * m + (beta - mean * m) "
                      f"(check {wired.index(False) + 1} of {len(wired)} fails): the suite does not read it")
    epsilon, variance = sorted(add.input[:2], key=lambda t: (np.size(graph.constant(t)), np.ndim(graph.constant(t))))
    mean = next(t for t in scaled.input if tensor(t) != tensor(factor))
    features = int(np.size(graph.constant(variance)))
    rows = _parameters(graph, [gamma, sub.input[0], mean, variance], features, "a BatchNorm")
    kind = BatchNorm(features, f32(float(graph.constant(epsilon))), None)
    ops = f"{mul.op}+{shift.op} (BatchNorm: {add.op}+Rsqrt+Mul+Mul+Sub of its parameters)"
    return Read(KindRead(kind, rows.copy(), None, rows, shape), [mul, shift], ops)


def _scalar(graph: Graph, name: str) -> bool:
    """Whether ``name`` is a constant of one value (an epsilon), computed from constants."""
    value = graph.constant(name) if name else None
    return value is not None and np.size(value) == 1


def token_layer_norm(mean: Any, graph: Graph) -> Read:
    """A LayerNorm over the features of a ``(batch, L, features)`` token sequence written as ops (``_layer_norm``),
    from its first ``Mean``: token by token, over the last of three axes."""
    return _layer_norm(mean, None, graph, rank=3)


def _layer_norm(mean: Any, shape: tuple[int, ...] | None, graph: Graph, *, rank: int = 2) -> Read:
    """A LayerNorm over the last axis of a 2-D input (of ``rank`` axes: 3, a token sequence) written as ops, every wire
    checked, the nodes in execution order: Keras' ``x * m + (beta - mean * m)``, ``m = rsqrt(variance + epsilon) *
    gamma`` (Keras 3 with a ``Neg`` and two adds, tf_keras, as onnx2tf writes an ONNX ``LayerNormalization``, with a
    ``Sub``), or the nine ops of the ONNX form below opset 17 onnx2tf writes one by one (``_layer_norm_decomposed``)."""
    if shape is not None:
        raise Refused("a Mean of a spatial tensor (a normalisation over more than the features): the suite judges a "
                      "LayerNorm over the last axis of (batch, features)")
    if not any(n.op == "StopGradient" for n in graph.consumers.get(tensor(mean.name), [])):
        return _layer_norm_decomposed(mean, graph, rank)
    x = tensor(mean.input[0])
    where = "a LayerNorm written as ops"
    stop = graph.only(mean.name, ("StopGradient",), where)
    squared = graph.only(stop.name, ("SquaredDifference",), where)
    variance = graph.only(squared.name, ("Mean",), where)
    add = graph.only(variance.name, ADDS, where)
    rsqrt = graph.only(add.name, ("Rsqrt",), where)
    factor = graph.only(rsqrt.name, ("Mul",), where)
    uses = [n for n in graph.consumers.get(tensor(factor.name), []) if n.op == "Mul"]
    negated = any(n.op == "Neg" for n in graph.consumers.get(tensor(mean.name), []))
    neg = graph.only(mean.name, ("Neg",), where) if negated else None
    centred = graph.only((neg or mean).name, ("Mul",), where)
    scaled = next((n for n in uses if n is not centred), None)
    shift = graph.only(centred.name, ADDS if negated else ("Sub",), where)  # beta + -mean * m, or beta - mean * m
    out = graph.only(shift.name, ADDS, where)
    wired = [*_over_the_features(graph, mean, variance, rank),
             list(map(tensor, squared.input)) == [x, tensor(stop.name)],
             scaled is not None and len(uses) == 2 and sorted(map(tensor, scaled.input)) == sorted(
                 [x, tensor(factor.name)]),
             sorted(map(tensor, out.input)) == sorted([tensor(scaled.name if scaled else ""), tensor(shift.name)]),
             {n.name for n in graph.consumers.get(x, [])} == {mean.name, squared.name, getattr(scaled, "name", "")},
             sorted(map(tensor, centred.input)) == sorted([tensor((neg or mean).name), tensor(factor.name)]),
             _scalar(graph, next((t for t in add.input if node_of(t) != variance.name), "")),
             {n.name for n in graph.consumers.get(tensor(mean.name), [])} == {stop.name, (neg or centred).name},
             negated or tensor(shift.input[1]) == tensor(centred.name)]
    if not all(wired):
        forms = "+".join(LAYER_NORM_OPS if negated else LAYER_NORM_SUB_OPS)
        raise Refused(f"the ops of a LayerNorm ({forms}), but wired otherwise (check {wired.index(False) + 1} of "
                      f"{len(wired)} fails): the suite does not read it")
    gamma = next(t for t in factor.input if node_of(t) != rsqrt.name)
    beta = next(t for t in shift.input if node_of(t) != centred.name)
    epsilon = next(t for t in add.input if node_of(t) != variance.name)
    nodes = [mean, stop, squared, variance, add, rsqrt, factor, scaled, *([neg] if neg else []), centred, shift, out]
    return _layer_norm_read(graph, gamma, beta, epsilon, nodes)


def _over_the_features(graph: Graph, mean: Any, variance: Any, rank: int = 2) -> list[bool]:
    """A LayerNorm's two ``Mean`` nodes (the mean, the variance) as its first two wire checks: over the last axis of
    an input of ``rank`` axes (-1 or ``rank - 1``), and keeping it (``keep_dims``)."""
    axes = [graph.constant(n.input[1]) for n in (mean, variance)]
    return [all(a is not None and [int(v) for v in np.reshape(a, -1)] in ([-1], [rank - 1]) for a in axes),
            mean.attr["keep_dims"].b and variance.attr["keep_dims"].b]


def _layer_norm_read(graph: Graph, gamma: str, beta: str, epsilon: str, nodes: list[Any]) -> Read:
    features = int(np.size(graph.constant(gamma)))
    rows = _parameters(graph, [gamma, beta], features, "a LayerNorm")
    kind = LayerNorm(features, f32(float(graph.constant(epsilon))))
    return Read(KindRead(kind, rows.copy(), None, rows, None), nodes, "+".join(n.op for n in nodes))


def _layer_norm_decomposed(mean: Any, graph: Graph, rank: int = 2) -> Read:
    """The ONNX form of a LayerNorm below opset 17 (torch's export writes ``ReduceMean``, ``Sub``, ``Pow`` 2,
    ``ReduceMean``, ``Add`` epsilon, ``Sqrt``, ``Div``, ``Mul`` gamma, ``Add`` beta), as onnx2tf writes it op by op
    (``LAYER_NORM_DECOMPOSED_OPS``): ``gamma (x - mean) / sqrt(var + epsilon) + beta``, every wire checked."""
    x = tensor(mean.input[0])
    where = "a LayerNorm written as ops (the ONNX form below opset 17)"
    centred = graph.only(mean.name, ("Sub",), where)
    power = graph.only(centred.name, ("Pow",), where)
    variance = graph.only(power.name, ("Mean",), where)
    add = graph.only(variance.name, ADDS, where)
    root = graph.only(add.name, ("Sqrt",), where)
    divided = graph.only(root.name, ("RealDiv",), where)
    scaled = graph.only(divided.name, ("Mul",), where)
    out = graph.only(scaled.name, ADDS, where)
    exponent = graph.constant(power.input[1])
    wired = [*_over_the_features(graph, mean, variance, rank),
             list(map(tensor, centred.input)) == [x, tensor(mean.name)],
             {n.name for n in graph.consumers.get(x, [])} == {mean.name, centred.name},
             tensor(power.input[0]) == tensor(centred.name) and exponent is not None and np.size(exponent) == 1
             and float(np.reshape(exponent, -1)[0]) == 2.0,
             {n.name for n in graph.consumers.get(tensor(centred.name), [])} == {power.name, divided.name},
             list(map(tensor, divided.input)) == [tensor(centred.name), tensor(root.name)],
             _scalar(graph, next((t for t in add.input if node_of(t) != variance.name), "")),
             graph.constant(next((t for t in scaled.input if node_of(t) != divided.name), "")) is not None,
             graph.constant(next((t for t in out.input if node_of(t) != scaled.name), "")) is not None]
    if not all(wired):
        raise Refused(f"the ops of a LayerNorm ({'+'.join(LAYER_NORM_DECOMPOSED_OPS)}), but wired otherwise (check "
                      f"{wired.index(False) + 1} of {len(wired)} fails): the suite does not read it")
    gamma = next(t for t in scaled.input if node_of(t) != divided.name)
    beta = next(t for t in out.input if node_of(t) != scaled.name)
    epsilon = next(t for t in add.input if node_of(t) != variance.name)
    return _layer_norm_read(graph, gamma, beta, epsilon, [mean, centred, power, variance, add, root, divided, scaled,
                                                          out])
