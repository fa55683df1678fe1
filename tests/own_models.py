"""Users' models in every style the walkers accept, built from widths and activation names.

Each builder writes the model the way a user would (modules, functional ops, separate activation
layers, layers created in another order than they are called), not through the adapters.
"""

from __future__ import annotations

from collections.abc import Sequence

from equivalence.core.activations import family_of

TORCH_STYLES = ("sequential_nested", "modulelist", "custom_functional", "export")
KERAS_STYLES = ("sequential", "functional_layers", "subclass_ops", "nested")


def torch_model(style: str, widths: Sequence[int], activations: Sequence[str], *, dtype: str = "float32"):
    import torch
    import torch.nn.functional as F
    from torch import nn

    from equivalence.frameworks.torch import TORCH_DTYPES, activation_module

    dt = TORCH_DTYPES[dtype]
    torch.manual_seed(len(widths) * 1000 + sum(widths))
    linears = [nn.Linear(i, o, dtype=dt) for i, o in zip(widths[:-1], widths[1:])]
    if style == "sequential_nested":  # Dropout between Linear and its activation, Identity, nesting
        blocks = [nn.Sequential(lin, nn.Dropout(0.3), activation_module(a)) for lin, a in zip(linears, activations)]
        return nn.Sequential(nn.Flatten(), nn.Sequential(*blocks[:1]), *blocks[1:], nn.Identity())

    if style == "modulelist":
        class ModuleListNet(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.layers = nn.ModuleList(linears)
                self.acts = nn.ModuleList([activation_module(a) for a in activations])

            def forward(self, x):
                for layer, act in zip(self.layers, self.acts):
                    x = act(layer(x))
                return x
        return ModuleListNet()

    def functional(name: str):
        family, param = family_of(name)
        return {
            "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "linear": lambda x: x,
            "gelu": lambda x: F.gelu(x), "softmax": lambda x: F.softmax(x, dim=-1),
            "leaky_relu": lambda x: F.leaky_relu(x, negative_slope=param),
            "elu": lambda x: F.elu(x, alpha=1.0 if param is None else param),
        }[family]

    acts = [functional(a) for a in activations]

    class CustomNet(nn.Module):
        """Layers registered last-first: only the execution order is right."""

        def __init__(self) -> None:
            super().__init__()
            for i in reversed(range(len(linears))):
                setattr(self, f"fc{i + 1}", linears[i])

        def forward(self, x):
            x = x.view(x.size(0), -1)
            for i, act in enumerate(acts):
                x = act(getattr(self, f"fc{i + 1}")(x))
                if i == 0:
                    x = F.dropout(x, 0.2, training=self.training)
            return x

    model = CustomNet()
    if style == "custom_functional":
        return model
    assert style == "export", style
    return torch.export.export(model.eval(), (torch.zeros(2, widths[0], dtype=dt),))


def keras_model(style: str, widths: Sequence[int], activations: Sequence[str], *, dtype: str = "float32",
                bias: Sequence[bool] | None = None):
    import keras

    from equivalence.frameworks.keras import keras_activation

    L = keras.layers
    bias = bias or [True] * len(activations)
    outs = widths[1:]

    def dense(i: int, activation=None):
        return L.Dense(outs[i], activation=activation, use_bias=bias[i], dtype=dtype, name=f"dense_{i}")

    if style == "sequential":
        return keras.Sequential([keras.Input((widths[0],), dtype=dtype)]
                                + [dense(i, keras_activation(a)) for i, a in enumerate(activations)])

    def layer(name: str):
        family, param = family_of(name)
        if family == "relu":
            return L.ReLU(dtype=dtype)
        if family == "leaky_relu":
            return L.LeakyReLU(negative_slope=param, dtype=dtype)
        if family == "elu":
            return L.ELU(alpha=1.0 if param is None else param, dtype=dtype)
        if family == "softmax":
            return L.Softmax(dtype=dtype)
        return L.Activation(name, dtype=dtype)

    if style in ("functional_layers", "nested"):
        inputs = keras.Input((widths[0],), dtype=dtype)
        h = inputs
        for i, a in enumerate(activations):
            h = dense(i)(h)
            if i == 0:
                h = L.Dropout(0.3)(h)
            h = layer(a)(h)
        model = keras.Model(inputs, h)
        if style == "functional_layers":
            return model
        outer = keras.Input((widths[0],), dtype=dtype)
        return keras.Model(outer, L.Identity()(model(outer)))

    assert style == "subclass_ops", style
    ops = keras.ops

    def op(name: str):
        family, param = family_of(name)
        return {
            "relu": ops.relu, "sigmoid": ops.sigmoid, "tanh": ops.tanh, "linear": lambda x: x,
            "gelu": lambda x: ops.gelu(x, approximate=False), "softmax": lambda x: ops.softmax(x, axis=-1),
            "leaky_relu": lambda x: ops.leaky_relu(x, negative_slope=param),
            "elu": lambda x: ops.elu(x, alpha=1.0 if param is None else param),
        }[family]

    class Net(keras.Model):
        def __init__(self) -> None:
            super().__init__(dtype=dtype)
            self.stack = [dense(i) for i in reversed(range(len(activations)))]  # created last-first
            self.acts = [op(a) for a in activations]

        def call(self, x):
            for d, act in zip(reversed(self.stack), self.acts):
                x = act(d(x))
            return x

    import numpy as np

    model = Net()
    model(np.zeros((1, widths[0]), dtype=dtype))
    return model


def norm_mlp(widths, dtype: str, *, seed: int = 0, torch_eps: float = 1e-3, torch_momentum: float = 0.01):
    """Linear, BatchNorm1d, ReLU, Linear, LayerNorm, Tanh, Linear in torch (eval mode, random statistics) and
    its Keras port written with Keras' defaults (epsilon 1e-3, momentum 0.99)."""
    import keras
    import torch
    from torch import nn

    from equivalence.frameworks.torch import TORCH_DTYPES

    dt = TORCH_DTYPES[dtype]
    torch.manual_seed(seed)
    n_in, a, b, out = widths
    t = nn.Sequential(nn.Linear(n_in, a, dtype=dt), nn.BatchNorm1d(a, eps=torch_eps, momentum=torch_momentum, dtype=dt),
                      nn.ReLU(), nn.Linear(a, b, dtype=dt), nn.LayerNorm(b, eps=torch_eps, dtype=dt), nn.Tanh(),
                      nn.Linear(b, out, dtype=dt)).eval()
    with torch.no_grad():
        for norm in (t[1], t[4]):
            norm.weight.uniform_(-2, 2)
            norm.bias.uniform_(-1, 1)
        t[1].running_mean.uniform_(-1, 1)
        t[1].running_var.uniform_(0.25, 4)
    L = keras.layers
    k = keras.Sequential([keras.Input((n_in,), dtype=dtype), L.Dense(a, dtype=dtype), L.BatchNormalization(dtype=dtype),
                          L.ReLU(dtype=dtype), L.Dense(b, dtype=dtype), L.LayerNormalization(dtype=dtype),
                          L.Activation("tanh", dtype=dtype), L.Dense(out, dtype=dtype)])
    return t, k


def conv_batchnorm2d(size: int):
    """A torch Conv2d(3, 4, 3), BatchNorm2d (Keras' defaults: eps 1e-3, momentum 0.01) with drawn running
    statistics, ReLU, Flatten and Linear to 2, in eval mode, for ``size`` x ``size`` inputs."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    t = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, eps=1e-3, momentum=0.01), nn.ReLU(), nn.Flatten(),
                      nn.Linear(4 * (size - 2) ** 2, 2)).eval()
    with torch.no_grad():
        t[1].running_mean.uniform_(-1, 1)
        t[1].running_var.uniform_(0.5, 2)
    return t


def norm_after_flatten(norm: str):
    """A torch Conv2d(2, 4, 3), ReLU, Flatten, then a ``"layernorm"`` (LayerNorm(36)) or ``"batchnorm"``
    (BatchNorm1d(36)) with drawn parameters and statistics, and Linear(36, 4), in eval mode, for 2 x 5 x 5 inputs: a
    norm whose parameters are in torch's C, H, W flatten order."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    layer = nn.LayerNorm(36) if norm == "layernorm" else nn.BatchNorm1d(36)
    with torch.no_grad():
        for p in layer.parameters():
            p.uniform_(-2, 2)
        if norm == "batchnorm":
            layer.running_mean.uniform_(-1, 1)
            layer.running_var.uniform_(0.5, 2)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), layer, nn.Linear(36, 4)).eval()


