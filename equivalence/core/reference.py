"""The float64 numpy reference: every layer's pre-activation and output.

Two independent forms of the same computation:

* ``matmul``: ``act(X @ W + b)`` through BLAS;
* ``dot``: for every sample n and neuron j, ``sum(x[n, :] * W[:, j]) + b[j]``,
  an elementwise product and a plain sum, so it shares no code path with BLAS.

``layerwise_reference`` is what the per-layer check uses: each layer is fed the
reference's previous output *rounded to the spec's dtype*, exactly the input the
frameworks get, so input rounding is never counted as a layer's error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from equivalence.core.activations import ACTIVATIONS
from equivalence.core.dtypes import numpy_dtype
from equivalence.core.layout import LayerWeights
from equivalence.core.spec import StackSpec


class LayerTrace(NamedTuple):
    """One layer of the reference: its input, pre-activation and output, in float64."""

    x: np.ndarray
    z: np.ndarray
    h: np.ndarray


def _affine_matmul(x: np.ndarray, W: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    z = x @ W.astype(np.float64)
    return z if b is None else z + b.astype(np.float64)


def _affine_dot(x: np.ndarray, W: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    z = (x[:, :, None] * W.astype(np.float64)[None, :, :]).sum(axis=1)
    return z if b is None else z + b.astype(np.float64)


_FORMS = {"matmul": _affine_matmul, "dot": _affine_dot}


def reference_layer(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, activation: str,
                    *, form: str = "matmul") -> LayerTrace:
    x64 = np.asarray(x, dtype=np.float64)
    if np.all(np.isfinite(x64)):
        z = _FORMS[form](x64, W, b)
        return LayerTrace(x64, z, ACTIVATIONS[activation].reference(z))
    # NaN or inf inputs: inf - inf and inf * 0 give NaN on purpose, as in both frameworks.
    with np.errstate(invalid="ignore"):
        z = _FORMS[form](x64, W, b)
        return LayerTrace(x64, z, ACTIVATIONS[activation].reference(z))


def reference_forward(spec: StackSpec, weights: Sequence[LayerWeights], x: np.ndarray,
                      *, form: str = "matmul") -> list[LayerTrace]:
    """The end-to-end float64 forward pass, no rounding between layers."""
    if form not in _FORMS:
        raise ValueError(f"unknown reference form {form!r}; use one of {sorted(_FORMS)}")
    traces, h = [], np.asarray(x, dtype=np.float64)
    for (W, b), act in zip(weights, spec.activations):
        trace = reference_layer(h, W, b, act, form=form)
        traces.append(trace)
        h = trace.h
    return traces


def layerwise_reference(spec: StackSpec, weights: Sequence[LayerWeights], x: np.ndarray) -> list[LayerTrace]:
    """Per-layer float64 reference, each layer fed the previous output rounded to ``spec.dtype``.

    ``trace.x`` (cast back to the dtype) is the input the frameworks' layer gets.
    """
    dt = numpy_dtype(spec.dtype)
    traces, h = [], np.asarray(x).astype(dt)
    for (W, b), act in zip(weights, spec.activations):
        trace = reference_layer(h, W, b, act)
        traces.append(trace)
        h = trace.h.astype(dt)
    return traces
