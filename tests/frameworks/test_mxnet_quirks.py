"""MXNet Gluon's traps and known differences, with their measured evidence (as ``test_keras_quirks`` for Keras).

These run in ``make mxnet`` (.venv-mxnet: MXNet 1.9.1 needs numpy<1.24, which TensorFlow cannot share) and
skip elsewhere. What every framework must do (agree with the reference layer by layer in every build style,
forward and chained taps, gradients and an SGD step, save/load round trips, shapes, parameter counts, weight
round trips, refused bad weight lists, the golden vectors verified alone) runs from the shared test modules,
parametrized over the registry (``conftest.py``): ``pytest -k mxnet`` selects MXNet's cases there and here.
The comparison with torch and Keras goes through the golden vectors, since no venv holds MXNet and TensorFlow
(``test_guard``'s verified-alone test, and ``make mxnet``'s verify step).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, find, settings

from equivalence.core.activations import ACTIVATIONS, SELU_ALPHA, SELU_SCALE
from equivalence.core.case import make_case
from equivalence.core.check import LayerPool, check_case
from equivalence.core.compare import param_count_problems
from equivalence.core.dtypes import EPSILON
from equivalence.core.known_differences import extra_error
from equivalence.core.spec import StackSpec
from equivalence.core.strategies import ACTIVATION_NAMES, cases, specs
from equivalence.frameworks.registry import FrameworkUnavailable, get_adapter
from tests.helpers import build_loaded, reference_inputs

try:  # one skip line for the module, instead of one per test
    get_adapter("mxnet")
except FrameworkUnavailable as exc:
    pytest.skip(str(exc), allow_module_level=True)

import mxnet as mx  # noqa: E402  (for the tests that show a Gluon trap first-hand)

GLUON_DTYPES = ("float32", "float64")
"""float16 and bfloat16 cannot run on MXNet's CPU build (``mxnet_adapter.UNSUPPORTED_DTYPES``, tested below)."""

GLUON_CASES = cases(specs(activations=ACTIVATION_NAMES, dtypes=GLUON_DTYPES))
"""As ``strategies.breadth_specs``: every activation drawn per layer, bias on or off, in the dtypes MXNet runs."""


# --- weights, shapes, counts ---------------------------------------------------------------------

def test_a_frozen_layer_drops_out_of_the_trainable_count(mxnet_adapter):
    spec = StackSpec(5, (7, 3))
    model = mxnet_adapter.build(spec, "sequential")
    model[0].collect_params().setattr("grad_req", "null")
    count = mxnet_adapter.count_params(model)
    assert count.per_layer == (0, 24) and count.total == 24 and count.trainable_tensors == 2
    assert param_count_problems(spec, count, framework="mxnet")


def test_a_square_layer_written_untransposed_is_caught_at_that_layer(mxnet_adapter):
    """Gluon accepts a square kernel either way round; only the values can tell, and they do."""
    case = make_case(StackSpec(4, (6, 6, 2)), seed=7, batch=3)
    model = mxnet_adapter.build(case.spec, "sequential")
    layer = model[1]
    comparison = check_case(case, {"mxnet": (mxnet_adapter, model)})
    assert comparison.passed, comparison.message()
    layer.weight.set_data(layer.weight.data().T)  # what a copy without the adapter's transpose does
    outputs = {"mxnet": mxnet_adapter.layer_outputs(model, reference_inputs(case))}
    from equivalence.core.compare import compare_layers

    result = compare_layers(case.spec, case.weights, case.x, outputs)
    assert result.failing_pairs() == {"mxnet vs reference": 1}, result.message()
    assert result.first_failure(("mxnet", "reference")).ratio > 1000


# --- the activation mapping ------------------------------------------------------------------------

def test_an_unmapped_activation_is_a_clear_error(mxnet_adapter):
    with pytest.raises(ValueError, match=r"no Gluon mapping for activation 'not_an_activation'; mapped: sigmoid"):
        mxnet_adapter.build_layer(3, 2, "not_an_activation", bias=True, dtype="float32")


