"""Adapters: layouts, shapes, parameter counts and weight round trips, per framework and style."""

import numpy as np
import pytest
from hypothesis import given, settings

from equivalence.core.compare import param_count_problems
from equivalence.core.strategies import cases, specs
from equivalence.frameworks.registry import entry, names
from tests.helpers import BUILD_EXAMPLES, assert_weights_identical, build_loaded, reference_inputs

ALL = [(f, s) for f in names() for s in entry(f).styles]
REGISTERING = [(f, s) for f in names() for s in entry(f).registering]
NATIVE_KERNEL = {"out_in": lambda n_in, n_out: (n_out, n_in), "in_out": lambda n_in, n_out: (n_in, n_out)}


def _adapter(request, framework):
    return request.getfixturevalue(f"{framework}_adapter")


@pytest.mark.parametrize(("framework", "style"), ALL, ids=[f"{f}-{s}" for f, s in ALL])
@settings(max_examples=BUILD_EXAMPLES)
@given(case=cases())
def test_shapes_agree(case, framework, style, request):
    adapter = _adapter(request, framework)
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


@pytest.mark.parametrize(("framework", "style"), REGISTERING, ids=[f"{f}-{s}" for f, s in REGISTERING])
@settings(max_examples=BUILD_EXAMPLES)
@given(spec=specs())
def test_parameter_counts_agree(spec, framework, style, request):
    """sum(in*out + out) = torch's requires_grad sum = Keras count_params(), 2 tensors a layer."""
    adapter = _adapter(request, framework)
    problems = param_count_problems(spec, adapter.count_params(adapter.build(spec, style)), framework=framework)
    assert not problems, "; ".join(problems)


def test_the_plain_list_trap_is_caught_by_the_parameter_check(torch_adapter):
    """The seed notes' plain python list: forward runs, but torch registers nothing."""
    from equivalence.core.spec import StackSpec

    spec = StackSpec(3, (4, 5, 6))
    model = torch_adapter.build(spec, "plain_list")
    count = torch_adapter.count_params(model)
    assert count.per_layer == (16, 25, 36)  # each Linear is fine on its own
    problems = param_count_problems(spec, count, framework="torch")
    assert any("total trainable parameters 0, expected 77 (layers held in a plain python list" in p
               for p in problems), problems
    assert any("0 trainable tensors, expected 6" in p for p in problems), problems


@pytest.mark.parametrize(("framework", "style"), ALL, ids=[f"{f}-{s}" for f, s in ALL])
@settings(max_examples=BUILD_EXAMPLES)
@given(case=cases())
def test_weights_written_are_read_back_bit_for_bit(case, framework, style, request):
    adapter = _adapter(request, framework)
    model = build_loaded(adapter, case, style)
    assert_weights_identical(got=adapter.get_weights(model), expected=case.weights, what=f"{framework} {style}")


@pytest.mark.parametrize(("framework", "style"), ALL, ids=[f"{f}-{s}" for f, s in ALL])
def test_a_bad_weight_list_is_refused_before_anything_is_written(framework, style, request):
    from equivalence.core.case import make_case

    adapter = _adapter(request, framework)
    case = make_case(__import__("equivalence").StackSpec(4, (4, 3)), seed=3, batch=2)
    model = build_loaded(adapter, case, style)
    before = adapter.get_weights(model)
    other = make_case(case.spec, seed=4, batch=2).weights
    bad = [other[0], (other[1].W.T, other[1].b)]  # layer 0 fine, layer 1 transposed (3, 4)
    with pytest.raises(ValueError, match=r"layer 1 kernel has shape \(3, 4\), expected \(4, 3\)"):
        adapter.set_weights(model, bad)
    assert_weights_identical(got=adapter.get_weights(model), expected=before, what="after a refused write")
