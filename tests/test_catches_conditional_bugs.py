"""Bugs that only show under a condition must be reached by the default profile.

Each test patches torch or Keras (never this project) with a bug that shows only
at batch size 1, only on saturating inputs, or only for width-1 layers, and asks
hypothesis for a failing case of the suite's own property with the *default
profile's* example budget. Finding it there means the strategies reach that
corner by design (batch 1 half the time, saturating input scales, width 1 as a
width kind), not by luck.
"""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, find, settings

from equivalence.check import LayerPool, check_case
from equivalence.strategies import cases

DEFAULT_BUDGET = settings(max_examples=settings.default.max_examples, deadline=None, database=None,
                          derandomize=True, phases=[Phase.generate], suppress_health_check=list(HealthCheck))


def _first_failure(torch_adapter, keras_adapter):
    pool = LayerPool()

    def comparison(case):
        return check_case(case, {"torch": (torch_adapter, pool.stack(torch_adapter, case.spec)),
                                 "keras": (keras_adapter, pool.stack(keras_adapter, case.spec))})

    case = find(cases(), lambda c: not comparison(c).passed, settings=DEFAULT_BUDGET)
    return case, comparison(case)


def test_a_torch_bug_only_at_batch_size_one_is_reached(monkeypatch, torch_adapter, keras_adapter):
    import torch

    original = torch.nn.Linear.forward

    def gemv_bug(self, x):  # as if the matrix-vector path lost precision
        y = original(self, x)
        return y * (1 + 1e-4) if x.shape[0] == 1 else y

    monkeypatch.setattr(torch.nn.Linear, "forward", gemv_bug)
    case, result = _first_failure(torch_adapter, keras_adapter)
    assert case.batch == 1
    assert "torch vs reference" in result.failing_pairs() and "keras vs reference" not in result.failing_pairs()


def test_a_torch_sigmoid_bug_only_in_saturation_is_reached(monkeypatch, torch_adapter, keras_adapter):
    import torch

    original = torch.nn.Sigmoid.forward

    def clamped(self, z):  # a "fast" sigmoid that rounds the tails to 0 and 1 from |z| > 10
        return torch.where(z.abs() > 10, (z > 0).to(z.dtype), original(self, z))

    monkeypatch.setattr(torch.nn.Sigmoid, "forward", clamped)
    case, result = _first_failure(torch_adapter, keras_adapter)
    assert "torch vs reference" in result.failing_pairs(), result.message()
    first = result.first_failure(("torch", "reference"))
    assert abs(first.expected) < 1e-4 or abs(first.expected - 1) < 1e-4, first.describe()  # in a tail


def test_a_keras_bug_only_for_width_one_layers_is_reached(monkeypatch, torch_adapter, keras_adapter):
    import keras

    original = keras.layers.Dense.call

    def narrow_bug(self, inputs, training=None):
        y = original(self, inputs, training=training)
        return y * (1 - 1e-4) if self.units == 1 else y

    monkeypatch.setattr(keras.layers.Dense, "call", narrow_bug)
    case, result = _first_failure(torch_adapter, keras_adapter)
    layer = result.failing_pairs()["keras vs reference"]
    assert case.spec.widths[layer] == 1, result.message()
    assert "torch vs reference" not in result.failing_pairs()