def _gluon_activation(name, z, dtype):
    """Our activation ``name`` exactly as the adapter maps it in ``dtype``, applied to the float64 ``z``."""
    from equivalence.frameworks.mxnet import gluon_activation

    act_type, block = gluon_activation(name, dtype)
    x = mx.nd.array(np.asarray(z, dtype=np.float64), dtype=dtype)
    if act_type is not None:
        y = mx.nd.Activation(x, act_type=act_type)
    elif block is not None:
        block.initialize()
        y = block(x)
    else:
        y = x
    return y.asnumpy().astype(np.float64)


def _reference(name, z):
    with np.errstate(invalid="ignore", over="ignore"):
        return ACTIVATIONS[name].reference(np.asarray(z, dtype=np.float64))


def _activation_ratio(name, z, got, dtype):
    """Greatest |got - reference| over the error model's bound (with any named known difference, as
    ``compare_layers`` grants it) for a layer whose pre-activation is ``z``."""
    ref = _reference(name, z)
    scale = max(1.0, ACTIVATIONS[name].max_slope * float(np.max(np.abs(z))), float(np.max(np.abs(ref))))
    return float(np.max(np.abs(got - ref))) / ((8 * EPSILON[dtype] + extra_error("mxnet", name, dtype)) * scale)


@pytest.mark.parametrize("dtype", GLUON_DTYPES)
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_each_gluon_form_agrees_with_the_reference_on_a_grid(name, dtype):
    """Every mapping, on its own, over |z| <= 1 (at every scale) to 90, rows of 8 for the row-coupled ones."""
    for top in (0.1, 1.0, 10.0, 90.0):
        z = np.linspace(-top, top, 8 * 2001).astype(dtype).astype(np.float64).reshape(-1, 8)
        got = _gluon_activation(name, z, dtype)
        assert got.shape == z.shape
        ratio = _activation_ratio(name, z, got, dtype)
        assert ratio <= 1.0, f"mxnet {name} {dtype} on [-{top}, {top}]: error/bound ratio {ratio:.3g}"


# --- Gluon's traps, measured first-hand --------------------------------------------------------------

def test_nd_array_makes_float32_from_float64_unless_told():
    """Why every conversion in the adapter names its dtype."""
    x = np.array([0.1], dtype=np.float64)
    assert mx.nd.array(x).dtype == np.float32
    assert mx.nd.array(x, dtype=np.float64).dtype == np.float64


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_dtypes_mxnet_cannot_compute_on_cpu_are_refused_up_front(dtype, mxnet_adapter):
    with pytest.raises(ValueError, match=rf"mxnet cannot run a {dtype} Dense layer on CPU"):
        mxnet_adapter.build(StackSpec(5, (3,), dtype=dtype), "sequential")


def test_float16_dense_fails_in_mxnet_itself_and_only_when_read():
    """The evidence behind ``UNSUPPORTED_DTYPES['float16']``: the asynchronous engine
    accepts the call and raises when the result is read."""
    dense = mx.gluon.nn.Dense(3, in_units=5, dtype="float16")
    dense.initialize()
    y = dense(mx.nd.ones((2, 5), dtype="float16"))  # no error yet
    with pytest.raises(mx.base.MXNetError, match="float16 fully connected layer is currently"):
        y.asnumpy()


def test_a_deferred_dense_is_refused_with_a_clear_message(mxnet_adapter):
    """``Dense(units)`` without ``in_units``: weight (units, 0) until the first call."""
    model = mx.gluon.nn.HybridSequential()
    model.add(mx.gluon.nn.Dense(4), mx.gluon.nn.Dense(2))
    model.initialize()
    assert model[0].weight.shape == (4, 0)
    with pytest.raises(mx.gluon.parameter.DeferredInitializationError):
        model[0].weight.data()  # Gluon's own answer
    for method in (mxnet_adapter.get_weights, mxnet_adapter.count_params):
        with pytest.raises(ValueError, match=r"not initialised: Dense layer 0 .* deferred weight shape \(4, 0\)"):
            method(model)
    mxnet_adapter.forward(model, np.ones((1, 3), np.float32))  # a first call fixes the shapes
    assert [w.W.shape for w in mxnet_adapter.get_weights(model)] == [(3, 4), (4, 2)]


def test_an_uninitialised_model_is_refused_with_a_clear_message(mxnet_adapter):
    model = mx.gluon.nn.Sequential()
    model.add(mx.gluon.nn.Dense(2, in_units=3))
    with pytest.raises(ValueError, match=r"not initialised: Dense layer 0 .* Call model.initialize\(\) first"):
        mxnet_adapter.get_weights(model)


