"""The layer kinds beyond dense in an ONNX graph, read into the core's kinds (``equivalence.core.spatial``,
``equivalence.core.norms``) in the canonical channels-last layout.

ONNX computes channels-first (``N, C, *spatial``), as torch does: a ``Conv`` weight is stored ``(out, in, *kernel)``
and becomes the canonical ``(*kernel, in, out)``; ``pads`` (``[begin..., end...]``) or ``auto_pad`` become explicit
``(before, after)`` pairs; a ``Flatten`` (``axis=1``) or a ``Reshape`` to ``(batch, features)`` of a spatial tensor
is the ``Flatten`` kind, in ONNX's channels-first order (the graph reader permutes the next dense layer's rows, as
the torch walker does). ``BatchNormalization`` (inference: ``training_mode=0``, one output) keeps ONNX's momentum,
which has Keras' meaning (the weight of the old average); its float32 ``epsilon`` and ``momentum`` are read as
written (``1e-05``, not ``9.99999974e-06``). ``LayerNormalization`` is read over the features of a 2-D input, as
the core judges it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper

from equivalence.core.folded import ChannelAffine
from equivalence.core.norms import BatchNorm, LayerNorm
from equivalence.core.spatial import Conv, Flatten, Pool, same_padding
from equivalence.core.walk import Refused
from equivalence.frameworks.graph_kinds import KindRead, f32

KIND_OPS = ("Conv", "MaxPool", "AveragePool", "BatchNormalization", "LayerNormalization")
"""Ops that start a unit of another kind than dense."""
FLATTEN_OPS = ("Flatten", "Reshape")
"""Ops that flatten a spatial tensor into a unit of the ``Flatten`` kind (between dense units: skipped)."""


def attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def channels_first(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A canonical per-sample shape ``(*spatial, C)`` as ONNX holds it, ``(C, *spatial)``."""
    return (shape[-1], *shape[:-1]) if len(shape) > 1 else shape


def input_shape(value: onnx.ValueInfoProto, *, channels_last: bool) -> tuple[int, ...] | None:
    """The graph input's canonical per-sample shape when it is spatial (``N, C, *spatial`` as ONNX computes, or
    ``N, *spatial, C`` where a converter's ``Transpose`` makes it channels-first: ``channels_last``), None for a
    2-D input; ``Refused`` when a spatial input's sizes are not fixed."""
    dims = value.type.tensor_type.shape.dim
    if len(dims) <= 2:
        return None
    sizes = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
    if any(s is None or s < 1 for s in sizes):
        raise Refused(f"a spatial input of shape {[d.dim_param or d.dim_value for d in dims]}: the suite needs its "
                      "per-sample sizes fixed (padding and flatten order depend on them)")
    return tuple(sizes) if channels_last else (*sizes[1:], sizes[0])


def transpose_direction(node: onnx.NodeProto, rank: int) -> str | None:
    """``"first"`` for a ``Transpose`` of a rank-``rank`` tensor from channels-last to ONNX's channels-first
    (``perm [0, 3, 1, 2]``), ``"last"`` for the way back (``[0, 2, 3, 1]``): the pair converters from Keras
    (tf2onnx) put around a conv; else None."""
    perm = list(attr(node, "perm", []))
    if perm == [0, rank - 1, *range(1, rank - 1)]:
        return "first"
    return "last" if perm == [0, *range(2, rank), 1] else None


def read_kind(node: onnx.NodeProto, consts: dict[str, np.ndarray], shape: tuple[int, ...] | None,
              computed: frozenset[str] = frozenset()) -> KindRead:
    """The layer ``node`` computes on an input of canonical per-sample ``shape`` (None: 2-D); ``Refused`` naming
    what the suite does not judge. ``computed``: tensors computed from the chain's shape (a ``Reshape``'s target)."""
    op = node.op_type
    if op in FLATTEN_OPS:
        return _flatten(node, consts, shape, computed)
    if op in ("BatchNormalization", "LayerNormalization"):
        return _norm(node, consts, shape)
    if shape is None:
        raise Refused(f"a {op} on a 2-D tensor: the suite judges it on a spatial input (N, C, *spatial)")
    rank = len(shape) - 1
    if op == "Conv":
        return _conv(node, consts, shape, rank)
    return _pool(node, shape, rank)


