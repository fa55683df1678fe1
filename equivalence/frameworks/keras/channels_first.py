"""Channels-first Keras models: Conv1D/Conv2D, MaxPooling/AveragePooling 1D/2D and GlobalAveragePooling1D with
``data_format="channels_first"``, BatchNormalization(axis=1) and Flatten, on ``(N, C, *spatial)`` tensors as torch
computes them.

The suite's canonical layout is channels-last (``equivalence.core.spatial``); the torch adapter converts at every
unit. A channels-first Keras model is converted here in the same way: its declared input ``(C, *spatial)`` and every
per-sample shape the walk meets become ``(*spatial, C)``; each unit runs on canonical numpy made ``N, C, ...`` for
the user's layer and made channels-last again after it. So ``x``, given in torch's layout, reaches the Keras model
as it is.

Flatten is the trap. ``Flatten(data_format="channels_first")`` moves the channels last before it flattens: its
``H, W, C`` order is the canonical one, and the Dense after it holds canonical rows. ``Flatten()`` (the default
``channels_last``) on an ``N, C, H, W`` tensor flattens ``C, H, W`` as torch does: the unit permutes its output
to the canonical order and the Dense after it has its rows permuted exactly as torch's Linear
(``flatten_permutation``), read and written.

One data_format per model: a layer computing in the other one (a channels_first conv, then a channels_last pool)
is refused naming it, and so is a BatchNormalization over another axis than the channels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import keras
import numpy as np

from equivalence.core.attention import SelfAttention
from equivalence.core.embedding import Embedding, SequenceMean
from equivalence.core.norms import BatchNorm
from equivalence.core.recurrent import Recurrent
from equivalence.core.spatial import Conv, Flatten, Pool, flatten_permutation
from equivalence.core.walk import DenseUnit, ModelNotSupported
from equivalence.frameworks.base import FrameworkRefused

FRAMEWORK = "keras"
FIRST, LAST = "channels_first", "channels_last"
L = keras.layers
_FORMATTED = (L.Conv1D, L.Conv2D, L.MaxPooling1D, L.MaxPooling2D, L.AveragePooling1D, L.AveragePooling2D,
              L.GlobalAveragePooling1D)
_CONVERTED = (Conv, Pool, BatchNorm, Flatten, SequenceMean)
"""The kinds a channels-first model runs on ``N, C, ...`` tensors (a residual Add is elementwise: either layout)."""


def data_format(op: Any, spatial: bool = True) -> str | None:
    """The data_format ``op`` computes its input in: a conv's or a pooling layer's, ``channels_first`` for a
    ``Flatten(data_format="channels_first")`` of a spatial tensor (``spatial``); None for any other layer (a
    ``Flatten()`` flattens either layout, in its own order)."""
    if type(op) in _FORMATTED:
        return op.data_format
    if type(op) is L.Flatten and spatial and op.data_format == FIRST:
        return FIRST
    return None


def model_format(ops: Iterable[tuple[Any, int | None, bool]]) -> str:
    """The one data_format of ``(op, position, spatial input)`` in execution order: ``channels_first`` when its
    spatial layers compute channels-first, else ``channels_last``; ``ModelNotSupported`` names the first layer
    computing in the other format than the one before it."""
    first: Any = None
    for op, position, spatial in ops:
        found = data_format(op, spatial)
        if found is None:
            continue
        if first is None:
            first = op
        elif found != data_format(first):
            raise ModelNotSupported(FRAMEWORK, op.name, type(op).__name__, position,
                                    f"data_format={found!r} after {first.name!r} computes {data_format(first)!r}: "
                                    "the suite judges one data_format per model")
    return LAST if first is None else data_format(first)


def declared_format(model: Any) -> str:
    """``model_format`` of the layers a model holds (before any walk: what its declared input's layout is)."""
    layers = model._flatten_layers(include_self=False) if hasattr(model, "_flatten_layers") else []
    return model_format((layer, None, True) for layer in layers)


def canonical(shape: tuple[int, ...], fmt: str) -> tuple[int, ...]:
    """One sample's shape in the canonical channels-last layout: a channels-first ``(C, *spatial)`` made
    ``(*spatial, C)``; a 1-D shape (features) as it is."""
    return (*shape[1:], shape[0]) if fmt == FIRST and len(shape) > 1 else tuple(shape)


def norm_axis_problem(op: Any, shape: tuple[int, ...], fmt: str) -> str | None:
    """Why a BatchNormalization of a spatial tensor (``shape``: canonical, one sample) normalises another axis than
    its channels (axis 1 channels-first, the last channels-last), or None."""
    if len(shape) < 2:
        return None
    axes = list(op.axis) if isinstance(op.axis, (list, tuple)) else [op.axis]
    rank = len(shape) + 1
    channel_axis = 1 if fmt == FIRST else rank - 1
    if len(axes) == 1 and int(axes[0]) % rank == channel_axis:  # axis=-3 of an N, C, H, W tensor is axis 1
        return None
    channels = "1" if fmt == FIRST else "-1"
    return (f"a BatchNormalization over axis {op.axis} of a {fmt} tensor (its channels are axis {channels}): it "
            f"normalises another axis than the channels, as torch's BatchNorm does not; use axis={channels} in a "
            f"{fmt} model")


def in_canonical_layout(unit: DenseUnit, fmt: str, flatten_format: str | None = None,
                        permutation: np.ndarray | None = None) -> DenseUnit:
    """``unit`` (which runs the user's layer on the tensors the model computes) made to run on canonical numpy.

    In a channels-first model a spatial unit's input is made ``N, C, ...`` and its output channels-last again; a
    ``Flatten()`` keeping ``C, H, W`` (``flatten_format`` channels_last) has its output permuted to the canonical
    order. ``permutation``: a Dense after that Flatten, whose canonical rows are its own permuted."""
    if permutation is not None:
        return _after_flatten(unit, permutation)
    if fmt != FIRST or not isinstance(unit.layer_kind, _CONVERTED) or len(unit.in_shape) < 2:
        return unit
    if len(unit.out_shape) > 1 and unit.activation.split("_axis")[0] in ("softmax", "log_softmax"):
        raise ModelNotSupported(FRAMEWORK, unit.name, unit.kind, unit.position,
                                f"{unit.activation} on a channels-first tensor: Keras computes it over one axis of "
                                "N, C, ... (the last, its width, by default), which the suite does not judge there")
    rank = len(unit.in_shape) - 1
    to_first = (0, rank + 1, *range(1, rank + 1))
    order = flatten_permutation(unit.in_shape) if isinstance(unit.layer_kind, Flatten) and flatten_format == LAST \
        else None
    run = unit.run

    def canonical_run(x: np.ndarray) -> np.ndarray:
        y = np.asarray(run(np.ascontiguousarray(np.asarray(x).transpose(to_first))))
        if y.ndim > 2:
            return y.transpose(0, *range(2, y.ndim), 1)
        return y[:, order] if order is not None else y

    converted = replace(unit, run=canonical_run)
    if isinstance(unit.layer_kind, Conv):
        _check_bias(unit)
        _check_runs(converted)
    return converted


BIAS_ALONG_WIDTH = "keras_tf_channels_first_conv_bias_along_width"


def _check_bias(unit: DenseUnit) -> None:
    """Refuse a channels-first conv with a bias whose output is as wide as it has filters where Keras adds that bias
    along the width (known difference ``keras_tf_channels_first_conv_bias_along_width``): it computes another
    function than torch's conv, whatever the bias holds once ported."""
    from equivalence.frameworks.keras.known_differences import KERAS

    width, filters = unit.out_shape[-2], unit.out_shape[-1]
    entry = next(d for d in KERAS if d.name == BIAS_ALONG_WIDTH)
    if unit.b is not None and width == filters and entry.active():
        raise ModelNotSupported(FRAMEWORK, unit.name, unit.kind, unit.position,
                                f"data_format='channels_first' with a bias and an output {width} wide with {filters} "
                                f"filters: Keras on TensorFlow adds the bias along the width, not the channels "
                                f"(known difference {BIAS_ALONG_WIDTH}); use channels_last, another output width, "
                                "or Keras' jax or torch backend")


def _check_runs(unit: DenseUnit) -> None:
    """Refuse a channels-first conv the backend cannot compute, with its reason: TensorFlow on a CPU has an NCHW
    convolution only through oneDNN, none in float64, and in float16 only where oneDNN runs at AVX512_CORE_FP16 or
    higher (known differences ``keras_tf_float64_channels_first_conv_does_not_run``,
    ``keras_tf_channels_first_conv_needs_onednn``, ``keras_tf_float16_channels_first_conv_needs_avx512_fp16``)."""
    from equivalence.core.dtypes import numpy_dtype

    try:
        unit.run(np.zeros((1, *unit.in_shape), dtype=numpy_dtype(unit.dtype)))
    except FrameworkRefused as exc:
        raise ModelNotSupported(FRAMEWORK, unit.name, unit.kind, unit.position,
                                f"data_format='channels_first' in {unit.dtype}, which this Keras backend cannot "
                                f"compute ({exc}); TensorFlow's CPU convolution is channels-first only through "
                                "oneDNN, never in float64, and in float16 only on a CPU with AVX512-FP16: use "
                                "channels_last, or Keras' jax or torch backend"
                                ) from None


def _after_flatten(unit: DenseUnit, permutation: np.ndarray) -> DenseUnit:
    """A Dense after a ``C, H, W`` flatten: its canonical rows are its own in ``H, W, C`` order (``permutation``,
    as torch's Linear after ``nn.Flatten``); its input is made ``C, H, W`` again to run, and written back so."""
    back = np.argsort(permutation)
    run, write = unit.run, unit.write

    def canonical_run(x: np.ndarray) -> np.ndarray:
        return run(np.ascontiguousarray(np.asarray(x)[:, back]))

    def canonical_write(W: np.ndarray, b: np.ndarray | None) -> None:
        write(np.asarray(W)[back], b)

    return replace(unit, W=unit.W[permutation].copy(), run=canonical_run,
                   write=None if write is None else canonical_write)


def refused_kind(kind: Any, fmt: str, refuse: Callable[[str], Exception]) -> None:
    """Refuse a sequence kind (Embedding, attention, LSTM/GRU) in a channels-first model: its batch-first
    ``(N, steps, features)`` tensors are no ``N, C, ...`` tensor a channels-first layer before or after computes."""
    if fmt == FIRST and isinstance(kind, (Embedding, SelfAttention, Recurrent)):
        raise refuse(f"a sequence layer ({kind.name}) in a channels_first model: the suite judges channels-first "
                     "models of Conv1D/Conv2D, pooling, BatchNormalization(axis=1), Flatten and Dense layers")
