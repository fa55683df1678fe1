"""Evidence for every named known difference (``equivalence.core.known_differences``).

Each entry has a test here that measures it on the installed frameworks. The day
a framework changes, the test fails and the entry must go: an exception can never
outlive the difference it excuses. The tests apply the adapters' own activation
objects to chosen inputs (the frameworks are imported directly: this is evidence).
"""

import numpy as np
import pytest

from equivalence.core.activations import ACTIVATIONS
from equivalence.core.compare import compare_arrays
from equivalence.core.conditions import RecordedFacts
from equivalence.core.dtypes import EPSILON
from equivalence.core.known_differences import (
    FACTS,
    FLOAT32_MATMUL,
    KNOWN_DIFFERENCES,
    PROBES,
    excused,
    extra_error,
)
from equivalence.core.nan_leak import nan_leak
from equivalence.frameworks.keras.known_differences import keras_backend, keras_on
from equivalence.frameworks.registry import get_adapter
from equivalence.guard.fingerprint import fingerprint, flatten
from tests.helpers import RUNTIMES


def _torch(name, x, dtype):
    return get_adapter("torch").activation(name, x, dtype)


def _keras(name, x, dtype):
    return get_adapter("keras").activation(name, x, dtype)


def _keras_gradient(name, value, dtype):
    """d activation / dz at ``value``, through the Keras backend's own autodiff (the adapter's one place)."""
    import keras

    from equivalence.frameworks.keras import ACTIVATIONS as KERAS

    adapter = get_adapter("keras")
    fn = keras.activations.get(KERAS[name]) if isinstance(KERAS[name], str) else KERAS[name]
    dz, _ = adapter.autodiff(fn, keras.ops.convert_to_tensor(np.array([value]), dtype=dtype), [])
    return float(adapter.to_numpy(dz)[0])


def _reference(name, x):
    with np.errstate(invalid="ignore"):
        return ACTIVATIONS[name].reference(np.asarray(x, dtype=np.float64))


def keras_float64_gelu_float32_constant():
    x = np.linspace(-6, 6, 4001)
    for name in ("gelu", "gelu_tanh"):
        err = np.max(np.abs(_keras(name, x, "float64") - _reference(name, x)))
        assert 100 * EPSILON["float64"] < err < extra_error("keras", name, "float64"), f"{name}: {err}"
        assert np.max(np.abs(_torch(name, x, "float64") - _reference(name, x))) < 8 * EPSILON["float64"] * 6


def keras_float64_leaky_relu_float32_slope():
    assert _keras("leaky_relu_0.2", [-1.0], "float64")[0] == -float(np.float32(0.2)) != -0.2
    assert _torch("leaky_relu_0.2", [-1.0], "float64")[0] == -0.2


def keras_float64_leaky_relu_float32_any_slope():
    import keras

    from equivalence.frameworks.keras import keras_activation

    for slope in (0.01, 0.3, 0.7, 3.1):
        name = f"leaky_relu_{slope!r}"
        got = float(keras_activation(name)(keras.ops.convert_to_tensor([-1.0], dtype="float64"))[0])
        assert got == -float(np.float32(slope)) != -slope, (name, got)
        assert abs(got + slope) <= extra_error("keras", name, "float64") * max(1.0, slope), name
        assert extra_error("keras", name, "float32") == 0
    assert extra_error("keras", "leaky_relu_0.2", "float64") == 0.25 * EPSILON["float32"]  # the fixed name: its entry


def torch_float64_softplus_threshold_20():
    x = np.array([20.5])
    gap = abs(_torch("softplus", x, "float64")[0] - _reference("softplus", x)[0])
    assert 1e-9 < gap < extra_error("torch", "softplus", "float64") * 20.5, gap
    assert _torch("softplus", x, "float64")[0] == 20.5
    if keras_backend() == "tensorflow":  # the difference is torch's: Keras on TF is float64-exact
        assert abs(_keras("softplus", x, "float64")[0] - _reference("softplus", x)[0]) < 8 * EPSILON["float64"] * 20.5


def keras_torch_backend_float64_softplus_threshold_20():
    x = np.array([20.5])
    assert _keras("softplus", x, "float64")[0] == _torch("softplus", x, "float64")[0] == 20.5
    assert extra_error("keras", "softplus", "float64") >= extra_error("torch", "softplus", "float64") > 0


