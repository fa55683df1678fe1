"""Keras behaviours the adapter must not let through silently (measured in ../shared/measurements.md)."""

import pytest

from equivalence.adapters import STYLES
from equivalence.spec import StackSpec


def test_an_unbuilt_sequential_raises_instead_of_returning_no_weights(keras_adapter):
    keras = pytest.importorskip("keras")
    unbuilt = keras.Sequential([keras.layers.Dense(3), keras.layers.Dense(2)])
    assert unbuilt.get_weights() == []  # the trap: Keras itself answers with an empty list
    with pytest.raises(ValueError, match=r"Keras model is not built: Dense layer 0 .* keras.Input"):
        keras_adapter.get_weights(unbuilt)
    with pytest.raises(ValueError, match=r"not built"):
        keras_adapter.set_weights(unbuilt, [])


@pytest.mark.parametrize("style", STYLES["keras"])
def test_every_style_the_adapter_builds_is_built(style, keras_adapter):
    assert len(keras_adapter.get_weights(keras_adapter.build(StackSpec(4, (3, 2)), style))) == 2


def test_functional_layers_include_the_input_layer_but_the_adapter_skips_it(keras_adapter):
    model = keras_adapter.build(StackSpec(4, (3, 2)), "functional")
    assert type(model.layers[0]).__name__ == "InputLayer"
    assert [w.W.shape for w in keras_adapter.get_weights(model)] == [(4, 3), (3, 2)]
