"""What the graph readers (``onnx_graph``, ``litert_graph``, ``keras.saved_model_graph``) share about the layer
kinds beyond dense: the ops that start a kind none of them reads yet (recognised by their op, so the refusal says
which kind the op starts: a convolution, the transposes converters put around one, a normalisation written as ops,
instead of only that the op is no dense layer's), one op's reading (``KindRead``), TensorFlow's ``SAME``/``VALID``
padding (LiteRT's and a SavedModel's) and float32 attributes read as written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from equivalence.core.spatial import Padding, same_padding
from equivalence.core.walk import Refused

NOT_READ_YET = {
    # ONNX (Conv, MaxPool, AveragePool, BatchNormalization and LayerNormalization are read: onnx_kinds)
    "ConvTranspose": "a transposed convolution", "GlobalAveragePool": "a global pooling layer",
    "GlobalMaxPool": "a global pooling layer", "InstanceNormalization": "an instance normalisation",
    "Transpose": "a transpose (converters put them around convolutions, to and from channels-last)",
    "ReduceMean": "a normalisation written as ops (ReduceMean, Sub, Pow, ...) on a spatial tensor",
    # LiteRT (convolutions and pooling, 1-D and 2-D, and a LayerNorm's ops are read, dilated and depthwise
    # convolutions refused with why: litert_kinds, litert_norms)
    "TRANSPOSE_CONV": "a transposed convolution",
    "TRANSPOSE": "a transpose (converters put them around convolutions)",
    # TensorFlow (Conv2D, MaxPool, AvgPool, a Reshape of a spatial tensor, FusedBatchNormV3 and the BatchNorm and
    # LayerNorm Keras writes as ops are read: keras.saved_model_kinds)
    "Conv3D": "a 3-D convolution", "DepthwiseConv2dNative": "a depthwise convolution",
    "Conv2DBackpropInput": "a transposed convolution", "MaxPool3D": "a 3-D pooling layer",
    "AvgPool3D": "a 3-D pooling layer",
    "ExpandDims": "a 1-D convolution or pooling layer (ExpandDims, Conv2D or a pool, Squeeze)",
}


def not_read_yet(op: str) -> str | None:
    """Why a graph's ``op`` is refused when it starts a layer kind the readers do not read yet; else None."""
    kind = NOT_READ_YET.get(op)
    return None if kind is None else (f"{op} starts {kind}: the suite does not read this kind from converted graphs "
                                      "yet; compare the models it was converted from")


@dataclass(frozen=True)
class KindRead:
    """One op of a graph read as a layer of another kind than dense (``onnx_kinds``, ``litert_kinds``): its kind,
    canonical ``W`` and ``b``, the weights as stored, and the canonical shape of its output per sample (None: a 2-D
    tensor)."""

    layer_kind: Any
    W: np.ndarray
    b: np.ndarray | None
    native: np.ndarray
    next_shape: tuple[int, ...] | None

    @classmethod
    def without_weights(cls, layer_kind: Any, next_shape: tuple[int, ...] | None) -> KindRead:
        """An op with nothing to port (a pool, a flatten): empty kernels, no bias."""
        empty = np.zeros((0,))
        return cls(layer_kind, empty, None, empty, next_shape)


def folded_batch_norm(after: str, converter: str) -> str:
    """Why a ``Mul`` and an ``Add`` of constants after a layer are refused: not one scale and one shift per channel,
    as ``converter`` writes a BatchNorm it folded into ops (read as ``ChannelAffine`` when they are)."""
    return (f"a Mul and an Add of constants after the {after}, but not one scale and one shift per channel (a "
            f"BatchNormalization {converter} folded into ops, read when they are): the suite does not read it")


def tf_padding(padding: str, shape: tuple[int, ...], kernel: tuple[int, ...],
               strides: tuple[int, ...]) -> Padding:
    """TensorFlow's ``padding`` (LiteRT's and a SavedModel's ops) as ``(before, after)`` per spatial axis of the
    canonical per-sample ``shape``: ``SAME`` puts the odd pad at the end, ``VALID`` pads nothing."""
    if padding == "VALID":
        return ((0, 0),) * len(kernel)
    if padding != "SAME":
        raise Refused(f"padding {padding}: the suite judges SAME and VALID")
    return tuple(same_padding(n, k, s) for n, k, s in zip(shape[:-1], kernel, strides))


def f32(value: float) -> float:
    """A float32 attribute or constant as written (0.01 stored as float32 reads 0.009999999776482582)."""
    return float(str(np.float32(value)))
