"""The runtimes users deploy to, checked layer by layer like the frameworks: ONNX Runtime on torch's export.

* Properties: drawn stacks (every activation and dtype ORT computes, and the seed notes' sigmoid stacks) agree
  three ways per layer, ORT, torch and the float64 reference, within the same error model.
* Gaps: what ORT cannot compute is measured (``Adapter.cannot``) and named, never a traceback.
* Meta tests: ONNX's own defaults (``HardSigmoid`` alpha 0.2, ``LeakyRelu`` alpha 0.01, ``Gelu`` exact),
  a drifted activation and a transposed ``Gemm`` swapped into the exported graph must fail the check.
* Evidence for ORT's named known differences, and the golden vectors (recorded torch and Keras outputs).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings

from equivalence.core.activations import ACTIVATIONS
from equivalence.core.case import Case, make_case
from equivalence.core.check import check_case, why_not_run
from equivalence.core.dtypes import EPSILON
from equivalence.core.known_differences import KNOWN_DIFFERENCES, extra_error, whole_graph_difference
from equivalence.core.layout import LayerWeights
from equivalence.core.spec import StackSpec
from equivalence.core.strategies import ACTIVATION_NAMES, breadth_specs, cases, specs
from tests.helpers import RUNTIMES, assert_layers_agree, assert_within_last_layer_bound, build_loaded, chained_in

ORT_EXAMPLES = 2 * settings.default.max_examples
"""Each ORT layer is a session (its export is rewritten with the new weights): ~30 ms an example."""
ORT_DTYPES = ("float32", "float64", "float16")  # bfloat16: no Gemm kernel at all (test below)


def _pooled(case, ort_adapter, torch_adapter, layer_pool):
    return {"ort": (ort_adapter, layer_pool.stack(ort_adapter, case.spec)),
            "torch": (torch_adapter, layer_pool.stack(torch_adapter, case.spec))}


@settings(max_examples=ORT_EXAMPLES)
@given(case=cases(specs(activations=ACTIVATION_NAMES, dtypes=ORT_DTYPES)))
def test_every_ort_layer_agrees_three_ways_for_every_activation_and_dtype(case, ort_adapter, torch_adapter,
                                                                           layer_pool):
    assume(why_not_run(ort_adapter, case.spec) is None)
    assert_layers_agree(comparison=check_case(case, _pooled(case, ort_adapter, torch_adapter, layer_pool)),
                        case=case)


@settings(max_examples=ORT_EXAMPLES // 2)
@given(case=cases())
def test_every_ort_sigmoid_layer_agrees_three_ways(case, ort_adapter, torch_adapter, layer_pool):
    """The seed notes' stack (float32 sigmoid)."""
    assert_layers_agree(comparison=check_case(case, _pooled(case, ort_adapter, torch_adapter, layer_pool)),
                        case=case)


def test_new_weights_rewrite_the_export_to_what_exporting_again_writes(ort_adapter):
    """A layer is exported once; a weight change rewrites its ``Gemm`` initializers. The rewritten graph must be
    byte for byte what a fresh export of the same torch layer writes."""
    import torch

    case = make_case(StackSpec(5, (4,), ("leaky_relu_0.2",)), seed=2, batch=3)
    [layer] = ort_adapter.build(case.spec, "sequential").layers
    ort_adapter.set_weights([layer], [(np.zeros((5, 4), np.float32), np.zeros(4, np.float32))])
    ort_adapter.apply_layer([layer], 0, case.x)
    ort_adapter.set_weights([layer], case.weights)
    rewritten = ort_adapter._layer_graph(layer)
    fresh = ort_adapter.export(layer.module, torch.zeros(1, 5))
    assert rewritten.SerializeToString() == fresh.SerializeToString()


