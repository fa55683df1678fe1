"""The activation table: adapters cover it exactly, references are stable, slopes are true, traps hold.

The trap tests import the frameworks directly on purpose: they are evidence about
the frameworks' defaults (the adapters spell every argument out because of them),
and they fail the day a default changes.
"""

import importlib
import warnings

import numpy as np
import pytest

from equivalence.core.activations import ACTIVATIONS, LEAKY_SLOPE
from equivalence.core.strategies import ACTIVATION_NAMES

ELEMENTWISE = [a for a in ACTIVATIONS.values() if not a.row_coupled]


@pytest.mark.parametrize(("framework", "table"), [("torch", "ACTIVATION_MODULES"), ("keras", "ACTIVATIONS"),
                                                 ("mxnet", "GLUON_ACTIVATIONS")])
def test_each_adapter_maps_exactly_the_shared_activations(framework, table, request):
    request.getfixturevalue(f"{framework}_adapter")  # skips when the framework is missing
    mapping = getattr(importlib.import_module(f"equivalence.frameworks.{framework}"), table)
    assert sorted(mapping) == sorted(ACTIVATIONS), f"{framework}: missing {set(ACTIVATIONS) - set(mapping)}, " \
                                                   f"extra {set(mapping) - set(ACTIVATIONS)}"
    assert tuple(ACTIVATIONS) == ACTIVATION_NAMES


@pytest.mark.parametrize("activation", ELEMENTWISE, ids=lambda a: a.name)
def test_the_largest_slope_is_true_and_tight(activation):
    """``max_slope`` bounds every finite difference on a fine grid, and is reached within 1%."""
    z = np.linspace(-20.0, 20.0, 100_001)
    slopes = np.abs(np.diff(activation.reference(z)) / np.diff(z))
    assert np.max(slopes) <= activation.max_slope * (1 + 1e-9), f"{activation.name}: slope {np.max(slopes)}"
    assert np.max(slopes) >= 0.99 * activation.max_slope, f"{activation.name}: max_slope is loose"


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_row_coupled_slopes_bound_a_max_norm_perturbation(name):
    """softmax moves by at most d/2 and log_softmax by at most 2d when every element moves by at most d."""
    rng = np.random.default_rng(0)
    act = ACTIVATIONS[name]
    z = rng.uniform(-5, 5, (2000, 7))
    d = 1e-6
    worst = max(np.max(np.abs(act.reference(z + d * rng.choice([-1.0, 1.0], z.shape)) - act.reference(z))) / d
                for _ in range(5))
    assert worst <= act.max_slope * (1 + 1e-6)
    assert worst >= 0.25 * act.max_slope


@pytest.mark.parametrize("activation", list(ACTIVATIONS.values()), ids=lambda a: a.name)
def test_references_are_silent_and_finite_at_extreme_finite_inputs(activation):
    z = np.array([[-1e300, -1e4, -800.0, -100.0, -1.0, -0.0, 0.0, 1e-300, 1.0, 100.0, 800.0, 1e4]])
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        h = activation.reference(z if activation.name != "gelu_tanh" else np.clip(z, -1e100, 1e100))
    assert np.all(np.isfinite(h)), f"{activation.name}: {h}"


def test_hard_sigmoid_is_the_keras_3_relu6_form_not_the_old_linear_one():
    h = ACTIVATIONS["hard_sigmoid"].reference(np.array([-3.0, -1.0, 0.0, 1.0, 3.0]))
    np.testing.assert_allclose(h, [0.0, 1 / 3, 0.5, 2 / 3, 1.0])  # 0.2x+0.5 would give 0.3 at -1


# --- default-argument traps (evidence about the frameworks) -------------------

def test_keras_ops_gelu_defaults_to_the_tanh_approximation_and_torch_to_the_exact_form(torch_adapter, keras_adapter):
    import keras
    import torch

    x = np.linspace(-4, 4, 801).astype(np.float32)
    default = keras.ops.convert_to_numpy(keras.ops.gelu(x))
    approximate = keras.ops.convert_to_numpy(keras.ops.gelu(x, approximate=True))
    exact = keras.ops.convert_to_numpy(keras.ops.gelu(x, approximate=False))
    np.testing.assert_array_equal(default, approximate)
    torch_default = torch.nn.GELU()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(torch_default, exact, atol=1e-6)
    gap = np.max(np.abs(exact - approximate))
    assert 4e-4 < gap < 5e-4, f"exact vs tanh gelu differ by {gap}, measured 4.7e-4"