def layer_norm_mlp(*, relu: bool = False, first_scale: float = 1.0):
    """A torch Linear(4, 6), LayerNorm(6) (gamma ``U(0.5, 1.5)``, beta ``U(-1, 1)``), a ReLU if ``relu``, Linear(6, 2),
    in eval mode (seed 5), the first kernel scaled by ``first_scale``; and its parameters as a graph written by hand
    holds them: ``(W0, b0, gamma, beta, W1, b1)``, kernels ``(in, out)``, numpy float32."""
    import torch
    from torch import nn

    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), *([nn.ReLU()] if relu else []), nn.Linear(6, 2)).eval()
    first, norm, last = model[0], model[1], model[-1]
    with torch.no_grad():
        first.weight.mul_(first_scale)
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    parameters = tuple(v.detach().numpy() for v in (first.weight.T, first.bias, norm.weight, norm.bias, last.weight.T,
                                                     last.bias))
    return model, parameters


def layernorm_first(features: int, units: int, dtype: str, *, seed: int = 0):
    """LayerNorm (epsilon 1e-3, drawn gamma and beta) then Linear in torch, and its Keras port (Keras' defaults)."""
    import keras
    import torch
    from torch import nn

    from equivalence.frameworks.torch import TORCH_DTYPES

    dt = TORCH_DTYPES[dtype]
    torch.manual_seed(seed)
    t = nn.Sequential(nn.LayerNorm(features, eps=1e-3, dtype=dt), nn.Linear(features, units, dtype=dt)).eval()
    with torch.no_grad():
        t[0].weight.uniform_(-2, 2)
        t[0].bias.uniform_(-1, 1)
    L = keras.layers
    k = keras.Sequential([keras.Input((features,), dtype=dtype), L.LayerNormalization(dtype=dtype),
                          L.Dense(units, dtype=dtype)])
    return t, k
