"""Save/load round trips give bit-identical weights and layer outputs; a torch checkpoint crosses to Keras.

Every framework that declares ``save_load``, in every save format and registering style its registry entry
lists (``conftest.py``): torch ``.pt`` (``state_dict`` through ``torch.save`` / ``torch.load(weights_only=True)``),
Keras ``.weights.h5`` (save_weights / load_weights) and ``.keras`` (``load_model``, safe_mode on), MXNet
``.params`` (``save_parameters`` / ``load_parameters``).
The meta tests patch the *framework*'s loading so that it alters one weight, and the
check must name the layer.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from equivalence.core.case import make_case
from equivalence.core.check import LayerPool, check_case
from equivalence.core.spec import StackSpec
from equivalence.core.strategies import boundary_widths_up_to, breadth_specs, cases
from equivalence.core.transfer import transfer
from equivalence.frameworks.base import FrameworkRefused
from tests.helpers import assert_weights_identical, assume_runnable, build_loaded, computable_cases, keras3_only

CANNOT_HOLD = {
    ("keras", "subclass", ".keras"): "a Keras Model subclass has no get_config, so a .keras file cannot hold it "
                                     "(the adapter refuses it: test_keras_quirks)",
}
"""(framework, style, format) a format cannot hold by design, with the reason."""
# Writing files per example: fixtures (tmp_path) are per test, so each example gets its own name.
FILES = settings(max_examples=6, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                 deadline=None)


def _assert_reload_identical(adapter, case, original, reloaded, what):
    assert_weights_identical(got=adapter.get_weights(reloaded), expected=adapter.get_weights(original), what=what)
    for layer, (a, b) in enumerate(zip(adapter.taps(original, case.x), adapter.taps(reloaded, case.x))):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), \
            f"{what}: layer {layer} outputs differ after reload (greatest diff {np.max(np.abs(a - b)):.3g})"


@pytest.mark.needs("save_load")
@FILES
@given(data=st.data())
def test_a_reloaded_model_is_bit_identical(data, framework, registering_style, save_format, adapter,
                                          tmp_path_factory):
    """Every activation and every dtype the framework computes, at most 4 layers of width 16."""
    style = registering_style
    if (framework, style, save_format) in CANNOT_HOLD:
        pytest.skip(CANNOT_HOLD[framework, style, save_format])
    case = data.draw(computable_cases(adapter, small=True), label="case")
    original = build_loaded(adapter, case, style)
    path = tmp_path_factory.mktemp("save") / f"model{save_format}"
    try:
        adapter.save(original, path)
    except FrameworkRefused:  # a dtype the framework's file format cannot hold (Keras 2: bfloat16 in HDF5)
        reject()
    reloaded = adapter.load(path, case.spec, style)
    what = f"{framework} {style} {save_format}"
    assert_weights_identical(got=adapter.get_weights(reloaded), expected=case.weights, what=what)
    _assert_reload_identical(adapter, case, original, reloaded, what)


@pytest.mark.needs("save_load")
def test_saving_never_overwrites_and_refuses_a_format_or_a_model_it_cannot_save(framework, adapter, tmp_path):
    case = make_case(StackSpec(3, (4, 2), ("gelu", "mish")), seed=2, batch=2)
    model = build_loaded(adapter, case, adapter.styles[0])
    formats = adapter.framework.save_formats
    existing = tmp_path / f"model{formats[0]}"
    existing.write_bytes(b"the user's file")
    with pytest.raises(FileExistsError, match="never overwrites"):
        adapter.save(model, existing)
    assert existing.read_bytes() == b"the user's file"
    with pytest.raises(ValueError, match=rf"{framework} saves to {re.escape(', '.join(formats))} files"):
        adapter.save(model, tmp_path / "model.not-a-format")
    with pytest.raises(TypeError, match="not a list of bare layers"):
        adapter.save(LayerPool().stack(adapter, case.spec), tmp_path / f"bare{formats[0]}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing.name], "a refused save wrote a file"


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(breadth_specs(max_depth=4, width=boundary_widths_up_to(16))))
def test_a_torch_checkpoint_transferred_into_keras_agrees_with_the_reference(case, torch_adapter, keras_adapter,
                                                                             tmp_path_factory):
    assume_runnable(case, torch_adapter, keras_adapter)
    source = build_loaded(torch_adapter, case, "sequential")
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch_adapter.save(source, path)
    loaded = torch_adapter.load(path, case.spec, "sequential")  # state_dict keys follow the style
    target = keras_adapter.build(case.spec, "functional")
    transfer(torch_adapter, loaded, keras_adapter, target)
    assert_weights_identical(got=keras_adapter.get_weights(target), expected=case.weights, what="checkpoint -> keras")
    result = check_case(case, {"keras": (keras_adapter, target)})
    assert result.passed, result.message()


def test_saving_never_overwrites_and_refuses_what_it_cannot_save(torch_adapter, keras_adapter, tmp_path):
    case = make_case(StackSpec(3, (4, 2)), seed=0, batch=2)
    existing = tmp_path / "model.pt"
    existing.write_bytes(b"user data")
    with pytest.raises(FileExistsError, match="never overwrites"):
        torch_adapter.save(build_loaded(torch_adapter, case, "sequential"), existing)
    assert existing.read_bytes() == b"user data"
    with pytest.raises(ValueError, match="registers no parameters .*plain python list"):
        torch_adapter.save(build_loaded(torch_adapter, case, "plain_list"), tmp_path / "plain.pt")
    with pytest.raises(ValueError, match=r"saves to \.weights\.h5, \.keras files"):
        keras_adapter.save(build_loaded(keras_adapter, case, "functional"), tmp_path / "model.h5")
    assert not (tmp_path / "plain.pt").exists() and not (tmp_path / "model.h5").exists()


# --- a reload that alters weights, in either framework ------------------------

def _patch_torch_load_to_nudge_layer_1(monkeypatch):
    import torch

    original = torch.load

    def load(*args, **kwargs):
        state = original(*args, **kwargs)
        key = sorted(k for k in state if k.endswith("weight"))[1]  # the second Linear's weight
        state[key] = torch.nextafter(state[key], torch.full_like(state[key], np.inf))  # one ulp up
        return state

    monkeypatch.setattr(torch, "load", load)


def _patch_keras_dense_loading_to_nudge_layer_1(monkeypatch):
    import keras

    original = keras.layers.Dense.load_own_variables

    def load_own_variables(self, store):
        original(self, store)
        if self.kernel.shape == (4, 5):  # the second layer of StackSpec(3, (4, 5, 2))
            self.kernel.assign(np.nextafter(self.kernel.numpy(), np.inf))

    monkeypatch.setattr(keras.layers.Dense, "load_own_variables", load_own_variables)


@pytest.mark.parametrize(("framework", "fmt", "style"),
                         [("torch", ".pt", "sequential"),
                          pytest.param("keras", ".weights.h5", "functional", marks=keras3_only),  # patches Keras 3
                          pytest.param("keras", ".keras", "sequential", marks=keras3_only)],
                         ids=["torch-pt", "keras-weights.h5", "keras-keras"])
def test_a_reload_that_alters_one_weight_by_one_ulp_is_caught_naming_the_layer(framework, fmt, style, monkeypatch,
                                                                               tmp_path, request):
    adapter = request.getfixturevalue(f"{framework}_adapter")
    {"torch": _patch_torch_load_to_nudge_layer_1, "keras": _patch_keras_dense_loading_to_nudge_layer_1}[framework](
        monkeypatch)
    case = make_case(StackSpec(3, (4, 5, 2), ("relu", "linear", "tanh")), seed=3, batch=4)
    original = build_loaded(adapter, case, style)
    adapter.save(original, tmp_path / f"model{fmt}")
    reloaded = adapter.load(tmp_path / f"model{fmt}", case.spec, style)
    with pytest.raises(AssertionError, match="layer 1 kernel differs: .* 20 elements differ"):
        _assert_reload_identical(adapter, case, original, reloaded, f"{framework} {fmt}")
