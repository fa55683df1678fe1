"""Measured, named differences between a framework and the float64 reference, and where each holds.

Nothing here is a blanket skip: every entry names one framework, the activations
and dtypes it concerns, exactly what it allows, the conditions under which it holds
(``when``: the Keras backend, the kernel path, versions; ``equivalence.core.conditions``)
and the test that measures it (``tests/test_known_differences.py`` fails the day an
entry stops being true where its conditions hold, so the list cannot silently outlive
the difference; where they do not hold, the entry grants nothing and its evidence
test skips, naming the condition). Measured with torch 2.13.0, TensorFlow 2.21.0,
Keras 3.15.1 and MXNet 1.9.1 (whose evidence lives in ``tests/test_mxnet_quirks.py``: MXNet
needs its own venv, ``make mxnet``), on the kernel paths of ``docs/measurements.md``.

Three kinds:

* ``extra_error``: the framework computes a float64 activation with a float32
  constant (or a float32-sized cut-off), so it is off by a fraction of the
  *float32* epsilon. The per-framework bound grows by ``extra_error * scale``
  (``scale`` as in ``equivalence.core.kinds.Dense.scale``); the float64 check
  stays ~10^7 times tighter than a float32 computation would need.
* ``excuse``: a position whose non-finite class (NaN, +inf, -inf, finite)
  differs from the reference in a documented way.
* ``definition``: the framework computes another function under the same name (Keras 2's
  ``hard_sigmoid`` is ``clip(0.2 z + 0.5, 0, 1)``, Keras 3's and torch's ``relu6(z + 3) / 6``).
  Its outputs are judged against a float64 reference of *its* definition, with the same
  error model (its own largest slope), so a bug in it is still caught; the pair with
  another framework is not compared at that layer (they differ by design, up to 1/12
  here). Golden vectors do not excuse it: an output that moved beyond the error model
  since it was recorded fails ``verify`` whatever each side's definition.
* ``by_design``: a difference the comparison tolerates without any exception,
  because it compares values with an absolute bound (signed zeros, subnormals
  flushed to zero); listed so the evidence is kept and tested.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from equivalence.core.activations import ACTIVATIONS, PARAMETRIC_FAMILIES, family_of
from equivalence.core.adapter import entry_for
from equivalence.core.conditions import AtLeast, Below, Condition, CurrentFacts, Fact, Facts, Probe, Shape
from equivalence.core.dtypes import EPSILON, numpy_dtype
from equivalence.core.kernels import AVX512_ISAS, ONEDNN_ISAS
from equivalence.core.layout import LayerWeights

Excuse = Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]
"""``(z, got, x) -> mask`` of positions excused; ``z`` is the reference pre-activation (float64), ``x`` the
layer's input (None where the caller has none: an excuse that needs it then excuses nothing)."""


def keras_on(*backends: str) -> Fact:
    return Fact("frameworks.keras.keras_backend", backends, f"Keras on its {' or '.join(backends)} backend")


def onednn_from(isa: str, label: str) -> Fact:
    """oneDNN runs at ``isa`` or a higher level (``kernel.onednn_isa``: the CPU's own, capped by ONEDNN_MAX_CPU_ISA)."""
    return Fact("kernel.onednn_isa", ONEDNN_ISAS[ONEDNN_ISAS.index(isa):], label)


KERAS_ON_TENSORFLOW = keras_on("tensorflow")
ONEDNN_AT_AVX512 = Fact("kernel.onednn_isa", AVX512_ISAS, "oneDNN at an AVX-512 ISA")
ONEDNN_AT_AVX512_FP16 = onednn_from("AVX512_CORE_FP16", "oneDNN at AVX512_CORE_FP16 or higher (a CPU with "
                                    "AVX512-FP16, e.g. an Intel Xeon of the Sapphire Rapids class)")
ONEDNN_AT_AMX = onednn_from("AVX512_CORE_AMX", "oneDNN at AVX512_CORE_AMX or higher (a CPU with AMX tiles)")
X86_64 = Fact("kernel.machine", ("x86_64", "AMD64"), "an x86-64 CPU (measured there only; ORT has float16 kernels "
              "of its own on some ARM64 CPUs, where its float16 graphs may not widen)")
TF_ONEDNN_ON = Fact("frameworks.keras.onednn_enabled", ("on",), "TensorFlow's oneDNN ops on")


