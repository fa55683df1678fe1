"""Users' recurrent models, written as a user would in torch and in Keras, from one drawn architecture.

An architecture is a batch-first sequence, one or two recurrent layers (LSTM or GRU, the first returning its
sequence to the second), the last one's last step taken as ``out[:, -1]`` or ``h_n[-1]``, then a Linear/Dense.
The torch model is a subclass (a recurrent layer returns a tuple: ``nn.Sequential`` cannot hold one usefully);
the Keras model a ``Sequential`` or a functional model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st


@dataclass(frozen=True)
class RecurrentArch:
    cells: tuple[str, ...]  # "lstm" | "gru", one or two
    features: int
    units: tuple[int, ...]
    steps: int
    head: str  # "out" (out[:, -1]) | "h_n" (h_n[-1])
    outputs: int
    dtype: str
    seed: int
    functional: bool = False
    weight_scale: float | None = None  # None: torch's init, U(-1/sqrt(H), 1/sqrt(H))
    bias: bool = True

    @property
    def input_shape(self) -> tuple[int, int]:
        return (self.steps, self.features)

    def extra_torch_parameters(self) -> int:
        """torch's LSTM holds two biases where Keras' holds their sum: 4 * units more parameters each."""
        return sum(4 * u for c, u in zip(self.cells, self.units) if c == "lstm" and self.bias)


@st.composite
def recurrent_archs(draw: st.DrawFn, *, dtype: str, features: int = 4, units: int = 8, steps: int = 12,
                    weight_scales: tuple[float | None, ...] = (None, 1.0)) -> RecurrentArch:
    """Smoke-sized by default: 1-4 features, 1-8 units, 1-12 steps (``make ratios`` widens them)."""
    depth = draw(st.integers(1, 2), label="depth")
    return RecurrentArch(
        tuple(draw(st.sampled_from(("lstm", "gru")), label="cell") for _ in range(depth)),
        draw(st.integers(1, features), label="features"),
        tuple(draw(st.integers(1, units), label="units") for _ in range(depth)),
        draw(st.integers(1, steps), label="steps"),
        draw(st.sampled_from(("out", "h_n")), label="head"),
        draw(st.integers(1, 3), label="outputs"), dtype, draw(st.integers(0, 2**16), label="seed"),
        draw(st.booleans(), label="functional"), draw(st.sampled_from(weight_scales), label="weight scale"),
        draw(st.booleans(), label="bias"))


def torch_recurrent_model(arch: RecurrentArch):
    import torch
    from torch import nn

    from equivalence.frameworks.torch import TORCH_DTYPES

    dt = TORCH_DTYPES[arch.dtype]
    torch.manual_seed(arch.seed)

    class SequenceNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            widths = (arch.features, *arch.units)
            self.rnns = nn.ModuleList(
                (nn.LSTM if cell == "lstm" else nn.GRU)(a, b, batch_first=True, bias=arch.bias, dtype=dt)
                for cell, a, b in zip(arch.cells, widths, widths[1:]))
            self.fc = nn.Linear(arch.units[-1], arch.outputs, dtype=dt)

        def forward(self, x):
            for rnn in self.rnns[:-1]:
                x, _ = rnn(x)
            if arch.head == "out":
                out, _ = self.rnns[-1](x)
                return self.fc(out[:, -1])
            _, state = self.rnns[-1](x)
            h_n = state[0] if isinstance(self.rnns[-1], nn.LSTM) else state
            return self.fc(h_n[-1])

    model = SequenceNet().eval()
    if arch.weight_scale is not None:
        with torch.no_grad():
            for p in model.rnns.parameters():
                p.uniform_(-arch.weight_scale, arch.weight_scale)
    return model


def keras_recurrent_model(arch: RecurrentArch):
    import keras

    L = keras.layers
    # TensorFlow has no bfloat16 QR, which Keras' default orthogonal recurrent initializer needs to build; the
    # port overwrites the weights anyway
    layers = [(L.LSTM if cell == "lstm" else L.GRU)(units, return_sequences=i < len(arch.cells) - 1,
                                                      use_bias=arch.bias, recurrent_initializer="glorot_uniform",
                                                      dtype=arch.dtype)
              for i, (cell, units) in enumerate(zip(arch.cells, arch.units))]
    layers.append(L.Dense(arch.outputs, dtype=arch.dtype))
    inputs = keras.Input(arch.input_shape, dtype=arch.dtype)
    if not arch.functional:
        return keras.Sequential([inputs, *layers])
    h = inputs
    for layer in layers:
        h = layer(h)
    return keras.Model(inputs, h)


def sequences(arch: RecurrentArch, batch: int = 3) -> np.ndarray:
    """Batch-first sequences (N, T, features) in U(-2, 2), as both frameworks take them."""
    return np.random.default_rng(arch.seed).uniform(-2, 2, (batch, *arch.input_shape))


def ported(arch: RecurrentArch):
    """The torch model and its Keras port, weights written by ``port_weights``."""
    from equivalence import port_weights

    pair = torch_recurrent_model(arch), keras_recurrent_model(arch)
    port_weights(*pair)
    return pair
