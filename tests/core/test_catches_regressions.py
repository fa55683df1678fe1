"""Break torch or Keras on purpose, the ways an upgrade could, and show the suite notices.

Each test patches the *framework* (never this project's code), then asks
hypothesis for a failing case of the same property the suite runs
(``test_agreement``), with the default strategies. The failure must name the
broken framework and the right layer.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, find, settings

from equivalence.core.case import make_case
from equivalence.core.check import LayerPool, check_case
from equivalence.core.spec import StackSpec
from equivalence.core.strategies import cases
from tests.helpers import keras3_only

SEARCH = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))


def _comparison(case, torch_adapter, keras_adapter, pool):
    return check_case(case, {"torch": (torch_adapter, pool.stack(torch_adapter, case.spec)),
                             "keras": (keras_adapter, pool.stack(keras_adapter, case.spec))})


def _minimal_failure(torch_adapter, keras_adapter, *, shrink=True):
    """The first (shrunk, unless ``shrink=False``) case the suite's property fails on."""
    pool = LayerPool()
    search = SEARCH if shrink else settings(SEARCH, phases=[Phase.generate])
    case = find(cases(), lambda c: not _comparison(c, torch_adapter, keras_adapter, pool).passed, settings=search)
    return case, _comparison(case, torch_adapter, keras_adapter, pool)


def _fixed(spec, torch_adapter, keras_adapter, **kw):
    case = make_case(spec, seed=11, batch=kw.pop("batch", 3), weight_scale="fan_in", **kw)
    return _comparison(case, torch_adapter, keras_adapter, LayerPool())


# --- torch -------------------------------------------------------------------

def _patch_torch_sigmoid_drift(monkeypatch, rel):
    import torch

    original = torch.nn.Sigmoid.forward
    monkeypatch.setattr(torch.nn.Sigmoid, "forward", lambda self, x: original(self, x) * (1 + rel))


def test_torch_sigmoid_drifting_by_1e_5_relative_is_caught(monkeypatch, torch_adapter, keras_adapter):
    _patch_torch_sigmoid_drift(monkeypatch, 1e-5)
    case, result = _minimal_failure(torch_adapter, keras_adapter)
    assert "torch vs reference" in result.failing_pairs(), result.message()
    assert "keras vs reference" not in result.failing_pairs(), result.message()
    assert case.spec.depth == 1 and result.failing_pairs()["torch vs reference"] == 0, result.message()


def test_torch_linear_ignoring_its_bias_is_caught_at_the_right_layer(monkeypatch, torch_adapter, keras_adapter):
    import torch

    monkeypatch.setattr(torch.nn.Linear, "forward", lambda self, x: torch.nn.functional.linear(x, self.weight))
    result = _fixed(StackSpec(3, (4, 4, 2)), torch_adapter, keras_adapter)
    assert result.failing_pairs() == {"torch vs reference": 0, "torch vs keras": 0}, result.message()


def test_torch_linear_using_a_square_weight_untransposed_is_caught(monkeypatch, torch_adapter, keras_adapter):
    """Only square layers can hide this; layer 1 is the first square one here."""
    import torch

    def linear(self, x):
        W = self.weight.T if self.in_features == self.out_features else self.weight
        return torch.nn.functional.linear(x, W, self.bias)

    monkeypatch.setattr(torch.nn.Linear, "forward", linear)
    result = _fixed(StackSpec(3, (5, 5, 2)), torch_adapter, keras_adapter)
    assert result.failing_pairs() == {"torch vs reference": 1, "torch vs keras": 1}, result.message()
    _, minimal = _minimal_failure(torch_adapter, keras_adapter)
    assert "torch vs reference" in minimal.failing_pairs(), minimal.message()


def test_torch_linear_computing_in_half_precision_is_caught(monkeypatch, torch_adapter, keras_adapter):
    import torch

    def half(self, x):
        b = None if self.bias is None else self.bias.half()
        return torch.nn.functional.linear(x.half(), self.weight.half(), b).to(x.dtype)

    monkeypatch.setattr(torch.nn.Linear, "forward", half)
    _, result = _minimal_failure(torch_adapter, keras_adapter, shrink=False)
    assert set(result.failing_pairs()) == {"torch vs reference", "torch vs keras"}, result.message()


# --- Keras -------------------------------------------------------------------

@keras3_only
def test_keras_sigmoid_drifting_by_1e_5_relative_is_caught(monkeypatch, torch_adapter, keras_adapter):
    import keras.src.ops

    original = keras.src.ops.sigmoid
    monkeypatch.setattr(keras.src.ops, "sigmoid", lambda x: original(x) * (1 + 1e-5))
    _, result = _minimal_failure(torch_adapter, keras_adapter, shrink=False)
    assert "keras vs reference" in result.failing_pairs(), result.message()
    assert "torch vs reference" not in result.failing_pairs(), result.message()


@keras3_only
@pytest.mark.parametrize("bug", ["drops its bias", "uses a square kernel transposed"])
def test_keras_dense_bugs_are_caught_at_the_right_layer(bug, monkeypatch, torch_adapter, keras_adapter):
    import keras
    from keras import ops

    def call(self, inputs, training=None):
        kernel = self.kernel
        if bug == "uses a square kernel transposed" and kernel.shape[0] == kernel.shape[1]:
            kernel = ops.transpose(kernel)
        x = ops.matmul(inputs, kernel)
        if self.bias is not None and bug != "drops its bias":
            x = ops.add(x, self.bias)
        return self.activation(x)

    monkeypatch.setattr(keras.layers.Dense, "call", call)
    first = 0 if bug == "drops its bias" else 2
    result = _fixed(StackSpec(3, (5, 2, 2)), torch_adapter, keras_adapter)
    assert result.failing_pairs() == {"keras vs reference": first, "torch vs keras": first}, result.message()
    first_failure = result.first_failure(("keras", "reference"))
    assert f"keras vs reference, layer {first}:" in first_failure.describe()