def _padding(node: onnx.NodeProto, shape: tuple[int, ...], kernel: tuple[int, ...],
             strides: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    rank = len(kernel)
    auto = attr(node, "auto_pad", "NOTSET")
    if auto == "VALID":
        return ((0, 0),) * rank
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [same_padding(n, k, s) for n, k, s in zip(shape[:-1], kernel, strides)]
        return tuple(p if auto == "SAME_UPPER" else p[::-1] for p in pads)
    pads = list(attr(node, "pads", [0] * 2 * rank))
    return tuple((int(pads[i]), int(pads[rank + i])) for i in range(rank))


def _plain(node: onnx.NodeProto, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Kernel and strides of a conv or pooling node; refused with dilation or ceil_mode."""
    dilations = list(attr(node, "dilations", [1] * rank))
    if set(dilations) != {1} or attr(node, "ceil_mode", 0):
        raise Refused(f"dilations {dilations}, ceil_mode {attr(node, 'ceil_mode', 0)}: the suite judges no dilation "
                      "and floor rounding")
    kernel = tuple(int(k) for k in attr(node, "kernel_shape", []))
    return kernel, tuple(int(s) for s in attr(node, "strides", [1] * rank))


def _conv(node: onnx.NodeProto, consts: dict[str, np.ndarray], shape: tuple[int, ...], rank: int) -> KindRead:
    weights = [t for t in node.input[1:] if t]
    if not weights or any(t not in consts for t in weights):
        raise Refused("convolves with a computed tensor, not a constant weight and bias (initializers)")
    if attr(node, "group", 1) != 1:
        raise Refused(f"group {attr(node, 'group', 1)}: the suite judges convolutions of one group")
    native = consts[weights[0]]
    if native.ndim != rank + 2 or native.shape[1] != shape[-1]:
        raise Refused(f"a weight of shape {native.shape} on an input of {shape[-1]} channels and {rank} spatial "
                      "axes: (out, in, *kernel) expected")
    kernel, strides = _plain(node, rank)
    kernel = kernel or tuple(native.shape[2:])
    kind = Conv(kernel, strides, _padding(node, shape, kernel, strides), int(native.shape[1]), int(native.shape[0]))
    b = consts[weights[1]].reshape(-1).astype(native.dtype) if len(weights) > 1 else None
    W = native.transpose(*range(2, rank + 2), 1, 0).copy()
    return KindRead(kind, W, b, native, kind.output_shape(shape))


def _pool(node: onnx.NodeProto, shape: tuple[int, ...], rank: int) -> KindRead:
    if len([o for o in node.output if o]) > 1:
        raise Refused("a MaxPool giving its indices too: the suite judges the pooled values alone")
    size, strides = _plain(node, rank)
    op = "max" if node.op_type == "MaxPool" else "avg"
    kind = Pool(op, size, strides, _padding(node, shape, size, strides), bool(attr(node, "count_include_pad", 0)))
    return KindRead.without_weights(kind, kind.output_shape(shape))


def _flatten(node: onnx.NodeProto, consts: dict[str, np.ndarray], shape: tuple[int, ...] | None,
             computed: frozenset[str]) -> KindRead:
    """A flatten of all but the batch axis; a ``Reshape`` to a shape computed from the tensor's own (tf2onnx's
    ``(batch, -1)``) is run with its computation, its output's shape checked as every unit's is."""
    assert shape is not None  # the graph reader skips a Flatten of a 2-D tensor
    size = int(np.prod(shape))
    if node.op_type == "Flatten" and attr(node, "axis", 1) != 1:
        raise Refused(f"Flatten(axis={attr(node, 'axis', 1)}): the suite judges a flatten of all but the batch axis")
    if node.op_type == "Reshape" and node.input[1] not in computed:
        target = [int(v) for v in consts[node.input[1]].reshape(-1)] if node.input[1] in consts else None
        if target is None or len(target) != 2 or target[0] not in (0, -1, 1) or target[1] not in (-1, size) \
                or target == [-1, -1]:
            raise Refused(f"a Reshape to {target if target is not None else 'a computed shape'}: the suite judges a "
                          f"flatten to (batch, {size}) (shape [-1, {size}] or [0, -1])")
        if target[0] == 1:
            raise Refused(f"a Reshape to {target}: it fixes the batch at 1 (export with shape [-1, {size}])")
    return KindRead.without_weights(Flatten(shape), None)


def _norm(node: onnx.NodeProto, consts: dict[str, np.ndarray], shape: tuple[int, ...] | None) -> KindRead:
    params = [t for t in node.input[1:] if t]
    if any(t not in consts for t in params):
        raise Refused("normalises with computed tensors, not constant parameters (initializers)")
    if len([o for o in node.output if o]) > 1 or attr(node, "training_mode", 0):
        raise Refused("a normalisation in training mode or giving its statistics: the suite judges one at "
                      "inference (training_mode=0, one output)")
    rows = np.stack([consts[t].reshape(-1) for t in params])
    if node.op_type == "BatchNormalization":
        kind: Any = BatchNorm(rows.shape[1], f32(attr(node, "epsilon", 1e-5)), f32(attr(node, "momentum", 0.9)))
        channels = shape[-1] if shape is not None else None
    else:
        if shape is not None or attr(node, "axis", -1) not in (-1, 1) or len(params) != 2:
            raise Refused("a LayerNormalization over more than the features of a 2-D input, or without its scale "
                          "and offset: the suite judges it over the last axis of (batch, features), with both")
        kind = LayerNorm(rows.shape[1], f32(attr(node, "epsilon", 1e-5)))
        channels = None
    if channels is not None and channels != rows.shape[1]:
        raise Refused(f"parameters of {rows.shape[1]} channels on an input of {channels}")
    return KindRead(kind, rows.copy(), None, rows, shape)


LAYER_NORM_OPS = ("ReduceMean", "Sub", "Pow", "ReduceMean", "Add", "Sqrt", "Div", "Mul", "Add")
"""A LayerNorm as torch's exporter writes it below opset 17: ``mean``, ``x - mean``, its square, their mean, ``+
epsilon``, ``sqrt``, the division, ``* gamma``, ``+ beta``."""


def decomposed_layer_norm(nodes: list[tuple[int, onnx.NodeProto]], consts: dict[str, np.ndarray],
                          x: str) -> tuple[KindRead, tuple[str, ...]]:
    """``nodes`` (the chain's next ones, constants left out), read as a LayerNorm of ``x`` over its last axis in one
    of the forms exporters write (``WRITTEN_LAYER_NORMS``); every wire checked, ``Refused`` naming the first that is
    not a LayerNorm's. The unit read, and the ops it took."""
    ops = tuple(n.op_type for _, n in nodes)
    for form, read in WRITTEN_LAYER_NORMS.items():
        if ops[:len(form)] == form:
            return read(nodes[:len(form)], _Constants(consts), x), form
    shown = ops[:len(LAYER_NORM_OPS)]
    raise Refused(f"starts a normalisation written as ops ({'+'.join(shown)}), but not the ones a LayerNorm is "
                  f"written as ({' or '.join('+'.join(form) for form in WRITTEN_LAYER_NORMS)}): the suite does not "
                  "read it yet")


class _Constants:
    """The constants of a graph, asked for a node's one constant operand and a reduction's axes."""

    def __init__(self, consts: dict[str, np.ndarray]) -> None:
        self.consts = consts

    def of(self, node: onnx.NodeProto, other: str) -> np.ndarray | None:
        """The one constant ``node`` combines with ``other``, or None."""
        found = [self.consts[t] for t in node.input if t != other and t in self.consts]
        return found[0] if len(found) == 1 and other in node.input else None

    def axes(self, node: onnx.NodeProto) -> list[int]:  # an attribute below opset 18, an input from it
        if len(node.input) > 1 and node.input[1] in self.consts:
            return [int(a) for a in self.consts[node.input[1]].reshape(-1)]
        return [int(a) for a in attr(node, "axes", [])]

    def reduces_last(self, node: onnx.NodeProto, x: str) -> bool:
        """``node`` a mean of ``x`` over the last axis of a 2-D tensor, keeping it."""
        return node.input[0] == x and self.axes(node) in ([-1], [1]) and attr(node, "keepdims", 1) == 1


def _layer_norm(form: tuple[str, ...], wired: list[bool], gamma: np.ndarray | None, beta: np.ndarray | None,
                epsilon: np.ndarray | None) -> KindRead:
    """The LayerNorm of a written form's parameters, once every wire of it is checked."""
    if not all(wired):
        raise Refused(f"the ops of a LayerNorm ({'+'.join(form)}), but wired otherwise (check "
                      f"{wired.index(False) + 1} of {len(wired)} fails): the suite does not read it")
    gamma, beta = gamma.reshape(-1), beta.reshape(-1)
    if gamma.shape != beta.shape:
        raise Refused(f"a scale of {gamma.size} and an offset of {beta.size} values")
    rows = np.stack([gamma, beta])
    return KindRead(LayerNorm(gamma.size, f32(float(epsilon))), rows.copy(), None, rows, None)


def _torch_layer_norm(nodes: list[tuple[int, onnx.NodeProto]], c: _Constants, x: str) -> KindRead:
    """torch's exporter below opset 17: ``(x - mean) / sqrt(mean((x - mean) ** 2) + epsilon) * gamma + beta``."""
    mean, sub, power, var, add, sqrt, div, mul, shift = (n for _, n in nodes)
    const, axes = c.of, c.axes
    wired = [c.reduces_last(mean, x),
             list(sub.input) == [x, mean.output[0]], power.input[0] == sub.output[0],
             const(power, sub.output[0]) is not None and float(const(power, sub.output[0])) == 2.0,
             var.input[0] == power.output[0] and axes(var) in ([-1], [1]), const(add, var.output[0]) is not None,
             sqrt.input[0] == add.output[0], list(div.input) == [sub.output[0], sqrt.output[0]],
             const(mul, div.output[0]) is not None, const(shift, mul.output[0]) is not None]
    return _layer_norm(LAYER_NORM_OPS, wired, const(mul, div.output[0]), const(shift, mul.output[0]),
                       const(add, var.output[0]))


TF2ONNX_LAYER_NORM_OPS = ("ReduceMean", "Neg", "Sub", "Mul", "ReduceMean", "Add", "Sqrt", "Reciprocal", "Mul", "Mul",
                          "Mul", "Add", "Add")
"""A Keras LayerNormalization as tf2onnx writes it: ``k = gamma / sqrt(mean((x - mean) ** 2) + epsilon)``, then
``x * k + (-mean * k + beta)``."""


def _tf2onnx_layer_norm(nodes: list[tuple[int, onnx.NodeProto]], c: _Constants, x: str) -> KindRead:
    mean, neg, sub, square, var, add, sqrt, reciprocal, factor, scaled, shifted, offset, out = (n for _, n in nodes)
    const, m = c.of, mean.output[0]
    wired = [c.reduces_last(mean, x), list(neg.input) == [m], list(sub.input) == [x, m],
             list(square.input) == [sub.output[0]] * 2, c.reduces_last(var, square.output[0]),
             const(add, var.output[0]) is not None, list(sqrt.input) == [add.output[0]],
             list(reciprocal.input) == [sqrt.output[0]], const(factor, reciprocal.output[0]) is not None,
             set(scaled.input) == {x, factor.output[0]}, set(shifted.input) == {neg.output[0], factor.output[0]},
             const(offset, shifted.output[0]) is not None, set(out.input) == {scaled.output[0], offset.output[0]}]
    return _layer_norm(TF2ONNX_LAYER_NORM_OPS, wired, const(factor, reciprocal.output[0]),
                       const(offset, shifted.output[0]), const(add, var.output[0]))


WRITTEN_LAYER_NORMS = {LAYER_NORM_OPS: _torch_layer_norm, TF2ONNX_LAYER_NORM_OPS: _tf2onnx_layer_norm}
"""The forms exporters write a LayerNorm in, as ops rather than ONNX's own ``LayerNormalization`` (they differ at
their second op: at most one matches)."""




def per_channel(value: np.ndarray, channels: int | None, rank: int, axis: int) -> bool:
    """``value`` holds one number per channel of a rank-``rank`` tensor whose channels are on ``axis`` (a broadcast
    of shape ``(1, C, 1, 1)`` or ``(C, 1, 1)`` channels-first, ``(C,)`` channels-last or 2-D). ``channels``: the
    tensor's, None when unknown (any count)."""
    if value.ndim > rank or (channels is not None and value.size != channels):
        return False
    padded = (1,) * (rank - value.ndim) + value.shape
    return all(n == 1 for i, n in enumerate(padded) if i != axis)


def scale_shift(scale: np.ndarray, offset: np.ndarray, shape: tuple[int, ...] | None) -> KindRead:
    """A ``Mul`` by ``scale`` then an ``Add`` of ``offset``, one per channel each (checked by ``per_channel``):
    tf2onnx's BatchNormalization, its statistics folded into the two constants: the ``ChannelAffine`` kind."""
    if offset.size != scale.size:
        raise Refused(f"a scale of {scale.size} and a shift of {offset.size} values")
    W, b = scale.reshape(-1).copy(), offset.reshape(-1).astype(scale.dtype)
    return KindRead(ChannelAffine(W.size), W, b, np.stack([W, b]), shape)
