"""LiteRT (TensorFlow Lite): Keras layers converted with ``TFLiteConverter`` and run by ``ai-edge-litert``.

* Properties: drawn float32 stacks (every activation) agree three ways per layer, LiteRT, Keras and the float64
  reference; ``litert_fp16w`` (float16 weights) within its own error model (``tolerance.weight_rounding_error``).
* The float16 weights model is right: the reference with its weights rounded to float16 first agrees with
  ``litert_fp16w`` at the plain float32 bound, and without the weight term the float32 bound fails.
* Rewriting a conversion's buffers is what converting again writes (subnormal and tie weights included).
* Gaps measured and named; meta tests (a drifted activation, Keras 2's hard_sigmoid, an untransposed square
  kernel) caught; evidence for the named difference; golden vectors; the fingerprint's versions.

Only in ``make runtimes`` (the registry leaves litert and litert_fp16w out of make check's default selection).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from equivalence.core.case import Case, make_case
from equivalence.core.check import check_case
from equivalence.core.compare import compare_layers
from equivalence.core.known_differences import KNOWN_DIFFERENCES, extra_error, native_bias_shift
from equivalence.core.layout import LayerWeights
from equivalence.core.reference import layerwise_reference
from equivalence.core.spec import StackSpec
from equivalence.core.strategies import ACTIVATION_NAMES, cases, specs
from tests.helpers import assert_layers_agree, assert_within_last_layer_bound

LITERT_EXAMPLES = settings.default.max_examples // 2
"""A reused layer costs ~3 ms, a new layer shape a conversion (~0.1 s): 50 examples a variant (make runtimes:
200)."""
VARIANTS = ("litert", "litert_fp16w")


def _adapter(request, variant):
    return request.getfixturevalue(f"{variant}_adapter")


@pytest.mark.parametrize("variant", VARIANTS)
@settings(max_examples=LITERT_EXAMPLES)
@given(case=cases(specs(activations=ACTIVATION_NAMES)))
def test_every_litert_layer_agrees_with_keras_and_the_reference(case, variant, keras_adapter, layer_pool,
                                                                  request):
    adapter = _adapter(request, variant)
    models = {variant: (adapter, layer_pool.stack(adapter, case.spec)),
              "keras": (keras_adapter, layer_pool.stack(keras_adapter, case.spec))}
    assert_layers_agree(comparison=check_case(case, models), case=case)


def _fp16w_outputs(adapter, case):
    model = adapter.build(case.spec, "sequential")
    adapter.set_weights(model, case.weights)
    traces = layerwise_reference(case.spec, case.weights, case.x)
    return [adapter.apply_layer(model, i, t.x.astype(np.float32)) for i, t in enumerate(traces)], traces


def _rounded(weights):
    return [LayerWeights(W.astype(np.float16).astype(np.float32),
                         None if b is None else b.astype(np.float16).astype(np.float32)) for W, b in weights]


FP16W_CASES = [(StackSpec(64, (64, 32), (act, act)), seed, scale)
               for seed, act in enumerate(a for a in ACTIVATION_NAMES if a not in ("hard_sigmoid", "selu"))
               for scale in (0.01, 1.0, 30.0)]


def test_fp16w_is_the_reference_with_float16_weights(litert_fp16w_adapter):
    """The error model's premise: ``litert_fp16w`` computes in float32 with the weights rounded to float16.
    Against a reference whose weights were rounded first it agrees at the plain float32 bound (judged as float32
    ``litert``: no weight term); against the unrounded reference the float32 bound alone fails, the weight term
    holds."""
    worst_without_term = 0.0
    for spec, seed, scale in FP16W_CASES:
        case = make_case(spec, seed=seed, batch=16, input_scale=scale)
        outputs, traces = _fp16w_outputs(litert_fp16w_adapter, case)
        rounded = _rounded(case.weights)
        plain = _against(spec, rounded, traces, outputs, "litert")  # float32 litert's bound: no weight term
        assert plain.passed, plain.message()
        unrounded = _against(spec, case.weights, traces, outputs, "fp16w_outputs")
        worst_without_term = max(worst_without_term, unrounded.worst_ratio)
        judged = _against(spec, case.weights, traces, outputs, "litert_fp16w")
        assert judged.passed, judged.message()
    assert worst_without_term > 10, worst_without_term


def _against(spec, weights, traces, outputs, label):
    """``outputs`` (computed from ``traces``' inputs) against the reference of ``weights`` on the same inputs."""
    from equivalence.core.reference import LayerTrace, reference_layer

    reference = [reference_layer(t.x, W, b, act) for t, (W, b), act in zip(traces, weights, spec.activations)]
    assert all(isinstance(r, LayerTrace) for r in reference)
    return compare_layers(spec, weights, traces[0].x, {label: outputs}, reference=reference)


# --- the conversion: rewritten buffers, folding, whole models -----------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_rewritten_buffers_are_what_converting_again_writes(variant, request):
    """A layer converted once with probe weights and rewritten: its buffers hold what a fresh conversion of
    the same weights holds (float16 ties and subnormals rounded as the converter rounds them), and both run
    the same bits."""
    adapter = _adapter(request, variant)

    from equivalence.frameworks.keras.litert import locate_weights

    W = np.random.default_rng(0).normal(size=(6, 6)).astype(np.float32)
    W[0, :4] = [1 + 2**-11, 1 + 3 * 2**-11, 3e-6, 2**-25]  # float16 ties to even, a subnormal, half the smallest
    b = np.linspace(-1, 1, 6).astype(np.float32)
    layer = adapter.build_layer(6, 6, "tanh", bias=True, dtype="float32")
    adapter.set_weights([layer], [LayerWeights(W, b)])
    x = np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)
    rewritten = adapter.apply_layer([layer], 0, x)
    assert adapter._converted[layer].rewritable
    fresh_flat = adapter._convert_layer(layer)
    for got, want in zip(locate_weights(adapter._converted[layer].flat), locate_weights(fresh_flat)):
        assert got.dtype == want.dtype and np.array_equal(got, want), (got, want)
    fresh = adapter.interpreter(fresh_flat, "float32")
    np.testing.assert_array_equal(adapter._run(fresh, x, "float32"), rewritten)