@pytest.mark.parametrize("dtype", ORT_DTYPES)
def test_ort_threads_do_not_change_its_bits(dtype, ort_adapter):
    """The adapter runs sessions on one intra-op thread (a thread pool per session costs ~20 ms); ORT's default
    (one thread per core) gives the same bits, at fan-ins up to 1024 and batches up to 256."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    for n_in, n_out, batch in ((1024, 64, 256), (37, 300, 129), (256, 256, 64)):
        case = make_case(StackSpec(n_in, (n_out,), ("tanh",), dtype=dtype), seed=n_in, batch=batch,
                         weight_scale="fan_in")
        model = ort_adapter.build(case.spec, "sequential")
        ort_adapter.set_weights(model, case.weights)
        one_thread = ort_adapter.apply_layer(model, 0, case.x)
        default = onnxruntime.InferenceSession(ort_adapter._layer_graph(model.layers[0]).SerializeToString(),
                                               options, providers=["CPUExecutionProvider"])
        np.testing.assert_array_equal(default.run(None, {"x": case.x})[0], one_thread)


def test_the_exported_stack_runs_as_its_chained_layers(ort_adapter):
    """``forward`` runs the whole stack exported as one graph: the same bits as the layers one by one."""
    case = make_case(StackSpec(6, (7, 5, 3), ("tanh", "gelu", "softmax")), seed=11, batch=9)
    model = ort_adapter.build(case.spec, "sequential")
    ort_adapter.set_weights(model, case.weights)
    np.testing.assert_array_equal(ort_adapter.forward(model, case.x), ort_adapter.taps(model, case.x)[-1])


# --- gaps -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("activation", "dtype", "reason"), [
    ("gelu", "float64", "no float64 Erf kernel in ORT"),
    ("softplus", "float64", "no float64 Softplus kernel in ORT"),
    ("mish", "float64", "no float64 Softplus kernel in ORT"),
    ("hard_silu", "float64", "no float64 HardSigmoid kernel in ORT"),
    ("celu", "float16", "ONNX Celu takes no tensor(float16)"),
    ("sigmoid", "bfloat16", "no bfloat16 Gemm kernel in ORT"),
])
def test_a_gap_is_measured_and_named(activation, dtype, reason, ort_adapter):
    import onnxruntime

    got = ort_adapter.cannot(activation, dtype)
    assert got is not None and got.startswith(reason), f"got {got!r}, but should start with {reason!r}"
    assert onnxruntime.__version__ in got


def test_every_pair_ort_accepts_runs_and_every_gap_is_a_kernel_or_a_type(ort_adapter):
    """19 activations x 4 dtypes: each either runs a one-unit layer or is a gap ORT names (no traceback)."""
    ort = ort_adapter
    gaps = {(a, d): ort.cannot(a, d) for a in ACTIVATION_NAMES for d in (*ORT_DTYPES, "bfloat16")}
    assert all(reason.startswith(("no ", "ONNX ")) for reason in gaps.values() if reason), gaps
    assert all(gaps[(a, "bfloat16")] for a in ACTIVATION_NAMES)
    assert not any(gaps[(a, "float32")] for a in ACTIVATION_NAMES)
    missing64 = sorted(a for a in ACTIVATION_NAMES if gaps[(a, "float64")])
    assert missing64 == ["elu", "gelu", "hard_sigmoid", "hard_silu", "leaky_relu_0.2", "mish", "selu", "softplus"]


def test_an_ort_refusal_mid_run_is_framework_refused(ort_adapter):
    """A graph ORT refuses (a bfloat16 Gemm) raises ``FrameworkRefused`` with the reason, not ORT's error."""
    from equivalence.frameworks.base import FrameworkRefused

    layer = ort_adapter.build_layer(3, 2, "relu", bias=True, dtype="bfloat16")
    with pytest.raises(FrameworkRefused, match="no bfloat16 Gemm kernel in ORT"):
        ort_adapter.apply_layer([layer], 0, np.zeros((1, 3), dtype=np.float32))


# --- meta: ONNX's default traps, a drifted activation, a transposed Gemm ---------------------------

def _drop_attribute(op_type, name):
    def rewrite(graph):
        for node in graph.graph.node:
            if node.op_type == op_type:
                kept = [a for a in node.attribute if a.name != name]
                assert len(kept) < len(node.attribute), f"{op_type} has no {name} attribute to drop"
                del node.attribute[:]
                node.attribute.extend(kept)
        return graph
    return rewrite


def _scale_output(graph):
    """The activation's output times (1 + 1e-4): a drift 1e-4 relative."""
    import onnx
    from onnx import helper, numpy_helper

    out = graph.graph.output[0].name
    last = graph.graph.node[-1]
    last.output[0] = "drifted"
    dtype = onnx.helper.tensor_dtype_to_np_dtype(graph.graph.output[0].type.tensor_type.elem_type)
    graph.graph.initializer.append(numpy_helper.from_array(np.array(1 + 1e-4, dtype=dtype), "drift"))
    graph.graph.node.append(helper.make_node("Mul", ["drifted", "drift"], [out]))
    return graph