def test_dense_flattens_by_default_where_torch_and_keras_use_the_last_axis():
    """Why the adapter passes ``flatten=False``: on 3-D input the default gives another shape."""
    x = mx.nd.ones((2, 3, 4))
    default = mx.gluon.nn.Dense(5)
    last_axis = mx.gluon.nn.Dense(5, flatten=False)
    default.initialize()
    last_axis.initialize()
    assert default(x).shape == (2, 5) and default.weight.shape == (5, 12)
    assert last_axis(x).shape == (2, 3, 5) and last_axis.weight.shape == (5, 4)


def test_layers_in_a_plain_list_are_not_registered_and_gluon_says_so():
    """torch's plain-list trap runs silently; Gluon warns, skips them in ``initialize()``, and the call fails."""
    nn = mx.gluon.nn

    class PlainList(mx.gluon.Block):
        def __init__(self):
            super().__init__()
            self.layers = [nn.Dense(3, in_units=2), nn.Dense(1, in_units=3)]

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = PlainList()
        model.initialize()
        assert list(model.collect_params()) == []
        with pytest.raises(RuntimeError, match="has not been initialized"):
            model(mx.nd.ones((1, 2)))
    assert any("unregistered container with Blocks" in str(w.message) for w in caught)


def test_float32_relu_turns_nan_into_zero_under_onednn(mxnet_adapter):
    """A real difference, outside the finite inputs the error model covers (``KNOWN_DIFFERENCES``).

    Measured: MXNet 1.9.1's float32 ``Activation(act_type='relu')`` runs on oneDNN
    (MKLDNN, on by default in the PyPI build) and maps NaN to 0; the reference
    and torch keep NaN. float64 (no oneDNN kernel) and ``nd.relu`` keep NaN, and so
    does float32 with ``MXNET_MKLDNN_ENABLED=0``.
    """
    from equivalence.frameworks.mxnet import onednn_active
    from equivalence.frameworks.mxnet.known_differences import MXNET

    assert "relu_nan_float32" in {d.name for d in MXNET}
    x = np.array([np.nan, -1.0, 2.0])
    reference = ACTIVATIONS["relu"].reference(x)
    f32 = mx.nd.Activation(mx.nd.array(x, dtype="float32"), act_type="relu").asnumpy()
    f64 = mx.nd.Activation(mx.nd.array(x, dtype="float64"), act_type="relu").asnumpy()
    assert np.isnan(reference[0]) and np.isnan(f64[0])
    assert (f32[0] == 0.0) if onednn_active() else np.isnan(f32[0]), f"float32 relu(nan) = {f32[0]}"
    np.testing.assert_array_equal(f32[1:], reference[1:])


# --- the suite notices a broken Gluon ----------------------------------------------------------------

SEARCH = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), phases=[Phase.generate])


def _mxnet_only(case, adapter, pool):
    return check_case(case, {"mxnet": (adapter, pool.stack(adapter, case.spec))})


def test_a_dense_dropping_its_bias_is_caught_at_the_first_layer(monkeypatch, mxnet_adapter):
    nn = mx.gluon.nn

    def no_bias(self, F, x, weight, bias=None):
        act = F.FullyConnected(x, weight, no_bias=True, num_hidden=self._units, flatten=self._flatten, name="fwd")
        return self.act(act) if self.act is not None else act

    monkeypatch.setattr(nn.Dense, "hybrid_forward", no_bias)
    case = make_case(StackSpec(3, (4, 4, 2)), seed=11, batch=3, weight_scale="fan_in")
    result = _mxnet_only(case, mxnet_adapter, LayerPool())
    assert result.failing_pairs() == {"mxnet vs reference": 0}, result.message()


