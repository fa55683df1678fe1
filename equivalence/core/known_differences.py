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
  (``scale`` as in ``equivalence.core.tolerance.layer_scale``); the float64 check
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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from equivalence.core.activations import ACTIVATIONS, family_of
from equivalence.core.conditions import AtLeast, Below, Condition, CurrentFacts, Fact, Facts, Probe
from equivalence.core.dtypes import EPSILON
from equivalence.core.kernels import AVX512_ISAS

Excuse = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(z, got) -> mask`` of positions excused; ``z`` is the reference pre-activation (float64)."""


def keras_on(*backends: str) -> Fact:
    return Fact("frameworks.keras.keras_backend", backends, f"Keras on its {' or '.join(backends)} backend")


KERAS_ON_TENSORFLOW = keras_on("tensorflow")
ONEDNN_AT_AVX512 = Fact("kernel.onednn_isa", AVX512_ISAS, "oneDNN at an AVX-512 ISA")
TF_ONEDNN_ON = Fact("frameworks.keras.onednn_enabled", ("on",), "TensorFlow's oneDNN ops on")

PROBES: dict[str, Probe] = {p.name: p for p in (
    Probe("torch_gelu_nan_at_plus_inf", "torch", "gelu", "float32", lambda: np.full(64, np.inf),
          lambda y: bool(np.all(np.isnan(y))), "torch's float32 gelu of 64 x +inf is NaN",
          follows=(ONEDNN_AT_AVX512,)),
    Probe("keras_gelu_nan_at_plus_inf", "keras", "gelu", "float32", lambda: np.full(64, np.inf),
          lambda y: bool(np.all(np.isnan(y))), "Keras' float32 gelu of 64 x +inf is NaN",
          follows=(keras_on("torch"), ONEDNN_AT_AVX512)),
    Probe("keras_softmax_finite_beside_inf", "keras", "softmax", "float32",
          lambda: np.array([[np.inf, 0.0, 1.0]]), lambda y: bool(np.isnan(y[0, 0]) and np.all(np.isfinite(y[0, 1:]))),
          "Keras' float32 softmax of [inf, 0, 1] keeps finite values beside the NaN",
          follows=(KERAS_ON_TENSORFLOW, TF_ONEDNN_ON, ONEDNN_AT_AVX512)),
)}
"""Conditions measured at start-up, each with the named facts it was measured to follow."""

FACTS = CurrentFacts(PROBES)
"""This process's facts (lazy, cached)."""


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

    def active(self, facts: Facts | None = None) -> bool:
        """Whether the entry's conditions hold in ``facts`` (this process's when ``None``)."""
        return all(c.holds(facts or FACTS) for c in self.when)

    def unmet(self, facts: Facts | None = None) -> list[Condition]:
        return [c for c in self.when if not c.holds(facts or FACTS)]

    def conditions(self) -> str:
        return "; ".join(c.describe() for c in self.when) or "always (every kernel path measured)"

    def applies(self, framework: str, activation: str, dtype: str, *, facts: Facts | None = None) -> bool:
        """Whether the entry covers this layer; ``facts``: where the outputs came from (recorded outputs keep
        the facts they were recorded under), this process's when ``None``."""
        return (framework == self.framework and dtype in self.dtypes
                and (activation in self.activations or _parametric_family(activation) in self.families)
                and self.active(facts))


def _parametric_family(activation: str) -> str | None:
    """``"leaky_relu"`` for ``"leaky_relu_0.01"``; None for a name of the fixed table (``"leaky_relu_0.2"``)."""
    if dict.__contains__(ACTIVATIONS, activation) or activation not in ACTIVATIONS:
        return None
    return family_of(activation)[0]


def keras_backend() -> str:
    """The Keras backend of this process: Keras' own ``KERAS_BACKEND`` (the adapter defaults it to tensorflow)."""
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def _row_has_nonfinite(z: np.ndarray, got: np.ndarray) -> np.ndarray:
    return np.broadcast_to(~np.all(np.isfinite(z), axis=-1, keepdims=True), got.shape)


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
        "keras_torch_backend_gelu_nan_at_plus_inf", "keras", ("gelu",), ("float32", "bfloat16"), "excuse",
        "On the torch backend Keras' exact gelu is torch's: NaN at +inf in float32 and bfloat16 where torch's "
        "oneDNN runs at an AVX-512 ISA, as torch_gelu_nan_at_plus_inf",
        excuse=lambda z, got: np.isposinf(z) & np.isnan(got),
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
        "torch_gelu_nan_at_plus_inf", "torch", ("gelu",), ("float32", "bfloat16"), "excuse",
        "torch exact GELU gives NaN at +inf in float32 and bfloat16 on its vectorised path (8 or more "
        "elements; a lone element gives +inf) where its bundled oneDNN runs at an AVX-512 ISA (AVX512_CORE "
        "and up); at AVX2 and below (ONEDNN_MAX_CPU_ISA=AVX2 or SSE41, or an AVX2-only CPU) it gives +inf. "
        "ATEN_CPU_CAPABILITY does not change it. float64, float16 and Keras on TensorFlow give +inf",
        excuse=lambda z, got: np.isposinf(z) & np.isnan(got), when=(PROBES["torch_gelu_nan_at_plus_inf"],)),
    KnownDifference(
        "keras_softmax_nonfinite_rows", "keras", ("softmax",), ("float32", "bfloat16"), "excuse",
        "TF softmax in float32/bfloat16 with TF's oneDNN ops on at an AVX-512 ISA, on a row holding +inf or "
        "NaN, gives finite values at the row's other positions (e.g. [inf, 0, 1] -> [nan, 0, 0]); with "
        "oneDNN off (TF_ENABLE_ONEDNN_OPTS=0, TF's default on an AVX2-only CPU) or on an AVX2-only CPU "
        "whatever the switch, the whole row is NaN, as in torch, float64/float16 and the reference",
        excuse=_row_has_nonfinite, when=(KERAS_ON_TENSORFLOW, PROBES["keras_softmax_finite_beside_inf"])),
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


def extra_error(framework: str, activation: str, dtype: str, *, scope: str = "forward",
                facts: Facts | None = None) -> float:
    """Extra bound (in units of the layer scale) a named difference grants ``framework``.

    ``scope``: ``"forward"`` (layer outputs) or ``"gradient"`` (the backward pass); ``facts``: as in
    ``KnownDifference.applies``.
    """
    return sum(d.extra_error for d in KNOWN_DIFFERENCES
               if d.kind == "extra_error" and scope in d.scope and d.applies(framework, activation, dtype,
                                                                             facts=facts))


def definition(framework: str, activation: str, dtype: str, *,
               facts: Facts | None = None) -> KnownDifference | None:
    """The ``definition`` entry by which ``framework`` computes ``activation`` otherwise, or None."""
    return next((d for d in KNOWN_DIFFERENCES
                 if d.kind == "definition" and d.applies(framework, activation, dtype, facts=facts)), None)


def excused(framework: str, activation: str, dtype: str, z: np.ndarray, got: np.ndarray, *,
            facts: Facts | None = None) -> np.ndarray:
    """Positions where ``framework``'s non-finite class may differ from the reference, by name."""
    mask = np.zeros(np.shape(got), dtype=bool)
    for d in KNOWN_DIFFERENCES:
        if (d.kind == "excuse" and d.applies(framework, activation, dtype, facts=facts)
                and np.shape(z) == np.shape(got)):
            mask |= d.excuse(np.asarray(z), np.asarray(got))
    return mask
