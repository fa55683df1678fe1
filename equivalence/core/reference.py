"""The float64 numpy reference: every layer's pre-activation and output.

Each layer is its kind's float64 reference (``equivalence.core.kinds.Dense``, with two independent
forms: ``matmul`` through BLAS, ``dot`` an elementwise product and a plain sum).

``layerwise_reference`` is what the per-layer check uses: each layer is fed the
reference's previous output *rounded to the spec's dtype*, exactly the input the
frameworks get, so input rounding is never counted as a layer's error.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from equivalence.core.dtypes import numpy_dtype
from equivalence.core.kinds import DENSE, LayerTrace
from equivalence.core.layout import LayerWeights
from equivalence.core.spec import ChainSpec, StackSpec

__all__ = ["LayerTrace", "layer_input", "layer_inputs", "layerwise_reference", "reference_forward", "reference_layer"]


def reference_layer(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, activation: str,
                    *, form: str = "matmul") -> LayerTrace:
    return DENSE.reference(x, LayerWeights(W, b), activation, form=form)


def reference_forward(spec: StackSpec, weights: Sequence[LayerWeights], x: np.ndarray,
                      *, form: str = "matmul") -> list[LayerTrace]:
    """The end-to-end float64 forward pass, no rounding between layers."""
    if form not in DENSE.FORMS:
        raise ValueError(f"unknown reference form {form!r}; use one of {sorted(DENSE.FORMS)}")
    traces, h = [], np.asarray(x, dtype=np.float64)
    for (W, b), act in zip(weights, spec.activations):
        trace = reference_layer(h, W, b, act, form=form)
        traces.append(trace)
        h = trace.h
    return traces


def layerwise_reference(spec: StackSpec | ChainSpec, weights: Sequence[LayerWeights],
                        x: np.ndarray) -> list[LayerTrace]:
    """Per-layer float64 reference, each layer its kind's (``spec.kinds``), fed the previous output rounded to
    ``spec.dtype``.

    ``trace.x`` (cast back to the dtype) is the input the frameworks' layer gets; a kind with ``operands`` (the
    residual Add, ``equivalence.core.residual``) gets the previous output and an earlier one side by side. Integer
    inputs (token ids for an embedding) are passed as they are: ids are not values to round.
    """
    dt = numpy_dtype(spec.dtype)
    h = np.asarray(x)
    traces, h = [], h if np.issubdtype(h.dtype, np.integer) else h.astype(dt)
    earlier = [h]  # the input, then every layer's output as the next layer gets it
    for kind, layer_weights, act in zip(spec.kinds, weights, spec.activations):
        trace = kind.reference(layer_input(kind, earlier), LayerWeights(*layer_weights), act)
        traces.append(trace)
        earlier.append(trace.h.astype(dt))
    return traces


def layer_input(kind: object, earlier: Sequence[np.ndarray]) -> np.ndarray:
    """What a layer of ``kind`` is fed, given ``earlier`` (the chain's input, then each layer's output before it):
    the last of them, or for a kind with ``operands`` (a residual Add: the chain's output and an earlier one side by
    side; a second branch: the value it starts from) what those place."""
    operands = getattr(kind, "operands", None)
    return earlier[-1] if operands is None else operands(earlier[-1], earlier)


def layer_inputs(spec: StackSpec | ChainSpec, x: np.ndarray, outputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Every layer's input from the chain's input ``x`` and the layers' ``outputs`` (each as the next layer gets it,
    rounded to the dtype): ``layerwise_reference``'s inputs, for outputs recorded earlier."""
    earlier = [x, *outputs]
    return [layer_input(kind, earlier[:i + 1]) for i, kind in enumerate(spec.kinds)]
