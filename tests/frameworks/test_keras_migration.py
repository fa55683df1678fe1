"""Moving between Keras 2 and Keras 3: the other Keras' golden vectors fail on exactly ``hard_sigmoid``.

``golden/`` was recorded under Keras 3, ``tests/golden-keras2/`` under Keras 2 (tf-keras, ``TF_USE_LEGACY_KERAS=1``,
``make keras2``). Whichever Keras runs here verifies the *other* one's vectors: Keras 2 defines ``hard_sigmoid``
as ``clip(0.2 z + 0.5, 0, 1)`` and Keras 3 as ``relu6(z + 3) / 6``. Each side passes the error model against its
own definition (the named difference ``keras2_hard_sigmoid_slope_0_2``), yet the output moved by up to 1/12
since it was recorded, so ``verify`` must fail there, naming the activation, both Keras versions and the size of
the move, and pass every other case. In bfloat16 the move (8 ulps) is inside the error model: drift shows it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from equivalence.core.conditions import version_tuple
from equivalence.guard import golden

ROOT = Path(__file__).resolve().parents[2]
OTHER_KERAS = {"keras/tensorflow": ROOT / "tests" / "golden-keras2", "keras2/tensorflow": ROOT / "golden"}
"""The variant running here -> the vectors the other Keras recorded."""
OTHERS = 6
"""Cases without hard_sigmoid verified beside the hard_sigmoid ones (every one of them must pass)."""


@pytest.fixture(scope="module")
def round_trip(torch_adapter, keras_adapter):
    folder = OTHER_KERAS.get(keras_adapter.variant)
    if folder is None:
        pytest.skip(f"Keras 2 and Keras 3 run on TensorFlow; here Keras is {keras_adapter.variant}")
    vectors = golden.load(folder)
    moving = [c for c in vectors.cases if "hard_sigmoid" in c.spec.activations]
    others = [c for c in vectors.cases if "hard_sigmoid" not in c.spec.activations][:: len(vectors.cases) // OTHERS]
    subset = dataclasses.replace(vectors, cases=tuple(moving + others))
    return subset, golden.verify(subset, {"torch": torch_adapter, "keras": keras_adapter})


def test_the_other_keras_vectors_fail_on_exactly_hard_sigmoid(round_trip):
    subset, result = round_trip
    assert all(c.passed for c in result.comparisons), [c.message() for c in result.comparisons if not c.passed]
    assert not result.passed
    assert {(m.framework, m.activation, m.dtype) for m in result.moved} == {
        ("keras", "hard_sigmoid", dtype) for dtype in ("float64", "float32", "float16")}
    hard_sigmoid_cases = {c.id for c in subset.cases if "hard_sigmoid" in c.spec.activations}
    assert {m.case_id for m in result.moved} < hard_sigmoid_cases
    for m in result.moved:
        assert {version_tuple(m.recorded_version)[0], version_tuple(m.current_version)[0]} == {2, 3}, m
        assert m.result.max_abs > 0.01 and m.result.ratio > 1, m  # up to 1/12 in the value
    bfloat16 = {d.case_id for d in result.drift if d.source == "keras" and d.dtype == "bfloat16"}
    assert bfloat16 & hard_sigmoid_cases  # moved too, within bfloat16's error model: drift shows it


def test_the_failure_names_the_activation_the_versions_and_the_size(round_trip, capsys):
    from equivalence.cli import _print_moved

    _, result = round_trip
    _print_moved(result.moved)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for line in lines:
        assert line.startswith("FAIL keras hard_sigmoid ") and "moved beyond the error model since recording" in line
        assert "x the bound" in line and "ulps of" in line
        recorded, now = result.moved[0].recorded_version, result.moved[0].current_version
        assert f"keras {recorded} when recorded, {now} now" in line