def _all_nan(activation: str, x: Callable[[], np.ndarray]) -> Callable[[Any, str], bool]:
    """A probe: the framework's ``activation`` of ``x()`` is NaN everywhere."""
    return lambda adapter, dtype: bool(np.all(np.isnan(adapter.activation(activation, x(), dtype))))


def _softmax_finite_beside_inf(adapter: Any, dtype: str) -> bool:
    y = adapter.activation("softmax", np.array([[np.inf, 0.0, 1.0]]), dtype)
    return bool(np.isnan(y[0, 0]) and np.all(np.isfinite(y[0, 1:])))


NAN_LEAK_GRID: tuple[Shape, ...] = ((17, 17, 17), (33, 33, 33), (33, 40, 24), (16, 17, 16), (17, 16, 17), (2, 16, 16),
                                    (9, 9, 9), (64, 64, 64), (20, 21, 8), (40, 24, 8))
"""(batch, in, out): the eight shapes measured on the Intel Xeon (docs/upstream/torch-bfloat16-nan-leak.md), and
two more, one inside and one outside the shape class."""
NAN_LEAK_PLACEMENTS = tuple((row, col) for row in range(3) for col in range(2))
"""Where the probe puts its one NaN, until a row leaks: rows 0-2, columns 0-1 (the Intel measurement placed it at
rows 0-5, columns 0-3; every leaking shape there leaked from rows 1-2, column 0)."""


def nan_leak_shape_class(shape: Shape) -> bool:
    """Where the bfloat16 NaN leak was seen (Intel Xeon, AMX): a batch of 17 rows or more and an odd fan-in.

    Of the eight shapes measured there, (17,17,17) and (33,33,33) leaked, (33,40,24), (16,17,16), (17,16,17),
    (2,16,16), (9,9,9) and (64,64,64) did not: every leaking shape has both, every other lacks one. A kernel
    that reads a K tail padded to a pair of bfloat16 (AMX's VNNI layout) past the row's end would do exactly
    this; the probe checks the class on its grid wherever it runs.
    """
    batch, n_in = shape[0], shape[1]
    return batch >= 17 and n_in % 2 == 1


NAN_LEAK_SHAPE_CLASS = "a batch of 17 rows or more and an odd fan-in"


class NanLeak(NamedTuple):
    """One placement that leaked: the input (float64, values of the dtype), the layer's output, the NaN's row, and
    the weights as the framework stores them (canonical layout)."""

    x: np.ndarray
    got: np.ndarray
    nan_row: int
    weights: LayerWeights


def nan_leak(adapter: Any, shape: Shape, dtype: str, rng: np.random.Generator) -> NanLeak | None:
    """A linear layer of ``shape`` (batch, in, out) fed one NaN per placement (``NAN_LEAK_PLACEMENTS``) until
    another batch row's outputs turn NaN: that placement, or None when none leaks."""
    batch, n_in, n_out = shape
    layer = adapter.build_layer(n_in, n_out, "linear", bias=True, dtype=dtype)
    adapter.set_weights([layer], [LayerWeights(rng.uniform(-1, 1, (n_in, n_out)).astype(np.float32),
                                               rng.uniform(-1, 1, n_out).astype(np.float32))])
    for row, col in NAN_LEAK_PLACEMENTS:
        if row >= batch:
            continue
        x = rng.standard_normal((batch, n_in)).astype(numpy_dtype(dtype)).astype(np.float64)
        x[row, col] = np.nan
        got = adapter.apply_layer([layer], 0, x)
        if np.flatnonzero(np.isnan(got).any(axis=-1)).tolist() != [row]:
            return NanLeak(x, got, row, adapter.get_weights([layer])[0])
    return None


def _nan_leaks_across_rows(adapter: Any, dtype: str) -> tuple[Shape, ...]:
    """The grid shapes where one NaN in the input makes another batch row's outputs NaN (a linear layer)."""
    rng = np.random.default_rng(0)
    return tuple(shape for shape in NAN_LEAK_GRID if nan_leak(adapter, shape, dtype, rng) is not None)


