"""Keras' measured differences, and those of what runs Keras' layers (tf.function and XLA, LiteRT on TensorFlow's
converter): the entries (``equivalence.core.known_differences.KnownDifference``), their probes, and the facts
their conditions name (the Keras backend, TensorFlow's oneDNN switch, Keras 2). Data only: nothing here imports
Keras or TensorFlow; the registry entries (``equivalence.frameworks.builtin``) carry them to the core.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from equivalence.core.activations import ACTIVATIONS, PARAMETRIC_FAMILIES
from equivalence.core.conditions import (
    ONEDNN_AT_AMX,
    ONEDNN_AT_AVX512,
    ONEDNN_AT_AVX512_FP16,
    ONEDNN_BELOW_AVX512_FP16,
    AtLeast,
    Below,
    Fact,
    Probe,
    Shape,
)
from equivalence.core.dtypes import EPSILON
from equivalence.core.known_differences import FLOAT32_CONSTANT, FLOAT32_MATMUL, KnownDifference, all_nan
from equivalence.core.nan_leak import nan_leaked_from_another_row, nan_leaks_on


def keras_on(*backends: str) -> Fact:
    return Fact("frameworks.keras.keras_backend", backends, f"Keras on its {' or '.join(backends)} backend")


KERAS_ON_TENSORFLOW = keras_on("tensorflow")
TF_ONEDNN_ON = Fact("frameworks.keras.onednn_enabled", ("on",), "TensorFlow's oneDNN ops on")
TF_ONEDNN_OFF = Fact("frameworks.keras.onednn_enabled", ("off",), "TensorFlow's oneDNN ops off")


KERAS_2 = Below("frameworks.keras.keras", "3.0", "Keras 2 (tf-keras, TF_USE_LEGACY_KERAS=1)")


def keras2_hard_sigmoid(z: np.ndarray) -> np.ndarray:
    """Keras 2's ``hard_sigmoid``: ``clip(0.2 z + 0.5, 0, 1)`` (tf-keras ``backend.hard_sigmoid``)."""
    return np.clip(0.2 * np.asarray(z, dtype=np.float64) + 0.5, 0.0, 1.0)


def keras_backend() -> str:
    """The Keras backend of this process: Keras' own ``KERAS_BACKEND`` (the adapter defaults it to tensorflow)."""
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def _softmax_finite_beside_inf(adapter: Any, dtype: str) -> bool:
    y = adapter.activation("softmax", np.array([[np.inf, 0.0, 1.0]]), dtype)
    return bool(np.isnan(y[0, 0]) and np.all(np.isfinite(y[0, 1:])))


def _row_has_nonfinite(z: np.ndarray, got: np.ndarray, x: np.ndarray | None) -> np.ndarray:
    return np.broadcast_to(~np.all(np.isfinite(z), axis=-1, keepdims=True), got.shape)



DENSE_NAN_LEAK_GRID: tuple[Shape, ...] = (
    (17, 33, 1), (33, 40, 24), (33, 33, 33), (17, 65, 1),
    (17, 32, 1), (16, 40, 1), (17, 64, 1), (17, 17, 17), (20, 21, 8))
"""(batch, in, out): four shapes where TensorFlow's leak was measured on the Intel Xeon with AMX, and five just
outside its shape class (fan-in 32 and 64, a batch of 16, fan-in of 32 or less; the last two leak in torch)."""


def dense_nan_leak_shape_class(shape: Shape) -> bool:
    """Where TensorFlow's bfloat16 NaN leak was seen (Intel Xeon, oneDNN at AVX512_CORE_AMX): a batch of 17 rows or
    more and a fan-in above 32 that is not a multiple of 32.

    Measured with one NaN at rows 0-5, columns 0-3 (24 placements), batch 17, out 1: fan-in 33, 34, 40, 48 and 65
    leaked in 20 of 24 placements, 63 in 5, and 16, 17, 31, 32, 64, 96 and 128 in none; fan-in 40 leaked at every
    batch from 17 to 128 and at none from 2 to 16. An AMX tile holds 32 bfloat16 of K: a K tail read past the row's
    end would do this. Not torch's class (an odd fan-in): (17, 17, 17) leaks in torch and not here.
    """
    batch, n_in = shape[0], shape[1]
    return batch >= 17 and n_in > 32 and n_in % 32 != 0