def test_the_converter_folds_hard_sigmoid_into_the_bias_and_the_layer_is_converted_again(litert_adapter):
    """relu6(z + 3) / 6: the bias buffer holds b + 3, so the layer cannot be rewritten; a new conversion per
    weight change keeps it right."""
    from equivalence.frameworks.keras.litert import locate_weights

    case = make_case(StackSpec(8, (8,), ("hard_sigmoid",)), seed=3, batch=16)
    model = litert_adapter.build(case.spec, "sequential")
    comparison = check_case(case, {"litert": (litert_adapter, model)})
    assert comparison.passed, comparison.message()
    converted = litert_adapter._converted[model.layers[0]]
    assert not converted.rewritable
    np.testing.assert_allclose(locate_weights(converted.flat)[1], case.weights[0].b + 3, rtol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_converted_model_runs_as_its_chained_layers(variant, request):
    adapter = _adapter(request, variant)
    case = make_case(StackSpec(6, (7, 5, 3), ("tanh", "gelu", "softmax")), seed=11, batch=9)
    model = adapter.build(case.spec, "sequential")
    adapter.set_weights(model, case.weights)
    np.testing.assert_array_equal(adapter.forward(model, case.x), adapter.taps(model, case.x)[-1])


def test_native_weights_are_the_flatbuffer_s(litert_fp16w_adapter):
    """``(out, in)`` float16 in the quantised flatbuffer: the canonical kernel transposed and rounded."""
    case = make_case(StackSpec(5, (3,), ("relu",)), seed=4, batch=2)
    model = litert_fp16w_adapter.build(case.spec, "sequential")
    litert_fp16w_adapter.set_weights(model, case.weights)
    [(W, b)] = litert_fp16w_adapter.native_weights(model)
    assert W.dtype == np.float16 and W.shape == (3, 5)
    np.testing.assert_array_equal(W, case.weights[0].W.T.astype(np.float16))
    np.testing.assert_array_equal(b, case.weights[0].b.astype(np.float16))


def test_a_weight_beyond_float16_is_refused_not_rounded_to_inf(litert_fp16w_adapter):
    from equivalence.frameworks.base import FrameworkRefused

    layer = litert_fp16w_adapter.build_layer(2, 2, "relu", bias=True, dtype="float32")
    litert_fp16w_adapter.set_weights([layer], [LayerWeights(np.full((2, 2), 7e4, np.float32), np.zeros(2, np.float32))])
    with pytest.raises(FrameworkRefused, match="overflows float16"):
        litert_fp16w_adapter.apply_layer([layer], 0, np.ones((1, 2), np.float32))


# --- gaps ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("dtype", "reason"), [
    ("float64", "no float64 MatMul among LiteRT's builtin ops"),
    ("float16", "no float16 MatMul among LiteRT's builtin ops"),
    ("bfloat16", "the converter takes no bfloat16 model input"),
])
def test_a_litert_gap_is_measured_and_named(variant, dtype, reason, request):
    adapter = _adapter(request, variant)

    import ai_edge_litert

    for activation in ("sigmoid", "gelu"):
        got = adapter.cannot(activation, dtype)
        assert got is not None and got.startswith(reason), f"got {got!r}, but should start with {reason!r}"
        assert f"LiteRT {ai_edge_litert.__version__}" in got


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_float32_activation_converts_and_runs(variant, request):
    adapter = _adapter(request, variant)
    assert {a: adapter.cannot(a, "float32") for a in ACTIVATION_NAMES} == dict.fromkeys(ACTIVATION_NAMES)