PROBES: dict[str, Probe] = {p.name: p for p in (
    Probe("torch_gelu_nan_at_plus_inf", "torch", "torch's gelu of 64 x +inf is NaN",
          _all_nan("gelu", lambda: np.full(64, np.inf)),
          follows={"float32": (ONEDNN_AT_AVX512,), "bfloat16": (ONEDNN_AT_AVX512,),
                   "float16": (ONEDNN_AT_AVX512_FP16,)},
          legacy_yes=("float32", "bfloat16")),
    Probe("keras_gelu_nan_at_plus_inf", "keras", "Keras' gelu of 64 x +inf is NaN",
          _all_nan("gelu", lambda: np.full(64, np.inf)),
          follows={"float32": (keras_on("torch"), ONEDNN_AT_AVX512), "bfloat16": (keras_on("torch"), ONEDNN_AT_AVX512),
                   "float16": (keras_on("torch"), ONEDNN_AT_AVX512_FP16)},
          legacy_yes=("float32", "bfloat16")),
    Probe("keras_softmax_finite_beside_inf", "keras",
          "Keras' softmax of [inf, 0, 1] keeps finite values beside the NaN",
          _softmax_finite_beside_inf,
          follows={"float32": (KERAS_ON_TENSORFLOW, TF_ONEDNN_ON, ONEDNN_AT_AVX512),
                   "bfloat16": (KERAS_ON_TENSORFLOW, TF_ONEDNN_ON, ONEDNN_AT_AVX512)},
          open_dtypes=("float16",), legacy_yes=("float32", "bfloat16")),
    Probe("torch_linear_nan_leaks_across_rows", "torch",
          "torch's linear layer turns a batch row NaN when another row holds a NaN",
          _nan_leaks_across_rows, follows={"bfloat16": (ONEDNN_AT_AMX,)}, open_dtypes=("float16",),
          shape_class=nan_leak_shape_class, shape_class_label=NAN_LEAK_SHAPE_CLASS),
)}
"""Conditions measured at start-up: each probe's scope (dtypes, and shapes where they matter), with the named facts
it was measured to follow per dtype. ``open_dtypes``: measured nowhere it could show (float16 on a CPU with
AVX512-FP16 kernels, say), so the probe alone decides there and a find is reported as new, not as a contradiction."""

FACTS = CurrentFacts(PROBES)
"""This process's facts (lazy, cached)."""


def runs_on(framework: str) -> str | None:
    """The framework whose ops ``framework`` runs (its registry entry's ``runs_on``), whose entries cover it too:
    Keras on TensorFlow through ``tf.function`` and XLA compute Keras' activations with the same float32
    constants, inductor compiles torch's own definitions (softplus' threshold 20), as does a torch.export program
    (its graph calls the same ATen ops). LiteRT runs its own kernels, not TensorFlow's."""
    entry = entry_for(framework)
    return entry.runs_on if entry is not None else None


@dataclass(frozen=True)
class KnownDifference:
    name: str
    framework: str
    activations: tuple[str, ...]
    dtypes: tuple[str, ...]
    kind: str  # "extra_error" | "excuse" | "definition" | "by_design"
    evidence: str
    extra_error: float = 0.0
    excuse: Excuse | None = None
    scope: tuple[str, ...] = ("forward", "gradient")
    families: tuple[str, ...] = ()
    """Parametric activation families (``equivalence.core.activations.PARAMETRIC_FAMILIES``) it covers at every
    parameter, e.g. ``"leaky_relu"``: ``leaky_relu_0.01``, ``leaky_relu_0.3``, ... (not the fixed table's names)."""
    when: tuple[Condition, ...] = ()
    """Every condition must hold for the entry to apply; empty: on every kernel path measured."""
    definition: Callable[[np.ndarray], np.ndarray] | None = None
    """``definition`` entries: the framework's own function, float64 numpy (``z -> h``)."""
    definition_slope: float = 0.0
    """``definition`` entries: its largest slope (the error model's ``slope``)."""
    native_bias_shift: float = 0.0
    """``native_weights`` scope: the framework stores the bias plus this (a converter folding the activation's
    shift into the layer), in its storage dtype."""
    layer_kinds: tuple[str, ...] = ()
    """The layer kinds (``Kind.name``: ``"batchnorm"``, ``"conv"``, ...) it is limited to; empty: every kind."""
    whole_graph_computes_in: str | None = None
    """``whole_graph`` scope: the dtype the framework's whole-model graph computes in, rounding to the layer
    dtype only at its output (so the model's own forward is its layers chained in that dtype, not in the
    layer dtype; each layer alone still rounds at its output)."""

    def active(self, facts: Facts | None = None, dtype: str | None = None) -> bool:
        """Whether the entry's conditions hold in ``facts`` (this process's when ``None``); with ``dtype``, there
        (a probe's measured scope is per dtype)."""
        return all(c.holds(facts or FACTS, dtype) for c in self.when)

    def unmet(self, facts: Facts | None = None, dtype: str | None = None) -> list[Condition]:
        return [c for c in self.when if not c.holds(facts or FACTS, dtype)]

    def conditions(self) -> str:
        return "; ".join(c.describe() for c in self.when) or "always (every kernel path measured)"

    def applies(self, framework: str, activation: str, dtype: str, *, facts: Facts | None = None) -> bool:
        """Whether the entry covers this layer; ``facts``: where the outputs came from (recorded outputs keep
        the facts they were recorded under), this process's when ``None``."""
        return (self.framework in (framework, runs_on(framework)) and dtype in self.dtypes
                and (activation in self.activations or _parametric_family(activation) in self.families)
                and self.active(facts, dtype))


