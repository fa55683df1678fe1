"""A user's own Keras 2 model (tf-keras under ``TF_USE_LEGACY_KERAS=1``, ``make keras2``) against its torch
original: walked, compared and ported as a Keras 3 model is."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import KERAS2

pytestmark = pytest.mark.skipif(not KERAS2, reason="Keras 2 (tf-keras) runs only under TF_USE_LEGACY_KERAS=1 "
                                "(make keras2)")


@pytest.fixture(autouse=True)
def _frameworks(torch_adapter, keras_adapter):
    """Both frameworks (skips with the reason otherwise)."""


def models(style: str, keras_activation: str = "tanh"):
    import tf_keras
    import torch
    from torch import nn

    torch.manual_seed(0)
    t = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3), nn.Softmax(dim=-1))
    L = tf_keras.layers
    if style == "sequential":
        k = tf_keras.Sequential([tf_keras.Input((6,)), L.Dense(8, activation="relu"),
                                 L.Dense(8, activation=keras_activation), L.Dense(3, activation="softmax")])
    else:  # functional, with separate activation layers and a Dropout
        inputs = tf_keras.Input((6,))
        h = L.ReLU()(L.Dense(8)(inputs))
        h = L.Activation(keras_activation)(L.Dropout(0.2)(L.Dense(8)(h)))
        k = tf_keras.Model(inputs, L.Softmax()(L.Dense(3)(h)))
    for linear, dense in zip(t[::2], [layer for layer in k.layers if isinstance(layer, L.Dense)]):
        dense.set_weights([linear.weight.detach().numpy().T, linear.bias.detach().numpy()])
    return t, k


@pytest.mark.parametrize("style", ["sequential", "functional"])
def test_a_keras2_port_is_checked_layer_by_layer(style):
    from equivalence import assert_equivalent, compare_models

    t, k = models(style)
    result = assert_equivalent(t, k, max_examples=5)
    assert [u.activation for u in result.keras_layers] == ["relu", "tanh", "softmax"]
    wrong = compare_models(*models(style, keras_activation="sigmoid"), max_examples=5)
    assert not wrong.passed
    assert "activation: got sigmoid in keras" in wrong.message()


def test_port_weights_writes_a_keras2_model():
    import tf_keras

    from equivalence import assert_equivalent, port_weights

    t, k = models("sequential")
    for layer in k.layers:
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    port_weights(t, k)
    assert_equivalent(t, k, max_examples=5)
    assert isinstance(k, tf_keras.Model)


def test_a_subclassed_keras2_model_is_refused_with_the_fix():
    import tf_keras

    from equivalence import ModelNotSupported, compare_models

    class Net(tf_keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.d = tf_keras.layers.Dense(3)

        def call(self, x):
            return self.d(x)

    k = Net()
    k(np.zeros((1, 6), np.float32))
    t, _ = models("sequential")
    with pytest.raises(ModelNotSupported, match="build it as a Sequential or functional model"):
        compare_models(t, k)


def test_compare_reads_a_keras2_file(tmp_path, capsys):
    import torch

    from equivalence.cli import EXIT_OK, main

    t, k = models("functional")
    torch.export.save(torch.export.export(t.eval(), (torch.zeros(2, 6),)), tmp_path / "model.pt2")
    k.save(tmp_path / "port.keras")
    assert main(["compare", str(tmp_path / "model.pt2"), str(tmp_path / "port.keras"), "--examples", "3"]) == EXIT_OK
    assert "all 3 layers agree" in capsys.readouterr().out
