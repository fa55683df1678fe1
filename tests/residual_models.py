"""Users' residual MLPs, written as a user would in torch (an ``nn.Module`` whose ``forward`` adds) and in Keras (a
functional model with ``layers.Add``, or a subclassed model computing ``x + f(x)``), from one drawn architecture.

An architecture: an optional stem (Linear + tanh) whose output is the skip, else the input is; one or two residual
blocks ``y = after(fc2(act(norm(fc1(x)))) + x)``, or with ``projection`` ``+ proj(x)`` (a Linear on the shortcut:
two computed branches); a head. ``skip=False`` builds the same layers without the Add (the port that forgot the
skip connection).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

ACTIVATIONS = ("relu", "tanh", "sigmoid", "silu")
AFTER = ("linear", "relu", "tanh")


@dataclass(frozen=True)
class ResidualArch:
    n_in: int
    stem: int | None  # the stem's width (the blocks' width), or None: the blocks take the input
    hidden: int
    blocks: int
    activation: str
    after: str  # the activation applied to each block's sum
    norm: bool  # a LayerNorm in each branch
    n_out: int
    dtype: str
    seed: int
    keras_style: str = "functional"  # | "subclass"
    skip: bool = True
    projection: bool = False  # the shortcut through a Linear: a(x) + b(x)

    @property
    def width(self) -> int:
        return self.n_in if self.stem is None else self.stem


@st.composite
def residual_archs(draw: st.DrawFn, *, dtype: str) -> ResidualArch:
    return ResidualArch(
        n_in=draw(st.integers(1, 12), label="n_in"), stem=draw(st.none() | st.integers(1, 12), label="stem"),
        hidden=draw(st.integers(1, 16), label="hidden"), blocks=draw(st.integers(1, 2), label="blocks"),
        activation=draw(st.sampled_from(ACTIVATIONS), label="activation"),
        after=draw(st.sampled_from(AFTER), label="after"), norm=draw(st.booleans(), label="norm"),
        n_out=draw(st.integers(1, 6), label="n_out"), dtype=dtype, seed=draw(st.integers(0, 2**16), label="seed"),
        keras_style=draw(st.sampled_from(("functional", "subclass")), label="keras style"),
        projection=draw(st.booleans(), label="projection"))


def torch_residual_model(arch: ResidualArch):
    import torch
    from torch import nn

    from equivalence.frameworks.torch import TORCH_DTYPES

    dt = TORCH_DTYPES[arch.dtype]
    modules = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "silu": nn.SiLU, "linear": nn.Identity}
    torch.manual_seed(arch.seed)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(arch.width, arch.hidden, dtype=dt)
            self.norm = nn.LayerNorm(arch.hidden, eps=1e-3, dtype=dt) if arch.norm else nn.Identity()
            self.act = modules[arch.activation]()
            self.fc2 = nn.Linear(arch.hidden, arch.width, dtype=dt)
            self.proj = nn.Linear(arch.width, arch.width, dtype=dt) if arch.projection else nn.Identity()
            self.after = modules[arch.after]()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.fc2(self.act(self.norm(self.fc1(x))))
            return self.after(h + self.proj(x) if arch.skip else h)

    class ResidualMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Linear(arch.n_in, arch.stem, dtype=dt) if arch.stem is not None else None
            self.blocks = nn.ModuleList(Block() for _ in range(arch.blocks))
            self.head = nn.Linear(arch.width, arch.n_out, dtype=dt)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.stem is not None:
                x = torch.tanh(self.stem(x))
            for block in self.blocks:
                x = block(x)
            return self.head(x)

    model = ResidualMLP().eval()
    if arch.norm:
        with torch.no_grad():
            for block in model.blocks:
                block.norm.weight.uniform_(-2, 2)
                block.norm.bias.uniform_(-1, 1)
    return model


def keras_residual_model(arch: ResidualArch):
    """The Keras port of ``torch_residual_model(arch)``, its weights not yet written."""
    import keras

    L, dtype = keras.layers, arch.dtype

    def branch(x):
        h = L.Dense(arch.hidden, dtype=dtype)(x)
        if arch.norm:
            h = L.LayerNormalization(epsilon=1e-3, dtype=dtype)(h)
        return L.Dense(arch.width, dtype=dtype)(L.Activation(arch.activation, dtype=dtype)(h))

    if arch.keras_style == "subclass":
        return _subclassed(arch)
    x = inputs = keras.Input((arch.n_in,), dtype=dtype)
    if arch.stem is not None:
        x = L.Dense(arch.stem, activation="tanh", dtype=dtype)(x)
    for _ in range(arch.blocks):
        h = branch(x)
        shortcut = L.Dense(arch.width, dtype=dtype)(x) if arch.projection else x
        x = L.Activation(arch.after, dtype=dtype)(L.Add(dtype=dtype)([h, shortcut]) if arch.skip else h)
    return keras.Model(inputs, L.Dense(arch.n_out, dtype=dtype)(x))


def _subclassed(arch: ResidualArch):
    import keras

    L, dtype, ops = keras.layers, arch.dtype, keras.ops

    def act(name: str):  # keras.ops, as a subclassed model calls them
        return (lambda x: x) if name == "linear" else getattr(ops, name)

    class ResidualMLP(keras.Model):
        def __init__(self) -> None:
            super().__init__(dtype=dtype)
            self.stem = L.Dense(arch.stem, dtype=dtype) if arch.stem is not None else None
            self.fc1 = [L.Dense(arch.hidden, dtype=dtype) for _ in range(arch.blocks)]
            self.norm = [L.LayerNormalization(epsilon=1e-3, dtype=dtype) for _ in range(arch.blocks)] \
                if arch.norm else []
            self.fc2 = [L.Dense(arch.width, dtype=dtype) for _ in range(arch.blocks)]
            self.proj = [L.Dense(arch.width, dtype=dtype) for _ in range(arch.blocks)] if arch.projection else []
            self.head = L.Dense(arch.n_out, dtype=dtype)

        def call(self, x):
            if self.stem is not None:
                x = ops.tanh(self.stem(x))
            for i in range(arch.blocks):
                h = self.fc1[i](x)
                if self.norm:
                    h = self.norm[i](h)
                h = self.fc2[i](act(arch.activation)(h))
                shortcut = self.proj[i](x) if self.proj else x
                x = act(arch.after)(h + shortcut if arch.skip else h)
            return self.head(x)

    import numpy as np

    model = ResidualMLP()
    model(np.zeros((1, arch.n_in), dtype=dtype))  # built by a call: the walker reads built layers
    return model


def drawn_weights(model, seed: int = 4):
    """``model`` with every weight drawn from U(-1, 1) (a BatchNorm's variance from U(0.2, 1)): no bias zero, no norm
    the identity."""
    import numpy as np

    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(0.2 if "variance" in w.path else -1, 1, w.shape).astype("float32")
                       for w in model.weights])
    return model


def keras_block_models() -> dict:
    """``relu(fc2(relu(fc1(x))) + x)``; ``Add()([a(fc1(stem)), proj(stem)])`` (two computed branches); a conv
    block ``relu(bn2(c2(relu(c1(s)))) + s)`` after a stem of conv, BatchNorm, ReLU; an Embedding and
    ``Add()([e, ff(e)])`` token by token, then a mean over the tokens."""
    import keras

    L = keras.layers
    x = dense_in = keras.Input((4,))
    h = L.Dense(4, name="fc2")(L.Dense(6, activation="relu", name="fc1")(x))
    y = L.Activation("relu", name="after")(L.Add(name="add")([h, x]))
    dense = keras.Model(dense_in, L.Dense(3, name="head")(y))
    s = L.Dense(5, activation="tanh", name="stem")(proj_in := keras.Input((4,)))
    a = L.Dense(5, name="a")(L.Dense(6, activation="relu", name="fc1")(s))
    projection = keras.Model(proj_in, L.Dense(3, name="head")(L.Add(name="add")([a, L.Dense(5, name="proj")(s)])))
    conv_in = keras.Input((6, 6, 3))
    s = L.Activation("relu")(L.BatchNormalization(name="bn0")(L.Conv2D(4, 3, padding="same", name="stem")(conv_in)))
    h = L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(s)
    h = L.BatchNormalization(name="bn2")(L.Conv2D(4, 3, padding="same", name="c2")(h))
    y = L.Activation("relu", name="after")(L.Add(name="add")([h, s]))
    conv = keras.Model(conv_in, L.Dense(2, name="head")(L.Flatten()(L.MaxPooling2D(name="pool")(y))))
    ids = keras.Input((5,), dtype="int32")
    e = L.Embedding(10, 4, name="emb")(ids)
    t = L.Add(name="add")([e, L.Dense(4, name="ff")(e)])
    tokens = keras.Model(ids, L.Dense(2, name="head")(L.GlobalAveragePooling1D(name="mean")(t)))
    return {name: drawn_weights(m) for name, m in
            {"dense": dense, "projection": projection, "conv": conv, "tokens": tokens}.items()}
