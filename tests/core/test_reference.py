"""The float64 reference: two independent forms agree, and the sigmoid is stable."""

import warnings

import numpy as np
import pytest
from hypothesis import given

from equivalence.core.activations import stable_sigmoid
from equivalence.core.reference import layerwise_reference, reference_forward, reference_layer
from equivalence.core.spec import StackSpec
from equivalence.core.strategies import ACTIVATION_NAMES, cases, specs
from equivalence.core.tolerance import layer_bound


@given(case=cases(specs(activations=ACTIVATION_NAMES)))
def test_matmul_and_dot_product_forms_agree(case):
    """BLAS ``X @ W + b`` and per-neuron ``sum(x * w) + b`` agree within the float64 error model.

    Each layer of the dot form is fed the matmul form's input to that layer: the
    error model bounds one layer's own error, and chaining each form separately
    would add earlier layers' differences, amplified up to fan-in times by
    relu/linear layers (hypothesis found exactly that at layer 6 of a 63-wide stack).
    """
    by_matmul = reference_forward(case.spec, case.weights, case.x, form="matmul")
    for layer, (m, (W, b), act) in enumerate(zip(by_matmul, case.weights, case.spec.activations)):
        d = reference_layer(m.x, W, b, act, form="dot")
        bound = layer_bound(x=m.x, W=W, b=b, h=m.h, activation=act, dtype="float64")
        z_bound = layer_bound(x=m.x, W=W, b=b, h=m.z, activation="linear", dtype="float64")
        assert np.max(np.abs(m.z - d.z)) <= 2 * z_bound, f"layer {layer}: pre-activations differ"
        assert np.max(np.abs(m.h - d.h)) <= 2 * bound, f"layer {layer}: outputs differ"


def test_the_dot_form_chains_end_to_end_too():
    spec = StackSpec(4, (3, 2))
    rng = np.random.default_rng(5)
    weights = [(rng.uniform(-1, 1, (4, 3)), rng.uniform(-1, 1, 3)), (rng.uniform(-1, 1, (3, 2)), None)]
    x = rng.uniform(-1, 1, (5, 4))
    by_dot = reference_forward(spec, weights, x, form="dot")
    np.testing.assert_array_equal(by_dot[1].x, by_dot[0].h)
    np.testing.assert_allclose(by_dot[1].h, reference_forward(spec, weights, x)[1].h, rtol=1e-14)


def test_dot_form_is_literally_per_neuron_dot_products():
    spec = StackSpec(3, (2,))
    W = np.array([[1.0, -2.0], [0.5, 0.25], [3.0, 1.0]], dtype=np.float32)
    b = np.array([0.5, -1.0], dtype=np.float32)
    x = np.array([[1.0, 2.0, -1.0]], dtype=np.float32)
    (trace,) = reference_forward(spec, [(W, b)], x, form="dot")
    assert trace.z.tolist() == [[1.0 + 1.0 - 3.0 + 0.5, -2.0 + 0.5 - 1.0 - 1.0]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stable_sigmoid_is_silent_and_exact_at_extremes(dtype):
    z = np.array([-1e4, -800.0, -100.0, -1.0, 0.0, 1.0, 100.0, 800.0, 1e4], dtype=dtype)
    # Underflow to 0 is the right answer at -1e4 (numpy ignores it by default); overflow is not.
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        s = stable_sigmoid(z)
    assert s[0] == 0.0 and s[-1] == 1.0 and s[4] == 0.5
    assert np.all(np.diff(s) >= 0)
    assert np.allclose(s + stable_sigmoid(-z), 1.0, rtol=0, atol=4 * np.finfo(dtype).eps)
    assert np.isclose(s[3], 1 / (1 + np.exp(1.0)), rtol=2 * np.finfo(dtype).eps)


def test_layerwise_reference_feeds_each_layer_the_rounded_previous_output():
    spec = StackSpec(2, (3, 3))
    rng = np.random.default_rng(0)
    weights = [(rng.uniform(-1, 1, (2, 3)).astype(np.float32), np.ones(3, np.float32)),
               (rng.uniform(-1, 1, (3, 3)).astype(np.float32), np.ones(3, np.float32))]
    x = rng.uniform(-1, 1, (4, 2)).astype(np.float32)
    first, second = layerwise_reference(spec, weights, x)
    assert first.x.dtype == np.float64
    np.testing.assert_array_equal(second.x, first.h.astype(np.float32).astype(np.float64))
    assert not np.array_equal(second.x, first.h)  # the rounding really happened
