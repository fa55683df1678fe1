"""The error model's formula, and what it costs the frameworks (see ``equivalence.core.tolerance``)."""

import subprocess
import sys

import numpy as np
import pytest

from equivalence.core.dtypes import EPSILON
from equivalence.core.reference import reference_layer
from equivalence.core.tolerance import SAFETY, forward_bound, layer_bound, magnitude


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


# --- one error model: every caller gets the same bound for the same layer ------------------------------------

LAYERS = [("keras", "torch", "gelu", "float64"), ("litert_fp16w", "torch", "selu", "float32"),
          ("torch", "keras", "sigmoid", "float16")]
"""(framework, another, activation, dtype): keras' float64 gelu has a named float32 constant where its backend
is TensorFlow, litert_fp16w a named float16 selu constant and float16 weight storage, the last neither."""


def _one_layer(activation, dtype):
    from equivalence.core.case import make_case
    from equivalence.core.spec import StackSpec

    case = make_case(StackSpec(6, (5,), activation, dtype=dtype), seed=3, batch=4)
    trace = reference_layer(case.x, *case.weights[0], activation)
    return case, trace


def _reference_bound(case, trace, *labels):
    spec = case.spec
    return forward_bound(trace, case.weights[0], spec.activations[0], spec.dtype, dict.fromkeys(labels))


def test_the_error_model_grants_each_term():
    case, trace = _one_layer("selu", "float32")
    bound = _reference_bound(case, trace, "litert_fp16w", "torch")
    assert bound.granted["torch"] == 0.0
    assert bound.granted["litert_fp16w"] > 0.0  # its float16 selu constants and weights
    assert bound.against_reference("litert_fp16w") == bound.base + bound.granted["litert_fp16w"]
    assert bound.between("torch", "litert_fp16w") == 2 * bound.base + bound.granted["litert_fp16w"]


@pytest.mark.parametrize(("framework", "other", "activation", "dtype"), LAYERS)
def test_compare_layers_takes_the_error_models_bound(framework, other, activation, dtype):
    from equivalence.core.compare import compare_layers

    case, trace = _one_layer(activation, dtype)
    bound = _reference_bound(case, trace, framework, other)
    outputs = {framework: [trace.h], other: [trace.h]}
    got = {r.pair: r.bound for r in compare_layers(case.spec, case.weights, case.x, outputs).results}
    assert got == {(framework, "reference"): bound.against_reference(framework),
                   (other, "reference"): bound.against_reference(other),
                   (framework, other): bound.between(framework, other)}


@pytest.mark.parametrize(("framework", "other", "activation", "dtype"), LAYERS)
def test_golden_drift_takes_the_error_models_bound(framework, other, activation, dtype):
    from types import SimpleNamespace

    from equivalence.core.tolerance import RECORDED
    from equivalence.guard.golden import outputs_moved

    case, trace = _one_layer(activation, dtype)
    golden = SimpleNamespace(facts=None, fingerprint={}, facts_of=lambda case: None)
    recorded = SimpleNamespace(spec=case.spec, weights=case.weights, id=case.id, traces=lambda: [trace])
    moved = outputs_moved(golden, framework, recorded, [trace.h + 1.0], [trace.h], "now")  # moved by 1: caught
    assert [m.result.bound for m in moved] == [_reference_bound(case, trace, framework, f"{framework}{RECORDED}")
                                               .between(framework, f"{framework}{RECORDED}")]


@pytest.mark.parametrize(("framework", "other", "activation", "dtype"), LAYERS)
def test_own_models_take_the_error_models_bound(framework, other, activation, dtype):
    from equivalence.core.walk import DenseUnit
    from equivalence.own import numeric_results

    case, trace = _one_layer(activation, dtype)
    W, b = case.weights[0]

    def unit(fw):
        return DenseUnit(fw, "dense", "Dense", 0, W, b, W, activation, "test", dtype, run=lambda x: trace.h)

    results = numeric_results([unit("torch")], [unit("keras")], case.x, same=False)
    pair = [r.bound for r in results if r.pair == ("torch", "keras")]
    assert pair == [_reference_bound(case, trace, "torch", "keras").between("torch", "keras")] * len(pair)
    assert pair


@pytest.mark.parametrize(("framework", "other", "activation", "dtype"), LAYERS)
def test_the_whole_model_check_takes_the_error_models_bound(framework, other, activation, dtype):
    from tests.helpers import last_layer_bound

    case, trace = _one_layer(activation, dtype)
    got = last_layer_bound(chained=[trace.h], case=case, framework=framework)
    assert got == _reference_bound(case, trace, framework).against_reference(framework)


def test_gradients_take_the_error_models_bound():
    from equivalence.core.gradients import compare_gradients, gradient_scales, reference_gradients
    from equivalence.core.tolerance import gradient_bound

    case, _ = _one_layer("gelu", "float64")
    reference = reference_gradients(case.spec, case.weights, case.x)
    scales, x_scale = gradient_scales(case.spec, case.weights, case.x)
    got = {r.pair: r.bound for r in compare_gradients(case.spec, case.weights, case.x, reference,
                                                      {"keras": reference, "torch": reference}).results}
    layer = gradient_bound(scales[0], case.spec.activations, "float64", ("keras", "torch"))
    x = gradient_bound(x_scale, case.spec.activations, "float64", ("keras", "torch"))
    assert got[("keras dL/dW", "reference")] == got[("keras dL/db", "reference")] == layer.against_reference("keras")
    assert got[("keras dL/dW", "torch dL/dW")] == layer.between("keras", "torch")
    assert got[("torch dL/dX", "reference")] == x.against_reference("torch")