def test_a_sigmoid_drifting_by_1e_5_relative_is_found_by_the_suites_own_strategy(monkeypatch, mxnet_adapter):
    nn = mx.gluon.nn
    original = nn.Activation.hybrid_forward

    def drifting(self, F, x):
        y = original(self, F, x)
        return y * (1 + 1e-5) if self._act_type == "sigmoid" else y

    monkeypatch.setattr(nn.Activation, "hybrid_forward", drifting)
    pool = LayerPool()
    case = find(GLUON_CASES, lambda c: not _mxnet_only(c, mxnet_adapter, pool).passed, settings=SEARCH)
    result = _mxnet_only(case, mxnet_adapter, pool)
    assert "mxnet vs reference" in result.failing_pairs(), result.message()
    first = result.first_failure(("mxnet", "reference"))
    assert case.spec.activations[first.layer] == "sigmoid", result.message()


# --- the differences found while mapping, measured (mxnet.known_differences, noted) ----------------

def gelu_float64_in_float32():
    z = np.array([16.04, 5.0, -3.3, 0.7])
    layer = mx.gluon.nn.GELU()
    native = layer(mx.nd.array(z, dtype="float64")).asnumpy()
    err = np.abs(native - _reference("gelu", z))
    assert np.max(err) > 1e-7, err  # float32 precision (measured 9.2e-7 at 16.04), not float64's 3.6e-15
    np.testing.assert_array_equal(native, native.astype(np.float32))  # every value a float32
    assert np.max(np.abs(_gluon_activation("gelu", z, "float64") - _reference("gelu", z))) < 4 * EPSILON["float64"] * 17
    z32 = np.linspace(-20, 20, 4001).astype(np.float32).astype(np.float64)  # nn.GELU is right in float32
    assert _activation_ratio("gelu", z32, layer(mx.nd.array(z32, dtype="float32")).asnumpy(), "float32") < 0.2


def gelu_has_no_tanh_form():
    import inspect

    assert list(inspect.signature(mx.gluon.nn.GELU.__init__).parameters) == ["self", "kwargs"]
    z = np.linspace(-6, 6, 1201).astype(np.float32).astype(np.float64)
    native = mx.gluon.nn.GELU()(mx.nd.array(z, dtype="float32")).asnumpy()
    gap = np.max(np.abs(native - _reference("gelu_tanh", z)))
    assert 4.6e-4 < gap < 4.8e-4, gap  # the erf form against the tanh form
    assert np.max(np.abs(native - _reference("gelu", z))) < 1e-6


def leaky_relu_float64_in_float32():
    z = mx.nd.array([-29.54, -1.0], dtype="float64")
    got = mx.nd.LeakyReLU(z, act_type="leaky", slope=0.2).asnumpy()
    in_float32 = float(np.float32(-29.54) * np.float32(0.2))  # input, slope and product all float32
    assert got[0] == in_float32 and abs(got[0] / (-29.54 * 0.2) - 1) > 7e-8, got  # 7.9e-8 relative
    assert got[1] == -float(np.float32(0.2))
    assert mx.nd.LeakyReLU(z, act_type="leaky").asnumpy()[1] == -0.25  # the op's default slope
    with pytest.raises(TypeError):
        mx.gluon.nn.LeakyReLU()  # nn.LeakyReLU has no default: the adapter passes 0.2
    ours = _gluon_activation("leaky_relu_0.2", np.array([-29.54, -1.0, 3.0]), "float64")
    assert ours.tolist() == [-29.54 * 0.2, -0.2, 3.0]


def hard_sigmoid_defaults():
    one = mx.nd.array([1.0], dtype="float64")
    assert abs(mx.nd.hard_sigmoid(one).asnumpy()[0] - 0.7) < 1e-7  # 0.2 x + 0.5, not relu6(x + 3) / 6
    sixth = mx.nd.hard_sigmoid(one, alpha=1 / 6, beta=0.5).asnumpy()[0]
    assert sixth == float(np.float32(1 / 6)) + 0.5 != 4 / 6  # alpha is a float32 parameter
    assert _gluon_activation("hard_sigmoid", np.array([1.0]), "float64")[0] == 4 / 6


def log_softmax_onednn_float32():
    from equivalence.frameworks.mxnet import onednn_active

    z = np.linspace(-0.1, 0.1, 7).astype(np.float32).astype(np.float64).reshape(1, 7)
    native = mx.nd.log_softmax(mx.nd.array(z, dtype="float32"), axis=-1).asnumpy()
    ratio = _activation_ratio("log_softmax", z, native, "float32")
    if onednn_active():
        assert ratio > 1.0, ratio  # measured 3.4e-6 off, ratio 1.6-1.7
    else:
        assert ratio < 0.5, ratio
    assert _activation_ratio("log_softmax", z, _gluon_activation("log_softmax", z, "float32"), "float32") < 0.2


