"""Users' conv models, written as a user would in torch and in Keras, from one drawn architecture.

An architecture is a spatial input, blocks of a convolution (its activation) and an optional pooling layer, then
Flatten and a Dense. Padding is drawn only where torch can say what Keras' ``"same"`` does (symmetric pads):
the asymmetric case is a trap, tested on its own (``tests/own/test_own_conv_models.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from equivalence.core.spatial import output_size, same_padding

ACTIVATIONS = ("linear", "relu", "tanh")


@dataclass(frozen=True)
class ConvBlock:
    filters: int
    kernel: int
    stride: int
    same: bool
    activation: str
    pool: str | None  # "max" | "avg" | None
    pool_size: int = 1
    pool_same: bool = False


@dataclass(frozen=True)
class ConvArch:
    rank: int
    size: int
    channels: int
    blocks: tuple[ConvBlock, ...]
    units: int
    dtype: str
    seed: int

    @property
    def keras_input(self) -> tuple[int, ...]:
        return (self.size,) * self.rank + (self.channels,)

    @property
    def torch_input(self) -> tuple[int, ...]:
        return (self.channels,) + (self.size,) * self.rank


def _symmetric_same(size: int, kernel: int, stride: int) -> bool:
    before, after = same_padding(size, kernel, stride)
    return before == after


@st.composite
def conv_archs(draw: st.DrawFn, *, dtype: str, size: tuple[int, int] = (4, 10), channels: tuple[int, int] = (1, 4),
               filters: tuple[int, int] = (1, 6), kernel: int = 3, stride: int = 2) -> ConvArch:
    """A small conv stack ending in Flatten + Dense (smoke-sized by default: spatial 4-10, at most 6 channels,
    kernels up to 3, strides up to 2; the ranges are ``make ratios``' to widen)."""
    rank = draw(st.sampled_from((1, 2)), label="rank")
    size = draw(st.integers(*size), label="size")
    channels = draw(st.integers(*channels), label="channels")
    max_kernel, max_stride = kernel, stride
    blocks, current = [], size
    for _ in range(draw(st.integers(1, 2), label="blocks")):
        kernel = draw(st.integers(1, min(max_kernel, current)), label="kernel")
        stride = draw(st.integers(1, max_stride), label="stride")
        same = draw(st.booleans(), label="same") and _symmetric_same(current, kernel, stride)
        current = output_size(current, kernel, stride, same_padding(current, kernel, stride) if same else (0, 0))
        pool = draw(st.sampled_from((None, "max", "avg")), label="pool") if current >= 2 else None
        pool_size, pool_same = 1, False
        if pool is not None:
            pool_size = draw(st.integers(1, min(3, current)), label="pool size")
            pad = same_padding(current, pool_size, 1)
            pool_same = draw(st.booleans(), label="pool same") and pad[0] == pad[1] and pad[0] <= pool_size // 2
            current = current if pool_same else current - pool_size + 1
        blocks.append(ConvBlock(draw(st.integers(*filters), label="filters"), kernel, stride, same,
                                draw(st.sampled_from(ACTIVATIONS), label="activation"), pool, pool_size, pool_same))
    return ConvArch(rank, size, channels, tuple(blocks), draw(st.integers(1, 4), label="units"), dtype,
                    draw(st.integers(0, 2**16), label="seed"))


def torch_conv_model(arch: ConvArch):
    import torch
    from torch import nn

    from equivalence.frameworks.torch import TORCH_DTYPES, activation_module

    dt = TORCH_DTYPES[arch.dtype]
    torch.manual_seed(arch.seed)
    conv = {1: nn.Conv1d, 2: nn.Conv2d}[arch.rank]
    pools = {"max": {1: nn.MaxPool1d, 2: nn.MaxPool2d}, "avg": {1: nn.AvgPool1d, 2: nn.AvgPool2d}}
    layers, channels, size = [], arch.channels, arch.size
    for b in arch.blocks:
        pad = same_padding(size, b.kernel, b.stride)[0] if b.same else 0
        layers.append(conv(channels, b.filters, b.kernel, stride=b.stride, padding=pad, dtype=dt))
        if b.activation != "linear":
            layers.append(activation_module(b.activation))
        channels, size = b.filters, output_size(size, b.kernel, b.stride, (pad, pad))
        if b.pool is not None:
            pool_pad = same_padding(size, b.pool_size, 1)[0] if b.pool_same else 0
            extra = {"count_include_pad": False} if b.pool == "avg" else {}
            layers.append(pools[b.pool][arch.rank](b.pool_size, stride=1, padding=pool_pad, **extra))
            size = output_size(size, b.pool_size, 1, (pool_pad, pool_pad))
    layers += [nn.Flatten(), nn.Linear(channels * size**arch.rank, arch.units, dtype=dt)]
    return nn.Sequential(*layers)


def keras_conv_model(arch: ConvArch, data_format: str = "channels_last", flatten_format: str = "channels_last"):
    """The Keras port; ``data_format="channels_first"``: its input, convs and pools channels-first (the torch
    layout), its Flatten's ``data_format`` ``flatten_format``."""
    import keras

    L = keras.layers
    conv = {1: L.Conv1D, 2: L.Conv2D}[arch.rank]
    pools = {"max": {1: L.MaxPooling1D, 2: L.MaxPooling2D}, "avg": {1: L.AveragePooling1D, 2: L.AveragePooling2D}}
    first = data_format == "channels_first"
    layers = [keras.Input(arch.torch_input if first else arch.keras_input, dtype=arch.dtype)]
    for b in arch.blocks:
        layers.append(conv(b.filters, b.kernel, strides=b.stride, padding="same" if b.same else "valid",
                           activation=b.activation, data_format=data_format, dtype=arch.dtype))
        if b.pool is not None:
            layers.append(pools[b.pool][arch.rank](b.pool_size, strides=1, padding="same" if b.pool_same else "valid",
                                                    data_format=data_format, dtype=arch.dtype))
    layers += [L.Flatten(data_format=flatten_format, dtype=arch.dtype), L.Dense(arch.units, dtype=arch.dtype)]
    return keras.Sequential(layers)
