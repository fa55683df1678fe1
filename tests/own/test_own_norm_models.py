"""Normalisation layers in a user's own pair of models: a faithful port passes in every dtype; epsilon, momentum
and batch statistics are named from the configs; a broken framework norm turns the suite red at its layer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import BFLOAT16
from tests.own.pairs import named_differences
from tests.own.test_own_channels_first_models import needs_channels_first_convs
from tests.own_models import conv_batchnorm2d, norm_mlp

pytestmark = pytest.mark.usefixtures("keras_walker_or_skip")

NORM_EXAMPLES = max(5, settings.default.max_examples // 10)


@pytest.fixture(autouse=True)
def _frameworks(torch_adapter, keras_adapter):
    """Every test here needs both frameworks (skips with the reason otherwise)."""


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", BFLOAT16])
def test_norms_inside_an_mlp_agree_after_a_port(dtype):
    from equivalence import compare_models, port_weights

    @settings(max_examples=NORM_EXAMPLES)
    @given(widths=st.tuples(*(st.integers(1, 12) for _ in range(4))).filter(lambda w: w[2] > 1),
           seed=st.integers(0, 2**16))
    def check(widths, seed):
        t, k = norm_mlp(widths, dtype, seed=seed)
        port_weights(t, k)
        result = compare_models(t, k, x=np.random.default_rng(seed).uniform(-3, 3, (4, widths[0])))
        assert result.passed, result.message()
        assert [u.layer_kind.name for u in result.keras_layers] == ["dense", "batchnorm", "dense", "layernorm",
                                                                     "dense"]
        assert sum(u.W.size + (0 if u.b is None else u.b.size) for u in result.torch_layers) == \
            sum(p.numel() for p in t.parameters()) + sum(b.numel() for b in t.buffers() if b.ndim) == \
            k.count_params()

    check()


def test_a_batchnorm2d_after_a_conv_agrees_over_drawn_inputs():
    import keras

    from equivalence import assert_equivalent, port_weights

    t = conv_batchnorm2d(6)
    L = keras.layers
    k = keras.Sequential([keras.Input((6, 6, 3)), L.Conv2D(4, 3), L.BatchNormalization(), L.ReLU(), L.Flatten(),
                          L.Dense(2)])
    port_weights(t, k)
    assert assert_equivalent(t, k, max_examples=10).passed


def test_the_default_epsilons_and_momenta_are_named_before_any_value():
    """torch's defaults (eps 1e-5, momentum 0.1) against Keras' (1e-3, 0.99): three named differences."""
    t, k = norm_mlp((4, 5, 6, 2), "float32", torch_eps=1e-5, torch_momentum=0.1)
    named = [(d.layer, d.what) for d in named_differences(t, k) if d.what in ("epsilon", "momentum")]
    assert named == [(1, "epsilon"), (1, "momentum"), (3, "epsilon")]
    message = next(d.message for d in named_differences(t, k) if d.what == "momentum")
    assert "got keras 0.99, but torch has 0.9" in message and "torch's momentum=m is Keras' 1 - m" in message


def test_a_torch_model_left_in_training_mode_is_named_and_its_statistics_untouched():
    from equivalence import compare_models, port_weights

    t, k = norm_mlp((4, 5, 6, 2), "float32")
    port_weights(t, k)
    t.train()
    before = [b.clone() for b in t.buffers()]
    result = compare_models(t, k, max_examples=3)
    assert [(d.layer, d.what) for d in result.differences] == [(1, "statistics")], result.message()
    assert "call model.eval()" in result.differences[0].message
    assert "torch vs keras, layer 1" in result.message()
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(before, t.buffers()))


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_a_broken_framework_norm_turns_the_suite_red_naming_the_layer(framework, monkeypatch):
    """The meta test: a LayerNorm (torch) or BatchNormalization (Keras) computing with ten times its epsilon."""
    from equivalence import compare_models, port_weights

    t, k = norm_mlp((4, 5, 6, 2), "float32")
    port_weights(t, k)
    if framework == "torch":
        import torch.nn.functional as F
        from torch import nn

        monkeypatch.setattr(nn.LayerNorm, "forward", lambda self, x: F.layer_norm(
            x, self.normalized_shape, self.weight, self.bias, 10 * self.eps))
        layer = 3
    else:
        import keras

        original = keras.layers.BatchNormalization.call

        def wrong_epsilon(self, inputs, training=None, mask=None):
            epsilon, self.epsilon = self.epsilon, 10 * self.epsilon
            try:
                return original(self, inputs, training=training, mask=mask)
            finally:
                self.epsilon = epsilon

        monkeypatch.setattr(keras.layers.BatchNormalization, "call", wrong_epsilon)
        layer = 1
    x = np.random.default_rng(0).uniform(-0.05, 0.05, (8, 4))  # small spreads: the epsilon shows
    result = compare_models(t, k, x=x)
    assert result.failing_pairs().get(f"{framework} vs reference") == layer, result.message()
    other = "keras" if framework == "torch" else "torch"
    assert f"{other} vs reference" not in result.failing_pairs()


@pytest.mark.parametrize(("norm", "data_format"), [("layernorm", "channels_last"), ("batchnorm", "channels_last"),
                                                   ("layernorm", "channels_first")])
def test_a_norm_between_a_flatten_and_its_dense_is_compared_in_one_order_and_an_unpermuted_port_is_named(
        norm, data_format):
    """torch flattens C, H, W; a channels-last Keras model (or a channels-first one whose Flatten is told
    channels_first) flattens H, W, C: a norm right after the Flatten holds its parameters in each model's own order.
    Each walker gives it the canonical order, so a faithful port (``port_weights`` permutes) agrees and a port that
    copied the norm's parameters as they are is named at the norm."""
    import keras
    import torch

    from equivalence import compare_models, port_weights
    from tests.own_models import norm_after_flatten

    L = keras.layers
    t = norm_after_flatten(norm)
    t_norm = t[3]
    first = data_format == "channels_first"
    if first:
        needs_channels_first_convs()
    k_norm = L.LayerNormalization(epsilon=1e-5) if norm == "layernorm" else \
        L.BatchNormalization(epsilon=1e-5, momentum=0.9)
    k = keras.Sequential([keras.Input((2, 5, 5) if first else (5, 5, 2)),
                          L.Conv2D(4, 3, data_format=data_format, activation="relu"),
                          L.Flatten(data_format="channels_first" if first else None), k_norm, L.Dense(4)])
    port_weights(t, k)
    x = np.random.default_rng(0).uniform(-1, 1, (4, 2, 5, 5)).astype("float32")
    ported = keras.ops.convert_to_numpy(k(x if first else x.transpose(0, 2, 3, 1)))
    end = t(torch.from_numpy(x)).detach().numpy() - ported
    assert np.abs(end).max() < 1e-5  # the port computes the torch model's function
    assert compare_models(t, k, x).passed
    k_norm.gamma.assign(t_norm.weight.detach().numpy())  # the torch order, copied as it is
    result = compare_models(t, k, x)
    assert not result.passed and any(d.message.startswith("layer 2 (torch '3', keras ") and "elements differ" in
                                     d.message for d in result.differences), result.message()
