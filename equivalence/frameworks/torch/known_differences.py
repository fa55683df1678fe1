"""torch's measured differences, and those of what runs torch's modules (ONNX Runtime on its export,
torch.compile): the entries (``equivalence.core.known_differences.KnownDifference``), their probes, and the
shape class of the bfloat16 NaN leak (its reproduction, shared with TensorFlow's, is core's ``nan_leak``).
Data only: nothing here imports torch; the registry entries (``equivalence.frameworks.builtin``) carry them to
the core.
"""

from __future__ import annotations

import numpy as np

from equivalence.core.activations import ACTIVATIONS, PARAMETRIC_FAMILIES
from equivalence.core.conditions import ONEDNN_AT_AMX, ONEDNN_AT_AVX512, ONEDNN_AT_AVX512_FP16, Fact, Probe, Shape
from equivalence.core.dtypes import EPSILON
from equivalence.core.known_differences import FLOAT32_CONSTANT, FLOAT32_MATMUL, KnownDifference, all_nan
from equivalence.core.nan_leak import nan_leaked_from_another_row, nan_leaks_on

X86_64 = Fact("kernel.machine", ("x86_64", "AMD64"), "an x86-64 CPU (measured there only; ORT has float16 kernels "
              "of its own on some ARM64 CPUs, where its float16 graphs may not widen)")

NAN_LEAK_GRID: tuple[Shape, ...] = ((17, 17, 17), (33, 33, 33), (33, 40, 24), (16, 17, 16), (17, 16, 17), (2, 16, 16),
                                    (9, 9, 9), (64, 64, 64), (20, 21, 8), (40, 24, 8))
"""(batch, in, out): the eight shapes measured on the Intel Xeon (docs/upstream/torch-bfloat16-nan-leak.md), and
two more, one inside and one outside the shape class."""


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


PROBES: dict[str, Probe] = {p.name: p for p in (
    Probe("torch_gelu_nan_at_plus_inf", "torch", "torch's gelu of 64 x +inf is NaN",
          all_nan("gelu", lambda: np.full(64, np.inf)),
          follows={"float32": (ONEDNN_AT_AVX512,), "bfloat16": (ONEDNN_AT_AVX512,),
                   "float16": (ONEDNN_AT_AVX512_FP16,)},
          legacy_yes=("float32", "bfloat16")),
    Probe("torch_linear_nan_leaks_across_rows", "torch",
          "torch's linear layer turns a batch row NaN when another row holds a NaN",
          nan_leaks_on(NAN_LEAK_GRID), follows={"bfloat16": (ONEDNN_AT_AMX,)}, open_dtypes=("float16",),
          shape_class=nan_leak_shape_class, shape_class_label=NAN_LEAK_SHAPE_CLASS),
)}
"""torch's start-up probes (``equivalence.core.conditions.Probe``)."""

TORCH: tuple[KnownDifference, ...] = (
    KnownDifference(
        "torch_float64_softplus_threshold_20", "torch", ("softplus",), ("float64",), "extra_error",
        "nn.Softplus(threshold=20) returns x above 20, dropping log1p(exp(-x)) <= 2.1e-9, "
        "far below float32's resolution but 10^6 eps64 at x = 20", extra_error=FLOAT32_CONSTANT,
        scope=("forward",)),
    KnownDifference(
        "torch_float64_hard_sigmoid_backward_float32_sixth", "torch", ("hard_sigmoid",), ("float64",),
        "extra_error",
        "torch's float64 Hardsigmoid backward multiplies by 1/6 rounded to float32 (0.16666667163), "
        "2.98e-8 relative (eps32/4); its forward pass is exact. Keras' is exact.",
        extra_error=0.5 * EPSILON["float32"], scope=("gradient",)),
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
        "torch 2.13.0's bfloat16 nn.Linear / F.linear on an Intel Xeon with AMX (oneDNN at AVX512_CORE_AMX) turns a "
        "whole batch row NaN when another row of the input holds a NaN, for some shapes: one NaN placed at rows 0-5, "
        "columns 0-3 (24 placements), (batch, in, out) (17,17,17) leaked in 5 of 24, (33,33,33) in 20 of 24; "
        "(33,40,24), (16,17,16), (17,16,17), (2,16,16), (9,9,9), (64,64,64) in none; the same with a contiguous weight,"
        " a transposed view and nn.Linear; an infinity leaks as a NaN does (found by the suite's NaN/inf property at "
        "(19,15,15): an inf at row 1 made row 0 NaN; 5 of 24 placements of +inf, -inf and NaN alike, 2026-12-05). Not "
        "seen on the AMD EPYC with AVX-512 (AVX512_CORE_BF16) nor with AVX2. A torch bug (reproduction: "
        "docs/upstream/torch-bfloat16-nan-leak.md); the excuse covers exactly the NaN outputs of rows whose input and "
        "reference are finite, beside a row holding a NaN or an infinity, at dense layers of the shape class ("
        + NAN_LEAK_SHAPE_CLASS + ")",
        excuse=nan_leaked_from_another_row(nan_leak_shape_class), families=PARAMETRIC_FAMILIES, scope=("forward",),
        layer_kinds=("dense",),
        when=(PROBES["torch_linear_nan_leaks_across_rows"],)),
)

