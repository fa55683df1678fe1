"""The heart: torch, Keras and the float64 reference agree at every layer.

Each framework's layer ``l`` is fed the reference's input to that layer, so a
layer is judged on its own error (see ``equivalence.compare``). All three pairs
are compared in every example and every failing pair is reported.

* The many-example property reuses built layers (``LayerPool``): it is about
  numbers, and Keras layer builds would otherwise dominate the run.
* The per-style properties build real models in every style, one test per
  (torch style, keras style) pairing, so no failure hides another.
"""

import numpy as np
import pytest
from hypothesis import given, settings

from equivalence.adapters import STYLES
from equivalence.check import check_case
from equivalence.strategies import cases
from tests.helpers import BUILD_EXAMPLES, NUMERIC_EXAMPLES, assert_layers_agree, build_loaded

STYLE_PAIRS = list(zip(STYLES["torch"], STYLES["keras"]))


@settings(max_examples=NUMERIC_EXAMPLES)
@given(case=cases())
def test_every_layer_agrees_three_ways(case, torch_adapter, keras_adapter, layer_pool):
    models = {
        "torch": (torch_adapter, layer_pool.stack(torch_adapter, case.spec)),
        "keras": (keras_adapter, layer_pool.stack(keras_adapter, case.spec)),
    }
    assert_layers_agree(comparison=check_case(case, models), case=case)


@pytest.mark.parametrize(("torch_style", "keras_style"), STYLE_PAIRS, ids=[f"{t}-{k}" for t, k in STYLE_PAIRS])
@settings(max_examples=BUILD_EXAMPLES)
@given(case=cases())
def test_every_layer_of_every_build_style_agrees_three_ways(case, torch_style, keras_style, torch_adapter,
                                                             keras_adapter):
    models = {
        "torch": (torch_adapter, torch_adapter.build(case.spec, torch_style)),
        "keras": (keras_adapter, keras_adapter.build(case.spec, keras_style)),
    }
    assert_layers_agree(comparison=check_case(case, models), case=case)


@pytest.mark.parametrize("framework", ["torch", "keras"])
@pytest.mark.parametrize("style_index", [0, 1, 2])
@settings(max_examples=BUILD_EXAMPLES)
@given(case=cases())
def test_the_models_own_forward_equals_its_chained_layers(case, framework, style_index, request):
    """The numeric checks call layer by layer; this shows the model's own forward (its
    wiring: Sequential, functional graph, subclass ``call``) computes exactly that chain."""
    adapter = request.getfixturevalue(f"{framework}_adapter")
    model = build_loaded(adapter, case, STYLES[framework][style_index])
    chained = adapter.taps(model, case.x)
    whole = adapter.forward(model, case.x)
    assert whole.shape == chained[-1].shape == (case.batch, case.spec.widths[-1])
    np.testing.assert_array_equal(whole, chained[-1], err_msg=f"{framework} {STYLES[framework][style_index]}")
