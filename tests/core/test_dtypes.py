"""dtypes: float64 is checked tightly enough to catch float32 arithmetic, and a mixed Keras policy.

The meta tests patch the *framework* (never this project's code): a float64
layer that silently computes in float32, in either framework, must fail the
property the suite runs, naming the framework and the first layer.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, find, given, settings

from equivalence.core.case import make_case
from equivalence.core.check import LayerPool, check_case
from equivalence.core.compare import compare_layers
from equivalence.core.dtypes import LARGEST, SMALLEST_NORMAL, SMALLEST_SUBNORMAL, numpy_dtype
from equivalence.core.known_differences import FLOAT32_MATMUL, KNOWN_DIFFERENCES, extra_error
from equivalence.core.layout import LayerWeights
from equivalence.core.reference import layerwise_reference
from equivalence.core.spec import StackSpec
from equivalence.core.strategies import ACTIVATION_NAMES, boundary_widths_up_to, cases, specs
from tests.helpers import BFLOAT16, assert_layers_agree, assume_runnable, keras3_only

SEARCH = settings(max_examples=100, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
"""The first failing default example is enough here (no shrinking: it would cost ~20 s a test)."""
FLOAT64_CASES = cases(specs(activations=ACTIVATION_NAMES, dtypes=("float64",)))


def _keras_float64_is_float32_tight() -> bool:
    """Keras on torch multiplies float64 in float32 (a named known difference, with its evidence test),
    so a Keras float64 result can only be held to the float32 error model there."""
    entry = next(d for d in KNOWN_DIFFERENCES if d.name == "keras_float64_matmul_in_float32_off_tensorflow")
    return entry.applies("keras", "linear", "float64")


def _first_float64_layer(framework: str, spec: StackSpec, from_layer: int) -> int | None:
    """The first layer from ``from_layer`` where ``framework``'s float64 is float64: no named float32-sized
    allowance (tanh on Keras' jax backend, everything on its torch backend)."""
    return next((layer for layer, act in enumerate(spec.activations)
                 if layer >= from_layer and extra_error(framework, act, "float64") < FLOAT32_MATMUL), None)


def _expected_failures(framework: str, spec: StackSpec, from_layer: int) -> dict[str, int]:
    """Where a float32 computation injected into ``framework`` from ``from_layer`` on must show: against
    the reference, and against the other framework, each from the first layer held to float64."""
    pairs = {}
    own = _first_float64_layer(framework, spec, from_layer)
    if own is not None:
        pairs[f"{framework} vs reference"] = own
    both = _first_float64_layer("keras", spec, from_layer if own is None else own)
    if own is not None and both is not None:
        pairs["torch vs keras"] = both
    return pairs


def _comparison(case, torch_adapter, keras_adapter, pool):
    return check_case(case, {"torch": (torch_adapter, pool.stack(torch_adapter, case.spec)),
                             "keras": (keras_adapter, pool.stack(keras_adapter, case.spec))})


def _patch_torch_linear_float32(monkeypatch):
    import torch

    original = torch.nn.Linear.forward

    def float32_inside(self, x):
        if x.dtype != torch.float64:
            return original(self, x)
        b = None if self.bias is None else self.bias.float()
        return torch.nn.functional.linear(x.float(), self.weight.float(), b).double()

    monkeypatch.setattr(torch.nn.Linear, "forward", float32_inside)


def _patch_keras_dense_float32(monkeypatch):
    import keras
    from keras import ops

    original = keras.layers.Dense.call

    def float32_inside(self, inputs, **kwargs):  # Dense.call takes training= only in later Keras 3 releases
        if self.compute_dtype != "float64":
            return original(self, inputs, **kwargs)
        x = ops.matmul(ops.cast(inputs, "float32"), ops.cast(self.kernel, "float32"))
        if self.bias is not None:
            x = ops.add(x, ops.cast(self.bias, "float32"))
        return self.activation(ops.cast(x, "float64"))

    monkeypatch.setattr(keras.layers.Dense, "call", float32_inside)


@pytest.mark.parametrize("framework", ["torch", pytest.param("keras", marks=keras3_only)])  # patches Keras 3
def test_a_float64_layer_computed_in_float32_is_caught(framework, monkeypatch, torch_adapter, keras_adapter):
    if framework == "keras" and _keras_float64_is_float32_tight():
        pytest.skip("Keras on this backend already computes float64 Dense in float32 (known difference "
                    "keras_float64_matmul_in_float32_off_tensorflow, measured in test_known_differences)")
    {"torch": _patch_torch_linear_float32, "keras": _patch_keras_dense_float32}[framework](monkeypatch)
    other = "keras" if framework == "torch" else "torch"
    fixed = make_case(StackSpec(3, (4, 4, 2), ("tanh", "gelu", "linear"), dtype="float64"), seed=5, batch=3)
    result = _comparison(fixed, torch_adapter, keras_adapter, LayerPool())
    assert result.failing_pairs() == _expected_failures(framework, fixed.spec, 0), result.message()
    assert result.first_failure((framework, "reference")).ratio > 1e4, result.message()
    pool = LayerPool()
    minimal = find(FLOAT64_CASES, lambda c: not _comparison(c, torch_adapter, keras_adapter, pool).passed,
                   settings=SEARCH)
    found = _comparison(minimal, torch_adapter, keras_adapter, pool)
    assert f"{framework} vs reference" in found.failing_pairs(), found.message()
    assert f"{other} vs reference" not in found.failing_pairs(), found.message()


def test_a_float64_activation_computed_in_float32_is_caught(monkeypatch, torch_adapter, keras_adapter):
    import torch

    original = torch.nn.Sigmoid.forward
    monkeypatch.setattr(torch.nn.Sigmoid, "forward", lambda self, x: original(self, x.float()).to(x.dtype))
    case = make_case(StackSpec(3, (4, 4, 2), ("relu", "sigmoid", "linear"), dtype="float64"), seed=5, batch=3)
    result = _comparison(case, torch_adapter, keras_adapter, LayerPool())
    assert result.failing_pairs() == _expected_failures("torch", case.spec, 1), result.message()


# --- a mixed policy ------------------------------------------------------------

MIXED = "mixed_float16"


@settings(max_examples=20)
@given(case=cases(specs(activations=ACTIVATION_NAMES, max_depth=3, width=boundary_widths_up_to(16))))
def test_a_mixed_float16_keras_stack_computes_a_float16_stack_of_rounded_weights(case, torch_adapter,
                                                                                 keras_adapter):
    """``mixed_float16``: float32 kernels, float16 arithmetic and outputs. Cast the weights and input to
    float16 (what the layer computes with), then compare as a float16 stack, with torch float16 alongside."""
    assume_runnable(case, torch_adapter, keras_adapter)
    layers = [keras_adapter.build_layer(n_in, n_out, act, bias=case.spec.bias, dtype=MIXED)
              for (n_in, n_out), act in zip(case.spec.layer_shapes, case.spec.activations)]
    keras_adapter.set_weights(layers, case.weights)
    for layer, (W, _) in enumerate(keras_adapter.native_weights(layers)):
        assert W.dtype == np.float32, f"layer {layer}: mixed policy kernel is {W.dtype}, expected float32"
    spec16 = StackSpec(case.spec.input_width, case.spec.widths, case.spec.activations, bias=case.spec.bias,
                       dtype="float16")
    f16 = numpy_dtype("float16")
    weights16 = [LayerWeights(W.astype(f16), None if b is None else b.astype(f16)) for W, b in case.weights]
    x16 = case.x.astype(f16)
    inputs = [t.x.astype(f16) for t in layerwise_reference(spec16, weights16, x16)]
    mixed_outputs = [keras_adapter.apply_layer(layers, i, x.astype(np.float32)) for i, x in enumerate(inputs)]
    for layer, out in enumerate(mixed_outputs):
        assert out.dtype == np.float16, f"layer {layer}: mixed policy output is {out.dtype}, expected float16"
    torch16 = LayerPool().stack(torch_adapter, spec16)
    torch_adapter.set_weights(torch16, weights16)
    comparison = compare_layers(spec16, weights16, x16, {"keras": mixed_outputs,
                                                         "torch": torch_adapter.layer_outputs(torch16, inputs)},
                                case_id=f"{case.id}_{MIXED}")
    assert_layers_agree(comparison=comparison, case=case)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", BFLOAT16])
def test_the_written_out_normal_and_subnormal_limits_are_the_dtypes_own(dtype):
    """``SMALLEST_NORMAL`` and ``SMALLEST_SUBNORMAL`` are tables because numpy 1.x's finfo has no bfloat16 (the
    numpy<2 history pairs); they must be what finfo (ml_dtypes' for bfloat16) says."""
    import ml_dtypes

    info = ml_dtypes.finfo(numpy_dtype(dtype)) if dtype == "bfloat16" else np.finfo(numpy_dtype(dtype))
    assert SMALLEST_NORMAL[dtype] == float(info.smallest_normal)
    assert SMALLEST_SUBNORMAL[dtype] == float(info.smallest_subnormal)
    assert LARGEST[dtype] == float(info.max)
