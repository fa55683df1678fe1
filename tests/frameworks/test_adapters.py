"""Adapters: layouts, shapes, parameter counts and weight round trips, for every framework and style.

Every test here takes ``framework`` (and ``style`` or ``registering_style``): it runs for each selected
registered framework, in each style its registry entry lists (``conftest.py``).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from equivalence.core.case import make_case
from equivalence.core.compare import param_count_problems
from equivalence.core.dtypes import numpy_dtype
from equivalence.core.known_differences import native_bias_shift
from equivalence.core.layout import LayerWeights
from equivalence.core.spec import StackSpec
from equivalence.core.strategies import cases, specs
from tests.helpers import BUILD_EXAMPLES, assert_weights_identical, build_loaded, computable_cases, reference_inputs

NATIVE_KERNEL = {"out_in": lambda n_in, n_out: (n_out, n_in), "in_out": lambda n_in, n_out: (n_in, n_out)}
TO_NATIVE = {"out_in": lambda W: np.ascontiguousarray(W.T), "in_out": lambda W: np.ascontiguousarray(W)}
"""The canonical ``(in, out)`` kernel in the framework's own layout (``Adapter.kernel_layout``)."""


@settings(max_examples=BUILD_EXAMPLES)
@given(case=cases())
def test_shapes_agree(case, framework, style, adapter):
    model = build_loaded(adapter, case, style)
    native = adapter.native_weights(model)
    assert len(native) == case.spec.depth
    for layer, ((n_in, n_out), (W, b), out) in enumerate(
        zip(case.spec.layer_shapes, native, adapter.layer_outputs(model, reference_inputs(case)))
    ):
        where = f"{framework} {style} layer {layer}"
        assert W.shape == NATIVE_KERNEL[adapter.kernel_layout](n_in, n_out), f"{where}: kernel {W.shape}"
        assert (b is None) == (not case.spec.bias), f"{where}: bias presence"
        assert b is None or b.shape == (n_out,), f"{where}: bias {b.shape}"
        assert out.shape == (case.batch, n_out), f"{where}: output {out.shape}"
        assert out.dtype == np.dtype(case.spec.dtype), f"{where}: output dtype {out.dtype}"


@settings(max_examples=BUILD_EXAMPLES)
@given(spec=specs())
def test_parameter_counts_agree(spec, framework, registering_style, adapter):
    """sum(in*out + out) = torch's requires_grad sum = Keras count_params() = Gluon's trainable parameters,
    2 tensors a layer."""
    problems = param_count_problems(spec, adapter.count_params(adapter.build(spec, registering_style)),
                                    framework=framework)
    assert not problems, "; ".join(problems)


def test_the_plain_list_trap_is_caught_by_the_parameter_check(torch_adapter):
    """The seed notes' plain python list: forward runs, but torch registers nothing."""
    spec = StackSpec(3, (4, 5, 6))
    model = torch_adapter.build(spec, "plain_list")
    count = torch_adapter.count_params(model)
    assert count.per_layer == (16, 25, 36)  # each Linear is fine on its own
    problems = param_count_problems(spec, count, framework="torch")
    assert any("total trainable parameters 0, expected 77 (layers held in a plain python list" in p
               for p in problems), problems
    assert any("0 trainable tensors, expected 6" in p for p in problems), problems


@settings(max_examples=BUILD_EXAMPLES)
@given(data=st.data())
def test_weights_written_are_read_back_bit_for_bit_and_stored_in_the_native_layout(data, framework, style, adapter):
    """In every dtype the framework computes; natively, the kernel is the canonical one in the framework's
    layout (torch and Gluon: the transpose), byte for byte, in the spec's dtype."""
    case = data.draw(computable_cases(adapter), label="case")
    model = build_loaded(adapter, case, style)
    what = f"{framework} {style} {case.spec.dtype}"
    assert_weights_identical(got=adapter.get_weights(model), expected=case.weights, what=what)
    to_native = TO_NATIVE[adapter.kernel_layout]
    stored = numpy_dtype(adapter.weights_dtype or case.spec.dtype)  # LiteRT's float16 weights: rounded to nearest
    for layer, ((W, b), (native_W, native_b)) in enumerate(zip(case.weights, adapter.native_weights(model))):
        assert native_W.dtype == stored, f"{what} layer {layer}: native dtype {native_W.dtype}, but should be {stored}"
        assert native_W.tobytes() == to_native(W).astype(stored).tobytes(), \
            f"{what} layer {layer}: native kernel is not the canonical one in {adapter.kernel_layout} layout"
        shift = native_bias_shift(framework, case.spec.activations[layer], case.spec.dtype)  # a folded activation
        if shift:  # a named difference: the stored bias is b + shift, a layer without bias gets one
            b = (np.zeros(W.shape[1], W.dtype) if b is None else b) + W.dtype.type(shift)
        assert (b is None) == (native_b is None), f"{what} layer {layer}: bias presence"
        assert b is None or native_b.tobytes() == b.astype(stored).tobytes(), \
            f"{what} layer {layer}: bias" + (f" (+ {shift}, a named difference)" if shift else "")


def test_a_bad_weight_list_is_refused_before_anything_is_written(framework, style, adapter):
    case = make_case(StackSpec(4, (4, 3)), seed=3, batch=2)
    model = build_loaded(adapter, case, style)
    before = adapter.get_weights(model)
    other = make_case(case.spec, seed=4, batch=2).weights
    bad = [other[0], (other[1].W.T, other[1].b)]  # layer 0 fine, layer 1 transposed (3, 4)
    with pytest.raises(ValueError, match=rf"{framework} set_weights: layer 1 kernel has shape \(3, 4\), "
                                         r"expected \(4, 3\)"):
        adapter.set_weights(model, bad)
    assert_weights_identical(got=adapter.get_weights(model), expected=before, what="after a refused write")


def test_a_missing_bias_and_an_extra_bias_are_refused(framework, style, adapter):
    case = make_case(StackSpec(3, (2,)), seed=1, batch=1)
    model = build_loaded(adapter, case, style)
    with pytest.raises(ValueError, match=rf"{framework} set_weights: layer 0 has no bias, but the target layer "
                                         r"has one of shape \(2,\)"):
        adapter.set_weights(model, [LayerWeights(case.weights[0].W, None)])
    assert_weights_identical(got=adapter.get_weights(model), expected=case.weights, what="after a refused write")
    no_bias = adapter.build(StackSpec(3, (2,), bias=False), style)
    with pytest.raises(ValueError, match=rf"{framework} set_weights: layer 0 has a bias of shape \(2,\), but the "
                                         r"target layer has none"):
        adapter.set_weights(no_bias, case.weights)