DENSE_NAN_LEAK_SHAPE_CLASS = "a batch of 17 rows or more and a fan-in above 32, not a multiple of 32"


PROBES: dict[str, Probe] = {p.name: p for p in (
    Probe("keras_gelu_nan_at_plus_inf", "keras", "Keras' gelu of 64 x +inf is NaN",
          all_nan("gelu", lambda: np.full(64, np.inf)),
          follows={"float32": (keras_on("torch"), ONEDNN_AT_AVX512), "bfloat16": (keras_on("torch"), ONEDNN_AT_AVX512),
                   "float16": (keras_on("torch"), ONEDNN_AT_AVX512_FP16)},
          legacy_yes=("float32", "bfloat16")),
    Probe("keras_softmax_finite_beside_inf", "keras",
          "Keras' softmax of [inf, 0, 1] keeps finite values beside the NaN",
          _softmax_finite_beside_inf,
          follows={"float32": (KERAS_ON_TENSORFLOW, TF_ONEDNN_ON, ONEDNN_AT_AVX512),
                   "bfloat16": (KERAS_ON_TENSORFLOW, TF_ONEDNN_ON, ONEDNN_AT_AVX512),
                   "float16": (KERAS_ON_TENSORFLOW, TF_ONEDNN_ON, ONEDNN_AT_AVX512_FP16)},
          legacy_yes=("float32", "bfloat16")),
    Probe("keras_dense_nan_leaks_across_rows", "keras",
          "Keras' Dense layer turns a batch row NaN when another row holds a NaN",
          nan_leaks_on(DENSE_NAN_LEAK_GRID), follows={"bfloat16": (KERAS_ON_TENSORFLOW, TF_ONEDNN_ON, ONEDNN_AT_AMX)},
          shape_class=dense_nan_leak_shape_class, shape_class_label=DENSE_NAN_LEAK_SHAPE_CLASS),
)}
"""Keras' start-up probes (``equivalence.core.conditions.Probe``)."""

