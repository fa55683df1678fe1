"""The layer kinds beyond dense in a LiteRT flatbuffer, read into the core's kinds (``equivalence.core.spatial``).

LiteRT computes channels-last, the canonical layout: a ``CONV_2D`` filter is stored ``(out, kh, kw, in)`` and
becomes the canonical ``(kh, kw, in, out)``; ``padding`` ``SAME`` is TensorFlow's (``same_padding``: the odd pad at
the end), ``VALID`` none. ``MAX_POOL_2D`` and ``AVERAGE_POOL_2D`` (whose ``SAME`` averages the inputs only, as
Keras') are ``Pool``; a ``RESHAPE`` of a spatial tensor to ``(batch, features)`` is ``Flatten``, already in the
canonical order.
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
