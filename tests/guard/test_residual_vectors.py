"""Golden vectors of the residual Add (``equivalence.core.residual``): chains adding a skip, two computed branches, a
conv block and a block of self-attention are recorded in every dtype, read back with their skips, and ``verify``
goes red at exactly the Add layers when torch's add drops or doubles an operand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from equivalence.core.residual import INPUT, Branch, Residual
from equivalence.core.spec import ChainSpec
from equivalence.guard import golden
from equivalence.guard.matrix import RESIDUAL_BLUEPRINTS, residual_cases

GOLDEN = Path(__file__).resolve().parents[2] / "golden"


def _with_adds(vectors: golden.GoldenSet) -> golden.GoldenSet:
    """The shipped vectors cut down to the chains holding a residual Add."""
    cases = tuple(c for c in vectors.cases
                  if isinstance(c.spec, ChainSpec) and any(isinstance(k, Residual) for k in c.spec.kinds))
    return golden.GoldenSet(vectors.folder, vectors.manifest, cases)


def test_the_residual_chains_are_recorded_in_every_dtype_with_their_skips():
    vectors = golden.load(GOLDEN)
    recorded = {c.id: c for c in _with_adds(vectors).cases}
    assert list(recorded) == [c.id for c in residual_cases()]
    assert len(recorded) == 5 * len(RESIDUAL_BLUEPRINTS)  # four dtypes, and float32 at a larger scale
    assert {c.spec.dtype for c in recorded.values()} == {"float64", "float32", "float16", "bfloat16"}
    for case in residual_cases():
        assert recorded[case.id].spec == case.spec, "the skips and branches read back as recorded"
    skips = {(c.spec.kinds[i].skip, c.spec.kinds[i - 1].name) for c in recorded.values()
             for i, k in enumerate(c.spec.kinds) if isinstance(k, Residual)}
    assert {skip for skip, _ in skips} >= {INPUT, 0, 2}  # the input, a layer's output, an Add's output
    assert {before for _, before in skips} >= {"dense", "conv", "attention"}
    assert any(isinstance(k, Branch) for c in recorded.values() for k in c.spec.kinds)
    manifest = json.loads((GOLDEN / golden.MANIFEST).read_text())
    assert not [e["id"] for e in manifest["cases"] if e["id"] in recorded and "not_run" in e], \
        "both frameworks computed every layer of every residual chain"


def test_the_recorded_residual_chains_agree_here(torch_adapter, keras_adapter):
    vectors = _with_adds(golden.load(GOLDEN))
    result = golden.verify(vectors, {"torch": torch_adapter, "keras": keras_adapter})
    assert result.passed, [c.message() for c in result.comparisons if not c.passed]
    assert all(c.passed for c in golden.self_check(vectors))
    adds = [r for c in result.comparisons for r in c.results
            if isinstance(vectors.case(c.case_id).spec.kinds[r.layer], Residual)]
    assert len(adds) == 3 * sum(isinstance(k, Residual) for c in vectors.cases for k in c.spec.kinds)  # 3 pairs


def _drop_the_skip(monkeypatch) -> None:
    """torch's add keeps its second operand only (the chain writes ``skip + branch``): the skip connection lost."""
    import torch

    monkeypatch.setattr(torch.Tensor, "__add__", lambda self, other: other)


def _double_the_skip(monkeypatch) -> None:
    """torch's add counts its first operand twice (``2 * skip + branch``)."""
    import torch

    original = torch.Tensor.__add__
    monkeypatch.setattr(torch.Tensor, "__add__", lambda self, other: original(original(self, self), other))


@pytest.mark.parametrize("break_add", [_drop_the_skip, _double_the_skip], ids=["dropped", "doubled"])
def test_verify_fails_at_exactly_the_add_layers_when_torch_adds_wrongly(break_add, monkeypatch, tmp_path,
                                                                        torch_adapter, keras_adapter):
    """Every residual chain, in every dtype, fails at each of its Adds and nowhere else, torch's pairs only: an Add
    off by a whole operand sits over ``1/(64 eps)`` times its bound (8 in bfloat16)."""
    vectors = _with_adds(golden.load(Path(shutil.copytree(GOLDEN, tmp_path / "golden"))))
    adapters = {"torch": torch_adapter, "keras": keras_adapter}
    break_add(monkeypatch)
    result = golden.verify(vectors, adapters)
    assert not result.passed
    for comparison in result.comparisons:
        spec = vectors.case(comparison.case_id).spec
        adds = {i for i, k in enumerate(spec.kinds) if isinstance(k, Residual)}
        failed = {(r.pair, r.layer) for r in comparison.failures}
        assert {layer for _, layer in failed} == adds, (comparison.case_id, comparison.message())
        assert {pair for pair, _ in failed} == {("torch", "reference"), ("torch", "keras")}, comparison.message()
        assert "(add" in comparison.message()
    assert {(m.case_id, m.layer) for m in result.moved} == {
        (c.id, i) for c in vectors.cases for i, k in enumerate(c.spec.kinds) if isinstance(k, Residual)}
    assert {m.framework for m in result.moved} == {"torch"}


def _manifest_with_skip(tmp_path: Path, skip: int) -> Path:
    """A copy of the shipped vectors whose first residual chain's first Add takes ``skip``."""
    folder = Path(shutil.copytree(GOLDEN, tmp_path / "golden"))
    manifest = json.loads((folder / golden.MANIFEST).read_text())
    entry = next(e for e in manifest["cases"] if e["id"] == residual_cases()[0].id)
    layer = next(layer for layer in entry["spec"]["layers"] if layer["kind"]["name"] == "add")
    layer["kind"]["skip"] = skip
    (folder / golden.MANIFEST).write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize(("skip", "problem"), [
    (-2, r"skip must be a layer's index or -1 \(the model's input\), got -2"),
    (1, r"layer 2 \(add\) takes layer 1's output, but it may take the model's input \(-1\) or a layer's output up "
        r"to layer 0"),
    (0, r"layer 2 \(add\) names features \(8,\), but layer 0's output is shaped \(16,\)"),
])
def test_a_manifest_whose_add_takes_a_value_it_cannot_is_refused_in_one_line(skip, problem, tmp_path):
    folder = _manifest_with_skip(tmp_path, skip)
    with pytest.raises(golden.InputError, match=problem) as refused:
        golden.load(folder)
    assert "\n" not in str(refused.value)