def _flip_trans_b(graph):
    """``Gemm`` reading its square weight untransposed: the transpose bug, inside the runtime."""
    for node in graph.graph.node:
        for attribute in node.attribute:
            if node.op_type == "Gemm" and attribute.name == "transB":
                attribute.i = 1 - attribute.i
    return graph


TRAPS = {
    # ONNX defaults, what a hand-written or converted graph gets when the attribute is left out
    "hard_sigmoid alpha 0.2 (Keras 2's form)": ("hard_sigmoid", _drop_attribute("HardSigmoid", "alpha")),
    "leaky_relu alpha 0.01": ("leaky_relu_0.2", _drop_attribute("LeakyRelu", "alpha")),
    "gelu exact for the tanh form": ("gelu_tanh", _drop_attribute("Gelu", "approximate")),
    "softsign drifted 1e-4": ("softsign", _scale_output),
    "Gemm transB flipped on a square layer": ("sigmoid", _flip_trans_b),
}


@pytest.mark.parametrize("trap", sorted(TRAPS))
def test_a_broken_exported_graph_is_caught(trap, ort_adapter, torch_adapter, monkeypatch):
    activation, rewrite = TRAPS[trap]
    case = make_case(StackSpec(16, (16, 16), (activation, activation)), seed=5, batch=32, input_scale=3.0)

    def models():
        return {"ort": (ort_adapter, ort_adapter.build(case.spec, "sequential")),
                "torch": (torch_adapter, torch_adapter.build(case.spec, "sequential"))}

    assert check_case(case, models()).passed, "the unbroken graph must agree"
    export = ort_adapter.export
    monkeypatch.setattr(ort_adapter, "export", lambda module, example: rewrite(export(module, example)))
    comparison = check_case(case, models())
    assert not comparison.passed, f"{trap}: not caught"
    assert set(comparison.failing_pairs()) == {"ort vs reference", "ort vs torch"}, comparison.message()
    assert comparison.worst_ratio > 10, comparison.message()


# --- evidence for ORT's known differences ---------------------------------------------------------

def _reference(name, x):
    return ACTIVATIONS[name].reference(np.asarray(x, dtype=np.float64))


def test_ort_float64_celu_in_float32(ort_adapter):
    import torch

    from equivalence.frameworks.torch import activation_module

    graph = ort_adapter.export(activation_module("celu"), torch.zeros(1, 4, dtype=torch.float64))
    assert [node.op_type for node in graph.graph.node] == ["Cast", "Celu", "Cast"]
    x = np.linspace(-50, 50, 40001)
    got = ort_adapter.activation("celu", x, "float64")
    assert np.array_equal(got.astype(np.float32).astype(np.float64), got), "every output float32-exact"
    error = np.max(np.abs(got - _reference("celu", x)) / np.maximum(1.0, np.abs(_reference("celu", x))))
    assert 0.1 * EPSILON["float32"] < error < extra_error("ort", "celu", "float64"), error


def test_ort_float64_gelu_tanh_float32_constant(ort_adapter, torch_adapter):
    x = np.linspace(-6, 6, 4001)
    error = np.max(np.abs(ort_adapter.activation("gelu_tanh", x, "float64") - _reference("gelu_tanh", x)))
    assert 100 * EPSILON["float64"] < error < extra_error("ort", "gelu_tanh", "float64"), error
    assert np.max(np.abs(torch_adapter.activation("gelu_tanh", x, "float64") - _reference("gelu_tanh", x))) \
        < 8 * EPSILON["float64"] * 6


