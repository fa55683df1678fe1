"""The layer kinds a converter writes into a graph that the graph readers (``onnx_graph``, ``litert_graph``,
``keras.saved_model_graph``) do not read yet (ONNX's convolutions, pooling and norms are read: ``onnx_kinds``):
recognised by their op, so the refusal says which kind the op starts (a convolution, the transposes converters put
around one, a normalisation written as ops) instead of only that the op is no dense layer's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

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
    # TensorFlow
    "Conv2D": "a convolution", "Conv1D": "a convolution", "DepthwiseConv2dNative": "a convolution",
    "MaxPool": "a pooling layer", "AvgPool": "a pooling layer", "FusedBatchNormV3": "a batch normalisation",
    "Mean": "a normalisation written as ops (Mean, Sub, ...)",
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
