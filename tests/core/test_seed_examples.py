"""The seed notebooks' own examples, as tests."""

import numpy as np

from equivalence.core.case import make_case
from equivalence.core.check import check_case
from equivalence.core.compare import param_count_problems
from equivalence.core.spec import StackSpec
from tests.helpers import assert_layers_agree, build_loaded


def test_eight_by_ten_input_with_three_neurons(torch_adapter, keras_adapter):
    """X (8, 10) into 3 neurons: torch weight (3, 10), Keras kernel (10, 3), output (8, 3)."""
    case = make_case(StackSpec(10, (3,)), seed=0, batch=8)
    torch_model = build_loaded(torch_adapter, case, "sequential")
    keras_model = build_loaded(keras_adapter, case, "sequential")
    assert case.x.shape == (8, 10)
    assert torch_adapter.native_weights(torch_model)[0][0].shape == (3, 10)
    assert keras_adapter.native_weights(keras_model)[0][0].shape == (10, 3)
    assert torch_adapter.forward(torch_model, case.x).shape == (8, 3)
    assert keras_adapter.forward(keras_model, case.x).shape == (8, 3)
    assert_layers_agree(comparison=check_case(case, {"torch": (torch_adapter, torch_model),
                                                     "keras": (keras_adapter, keras_model)}), case=case)


def test_the_ten_to_hundred_cascade(framework, style, adapter):
    """[10, 10, 20, ..., 100] on a batch of 4 gives outputs (4, 10), (4, 20), ..., (4, 100)."""
    case = make_case(StackSpec(10, tuple(range(10, 101, 10))), seed=1, batch=4, weight_scale="fan_in")
    model = build_loaded(adapter, case, style)
    assert [t.shape for t in adapter.taps(model, case.x)] == [(4, w) for w in range(10, 101, 10)]


def test_three_four_five_six_has_16_25_36_parameters(framework, registering_style, adapter):
    spec = StackSpec(3, (4, 5, 6))
    count = adapter.count_params(adapter.build(spec, registering_style))
    assert count.per_layer == (16, 25, 36), count
    assert count.total == 77 and count.trainable_tensors == 6, count
    assert not param_count_problems(spec, count, framework=framework)


def test_dense_10_then_20_on_10_features_has_four_trainable_variables(keras_adapter):
    spec = StackSpec(10, (10, 20))
    count = keras_adapter.count_params(keras_adapter.build(spec, "sequential"))
    assert count.trainable_tensors == 4
    assert count.total == 110 + 220


def test_plain_list_forward_runs_but_registers_nothing(torch_adapter):
    """The seed notes' trap: same outputs as the registered styles, zero parameters."""
    case = make_case(StackSpec(3, (4, 5, 6)), seed=2, batch=2)
    trap = build_loaded(torch_adapter, case, "plain_list")
    good = build_loaded(torch_adapter, case, "modulelist")
    np.testing.assert_array_equal(torch_adapter.forward(trap, case.x), torch_adapter.forward(good, case.x))
    assert torch_adapter.count_params(trap).total == 0
    assert torch_adapter.count_params(good).total == 77