def test_leaky_slope_defaults_differ_0_2_keras_ops_0_3_keras_layer_0_01_torch(torch_adapter, keras_adapter):
    import keras
    import torch

    x = np.array([-1.0], dtype=np.float32)
    slopes = {
        "keras.ops.leaky_relu": -keras.ops.convert_to_numpy(keras.ops.leaky_relu(x))[0],
        "keras.activations.leaky_relu": -keras.ops.convert_to_numpy(keras.activations.leaky_relu(x))[0],
        "keras.layers.LeakyReLU": -keras.ops.convert_to_numpy(keras.layers.LeakyReLU()(x))[0],
        "torch.nn.LeakyReLU": -torch.nn.LeakyReLU()(torch.from_numpy(x)).numpy()[0],
    }
    assert slopes == pytest.approx({"keras.ops.leaky_relu": 0.2, "keras.activations.leaky_relu": 0.2,
                                    "keras.layers.LeakyReLU": 0.3, "torch.nn.LeakyReLU": 0.01})
    assert LEAKY_SLOPE == 0.2


def test_torch_softmax_without_dim_warns_and_picks_dim_0_on_3d_input(torch_adapter):
    import torch

    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="Implicit dimension choice"):
        y = torch.nn.Softmax()(x)
    torch.testing.assert_close(y.sum(dim=0), torch.ones(3, 4))
    assert not torch.allclose(y.sum(dim=-1), torch.ones(2, 3))


def test_a_width_one_softmax_layer_always_outputs_one(torch_adapter, keras_adapter):
    """Both frameworks agree, and so does the reference: a 1-wide softmax carries no information."""
    z = np.array([[-5.0], [0.0], [7.0]])
    np.testing.assert_array_equal(ACTIVATIONS["softmax"].reference(z), np.ones((3, 1)))


# --- parametric names: leaky slopes, ELU/CELU alphas, softmax axis ---------------------------------

def test_parameters_travel_in_the_name_and_existing_names_keep_working():
    from equivalence.core.activations import activation_name, family_of

    assert activation_name("leaky_relu", 0.2) == "leaky_relu_0.2" and "leaky_relu_0.2" in ACTIVATION_NAMES
    assert activation_name("leaky_relu", 0.01) == "leaky_relu_0.01" != activation_name("leaky_relu", 0.3)
    assert activation_name("elu", 1.0) == "elu" and activation_name("elu", 0.5) == "elu_0.5"
    assert activation_name("softmax_axis", -1) == activation_name("softmax_axis", 1) == "softmax"
    assert activation_name("softmax_axis", 0) == "softmax_axis_0"
    assert family_of("leaky_relu_0.01") == ("leaky_relu", 0.01) and family_of("relu") == ("relu", None)
    for name in ("leaky_relu_0.01", "elu_0.5", "celu_2.0", "softmax_axis_0", "log_softmax_axis_0"):
        assert name in ACTIVATIONS and ACTIVATIONS[name].name == name
    for name in ("leaky_relu_1e-2", "elu_1.0", "leaky_relu_x", "softmax_axis_2", "nope"):
        assert name not in ACTIVATIONS  # one spelling per value; nonsense refused
        with pytest.raises(KeyError):
            ACTIVATIONS[name]
    assert tuple(ACTIVATIONS) == ACTIVATION_NAMES  # iteration still gives the fixed table only


@pytest.mark.parametrize(("name", "z", "expected"), [
    ("leaky_relu_0.01", [-2.0, 3.0], [-0.02, 3.0]),
    ("elu_0.5", [-1e4, 2.0], [-0.5, 2.0]),
    ("celu_2.0", [-1e4, 2.0], [-2.0, 2.0]),
])
def test_parametric_references(name, z, expected):
    np.testing.assert_allclose(ACTIVATIONS[name].reference(np.array(z)), expected, rtol=1e-15)


def test_softmax_over_the_batch_axis_sums_each_column_to_one():
    h = ACTIVATIONS["softmax_axis_0"].reference(np.array([[0.0, 5.0], [1.0, -5.0], [2.0, 0.0]]))
    np.testing.assert_allclose(h.sum(axis=0), [1.0, 1.0])


@pytest.mark.parametrize("name", ["leaky_relu_0.01", "leaky_relu_0.3", "elu_0.5", "celu_2.0", "softmax_axis_0"])
def test_both_adapters_build_parametric_activations_that_match_the_reference(name, torch_adapter, keras_adapter):
    from equivalence import StackSpec, check_case, make_case

    if keras_adapter.cannot(name, "float32"):
        pytest.skip(f"not run: {keras_adapter.cannot(name, 'float32')}")
    spec = StackSpec(4, (5, 3), (name, name))
    case = make_case(spec, seed=3, batch=4)
    models = {"torch": (torch_adapter, torch_adapter.build(spec, "sequential")),
              "keras": (keras_adapter, keras_adapter.build(spec, "functional"))}
    result = check_case(case, models)
    assert result.passed, result.message()
