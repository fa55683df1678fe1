"""A chain of layers of any kind (``equivalence.core.chain``) built as a Keras 3 model, as a user writes one:
``keras.Sequential`` from ``keras.Input`` (channels-last) through ``Conv1D/2D``, ``MaxPooling/AveragePooling``,
``Flatten``, ``BatchNormalization``, ``LayerNormalization`` and ``Dense``, an ``Activation`` after a norm; token ids
(``keras.Input`` of int32) through ``Embedding``, ``MultiHeadAttention`` (called ``mha(h, h)``: a functional model),
``GlobalAveragePooling1D``, ``LSTM`` and ``GRU``; a residual Add as ``layers.Add()([skip, h])`` and a second
branch as the next layer called on an earlier value (both functional). The model is then walked like a user's own
(``walk``), so the golden vectors and the report judge exactly the layers the own-model path runs.

One entry per kind in ``LAYERS``: ``(layers, kind, weights, activation, dtype, input shape) -> [layer, ...]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras

from equivalence.core.adapter import FrameworkRefused
from equivalence.core.kinds import DENSE, LayerWeights
from equivalence.core.spatial import same_padding
from equivalence.core.spec import ChainSpec
from equivalence.core.walk import DenseUnit


def _padding(padding: tuple[tuple[int, int], ...], shape: tuple[int, ...], size: tuple[int, ...],
             strides: tuple[int, ...]) -> str:
    """Keras' name of a padding: ``"valid"`` (none), ``"same"`` (TensorFlow's), else refused."""
    if all(p == (0, 0) for p in padding):
        return "valid"
    if padding == tuple(same_padding(n, k, s) for n, k, s in zip(shape[:-1], size, strides)):
        return "same"
    raise FrameworkRefused(f"Keras pads 'valid' or 'same' only: a padding of {padding} at {shape} is neither")


def _conv(L: Any, kind: Any, w: LayerWeights, act: Any, dt: str, shape: tuple[int, ...]) -> list[Any]:
    cls = {1: L.Conv1D, 2: L.Conv2D}[kind.rank]
    return [cls(kind.out_channels, kind.kernel, strides=kind.strides,
                padding=_padding(kind.padding, shape, kind.kernel, kind.strides), activation=act,
                use_bias=w.b is not None, dtype=dt)]


def _pool(L: Any, kind: Any, w: LayerWeights, act: Any, dt: str, shape: tuple[int, ...]) -> list[Any]:
    if kind.count_include_pad:
        raise FrameworkRefused("Keras averages the inputs of a window only: no count_include_pad")
    cls = {("max", 1): L.MaxPooling1D, ("max", 2): L.MaxPooling2D, ("avg", 1): L.AveragePooling1D,
           ("avg", 2): L.AveragePooling2D}[kind.op, len(kind.size)]
    return [cls(kind.size, strides=kind.strides, padding=_padding(kind.padding, shape, kind.size, kind.strides),
                dtype=dt)]


def _recurrent(cls: Any, kind: Any, w: LayerWeights, dt: str) -> Any:
    """An LSTM or GRU; its recurrent kernel initialised uniformly: TensorFlow has no bfloat16 QR for the default
    orthogonal one (the weights are written over anyway)."""
    return cls(kind.units, return_sequences=kind.return_sequences, use_bias=w.b is not None,
               recurrent_initializer="glorot_uniform", dtype=dt)


def _then(layer: Any, L: Any, act: Any, dt: str) -> list[Any]:
    """A layer without an ``activation=`` argument, and its activation as a layer of its own."""
    return [layer] if act == "linear" else [layer, L.Activation(act, dtype=dt)]


LAYERS: dict[str, Callable[..., list[Any]]] = {
    "dense": lambda L, kind, w, act, dt, shape: [L.Dense(w.W.shape[1], activation=act, use_bias=w.b is not None,
                                                         dtype=dt)],
    "conv": _conv,
    "pool": lambda L, kind, w, act, dt, shape: _then(_pool(L, kind, w, act, dt, shape)[0], L, act, dt),
    "flatten": lambda L, kind, w, act, dt, shape: _then(L.Flatten(dtype=dt), L, act, dt),
    "batchnorm": lambda L, kind, w, act, dt, shape: _then(
        L.BatchNormalization(axis=-1, epsilon=kind.epsilon, momentum=kind.momentum, dtype=dt), L, act, dt),
    "layernorm": lambda L, kind, w, act, dt, shape: _then(L.LayerNormalization(epsilon=kind.epsilon, dtype=dt),
                                                          L, act, dt),
    "embedding": lambda L, kind, w, act, dt, shape: _then(L.Embedding(kind.rows, kind.dim, dtype=dt), L, act, dt),
    "mean": lambda L, kind, w, act, dt, shape: _then(L.GlobalAveragePooling1D(dtype=dt), L, act, dt),
    "attention": lambda L, kind, w, act, dt, shape: _then(
        L.MultiHeadAttention(kind.heads, kind.head_dim, use_bias=w.b is not None, dtype=dt), L, act, dt),
    "lstm": lambda L, kind, w, act, dt, shape: _then(_recurrent(L.LSTM, kind, w, dt), L, act, dt),
    "gru": lambda L, kind, w, act, dt, shape: _then(_recurrent(L.GRU, kind, w, dt), L, act, dt),
    "add": lambda L, kind, w, act, dt, shape: _then(L.Add(dtype=dt), L, act, dt),
    "branch": lambda L, kind, w, act, dt, shape: [],
}
"""Each kind's Keras layers: ``(keras.layers, kind, canonical weights, Keras activation, dtype, input shape)``."""


