"""A chain of layers of any kind (``equivalence.core.chain``) built as a torch model, as a user writes one:
``nn.Sequential`` of ``Conv1d/2d``, ``MaxPool/AvgPool``, ``nn.Flatten``, ``BatchNorm1d/2d`` (eval mode),
``LayerNorm`` and ``Linear``, each followed by its activation module. A chain of sequence or recurrent layers
(``nn.Embedding``, ``nn.MultiheadAttention``, ``nn.LSTM``, ``nn.GRU``, a mean over the tokens) is a module whose
``forward`` calls them as a user's does (``CALLS``: ``attn(h, h, h)[0]``, ``lstm(h)[0]`` then ``[:, -1]``,
``h.mean(1)``): they return tuples or are no module, so no ``nn.Sequential`` holds them; that module also adds a
residual Add's skip (``JOINS``: ``h = x + h``, an earlier value plus the chain's output) and starts a second branch
from an earlier value (``a(x) + b(x)``: ``b``'s first layer takes ``x``). The model is then walked
like a user's own (``walk``), so the golden vectors and the report judge exactly the layers the own-model path runs.

One entry per kind in ``LAYERS``: ``(kind, weights, dtype, rank) -> module`` (None: a call without a module).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from equivalence.core.adapter import FrameworkRefused
from equivalence.core.kinds import LayerWeights
from equivalence.core.spec import ChainSpec
from equivalence.core.walk import DenseUnit
from equivalence.frameworks.torch.walk import walk


def _symmetric(padding: tuple[tuple[int, int], ...], what: str) -> tuple[int, ...]:
    if any(before != after for before, after in padding):
        raise FrameworkRefused(f"torch pads both ends alike: a {what} padded {padding} has no torch module")
    return tuple(before for before, _ in padding)


def _conv(kind: Any, weights: LayerWeights, dt: Any) -> nn.Module:
    cls = {1: nn.Conv1d, 2: nn.Conv2d}[kind.rank]
    return cls(kind.in_channels, kind.out_channels, kind.kernel, stride=kind.strides,
               padding=_symmetric(kind.padding, "conv"), bias=weights.b is not None, dtype=dt)


def _pool(kind: Any, weights: LayerWeights, dt: Any) -> nn.Module:
    rank, padding = len(kind.size), _symmetric(kind.padding, "pooling layer")
    if kind.op == "max":
        return {1: nn.MaxPool1d, 2: nn.MaxPool2d}[rank](kind.size, stride=kind.strides, padding=padding)
    return {1: nn.AvgPool1d, 2: nn.AvgPool2d}[rank](kind.size, stride=kind.strides, padding=padding,
                                                    count_include_pad=kind.count_include_pad)


def _batchnorm(kind: Any, weights: LayerWeights, dt: Any, rank: int) -> nn.Module:
    cls = nn.BatchNorm2d if rank == 2 else nn.BatchNorm1d
    return cls(kind.features, eps=kind.epsilon, momentum=round(1 - kind.momentum, 12), dtype=dt)


LAYERS: dict[str, Callable[..., nn.Module]] = {
    "dense": lambda kind, w, dt, rank: nn.Linear(*w.W.shape, bias=w.b is not None, dtype=dt),
    "conv": lambda kind, w, dt, rank: _conv(kind, w, dt),
    "pool": lambda kind, w, dt, rank: _pool(kind, w, dt),
    "flatten": lambda kind, w, dt, rank: nn.Flatten(),
    "batchnorm": _batchnorm,
    "layernorm": lambda kind, w, dt, rank: nn.LayerNorm(kind.features, eps=kind.epsilon, dtype=dt),
    "embedding": lambda kind, w, dt, rank: nn.Embedding(kind.rows, kind.dim, dtype=dt),
    "mean": lambda kind, w, dt, rank: None,
    "attention": lambda kind, w, dt, rank: nn.MultiheadAttention(kind.embed_dim, kind.heads, bias=w.b is not None,
                                                                 batch_first=True, dtype=dt),
    "lstm": lambda kind, w, dt, rank: nn.LSTM(kind.features, kind.units, bias=w.b is not None, batch_first=True,
                                              dtype=dt),
    "gru": lambda kind, w, dt, rank: nn.GRU(kind.features, kind.units, bias=w.b is not None, batch_first=True,
                                            dtype=dt),
    "add": lambda kind, w, dt, rank: None,
    "branch": lambda kind, w, dt, rank: None,
}
"""Each kind's torch module: ``(kind, canonical weights, torch dtype, spatial rank of its input) -> module``."""