KERAS: tuple[KnownDifference, ...] = (
    KnownDifference(
        "keras2_hard_sigmoid_slope_0_2", "keras", ("hard_sigmoid",), ("float64", "float32", "float16", "bfloat16"),
        "definition",
        "Keras 2 (tf-keras 2.16.0 and 2.21.0, measured) defines hard_sigmoid as clip(0.2 z + 0.5, 0, 1), "
        "Keras 3 (from 3.0) and "
        "torch as relu6(z + 3) / 6: the two differ by up to 1/12 (0.0833 at z = +-2.5) and have other kinks "
        "(+-2.5 against +-3). Measured between tf-keras 2.21.0 and Keras 3.15.1 on the shipped golden vectors: "
        "the hard_sigmoid cases move, every other case is bit-identical",
        definition=keras2_hard_sigmoid, definition_slope=0.2, when=(KERAS_ON_TENSORFLOW, KERAS_2)),
    KnownDifference(
        "keras_float64_matmul_in_float32_off_tensorflow", "keras", tuple(ACTIVATIONS), ("float64",), "extra_error",
        "Keras 3.15.1's result_type maps float64 to float32 off TensorFlow (BIT64_TO_BIT32_DTYPE, "
        "'aligned with JAX'): on the torch backend keras.ops.matmul of two float64 tensors returns float32, "
        "so a float64 Dense computes x @ W in float32. Found by the suite on KERAS_BACKEND=torch: a 1-1 "
        "float64 sigmoid layer off by 6.45e-10, ratio 3.6e5 of the float64 bound. On jax with "
        "jax_enable_x64 (without it Keras has no float64 there at all) the matmul stays float64 (measured)",
        extra_error=FLOAT32_MATMUL, when=(keras_on("torch"),)),
    KnownDifference(
        "keras_float64_norms_in_float32_off_tensorflow", "keras", tuple(ACTIVATIONS), ("float64",), "extra_error",
        "Keras 3.15.1's BatchNormalization and LayerNormalization compute in result_type(dtype, 'float32'), which "
        "is float32 off TensorFlow (BIT64_TO_BIT32_DTYPE): a float64 norm there is float32-precise. Measured on "
        "U(-3, 3) inputs: 5.2e-8 (BatchNormalization) and 7.6e-8 (LayerNormalization) of the output's size on jax "
        "(jax_enable_x64 on), 1.3e-7 and 7.6e-8 on torch; float64-exact on TensorFlow. Found by "
        "tests/own/test_own_norm_models.py on KERAS_BACKEND=jax: a float64 BatchNormalization off by ratio 2.0e7 of "
        "the float64 bound (on torch the float64 matmul entry had covered it)",
        extra_error=FLOAT32_MATMUL, layer_kinds=("batchnorm", "layernorm"), when=(keras_on("jax", "torch"),)),
    KnownDifference(
        "keras_float64_mean_in_float32_off_tensorflow", "keras", tuple(ACTIVATIONS), ("float64",), "extra_error",
        "Keras 3.15.1's keras.ops.mean, which GlobalAveragePooling1D (the mean over the tokens) calls, computes in "
        "result_type(dtype, 'float32') as the norms do (keras_float64_norms_in_float32_off_tensorflow): float32 "
        "off TensorFlow, so a float64 mean there is float32-precise: 1.9e-8 off at one token of U(-1, 1) values on "
        "jax 0.10.2 (jax_enable_x64 on, the Intel Xeon); float64-exact on TensorFlow. Found by "
        "tests/own/test_own_sequence_models.py on KERAS_BACKEND=jax (a mean over 1 token, ratio 4.5e6 of the "
        "float64 bound; on torch the float64 matmul entry covers it)",
        extra_error=FLOAT32_MATMUL, layer_kinds=("mean",), when=(keras_on("jax", "torch"),)),
    KnownDifference(
        "keras_float64_attention_scale_float32", "keras", tuple(ACTIVATIONS), ("float64",), "extra_error",
        "Keras 3.15.1's MultiHeadAttention on TensorFlow multiplies the float64 scores by "
        "tf.cast(1 / sqrt(key_dim), float64) of a python float, which TensorFlow first makes a float32 tensor: "
        "the scale is off by up to eps32/2 relative (1.7e-8 at key_dim 2 and 3; exact when 1/sqrt(key_dim) is a "
        "power of two: key_dim 1, 4, 16). Each score moves by u32 |s|, each attention weight by 2 u32 max|s| "
        "of itself, so the output by at most u32 of the attention's error magnitude (its 2 max|s| (A|v|) @ |W_o| "
        "term): half an eps32 of the scale. Measured 2.1e-8 to 3.3e-8, 0.002 eps32 of the scale. Found by "
        "tests/own/test_own_sequence_models.py (a float64 attention of head size 2, ratio 1.8e5)",
        extra_error=EPSILON["float32"] / 2, layer_kinds=("attention",), when=(KERAS_ON_TENSORFLOW,)),
    KnownDifference(
        "keras_jax_float64_attention_softmax_in_float32", "keras", tuple(ACTIVATIONS), ("float64",), "extra_error",
        "On the jax backend (jax_enable_x64 on) Keras 3.15.1's MultiHeadAttention without dropout calls "
        "ops.dot_product_attention, whose jax core casts the scores to float32 for the softmax ('always carried out "
        "in fp32', keras/src/backend/jax/nn.py) and the weights back: a float64 attention there is float32-precise "
        "in its weights. Measured 1.1e-7 to 4.3e-7 off (key_dim 1 to 4, U(-2, 2) inputs, jax 0.10.2, the Intel "
        "Xeon): at most 0.10 eps32 of the attention's error magnitude (the kind's scale), granted 8. Found by "
        "tests/own/test_own_sequence_models.py on KERAS_BACKEND=jax (ratio 2.4e6 to 7.3e6 of the float64 bound). "
        "Granted to every float64 attention on jax: "
        "the kind does not see the dropout rate, and with dropout > 0 Keras takes its einsum path, which stays "
        "float64, so there the grant is wider than the error",
        extra_error=FLOAT32_MATMUL, layer_kinds=("attention",), when=(keras_on("jax"),)),
    KnownDifference(
        "keras_jax_gru_without_bias_does_not_run", "keras", tuple(ACTIVATIONS), ("float32", "float16", "bfloat16"),
        "noted",
        "On the jax backend with jax_enable_x64 on (which the suite sets, for float64), Keras 3.15.1's "
        "GRU(use_bias=False) in float32, float16 or bfloat16 does not run: its step returns a float64 state, and "
        "jax's scan refuses ('carry input and carry output must have equal types'). With a bias, in float64, or "
        "with x64 off it runs; LSTM runs in every case (jax 0.10.2, measured). Found by "
        "tests/own/test_own_recurrent_models.py on KERAS_BACKEND=jax. Nothing to compare: the property draws no "
        "such model there",
        layer_kinds=("gru",), when=(keras_on("jax"),)),
    KnownDifference(
        "keras_tf_float64_channels_first_conv_does_not_run", "keras", tuple(ACTIVATIONS), ("float64",), "noted",
        "Keras 3.15.1's Conv1D and Conv2D with data_format='channels_first' call tf.nn.convolution in NCHW, which "
        "TensorFlow 2.21.0 on a CPU computes only through oneDNN, and oneDNN has no float64 convolution: "
        "UnimplementedError 'The Conv2D op currently only supports the NHWC tensor format on the CPU', oneDNN on or "
        "off (measured on the Intel Xeon). Pooling, GlobalAveragePooling1D and BatchNormalization(axis=1) run "
        "channels-first in every dtype, and on Keras' jax and torch backends the conv runs in every dtype. Found by "
        "tests/own/test_own_channels_first_models.py. Nothing to compare: the Keras walker refuses such a conv "
        "naming it",
        layer_kinds=("conv",), when=(KERAS_ON_TENSORFLOW,)),
    KnownDifference(
        "keras_tf_channels_first_conv_bias_along_width", "keras", tuple(ACTIVATIONS),
        ("float32", "float16", "bfloat16"), "noted",
        "Keras 3.15.1's channels_first Conv1D and Conv2D add their bias reshaped (1, filters, 1, ...) with "
        "keras.ops.add, which on TensorFlow becomes tf.nn.bias_add channels-last whenever the output's last axis has "
        "as many elements as there are filters (the cause of keras_attention_bias_along_tokens): when the output's "
        "width equals its filters, element (c, h, w) gets bias w, not bias c. Measured: a 3x3 Conv2D of 4 filters "
        "on 3x6x6 inputs (a 4x4 output) off by 0.19 with U(-1, 1)-sized biases (torch's own draw), exact with a "
        "width of 3 or 5 and on Keras' jax and torch backends. Found by tests/own/test_own_channels_first_models.py "
        "(ratio 1.1e5 at the conv). The Keras walker refuses such a conv with a bias, naming this entry. It holds "
        "where the conv runs at all: with oneDNN on, and not in float64 (keras_tf_channels_first_conv_needs_onednn, "
        "keras_tf_float64_channels_first_conv_does_not_run; the lowest kernel cell found it so)",
        layer_kinds=("conv",), when=(KERAS_ON_TENSORFLOW, TF_ONEDNN_ON)),
    KnownDifference(
        "keras_tf_channels_first_conv_needs_onednn", "keras", tuple(ACTIVATIONS), ("float32", "float16", "bfloat16"),
        "noted",
        "With TensorFlow's oneDNN ops off (TF_ENABLE_ONEDNN_OPTS=0, or a CPU without AVX-512, where TF 2.21.0 turns "
        "them off: docs/measurements.md), Keras 3.15.1's channels_first Conv1D and Conv2D do not run in any dtype "
        "(UnimplementedError, NHWC only on the CPU); with them on, float32, float16 and bfloat16 run (measured "
        "with TF_ENABLE_ONEDNN_OPTS=0 and unset on the Intel Xeon). Nothing to compare: the Keras walker refuses "
        "such a conv naming it",
        layer_kinds=("conv",), when=(KERAS_ON_TENSORFLOW, TF_ONEDNN_OFF)),
    KnownDifference(
        "keras_tf_float16_channels_first_conv_needs_avx512_fp16", "keras", tuple(ACTIVATIONS), ("float16",), "noted",
        "With TensorFlow's oneDNN ops on but oneDNN below AVX512_CORE_FP16, Keras 3.15.1's channels_first Conv1D and "
        "Conv2D do not run in float16 (UnimplementedError: the Conv2D op currently only supports the NHWC tensor "
        "format): oneDNN has no float16 convolution there, and TensorFlow's own CPU convolution is NHWC only. "
        "Measured on an AMD EPYC with AVX-512 (oneDNN at AVX512_CORE_BF16, TF 2.21.0), where float32 and bfloat16 "
        "run; on the Intel Xeon with AVX512-FP16 float16 runs. Found by the CI run of "
        "tests/own/test_own_channels_first_models.py on the AMD EPYC. Nothing to compare: the Keras walker refuses "
        "such a conv naming it",
        layer_kinds=("conv",), when=(KERAS_ON_TENSORFLOW, TF_ONEDNN_ON, ONEDNN_BELOW_AVX512_FP16)),
    KnownDifference(
        "keras_attention_bias_along_tokens", "keras", tuple(ACTIVATIONS), ("float64", "float32", "float16", "bfloat16"),
        "noted",
        "Keras 3.15.1's keras.ops.add on TensorFlow turns an add whose second operand squeezes to one axis into "
        "tf.nn.bias_add, channels-first when that axis' size matches the first operand's axis 1 rather than its last. "
        "MultiHeadAttention adds its (num_heads, key_dim) query, key and value biases with it: at key_dim 1 and a "
        "sequence of num_heads tokens the (num_heads, 1) bias is added along the tokens, token l getting bias l in "
        "every head, not head h bias h. Off by the biases' size (1.28 at 2 heads, U(-1, 1) biases); exact "
        "otherwise, and on Keras' torch backend. Found by tests/own/test_own_sequence_models.py (2 heads of 1, 2 "
        "tokens, ratio 6.0e5). Named, not granted: the Keras walker gives such a layer the kind "
        "SelfAttention(bias_along='tokens'), judged against that definition, and the pair's bias difference is "
        "named before any value",
        layer_kinds=("attention",), when=(KERAS_ON_TENSORFLOW,)),
    KnownDifference(
        "keras_jax_float64_tanh_in_float32", "keras", ("tanh",), ("float64",), "extra_error",
        "On the jax backend (jax_enable_x64 on) Keras 3.15.1's ops.tanh of a float64 tensor returns float32 "
        "(it casts to result_type(float64, float), which is float32 off TensorFlow): off by up to 1.5 eps32 "
        "over [-6, 6]. Found by the suite on KERAS_BACKEND=jax (a 1-1 float64 tanh layer, ratio 1.6e7); the "
        "other 18 activations, matmul and the bias add stay float64 there (measured)",
        extra_error=FLOAT32_MATMUL, when=(keras_on("jax"),)),
    KnownDifference(
        "keras_float64_gelu_float32_constant", "keras", ("gelu", "gelu_tanh"), ("float64",), "extra_error",
        "Keras gelu in float64 is off by 5.0e-9 (exact) and 9e-10 (tanh) from float64 math: "
        "a float32 constant; torch is within 2 eps64. Keras 3.0.5 to 3.3.2 were float64-exact, 3.3.3 is the "
        "first release with the constant (make history: every release from 3.0.5 to 3.3.3 beside TF 2.16.2)",
        extra_error=FLOAT32_CONSTANT,
        when=(KERAS_ON_TENSORFLOW, AtLeast("frameworks.keras.keras", "3.3.3", "Keras 3.3.3 or newer"))),
    KnownDifference(
        "keras2_float64_gelu_float32_constant", "keras", ("gelu", "gelu_tanh"), ("float64",), "extra_error",
        "Keras 2 (tf-keras 2.16.0 and 2.21.0) gelu in float64 is off by 5.0e-9 (exact) and 1.8e-10 (tanh) "
        "from float64 math: "
        "float32 constants, as Keras 3.3.3 and later. Found by verifying and recording the shipped golden vectors "
        "under TF_USE_LEGACY_KERAS=1",
        extra_error=FLOAT32_CONSTANT, when=(KERAS_ON_TENSORFLOW, KERAS_2)),
    KnownDifference(
        "keras_float64_leaky_relu_float32_slope", "keras", ("leaky_relu_0.2",), ("float64",), "extra_error",
        "TF LeakyRelu's alpha is a float32 attribute: the float64 slope is 0.20000000298, "
        "1.49e-8 relative", extra_error=FLOAT32_CONSTANT, when=(KERAS_ON_TENSORFLOW,)),
    KnownDifference(
        "keras_float64_leaky_relu_float32_any_slope", "keras", (), ("float64",), "extra_error",
        "the same float32 alpha at every other slope (a user's LeakyReLU(0.01) or (0.3)): float32(slope) is off by "
        "at most eps32/2 relative, and |slope * z| is at most the layer scale, so eps32/2 of the scale",
        extra_error=0.5 * EPSILON["float32"], families=("leaky_relu",), when=(KERAS_ON_TENSORFLOW,)),
    KnownDifference(
        "keras_torch_backend_float64_softplus_threshold_20", "keras", ("softplus",), ("float64",), "extra_error",
        "On the torch backend Keras' softplus is torch's (threshold 20): softplus(20.5) is 20.5, off by 1.25e-9 "
        "from float64 math, the same as torch_float64_softplus_threshold_20", extra_error=FLOAT32_CONSTANT,
        scope=("forward",), when=(keras_on("torch"),)),
    KnownDifference(
        "keras_torch_backend_float64_hard_sigmoid_backward_float32_sixth", "keras", ("hard_sigmoid",),
        ("float64",), "extra_error",
        "On the torch backend Keras' hard_sigmoid is torch's: its float64 backward multiplies by 1/6 rounded "
        "to float32, as torch_float64_hard_sigmoid_backward_float32_sixth", extra_error=0.5 * EPSILON["float32"],
        scope=("gradient",), when=(keras_on("torch"),)),
    KnownDifference(
        "keras_torch_backend_gelu_nan_at_plus_inf", "keras", ("gelu",),
        PROBES["keras_gelu_nan_at_plus_inf"].candidate_dtypes, "excuse",
        "On the torch backend Keras' exact gelu is torch's: NaN at +inf in the dtypes the probe finds, as "
        "torch_gelu_nan_at_plus_inf (float32 and bfloat16 where torch's oneDNN runs at an AVX-512 ISA, float16 "
        "too at AVX512_CORE_FP16 and up)",
        excuse=lambda z, got, x: np.isposinf(z) & np.isnan(got),
        when=(keras_on("torch"), PROBES["keras_gelu_nan_at_plus_inf"])),
    KnownDifference(
        "keras_softmax_nonfinite_rows", "keras", ("softmax",),
        PROBES["keras_softmax_finite_beside_inf"].candidate_dtypes, "excuse",
        "TF softmax in float32/bfloat16 with TF's oneDNN ops on at an AVX-512 ISA, on a row holding +inf or "
        "NaN, gives finite values at the row's other positions (e.g. [inf, 0, 1] -> [nan, 0, 0]); with "
        "oneDNN off (TF_ENABLE_ONEDNN_OPTS=0, TF's default on an AVX2-only CPU) or on an AVX2-only CPU "
        "whatever the switch, the whole row is NaN, as in torch, float64 and the reference. float16 behaves "
        "as float32 where TF runs it through oneDNN, on a CPU with AVX512-FP16 (the Intel Xeon, measured "
        "2026-12-05; oneDNN at AVX512_CORE_FP16 or higher); whole rows NaN on the AMD EPYC with AVX-512",
        excuse=_row_has_nonfinite, when=(KERAS_ON_TENSORFLOW, PROBES["keras_softmax_finite_beside_inf"])),
    KnownDifference(
        "keras_bfloat16_dense_nan_leaks_across_rows", "keras", tuple(ACTIVATIONS),
        PROBES["keras_dense_nan_leaks_across_rows"].candidate_dtypes, "excuse",
        "Keras 3.15.1's bfloat16 Dense on TensorFlow 2.21.0 with its oneDNN ops on, on an Intel Xeon with AMX (oneDNN "
        "at AVX512_CORE_AMX), turns a whole batch row NaN when another row of the input holds a NaN, for some shapes: "
        "batch 17, out 1, one NaN at rows 0-5, columns 0-3 (24 placements): fan-in 33, 34, 40, 48, 65 leaked in 20 of "
        "24, 63 in 5, 16, 17, 31, 32, 64, 96, 128 in none; fan-in 40 at every batch from 17 to 128, none from 2 to 16; "
        "(33,33,33) and (33,40,24) leaked, (17,17,17) and (20,21,8) did not. The same ISA capped at AVX512_CORE_BF16 "
        "(the AMD EPYC's), TF_ENABLE_ONEDNN_OPTS=0 and float16/float32 show none. Found by the suite's non-finite "
        "property on the Intel Xeon (a 33-1 sigmoid layer, batch 17: a NaN at row 1 made row 0 NaN); +inf and -inf leak"
        " at the same placements as a NaN. The same oneDNN AMX kernels as torch_bfloat16_linear_nan_leaks_across_rows, "
        "another shape class; the excuse covers exactly the NaN outputs of rows whose input and reference are finite, "
        "beside a row holding a NaN or an infinity, at dense layers of the shape class ("
        + DENSE_NAN_LEAK_SHAPE_CLASS + ")",
        excuse=nan_leaked_from_another_row(dense_nan_leak_shape_class), families=PARAMETRIC_FAMILIES,
        layer_kinds=("dense",),
        scope=("forward",), when=(KERAS_ON_TENSORFLOW, PROBES["keras_dense_nan_leaks_across_rows"])),
    KnownDifference(
        "tf_flushes_subnormals", "keras", ("softplus", "mish"), ("float32",), "by_design",
        "TF flushes float32 subnormals to zero: softplus(-100) is 3.8e-44 in torch and 0 in Keras, "
        "mish(-100) -3.8e-42 and -0; an absolute difference far inside any bound", when=(KERAS_ON_TENSORFLOW,)),
    KnownDifference(
        "signed_zeros", "keras", ("relu", "relu6", "celu"), ("float32", "float64"), "by_design",
        "relu(-0.0) is -0.0 in torch and +0.0 in Keras on its vectorised path (also relu6, celu); "
        "the comparison compares zeros by value", when=(KERAS_ON_TENSORFLOW,)),
)