def _model(start: Any, kinds: Sequence[Any], groups: Sequence[Sequence[Any]]) -> Any:
    """A ``keras.Sequential`` of each kind's ``groups`` of layers after the Input ``start``; a functional model when
    one is a ``MultiHeadAttention``, called as self-attention (``mha(h, h)``), or the chain adds or branches: an Add
    of an earlier value and the chain's output (``Add()([skip, h])``: ``a(x) + b(x)`` with ``a`` first, as torch's
    ``forward`` evaluates it), a branch continuing from an earlier value."""
    layers = [layer for group in groups for layer in group]
    functional = any(isinstance(layer, keras.layers.MultiHeadAttention) for layer in layers) \
        or any(kind.name in ("add", "branch") for kind in kinds)
    if not functional:
        return keras.Sequential([start, *layers])
    h, earlier = start, [start]
    for kind, group in zip(kinds, groups):
        if kind.name == "branch":
            h = earlier[kind.source + 1]
        for layer in group:
            if isinstance(layer, keras.layers.Add):
                h = layer([earlier[kind.skip + 1], h])
            else:
                h = layer(h, h) if isinstance(layer, keras.layers.MultiHeadAttention) else layer(h)
        earlier.append(h)
    return keras.Model(start, h)


def build_chain(adapter: Any, spec: ChainSpec, weights: Sequence[LayerWeights]) -> list[DenseUnit]:
    """``spec`` as a ``keras.Sequential`` holding ``weights``: its walked units, one per layer."""
    if spec.dtype == "float64" and not adapter.float64_available():
        raise FrameworkRefused("Keras on jax has no float64 unless jax_enable_x64 is on")
    from equivalence.frameworks.keras.walk import walk

    ids = getattr(spec.kinds[0], "integer_input", False)
    L, shape = keras.layers, spec.input_shape
    start = keras.Input(tuple(spec.input_shape), dtype="int32" if ids else spec.dtype)
    groups = []
    for kind, layer_weights, activation in zip(spec.kinds, weights, spec.activations):
        problem = adapter.lacks(activation)
        if problem:
            raise FrameworkRefused(problem)
        act = "linear" if activation == "linear" else adapter.keras_activation(activation)
        groups.append(LAYERS[kind.name](L, kind, layer_weights, act, spec.dtype, tuple(shape)))
        shape = (layer_weights.W.shape[1],) if kind is DENSE else kind.output_shape(tuple(shape))
    units = walk(_model(start, spec.kinds, groups))
    for unit, layer_weights in zip(units, weights):
        if layer_weights.W.size:
            unit.write(layer_weights.W, layer_weights.b)
    return units