@pytest.mark.parametrize("op", ["LayerNormalization", "BatchNormalization"])
def test_onnx_float64_norm_epsilon_float32(op, ort_adapter):
    """A float64 norm of epsilon 1e-3 in an ONNX graph computes with float32(1e-3): float64-exact against that
    epsilon, far outside the float64 bound against 1e-3 itself, within the entry's grant of eps32/4 of its size."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    features, epsilon = 8, 1e-3
    x = rng.standard_normal((5, features)) * 0.03  # variance ~1e-3: epsilon weighs half
    gamma, beta = rng.uniform(0.5, 1.5, features), rng.uniform(-1, 1, features)
    mean, variance = rng.uniform(-0.01, 0.01, features), rng.uniform(5e-4, 2e-3, features)
    params = {"gamma": gamma, "beta": beta} | ({"mean": mean, "variance": variance} if op[0] == "B" else {})
    node = helper.make_node(op, ["x", *params], ["y"], epsilon=epsilon)
    x_info, y_info = (helper.make_tensor_value_info(n, TensorProto.DOUBLE, [None, features]) for n in "xy")
    graph = helper.make_graph([node], "norm", [x_info], [y_info],
                              [numpy_helper.from_array(v, k) for k, v in params.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    def norm(eps):
        centred = x - x.mean(1, keepdims=True) if op[0] == "L" else x - mean
        spread = (centred ** 2).mean(1, keepdims=True) if op[0] == "L" else variance
        return centred / np.sqrt(spread + eps) * gamma + beta

    scale = np.max(np.abs(norm(epsilon)))
    as_stored = np.max(np.abs(got - norm(float(np.float32(epsilon)))))
    as_written = np.max(np.abs(got - norm(epsilon)))
    grant = extra_error("ort", "linear", "float64", layer_kind="layernorm" if op[0] == "L" else "batchnorm")
    assert as_stored < 8 * EPSILON["float64"] * scale < 1000 * 8 * EPSILON["float64"] * scale < as_written, \
        (as_stored, as_written)
    assert as_written < grant * scale, f"got {as_written}, but should be within the grant {grant * scale}"


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_ort_float16_graph_computes_in_float32(activation, ort_adapter):
    """A float16 stack's whole graph is its float32 chain rounded once, at the end (bit for bit), and that is
    not the float16 chain (each layer rounded): so the model's own forward needs the named difference."""
    entry = next(d for d in KNOWN_DIFFERENCES if d.name == "ort_float16_graph_computes_in_float32")
    if not entry.active():
        pytest.skip(f"{entry.name} holds only on {entry.conditions()}: it grants nothing here")
    if ort_adapter.cannot(activation, "float16") or ort_adapter.cannot(activation, "float32"):
        pytest.skip(f"ORT runs no float16 {activation}: {ort_adapter.cannot(activation, 'float16')}")
    differs = 0
    for seed in range(8):
        case = make_case(StackSpec(3, (5, 4), (activation, activation), dtype="float16"), seed=seed, batch=4)
        model = build_loaded(ort_adapter, case, "sequential")
        whole = ort_adapter.forward(model, case.x)
        assert np.array_equal(whole, chained_in(ort_adapter, case, "float32")[-1]), (activation, seed)
        differs += not np.array_equal(whole, ort_adapter.taps(model, case.x)[-1])
    assert differs > 0, f"ORT's float16 {activation} graph now rounds between layers: the entry can go"
    assert whole_graph_difference("ort", (activation, activation), "float16").whole_graph_computes_in == "float32"


def test_every_runtime_difference_has_evidence_here():
    here = [runtime for runtime in RUNTIMES if not runtime.startswith("litert")]  # LiteRT's: in test_litert.py
    names = sorted(d.name for d in KNOWN_DIFFERENCES if d.framework in here)
    assert names == sorted(name.removeprefix("test_") for name in globals()
                           if name.removeprefix("test_") in {d.name for d in KNOWN_DIFFERENCES})


# --- the guard: golden vectors and the fingerprint ----------------------------------------------------

def test_ort_verifies_against_the_golden_vectors(ort_adapter):
    """ORT against the recorded reference and the recorded torch and Keras outputs (a slice of the shipped
    vectors: ``make runtimes`` verifies all of them through the CLI), its gaps listed as not run."""
    from dataclasses import replace
    from pathlib import Path

    from equivalence.guard import golden

    vectors = golden.load(Path(__file__).resolve().parents[2] / "golden")
    picked = tuple(c for c in vectors.cases if c.spec.dtype != "float32")  # every activation, three dtypes
    picked += tuple(c for c in vectors.cases if c.spec.dtype == "float32" and c.spec.depth > 2)[:8]
    result = golden.verify(replace(vectors, cases=picked), {"ort": ort_adapter})
    assert result.passed, "\n".join(c.message() for c in result.comparisons if not c.passed)
    pairs = {r.pair_name for c in result.comparisons for r in c.results}
    assert {"ort vs reference", "ort vs torch@recorded", "ort vs keras@recorded"} <= pairs, pairs
    assert any(r.reason.startswith("no bfloat16 Gemm kernel in ORT") for r in result.not_run), result.not_run