KERAS_GRAPH: tuple[KnownDifference, ...] = (
    KnownDifference(
        "tf_onednn_layer_norm_fusion_epsilon_0_001", "keras_graph", tuple(ACTIVATIONS), ("float32", "bfloat16"),
        "noted",
        "TensorFlow 2.21.0's grappler remapper, with oneDNN on, fuses a LayerNorm written as ops (Mean keeping the "
        "last axis, SquaredDifference, Mean, AddV2 of the epsilon, Rsqrt, Mul by a constant gamma, Mul, Mul, Sub "
        "from a constant beta, AddV2: tf_keras' and onnx2tf's form) on a 2-D or 3-D tensor into one _MklLayerNorm "
        "node, and AddMklLayerNorm (remapper.cc) never copies the graph's epsilon into it, so the kernel computes "
        "with the op's default 0.001. Measured in a tf.function of those ops, epsilon 1e-5, rows of spread 0.01: "
        "1.68 off the 1e-5 LayerNorm, 7e-8 off a 0.001 one; remapping off (or TF_ENABLE_ONEDNN_OPTS=0) computes "
        "1e-5 (AMD EPYC with AVX-512 and the Intel Xeon with AMX). Found by the SavedModel reader on onnx2tf's "
        "LayerNorm, cut out with gamma and beta frozen to constants (600 to 1200x the bound); a SavedModel's own "
        "signature reads them from variables and is not fused. Nothing to grant: the reader runs such a unit with "
        "the remapper off, as the model computes (docs/upstream/tensorflow-onednn-layer-norm-epsilon.md)",
        layer_kinds=("layernorm",), when=(TF_ONEDNN_ON,)),
)

