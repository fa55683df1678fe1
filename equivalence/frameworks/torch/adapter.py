"""PyTorch adapter. torch ``Linear.weight`` is ``(out, in)``: this module transposes, nobody else."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from equivalence.core.activations import LEAKY_SLOPE, family_of
from equivalence.core.dtypes import numpy_dtype
from equivalence.core.layout import LayerWeights, check_weights
from equivalence.core.spec import ChainSpec, StackSpec
from equivalence.frameworks.base import Adapter, ParamCount

if TYPE_CHECKING:
    from equivalence.core.gradients import Gradients

TORCH_DTYPES = {
    "float64": torch.float64, "float32": torch.float32,
    "float16": torch.float16, "bfloat16": torch.bfloat16,
}

# Our activation name -> torch module, with every argument explicit (defaults are traps:
# nn.GELU() is exact where keras.ops.gelu is not, nn.LeakyReLU() slopes 0.01, nn.Softmax() guesses dim).
ACTIVATION_MODULES = {
    "sigmoid": lambda: nn.Sigmoid(),
    "tanh": lambda: nn.Tanh(),
    "relu": lambda: nn.ReLU(),
    "linear": lambda: nn.Identity(),
    "softmax": lambda: nn.Softmax(dim=-1),
    "log_softmax": lambda: nn.LogSoftmax(dim=-1),
    "gelu": lambda: nn.GELU(approximate="none"),
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "elu": lambda: nn.ELU(alpha=1.0),
    "selu": lambda: nn.SELU(),
    "celu": lambda: nn.CELU(alpha=1.0),
    "silu": lambda: nn.SiLU(),
    "softplus": lambda: nn.Softplus(beta=1.0, threshold=20.0),
    "softsign": lambda: nn.Softsign(),
    "relu6": lambda: nn.ReLU6(),
    "hard_sigmoid": lambda: nn.Hardsigmoid(),
    "hard_silu": lambda: nn.Hardswish(),
    "leaky_relu_0.2": lambda: nn.LeakyReLU(negative_slope=LEAKY_SLOPE),
    "mish": lambda: nn.Mish(),
}


_PARAMETRIC_MODULES = {
    "leaky_relu": lambda p: nn.LeakyReLU(negative_slope=p),
    "elu": lambda p: nn.ELU(alpha=p),
    "celu": lambda p: nn.CELU(alpha=p),
    "softmax_axis": lambda p: nn.Softmax(dim=int(p)),
    "log_softmax_axis": lambda p: nn.LogSoftmax(dim=int(p)),
}


def activation_module(name: str) -> nn.Module:
    """The torch module of any activation name, parametric ones too (``"leaky_relu_0.01"``)."""
    if name in ACTIVATION_MODULES:
        return ACTIVATION_MODULES[name]()
    family, param = family_of(name)
    return _PARAMETRIC_MODULES[family](param)


class ModuleListStack(nn.Module):
    """A subclass holding its layers in registered ``nn.ModuleList`` s."""

    def __init__(self, linears: Sequence[nn.Linear], activations: Sequence[nn.Module]) -> None:
        super().__init__()
        self.linears = nn.ModuleList(linears)
        self.activations = nn.ModuleList(activations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear, act in zip(self.linears, self.activations):
            x = act(linear(x))
        return x


class PlainListStack(nn.Module):
    """The seed notes' loop over a plain python list.

    The forward pass works, but torch does not register modules held in a plain
    list: ``parameters()`` and ``state_dict()`` are empty and ``.double()`` skips
    them. The parameter-count check exists to catch exactly this.
    """

    def __init__(self, linears: Sequence[nn.Linear], activations: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layers = list(zip(linears, activations))  # deliberately NOT an nn.ModuleList

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear, act in self.layers:
            x = act(linear(x))
        return x


def layer_pairs(model: nn.Module | list) -> list[tuple[nn.Linear, nn.Module]]:
    """The ``(Linear, activation)`` pairs of a model of any build style, or of bare layers."""
    if isinstance(model, list):  # bare layers from build_layer
        return model
    if isinstance(model, PlainListStack):
        return list(model.layers)
    if isinstance(model, ModuleListStack):
        return list(zip(model.linears, model.activations))
    if isinstance(model, nn.Sequential):
        children = list(model)
        pairs = []
        for i, child in enumerate(children):
            if isinstance(child, nn.Linear):
                nxt = children[i + 1] if i + 1 < len(children) else nn.Identity()
                pairs.append((child, nn.Identity() if isinstance(nxt, nn.Linear) else nxt))
        return pairs
    raise TypeError(f"torch adapter does not know how to walk a {type(model).__name__}")


def to_numpy(t: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    t = t.detach()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: go through float32, exactly
        return t.float().numpy().astype(dtype)
    return t.numpy().copy()


def to_tensor(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    a = np.asarray(a)
    if dtype == torch.bfloat16:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(dtype)
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


class TorchAdapter(Adapter):
    name = "torch"
    kernel_layout = "out_in"
    chain_builder = True

    def build(self, spec: StackSpec, style: str) -> nn.Module:
        self.check_style(style)
        dtype = TORCH_DTYPES[spec.dtype]
        linears = [nn.Linear(i, o, bias=spec.bias, dtype=dtype) for i, o in spec.layer_shapes]
        acts = [activation_module(a) for a in spec.activations]
        if style == "sequential":
            return nn.Sequential(*[m for pair in zip(linears, acts) for m in pair])
        if style == "modulelist":
            return ModuleListStack(linears, acts)
        return PlainListStack(linears, acts)

    def build_layer(self, n_in: int, n_out: int, activation: str, *, bias: bool,
                    dtype: str) -> tuple[nn.Linear, nn.Module]:
        return nn.Linear(n_in, n_out, bias=bias, dtype=TORCH_DTYPES[dtype]), activation_module(activation)

    def get_weights(self, model: nn.Module) -> list[LayerWeights]:
        # torch stores (out, in); the canonical layout is (in, out).
        return [LayerWeights(W.T.copy(), b) for W, b in self.native_weights(model)]

    def native_weights(self, model: nn.Module) -> list[tuple[np.ndarray, np.ndarray | None]]:
        out = []
        for linear, _ in layer_pairs(model):
            dt = numpy_dtype_of(linear.weight)
            out.append((to_numpy(linear.weight, dt), None if linear.bias is None else to_numpy(linear.bias, dt)))
        return out

    def build_chain(self, spec: ChainSpec, weights: Sequence[LayerWeights]) -> list[Any]:
        from equivalence.frameworks.torch.chain import build_chain

        if self.chainless():
            return super().build_chain(spec, weights)  # refuses

        return build_chain(spec, weights, TORCH_DTYPES[spec.dtype], activation_module)

    def set_weights(self, model: nn.Module, weights: Sequence[LayerWeights]) -> None:
        linears = [linear for linear, _ in layer_pairs(model)]
        check_weights([(lin.in_features, lin.out_features) for lin in linears],
                      [lin.bias is not None for lin in linears], weights, what=f"{self.name} set_weights")
        with torch.no_grad():
            for linear, (W, b) in zip(linears, weights):
                linear.weight.copy_(to_tensor(np.asarray(W).T, linear.weight.dtype))
                if b is not None:
                    linear.bias.copy_(to_tensor(b, linear.bias.dtype))

    def apply_layer(self, model: nn.Module, index: int, x: np.ndarray) -> np.ndarray:
        linear, act = layer_pairs(model)[index]
        with torch.no_grad():
            y = act(linear(to_tensor(x, linear.weight.dtype)))
        return to_numpy(y, numpy_dtype_of(linear.weight))

    def model_forward(self, model: nn.Module, x: np.ndarray) -> np.ndarray:
        layers = layer_pairs(model)
        with torch.no_grad():
            y = model(to_tensor(x, layers[0][0].weight.dtype))
        return to_numpy(y, numpy_dtype_of(layers[-1][0].weight))

    def count_params(self, model: nn.Module) -> ParamCount:
        per_layer = tuple(sum(p.numel() for p in linear.parameters() if p.requires_grad)
                          for linear, _ in layer_pairs(model))
        params = (p for linear, _ in model for p in linear.parameters()) if isinstance(model, list) \
            else model.parameters()
        trainable = [p for p in params if p.requires_grad]
        return ParamCount(per_layer, sum(p.numel() for p in trainable), len(trainable))

    def loss_gradients(self, model: nn.Module, x: np.ndarray) -> Gradients:
        from equivalence.core.gradients import Gradients

        layers = layer_pairs(model)
        dtype = layers[0][0].weight.dtype
        xt = to_tensor(x, dtype).requires_grad_(True)
        self._backward_mean(model, layers, xt)
        dt = numpy_dtype_of(layers[0][0].weight)
        grads = [LayerWeights(to_numpy(linear.weight.grad, dt).T.copy(),  # (out, in) -> canonical (in, out)
                              None if linear.bias is None else to_numpy(linear.bias.grad, dt))
                 for linear, _ in layers]
        return Gradients(tuple(grads), to_numpy(xt.grad, numpy_dtype_of(layers[0][0].weight)))

    def sgd_step(self, model: nn.Module, x: np.ndarray, *, learning_rate: float) -> None:
        layers = layer_pairs(model)
        params = [p for linear, _ in layers for p in linear.parameters()]
        optimizer = torch.optim.SGD(params, lr=learning_rate, momentum=0.0, dampening=0.0, weight_decay=0.0,
                                    nesterov=False)
        self._backward_mean(model, layers, to_tensor(x, layers[0][0].weight.dtype))
        optimizer.step()

    @staticmethod
    def _backward_mean(model: nn.Module | list, layers: list, xt: torch.Tensor) -> None:
        """``mean(forward(x)).backward()`` from zeroed gradients: ``.grad`` accumulates across calls."""
        for linear, _ in layers:
            for p in linear.parameters():
                p.grad = None
        y = xt
        if isinstance(model, list):
            for linear, act in layers:
                y = act(linear(y))
        else:
            y = model(y)
        y.mean().backward()

    def save_model(self, model: nn.Module, path: str | os.PathLike) -> None:
        state = model.state_dict()
        if not state:
            raise ValueError(f"{type(model).__name__} registers no parameters (layers held in a plain python list?): "
                             "its state_dict is empty, so a checkpoint would hold no weights")
        torch.save(state, os.fspath(path))

    def load(self, path: str | os.PathLike, spec: StackSpec, style: str) -> nn.Module:
        model = self.build(spec, style)
        state = torch.load(os.fspath(path), weights_only=True)  # no pickle of arbitrary objects
        model.load_state_dict(state, strict=True)
        return model

    def activation(self, name: str, x: np.ndarray, dtype: str) -> np.ndarray:
        with torch.no_grad():
            y = ACTIVATION_MODULES[name]()(to_tensor(np.asarray(x, dtype=np.float64), TORCH_DTYPES[dtype]))
        return to_numpy(y, np.dtype(np.float64)).astype(np.float64)

    def versions(self) -> dict[str, str]:
        """Versions, threads and the kernel path: ``cpu_capability`` is the vectorised ATen kernel set torch
        picked (``AVX512``, ``AVX2``, ``DEFAULT``; ``ATEN_CPU_CAPABILITY`` lowers it). torch's own oneDNN
        (GELU among others) follows ``ONEDNN_MAX_CPU_ISA`` instead: ``kernel.onednn_isa`` in the fingerprint."""
        return {"torch": torch.__version__, "torch_threads": str(torch.get_num_threads()),
                "torch_interop_threads": str(torch.get_num_interop_threads()),
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "mkldnn": "available" if torch.backends.mkldnn.is_available() else "not built"}


def numpy_dtype_of(t: torch.Tensor) -> np.dtype:
    name = {v: k for k, v in TORCH_DTYPES.items()}[t.dtype]
    return numpy_dtype(name)
