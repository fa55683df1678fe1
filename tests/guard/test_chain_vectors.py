"""Golden vectors of chains of every kind (conv, pooling, flatten, norms, dense): their JSON form, how a grown
matrix is recorded (the recorded cases kept byte for byte), and ``verify`` going red at a broken conv."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from equivalence import cli
from equivalence.core.chain import check_chain_weights, spec_from_json, spec_to_json
from equivalence.core.check import LayerPool
from equivalence.core.spec import ChainSpec
from equivalence.guard import golden
from equivalence.guard.fingerprint import fingerprint
from equivalence.guard.matrix import chain_cases, golden_cases, residual_cases, sequence_cases
from tests.helpers import flip_torch_conv_kernels

GOLDEN = Path(__file__).resolve().parents[2] / "golden"


@pytest.mark.parametrize("mcase", chain_cases() + sequence_cases() + residual_cases(), ids=lambda c: c.id)
def test_a_chain_spec_and_its_weights_survive_the_json_form(mcase):
    case = mcase.make()
    assert spec_from_json(spec_to_json(case.spec)) == case.spec
    check_chain_weights(case.spec, case.weights)
    assert case.x.shape == (mcase.inputs.batch, *case.spec.input_shape)


def test_a_chain_case_draws_the_same_arrays_from_its_seed():
    a, b = chain_cases()[0].make(), chain_cases()[0].make()
    assert a.x.tobytes() == b.x.tobytes()
    assert all(wa.W.tobytes() == wb.W.tobytes() for wa, wb in zip(a.weights, b.weights))


def test_a_chain_of_weights_that_do_not_fit_its_kinds_is_refused():
    case = chain_cases()[0].make()
    broken = [*case.weights[:1], case.weights[0], *case.weights[2:]]  # the conv's weights where a pooling is
    with pytest.raises(ValueError, match=r"layer 1 \(pool\) has parameters shaped"):
        check_chain_weights(case.spec, broken)


def test_a_dense_layer_on_a_non_flat_input_is_told_to_follow_a_flatten():
    """The kernel a message asks for must be one that passes: on an (H, W, C) input none does, a flatten does."""
    from equivalence.core.kinds import DENSE, LayerWeights
    from equivalence.core.spatial import Flatten

    W = np.ones((32, 3))
    with pytest.raises(ValueError, match=r"^weights: layer 0 \(dense\) takes a flat input, but gets shape "
                                         r"\(4, 4, 2\): put a flatten layer before it \(its kernel is then "
                                         r"\(32, out\)\)$"):
        check_chain_weights(ChainSpec((4, 4, 2), (DENSE,), ("linear",), "float32"), [LayerWeights(W, None)])
    check_chain_weights(ChainSpec((4, 4, 2), (Flatten((4, 4, 2)), DENSE), ("linear", "linear"), "float32"),
                        [LayerWeights(np.zeros((0,)), None), LayerWeights(W, None)])
    with pytest.raises(ValueError, match=r"kernel has shape \(32, 3\), expected \(8, out\) on input \(8,\)$"):
        check_chain_weights(ChainSpec((8,), (DENSE,), ("linear",), "float32"), [LayerWeights(W, None)])


@pytest.fixture
def two_frameworks(torch_adapter, keras_adapter):
    return {"torch": torch_adapter, "keras": keras_adapter}


def test_a_grown_matrix_adds_its_cases_and_keeps_the_recorded_ones_byte_for_byte(tmp_path, two_frameworks):
    dense = [c for c in golden_cases() if not isinstance(c.spec, ChainSpec)][:2]
    chains = chain_cases()[:2]
    fp = fingerprint(tuple(two_frameworks))
    first = golden.record(tmp_path, dense, two_frameworks, fingerprint=fp, pool=LayerPool())
    before = dict(np.load(first.written))
    existing = golden.load(tmp_path)
    assert golden.added_cases(existing, chains + dense, tuple(two_frameworks), fp) is None  # another order
    assert golden.added_cases(existing, dense, tuple(two_frameworks), fp) is None  # nothing to add
    assert golden.added_cases(existing, dense + chains, ("torch",), fp) is None  # a framework lost
    newer = {**fp, "numpy": "99.0"}
    assert golden.added_cases(existing, dense + chains, tuple(two_frameworks), newer) is None  # a version changed
    added = golden.added_cases(existing, dense + chains, tuple(two_frameworks), fp)
    assert [c.id for c in added] == [c.id for c in chains]

    grown = golden.extend(tmp_path, existing, added, two_frameworks, fingerprint={**fp, "cpu_model": "elsewhere"})
    assert grown.written is not None and not first.written.exists()
    after = dict(np.load(grown.written))
    assert all(after[k].tobytes() == v.tobytes() and after[k].dtype == v.dtype for k, v in before.items())
    vectors = golden.load(tmp_path)
    assert [c.id for c in vectors.cases] == [c.id for c in dense + chains]
    assert vectors.manifest["cases"][:2] == existing.manifest["cases"]
    assert [c.fingerprint is None for c in vectors.cases] == [True, True, False, False]
    assert vectors.fingerprint_of(vectors.cases[-1])["cpu_model"] == "elsewhere"
    assert all(c.passed for c in golden.self_check(vectors))
    result = golden.verify(vectors, two_frameworks)
    assert result.passed and not result.drift, [c.message() for c in result.comparisons]


def test_the_shipped_chain_cases_are_recorded_with_their_own_fingerprint():
    vectors = golden.load(GOLDEN)
    chains = [c for c in vectors.cases if isinstance(c.spec, ChainSpec)]
    assert [c.id for c in chains] == [c.id for c in chain_cases() + sequence_cases() + residual_cases()]
    assert all(c.fingerprint is not None for c in chains)
    assert all(c.fingerprint is None for c in vectors.cases if c not in chains)
    kinds = {k.name for c in chains for k in c.spec.kinds}
    assert kinds == {"conv", "pool", "flatten", "batchnorm", "layernorm", "dense", "embedding", "mean", "attention",
                     "lstm", "gru", "add", "branch"}


def test_verify_fails_at_the_conv_layers_of_the_chains_when_torch_flips_its_kernels(
        monkeypatch, tmp_path, torch_adapter, keras_adapter, capsys):
    """A torch conv computing a true convolution (its kernel flipped) instead of a cross-correlation."""
    flip_torch_conv_kernels(monkeypatch)
    folder = Path(shutil.copytree(GOLDEN, tmp_path / "golden"))
    assert cli.main(["verify", str(folder)]) == cli.EXIT_DISAGREE
    out = capsys.readouterr().out
    fails = re.findall(r"^FAIL (\S+): (\S+) vs (\S+), layer (\d+) \((\w+)", out, flags=re.MULTILINE)
    assert fails, out
    vectors = golden.load(folder)
    for case_id, a, b, layer, kind in fails:
        spec = vectors.case(case_id).spec
        assert isinstance(spec, ChainSpec) and spec.kinds[int(layer)].name == kind == "conv", (case_id, layer)
        assert "torch" in (a, b) and "keras" not in (a, b) or (a, b) == ("torch", "keras")
    conv_cases = {c.id for c in vectors.cases if isinstance(c.spec, ChainSpec)
                  and any(k.name == "conv" and max(k.kernel) > 1 for k in c.spec.kinds)}
    assert {f[0] for f in fails} == conv_cases  # every chain with a conv wider than 1x1, nothing else
    assert re.search(r"^FAIL torch (\w+) (\w+) moved beyond the error model since recording", out,
                     flags=re.MULTILINE), out
    assert "looks like: kernel flipped" in out, out


@pytest.mark.parametrize("name", ["mxnet", "ort", "torch_compile", "torch_export", "keras_graph", "keras_xla", "litert",
                                  "litert_fp16w"])
def test_a_framework_that_builds_dense_stacks_only_lists_the_chains_as_not_run(name):
    """A runtime never runs a chain through the eager framework under its own name."""
    from equivalence.core.adapter import FrameworkRefused, FrameworkUnavailable
    from equivalence.core.check import why_not_run
    from equivalence.frameworks.registry import get_adapter

    try:
        adapter = get_adapter(name)
    except FrameworkUnavailable as exc:
        pytest.skip(str(exc))
    case = next(c for c in chain_cases() if c.dtype == "float32").make()  # a dtype every runtime computes
    assert why_not_run(adapter, case.spec) == (f"{name} builds dense stacks only here (no conv, pooling, norm, "
                                               "sequence or recurrent layers)")
    with pytest.raises(FrameworkRefused, match="builds dense stacks only"):
        adapter.build_chain(case.spec, case.weights)