def test_the_fingerprint_holds_ort_versions(ort_adapter):
    import onnx
    import onnxruntime

    from equivalence.guard.fingerprint import fingerprint

    versions = fingerprint(("ort",))["frameworks"]["ort"]
    assert versions["onnxruntime"] == onnxruntime.__version__ and versions["onnx"] == onnx.__version__
    assert versions["onnx_opset"] == "20" and versions["ort_provider"] == "CPUExecutionProvider"


# --- Keras on TensorFlow through tf.function (predict's graph) and XLA ------------------------------------

GRAPH_EXAMPLES = settings.default.max_examples // 4
"""XLA compiles each layer once per input shape (~40 ms): 25 breadth examples a variant (make runtimes: more)."""


@pytest.mark.parametrize("variant", ["keras_graph", "keras_xla"])
@settings(max_examples=GRAPH_EXAMPLES)
@given(case=cases(breadth_specs()))
def test_every_compiled_keras_layer_agrees_with_eager_keras_and_the_reference(case, variant, keras_adapter,
                                                                              layer_pool, request):
    compiled = request.getfixturevalue(f"{variant}_adapter")
    models = {variant: (compiled, layer_pool.stack(compiled, case.spec)),
              "keras": (keras_adapter, layer_pool.stack(keras_adapter, case.spec))}
    assert_layers_agree(comparison=check_case(case, models), case=case)


@pytest.mark.parametrize("variant", ["keras_graph", "keras_xla", "torch_compile", "torch_export"])
def test_the_compiled_model_runs_as_its_chained_layers(variant, request):
    """tf.function, XLA, inductor and torch.export: a whole model's program gives its layers' chain, bit for bit."""
    adapter = request.getfixturevalue(f"{variant}_adapter")
    case = make_case(StackSpec(6, (7, 5, 3), ("tanh", "gelu", "softmax")), seed=11, batch=9)
    model = adapter.build(case.spec, "sequential")
    adapter.set_weights(model, case.weights)
    np.testing.assert_array_equal(adapter.forward(model, case.x), adapter.taps(model, case.x)[-1])


def test_keras_xla_whole_model_fuses_across_layers(keras_xla_adapter, keras_graph_adapter):
    """The whole XLA program of a float64 sigmoid -> tanh stack is 1 ulp off its layers compiled one by one
    (within the last layer's bound); tf.function's graph of the same model is bit for bit its layers."""
    spec = StackSpec(1, (4, 1), ("sigmoid", "tanh"), dtype="float64")
    weights = [LayerWeights(np.array([[0.27392337, -0.46042657, -0.91805295, -0.96694473]]),
                            np.array([0.83194322, 0.92148002, 0.6459722, 0.7565469])),
               LayerWeights(np.array([[0.63170711], [-0.994523], [0.71480855], [-0.93282885]]), np.array([0.7566899]))]
    case = Case(spec=spec, weights=tuple(weights), x=np.array([[0.72635784], [0.08292244]]))
    model = build_loaded(keras_xla_adapter, case, "sequential")
    whole, chained = keras_xla_adapter.forward(model, case.x), keras_xla_adapter.taps(model, case.x)
    assert not np.array_equal(whole, chained[-1]), "XLA's whole program now equals its layers: the entry can go"
    assert_within_last_layer_bound(got=whole, chained=chained, case=case, framework="keras_xla",
                                   what="keras_xla float64")
    assert whole_graph_difference("keras_xla", spec.activations, "float64").name == \
        "keras_xla_whole_model_fuses_across_layers"
    graph = build_loaded(keras_graph_adapter, case, "sequential")
    np.testing.assert_array_equal(keras_graph_adapter.forward(graph, case.x),
                                  keras_graph_adapter.taps(graph, case.x)[-1])


