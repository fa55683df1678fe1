"""MXNet Gluon against the float64 reference, layer by layer, and Gluon's traps with their measured evidence.

These run in ``make mxnet`` (.venv-mxnet: MXNet 1.9.1 needs numpy<1.24, which
TensorFlow cannot share) and skip elsewhere. Select them with ``pytest
tests/test_mxnet.py`` or ``pytest -k mxnet`` (which adds the mxnet cases of
``test_adapters.py``: shapes, parameter counts, bit-for-bit weight round trips,
refused bad weight lists, in every style). The comparison with torch and Keras
goes through the golden vectors, since no venv holds MXNet and TensorFlow.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, find, given, settings

from equivalence.activations import ACTIVATIONS
from equivalence.adapters import STYLES, FrameworkUnavailable, get_adapter
from equivalence.case import make_case
from equivalence.check import LayerPool, check_case
from equivalence.compare import param_count_problems
from equivalence.layout import LayerWeights
from equivalence.spec import StackSpec
from equivalence.strategies import cases, specs
from equivalence.transfer import transfer
from tests.helpers import (
    BUILD_EXAMPLES,
    NUMERIC_EXAMPLES,
    assert_layers_agree,
    assert_weights_identical,
    build_loaded,
    reference_inputs,
)

try:  # one skip line for the module, instead of one per test
    get_adapter("mxnet")
except FrameworkUnavailable as exc:
    pytest.skip(str(exc), allow_module_level=True)

import mxnet as mx  # noqa: E402  (for the tests that show a Gluon trap first-hand)

from equivalence.mxnet_adapter import GLUON_ACTIVATIONS  # noqa: E402

GLUON_DTYPES = ("float32", "float64")
"""float16 and bfloat16 cannot run on MXNet's CPU build (``mxnet_adapter.UNSUPPORTED_DTYPES``, tested below)."""

MAPPED_ACTIVATIONS = tuple(a for a in ACTIVATIONS if a in GLUON_ACTIVATIONS)
"""Drawn by the properties; ``test_every_activation_has_a_gluon_mapping`` fails on any left out."""
GLUON_CASES = cases(specs(activations=MAPPED_ACTIVATIONS, dtypes=GLUON_DTYPES))


# --- numbers: every layer against the float64 reference ------------------------------------------

@settings(max_examples=NUMERIC_EXAMPLES)
@given(case=GLUON_CASES)
def test_every_layer_agrees_with_the_reference(case, mxnet_adapter, layer_pool):
    comparison = check_case(case, {"mxnet": (mxnet_adapter, layer_pool.stack(mxnet_adapter, case.spec))})
    assert_layers_agree(comparison=comparison, case=case)


@pytest.mark.parametrize("style", STYLES["mxnet"])
@settings(max_examples=BUILD_EXAMPLES)
@given(case=GLUON_CASES)
def test_every_layer_of_every_build_style_agrees_with_the_reference(case, style, mxnet_adapter):
    comparison = check_case(case, {"mxnet": (mxnet_adapter, mxnet_adapter.build(case.spec, style))})
    assert_layers_agree(comparison=comparison, case=case)


@pytest.mark.parametrize("style", STYLES["mxnet"])
@settings(max_examples=BUILD_EXAMPLES)
@given(case=GLUON_CASES)
def test_the_models_own_forward_equals_its_chained_layers(case, style, mxnet_adapter):
    """The model's own wiring (Sequential, the hybridized graph, the subclass's
    ``hybrid_forward``) computes exactly the chain the per-layer check calls."""
    model = build_loaded(mxnet_adapter, case, style)
    chained = mxnet_adapter.taps(model, case.x)
    whole = mxnet_adapter.forward(model, case.x)
    assert whole.shape == chained[-1].shape == (case.batch, case.spec.widths[-1])
    np.testing.assert_array_equal(whole, chained[-1], err_msg=f"mxnet {style}")


# --- weights, shapes, counts ---------------------------------------------------------------------

@settings(max_examples=BUILD_EXAMPLES)
@given(case=GLUON_CASES)
def test_weights_round_trip_bit_for_bit_and_native_is_the_transpose(case, mxnet_adapter):
    """In both dtypes (``test_adapters`` covers float32 in every style)."""
    dtype = case.spec.dtype
    model = build_loaded(mxnet_adapter, case, "sequential")
    assert_weights_identical(got=mxnet_adapter.get_weights(model), expected=case.weights, what=f"mxnet {dtype}")
    for layer, ((W, b), (native_W, native_b)) in enumerate(zip(case.weights, mxnet_adapter.native_weights(model))):
        assert native_W.dtype == np.dtype(dtype), f"layer {layer}: Gluon weight dtype {native_W.dtype}"
        assert native_W.tobytes() == np.ascontiguousarray(W.T).tobytes(), f"layer {layer}: Gluon weight != W.T"
        assert (b is None and native_b is None) or native_b.tobytes() == b.tobytes(), f"layer {layer}: bias"