KERAS_XLA: tuple[KnownDifference, ...] = (
    KnownDifference(
        "keras_xla_whole_model_fuses_across_layers", "keras_xla", tuple(ACTIVATIONS),
        ("float64", "float32", "float16", "bfloat16"),
        "by_design",
        "XLA compiles the whole model as one program, so its own forward is not bit for bit the chain of the "
        "layers compiled one by one: a float64 sigmoid -> tanh stack (1 -> 4 -> 1) lands 1 ulp away, and "
        "hypothesis found a float32 sigmoid stack (16 -> 16 -> 1) 1 ulp away; within 0.08 of the last layer's "
        "error bound over 120 random stacks of every dtype, 2 of 36 float64 ones off, none of the others "
        "(TF 2.21.0, Keras 3.15.1). Evidence in tests/frameworks/test_runtimes.py",
        scope=("whole_graph",), families=PARAMETRIC_FAMILIES),
)

LITERT: tuple[KnownDifference, ...] = (
    KnownDifference(
        "litert_hard_sigmoid_folded_into_bias", "litert", ("hard_sigmoid",), ("float32",), "by_design",
        "TFLiteConverter (TensorFlow 2.21.0) folds hard_sigmoid's relu6(z + 3) / 6 into the layer: "
        "FULLY_CONNECTED with a fused RELU6 whose bias buffer holds float32(b + 3), then MUL 1/6. So the "
        "weights LiteRT stores are not the ones written; no other activation is folded (all 19 measured, "
        "ai-edge-litert 2.3.0). Evidence in tests/frameworks/test_litert.py", scope=("native_weights",),
        native_bias_shift=3.0),
    KnownDifference(
        "litert_whole_model_folds_across_layers", "litert", tuple(ACTIVATIONS), ("float32",), "by_design",
        "TFLiteConverter converts the whole model as one graph and folds across layers (a linear layer into the "
        "next), so the converted model is not bit for bit its layers converted one by one: a linear -> sigmoid "
        "stack (1 -> 1 -> 1) 1 ulp off in float32; with float16 weights the folded weights are rounded once, "
        "3.3e-5 off, within the last layer's bound plus each layer's weight rounding term (ai-edge-litert "
        "2.3.0, TF 2.21.0). Evidence in tests/frameworks/test_litert.py", scope=("whole_graph",),
        families=PARAMETRIC_FAMILIES),
    KnownDifference(
        "litert_float32_softplus_overflows_above_88", "litert", ("softplus",), ("float32",), "excuse",
        "LiteRT has no SOFTPLUS builtin: TFLiteConverter (TensorFlow 2.21.0) writes Keras' softplus as "
        "LOG(ADD(EXP(z), 1)), and LiteRT's EXP overflows from z = 88.377 (measured; ln(float32 max) is 88.72), "
        "so softplus gives +inf instead of z above it (ai-edge-litert 2.3.0; litert_fp16w too). Found by the "
        "suite: softplus(99.83) = inf. mish, built the same way, stays finite "
        "(tanh(inf) = 1). Evidence in tests/frameworks/test_litert.py",
        excuse=lambda z, got, x: (z > 88.0) & np.isposinf(got)),
)

