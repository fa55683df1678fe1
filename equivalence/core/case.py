"""A case: a spec, its canonical weights and an input batch, all generated from a seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from equivalence.core.dtypes import numpy_dtype
from equivalence.core.layout import LayerWeights
from equivalence.core.spec import StackSpec

WEIGHT_SCALES = ("unit", "fan_in")
"""``unit``: U(-1, 1), large sums (|z| up to ~fan-in); ``fan_in``: U(-1, 1)/sqrt(fan-in), the usual init."""


@dataclass(frozen=True, eq=False)
class Case:
    spec: StackSpec
    weights: tuple[LayerWeights, ...]
    x: np.ndarray

    @property
    def batch(self) -> int:
        return int(self.x.shape[0])

    @property
    def id(self) -> str:
        return f"{self.spec.id}_n{self.batch}"


def random_weights(spec: StackSpec, rng: np.random.Generator, *,
                   weight_scale: str = "unit") -> tuple[LayerWeights, ...]:
    """Non-symmetric kernels and biases bounded away from zero, in ``spec.dtype``.

    Keras biases start at zero and a symmetric square kernel equals its transpose:
    either would hide a dropped bias or a missing transpose.
    """
    if weight_scale not in WEIGHT_SCALES:
        raise ValueError(f"unknown weight_scale {weight_scale!r}; use one of {WEIGHT_SCALES}")
    dt = numpy_dtype(spec.dtype)
    out = []
    for n_in, n_out in spec.layer_shapes:
        scale = 1.0 if weight_scale == "unit" else 1.0 / np.sqrt(n_in)
        W = rng.uniform(-scale, scale, size=(n_in, n_out))
        if n_in == n_out and n_in > 1:
            W[0, 1] = -W[1, 0] + np.copysign(0.5 * scale, -W[1, 0])  # W[0,1] != W[1,0] for sure
        b = None
        if spec.bias:
            b = rng.uniform(0.1, 1.0, size=n_out) * rng.choice([-1.0, 1.0], size=n_out)
        out.append(LayerWeights(W.astype(dt), None if b is None else b.astype(dt)))
    return tuple(out)


def random_inputs(spec: StackSpec, rng: np.random.Generator, *, batch: int, scale: float) -> np.ndarray:
    """``U(-scale, scale)`` inputs of shape ``(batch, input_width)`` in ``spec.dtype``."""
    return rng.uniform(-scale, scale, size=(batch, spec.input_width)).astype(numpy_dtype(spec.dtype))


def make_case(spec: StackSpec, *, seed: int, batch: int, input_scale: float = 1.0,
              weight_scale: str = "unit") -> Case:
    """The case drawn from ``seed``; the same arguments always give the same arrays."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    rng = np.random.default_rng(seed)
    weights = random_weights(spec, rng, weight_scale=weight_scale)
    return Case(spec, weights, random_inputs(spec, rng, batch=batch, scale=input_scale))




NONFINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def drawn_input(*, width: int, dtype: str = "float32", seed: int = 0, batch: int = 1, scale: float = 1.0,
                nonfinite: tuple[tuple[int, int, str], ...] = ()) -> np.ndarray:
    """``U(-scale, scale)`` inputs ``(batch, width)`` from ``seed``, with ``(row, column, "nan"|"inf"|"-inf")``
    set: the inputs ``equivalence.core.strategies.model_inputs`` draws, rebuilt from what hypothesis prints."""
    if batch < 1 or width < 1:
        raise ValueError(f"batch and width must be at least 1, got batch={batch}, width={width}")
    x = np.random.default_rng(seed).uniform(-scale, scale, size=(batch, width))
    for row, column, value in nonfinite:
        x[row, column] = NONFINITE[value]
    return x.astype(numpy_dtype(dtype))
