"""The layer kinds beyond dense in a LiteRT flatbuffer, read into the core's kinds (``equivalence.core.spatial``).

LiteRT computes channels-last, the canonical layout: a ``CONV_2D`` filter is stored ``(out, kh, kw, in)`` and
becomes the canonical ``(kh, kw, in, out)``; ``padding`` ``SAME`` is TensorFlow's (``same_padding``: the odd pad at
the end), ``VALID`` none. ``MAX_POOL_2D`` and ``AVERAGE_POOL_2D`` (whose ``SAME`` averages the inputs only, as
Keras') are ``Pool``; a ``RESHAPE`` of a spatial tensor to ``(batch, features)`` is ``Flatten``, already in the
canonical order. A 1-D layer (Keras ``Conv1D``, ``MaxPooling1D``, ``AveragePooling1D``) is written on its input
lifted to ``(N, 1, L, C)`` (``EXPAND_DIMS``), then squeezed back (``RESHAPE``): its 2-D op is read as the 1-D kind
(``one_dimensional``), the height axis doing nothing.

What the converter writes for kinds the core does not judge is refused here with why (``REFUSED``): a dilated
convolution is ``SPACE_TO_BATCH_ND``, ``CONV_2D``, ``BATCH_TO_SPACE_ND`` (or a ``CONV_2D`` with dilation factors), a
depthwise one ``DEPTHWISE_CONV_2D``; neither is a kind of any framework's walker yet.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from equivalence.core.spatial import Conv, Flatten, Pool
from equivalence.core.walk import Refused
from equivalence.frameworks.graph_kinds import KindRead, tf_padding

KIND_OPS = ("CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D")
"""Ops that start a unit of another kind than dense (a ``RESHAPE`` of a spatial tensor does too)."""
REFUSED = {
    "SPACE_TO_BATCH_ND": "starts a dilated convolution (SPACE_TO_BATCH_ND, CONV_2D, BATCH_TO_SPACE_ND): the suite "
                         "judges convolutions without dilation, in any framework (compare no dilated model)",
    "DEPTHWISE_CONV_2D": "is a depthwise convolution (a group per input channel): the suite judges convolutions of one "
                         "group, in any framework (compare no depthwise model)",
}
"""LiteRT ops starting a kind the core does not judge, with why."""
_SAME, _VALID = 0, 1  # the schema's Padding


def _padding(options: Any, shape: tuple[int, ...], kernel: tuple[int, int],
             strides: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    return tf_padding({_SAME: "SAME", _VALID: "VALID"}.get(options.padding, str(options.padding)), shape, kernel,
                      strides)


def read_kind(name: str, op: Any, constant: Callable[[int], np.ndarray | None], shape: tuple[int, ...],
              out_shape: tuple[int, ...]) -> KindRead:
    """The layer ``op`` (named ``name``) computes on an input of canonical per-sample ``shape``; ``out_shape``: its
    output tensor's shape as the flatbuffer declares it. ``Refused`` naming what the suite does not judge."""
    options = op.builtinOptions
    if name == "RESHAPE":
        if len(out_shape) != 2 or out_shape[1] != int(np.prod(shape)):
            raise Refused(f"a RESHAPE to {list(out_shape)}: the suite judges a flatten to "
                          f"(batch, {int(np.prod(shape))})")
        return KindRead.without_weights(Flatten(shape), None)
    if len(shape) != 3:
        raise Refused(f"a {name} on a tensor of {len(shape) + 1} axes: the suite judges it on (N, H, W, C)")
    strides = (int(options.strideH), int(options.strideW))
    if name == "CONV_2D":
        if (options.dilationHFactor, options.dilationWFactor) != (1, 1):
            raise Refused(f"dilation {options.dilationHFactor}x{options.dilationWFactor}: the suite judges none")
        inputs = [int(t) for t in op.inputs]
        native = constant(inputs[1])
        bias = constant(inputs[2]) if len(inputs) > 2 else None
        if native is None or native.dtype != np.float32 or native.ndim != 4 or native.shape[3] != shape[-1]:
            raise Refused("a filter that is not a float32 constant (out, kh, kw, in) on the input's channels: the "
                          "suite judges float32 convolutions of one group")
        kernel = (int(native.shape[1]), int(native.shape[2]))
        kind = Conv(kernel, strides, _padding(options, shape, kernel, strides), int(native.shape[3]),
                    int(native.shape[0]))
        b = None if bias is None else bias.reshape(-1).astype(np.float32)
        return KindRead(kind, native.transpose(1, 2, 3, 0).copy(), b, native, kind.output_shape(shape))
    size = (int(options.filterHeight), int(options.filterWidth))
    kind = Pool("max" if name == "MAX_POOL_2D" else "avg", size, strides, _padding(options, shape, size, strides))
    return KindRead.without_weights(kind, kind.output_shape(shape))


def one_dimensional(read: KindRead, shape: tuple[int, ...]) -> KindRead:
    """A ``CONV_2D`` or pool read on a 1-D input of canonical ``shape`` ``(L, C)`` the converter lifted to ``(N, 1, L,
    C)``: the 1-D kind, its height axis dropped (the filter ``(out, 1, k, in)`` becomes the canonical ``(k, in,
    out)``); ``Refused`` when the height axis does anything (a kernel, stride or padding other than 1, 1, none)."""
    kind = read.layer_kind
    size = kind.kernel if isinstance(kind, Conv) else kind.size
    if size[0] != 1 or kind.strides[0] != 1 or kind.padding[0] != (0, 0):
        raise Refused(f"a {kind.describe()} on a 1-D input lifted to (N, 1, L, C): the suite reads one whose height "
                      "axis does nothing (kernel 1, stride 1, no padding)")
    if isinstance(kind, Conv):
        one: Any = Conv(kind.kernel[1:], kind.strides[1:], kind.padding[1:], kind.in_channels, kind.out_channels)
        return KindRead(one, read.W[0].copy(), read.b, read.native, one.output_shape(shape))
    one = Pool(kind.op, kind.size[1:], kind.strides[1:], kind.padding[1:], kind.count_include_pad)
    return KindRead.without_weights(one, one.output_shape(shape))