def test_tf_onednn_layer_norm_fusion_epsilon_0_001(keras_graph_adapter):
    """A LayerNorm of epsilon 1e-5 written as tf_keras' ops, gamma and beta constants, in a tf.function: with the
    grappler remapper on (oneDNN on) it computes with epsilon 0.001, with it off with 1e-5 (rows of spread 0.01,
    where the two differ by ~1). The day it computes 1e-5 with the remapper on, the entry (and the SavedModel
    reader's remapper switch) can go."""
    import tensorflow as tf

    entry = next(d for d in KNOWN_DIFFERENCES if d.name == "tf_onednn_layer_norm_fusion_epsilon_0_001")
    if entry.unmet():
        pytest.skip(f"{entry.name} holds only where {entry.conditions()}; here it does not: it grants nothing")
    rng = np.random.default_rng(0)
    features = 8
    gamma, beta = rng.uniform(0.5, 1.5, features), rng.uniform(-1, 1, features)
    x = rng.standard_normal((5, features)) * 0.01

    def layer_norm(t):
        mean = tf.reduce_mean(t, axis=1, keepdims=True)
        variance = tf.reduce_mean(tf.math.squared_difference(t, mean), axis=1, keepdims=True)
        factor = tf.math.rsqrt(variance + 1e-5) * tf.constant(gamma, tf.float32)
        return t * factor + (tf.constant(beta, tf.float32) - factor * mean)

    def reference(epsilon):
        centred = x - x.mean(axis=1, keepdims=True)
        return centred / np.sqrt((centred ** 2).mean(axis=1, keepdims=True) + epsilon) * gamma + beta

    before = tf.config.optimizer.get_experimental_options().get("remapping", True)
    computed = {}
    try:
        for remapping in (True, False):
            tf.config.optimizer.set_experimental_options({"remapping": remapping})
            run = tf.function(layer_norm, input_signature=[tf.TensorSpec((None, features), tf.float32)])
            computed[remapping] = run(x.astype(np.float32)).numpy()
    finally:
        tf.config.optimizer.set_experimental_options({"remapping": before})
    for remapping, epsilon, other in ((True, 1e-3, 1e-5), (False, 1e-5, 1e-3)):
        near = float(np.max(np.abs(computed[remapping] - reference(epsilon))))
        far = float(np.max(np.abs(computed[remapping] - reference(other))))
        assert near < 1e-5 < 0.1 < far, (f"remapping {remapping}: got {near} from a LayerNorm of epsilon {epsilon} "
                                         f"and {far} from one of {other}, but should be near the first")


@pytest.mark.parametrize("variant", ["keras_graph", "keras_xla"])
def test_a_drifted_keras_op_is_traced_into_the_compiled_layer_and_caught(variant, request, monkeypatch):
    """Keras 2's ``hard_sigmoid`` (0.2 x + 0.5) patched into Keras: a compiled layer traced after the patch
    computes it (nothing stale), and the check fails."""
    adapter = request.getfixturevalue(f"{variant}_adapter")  # first: it skips where Keras is not installed
    import keras.src.ops
    from keras import ops

    case = make_case(StackSpec(16, (16,), ("hard_sigmoid",)), seed=5, batch=32, input_scale=3.0)

    def comparison():
        adapter.forget_compiled()
        return check_case(case, {variant: (adapter, adapter.build(case.spec, "sequential"))})

    assert comparison().passed
    monkeypatch.setattr(keras.src.ops, "hard_sigmoid", lambda x: ops.clip(0.2 * x + 0.5, 0.0, 1.0))
    broken = comparison()
    assert not broken.passed and broken.failing_pairs() == {f"{variant} vs reference": 0}, broken.message()


@pytest.mark.parametrize("variant", ["keras_graph", "keras_xla"])
@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "leaky_relu_0.2"])
def test_the_keras_float64_constants_hold_on_the_compiled_paths(variant, activation, request):
    """``runs_on`` (their registry entries): the keras entries' float32 constants are there through tf.function
    and XLA."""
    adapter = request.getfixturevalue(f"{variant}_adapter")
    x = np.linspace(-6, 6, 4001)
    error = np.max(np.abs(adapter.activation(activation, x, "float64") - _reference(activation, x)))
    assert 100 * EPSILON["float64"] < error < extra_error(variant, activation, "float64") * 6, error


# --- torch.compile (inductor): make runtimes only (the registry leaves it out of make check's default) ----------

COMPILE_EXAMPLES = 15
"""Inductor compiles each (activation, dtype, bias) once, 1-10 s each on 2 shared cores (measured: 12 examples
took 129 s), after ~17 s to start: a small fixed budget, in make runtimes only."""