def test_a_refused_case_is_not_run_in_verify_not_a_traceback(litert_adapter):
    from equivalence.core.check import run_available

    spec = StackSpec(3, (2,), ("relu",), dtype="float64")
    case = make_case(spec, seed=0, batch=2)
    outputs, not_run = run_available(spec, case.weights, [case.x], {"litert": litert_adapter},
                                     lambda _, adapter: adapter.build(spec, "sequential"))
    assert outputs == {} and not_run["litert"].startswith("no float64 MatMul"), not_run


# --- meta: a drifted activation, Keras 2's hard_sigmoid, an untransposed square kernel ------------------------

def _caught(adapter, case, patch, monkeypatch, *, expected=None):
    def comparison():
        adapter.forget_compiled()
        return check_case(case, {adapter.name: (adapter, adapter.build(case.spec, "sequential"))})

    assert comparison().passed, "the unbroken conversion must agree"
    patch(monkeypatch)
    broken = comparison()
    assert broken.failing_pairs() == {f"{adapter.name} vs reference": 0}, broken.message()
    assert broken.worst_ratio > (expected or 10), broken.message()


def _drifted_softsign(factor):
    def patch(monkeypatch):
        import keras.src.ops
        from keras import ops

        monkeypatch.setattr(keras.src.ops, "softsign", lambda x: ops.divide(x, 1.0 + ops.abs(x) * factor))
    return patch


def _keras2_hard_sigmoid(monkeypatch):
    import keras.src.ops
    from keras import ops

    monkeypatch.setattr(keras.src.ops, "hard_sigmoid", lambda x: ops.clip(0.2 * x + 0.5, 0.0, 1.0))


def _untransposed(monkeypatch):
    from equivalence.frameworks.keras import litert

    monkeypatch.setattr(litert, "native_kernel", lambda W: np.asarray(W))


