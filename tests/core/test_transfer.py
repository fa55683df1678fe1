"""Weights cross between frameworks exactly, and the transpose lives in one place; a mismatch is refused."""

import numpy as np
import pytest
from hypothesis import given, settings

from equivalence.core.case import make_case
from equivalence.core.check import check_case
from equivalence.core.layout import LayerWeights
from equivalence.core.spec import StackSpec
from equivalence.core.strategies import cases
from equivalence.core.transfer import transfer
from equivalence.frameworks.registry import entry
from tests.helpers import BUILD_EXAMPLES, assert_weights_identical, build_loaded, reference_inputs
from tests.stats import count_cross_framework_case

STYLE_PAIRS = list(zip(entry("torch").styles, entry("keras").styles))
IDS = [f"{t}-{k}" for t, k in STYLE_PAIRS]


@pytest.mark.parametrize(("torch_style", "keras_style"), STYLE_PAIRS, ids=IDS)
@settings(max_examples=BUILD_EXAMPLES)
@given(case=cases())
def test_torch_to_keras_copies_the_transpose_bit_for_bit(case, torch_style, keras_style, torch_adapter,
                                                         keras_adapter):
    source = build_loaded(torch_adapter, case, torch_style)
    target = keras_adapter.build(case.spec, keras_style)
    transfer(torch_adapter, source, keras_adapter, target)
    count_cross_framework_case()
    for layer, ((tw, tb), (kw, kb)) in enumerate(zip(torch_adapter.native_weights(source),
                                                     keras_adapter.native_weights(target))):
        assert kw.shape == tw.T.shape, f"layer {layer}: keras kernel {kw.shape}, torch weight {tw.shape}"
        assert kw.tobytes() == np.ascontiguousarray(tw.T).tobytes(), f"layer {layer}: kernel != torch weight.T"
        assert (kb is None and tb is None) or kb.tobytes() == tb.tobytes(), f"layer {layer}: bias differs"


@pytest.mark.parametrize(("torch_style", "keras_style"), STYLE_PAIRS, ids=IDS)
@settings(max_examples=BUILD_EXAMPLES)
@given(case=cases())
def test_round_trip_torch_keras_torch_is_the_identity(case, torch_style, keras_style, torch_adapter, keras_adapter):
    original = build_loaded(torch_adapter, case, torch_style)
    via_keras = keras_adapter.build(case.spec, keras_style)
    back = torch_adapter.build(case.spec, torch_style)
    transfer(torch_adapter, original, keras_adapter, via_keras)
    transfer(keras_adapter, via_keras, torch_adapter, back)
    count_cross_framework_case()
    assert_weights_identical(got=torch_adapter.get_weights(back), expected=torch_adapter.get_weights(original),
                             what="torch -> keras -> torch")


@pytest.mark.parametrize("direction", ["torch->keras", "keras->torch"])
def test_a_shape_mismatch_names_the_layer_and_both_shapes(direction, torch_adapter, keras_adapter):
    adapters = {"torch": torch_adapter, "keras": keras_adapter}
    src_name, dst_name = direction.split("->")
    src, dst = adapters[src_name], adapters[dst_name]
    source = src.build(StackSpec(4, (5, 3)), src.styles[0])
    target = dst.build(StackSpec(4, (5, 2)), dst.styles[0])
    before = dst.get_weights(target)
    with pytest.raises(ValueError, match=r"layer 1 kernel has shape \(5, 3\), expected \(5, 2\)"):
        transfer(src, source, dst, target)
    assert_weights_identical(got=dst.get_weights(target), expected=before, what="target after a refused transfer")


def test_a_shape_mismatch_within_a_framework_names_the_layer_and_both_shapes(framework, style, adapter):
    source = adapter.build(StackSpec(4, (5, 3)), style)
    target = adapter.build(StackSpec(4, (5, 2)), style)
    before = adapter.get_weights(target)
    with pytest.raises(ValueError, match=rf"{framework} set_weights: layer 1 kernel has shape \(5, 3\), "
                                         r"expected \(5, 2\)"):
        transfer(adapter, source, adapter, target)
    assert_weights_identical(got=adapter.get_weights(target), expected=before, what="target after a refused transfer")


def test_a_missing_transpose_on_a_square_layer_passes_shapes_and_fails_on_values(torch_adapter, keras_adapter):
    """Shape-valid, so only values can catch it: the per-layer check names layer 1."""
    case = make_case(StackSpec(4, (6, 6, 2)), seed=7, batch=3)
    untransposed = [w if i != 1 else LayerWeights(w.W.T.copy(), w.b) for i, w in enumerate(case.weights)]
    keras_model = keras_adapter.build(case.spec, "functional")
    keras_adapter.set_weights(keras_model, untransposed)  # accepted silently: (6, 6) either way
    torch_model = build_loaded(torch_adapter, case, "sequential")
    outputs = {"torch": torch_adapter.layer_outputs(torch_model, reference_inputs(case)),
               "keras": keras_adapter.layer_outputs(keras_model, reference_inputs(case))}
    from equivalence.core.compare import compare_layers

    result = compare_layers(case.spec, case.weights, case.x, outputs)
    assert result.failing_pairs() == {"keras vs reference": 1, "torch vs keras": 1}
    assert result.first_failure(("keras", "reference")).ratio > 1000
    assert check_case(case, {"torch": (torch_adapter, torch_model)}).passed
