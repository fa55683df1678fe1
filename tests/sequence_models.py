"""Users' sequence models, written as a user would in torch and in Keras, from one drawn architecture: token ids,
an Embedding, optionally a multi-head self-attention (and its activation), a mean over the tokens, a Dense."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st


@dataclass(frozen=True)
class SequenceArch:
    vocab: int
    dim: int
    length: int
    heads: int | None  # None: no attention
    activation: str  # after the attention
    units: int
    dtype: str
    seed: int
    padding_idx: int | None = None
    bias: bool = True
    need_weights: bool = False  # torch's default True takes another kernel path than False (the fast path)
    table_scale: float = 1.0  # the embedding table, torch's N(0, 1) init times this


@st.composite
def sequence_archs(draw: st.DrawFn, *, dtype: str, attention: bool | None = None, vocab: tuple[int, int] = (2, 40),
                   heads: int = 4, head_size: int = 4, length: int = 9,
                   table_scales: tuple[float, ...] = (1.0,)) -> SequenceArch:
    """Small shapes by default: vocab 2-40, head size 1-4, 1-4 heads, 1-9 tokens (``make ratios`` widens them)."""
    max_heads = heads
    heads = draw(st.integers(1, max_heads), label="heads")
    with_attention = draw(st.booleans(), label="attention") if attention is None else attention
    dim = heads * draw(st.integers(1, head_size), label="head size") if with_attention else \
        draw(st.integers(1, 2 * head_size))
    vocab = draw(st.integers(*vocab), label="vocab")
    table_scale = draw(st.sampled_from(table_scales), label="table scale") if len(table_scales) > 1 else \
        table_scales[0]
    return SequenceArch(vocab, dim, draw(st.integers(1, length), label="length"), heads if with_attention else None,
                        draw(st.sampled_from(("linear", "relu", "tanh")), label="activation"),
                        draw(st.integers(1, 4), label="units"), dtype, draw(st.integers(0, 2**16), label="seed"),
                        draw(st.sampled_from((None, 0)), label="padding_idx"),
                        draw(st.booleans(), label="bias") if with_attention else True,
                        draw(st.booleans(), label="need_weights"), table_scale)


def torch_sequence_model(arch: SequenceArch):
    """A subclass, as a port writes one: ``fc(act(attn(e, e, e)[0]).mean(1))``."""
    import torch
    from torch import nn

    from equivalence.frameworks.torch import TORCH_DTYPES, activation_module

    dt = TORCH_DTYPES[arch.dtype]
    torch.manual_seed(arch.seed)

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(arch.vocab, arch.dim, padding_idx=arch.padding_idx, dtype=dt)
            self.attn = None if arch.heads is None else nn.MultiheadAttention(
                arch.dim, arch.heads, batch_first=True, bias=arch.bias, dtype=dt)
            self.act = activation_module(arch.activation) if arch.heads is not None else nn.Identity()
            self.fc = nn.Linear(arch.dim, arch.units, dtype=dt)

        def forward(self, ids):
            h = self.embed(ids)
            if self.attn is not None:
                h, _ = self.attn(h, h, h, need_weights=arch.need_weights)
                h = self.act(h)
            return self.fc(h.mean(dim=1))

    model = Classifier().eval()
    if arch.table_scale != 1.0:
        with torch.no_grad():
            model.embed.weight.mul_(arch.table_scale)
    if arch.heads is not None and arch.bias:
        with torch.no_grad():  # torch starts its attention biases at zero: draw them, or a bias mix-up hides
            model.attn.in_proj_bias.uniform_(-1, 1)
            model.attn.out_proj.bias.uniform_(-1, 1)
    return model


def keras_sequence_model(arch: SequenceArch):
    """A functional Keras model (the attention takes two inputs, so not a Sequential)."""
    import keras

    L = keras.layers
    ids = keras.Input((arch.length,), dtype="int32")
    h = L.Embedding(arch.vocab, arch.dim, dtype=arch.dtype)(ids)
    if arch.heads is not None:
        h = L.MultiHeadAttention(arch.heads, arch.dim // arch.heads, use_bias=arch.bias, dtype=arch.dtype)(h, h)
        if arch.activation != "linear":
            h = L.Activation(arch.activation, dtype=arch.dtype)(h)
    h = L.GlobalAveragePooling1D(dtype=arch.dtype)(h)
    return keras.Model(ids, L.Dense(arch.units, dtype=arch.dtype)(h))


def token_ids(arch: SequenceArch, batch: int = 3):
    import numpy as np

    return np.random.default_rng(arch.seed).integers(0, arch.vocab, (batch, arch.length))