def torch_float64_hard_sigmoid_backward_float32_sixth():
    import torch

    z = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    torch.nn.Hardsigmoid()(z).sum().backward()
    assert z.grad.item() == float(np.float32(1 / 6)) != 1 / 6
    assert torch.nn.Hardsigmoid()(torch.tensor([0.5], dtype=torch.float64)).item() == 3.5 / 6  # forward exact
    assert extra_error("torch", "hard_sigmoid", "float64", scope="gradient") > abs(z.grad.item() * 6 - 1)
    assert extra_error("torch", "hard_sigmoid", "float64", scope="forward") == 0.0
    if get_adapter("keras").variant == "keras/tensorflow":  # the difference is torch's: Keras 3 on TF is exact
        assert _keras_gradient("hard_sigmoid", 0.5, "float64") == 1 / 6


def keras_torch_backend_float64_hard_sigmoid_backward_float32_sixth():
    assert _keras_gradient("hard_sigmoid", 0.5, "float64") == float(np.float32(1 / 6)) != 1 / 6
    assert extra_error("keras", "hard_sigmoid", "float64", scope="gradient") >= 0.5 * EPSILON["float32"]


def _measured(probe_name):
    """The probe's measured scope here, and the dtypes it measured but did not find (where the framework runs)."""
    probe = PROBES[probe_name]
    found = probe.scope(FACTS).shapes
    adapter = get_adapter(probe.framework)
    return found, [d for d in probe.dtypes if d not in found and not adapter.cannot("linear", d)]


def torch_gelu_nan_at_plus_inf():
    z = np.full(64, np.inf)  # the vectorised path; a lone element gives +inf
    found, not_found = _measured("torch_gelu_nan_at_plus_inf")
    for dtype in found:
        assert np.all(np.isnan(_torch("gelu", z, dtype))), dtype
        if keras_backend() == "tensorflow":  # the difference is torch's: Keras on TF gives +inf
            assert np.all(_keras("gelu", z, dtype) == np.inf), dtype
        assert excused("torch", "gelu", dtype, z, _torch("gelu", z, dtype)).all()
    for dtype in not_found:  # not excused where torch is right
        assert np.all(_torch("gelu", z, dtype) == np.inf), dtype
        assert not excused("torch", "gelu", dtype, z, _torch("gelu", z, dtype)).any()
    assert "float64" in not_found, "float64 gelu(+inf) is +inf on every CPU measured"
    assert np.all(_reference("gelu", z) == np.inf)


def keras_torch_backend_gelu_nan_at_plus_inf():
    z = np.full(64, np.inf)
    found, not_found = _measured("keras_gelu_nan_at_plus_inf")
    for dtype in found:
        got = _keras("gelu", z, dtype)
        assert np.all(np.isnan(got)) and excused("keras", "gelu", dtype, z, got).all(), dtype
        assert np.all(np.isnan(_torch("gelu", z, dtype))), f"{dtype}: Keras on torch computes torch's gelu"
    for dtype in not_found:
        assert np.all(_keras("gelu", z, dtype) == np.inf), dtype


def keras_softmax_nonfinite_rows():
    z = np.array([[np.inf, 0.0, 1.0], [np.nan, 0.0, 1.0], [-np.inf, 0.0, 1.0]])
    found, not_found = _measured("keras_softmax_finite_beside_inf")
    for dtype in found:
        got = _keras("softmax", z, dtype)
        assert np.isnan(got[0, 0]) and np.all(np.isfinite(got[0, 1:])), got
        assert np.isnan(got[1, 0]) and np.all(np.isfinite(got[1, 1:])), got
        assert np.all(np.isnan(_torch("softmax", z, dtype)[:2])), dtype
        np.testing.assert_array_equal(np.isnan(_reference("softmax", z)), np.isnan(_torch("softmax", z, dtype)))
        # only rows holding a non-finite value are excused; the all-finite-output row 2 is checked
        assert excused("keras", "softmax", dtype, z, got).tolist() == [[True] * 3, [True] * 3, [True] * 3]
    for dtype in not_found:  # the whole row NaN, as in torch and the reference
        assert np.all(np.isnan(_keras("softmax", z, dtype)[:2])), dtype
        assert not excused("keras", "softmax", dtype, z, _keras("softmax", z, dtype)).any(), dtype


def _nan_leak_evidence(probe_name: str, framework: str) -> None:
    """Where the probe finds a NaN leak: every leaking grid shape lies in the named shape class, the leak is
    reproduced with a NaN and with an infinity, and the excuse covers exactly the rows it leaks into."""
    probe = PROBES[probe_name]
    found, _ = _measured(probe.name)
    for dtype, shapes in found.items():
        assert shapes, f"{dtype}: the probe names no shape"
        outside = [s for s in shapes if not probe.shape_class(s)]
        assert not outside, (f"got a {dtype} NaN leak at {outside}, but the named shape class "
                             f"({probe.shape_class_label}) says it cannot be there")
        for value in (np.nan, np.inf, -np.inf):  # an infinity leaks as a NaN does
            leak = nan_leak(get_adapter(framework), shapes[0], dtype, np.random.default_rng(1), value=value)
            assert leak is not None, f"{dtype} {shapes[0]}: the probe saw a leak that another draw of {value} misses"
            x, got, nan_row, (W, b) = leak
            with np.errstate(invalid="ignore"):
                z = x @ W.astype(np.float64) + b.astype(np.float64)
            leaked = np.isnan(got) & np.isfinite(z)
            assert leaked.any() and not leaked[nan_row].any()
            mask = excused(framework, "linear", dtype, z, got, x=x)
            np.testing.assert_array_equal(mask, leaked, err_msg="the excuse must cover exactly the leaked rows")
            assert not excused(framework, "linear", "float32", z, got, x=x).any()


