"""Gradients of ``L = mean(outputs)``: a float64 numpy backward pass, and their comparison.

The frameworks compute ``dL/dW``, ``dL/db`` (per layer, canonical layout) and
``dL/dX`` end to end (``Adapter.loss_gradients``); the reference runs the float64
forward pass on the same (rounded) weights and input, then backpropagates by hand.

Tolerance, per layer: ``GRADIENT_SAFETY * eps * G_l``, where ``G_l`` is the layer's
gradient *scale* (``gradient_scales``): the backward analogue of the forward ``S``,
the same backward pass run on absolute values, so cancellation never hides the
size of the terms a gradient sums. A plain ``64 eps max|g_l|`` held over 200 sigmoid
stacks (``docs/measurements.md``) but not across all activations: a width-1
bottleneck or an elu at large negative z gave ratios up to 119 (float32), because
``max|g_l|`` ignores cancellation and the derivative's sensitivity to forward
error. With ``G_l``, over 600 random stacks of every activation, the worst gap was
2.6 eps G_l (float32 1.7, float16 2.6, bfloat16 1.1). Absolute gradients shrink
geometrically with depth (the first layer of a depth-10 sigmoid stack had
``max|g| = 2.7e-11``), so the bound is scaled per layer, never absolute, but for one floor: below the
dtype's smallest normal a gradient is rounded to the subnormal grid (2**-24 in float16), not relative to its
size, or flushed to zero where the CPU runs flush-to-zero, as TensorFlow sets it (a float16 depth-5 sigmoid
stack's dL/dX of 8.9e-8 came out as 5.96e-8 in torch and Keras; a dL/db of 6.4e-7 as 1.1e-6 in torch and 0 in
Keras), so every bound also holds the smallest normal (``tolerance.smallest_normal``: 6.1e-5 in float16,
negligible in float32, bfloat16 and float64).

float64: the named float32 constants in float64 backward passes (torch's Hardsigmoid
backward multiplies by a float32 1/6; Keras' gelu and leaky_relu) widen the bound of every
layer whose gradient flows through them (``equivalence.core.known_differences``).

Kinks (relu, relu6, leaky_relu, hard_sigmoid, hard_silu) make the gradient jump:
a pre-activation within rounding distance of a kink may legitimately go either
way in a framework. ``ambiguous_kinks`` finds such cases so a property can skip
them explicitly (they are rare: a few per million elements in float32).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np

from equivalence.core.activations import (
    ACTIVATIONS,
    GELU_TANH_C,
    LEAKY_SLOPE,
    SELU_ALPHA,
    SELU_SCALE,
    _erfc,
    softmax,
    stable_sigmoid,
)
from equivalence.core.compare import REFERENCE, Comparison, LayerResult, compare_arrays
from equivalence.core.dtypes import EPSILON
from equivalence.core.kinds import DENSE
from equivalence.core.layout import LayerWeights
from equivalence.core.reference import reference_forward
from equivalence.core.spec import StackSpec
from equivalence.core.tolerance import SAFETY, Bound, gradient_bound, sgd_bound
from equivalence.core.types import Gradients

ACTIVATIONS_ROW_COUPLED = {name: a.row_coupled for name, a in ACTIVATIONS.items()}

GRADIENT_DTYPES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")
"""dtypes whose gradients are checked: all of them."""


def _box(z: np.ndarray, low: float, high: float) -> np.ndarray:
    return ((z > low) & (z < high)).astype(np.float64)


def _phi(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _d_gelu_tanh(z: np.ndarray) -> np.ndarray:
    s = stable_sigmoid(2.0 * GELU_TANH_C * (z + 0.044715 * z**3))
    return s + z * s * (1.0 - s) * 2.0 * GELU_TANH_C * (1.0 + 3 * 0.044715 * z * z)


def _d_mish(z: np.ndarray) -> np.ndarray:
    t = np.tanh(np.logaddexp(0.0, z))
    return t + z * (1.0 - t * t) * stable_sigmoid(z)


# d act(z) / dz, elementwise; the value at a kink is the one both frameworks use (0 for relu at 0,
# the slope for leaky_relu at 0, 0 at the ends of relu6's and hard_sigmoid's ramps).
_DERIVATIVES = {
    "sigmoid": lambda z: stable_sigmoid(z) * stable_sigmoid(-z),
    "tanh": lambda z: 1.0 - np.tanh(z) ** 2,
    "relu": lambda z: (z > 0).astype(np.float64),
    "linear": lambda z: np.ones_like(z),
    "gelu": lambda z: 0.5 * _erfc(-z / math.sqrt(2.0)).astype(np.float64) + z * _phi(z),
    "gelu_tanh": _d_gelu_tanh,
    "elu": lambda z: np.where(z > 0, 1.0, np.exp(np.minimum(z, 0.0))),
    "selu": lambda z: SELU_SCALE * np.where(z > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(z, 0.0))),
    "celu": lambda z: np.where(z > 0, 1.0, np.exp(np.minimum(z, 0.0))),
    "silu": lambda z: stable_sigmoid(z) * (1.0 + z * stable_sigmoid(-z)),
    "softplus": stable_sigmoid,
    "softsign": lambda z: 1.0 / (1.0 + np.abs(z)) ** 2,
    "relu6": lambda z: _box(z, 0.0, 6.0),
    "hard_sigmoid": lambda z: _box(z, -3.0, 3.0) / 6.0,
    "hard_silu": lambda z: np.where(z >= 3.0, 1.0, _box(z, -3.0, 3.0) * (2.0 * z + 3.0) / 6.0),
    "leaky_relu_0.2": lambda z: np.where(z > 0, 1.0, LEAKY_SLOPE),
    "mish": _d_mish,
}

MAX_CURVATURE: dict[str, float] = {
    "sigmoid": 0.0963, "tanh": 0.770, "relu": 0.0, "linear": 0.0, "softmax": 1.0, "log_softmax": 1.0,
    "gelu": 0.798, "gelu_tanh": 0.798, "elu": 1.0, "selu": SELU_SCALE * SELU_ALPHA, "celu": 1.0, "silu": 0.5,
    "softplus": 0.25, "softsign": 2.0, "relu6": 0.0, "hard_sigmoid": 0.0, "hard_silu": 1.0 / 3.0,
    "leaky_relu_0.2": 0.0, "mish": 0.65,
}
"""``max |f''|`` (rounded up; softmax and log_softmax: 1 as a coarse row bound): how far a
pre-activation error ``d`` moves the derivative, ``|f'(z + d) - f'(z)| <= max|f''| d``.
Re-measured on a grid in ``tests/core/test_gradients.py``."""

KINKS: dict[str, tuple[float, ...]] = {
    "relu": (0.0,), "relu6": (0.0, 6.0), "leaky_relu_0.2": (0.0,),
    "hard_sigmoid": (-3.0, 3.0), "hard_silu": (-3.0, 3.0), "selu": (0.0,), "celu": (0.0,),
}
"""Where an activation's derivative jumps (selu: 1.758 to 1.051 at 0), or where a framework's does:
Keras computes celu as ``relu(z) + min(0, exp(z) - 1)``; where ``exp(z)`` rounds to 1 the ``min``
ties and TF sends the gradient to both sides, so Keras' celu derivative is 2 within ~eps of 0
(measured in bfloat16: dL/db 2.0 against 0.994)."""


def activation_backward(activation: str, z: np.ndarray, upstream: np.ndarray) -> np.ndarray:
    """``dL/dz`` from ``dL/dh`` for ``h = act(z)`` (a vector-Jacobian product for the row-coupled ones)."""
    if activation == "softmax":
        s = softmax(z)
        return s * (upstream - np.sum(upstream * s, axis=-1, keepdims=True))
    if activation == "log_softmax":
        return upstream - softmax(z) * np.sum(upstream, axis=-1, keepdims=True)
    return upstream * _DERIVATIVES[activation](z)


def reference_gradients(spec: StackSpec, weights: Sequence[LayerWeights], x: np.ndarray) -> Gradients:
    """Float64 backward pass of ``L = mean(outputs)`` through the float64 forward pass."""
    traces = reference_forward(spec, weights, x)
    out = traces[-1].h
    upstream = np.full(out.shape, 1.0 / out.size)
    grads: list[LayerWeights] = []
    for trace, (W, b), act in zip(reversed(traces), reversed(weights), reversed(spec.activations)):
        dz = activation_backward(act, trace.z, upstream)
        grads.append(LayerWeights(trace.x.T @ dz, None if b is None else dz.sum(axis=0)))
        upstream = dz @ W.astype(np.float64).T
    return Gradients(tuple(reversed(grads)), upstream)


def ambiguous_kinks(spec: StackSpec, weights: Sequence[LayerWeights], x: np.ndarray) -> list[int]:
    """Layers where a reference pre-activation lies within rounding distance of a kink.

    Rounding distance of layer ``l``: ``SAFETY * eps * (l + 1) * max(1, S_l)``, the
    forward error bound of one layer, times the number of layers whose errors reach it.
    """
    out = []
    for layer, (trace, (W, b), act) in enumerate(zip(reference_forward(spec, weights, x), weights,
                                                      spec.activations)):
        if act not in KINKS:
            continue
        delta = SAFETY * EPSILON[spec.dtype] * (layer + 1) * max(1.0, DENSE.magnitude(trace.x, LayerWeights(W, b)))
        if any(np.any(np.abs(trace.z - kink) <= delta) for kink in KINKS[act]):
            out.append(layer)
    return out


def gradient_scales(spec: StackSpec, weights: Sequence[LayerWeights], x: np.ndarray) -> tuple[list[float], float]:
    """Per layer, the magnitude its gradient's rounding errors scale with; and that of ``dL/dX``.

    The backward analogue of the forward ``S`` (first-order running error analysis):
    the same backward pass on absolute values, so cancellation in a sum never hides
    the size of its terms, where each derivative also carries the change a forward
    error of ``S_l`` could cause (``max|f''| S_l``) and each layer input the forward
    error it may carry (the previous layer's scale). Rounding then costs a small
    multiple of ``eps`` times these magnitudes (``GRADIENT_SAFETY``).
    """
    traces = reference_forward(spec, weights, x)
    out = traces[-1].h
    upstream = np.full(out.shape, 1.0 / out.size)
    scales: list[float] = []
    for layer in reversed(range(spec.depth)):
        trace, (W, b), act = traces[layer], weights[layer], spec.activations[layer]
        S = max(1.0, DENSE.magnitude(trace.x, LayerWeights(W, b)))
        d = np.abs(activation_backward(act, trace.z, np.ones_like(trace.z))) if not ACTIVATIONS_ROW_COUPLED[act] \
            else np.ones_like(trace.z)
        dz = upstream * (d + MAX_CURVATURE[act] * S)
        carried = 0.0 if layer == 0 else DENSE.scale(traces[layer - 1], weights[layer - 1],
                                                     slope=ACTIVATIONS[spec.activations[layer - 1]].max_slope)
        x_abs = np.abs(trace.x) + carried
        dW = x_abs.T @ dz
        scales.append(max(float(np.max(dW, initial=0.0)), float(np.max(dz.sum(axis=0), initial=0.0))))
        upstream = dz @ np.abs(W.astype(np.float64)).T
    return list(reversed(scales)), float(np.max(upstream, initial=0.0))


def compare_gradients(spec: StackSpec, weights: Sequence[LayerWeights], x: np.ndarray, reference: Gradients,
                      grads: Mapping[str, Gradients], *, case_id: str | None = None) -> Comparison:
    """Every framework's gradients against the reference and each other, layer by layer.

    The pair labels say which gradient: ``"torch dL/dW" vs "reference"``.
    Named known differences (``equivalence.core.known_differences``) of any activation in the
    stack widen every layer's bound by their share, relative to its gradient scale
    (``tolerance.gradient_bound``).
    """
    scales, x_scale = gradient_scales(spec, weights, x)
    results: list[LayerResult] = []
    for layer, ref in enumerate(reference.weights):
        bound = gradient_bound(scales[layer], spec.activations, spec.dtype, grads)
        for what, pick in (("dL/dW", lambda g: g.W), ("dL/db", lambda g: g.b)):
            if pick(ref) is not None:
                results += _against_reference_and_pairs(
                    {name: pick(g.weights[layer]) for name, g in grads.items()}, pick(ref), bound, what, layer)
    x_bound = gradient_bound(x_scale, spec.activations, spec.dtype, grads)
    results += _against_reference_and_pairs({name: g.x for name, g in grads.items()}, reference.x, x_bound,
                                            "dL/dX", 0)
    return Comparison(case_id or spec.id, tuple(results))


def _against_reference_and_pairs(got: Mapping[str, np.ndarray], expected: np.ndarray, bound: Bound, what: str,
                                 layer: int) -> list[LayerResult]:
    """Each framework's ``what`` against the reference's, then every pair of frameworks, within ``bound``."""
    results = [compare_arrays(g, expected, bound=bound.against_reference(name), pair=(f"{name} {what}", REFERENCE),
                              layer=layer) for name, g in got.items()]
    results += [compare_arrays(got[a], got[b], bound=bound.between(a, b), pair=(f"{a} {what}", f"{b} {what}"),
                               layer=layer) for a, b in combinations(got, 2)]
    return results


def sgd_reference(weights: Sequence[LayerWeights], reference: Gradients, learning_rate: float) -> list[LayerWeights]:
    """``W - lr * dL/dW`` in float64 (not rounded)."""
    return [LayerWeights(W.astype(np.float64) - learning_rate * g.W,
                         None if b is None else b.astype(np.float64) - learning_rate * g.b)
            for (W, b), g in zip(weights, reference.weights)]


def compare_sgd_step(spec: StackSpec, weights: Sequence[LayerWeights], x: np.ndarray, reference: Gradients,
                     updated: Mapping[str, Sequence[LayerWeights]], *, learning_rate: float,
                     case_id: str | None = None) -> Comparison:
    """New weights after one SGD step: each framework against ``W - lr g`` and against each other.

    Bound per layer: rounding the new weight (``SAFETY * eps * max|W_new|``) plus ``lr``
    times the gradient bound of that layer.
    """
    expected = sgd_reference(weights, reference, learning_rate)
    scales, _ = gradient_scales(spec, weights, x)
    results: list[LayerResult] = []
    for layer, (exp, g_scale) in enumerate(zip(expected, scales)):
        w_scale = max(float(np.max(np.abs(exp.W))), float(np.max(np.abs(exp.b))) if exp.b is not None else 0.0)
        bound = sgd_bound(w_scale, g_scale, learning_rate, spec.activations, spec.dtype, updated)
        for what, pick in (("W", lambda w: w.W), ("b", lambda w: w.b)):
            if pick(exp) is not None:
                results += _against_reference_and_pairs({name: pick(new[layer]) for name, new in updated.items()},
                                                        pick(exp), bound, f"new {what}", layer)
    return Comparison(case_id or spec.id, tuple(results))