def _parametric_family(activation: str) -> str | None:
    """``"leaky_relu"`` for ``"leaky_relu_0.01"``; None for a name of the fixed table (``"leaky_relu_0.2"``)."""
    if dict.__contains__(ACTIVATIONS, activation) or activation not in ACTIVATIONS:
        return None
    return family_of(activation)[0]


def keras_backend() -> str:
    """The Keras backend of this process: Keras' own ``KERAS_BACKEND`` (the adapter defaults it to tensorflow)."""
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def _row_has_nonfinite(z: np.ndarray, got: np.ndarray, x: np.ndarray | None) -> np.ndarray:
    return np.broadcast_to(~np.all(np.isfinite(z), axis=-1, keepdims=True), got.shape)


def _nan_leaked_from_another_row(z: np.ndarray, got: np.ndarray, x: np.ndarray | None) -> np.ndarray:
    """The NaN outputs of rows whose input and reference are all finite, in a batch where another row's input
    holds a NaN, for a layer of the leak's shape class; nothing else."""
    mask = np.zeros(np.shape(got), dtype=bool)
    if x is None or np.ndim(x) != 2 or np.ndim(got) != 2 or not nan_leak_shape_class((*np.shape(x), got.shape[-1])):
        return mask
    if not np.isnan(x).any():
        return mask
    clean = np.all(np.isfinite(x), axis=-1) & np.all(np.isfinite(z), axis=-1)
    return np.isnan(got) & clean[:, None]


FLOAT32_MATMUL = 8.0 * EPSILON["float32"]
"""A float32 matmul (or activation) behind a float64 layer: the float32 error model (``tolerance.SAFETY``
eps32 of the scale)."""

_FLOAT32_CONSTANT = 0.25 * EPSILON["float32"]
"""A float32-rounded constant is off by at most eps32/2 relative; measured at most 0.125 eps32 of
``max(1, |h|)`` (leaky slope: exactly the rounding of 0.2). 0.25 eps32 leaves 2x headroom."""

KERAS_2 = Below("frameworks.keras.keras", "3.0", "Keras 2 (tf-keras, TF_USE_LEGACY_KERAS=1)")


def keras2_hard_sigmoid(z: np.ndarray) -> np.ndarray:
    """Keras 2's ``hard_sigmoid``: ``clip(0.2 z + 0.5, 0, 1)`` (tf-keras ``backend.hard_sigmoid``)."""
    return np.clip(0.2 * np.asarray(z, dtype=np.float64) + 0.5, 0.0, 1.0)


