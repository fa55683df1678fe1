"""Keras behaviours the adapter must not let through silently (measured in docs/measurements.md)."""

import pytest

from equivalence.core.spec import StackSpec
from equivalence.frameworks.registry import entry
from tests.helpers import keras3_only


@keras3_only
def test_an_unbuilt_sequential_raises_instead_of_returning_no_weights(keras_adapter):
    keras = pytest.importorskip("keras")
    unbuilt = keras.Sequential([keras.layers.Dense(3), keras.layers.Dense(2)])
    assert unbuilt.get_weights() == []  # the trap: Keras itself answers with an empty list
    with pytest.raises(ValueError, match=r"Keras model is not built: Dense layer 0 .* keras.Input"):
        keras_adapter.get_weights(unbuilt)
    with pytest.raises(ValueError, match=r"not built"):
        keras_adapter.set_weights(unbuilt, [])


@pytest.mark.parametrize("style", entry("keras").styles)
def test_every_style_the_adapter_builds_is_built(style, keras_adapter):
    assert len(keras_adapter.get_weights(keras_adapter.build(StackSpec(4, (3, 2)), style))) == 2


def test_functional_layers_include_the_input_layer_but_the_adapter_skips_it(keras_adapter):
    model = keras_adapter.build(StackSpec(4, (3, 2)), "functional")
    assert type(model.layers[0]).__name__ == "InputLayer"
    assert [w.W.shape for w in keras_adapter.get_weights(model)] == [(4, 3), (3, 2)]


def test_keras_mean_of_float64_is_float32_off_tensorflow_so_the_gradient_loss_is_a_sum(keras_adapter):
    """Evidence for ``keras.mean_in_dtype``: Keras 3.15.1's ``ops.mean`` computes float64 in float32 on the
    torch and jax backends (``result_type(float64, "float32")``), exactly on TensorFlow. When this fails,
    Keras changed: ``mean_in_dtype`` can go back to ``keras.ops.mean`` (and the check of its result below stays)."""
    import numpy as np

    keras = pytest.importorskip("keras")
    from equivalence.frameworks.keras import mean_in_dtype

    values = np.array([[0.1], [0.2], [0.3]])  # 1/3 and 0.2 are not float32 numbers: float32 rounding shows
    exact = np.sum(values) / values.size
    x = keras.ops.convert_to_tensor(values, dtype="float64")
    off = abs(float(keras.ops.convert_to_numpy(keras.ops.mean(x))) - exact)
    if keras_adapter.backend == "tensorflow":
        assert off <= np.finfo(np.float64).eps * exact
    else:  # float32 rounding here is 6.7e7 float64 epsilons (measured); 1e3 of them cannot be float64's doing
        assert np.finfo(np.float64).eps * exact * 1e3 < off <= np.finfo(np.float32).eps * exact, off
    assert float(keras.ops.convert_to_numpy(mean_in_dtype(x))) == exact


def test_a_subclass_model_is_refused_by_a_keras_file_and_nothing_is_written(keras_adapter, tmp_path):
    """Why ``test_save_load`` leaves (keras, subclass, .keras) out: Keras cannot rebuild a Model subclass
    without ``get_config``; its weights go to ``.weights.h5``, which the round trip covers."""
    model = keras_adapter.build(StackSpec(4, (3, 2)), "subclass")
    with pytest.raises(ValueError, match=r"the subclass style has no get_config, so it cannot go to a \.keras file"):
        keras_adapter.save(model, tmp_path / "model.keras")
    assert list(tmp_path.iterdir()) == []
