"""Bugs that only show under a condition must be reached by the default profile.

Each test patches torch or Keras (never this project) with a bug that shows only
at batch size 1, only on saturating inputs, or only for width-1 layers, and asks
hypothesis for a failing case of the suite's own property with the *default
profile's* example budget. Finding it there means the strategies reach that
corner by design (batch 1 half the time, saturating input scales, width 1 as a
width kind), not by luck.

The budget is the ``dev`` profile's whatever profile runs (the claim is about the
default budget): under ``smoke`` (10 examples) the saturation corner is not
reached, and that says nothing about the strategies.
"""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, find, settings

from equivalence.core.check import LayerPool, check_case
from equivalence.core.strategies import cases
from tests.helpers import keras3_only

DEFAULT_BUDGET = settings(max_examples=settings.get_profile("dev").max_examples, deadline=None, database=None,
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


@keras3_only
def test_a_keras_bug_only_for_width_one_layers_is_reached(monkeypatch, torch_adapter, keras_adapter):
    import keras

    original = keras.layers.Dense.call

    def narrow_bug(self, inputs, **kwargs):  # Dense.call takes training= only from Keras 3.x on: pass what comes
        y = original(self, inputs, **kwargs)
        return y * (1 - 1e-4) if self.units == 1 else y

    monkeypatch.setattr(keras.layers.Dense, "call", narrow_bug)
    case, result = _first_failure(torch_adapter, keras_adapter)
    layer = result.failing_pairs()["keras vs reference"]
    assert case.spec.widths[layer] == 1, result.message()
    assert "torch vs reference" not in result.failing_pairs()


def test_a_torch_linear_registering_an_extra_parameter_is_caught(monkeypatch, torch_adapter):
    import torch

    from equivalence.core.compare import param_count_problems
    from equivalence.core.spec import StackSpec

    original = torch.nn.Linear.__init__

    def with_extra(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.scale = torch.nn.Parameter(torch.ones(1))  # as if an upgrade added a trainable scale

    monkeypatch.setattr(torch.nn.Linear, "__init__", with_extra)
    spec = StackSpec(3, (4, 2))
    problems = param_count_problems(spec, torch_adapter.count_params(torch_adapter.build(spec, "sequential")),
                                    framework="torch")
    assert "torch: per-layer parameters (17, 11), expected (16, 10)" in problems, problems
    assert "torch: 6 trainable tensors, expected 4" in problems, problems


@keras3_only
def test_a_keras_dense_losing_its_bias_weight_is_caught(monkeypatch, keras_adapter):
    import keras

    from equivalence.core.compare import param_count_problems
    from equivalence.core.spec import StackSpec

    original = keras.layers.Dense.build

    def no_bias(self, input_shape):
        self.use_bias = False  # as if an upgrade ignored use_bias=True
        original(self, input_shape)

    monkeypatch.setattr(keras.layers.Dense, "build", no_bias)
    spec = StackSpec(3, (4, 2))
    problems = param_count_problems(spec, keras_adapter.count_params(keras_adapter.build(spec, "functional")),
                                    framework="keras")
    assert "keras: per-layer parameters (12, 8), expected (16, 10)" in problems, problems
