"""The suite catches small activation drifts, and stays quiet without them (see tests/sensitivity.py)."""

import pytest

from equivalence.core.check import LayerPool
from tests.sensitivity import caught


@pytest.mark.parametrize(("dtype", "drift"), [("float32", 1e-5), ("float64", 1e-13)])
def test_a_small_sigmoid_drift_is_caught_within_the_default_budget(dtype, drift, torch_adapter, keras_adapter):
    assert caught(drift, dtype, LayerPool())


@pytest.mark.parametrize(("dtype", "drift"), [("float32", 1e-8), ("float64", 1e-17)])
def test_a_drift_below_rounding_is_not_an_alarm(dtype, drift, torch_adapter, keras_adapter):
    """Far below eps, a 'drift' is rounding noise: flagging it would be a false alarm."""
    assert not caught(drift, dtype, LayerPool())