def torch_bfloat16_linear_nan_leaks_across_rows():
    _nan_leak_evidence("torch_linear_nan_leaks_across_rows", "torch")


def keras_bfloat16_dense_nan_leaks_across_rows():
    _nan_leak_evidence("keras_dense_nan_leaks_across_rows", "keras")


def tf_flushes_subnormals():
    torch_value, keras_value = _torch("softplus", [-100.0], "float32")[0], _keras("softplus", [-100.0], "float32")[0]
    assert keras_value == 0.0 and 0 < torch_value < np.finfo(np.float32).tiny, (torch_value, keras_value)
    assert _keras("mish", [-100.0], "float32")[0] == 0.0 > _torch("mish", [-100.0], "float32")[0]
    result = compare_arrays(np.array([keras_value]), np.array([torch_value]), bound=8 * EPSILON["float32"],
                            pair=("keras", "torch"), layer=0)
    assert result.passed and result.max_abs < 1e-43


def signed_zeros():
    z = np.full(64, -0.0)  # TF's vectorised path; a lone element keeps the sign
    for name in ("relu", "relu6", "celu"):
        if get_adapter("keras").cannot(name, "float32"):  # Keras 2 has no celu
            continue
        torch_value, keras_value = _torch(name, z, "float32")[0], _keras(name, z, "float32")[0]
        assert torch_value == keras_value == 0.0
        assert np.signbit(torch_value) and not np.signbit(keras_value), (name, torch_value, keras_value)
        result = compare_arrays(np.array([keras_value]), np.array([torch_value]), bound=1e-30,
                                pair=("keras", "torch"), layer=0)
        assert result.passed and result.max_abs == 0.0


def keras2_float64_gelu_float32_constant():
    x = np.linspace(-6, 6, 4001)
    for name in ("gelu", "gelu_tanh"):
        err = np.max(np.abs(_keras(name, x, "float64") - _reference(name, x)))
        assert 100 * EPSILON["float64"] < err < extra_error("keras", name, "float64"), f"{name}: {err}"


def keras2_hard_sigmoid_slope_0_2():
    """Keras 2's hard_sigmoid is its own definition to a few eps in every dtype, and 1/12 from Keras 3's."""
    from equivalence.frameworks.keras.known_differences import keras2_hard_sigmoid

    x = np.linspace(-4, 4, 3201)
    for dtype in ("float64", "float32", "float16", "bfloat16"):
        got = _keras("hard_sigmoid", x, dtype)
        own = keras2_hard_sigmoid(x.astype(np.float64))
        assert np.max(np.abs(got - own)) <= 8 * EPSILON[dtype] * 1.8, dtype  # slope 0.2 of |x| <= 4, at least 1
        moved = np.max(np.abs(got - _reference("hard_sigmoid", x)))
        assert abs(moved - 1 / 12) < 8 * EPSILON[dtype], (dtype, moved)  # at z = +-2.5: 0 or 1 against 1/12, 11/12
    assert np.max(np.abs(_torch("hard_sigmoid", x, "float64") - _reference("hard_sigmoid", x))) < 4 * EPSILON["float64"]


def keras_float64_matmul_in_float32_off_tensorflow():
    import keras

    third = keras.ops.convert_to_tensor(np.full((2, 2), 1 / 3), dtype="float64")
    product = keras.ops.matmul(third, third)
    assert keras.backend.standardize_dtype(product.dtype) == "float32"
    assert keras.backend.result_type("float64", "float64") == "float32"


def keras_jax_float64_tanh_in_float32():
    import keras

    z = np.linspace(-6, 6, 4001)
    out = keras.activations.tanh(keras.ops.convert_to_tensor(z, dtype="float64"))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    err = np.max(np.abs(_keras("tanh", z, "float64") - _reference("tanh", z)))
    assert 100 * EPSILON["float64"] < err < extra_error("keras", "tanh", "float64"), err
    for name in ("sigmoid", "gelu", "mish", "softplus"):  # the rest stays float64-exact on jax
        assert np.max(np.abs(_keras(name, z, "float64") - _reference(name, z))) < 8 * EPSILON["float64"] * 6, name