def softrelu_onednn_float32():
    from equivalence.frameworks.mxnet import onednn_active

    z = np.array([-17.68, -87.0]).astype(np.float32).astype(np.float64)
    native = mx.nd.Activation(mx.nd.array(z, dtype="float32"), act_type="softrelu").asnumpy().astype(np.float64)
    if onednn_active():
        assert native[0] < 0, native  # softplus is positive: an approximation, -1.9e-6
    err = np.abs(native - _reference("softplus", z))
    assert np.all(err <= 8 * EPSILON["float32"] * np.abs(z)), err  # inside softplus's own bound
    mish_z = np.array([-29.45]).astype(np.float32).astype(np.float64)
    x = mx.nd.array(mish_z, dtype="float32")
    naive = (x * mx.nd.tanh(mx.nd.Activation(x, act_type="softrelu"))).asnumpy()
    if onednn_active():
        assert _activation_ratio("mish", mish_z, naive, "float32") > 1.0  # measured 1.8
    assert _activation_ratio("mish", mish_z, _gluon_activation("mish", mish_z, "float32"), "float32") < 0.1


def relu_nan_float32():
    test_float32_relu_turns_nan_into_zero_under_onednn(get_adapter("mxnet"))


def sigmoid_tiny_float32():
    from equivalence.frameworks.mxnet import onednn_active

    z = np.array([-87.0, -80.0])
    got = mx.nd.Activation(mx.nd.array(z, dtype="float32"), act_type="sigmoid").asnumpy().astype(np.float64)
    ref = _reference("sigmoid", z)
    assert ref[0] > np.finfo(np.float32).tiny
    if onednn_active():
        assert got[0] == 0.0, got
    assert np.max(np.abs(got - ref)) < 2e-38 + 8 * EPSILON["float32"] * ref[1]


# named in equivalence.core.known_differences (they widen the float64 bound)

def selu_backward_wrong_scale():
    from mxnet import autograd

    for dtype in GLUON_DTYPES:
        x = mx.nd.array([-5.0, -1.0, 2.0], dtype=dtype)
        x.attach_grad()
        with autograd.record():
            y = mx.gluon.nn.SELU()(x)
        y.backward()
        z, out, grad = x.asnumpy().astype(np.float64), y.asnumpy().astype(np.float64), x.grad.asnumpy()
        true = np.where(z > 0, SELU_SCALE, SELU_SCALE * SELU_ALPHA * np.exp(z))
        np.testing.assert_allclose(grad, SELU_SCALE * (out + SELU_ALPHA) * (z < 0) + SELU_SCALE * (z > 0),
                                   rtol=1e-6, err_msg=dtype)  # lambda (y + alpha): the bug
        assert abs(grad[0] - true[0]) > 0.08 and abs(grad[2] - true[2]) < 1e-6, (dtype, grad, true)
    z = np.array([1e4, 2.0])
    native = mx.gluon.nn.SELU()(mx.nd.array(z, dtype="float64")).asnumpy()
    rel = np.abs(native - _reference("selu", z)) / _reference("selu", z)
    assert rel[0] == pytest.approx(float(np.float32(SELU_SCALE)) / SELU_SCALE - 1, rel=1e-6) and rel[0] > 3e-8
    ours = _gluon_activation("selu", np.concatenate([z, [-1.0, -30.0]]), "float64")
    assert np.max(np.abs(ours - _reference("selu", np.concatenate([z, [-1.0, -30.0]])))) < 4 * EPSILON["float64"] * 1e4


def mxnet_float64_erf_backward_float32_constant():
    import math

    from mxnet import autograd

    z = np.linspace(-6, 6, 12001)
    x = mx.nd.array(z, dtype="float64")
    x.attach_grad()
    with autograd.record():
        y = mx.nd.erf(x)
    y.backward()
    true = 2 / math.sqrt(math.pi) * np.exp(-z * z)
    rel = np.max(np.abs(x.grad.asnumpy() - true) / true)
    assert 1e-8 < rel < extra_error("mxnet", "gelu", "float64", scope="gradient"), rel  # measured 3.0e-8
    assert extra_error("mxnet", "gelu", "float64", scope="forward") == 0.0
    assert np.max(np.abs(mx.nd.erf(mx.nd.array(z, dtype="float64")).asnumpy() - np.vectorize(math.erf)(z))) \
        < 4 * EPSILON["float64"]