@settings(max_examples=COMPILE_EXAMPLES)
@given(case=cases(breadth_specs()))
def test_every_torch_compile_layer_agrees_with_eager_torch_and_the_reference(case, torch_compile_adapter,
                                                                             torch_adapter, layer_pool):
    models = {"torch_compile": (torch_compile_adapter, layer_pool.stack(torch_compile_adapter, case.spec)),
              "torch": (torch_adapter, layer_pool.stack(torch_adapter, case.spec))}
    assert_layers_agree(comparison=check_case(case, models), case=case)


TORCH_PROGRAMS = ("torch_compile", "torch_export")
"""The runtimes that trace torch's own modules into a program (inductor's kernels, an ExportedProgram)."""


@pytest.mark.parametrize("variant", TORCH_PROGRAMS)
def test_a_drifted_torch_module_is_traced_into_the_program_and_caught(variant, request, monkeypatch):
    adapter = request.getfixturevalue(f"{variant}_adapter")  # first: it skips where torch is not installed
    import torch

    case = make_case(StackSpec(16, (16,), ("softsign",)), seed=5, batch=32, input_scale=3.0)

    def comparison():
        adapter.forget_compiled()
        model = adapter.build(case.spec, "sequential")
        return check_case(case, {variant: (adapter, model)})

    assert comparison().passed
    monkeypatch.setattr(torch.nn.Softsign, "forward", lambda self, x: x / (1.0 + x.abs() * (1 + 1e-4)))
    broken = comparison()
    assert broken.failing_pairs() == {f"{variant} vs reference": 0}, broken.message()


def test_torch_compile_whole_model_compiles_differently(torch_compile_adapter):
    """The model compiled whole agrees with its layers compiled one by one within the last layer's bound, across
    shapes compiled one after another. Bit for bit it need not: hypothesis found a one-layer float32 tanh model
    (1 -> 2) 1 ulp off, which depends on what the process compiled before and does not reproduce alone, so it is
    not asserted here; the entry lets the own-forward property check the bound instead."""
    for seed, (n_in, widths, activation) in enumerate([(1, (2,), "tanh"), (3, (5, 4), "sigmoid"),
                                                        (7, (2, 9, 3), "gelu"), (16, (16, 1), "tanh")]):
        case = make_case(StackSpec(n_in, widths, (activation,) * len(widths)), seed=seed, batch=seed + 1)
        model = build_loaded(torch_compile_adapter, case, "sequential")
        whole, chained = torch_compile_adapter.forward(model, case.x), torch_compile_adapter.taps(model, case.x)
        assert_within_last_layer_bound(got=whole, chained=chained, case=case, framework="torch_compile",
                                       what=f"torch_compile {activation}")
        assert whole_graph_difference("torch_compile", case.spec.activations, "float32") is not None


def test_a_missing_cxx_compiler_is_one_line_naming_what_to_install(monkeypatch, tmp_path):
    from equivalence.frameworks.builtin import cxx_compiler_problem

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)
    problem = cxx_compiler_problem()
    assert problem is not None and "needs a C++ compiler" in problem and "apt-get install g++" in problem
    monkeypatch.setenv("CXX", "/no/such/c++")
    assert "/no/such/c++ is not on PATH" in cxx_compiler_problem()


def test_torch_s_softplus_threshold_holds_under_torch_compile(torch_compile_adapter):
    """``runs_on``: inductor keeps nn.Softplus' threshold 20 (softplus(20.5) is 20.5 in float64)."""
    model = torch_compile_adapter.build(StackSpec(1, (1,), ("softplus",), dtype="float64"), "sequential")
    torch_compile_adapter.set_weights(model, [(np.ones((1, 1)), np.zeros(1))])
    got = torch_compile_adapter.apply_layer(model, 0, np.array([[20.5]]))[0, 0]
    assert got == 20.5 != _reference("softplus", [20.5])[0]
    assert extra_error("torch_compile", "softplus", "float64") > 0


def test_the_fingerprint_lists_the_entries_a_compiled_path_inherits(keras_xla_adapter):
    """``verify --framework keras_xla`` lists the keras entries it is judged with (its ``runs_on``) as active."""
    from equivalence.guard.fingerprint import fingerprint

    active = fingerprint(("keras_xla",))["known_differences"]["active"]
    assert {"keras_float64_gelu_float32_constant", "keras_float64_leaky_relu_float32_slope"} <= set(active), active