KNOWN_DIFFERENCES: tuple[KnownDifference, ...] = (
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
        "tests/test_own_norm_models.py on KERAS_BACKEND=jax: a float64 BatchNormalization off by ratio 2.0e7 of "
        "the float64 bound (on torch the float64 matmul entry had covered it)",
        extra_error=FLOAT32_MATMUL, layer_kinds=("batchnorm", "layernorm"), when=(keras_on("jax", "torch"),)),
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
        extra_error=_FLOAT32_CONSTANT,
        when=(KERAS_ON_TENSORFLOW, AtLeast("frameworks.keras.keras", "3.3.3", "Keras 3.3.3 or newer"))),
    KnownDifference(
        "keras2_float64_gelu_float32_constant", "keras", ("gelu", "gelu_tanh"), ("float64",), "extra_error",
        "Keras 2 (tf-keras 2.16.0 and 2.21.0) gelu in float64 is off by 5.0e-9 (exact) and 1.8e-10 (tanh) "
        "from float64 math: "
        "float32 constants, as Keras 3.3.3 and later. Found by verifying and recording the shipped golden vectors "
        "under TF_USE_LEGACY_KERAS=1",
        extra_error=_FLOAT32_CONSTANT, when=(KERAS_ON_TENSORFLOW, KERAS_2)),
    KnownDifference(
        "keras_float64_leaky_relu_float32_slope", "keras", ("leaky_relu_0.2",), ("float64",), "extra_error",
        "TF LeakyRelu's alpha is a float32 attribute: the float64 slope is 0.20000000298, "
        "1.49e-8 relative", extra_error=_FLOAT32_CONSTANT, when=(KERAS_ON_TENSORFLOW,)),
    KnownDifference(
        "keras_float64_leaky_relu_float32_any_slope", "keras", (), ("float64",), "extra_error",
        "the same float32 alpha at every other slope (a user's LeakyReLU(0.01) or (0.3)): float32(slope) is off by "
        "at most eps32/2 relative, and |slope * z| is at most the layer scale, so eps32/2 of the scale",
        extra_error=0.5 * EPSILON["float32"], families=("leaky_relu",), when=(KERAS_ON_TENSORFLOW,)),
    KnownDifference(
        "torch_float64_softplus_threshold_20", "torch", ("softplus",), ("float64",), "extra_error",
        "nn.Softplus(threshold=20) returns x above 20, dropping log1p(exp(-x)) <= 2.1e-9, "
        "far below float32's resolution but 10^6 eps64 at x = 20", extra_error=_FLOAT32_CONSTANT,
        scope=("forward",)),
    KnownDifference(
        "torch_float64_hard_sigmoid_backward_float32_sixth", "torch", ("hard_sigmoid",), ("float64",),
        "extra_error",
        "torch's float64 Hardsigmoid backward multiplies by 1/6 rounded to float32 (0.16666667163), "
        "2.98e-8 relative (eps32/4); its forward pass is exact. Keras' is exact.",
        extra_error=0.5 * EPSILON["float32"], scope=("gradient",)),
    KnownDifference(
        "keras_torch_backend_float64_softplus_threshold_20", "keras", ("softplus",), ("float64",), "extra_error",
        "On the torch backend Keras' softplus is torch's (threshold 20): softplus(20.5) is 20.5, off by 1.25e-9 "
        "from float64 math, the same as torch_float64_softplus_threshold_20", extra_error=_FLOAT32_CONSTANT,
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
        "mxnet_float64_erf_backward_float32_constant", "mxnet", ("gelu",), ("float64",), "extra_error",
        "MXNet's float64 erf backward is float32-accurate: 2/sqrt(pi) exp(-x^2) off by up to 3.0e-8 relative "
        "(0.252 eps32, over [-6, 6]); gelu's gradient by 7.3e-9 at x = 1. The forward is float64-exact. "
        "Evidence in tests/test_mxnet_quirks.py", extra_error=0.5 * EPSILON["float32"], scope=("gradient",)),
    KnownDifference(
        "mxnet_float64_softrelu_threshold_20", "mxnet", ("softplus",), ("float64",), "extra_error",
        "MXNet's float64 Activation('softrelu') returns x above 20 (like torch's threshold=20), dropping "
        "log1p(exp(-x)) <= 2.1e-9. Evidence in tests/test_mxnet_quirks.py", extra_error=_FLOAT32_CONSTANT,
        scope=("forward",)),
    KnownDifference(
        "torch_gelu_nan_at_plus_inf", "torch", ("gelu",), PROBES["torch_gelu_nan_at_plus_inf"].candidate_dtypes,
        "excuse",
        "torch exact GELU gives NaN at +inf on its vectorised path (8 or more elements; a lone element gives "
        "+inf) in the dtypes the probe finds: float32 and bfloat16 where its bundled oneDNN runs at an AVX-512 "
        "ISA (AVX512_CORE and up; AMD EPYC with AVX-512, Intel Xeon with AMX), float16 too where it runs at "
        "AVX512_CORE_FP16 and up (the Intel Xeon, measured; not the AMD EPYC at AVX512_CORE_BF16). At AVX2 and "
        "below (ONEDNN_MAX_CPU_ISA=AVX2 or SSE41, or an AVX2-only CPU) it gives +inf. ATEN_CPU_CAPABILITY does "
        "not change it. float64 and Keras on TensorFlow give +inf everywhere measured",
        excuse=lambda z, got, x: np.isposinf(z) & np.isnan(got), when=(PROBES["torch_gelu_nan_at_plus_inf"],)),
    KnownDifference(
        "torch_bfloat16_linear_nan_leaks_across_rows", "torch", tuple(ACTIVATIONS),
        PROBES["torch_linear_nan_leaks_across_rows"].candidate_dtypes, "excuse",
        "torch 2.13.0's bfloat16 nn.Linear / F.linear on an Intel Xeon with AMX (oneDNN at AVX512_CORE_AMX) "
        "turns a whole batch row NaN when another row of the input holds a NaN, for some shapes: one NaN placed "
        "at rows 0-5, columns 0-3 (24 placements), (batch, in, out) (17,17,17) leaked in 5 of 24, (33,33,33) in "
        "20 of 24; (33,40,24), (16,17,16), (17,16,17), (2,16,16), (9,9,9), (64,64,64) in none; the same with a "
        "contiguous weight, a transposed view and nn.Linear; an inf stayed in its row. Not seen on the AMD EPYC "
        "with AVX-512 (AVX512_CORE_BF16) nor with AVX2. A torch bug (reproduction: "
        "docs/upstream/torch-bfloat16-nan-leak.md); the excuse covers exactly the NaN outputs of rows whose "
        "input and reference are finite, beside a row holding a NaN, at layers of the shape class ("
        + NAN_LEAK_SHAPE_CLASS + ")",
        excuse=_nan_leaked_from_another_row, families=PARAMETRIC_FAMILIES, scope=("forward",),
        when=(PROBES["torch_linear_nan_leaks_across_rows"],)),
    KnownDifference(
        "keras_softmax_nonfinite_rows", "keras", ("softmax",),
        PROBES["keras_softmax_finite_beside_inf"].candidate_dtypes, "excuse",
        "TF softmax in float32/bfloat16 with TF's oneDNN ops on at an AVX-512 ISA, on a row holding +inf or "
        "NaN, gives finite values at the row's other positions (e.g. [inf, 0, 1] -> [nan, 0, 0]); with "
        "oneDNN off (TF_ENABLE_ONEDNN_OPTS=0, TF's default on an AVX2-only CPU) or on an AVX2-only CPU "
        "whatever the switch, the whole row is NaN, as in torch, float64/float16 and the reference (float16 "
        "measured on the AMD EPYC only: the probe decides it on a CPU with AVX512-FP16)",
        excuse=_row_has_nonfinite, when=(KERAS_ON_TENSORFLOW, PROBES["keras_softmax_finite_beside_inf"])),
    KnownDifference(
        "ort_float64_celu_in_float32", "ort", ("celu",), ("float64",), "extra_error",
        "ONNX Celu is defined for float32 only, so torch.onnx.export (dynamo=False, opset 20) wraps a float64 "
        "CELU in Cast(float32) -> Celu -> Cast(float64): ORT computes it in float32, every output float32-exact, "
        "off by up to 0.59 eps32 of max(1, |h|) over [-50, 50] (torch 2.13.0, ORT 1.32.0). The float16 graph "
        "is refused instead (ORT names the type). Evidence in tests/test_runtimes.py",
        extra_error=FLOAT32_MATMUL),
    KnownDifference(
        "ort_float64_gelu_tanh_float32_constant", "ort", ("gelu_tanh",), ("float64",), "extra_error",
        "ORT 1.32.0's float64 Gelu(approximate='tanh') kernel (what torch.onnx.export writes for "
        "nn.GELU('tanh') at opset 20) is off by up to 0.049 eps32 (5.8e-9 at x = -1.41) from float64 math: "
        "float32 constants, like Keras' (keras_float64_gelu_float32_constant). Evidence in tests/test_runtimes.py",
        extra_error=_FLOAT32_CONSTANT),
    KnownDifference(
        "ort_float16_graph_computes_in_float32", "ort", tuple(ACTIVATIONS), ("float16",), "by_design",
        "ORT's CPU provider computes a float16 graph in float32: it wraps the float16 nodes in Casts and drops "
        "each Cast(float16) -> Cast(float32) pair between them, at every graph optimisation level. A one-layer "
        "graph rounds at its output like any float16 layer, but the whole stack's graph rounds only once, at "
        "the end: bit for bit the float32 chain of its float16 weights, rounded to float16 (every activation "
        "ORT runs in float16, 15 seeds each; 1 ulp off the float16 chain in 8-15 of 15; ORT 1.32.0). "
        "Evidence in tests/test_runtimes.py", scope=("whole_graph",), whole_graph_computes_in="float32",
        families=PARAMETRIC_FAMILIES, when=(X86_64,)),
    KnownDifference(
        "keras_xla_whole_model_fuses_across_layers", "keras_xla", tuple(ACTIVATIONS),
        ("float64", "float32", "float16", "bfloat16"),
        "by_design",
        "XLA compiles the whole model as one program, so its own forward is not bit for bit the chain of the "
        "layers compiled one by one: a float64 sigmoid -> tanh stack (1 -> 4 -> 1) lands 1 ulp away, and "
        "hypothesis found a float32 sigmoid stack (16 -> 16 -> 1) 1 ulp away; within 0.08 of the last layer's "
        "error bound over 120 random stacks of every dtype, 2 of 36 float64 ones off, none of the others "
        "(TF 2.21.0, Keras 3.15.1). Evidence in tests/test_runtimes.py",
        scope=("whole_graph",), families=PARAMETRIC_FAMILIES),
    KnownDifference(
        "litert_hard_sigmoid_folded_into_bias", "litert", ("hard_sigmoid",), ("float32",), "by_design",
        "TFLiteConverter (TensorFlow 2.21.0) folds hard_sigmoid's relu6(z + 3) / 6 into the layer: "
        "FULLY_CONNECTED with a fused RELU6 whose bias buffer holds float32(b + 3), then MUL 1/6. So the "
        "weights LiteRT stores are not the ones written; no other activation is folded (all 19 measured, "
        "ai-edge-litert 2.3.0). Evidence in tests/test_litert.py", scope=("native_weights",),
        native_bias_shift=3.0),
    KnownDifference(
        "litert_whole_model_folds_across_layers", "litert", tuple(ACTIVATIONS), ("float32",), "by_design",
        "TFLiteConverter converts the whole model as one graph and folds across layers (a linear layer into the "
        "next), so the converted model is not bit for bit its layers converted one by one: a linear -> sigmoid "
        "stack (1 -> 1 -> 1) 1 ulp off in float32; with float16 weights the folded weights are rounded once, "
        "3.3e-5 off, within the last layer's bound plus each layer's weight rounding term (ai-edge-litert "
        "2.3.0, TF 2.21.0). Evidence in tests/test_litert.py", scope=("whole_graph",),
        families=PARAMETRIC_FAMILIES),
    KnownDifference(
        "litert_float32_softplus_overflows_above_88", "litert", ("softplus",), ("float32",), "excuse",
        "LiteRT has no SOFTPLUS builtin: TFLiteConverter (TensorFlow 2.21.0) writes Keras' softplus as "
        "LOG(ADD(EXP(z), 1)), and LiteRT's EXP overflows from z = 88.377 (measured; ln(float32 max) is 88.72), "
        "so softplus gives +inf instead of z above it (ai-edge-litert 2.3.0; litert_fp16w too). Found by the "
        "suite: softplus(99.83) = inf. mish, built the same way, stays finite "
        "(tanh(inf) = 1). Evidence in tests/test_litert.py",
        excuse=lambda z, got, x: (z > 88.0) & np.isposinf(got)),
    KnownDifference(
        "litert_fp16w_hard_sigmoid_shift_in_float16_bias", "litert_fp16w", ("hard_sigmoid",), ("float32",),
        "extra_error",
        "TFLiteConverter (TensorFlow 2.21.0) folds hard_sigmoid's relu6(z + 3) / 6 into the layer: the bias "
        "buffer holds b + 3 (FULLY_CONNECTED with a fused RELU6, then MUL 1/6), and float16 weight quantisation "
        "rounds b + 3, not b: up to eps16/2 * 3 more in z, eps16/2 * 3 / 6 = eps16/4 in the output. Measured "
        "with ai-edge-litert 2.3.0: a 8-8 layer at input scale 0.01 was off by 2.75x the weight-rounding bound. "
        "The MUL's 1/6 is a float16 constant too: eps16/2 of |h| more. Evidence in tests/test_litert.py",
        extra_error=0.5 * EPSILON["float16"] * (3 / 6 + 1), scope=("forward",)),
    KnownDifference(
        "litert_fp16w_selu_constants_in_float16", "litert_fp16w", ("selu",), ("float32",), "extra_error",
        "float16 weight quantisation rounds every float32 constant of the graph, not only the weights: selu's "
        "scale 1.0507 and scale * alpha 1.7581 (MUL constants) become float16, eps16/2 relative, so the output "
        "is off by up to eps16/2 of |h| (measured 1.8e-4 at h = -1.127, ai-edge-litert 2.3.0; with the weights "
        "rounded first every other float32 activation is bit for bit the float32 litert). Evidence in "
        "tests/test_litert.py", extra_error=0.5 * EPSILON["float16"], scope=("forward",)),
    KnownDifference(
        "torch_compile_whole_model_compiles_differently", "torch_compile", tuple(ACTIVATIONS),
        ("float64", "float32", "float16", "bfloat16"), "by_design",
        "torch.compile compiles the whole model as one graph, its kernels chosen for it, so its own forward is "
        "not bit for bit the chain of the layers compiled one by one: hypothesis found a one-layer float32 tanh "
        "model (1 -> 2) 1 ulp off its compiled layer (torch 2.13.0, inductor, dynamic shapes), within the last "
        "layer's bound; it depends on what the process compiled before and does not reproduce alone. Evidence "
        "(the bound, across shapes compiled in turn) in tests/test_runtimes.py", scope=("whole_graph",),
        families=PARAMETRIC_FAMILIES),
    KnownDifference(
        "tf_flushes_subnormals", "keras", ("softplus", "mish"), ("float32",), "by_design",
        "TF flushes float32 subnormals to zero: softplus(-100) is 3.8e-44 in torch and 0 in Keras, "
        "mish(-100) -3.8e-42 and -0; an absolute difference far inside any bound", when=(KERAS_ON_TENSORFLOW,)),
    KnownDifference(
        "signed_zeros", "keras", ("relu", "relu6", "celu"), ("float32", "float64"), "by_design",
        "relu(-0.0) is -0.0 in torch and +0.0 in Keras on its vectorised path (also relu6, celu); "
        "the comparison compares zeros by value", when=(KERAS_ON_TENSORFLOW,)),
)


