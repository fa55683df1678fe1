"""Dense layers computed with numpy: ``x @ W + b`` in the layer's dtype, then the activation.

The activation is evaluated in float64 and rounded to the dtype once, which is within the error model;
float16 and bfloat16 are declared missing (``cannot``), since numpy's float16 matmul is not what a framework
runs and numpy has no bfloat16.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from equivalence.core.activations import ACTIVATIONS
from equivalence.core.layout import LayerWeights, check_weights
from equivalence.core.spec import StackSpec
from equivalence.core.types import ParamCount
from equivalence.frameworks.base import Adapter

VERSION = "0.1.0"
DTYPES = {"float64": np.float64, "float32": np.float32}


@dataclass
class Dense:
    W: np.ndarray  # (in, out): the canonical layout is this framework's own
    b: np.ndarray | None
    activation: str

    def __call__(self, x: np.ndarray) -> np.ndarray:
        dtype = self.W.dtype
        z = np.asarray(x, dtype=dtype) @ self.W
        if self.b is not None:
            z = z + self.b
        with np.errstate(invalid="ignore", over="ignore"):
            return ACTIVATIONS[self.activation].reference(z.astype(np.float64)).astype(dtype)


class NumpyAdapter(Adapter):
    name = "numpy"
    kernel_layout = "in_out"

    def cannot(self, activation: str, dtype: str) -> str | None:
        if dtype not in DTYPES:
            return f"the numpy example computes {' and '.join(DTYPES)} only"
        return None

    def build(self, spec: StackSpec, style: str) -> list[Dense]:
        self.check_style(style)
        return [self.build_layer(i, o, act, bias=spec.bias, dtype=spec.dtype)
                for (i, o), act in zip(spec.layer_shapes, spec.activations)]

    def build_layer(self, n_in: int, n_out: int, activation: str, *, bias: bool, dtype: str) -> Dense:
        if dtype not in DTYPES:
            raise ValueError(self.cannot(activation, dtype))
        dt = DTYPES[dtype]
        return Dense(np.zeros((n_in, n_out), dt), np.zeros(n_out, dt) if bias else None, activation)

    def _layers(self, model: Any) -> list[Dense]:
        return [model] if isinstance(model, Dense) else list(model)

    def get_weights(self, model: Any) -> list[LayerWeights]:
        return [LayerWeights(d.W.copy(), None if d.b is None else d.b.copy()) for d in self._layers(model)]

    def native_weights(self, model: Any) -> list[tuple[np.ndarray, np.ndarray | None]]:
        return [(w.W, w.b) for w in self.get_weights(model)]

    def set_weights(self, model: Any, weights: Sequence[LayerWeights]) -> None:
        layers = self._layers(model)
        check_weights([d.W.shape for d in layers], [d.b is not None for d in layers], weights,
                      what="numpy set_weights")
        for d, (W, b) in zip(layers, weights):
            d.W = np.array(W, dtype=d.W.dtype)
            if b is not None:
                d.b = np.array(b, dtype=d.W.dtype)

    def apply_layer(self, model: Any, index: int, x: np.ndarray) -> np.ndarray:
        return self._layers(model)[index](x)

    def model_forward(self, model: Any, x: np.ndarray) -> np.ndarray:
        for d in self._layers(model):
            x = d(x)
        return x

    def count_params(self, model: Any) -> ParamCount:
        per_layer = tuple(d.W.size + (0 if d.b is None else d.b.size) for d in self._layers(model))
        tensors = sum(1 + (d.b is not None) for d in self._layers(model))
        return ParamCount(per_layer, sum(per_layer), tensors)

    def activation(self, name: str, x: np.ndarray, dtype: str) -> np.ndarray:
        with np.errstate(invalid="ignore", over="ignore"):
            return ACTIVATIONS[name].reference(np.asarray(x, dtype=DTYPES[dtype]).astype(np.float64))

    def versions(self) -> dict[str, str]:
        return {"numpy_dense": VERSION, "numpy": np.__version__}
