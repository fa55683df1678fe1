"""A failing property leaves a pickle-free case on disk and a snippet that re-runs it."""

import io
import json
import pickle

import numpy as np
import pytest

from equivalence.core.case import make_case
from equivalence.core.compare import compare_layers
from equivalence.core.errors import InputError
from equivalence.core.layout import LayerWeights
from equivalence.core.repro import load_case, save_case, snippet
from equivalence.core.spec import StackSpec
from tests.helpers import BFLOAT16, REPLAY_BUILDS, assert_layers_agree, assert_weights_identical


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", BFLOAT16])
@pytest.mark.parametrize("bias", [True, False])
def test_a_saved_case_loads_back_bit_for_bit(dtype, bias, tmp_path):
    case = make_case(StackSpec(3, (4, 4, 2), ("relu", "tanh", "sigmoid"), bias=bias, dtype=dtype), seed=5, batch=2,
                     weight_scale="fan_in")
    path = save_case(case, "c", tmp_path)
    loaded = load_case(path)
    assert loaded.spec == case.spec
    assert_weights_identical(got=list(loaded.weights), expected=list(case.weights), what="reloaded")
    assert loaded.x.dtype == case.x.dtype and loaded.x.tobytes() == case.x.tobytes()


def test_a_failing_property_writes_the_case_and_prints_how_to_rebuild_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("tests.stats.STATS", {"cross_framework_cases": 0, "cases": 0, "worst": {}})  # not real data
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "tests/test_x.py::test_prop[a-b] (call)")
    case = make_case(StackSpec(3, (3, 2)), seed=1, batch=2)
    wrong = [case.weights[0], LayerWeights(case.weights[1].W, case.weights[1].b + 1)]  # a dropped-bias-like shift
    from equivalence.core.reference import layerwise_reference

    outputs = {"fake": [t.h for t in layerwise_reference(case.spec, wrong, case.x)]}
    comparison = compare_layers(case.spec, case.weights, case.x, outputs)
    with pytest.raises(AssertionError) as failure:
        assert_layers_agree(comparison=comparison, case=case)
    message = str(failure.value)
    assert "fake vs reference, layer 1" in message
    saved = tmp_path / "failures" / "test_prop_a-b_.json"
    assert f"failing case written to failures/{saved.name}" in message
    assert snippet(saved.relative_to(tmp_path), REPLAY_BUILDS) in message
    assert load_case(saved).x.tobytes() == case.x.tobytes()


def test_loading_refuses_a_pickled_array_and_a_broken_file(tmp_path):
    case = make_case(StackSpec(2, (2,)), seed=0, batch=1)
    path = save_case(case, "c", tmp_path)
    buffer = io.BytesIO()
    np.savez(buffer, x=np.array([{"a": 1}], dtype=object), W0=case.weights[0].W, b0=case.weights[0].b)
    path.with_suffix(".npz").write_bytes(buffer.getvalue())
    with pytest.raises(InputError, match="cannot read the arrays"):
        load_case(path)
    path.write_text(json.dumps({"spec": {"input_width": 0}}))
    with pytest.raises(InputError, match="not a saved case"):
        load_case(path)
    path.write_bytes(pickle.dumps(case.spec))
    with pytest.raises(InputError, match="not a saved case"):
        load_case(path)
