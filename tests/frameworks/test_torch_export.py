"""torch.export: each torch layer exported and run as the exported program (``ExportedProgram.module()``).

Properties against eager torch and the reference, a save/load round trip, eager against exported measured bit
for bit, torch's named entries covering it (its registry entry's ``runs_on``); the drifted module caught and the
chained layers are torch.compile's twins in tests/frameworks/test_runtimes.py.
Only in ``make runtimes`` (out of make check's default selection).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings

from equivalence.core.activations import ACTIVATIONS
from equivalence.core.case import make_case
from equivalence.core.check import check_case
from equivalence.core.dtypes import DTYPES
from equivalence.core.known_differences import extra_error
from equivalence.core.spec import StackSpec
from equivalence.core.strategies import ACTIVATION_NAMES, breadth_specs, cases
from tests.helpers import assert_layers_agree

EXPORT_EXAMPLES = settings.default.max_examples // 2
"""A new layer shape is an export (~0.1 s): 50 breadth examples (make runtimes: 200)."""


@settings(max_examples=EXPORT_EXAMPLES)
@given(case=cases(breadth_specs()))
def test_every_exported_layer_agrees_with_eager_torch_and_the_reference(case, torch_export_adapter, torch_adapter,
                                                                        layer_pool):
    models = {"torch_export": (torch_export_adapter, layer_pool.stack(torch_export_adapter, case.spec)),
              "torch": (torch_adapter, layer_pool.stack(torch_adapter, case.spec))}
    assert_layers_agree(comparison=check_case(case, models), case=case)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_exported_layer_runs_eager_torch_s_bits(dtype, torch_export_adapter, torch_adapter):
    """Measured: every activation, every dtype, the exported program's output equals eager torch's bit for bit
    (its graph calls the same ATen ops: aten.linear, then the activation's)."""
    for seed, activation in enumerate(ACTIVATION_NAMES):
        case = make_case(StackSpec(33, (17,), (activation,), dtype=dtype), seed=seed, batch=9, input_scale=3.0,
                         weight_scale="fan_in")
        got = {}
        for adapter in (torch_export_adapter, torch_adapter):
            model = adapter.build(case.spec, "sequential")
            adapter.set_weights(model, case.weights)
            got[adapter.name] = adapter.apply_layer(model, 0, case.x)
        np.testing.assert_array_equal(got["torch_export"], got["torch"], err_msg=f"{activation} {dtype}")


def test_a_saved_and_loaded_program_runs_the_same_bits(torch_export_adapter):
    """torch.export.save / load (no pickle of code: the program's own format) round trip."""
    import torch
    from torch import nn

    from equivalence.frameworks.torch.export import export

    case = make_case(StackSpec(6, (7, 5, 3), ("tanh", "gelu", "softmax")), seed=11, batch=9)
    model = torch_export_adapter.build(case.spec, "sequential")
    torch_export_adapter.set_weights(model, case.weights)
    program = export(model, 6, torch.float32)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    with torch.no_grad():
        y = loaded(torch.from_numpy(case.x)).numpy()
    np.testing.assert_array_equal(y, torch_export_adapter.forward(model, case.x))
    assert isinstance(model, nn.Module)


def test_torch_s_softplus_threshold_holds_in_the_export(torch_export_adapter):
    """``runs_on``: the exported nn.Softplus keeps its threshold 20 (softplus(20.5) is 20.5 in float64)."""
    model = torch_export_adapter.build(StackSpec(1, (1,), ("softplus",), dtype="float64"), "sequential")
    torch_export_adapter.set_weights(model, [(np.ones((1, 1)), np.zeros(1))])
    got = torch_export_adapter.apply_layer(model, 0, np.array([[20.5]]))[0, 0]
    assert got == 20.5 != ACTIVATIONS["softplus"].reference(np.array([20.5]))[0]
    assert extra_error("torch_export", "softplus", "float64") > 0
