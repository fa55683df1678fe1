"""The error model's formula, and what it costs the frameworks (see ``equivalence.core.tolerance``)."""

import subprocess
import sys

import numpy as np
import pytest

from equivalence.core.dtypes import EPSILON
from equivalence.core.reference import reference_layer
from equivalence.core.tolerance import SAFETY, layer_bound, magnitude


def _layer(scale=1.0, n=6, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.uniform(-1, 1, (n, n)).astype(np.float32)
    b = rng.uniform(-1, 1, n).astype(np.float32)
    x = (scale * rng.uniform(-1, 1, (4, n))).astype(np.float32)
    return x, W, b


@pytest.mark.parametrize("scale", [0.1, 1.0, 100.0])
def test_a_sigmoid_layer_gets_eight_eps_max_one_s_over_four(scale):
    x, W, b = _layer(scale)
    trace = reference_layer(x, W, b, "sigmoid")
    S = float(np.max(np.abs(x.astype(np.float64)) @ np.abs(W.astype(np.float64)) + np.abs(b)))
    assert magnitude(x, W, b) == pytest.approx(S, rel=1e-15)
    got = layer_bound(x=x, W=W, b=b, h=trace.h, activation="sigmoid", dtype="float32")
    assert got == pytest.approx(8 * 2.0**-23 * max(1.0, S / 4), rel=1e-15)


def test_the_bound_scales_with_the_dtype_epsilon():
    x, W, b = _layer()
    h = reference_layer(x, W, b, "relu").h
    bounds = {d: layer_bound(x=x, W=W, b=b, h=h, activation="relu", dtype=d) for d in EPSILON}
    for dtype, bound in bounds.items():
        assert bound / bounds["float64"] == pytest.approx(EPSILON[dtype] / EPSILON["float64"])
    assert SAFETY == 8.0


def test_the_bound_follows_magnitude_for_unbounded_activations():
    x, W, b = _layer(scale=100.0)
    h = reference_layer(x, W, b, "linear").h
    assert layer_bound(x=x, W=W, b=b, h=h, activation="linear", dtype="float32") >= 8 * 2.0**-23 * magnitude(x, W, b)


def test_a_transposed_square_layer_is_far_outside_the_bound():
    """The reason for per-layer checks: W vs W.T on a square layer, measured in float64."""
    x, W, b = _layer()
    right = reference_layer(x, W, b, "sigmoid")
    wrong = reference_layer(x, W.T.copy(), b, "sigmoid")
    bound = layer_bound(x=x, W=W, b=b, h=right.h, activation="sigmoid", dtype="float32")
    assert np.max(np.abs(right.h - wrong.h)) / bound > 3000


def test_the_package_imports_with_numpy_alone():
    code = ("import sys, equivalence, equivalence.core.compare, equivalence.core.check, equivalence.own;"
            "equivalence.assert_equivalent, equivalence.compare_models, equivalence.port_weights;"
            "loaded = [m for m in ('torch', 'tensorflow', 'keras', 'jax', 'mxnet') if m in sys.modules];"
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True)
