"""The error model: how far a layer computed in ``dtype`` may be from float64.

For one dense layer ``h = act(x @ W + b)`` computed in a dtype with epsilon ``eps``:

* the pre-activation error is about ``eps * S`` with ``S = max(|x| @ |W| + |b|)``,
  the largest magnitude the sum can reach (the error follows magnitude, not
  fan-in: measured over 300 stacks, ``docs/measurements.md``);
* the activation turns it into at most ``slope * eps * S`` in the output, where
  ``slope`` is its largest slope (1/4 for the sigmoid);
* rounding the output itself, and the activation's own error (TF's sigmoid is
  off by up to 4 eps relative), cost a few eps of ``max |h|``, with 1 as a floor.

So ``bound = SAFETY * eps * max(1, slope * S, max|h|)``. For a sigmoid layer this
is exactly ``8 eps max(1, S/4)``, which over 2,200 random trials (depth 1–10,
widths 1–512, input scales 0.1–100) had a worst error/bound ratio of 0.29 and
caught every transposed square layer by more than 3,000x.

Two frameworks each within ``bound`` of the reference are within ``2 * bound``
of each other (``PAIR_FACTOR``).
"""

from __future__ import annotations

import numpy as np

from equivalence.core.activations import ACTIVATIONS
from equivalence.core.dtypes import EPSILON, SMALLEST_NORMAL, SMALLEST_SUBNORMAL

SAFETY = 8.0
"""Multiplier on eps; the measured worst ratio 0.29 leaves 3.4x headroom."""

PAIR_FACTOR = 2.0
"""Framework vs framework: both errors may add (triangle inequality)."""


def magnitude(x: np.ndarray, W: np.ndarray, b: np.ndarray | None) -> float:
    """``S = max(|x| @ |W| + |b|)`` in float64: the largest sum the layer accumulates."""
    s = np.abs(np.asarray(x, dtype=np.float64)) @ np.abs(W.astype(np.float64))
    if b is not None:
        s = s + np.abs(b.astype(np.float64))
    return float(np.max(s)) if s.size else 0.0


def _finite_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` without NaN or inf: the error model bounds finite arithmetic only."""
    x = np.asarray(x, dtype=np.float64)
    return x[np.all(np.isfinite(x), axis=-1)] if x.ndim == 2 else x[np.isfinite(x)]


def layer_scale(*, x: np.ndarray, W: np.ndarray, b: np.ndarray | None, h: np.ndarray, activation: str) -> float:
    """``max(1, slope * S, max|h|)``: the magnitude a layer's rounding errors scale with.

    Rows of ``x`` holding NaN or inf and non-finite outputs are left out: their
    positions are compared by class (``equivalence.core.compare``), not by size.
    """
    slope = ACTIVATIONS[activation].max_slope
    h = np.asarray(h, dtype=np.float64)
    finite_h = h[np.isfinite(h)]
    out = float(np.max(np.abs(finite_h))) if finite_h.size else 0.0
    return max(1.0, slope * magnitude(_finite_rows(x), W, b), out)


def layer_bound(*, x: np.ndarray, W: np.ndarray, b: np.ndarray | None, h: np.ndarray,
                activation: str, dtype: str) -> float:
    """Absolute error bound of one layer computed in ``dtype`` against float64.

    ``x`` is the layer's input, ``h`` the float64 reference output.
    """
    return SAFETY * EPSILON[dtype] * layer_scale(x=x, W=W, b=b, h=h, activation=activation)


WEIGHTS_ROUNDED_TO: dict[str, str] = {"litert_fp16w": "float16"}
"""Frameworks that store a layer's weights (kernel and bias) in a narrower dtype and compute in the layer's:
LiteRT's float16 weight quantisation (``Optimize.DEFAULT`` with ``supported_types=[float16]``) writes them as
float16 and dequantises them to float32 before its float32 kernels (``tests/test_litert.py`` checks that the
reference with its weights rounded to float16 first agrees with it at the plain float32 bound)."""


def smallest_normal(dtype: str) -> float:
    """``dtype``'s smallest normal number (float16: 2**-14): below it values are subnormal, which a CPU in
    flush-to-zero mode (TensorFlow sets it) turns into zero."""
    return SMALLEST_NORMAL[dtype]


def smallest_subnormal(dtype: str) -> float:
    """The spacing of ``dtype``'s subnormals (float16: 2**-24), where rounding is absolute, not relative."""
    return SMALLEST_SUBNORMAL[dtype]


def weight_rounding_error(*, x: np.ndarray, W: np.ndarray, b: np.ndarray | None, activation: str,
                          weight_dtype: str) -> float:
    """Absolute bound on how far rounding ``W`` and ``b`` to ``weight_dtype`` (to nearest) moves a layer's output.

    A weight in the dtype's normal range moves by at most ``u |w|`` (``u = eps/2``, the unit roundoff), one below
    it by at most half the subnormal spacing ``t``; so ``|dz_j| <= u (|x| @ |W| + |b|)_j + t (sum|x| + 1)``,
    and the activation passes at most ``slope`` times the row's largest ``|dz|`` on (the same slopes as
    ``layer_scale``). Not a safety multiple: a worst case, added to the computing dtype's own bound. Weights
    beyond the dtype's range are not rounded but overflow (the adapter refuses them).
    """
    x = _finite_rows(x)
    if x.size == 0:
        return 0.0
    unit = EPSILON[weight_dtype] / 2
    half_subnormal = smallest_subnormal(weight_dtype) / 2
    rows = float(np.max(np.abs(x).sum(axis=-1))) + (b is not None)
    return ACTIVATIONS[activation].max_slope * (unit * magnitude(x, W, b) + half_subnormal * rows)


def rounded_weights_error(framework: str, *, x: np.ndarray, W: np.ndarray, b: np.ndarray | None, activation: str,
                          dtype: str) -> float:
    """``weight_rounding_error`` for a framework of ``WEIGHTS_ROUNDED_TO`` on a layer wider than its weights; else 0."""
    weight_dtype = WEIGHTS_ROUNDED_TO.get(framework)
    if weight_dtype is None or EPSILON[weight_dtype] <= EPSILON[dtype]:
        return 0.0
    return weight_rounding_error(x=x, W=W, b=b, activation=activation, weight_dtype=weight_dtype)