ORT: tuple[KnownDifference, ...] = (
    KnownDifference(
        "ort_float64_celu_in_float32", "ort", ("celu",), ("float64",), "extra_error",
        "ONNX Celu is defined for float32 only, so torch.onnx.export (dynamo=False, opset 20) wraps a float64 "
        "CELU in Cast(float32) -> Celu -> Cast(float64): ORT computes it in float32, every output float32-exact, "
        "off by up to 0.59 eps32 of max(1, |h|) over [-50, 50] (torch 2.13.0, ORT 1.32.0). The float16 graph "
        "is refused instead (ORT names the type). Evidence in tests/frameworks/test_runtimes.py",
        extra_error=FLOAT32_MATMUL),
    KnownDifference(
        "ort_float64_gelu_tanh_float32_constant", "ort", ("gelu_tanh",), ("float64",), "extra_error",
        "ORT 1.32.0's float64 Gelu(approximate='tanh') kernel (what torch.onnx.export writes for "
        "nn.GELU('tanh') at opset 20) is off by up to 0.049 eps32 (5.8e-9 at x = -1.41) from float64 math: "
        "float32 constants, like Keras' (keras_float64_gelu_float32_constant). Evidence in "
        "tests/frameworks/test_runtimes.py",
        extra_error=FLOAT32_CONSTANT),
    KnownDifference(
        "onnx_float64_norm_epsilon_float32", "ort", tuple(ACTIVATIONS), ("float64",), "extra_error",
        "ONNX stores LayerNormalization's and BatchNormalization's epsilon as a float attribute (float32), so a "
        "float64 norm in an ONNX graph computes with the epsilon rounded to float32: 1e-3 becomes "
        "0.0010000000474974513, moving the normalised value by up to eps32/4 of it (a relative change of epsilon of "
        "at most eps32/2, halved by the square root, weighed by epsilon / (variance + epsilon) <= 1). Measured with "
        "ORT 1.32.0 on float64 rows of variance ~1e-3, epsilon 1e-3: 2.2e-8 (LayerNormalization) and 2.3e-8 "
        "(BatchNormalization) off the norm of epsilon 1e-3, 4e-16 off the one of float32(1e-3). Found by the "
        "residual reader's drawn float64 nets (a torch LayerNorm against its export, ratio 1.9e4 of the float64 "
        "bound). Evidence in tests/frameworks/test_runtimes.py",
        extra_error=FLOAT32_CONSTANT, layer_kinds=("layernorm", "batchnorm")),
    KnownDifference(
        "ort_float16_graph_computes_in_float32", "ort", tuple(ACTIVATIONS), ("float16",), "by_design",
        "ORT's CPU provider computes a float16 graph in float32: it wraps the float16 nodes in Casts and drops "
        "each Cast(float16) -> Cast(float32) pair between them, at every graph optimisation level. A one-layer "
        "graph rounds at its output like any float16 layer, but the whole stack's graph rounds only once, at "
        "the end: bit for bit the float32 chain of its float16 weights, rounded to float16 (every activation "
        "ORT runs in float16, 15 seeds each; 1 ulp off the float16 chain in 8-15 of 15; ORT 1.32.0). "
        "Evidence in tests/frameworks/test_runtimes.py", scope=("whole_graph",), whole_graph_computes_in="float32",
        families=PARAMETRIC_FAMILIES, when=(X86_64,)),
)

TORCH_COMPILE: tuple[KnownDifference, ...] = (
    KnownDifference(
        "torch_compile_whole_model_compiles_differently", "torch_compile", tuple(ACTIVATIONS),
        ("float64", "float32", "float16", "bfloat16"), "by_design",
        "torch.compile compiles the whole model as one graph, its kernels chosen for it, so its own forward is "
        "not bit for bit the chain of the layers compiled one by one: hypothesis found a one-layer float32 tanh "
        "model (1 -> 2) 1 ulp off its compiled layer (torch 2.13.0, inductor, dynamic shapes), within the last "
        "layer's bound; it depends on what the process compiled before and does not reproduce alone. Evidence "
        "(the bound, across shapes compiled in turn) in tests/frameworks/test_runtimes.py", scope=("whole_graph",),
        families=PARAMETRIC_FAMILIES),
)