def mxnet_float64_softrelu_threshold_20():
    z = np.array([20.5, 19.5])
    got = mx.nd.Activation(mx.nd.array(z, dtype="float64"), act_type="softrelu").asnumpy()
    gap = np.abs(got - _reference("softplus", z))
    assert got[0] == 20.5 and 1e-9 < gap[0] < extra_error("mxnet", "softplus", "float64") * 20.5, gap
    assert gap[1] < 4 * EPSILON["float64"] * 19.5  # below the threshold it is float64-exact


EVIDENCE = {f.__name__: f for f in (
    gelu_float64_in_float32, gelu_has_no_tanh_form, leaky_relu_float64_in_float32, hard_sigmoid_defaults,
    log_softmax_onednn_float32, softrelu_onednn_float32, relu_nan_float32, sigmoid_tiny_float32,
    selu_backward_wrong_scale, mxnet_float64_erf_backward_float32_constant, mxnet_float64_softrelu_threshold_20,
)}


def test_every_mxnet_difference_has_evidence():
    from equivalence.core.known_differences import KNOWN_DIFFERENCES

    assert sorted(d.name for d in KNOWN_DIFFERENCES if d.framework == "mxnet") == sorted(EVIDENCE)


@pytest.mark.parametrize("name", sorted(EVIDENCE))
def test_the_mxnet_difference_is_still_measured(name):
    EVIDENCE[name]()


# --- gradients, save and load --------------------------------------------------------------------

def test_a_file_of_another_spec_is_refused_by_gluon_on_load(mxnet_adapter, tmp_path):
    """Gluon's own answer (an ``AssertionError`` naming the parameter), never a silently mis-shaped model."""
    case = make_case(StackSpec(3, (4, 2), ("gelu", "mish")), seed=2, batch=2)
    mxnet_adapter.save(build_loaded(mxnet_adapter, case, "sequential"), tmp_path / "ok.params")
    with pytest.raises(AssertionError):
        mxnet_adapter.load(tmp_path / "ok.params", StackSpec(3, (5, 2), ("gelu", "mish")), "sequential")


def test_gluons_own_selu_would_fail_the_gradient_property(monkeypatch, mxnet_adapter):
    """Why selu is composed: mapped to ``nn.SELU()``, the gradient check names the selu layer and those before it."""
    from equivalence.core.gradients import compare_gradients, reference_gradients
    from equivalence.frameworks import mxnet as module

    case = make_case(StackSpec(3, (4, 4, 2), ("tanh", "selu", "linear")), seed=5, batch=8, input_scale=10.0)
    grads = {}
    for form in ("composed", "gluon"):
        if form == "gluon":
            monkeypatch.setitem(module._GLUON_FORMS, "selu", ("nn.SELU()", lambda: mx.gluon.nn.SELU()))
        model = LayerPool().stack(mxnet_adapter, case.spec)
        mxnet_adapter.set_weights(model, case.weights)
        grads[form] = compare_gradients(case.spec, case.weights, case.x,
                                        reference_gradients(case.spec, case.weights, case.x),
                                        {"mxnet": mxnet_adapter.loss_gradients(model, case.x)})
    assert grads["composed"].passed, grads["composed"].message()
    failing = grads["gluon"].failing_pairs()
    assert failing.get("mxnet dL/dW vs reference") == 0 and "mxnet dL/dX vs reference" in failing, failing
    assert grads["gluon"].first_failure(("mxnet dL/dW", "reference")).ratio > 5, grads["gluon"].message()  # 11
    layer1 = [r for r in grads["gluon"].results if r.layer == 1 and r.pair == ("mxnet dL/dW", "reference")]
    assert not layer1[0].passed, grads["gluon"].message()  # the selu layer itself
    layer2 = [r for r in grads["gluon"].results if r.layer == 2 and r.pair == ("mxnet dL/dW", "reference")]
    assert layer2[0].passed, grads["gluon"].message()  # after it, the backward pass has not met selu yet
