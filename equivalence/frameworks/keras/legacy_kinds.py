"""A user's Keras 2 (``tf_keras``) layers beyond Dense, as the core's kinds: Conv1D/Conv2D, MaxPooling1D/2D,
AveragePooling1D/2D and a Flatten of their output (``equivalence.core.spatial``), BatchNormalization and
LayerNormalization (``equivalence.core.norms``), Embedding and GlobalAveragePooling1D
(``equivalence.core.embedding``): the kinds the Keras 3 walker gives for the same layers
(``equivalence.frameworks.keras.walk``), read from the same attributes, which Keras 2 names alike.

Channels-last only: a layer with ``data_format="channels_first"`` (or a BatchNormalization over another axis than
the last) is refused. Each unit runs the user's own layer (and the activation after it) on its input; its weights
are already in the canonical layout (a conv kernel ``(*kernel, in, out)``, a norm's ``gamma, beta[, moving_mean,
moving_variance]`` stacked, an embedding table ``(rows, dim)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras

from equivalence.core.dtypes import numpy_dtype
from equivalence.core.embedding import Embedding, SequenceMean
from equivalence.core.norms import BatchNorm, LayerNorm
from equivalence.core.spatial import Conv, Flatten, Pool
from equivalence.core.walk import DenseUnit
from equivalence.frameworks.keras.layer_config import axis_is_last, keras_padding

FRAMEWORK = "keras"
L = tf_keras.layers
_CONVS = {L.Conv1D: 1, L.Conv2D: 2}
_POOLS = {L.MaxPooling1D: ("max", 1), L.MaxPooling2D: ("max", 2), L.AveragePooling1D: ("avg", 1),
          L.AveragePooling2D: ("avg", 2)}
_NORM_WEIGHTS = {LayerNorm: ("gamma", "beta"), BatchNorm: ("gamma", "beta", "moving_mean", "moving_variance")}

JUDGED = ("Dense, Conv1D, Conv2D, MaxPooling1D/2D, AveragePooling1D/2D, Flatten, BatchNormalization, "
          "LayerNormalization, Embedding, GlobalAveragePooling1D (channels-last), their activations, and skips "
          "Dropout, InputLayer and a Flatten of 2-D inputs")
"""What the Keras 2 walker reads, for its refusal of anything else."""


def layer_kind(layer: Any, shape: tuple[int, ...], refuse: Callable[[str], Exception], *,
               sequence: bool) -> Any:
    """The kind of a Keras 2 layer other than a Dense or an activation at one sample's input ``shape``; None for one
    this module does not read. ``sequence``: the input is a token sequence (an Embedding's output), over whose
    features a LayerNormalization acts token by token."""
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise refuse(f"data_format={layer.data_format!r}: the Keras 2 walker reads channels-last layers only")
    return _spatial_kind(layer, shape, refuse) or _norm_kind(layer, shape, refuse, sequence=sequence) \
        or _sequence_kind(layer, shape, refuse)


def _spatial_kind(layer: Any, shape: tuple[int, ...], refuse: Callable[[str], Exception]) -> Any:
    if type(layer) is L.Flatten:
        return Flatten(shape) if len(shape) > 1 else None
    if type(layer) not in _CONVS and type(layer) not in _POOLS:
        return None
    rank = _CONVS.get(type(layer)) or _POOLS[type(layer)][1]
    if len(shape) != rank + 1:
        raise refuse(f"a {type(layer).__name__} on a {len(shape) + 1}-D input")
    if type(layer) in _CONVS:
        if set(layer.dilation_rate) != {1} or layer.groups != 1:
            raise refuse(f"dilation_rate {layer.dilation_rate}, groups {layer.groups}: the suite judges "
                         "convolutions with no dilation and one group")
        kernel, strides = tuple(layer.kernel_size), tuple(layer.strides)
        return Conv(kernel, strides, keras_padding(layer.padding, shape[:-1], kernel, strides, refuse), shape[-1],
                    layer.filters)
    size, strides = tuple(layer.pool_size), tuple(layer.strides)
    return Pool(_POOLS[type(layer)][0], size, strides, keras_padding(layer.padding, shape[:-1], size, strides, refuse),
                False)  # Keras' "same" average divides by the inputs in the window only


def _norm_kind(layer: Any, shape: tuple[int, ...], refuse: Callable[[str], Exception], *, sequence: bool) -> Any:
    rank = len(shape) + 1
    if type(layer) is L.LayerNormalization:
        if (len(shape) != 1 and not sequence) or not axis_is_last(layer.axis, rank):
            raise refuse("a LayerNormalization other than over the features of a 2-D input or of an Embedding's "
                         "(batch, tokens, features) sequence: not judged")
        if not (layer.center and layer.scale):
            raise refuse("a LayerNormalization without center and scale: not judged")
        return LayerNorm(shape[-1], float(layer.epsilon))
    if type(layer) is L.BatchNormalization:
        if not axis_is_last(layer.axis, rank) or not (layer.center and layer.scale):
            raise refuse(f"a BatchNormalization over axis {layer.axis} of a {rank}-D input, or without center and "
                         "scale: the suite judges it over the last axis (channels-last) with both")
        return BatchNorm(shape[-1], float(layer.epsilon), round(float(layer.momentum), 12))
    return None


def _sequence_kind(layer: Any, shape: tuple[int, ...], refuse: Callable[[str], Exception]) -> Any:
    if type(layer) is L.Embedding:
        if len(shape) != 1:
            raise refuse(f"an Embedding on a {len(shape) + 1}-D input: the suite judges token ids (batch, tokens)")
        return Embedding(layer.input_dim, layer.output_dim, shape[0], mask_zero=bool(layer.mask_zero))
    if type(layer) is L.GlobalAveragePooling1D:
        if layer.keepdims or len(shape) != 2:
            raise refuse("a GlobalAveragePooling1D other than without keepdims, on (batch, tokens, features): not "
                         "judged")
        return SequenceMean(*shape)
    return None


def conv_activation(layer: Any, read: Callable[[Any], str]) -> str:
    """A conv's own ``activation=`` (``read``: the walker's activation table); linear for the other kinds."""
    return read(layer.activation) if type(layer) in _CONVS else "linear"


def kind_unit(p: dict[str, Any]) -> DenseUnit:
    """The unit of a pending Keras 2 layer of a kind (``p``: the walk's ``layer``, ``layer_kind``, ``in_shape``,
    ``position``, ``act``, ``act_source``, ``act_op``), running the user's layer and activation on numpy."""
    layer, kind, act_op, in_shape = p["layer"], p["layer_kind"], p["act_op"], tuple(p["in_shape"])

    def run(x: np.ndarray) -> np.ndarray:
        y = layer(tf.convert_to_tensor(x), training=False)
        return (y if act_op is None else act_op(y)).numpy()

    names = _NORM_WEIGHTS.get(type(kind)) or {Conv: ("kernel", "bias"), Embedding: ("embeddings",)}.get(type(kind))
    if names is None:  # a pool, a flatten, a mean: no weights
        return DenseUnit.without_weights(FRAMEWORK, layer.name, type(layer).__name__, p["position"], p["act"],
                                         p["act_source"], run, layer_kind=kind, in_shape=in_shape,
                                         out_shape=kind.output_shape(in_shape))
    dtype = layer.compute_dtype
    dt = numpy_dtype(dtype)
    variables = [getattr(layer, name) for name in names]
    if isinstance(kind, Conv):
        native = variables[0].numpy().copy()
        W, b = native.astype(dt), None if variables[1] is None else variables[1].numpy().astype(dt)
    else:  # a norm's parameters stacked (4, C) or (2, C); an embedding table
        native = np.stack([v.numpy() for v in variables]) if type(kind) in _NORM_WEIGHTS else variables[0].numpy()
        native = native.astype(dt)
        W, b = native.copy(), None

    def write(W: np.ndarray, bias: np.ndarray | None) -> None:
        rows = [W, bias] if isinstance(kind, Conv) else list(W) if type(kind) in _NORM_WEIGHTS else [W]
        for variable, value in zip(variables, rows):
            if variable is not None and value is not None:
                variable.assign(np.asarray(value, dtype=variable.dtype.as_numpy_dtype))

    return DenseUnit(FRAMEWORK, layer.name, type(layer).__name__, p["position"], W, b, native, p["act"],
                     p["act_source"], dtype, run, write, layer_kind=kind, in_shape=in_shape,
                     out_shape=kind.output_shape(in_shape))

