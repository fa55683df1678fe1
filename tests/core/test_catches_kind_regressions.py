"""Break torch's conv, Keras' BatchNormalization and torch's LayerNorm on purpose, the ways an upgrade could, and
show the suite's chain property (``test_chain_agreement``) notices: hypothesis finds a failing chain, and the
failure names the broken framework, the layer, its kind and the cause (``equivalence.core.diagnosis``)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, find, settings

from equivalence.core.check import LayerPool, check_pooled
from equivalence.core.strategies import chain_cases
from tests.helpers import flip_torch_conv_kernels, keras3_only

SEARCH = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))


def _keras_batchnorm_epsilon_1e_5(monkeypatch):
    """Keras' BatchNormalization normalising with torch's default epsilon (1e-5) whatever it is configured with."""
    import keras

    original = keras.layers.BatchNormalization.call

    def call(self, inputs, training=None, mask=None):
        configured, self.epsilon = self.epsilon, 1e-5
        try:
            return original(self, inputs, training=training, mask=mask)
        finally:
            self.epsilon = configured

    monkeypatch.setattr(keras.layers.BatchNormalization, "call", call)


def _torch_layernorm_unbiased_variance(monkeypatch):
    """torch's LayerNorm dividing the variance by n - 1 (``torch.var``'s default) instead of n."""
    import torch

    def forward(self, x):
        mean, var = x.mean(-1, keepdim=True), x.var(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias

    monkeypatch.setattr(torch.nn.LayerNorm, "forward", forward)


BREAKS = [
    pytest.param(flip_torch_conv_kernels, "torch", "conv", "kernel flipped", id="torch-conv-kernel-flipped"),
    pytest.param(_keras_batchnorm_epsilon_1e_5, "keras", "batchnorm", "epsilon 1e-05 instead of 0.001",
                 id="keras-batchnorm-epsilon", marks=keras3_only),
    pytest.param(_torch_layernorm_unbiased_variance, "torch", "layernorm", "variance divided by n - 1",
                 id="torch-layernorm-unbiased-variance"),
]


@pytest.mark.parametrize("break_it, broken, kind, cause", BREAKS)
def test_a_broken_layer_kind_is_caught_and_named_with_its_cause(break_it, broken, kind, cause, monkeypatch,
                                                                 torch_adapter, keras_adapter):
    adapters = {"torch": torch_adapter, "keras": keras_adapter}
    pool = LayerPool()
    break_it(monkeypatch)
    case = find(chain_cases(), lambda c: not check_pooled(c, adapters, pool).passed, settings=SEARCH)
    result = check_pooled(case, adapters, pool)
    healthy = "keras" if broken == "torch" else "torch"
    pairs = result.failing_pairs()
    assert f"{broken} vs reference" in pairs and f"{healthy} vs reference" not in pairs, result.message()
    layer = pairs[f"{broken} vs reference"]
    assert case.spec.kinds[layer].name == kind, result.message()
    message = result.message()
    assert f"{broken} vs reference, layer {layer} ({kind}: " in message, message
    assert f"looks like: {cause}" in message, message
    assert all(r.layer == layer or r.passed or case.spec.kinds[r.layer].name == kind for r in result.results), \
        "a layer of another kind failed: the break reached beyond its kind"