def keras_float64_norms_in_float32_off_tensorflow():
    import keras

    from equivalence.core.kinds import LayerWeights
    from equivalence.core.norms import BatchNorm, LayerNorm

    assert keras.backend.result_type("float64", "float32") == "float32"
    x = np.random.default_rng(0).uniform(-3, 3, (16, 5))
    rows = np.stack([np.full(5, 1.5), np.full(5, 0.25), np.full(5, 0.1), np.full(5, 2.0)])
    for layer, kind, weights in ((keras.layers.BatchNormalization(dtype="float64"), BatchNorm(5, 1e-3, 0.99), rows),
                                 (keras.layers.LayerNormalization(dtype="float64"), LayerNorm(5, 1e-3), rows[:2])):
        layer.build((None, 5))
        layer.set_weights(list(weights))
        got = keras.ops.convert_to_numpy(layer(keras.ops.convert_to_tensor(x, dtype="float64")))
        trace = kind.reference(x, LayerWeights(weights, None), "linear")
        err = float(np.max(np.abs(got - trace.h)))
        granted = extra_error("keras", "linear", "float64", layer_kind=kind.name) * kind.scale(trace, LayerWeights(
            weights, None), slope=1.0)
        assert 1e5 * EPSILON["float64"] * np.max(np.abs(trace.h)) < err < granted, (kind.name, err, granted)
    other_kinds = extra_error("keras", "linear", "float64", layer_kind="conv")  # the entry grants norms alone
    assert extra_error("keras", "linear", "float64", layer_kind="batchnorm") - other_kinds == FLOAT32_MATMUL



def keras_float64_mean_in_float32_off_tensorflow():
    import keras

    from equivalence.core.embedding import SequenceMean

    assert keras.backend.result_type("float64", "float32") == "float32"
    x = np.random.default_rng(0).uniform(-1, 1, (16, 7, 5))
    kind = SequenceMean(7, 5)
    got = keras.ops.convert_to_numpy(keras.layers.GlobalAveragePooling1D(dtype="float64")(
        keras.ops.convert_to_tensor(x, dtype="float64")))
    trace = kind.reference(x)
    err = float(np.max(np.abs(got - trace.h)))
    granted = extra_error("keras", "linear", "float64", layer_kind="mean") * kind.scale(trace)
    assert 1e5 * EPSILON["float64"] * np.max(np.abs(trace.h)) < err < granted, (err, granted)
    other_kinds = extra_error("keras", "linear", "float64", layer_kind="conv")  # the entry grants the mean alone
    assert extra_error("keras", "linear", "float64", layer_kind="mean") - other_kinds == FLOAT32_MATMUL