@pytest.mark.parametrize("style", STYLES["mxnet"])
def test_three_four_five_six_has_16_25_36_parameters(style, mxnet_adapter):
    count = mxnet_adapter.count_params(mxnet_adapter.build(StackSpec(3, (4, 5, 6)), style))
    assert count.per_layer == (16, 25, 36), count
    assert count.total == 77 and count.trainable_tensors == 6, count


def test_a_frozen_layer_drops_out_of_the_trainable_count(mxnet_adapter):
    spec = StackSpec(5, (7, 3))
    model = mxnet_adapter.build(spec, "sequential")
    model[0].collect_params().setattr("grad_req", "null")
    count = mxnet_adapter.count_params(model)
    assert count.per_layer == (0, 24) and count.total == 24 and count.trainable_tensors == 2
    assert param_count_problems(spec, count, framework="mxnet")


@pytest.mark.parametrize("style", STYLES["mxnet"])
def test_a_transfer_shape_mismatch_names_the_layer_and_both_shapes(style, mxnet_adapter):
    source = mxnet_adapter.build(StackSpec(4, (5, 3)), style)
    target = mxnet_adapter.build(StackSpec(4, (5, 2)), style)
    before = mxnet_adapter.get_weights(target)
    with pytest.raises(ValueError, match=r"mxnet set_weights: layer 1 kernel has shape \(5, 3\), expected \(5, 2\)"):
        transfer(mxnet_adapter, source, mxnet_adapter, target)
    assert_weights_identical(got=mxnet_adapter.get_weights(target), expected=before, what="after a refused transfer")


def test_a_missing_bias_and_an_extra_bias_are_refused(mxnet_adapter):
    case = make_case(StackSpec(3, (2,)), seed=1, batch=1)
    model = build_loaded(mxnet_adapter, case, "sequential")
    with pytest.raises(ValueError, match=r"layer 0 has no bias, but the target layer has one of shape \(2,\)"):
        mxnet_adapter.set_weights(model, [LayerWeights(case.weights[0].W, None)])
    no_bias = mxnet_adapter.build(StackSpec(3, (2,), bias=False), "sequential")
    with pytest.raises(ValueError, match=r"layer 0 has a bias of shape \(2,\), but the target layer has none"):
        mxnet_adapter.set_weights(no_bias, case.weights)


def test_a_square_layer_written_untransposed_is_caught_at_that_layer(mxnet_adapter):
    """Gluon accepts a square kernel either way round; only the values can tell, and they do."""
    case = make_case(StackSpec(4, (6, 6, 2)), seed=7, batch=3)
    model = mxnet_adapter.build(case.spec, "sequential")
    layer = model[1]
    comparison = check_case(case, {"mxnet": (mxnet_adapter, model)})
    assert comparison.passed, comparison.message()
    layer.weight.set_data(layer.weight.data().T)  # what a copy without the adapter's transpose does
    outputs = {"mxnet": mxnet_adapter.layer_outputs(model, reference_inputs(case))}
    from equivalence.compare import compare_layers

    result = compare_layers(case.spec, case.weights, case.x, outputs)
    assert result.failing_pairs() == {"mxnet vs reference": 1}, result.message()
    assert result.first_failure(("mxnet", "reference")).ratio > 1000


# --- the activation mapping ------------------------------------------------------------------------

def test_every_activation_has_a_gluon_mapping(mxnet_adapter):
    missing = sorted(set(ACTIVATIONS) - set(GLUON_ACTIVATIONS))
    assert not missing, f"activations without a Gluon mapping in mxnet_adapter.GLUON_ACTIVATIONS: {missing}"


def test_an_unmapped_activation_is_a_clear_error(mxnet_adapter):
    with pytest.raises(ValueError, match=r"no Gluon mapping for activation 'not_an_activation'; mapped: sigmoid"):
        mxnet_adapter.build_layer(3, 2, "not_an_activation", bias=True, dtype="float32")


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
    from equivalence.mxnet_adapter import KNOWN_DIFFERENCES, onednn_active

    assert "relu_nan_float32" in KNOWN_DIFFERENCES
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
