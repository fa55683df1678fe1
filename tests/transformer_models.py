"""Users' transformer encoders, written as a user would in torch (an ``nn.Module`` of blocks) and in Keras (a
functional model with ``layers.Add``, or a subclassed model computing ``x + f(x)``), from one drawn architecture:
token ids, an Embedding, one or two blocks of self-attention and a feed-forward network (a Linear, its activation,
a Linear, applied to every token), each with its residual Add and LayerNorm, then a mean over the tokens and a head.

``pre_norm``: each sublayer ``x + f(norm(x))`` and a final LayerNorm after the blocks; else post-norm,
``norm(x + f(x))``. ``dropout``: an ``nn.Dropout``/``layers.Dropout`` on each branch before its Add (skipped at
inference). ``skip=False`` leaves the feed-forward Add out of the Keras port (the port that forgot a skip);
``keras_epsilon``: the Keras LayerNormalization's epsilon when it differs from torch's (the default-epsilon trap).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

ACTIVATIONS = ("relu", "gelu", "tanh", "silu")


@dataclass(frozen=True)
class TransformerArch:
    vocab: int
    heads: int
    head_size: int
    length: int
    ffn: int
    activation: str
    pre_norm: bool
    blocks: int
    n_out: int
    dtype: str
    seed: int
    epsilon: float = 1e-3
    dropout: bool = False
    keras_style: str = "functional"  # | "subclass"
    skip: bool = True
    keras_epsilon: float | None = None

    @property
    def dim(self) -> int:
        return self.heads * self.head_size


@st.composite
def transformer_archs(draw: st.DrawFn, *, dtype: str) -> TransformerArch:
    """Small shapes: 1-3 heads of 1-4 features, 1-7 tokens, a feed-forward width of 1-24."""
    return TransformerArch(
        vocab=draw(st.integers(2, 30), label="vocab"), heads=draw(st.integers(1, 3), label="heads"),
        head_size=draw(st.integers(1, 4), label="head size"), length=draw(st.integers(1, 7), label="length"),
        ffn=draw(st.integers(1, 24), label="ffn"), activation=draw(st.sampled_from(ACTIVATIONS), label="activation"),
        pre_norm=draw(st.booleans(), label="pre_norm"), blocks=draw(st.integers(1, 2), label="blocks"),
        n_out=draw(st.integers(1, 4), label="n_out"), dtype=dtype, seed=draw(st.integers(0, 2**16), label="seed"),
        epsilon=draw(st.sampled_from((1e-3, 1e-5)), label="epsilon"), dropout=draw(st.booleans(), label="dropout"),
        keras_style=draw(st.sampled_from(("functional", "subclass")), label="keras style"))


def torch_transformer_model(arch: TransformerArch):
    """``head(mean(blocks(embed(ids))))``, every parameter drawn away from the framework's neutral start (torch
    starts its attention biases and LayerNorm offsets at zero and its scales at one: a mix-up would hide)."""
    import torch
    from torch import nn

    from equivalence.frameworks.torch import TORCH_DTYPES, activation_module

    dt, E = TORCH_DTYPES[arch.dtype], arch.dim
    torch.manual_seed(arch.seed)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(E, arch.heads, batch_first=True, dtype=dt)
            self.norm1 = nn.LayerNorm(E, eps=arch.epsilon, dtype=dt)
            self.fc1 = nn.Linear(E, arch.ffn, dtype=dt)
            self.act = activation_module(arch.activation)
            self.fc2 = nn.Linear(arch.ffn, E, dtype=dt)
            self.norm2 = nn.LayerNorm(E, eps=arch.epsilon, dtype=dt)
            self.drop = nn.Dropout(0.1) if arch.dropout else nn.Identity()

        def attend(self, h: torch.Tensor) -> torch.Tensor:
            return self.drop(self.attn(h, h, h, need_weights=False)[0])

        def feed_forward(self, h: torch.Tensor) -> torch.Tensor:
            return self.drop(self.fc2(self.act(self.fc1(h))))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if arch.pre_norm:
                x = x + self.attend(self.norm1(x))
                return x + self.feed_forward(self.norm2(x))
            x = self.norm1(x + self.attend(x))
            return self.norm2(x + self.feed_forward(x))

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(arch.vocab, E, dtype=dt)
            self.blocks = nn.ModuleList(Block() for _ in range(arch.blocks))
            self.norm = nn.LayerNorm(E, eps=arch.epsilon, dtype=dt) if arch.pre_norm else nn.Identity()
            self.head = nn.Linear(E, arch.n_out, dtype=dt)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            x = self.embed(ids)
            for block in self.blocks:
                x = block(x)
            return self.head(self.norm(x).mean(1))

    model = Encoder().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.MultiheadAttention):
                module.in_proj_bias.uniform_(-1, 1)
                module.out_proj.bias.uniform_(-1, 1)
            if isinstance(module, nn.LayerNorm):
                module.weight.uniform_(0.5, 2.0).mul_(torch.sign(torch.rand_like(module.weight) - 0.5))
                module.bias.uniform_(-1, 1)
    return model


def keras_transformer_model(arch: TransformerArch):
    """The Keras port of ``torch_transformer_model(arch)``, its weights not yet written."""
    import keras

    if arch.keras_style == "subclass":
        return _subclassed(arch)
    L, dtype, E = keras.layers, arch.dtype, arch.dim
    epsilon = arch.keras_epsilon if arch.keras_epsilon is not None else arch.epsilon

    def norm(x):
        return L.LayerNormalization(epsilon=epsilon, dtype=dtype)(x)

    def drop(x):
        return L.Dropout(0.1, dtype=dtype)(x) if arch.dropout else x

    def attend(h):
        return drop(L.MultiHeadAttention(arch.heads, arch.head_size, dtype=dtype)(h, h))

    def feed_forward(h, last: bool):
        f = drop(L.Dense(E, dtype=dtype)(L.Dense(arch.ffn, activation=arch.activation, dtype=dtype)(h)))
        return L.Add(dtype=dtype)([x, f]) if arch.skip or not last else f

    ids = keras.Input((arch.length,), dtype="int32")
    x = L.Embedding(arch.vocab, E, dtype=dtype)(ids)
    for i in range(arch.blocks):
        last = i == arch.blocks - 1
        if arch.pre_norm:
            x = L.Add(dtype=dtype)([x, attend(norm(x))])
            x = feed_forward(norm(x), last)
        else:
            x = norm(L.Add(dtype=dtype)([x, attend(x)]))
            x = norm(feed_forward(x, last))
    if arch.pre_norm:
        x = norm(x)
    return keras.Model(ids, L.Dense(arch.n_out, dtype=dtype)(L.GlobalAveragePooling1D(dtype=dtype)(x)))


def _subclassed(arch: TransformerArch):
    """A subclassed port adding with ``+``, built by a call on token ids."""
    import keras
    import numpy as np

    L, dtype, E = keras.layers, arch.dtype, arch.dim

    class Encoder(keras.Model):
        def __init__(self) -> None:
            super().__init__(dtype=dtype)
            n = arch.blocks
            self.embed = L.Embedding(arch.vocab, E, dtype=dtype)
            self.attn = [L.MultiHeadAttention(arch.heads, arch.head_size, dtype=dtype) for _ in range(n)]
            self.norm1 = [L.LayerNormalization(epsilon=arch.epsilon, dtype=dtype) for _ in range(n)]
            self.fc1 = [L.Dense(arch.ffn, activation=arch.activation, dtype=dtype) for _ in range(n)]
            self.fc2 = [L.Dense(E, dtype=dtype) for _ in range(n)]
            self.norm2 = [L.LayerNormalization(epsilon=arch.epsilon, dtype=dtype) for _ in range(n)]
            self.norm = L.LayerNormalization(epsilon=arch.epsilon, dtype=dtype) if arch.pre_norm else None
            self.drop = L.Dropout(0.1, dtype=dtype) if arch.dropout else None
            self.pool, self.head = L.GlobalAveragePooling1D(dtype=dtype), L.Dense(arch.n_out, dtype=dtype)

        def branch(self, h):
            return h if self.drop is None else self.drop(h)

        def call(self, ids):
            x = self.embed(ids)
            for i in range(arch.blocks):
                if arch.pre_norm:
                    h = self.norm1[i](x)
                    x = x + self.branch(self.attn[i](h, h))
                    x = x + self.branch(self.fc2[i](self.fc1[i](self.norm2[i](x))))
                else:
                    x = self.norm1[i](x + self.branch(self.attn[i](x, x)))
                    x = self.norm2[i](x + self.branch(self.fc2[i](self.fc1[i](x))))
            return self.head(self.pool(x if self.norm is None else self.norm(x)))

    model = Encoder()
    model(np.zeros((1, arch.length), dtype="int32"))
    return model


def token_ids(arch: TransformerArch, batch: int = 3):
    import numpy as np

    return np.random.default_rng(arch.seed).integers(0, arch.vocab, (batch, arch.length))