def active(facts: Facts | None = None) -> tuple[KnownDifference, ...]:
    """The entries whose conditions hold in ``facts`` (this process's when ``None``)."""
    return tuple(d for d in KNOWN_DIFFERENCES if d.active(facts))


def whole_graph_difference(framework: str, activations: Sequence[str], dtype: str, *,
                           facts: Facts | None = None) -> KnownDifference | None:
    """The ``whole_graph`` entry that covers every layer of ``framework``'s stack of ``activations``: its own
    forward is then not bit for bit its chained layers (``whole_graph_computes_in`` says what it is instead;
    unset, it agrees with them within the last layer's error model). None: bit for bit."""
    return next((d for d in KNOWN_DIFFERENCES if "whole_graph" in d.scope
                 and all(d.applies(framework, a, dtype, facts=facts) for a in activations)), None)


def native_bias_shift(framework: str, activation: str, dtype: str) -> float:
    """What ``framework`` adds to a layer's bias in the weights it stores (``native_weights`` entries); 0: none."""
    return sum(d.native_bias_shift for d in KNOWN_DIFFERENCES
               if "native_weights" in d.scope and d.applies(framework, activation, dtype))


def extra_error(framework: str, activation: str, dtype: str, *, scope: str = "forward",
                facts: Facts | None = None, layer_kind: str = "dense") -> float:
    """Extra bound (in units of the layer scale) a named difference grants ``framework``.

    ``scope``: ``"forward"`` (layer outputs) or ``"gradient"`` (the backward pass); ``facts``: as in
    ``KnownDifference.applies``; ``layer_kind``: the layer's ``Kind.name`` (an entry limited to other kinds grants
    nothing).
    """
    return sum(d.extra_error for d in KNOWN_DIFFERENCES
               if d.kind == "extra_error" and scope in d.scope and (not d.layer_kinds or layer_kind in d.layer_kinds)
               and d.applies(framework, activation, dtype, facts=facts))


def definition(framework: str, activation: str, dtype: str, *,
               facts: Facts | None = None) -> KnownDifference | None:
    """The ``definition`` entry by which ``framework`` computes ``activation`` otherwise, or None."""
    return next((d for d in KNOWN_DIFFERENCES
                 if d.kind == "definition" and d.applies(framework, activation, dtype, facts=facts)), None)


def excused(framework: str, activation: str, dtype: str, z: np.ndarray, got: np.ndarray, *,
            x: np.ndarray | None = None, facts: Facts | None = None) -> np.ndarray:
    """Positions where ``framework``'s non-finite class may differ from the reference, by name."""
    mask = np.zeros(np.shape(got), dtype=bool)
    for d in KNOWN_DIFFERENCES:
        if (d.kind == "excuse" and d.applies(framework, activation, dtype, facts=facts)
                and np.shape(z) == np.shape(got)):
            mask |= d.excuse(np.asarray(z), np.asarray(got), None if x is None else np.asarray(x))
    return mask