def _keras_float64_attention_error(head_dim: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """A float64 Keras MultiHeadAttention (2 heads of ``head_dim``, 5 tokens, no dropout) against the reference:
    its error, the float64 bound's own scale (8 eps64 of the kind's scale), and what Keras' entries grant it."""
    import keras

    from equivalence.core.attention import SelfAttention

    layer = keras.layers.MultiHeadAttention(2, head_dim, dtype="float64")
    x = rng.uniform(-2, 2, (3, 5, 2 * head_dim))
    layer(x, x)
    kind = SelfAttention(2 * head_dim, 2, head_dim, 5)
    weights = kind.pack({name: keras.ops.convert_to_numpy(getattr(layer, f"_{name}_dense").kernel)
                         for name in ("query", "key", "value", "output")} |
                        {f"{name}_bias": keras.ops.convert_to_numpy(getattr(layer, f"_{name}_dense").bias)
                         for name in ("query", "key", "value", "output")})
    trace = kind.reference(x, weights)
    err = float(np.max(np.abs(keras.ops.convert_to_numpy(layer(x, x)) - trace.h)))
    granted = extra_error("keras", "linear", "float64", layer_kind="attention") * kind.scale(trace, weights)
    return err, 8 * EPSILON["float64"] * kind.scale(trace, weights), granted


def keras_float64_attention_scale_float32():
    rng = np.random.default_rng(0)
    for head_dim, rounded in ((2, True), (3, True), (4, False)):  # 1/sqrt(4) is exact in float32
        err, base, granted = _keras_float64_attention_error(head_dim, rng)
        if rounded:
            assert base < err < granted, (head_dim, err, base, granted)
        else:
            assert err < base, (head_dim, err, base)
    other_kinds = extra_error("keras", "linear", "float64", layer_kind="dense")  # the entry grants attention alone
    assert extra_error("keras", "linear", "float64", layer_kind="attention") - other_kinds == EPSILON["float32"] / 2


def keras_jax_float64_attention_softmax_in_float32():
    rng = np.random.default_rng(0)
    for head_dim in (1, 2, 3, 4):  # float32-precise whatever the scale's rounding
        err, base, granted = _keras_float64_attention_error(head_dim, rng)
        assert base < err < granted, (head_dim, err, base, granted)
    other_kinds = extra_error("keras", "linear", "float64", layer_kind="dense")  # the entry grants attention alone
    assert extra_error("keras", "linear", "float64", layer_kind="attention") - other_kinds == FLOAT32_MATMUL


def keras_jax_gru_without_bias_does_not_run():
    import keras

    x = np.ones((3, 4, 2), dtype="float32")
    for cell in (keras.layers.GRU, keras.layers.LSTM):  # GRU with a bias, and LSTM either way, run
        cell(2, dtype="float32", recurrent_initializer="glorot_uniform")(x)
    keras.layers.LSTM(2, dtype="float32", use_bias=False, recurrent_initializer="glorot_uniform")(x)
    keras.layers.GRU(2, dtype="float64", use_bias=False, recurrent_initializer="glorot_uniform")(x.astype("float64"))
    with pytest.raises(TypeError, match="carry input and carry output must have equal types"):
        keras.layers.GRU(2, dtype="float32", use_bias=False, recurrent_initializer="glorot_uniform")(x)


def _channels_first_convs(dtype: str) -> list:
    """A channels-first Conv1D and Conv2D, each called on its ones in ``dtype``, as a callable each; and the
    pooling and BatchNormalization(axis=1) run channels-first in that dtype."""
    import keras

    L = keras.layers
    image, signal = np.ones((1, 2, 5, 5), dtype=dtype), np.ones((1, 2, 5), dtype=dtype)
    for layer, x in ((L.MaxPooling2D(2, data_format="channels_first", dtype=dtype), image),
                     (L.AveragePooling1D(2, data_format="channels_first", dtype=dtype), signal),
                     (L.GlobalAveragePooling1D(data_format="channels_first", dtype=dtype), signal),
                     (L.BatchNormalization(axis=1, dtype=dtype), image),
                     (L.Conv2D(2, 3, dtype=dtype), np.moveaxis(image, 1, -1))):  # and channels-last convs
        layer(x)
    return [lambda: L.Conv2D(2, 3, data_format="channels_first", dtype=dtype)(image),
            lambda: L.Conv1D(2, 3, data_format="channels_first", dtype=dtype)(signal)]


def _does_not_run(call) -> None:
    import tensorflow as tf

    with pytest.raises(tf.errors.UnimplementedError, match="only supports the NHWC tensor format on the CPU"):
        call()


def keras_tf_float64_channels_first_conv_does_not_run():
    for call in _channels_first_convs("float64"):
        _does_not_run(call)


def keras_tf_channels_first_conv_needs_onednn():
    for dtype in ("float32", "float16"):
        for call in _channels_first_convs(dtype):
            _does_not_run(call)


def keras_tf_float16_channels_first_conv_needs_avx512_fp16():
    for call in _channels_first_convs("float16"):
        _does_not_run(call)
    for dtype in ("float32", "bfloat16"):  # oneDNN computes these here
        for call in _channels_first_convs(dtype):
            call()


def keras_tf_channels_first_conv_bias_along_width():
    import keras

    rng = np.random.default_rng(0)
    for size, layer in ((6, keras.layers.Conv2D(4, 3, data_format="channels_first", dtype="float32")),
                        (7, keras.layers.Conv2D(4, 3, data_format="channels_first", dtype="float32")),
                        (6, keras.layers.Conv1D(4, 3, data_format="channels_first", dtype="float32"))):
        x = rng.uniform(-1, 1, (2, 3, *(size,) * (len(layer.kernel_size)))).astype("float32")
        layer.build(x.shape)
        bias = rng.uniform(-1, 1, 4).astype("float32")
        layer.bias.assign(bias)
        got = keras.ops.convert_to_numpy(layer(x))
        layer.bias.assign(np.zeros(4, "float32"))
        unbiased = keras.ops.convert_to_numpy(layer(x))
        along_width = got.shape[-1] == 4 and np.allclose(got - unbiased, bias, rtol=0, atol=1e-6)
        along_channels = np.allclose(got - unbiased, bias.reshape(1, 4, *(1,) * (got.ndim - 2)), rtol=0, atol=1e-6)
        assert (along_width, along_channels) == ((True, False) if got.shape[-1] == 4 else (False, True)), got.shape


def keras_attention_bias_along_tokens():
    import keras

    from equivalence.core.attention import SelfAttention

    rng = np.random.default_rng(0)
    for heads, length in ((2, 2), (3, 3), (2, 3)):  # as many tokens as heads, and one more
        layer = keras.layers.MultiHeadAttention(heads, 1, dtype="float64")
        x = rng.uniform(-2, 2, (2, length, heads))
        layer(x, x)
        parts = {}
        for name in ("query", "key", "value", "output"):
            dense = getattr(layer, f"_{name}_dense")
            parts[name] = keras.ops.convert_to_numpy(dense.kernel)
            parts[f"{name}_bias"] = rng.uniform(-1, 1, dense.bias.shape)
            dense.bias.assign(parts[f"{name}_bias"])
        got = keras.ops.convert_to_numpy(layer(x, x))
        defined = SelfAttention(heads, heads, 1, length)
        weights = defined.pack(parts)
        off = float(np.max(np.abs(got - defined.reference(x, weights).h)))
        if length == heads:
            along = SelfAttention(heads, heads, 1, length, "tokens").reference(x, weights).h
            assert float(np.max(np.abs(got - along))) < 1e-14 < 0.01 < off, (heads, off)
        else:
            assert off < 1e-14, (heads, length, off)


def test_float64_matmul_stays_float64_where_no_entry_says_otherwise(keras_adapter):
    """The other side of keras_float64_matmul_in_float32_off_tensorflow: TF, and jax with x64, keep float64."""
    import keras

    entry = next(d for d in KNOWN_DIFFERENCES if d.name == "keras_float64_matmul_in_float32_off_tensorflow")
    if entry.active():
        pytest.skip(f"on the Keras {keras_backend()} backend float64 matmul is float32: the entry's own evidence")
    third = keras.ops.convert_to_tensor(np.full((2, 2), 1 / 3), dtype="float64")
    assert keras.backend.standardize_dtype(keras.ops.matmul(third, third).dtype) == "float64"


EVIDENCE = {f.__name__: f for f in (
    keras_float64_matmul_in_float32_off_tensorflow, keras_float64_gelu_float32_constant,
    keras_float64_leaky_relu_float32_slope, keras_float64_leaky_relu_float32_any_slope,
    torch_float64_softplus_threshold_20,
    torch_float64_hard_sigmoid_backward_float32_sixth,
    torch_gelu_nan_at_plus_inf, keras_softmax_nonfinite_rows, tf_flushes_subnormals, signed_zeros,
    torch_bfloat16_linear_nan_leaks_across_rows, keras_bfloat16_dense_nan_leaks_across_rows,
    keras_torch_backend_float64_softplus_threshold_20, keras_torch_backend_float64_hard_sigmoid_backward_float32_sixth,
    keras_torch_backend_gelu_nan_at_plus_inf, keras_jax_float64_tanh_in_float32,
    keras_float64_norms_in_float32_off_tensorflow, keras_float64_mean_in_float32_off_tensorflow,
    keras_float64_attention_scale_float32, keras_jax_float64_attention_softmax_in_float32,
    keras_jax_gru_without_bias_does_not_run, keras_attention_bias_along_tokens,
    keras_tf_float64_channels_first_conv_does_not_run, keras_tf_channels_first_conv_needs_onednn,
    keras_tf_float16_channels_first_conv_needs_avx512_fp16,
    keras_tf_channels_first_conv_bias_along_width,
    keras2_float64_gelu_float32_constant, keras2_hard_sigmoid_slope_0_2,
)}


def test_below_its_range_keras_float64_gelu_is_float64_exact(torch_adapter, keras_adapter):
    """The other side of keras_float64_gelu_float32_constant's range: Keras 3.0 to 3.3.2 on TensorFlow computed
    float64 gelu in float64 (make history: it moved at 3.3.3), so the entry starts exactly there."""
    entry = next(d for d in KNOWN_DIFFERENCES if d.name == "keras_float64_gelu_float32_constant")
    version = FACTS.get("frameworks.keras.keras") or "?"
    if entry.active() or version.startswith("2.") or keras_backend() != "tensorflow":
        pytest.skip(f"Keras {version} on {keras_backend()}: the entry's range or another Keras; its evidence test "
                    "measures it there")
    x = np.linspace(-6, 6, 4001)
    for name in ("gelu", "gelu_tanh"):
        err = np.max(np.abs(_keras(name, x, "float64") - _reference(name, x)))
        assert err < 8 * EPSILON["float64"] * 6, f"{name}: got {err}, but should be float64-exact below 3.3.3"


def test_every_known_difference_has_evidence():
    # MXNet's entries are measured in tests/frameworks/test_mxnet_quirks.py (its own venv: numpy<1.24, no torch or
    # Keras),
    # the runtimes' in tests/frameworks/test_runtimes.py (test_every_runtime_difference_has_evidence_here).
    assert sorted(d.name for d in KNOWN_DIFFERENCES if d.framework not in ("mxnet", *RUNTIMES)) == sorted(EVIDENCE)
    for d in KNOWN_DIFFERENCES:
        assert d.evidence and d.kind in ("extra_error", "excuse", "definition", "by_design", "noted"), d.name
        assert (d.kind == "extra_error") == (d.extra_error > 0) and (d.kind == "excuse") == (d.excuse is not None)
        assert (d.kind == "definition") == (d.definition is not None) == (d.definition_slope > 0), d.name


@pytest.mark.parametrize("name", sorted(EVIDENCE))
def test_the_known_difference_is_still_measured(name, torch_adapter, keras_adapter):
    entry = next(d for d in KNOWN_DIFFERENCES if d.name == name)
    unmet = entry.unmet()
    if unmet:
        pytest.skip(f"{name} holds only where {'; '.join(c.describe() for c in unmet)}; here "
                    + ", ".join(f"{c.key} is {FACTS.get(c.key)}" for c in unmet) + ": it grants nothing")
    EVIDENCE[name]()


PROBED_DTYPES = [(name, dtype) for name, probe in sorted(PROBES.items()) for dtype in probe.dtypes]


@pytest.mark.parametrize(("name", "dtype"), PROBED_DTYPES, ids=[f"{n}-{d}" for n, d in PROBED_DTYPES])
def test_the_probe_follows_the_kernel_path_it_was_measured_on(name, dtype, torch_adapter, keras_adapter):
    """A probe decides where its difference holds on any machine; in a dtype whose named facts are known here it
    must agree with them (docs/measurements.md): found where they say it shows, and never found where no named
    cause allows it. Otherwise the named cause is wrong, whatever the machine."""
    probe = PROBES[name]
    if get_adapter(probe.framework).cannot("linear", dtype):
        pytest.skip(f"{probe.framework} computes no {dtype} here")
    expected = probe.expected(FACTS, dtype)
    found = probe.holds(FACTS, dtype)
    if expected is None:
        pytest.skip(f"{name} in {dtype}: " + ("open (measured on no CPU where it could show)"
                                               if dtype in probe.open_dtypes else "a named fact is not known here")
                    + f"; the probe alone decides (found: {'yes' if found else 'no'})")
    facts = ", ".join(f"{f.key} is {FACTS.get(f.key)}" for f in probe.follows.get(dtype, ())) or "no named cause"
    assert found == expected, (
        f"probe {name} in {dtype} got {'yes' if found else 'no'}, but should be {'yes' if expected else 'no'} "
        f"where {facts}: the named cause and the measurement contradict each other")


def test_a_scope_reads_back_as_written_and_old_recordings_keep_their_meaning():
    from equivalence.core.conditions import Scope

    for scope in (Scope({}), Scope({"float32": (), "bfloat16": ()}), Scope({"bfloat16": ((17, 17, 17), (33, 33, 33))})):
        assert Scope.parse(scope.encode()) == scope
    probe = PROBES["torch_gelu_nan_at_plus_inf"]
    assert Scope.parse("yes", probe.legacy_yes).dtypes == ("float32", "bfloat16")
    assert Scope.parse("no", probe.legacy_yes).dtypes == ()
    old = RecordedFacts({probe.key: "yes"})
    assert probe.holds(old, "float32") and not probe.holds(old, "float16")


@pytest.mark.parametrize(("framework", "probe_name", "outside"), [
    ("torch", "torch_linear_nan_leaks_across_rows", 16),  # an even fan-in
    ("keras", "keras_dense_nan_leaks_across_rows", 32),  # a fan-in of 32 or less
])
def test_the_nan_leak_excuse_covers_exactly_the_rows_it_leaks_into(framework, probe_name, outside):
    """On any machine, from recorded facts: the leak's excuse grants the NaN outputs of clean rows beside a NaN row
    in bfloat16 at the shape class, and nothing in the NaN's own row, another dtype, or outside the class."""
    key = PROBES[probe_name].key
    facts = {"frameworks.keras.keras_backend": "tensorflow"}
    leaking = RecordedFacts({**facts, key: "bfloat16 (17x33x1)"})
    clean = RecordedFacts({**facts, key: "none"})
    x = np.ones((17, 33))
    x[3, 0] = np.nan
    z = np.ones((17, 5))
    z[3] = np.nan
    got = np.full((17, 5), np.nan)  # every row NaN: row 3 by right, the others leaked
    got[10] = 1.0  # one row the leak missed
    expected = np.ones((17, 5), dtype=bool)
    expected[[3, 10]] = False
    np.testing.assert_array_equal(excused(framework, "sigmoid", "bfloat16", z, got, x=x, facts=leaking), expected)
    assert not excused(framework, "sigmoid", "bfloat16", z, got, x=x, facts=clean).any()
    assert not excused(framework, "sigmoid", "float32", z, got, x=x, facts=leaking).any()
    assert not excused(framework, "sigmoid", "bfloat16", z, got, facts=leaking).any()  # no input: nothing
    other = np.ones((17, outside))
    other[3, 0] = np.nan
    assert not excused(framework, "sigmoid", "bfloat16", z, got, x=other, facts=leaking).any()  # outside the class
    assert not excused(framework, "sigmoid", "bfloat16", z[:16], got[:16], x=x[:16], facts=leaking).any()  # 16 rows
    inf = np.where(np.isnan(x), np.inf, x)  # an infinity leaks too (measured): the same rows excused
    np.testing.assert_array_equal(excused(framework, "sigmoid", "bfloat16", z, got, x=inf, facts=leaking), expected)
    for kind in ("layernorm", "batchnorm"):  # measured on the matmul only: a norm in an MLP (2-D too) gets nothing
        assert not excused(framework, "sigmoid", "bfloat16", z, got, x=x, facts=leaking, layer_kind=kind).any()


def test_an_entry_whose_conditions_fail_grants_nothing(torch_adapter, keras_adapter):
    """The conditions are judged on the facts given: a recording made where the gelu probe said no excuses
    nothing, and a Keras entry for the torch backend grants nothing to outputs recorded on TensorFlow."""
    here = flatten(fingerprint(("torch", "keras")))
    z = np.full((1, 64), np.inf)
    nan = np.full((1, 64), np.nan)
    without = RecordedFacts({**here, "probes.torch_gelu_nan_at_plus_inf": "no"})
    with_ = RecordedFacts({**here, "probes.torch_gelu_nan_at_plus_inf": "yes"})
    assert not excused("torch", "gelu", "float32", z, nan, facts=without).any()
    assert excused("torch", "gelu", "float32", z, nan, facts=with_).all()
    on_tf = RecordedFacts({**here, "frameworks.keras.keras_backend": "tensorflow"})
    on_torch = RecordedFacts({**here, "frameworks.keras.keras_backend": "torch"})
    assert extra_error("keras", "sigmoid", "float64", facts=on_tf) == 0.0
    assert extra_error("keras", "sigmoid", "float64", facts=on_torch) == FLOAT32_MATMUL
    assert keras_on("torch").holds(on_torch) and not keras_on("torch").holds(on_tf)


def test_every_entry_states_its_conditions_and_the_fingerprint_lists_the_active_ones(torch_adapter, keras_adapter):
    fp = fingerprint(("torch", "keras"))
    active = fp["known_differences"]["active"]
    assert active == [d.name for d in KNOWN_DIFFERENCES if d.framework in ("torch", "keras") and d.active()]
    assert set(fp["probes"]) == {name for name, p in PROBES.items() if p.framework in ("torch", "keras")}
    for d in KNOWN_DIFFERENCES:
        assert d.conditions(), d.name
        if d.framework == "keras":  # every Keras entry names the backend(s) it was measured on
            assert any(getattr(c, "key", "") == "frameworks.keras.keras_backend" for c in d.when), d.name


def test_extra_error_keeps_float64_far_tighter_than_float32():
    """A float64 layer computed in float32 is off by ~eps32 * scale: still 2x or more outside the widened bound.

    The one exception is the entry whose measured difference *is* a float32 matmul behind float64
    (Keras on torch; tanh on Keras' jax backend): there the float64 check can only be float32-tight, and the
    entry says so.
    """
    float32_inside = {"keras_float64_matmul_in_float32_off_tensorflow": ("torch",),
                      "keras_jax_float64_tanh_in_float32": ("jax",),
                      "keras_float64_norms_in_float32_off_tensorflow": ("jax", "torch"),
                      "keras_float64_mean_in_float32_off_tensorflow": ("jax", "torch"),
                      "keras_jax_float64_attention_softmax_in_float32": ("jax",)}
    float32_activation = {"ort_float64_celu_in_float32": ("celu",)}  # ONNX Celu is float32-only: a Cast around it
    for d in KNOWN_DIFFERENCES:
        if "float64" not in d.dtypes:  # e.g. LiteRT's float16-weight entries: float32 layers, eps16-sized
            continue
        if d.name in float32_activation:
            assert d.extra_error == FLOAT32_MATMUL and d.activations == float32_activation[d.name], d.name
            continue
        if d.name in float32_inside:
            assert d.extra_error == FLOAT32_MATMUL and keras_on(*float32_inside[d.name]) in d.when
            continue
        assert d.extra_error <= 0.5 * EPSILON["float32"], d.name
