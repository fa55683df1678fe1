"""An activation whose shape changes slightly, in either framework, breaks the breadth property.

Patches the *framework* (never this project's code), then asks hypothesis for a
failing example of ``test_agreement.test_every_layer_agrees_three_ways``' own
strategy. The failure must name the broken framework and a layer that uses the
changed activation, and leave the other framework alone.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, find, settings

from equivalence.core.check import LayerPool, check_case, why_not_run
from equivalence.core.strategies import breadth_specs, cases
from tests.helpers import keras3_only

SEARCH = settings(max_examples=300, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
"""The first failing example is enough: shrinking a breadth case costs ~20 s."""


def _torch_gelu_becomes_the_tanh_form(monkeypatch):
    """What an upgrade flipping nn.GELU's default would do: a 4.7e-4 change."""
    import torch

    monkeypatch.setattr(torch.nn.GELU, "forward", lambda self, x: torch.nn.functional.gelu(x, approximate="tanh"))
    return "gelu"


def _torch_softsign_drifts(monkeypatch):
    import torch

    monkeypatch.setattr(torch.nn.Softsign, "forward", lambda self, x: x / (1.0 + x.abs() * (1 + 1e-4)))
    return "softsign"


def _keras_elu_alpha_drifts(monkeypatch):
    import keras.src.ops

    original = keras.src.ops.elu
    monkeypatch.setattr(keras.src.ops, "elu", lambda x, alpha=1.0: original(x, alpha=alpha * (1 + 1e-4)))
    return "elu"


def _keras_hard_sigmoid_becomes_the_keras_2_form(monkeypatch):
    """Keras 2's ``0.2 x + 0.5``: up to 0.083 from relu6(x + 3) / 6."""
    import keras.src.ops
    from keras import ops

    monkeypatch.setattr(keras.src.ops, "hard_sigmoid", lambda x: ops.clip(0.2 * x + 0.5, 0.0, 1.0))
    return "hard_sigmoid"


BREAKS = {
    "torch": [_torch_gelu_becomes_the_tanh_form, _torch_softsign_drifts],
    "keras": [_keras_elu_alpha_drifts, _keras_hard_sigmoid_becomes_the_keras_2_form],
}
PARAMS = [(f, b) for f, bs in BREAKS.items() for b in bs]


@keras3_only  # patches Keras 3; draws every activation, and Keras 2 lacks three
@pytest.mark.parametrize(("framework", "break_it"), PARAMS, ids=[b.__name__.strip("_") for _, b in PARAMS])
def test_a_slightly_changed_activation_is_caught_at_a_layer_that_uses_it(framework, break_it, monkeypatch,
                                                                         torch_adapter, keras_adapter):
    activation = break_it(monkeypatch)
    pool = LayerPool()

    def comparison(case):
        return check_case(case, {"torch": (torch_adapter, pool.stack(torch_adapter, case.spec)),
                                 "keras": (keras_adapter, pool.stack(keras_adapter, case.spec))})

    def runnable(case):  # a Keras release without celu (3.0.5) does not compute those cases: not a catch
        return why_not_run(keras_adapter, case.spec) is None

    case = find(cases(breadth_specs()), lambda c: runnable(c) and not comparison(c).passed, settings=SEARCH)
    result = comparison(case)
    pairs = result.failing_pairs()
    assert f"{framework} vs reference" in pairs, result.message()
    other = "keras" if framework == "torch" else "torch"
    assert f"{other} vs reference" not in pairs, result.message()
    layer = pairs[f"{framework} vs reference"]
    assert case.spec.activations[layer] == activation, \
        f"layer {layer} is {case.spec.activations[layer]}, expected the broken {activation}: {result.message()}"