LITERT_FP16W: tuple[KnownDifference, ...] = (
    KnownDifference(
        "litert_fp16w_hard_sigmoid_shift_in_float16_bias", "litert_fp16w", ("hard_sigmoid",), ("float32",),
        "extra_error",
        "TFLiteConverter (TensorFlow 2.21.0) folds hard_sigmoid's relu6(z + 3) / 6 into the layer: the bias "
        "buffer holds b + 3 (FULLY_CONNECTED with a fused RELU6, then MUL 1/6), and float16 weight quantisation "
        "rounds b + 3, not b: up to eps16/2 * 3 more in z, eps16/2 * 3 / 6 = eps16/4 in the output. Measured "
        "with ai-edge-litert 2.3.0: a 8-8 layer at input scale 0.01 was off by 2.75x the weight-rounding bound. "
        "The MUL's 1/6 is a float16 constant too: eps16/2 of |h| more. Evidence in tests/frameworks/test_litert.py",
        extra_error=0.5 * EPSILON["float16"] * (3 / 6 + 1), scope=("forward",)),
    KnownDifference(
        "litert_fp16w_selu_constants_in_float16", "litert_fp16w", ("selu",), ("float32",), "extra_error",
        "float16 weight quantisation rounds every float32 constant of the graph, not only the weights: selu's "
        "scale 1.0507 and scale * alpha 1.7581 (MUL constants) become float16, eps16/2 relative, so the output "
        "is off by up to eps16/2 of |h| (measured 1.8e-4 at h = -1.127, ai-edge-litert 2.3.0; with the weights "
        "rounded first every other float32 activation is bit for bit the float32 litert). Evidence in "
        "tests/frameworks/test_litert.py", extra_error=0.5 * EPSILON["float16"], scope=("forward",)),
)