TRAPS = {
    # litert_fp16w's bound is ~eps16 of the layer: a 1e-4 drift is below what it can see; 1e-2 is not
    "softsign drifted": ("softsign", {"litert": _drifted_softsign(1 + 1e-4), "litert_fp16w": _drifted_softsign(1.1)}),
    "hard_sigmoid in Keras 2's form (0.2 x + 0.5)": ("hard_sigmoid", _keras2_hard_sigmoid),
    "square kernel written untransposed": ("sigmoid", _untransposed),
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("trap", sorted(TRAPS))
def test_a_broken_conversion_is_caught(trap, variant, request, monkeypatch):
    activation, patch = TRAPS[trap]
    patch = patch[variant] if isinstance(patch, dict) else patch
    adapter = _adapter(request, variant)
    case = make_case(StackSpec(16, (16,), (activation,)), seed=5, batch=32, input_scale=3.0)
    expected = 3 if activation == "softsign" else None  # litert: a 1e-4 drift is 4x its bound
    _caught(adapter, case, patch, monkeypatch, expected=expected)


# --- evidence for LiteRT's named difference -------------------------------------------------------------------

def test_litert_fp16w_hard_sigmoid_shift_in_float16_bias(litert_fp16w_adapter):
    """The converter stores float16(b + 3) for a hard_sigmoid layer: at small inputs the output is off by the
    rounding of b + 3, beyond the weight term (which knows only b), and within the entry's eps16/4."""
    from equivalence.core.tolerance import weight_rounding_error

    case = make_case(StackSpec(8, (8,), ("hard_sigmoid",)), seed=3, batch=16, input_scale=0.01)
    outputs, traces = _fp16w_outputs(litert_fp16w_adapter, case)
    W, b = case.weights[0]
    t = traces[0]
    error = np.max(np.abs(outputs[0] - t.h))
    term = weight_rounding_error(x=t.x, W=W, b=b, activation="hard_sigmoid", weight_dtype="float16")
    # what float16(b + 3) does to the output, exactly: (float16(b + 3) - (b + 3)) / 6 where relu6 is not clipped
    shifted = (b.astype(np.float64) + 3).astype(np.float16).astype(np.float64) - (b.astype(np.float64) + 3)
    assert error > 2 * term, (error, term)
    assert np.max(np.abs(shifted)) / 6 > term
    assert error < term + extra_error("litert_fp16w", "hard_sigmoid", "float32") + 8 * 2**-23


@pytest.mark.parametrize("variant", VARIANTS)
def test_litert_float32_softplus_overflows_above_88(variant, request):
    """softplus as LOG(ADD(EXP(z), 1)): +inf above ln(float32 max), exact below; mish stays finite."""
    adapter = _adapter(request, variant)

    from equivalence.frameworks.keras.litert import _OPS, schema

    layer = adapter.build_layer(2, 2, "softplus", bias=True, dtype="float32")
    model = schema.Model.GetRootAs(adapter._convert_layer(layer), 0)
    ops = [_OPS[model.OperatorCodes(i).BuiltinCode()] for i in range(model.OperatorCodesLength())]
    assert "EXP" in ops and "LOG" in ops and "SOFTPLUS" not in ops, ops
    x = np.array([80.0, 88.376, 88.378, 99.83, 1e4])
    got = adapter.activation("softplus", x, "float32")
    assert np.all(np.isposinf(got[2:])) and np.all(np.isfinite(got[:2])), got
    z = np.array([[99.83, 1e4]])
    overflow = KNOWN_DIFFERENCES_BY_NAME["litert_float32_softplus_overflows_above_88"]
    assert np.all(overflow.excuse(z, got[None, 3:], None))
    assert np.all(np.isfinite(adapter.activation("mish", x, "float32")))


KNOWN_DIFFERENCES_BY_NAME = {d.name: d for d in KNOWN_DIFFERENCES}


def test_litert_fp16w_selu_constants_in_float16(litert_fp16w_adapter, litert_adapter):
    """With the weights rounded to float16 first, float32 litert and litert_fp16w differ only for selu (its MUL
    constants are float16 too), by at most eps16/2 of |h|."""
    case = make_case(StackSpec(64, (32,), ("selu",)), seed=12, batch=16, input_scale=0.01)
    rounded = _rounded(case.weights)
    float32_model = litert_adapter.build(case.spec, "sequential")
    litert_adapter.set_weights(float32_model, rounded)
    fp16w_model = litert_fp16w_adapter.build(case.spec, "sequential")
    litert_fp16w_adapter.set_weights(fp16w_model, case.weights)
    y32 = litert_adapter.apply_layer(float32_model, 0, case.x)
    y16 = litert_fp16w_adapter.apply_layer(fp16w_model, 0, case.x)
    error = np.max(np.abs(y16 - y32))
    assert 0.1 * 2**-11 < error <= extra_error("litert_fp16w", "selu", "float32") * np.max(np.abs(y32)) + 8 * 2**-23


@pytest.mark.parametrize("variant", VARIANTS)
def test_litert_hard_sigmoid_folded_into_bias(variant, request):
    """The stored bias of a hard_sigmoid layer is b + 3 (rounded to the storage dtype), of every other activation
    b itself; the kernel is the written one either way."""
    from equivalence.core.strategies import ACTIVATION_NAMES

    adapter = _adapter(request, variant)
    stored = np.dtype(adapter.weights_dtype)
    for activation in ACTIVATION_NAMES:
        case = make_case(StackSpec(3, (4,), (activation,)), seed=1, batch=2)
        model = adapter.build(case.spec, "sequential")
        adapter.set_weights(model, case.weights)
        [(W, b)] = adapter.native_weights(model)
        shift = np.float32(3) if activation == "hard_sigmoid" else np.float32(0)
        assert b.tobytes() == (case.weights[0].b + shift).astype(stored).tobytes(), activation
        assert W.tobytes() == case.weights[0].W.T.astype(stored).tobytes(), activation
        assert native_bias_shift(variant, activation, "float32") == shift, activation


@pytest.mark.parametrize("variant", VARIANTS)
def test_litert_whole_model_folds_across_layers(variant, request):
    """A linear -> sigmoid model converted whole is not its two layers converted one by one (1 ulp in float32,
    3.3e-5 with float16 weights), and within the last layer's bound plus the weight rounding terms."""
    from equivalence.core.known_differences import whole_graph_difference

    adapter = _adapter(request, variant)
    spec = StackSpec(1, (1, 1), ("linear", "sigmoid"))
    weights = (LayerWeights(np.array([[0.27392337]], np.float32), np.array([-0.34280804], np.float32)),
               LayerWeights(np.array([[-0.96694475]], np.float32), np.array([-0.8319432], np.float32)))
    case = Case(spec=spec, weights=weights, x=np.array([[0.82551116]], np.float32))
    model = adapter.build(spec, "sequential")
    adapter.set_weights(model, case.weights)
    whole, chained = adapter.forward(model, case.x), adapter.taps(model, case.x)
    assert not np.array_equal(whole, chained[-1]), "the converted model now equals its layers: the entry can go"
    assert_within_last_layer_bound(got=whole, chained=chained, case=case, framework=variant, what=variant)
    assert whole_graph_difference(variant, spec.activations, "float32").name == "litert_whole_model_folds_across_layers"


def test_every_litert_difference_has_evidence_here():
    names = sorted(d.name for d in KNOWN_DIFFERENCES if d.framework.startswith("litert"))
    assert names == sorted(name.removeprefix("test_") for name in globals()
                           if name.removeprefix("test_") in KNOWN_DIFFERENCES_BY_NAME)


# --- the guard: golden vectors and the fingerprint ----------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_litert_verifies_against_the_golden_vectors(variant, request):
    """LiteRT against the recorded reference and the recorded torch and Keras outputs (a slice: make runtimes
    verifies all through the CLI); every dtype but float32 listed as not run."""
    from dataclasses import replace
    from pathlib import Path

    from equivalence.guard import golden

    adapter = _adapter(request, variant)
    vectors = golden.load(Path(__file__).resolve().parents[2] / "golden")
    picked = tuple(c for c in vectors.cases if c.spec.dtype == "float32")[:12]
    picked += tuple(c for c in vectors.cases if c.spec.dtype == "float64")[:2]
    result = golden.verify(replace(vectors, cases=picked), {variant: adapter})
    assert result.passed, "\n".join(c.message() for c in result.comparisons if not c.passed)
    pairs = {r.pair_name for c in result.comparisons for r in c.results}
    assert {f"{variant} vs reference", f"{variant} vs keras@recorded"} <= pairs, pairs
    assert any(r.reason.startswith("no float64 MatMul") for r in result.not_run), result.not_run


def test_the_fingerprint_holds_litert_versions(litert_fp16w_adapter):
    import ai_edge_litert
    import tensorflow as tf

    from equivalence.guard.fingerprint import fingerprint

    versions = fingerprint(("litert_fp16w",))["frameworks"]["litert_fp16w"]
    assert versions["ai_edge_litert"] == ai_edge_litert.__version__ and versions["tensorflow"] == tf.__version__
    assert versions["litert_weights"] == "float16"