def _recurrent_call(module: nn.Module, kind: Any, x: torch.Tensor) -> torch.Tensor:
    out = module(x)[0]
    return out if kind.return_sequences else out[:, -1]


CALLS: dict[str, Callable[[nn.Module | None, Any, torch.Tensor], torch.Tensor]] = {
    "attention": lambda module, kind, x: module(x, x, x, need_weights=False)[0],
    "mean": lambda module, kind, x: x.mean(1),
    "lstm": _recurrent_call,
    "gru": _recurrent_call,
}
"""The kinds a ``forward`` calls otherwise than ``module(x)``: ``(module, kind, x) -> the layer's output``."""

JOINS: dict[str, Callable[[Any, torch.Tensor, Sequence[torch.Tensor]], torch.Tensor]] = {
    "add": lambda kind, x, earlier: earlier[kind.skip + 1] + x,
    "branch": lambda kind, x, earlier: earlier[kind.source + 1],
}
"""The kinds that take an earlier value (``earlier``: the input, then every layer's output): ``(kind, x, earlier)``.
The Add is written ``skip + branch``: ``a(x) + b(x)`` with ``a`` evaluated first, as the Keras chain's
``Add()([a, b])``."""


class SequenceChain(nn.Module):
    """A chain whose ``forward`` calls each layer as ``CALLS`` or ``JOINS`` say (else ``module(x)``), then its
    activation."""

    def __init__(self, steps: Sequence[tuple[Any, nn.Module | None, nn.Module | None]]) -> None:
        super().__init__()
        self.layers = nn.ModuleList([m for _, module, act in steps for m in (module, act) if m is not None])
        self.steps = list(steps)  # registered in ``layers``; fx finds them there by identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        earlier = [x]
        for kind, module, act in self.steps:
            if kind.name in JOINS:
                x = JOINS[kind.name](kind, x, earlier)
            else:
                x = CALLS[kind.name](module, kind, x) if kind.name in CALLS else module(x)
            if act is not None:
                x = act(x)
            earlier.append(x)
        return x


def build_chain(spec: ChainSpec, weights: Sequence[LayerWeights], dt: Any,
                activation_module: Callable[[str], nn.Module]) -> list[DenseUnit]:
    """``spec`` as an ``nn.Sequential`` in eval mode holding ``weights``, in torch dtype ``dt``, each activation
    ``activation_module(name)`` (the adapter's): its walked units, one per layer."""
    steps: list[tuple[Any, nn.Module | None, nn.Module | None]] = []
    rank = len(spec.input_shape) - 1
    for kind, layer_weights, activation in zip(spec.kinds, weights, spec.activations):
        steps.append((kind, LAYERS[kind.name](kind, layer_weights, dt, rank),
                      None if activation == "linear" else activation_module(activation)))
        if kind.name == "flatten":
            rank = 0
    if any(kind.name in CALLS or kind.name in JOINS or getattr(kind, "integer_input", False) for kind in spec.kinds):
        model: nn.Module = SequenceChain(steps).eval()
    else:
        model = nn.Sequential(*[m for _, module, act in steps for m in (module, act) if m is not None]).eval()
    units = walk(model, input_shape=tuple(spec.input_shape))  # an Embedding reads its sequence length there
    for unit, layer_weights in zip(units, weights):
        if unit.write is not None and layer_weights.W.size:
            unit.write(layer_weights.W, layer_weights.b)
    return units
