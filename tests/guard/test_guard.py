"""The shipped golden vectors verify, and a framework that drifts makes ``verify`` fail naming the layer.

``verify`` runs in-process (``cli.main``): the frameworks are imported once per
test session, and the CLI keeps one layer pool per process.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from equivalence import cli
from equivalence.core import known_differences
from equivalence.core.check import why_not_run
from equivalence.core.compare import compare_layers
from equivalence.core.conditions import RecordedFacts
from equivalence.core.spec import StackSpec
from equivalence.core.tolerance import RECORDED
from equivalence.guard import golden
from equivalence.guard.fingerprint import fingerprint, flatten
from equivalence.guard.golden import ulp_distance
from equivalence.guard.matrix import golden_cases
from tests.helpers import BFLOAT16, KERAS2, keras3_vectors, needs_bfloat16

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
GOLDEN_KERAS2 = Path(__file__).resolve().parents[1] / "golden-keras2"
"""The same cases recorded under Keras 2 (golden/'s hard_sigmoid cases fail there by design)."""


@needs_bfloat16  # the shipped set holds bfloat16 cases
def test_the_shipped_vectors_are_small_and_hold_the_golden_case_set():
    vectors = golden.load(GOLDEN)
    assert sum(p.stat().st_size for p in GOLDEN.iterdir()) < 2_000_000
    assert [c.id for c in vectors.cases] == [c.id for c in golden_cases()], (
        "the golden case set (equivalence/guard/matrix.py) changed: re-record with `make baseline`")
    dense = [c for c in vectors.cases if isinstance(c.spec, StackSpec)]
    assert len(dense) == 114  # about 100, with the breadth block (every activation and dtype)
    assert len(vectors.cases) - len(dense) == 60  # chains of conv, pooling, flatten, norm and dense layers (20),
    # of the sequence and recurrent kinds: embedding, mean over the tokens, attention, LSTM, GRU (20), and residual
    # Adds (20)
    assert set(vectors.frameworks) == {"torch", "keras"}


@keras3_vectors
def test_make_guard_passes_against_the_shipped_vectors(torch_adapter, keras_adapter, capsys):
    assert cli.main(["verify", str(GOLDEN)]) == cli.EXIT_OK, capsys.readouterr().out
    out = capsys.readouterr().out
    assert re.search(r"error model: (\d+) of \1 layer comparisons agree", out), out
    assert "drift against the recorded outputs" in out


def test_torch_sigmoid_drifting_by_1e_4_relative_makes_verify_fail_naming_the_layer(
        monkeypatch, torch_adapter, keras_adapter, capsys):
    import torch

    original = torch.nn.Sigmoid.forward
    monkeypatch.setattr(torch.nn.Sigmoid, "forward", lambda self, x: original(self, x) * (1 + 1e-4))
    assert cli.main(["verify", str(GOLDEN)]) == cli.EXIT_DISAGREE
    out = capsys.readouterr().out
    fails = re.findall(r"^FAIL (\S+): (\w+) vs (\w+), layer (\d+):", out, flags=re.MULTILINE)
    assert fails, out
    activations = {c.id: c.spec.activations for c in golden.load(GOLDEN).cases}
    for case_id, a, b, layer in fails:
        assert "torch" in (a, b), f"{case_id}: {a} vs {b} failed, but only torch was changed"
        assert activations[case_id][int(layer)] == "sigmoid", f"{case_id} layer {layer} is not a sigmoid layer"
    assert ("1-1_sigmoid_f32_n1_x1_unit_layers", "torch", "reference", "0") in fails, out
    # the mixed stack: only layer 0 is a sigmoid layer
    mixed = [f for f in fails if f[0] == "3-5sigmoid-5tanh-2relu_f32_n1_x1_unit_layers"]
    assert {f[3] for f in mixed} == {"0"}, out
    assert re.search(r"torch: \d+ of \d+ cases changed; \d+ layers moved; "
                     r"largest change \d+ ulps of (float64|float32|float16|bfloat16)", out)


# --- ulps ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", BFLOAT16])
def test_ulp_distance_counts_representable_steps(dtype):
    from equivalence.core.dtypes import numpy_dtype

    dt = numpy_dtype(dtype)
    uint = np.dtype(f"uint{dt.itemsize * 8}")
    a = np.array([1.0, -2.0, 0.0, 0.5, 3e-3, -7.0], dtype=dt)
    three_away = (a.view(uint) + uint.type(3)).view(dt)  # three steps away from zero, whatever the sign
    np.testing.assert_array_equal(ulp_distance(a, three_away, dtype), [3] * a.size)
    np.testing.assert_array_equal(ulp_distance(three_away, a, dtype), [3] * a.size)
    zero, one_up = np.array([0.0], dt), np.array([1], uint).view(dt)
    assert ulp_distance(zero, -zero, dtype)[0] == 0
    assert ulp_distance(one_up, -one_up, dtype)[0] == 2  # the smallest subnormals, either side of zero
    nan = np.array([np.nan], dt)
    assert ulp_distance(nan, nan, dtype)[0] == 0
    assert ulp_distance(nan, np.array([1.0], dt), dtype)[0] == np.inf


# --- a framework verified alone: the others stand in through their recorded outputs -------------

@needs_bfloat16
def test_torch_verified_alone_is_compared_with_keras_recorded_outputs(torch_adapter):
    result = golden.verify(golden.load(GOLDEN), {"torch": torch_adapter})
    pairs = {r.pair for c in result.comparisons for r in c.results}
    assert ("torch", "keras@recorded") in pairs and ("torch", "reference") in pairs, pairs
    assert result.passed and not result.not_run


@needs_bfloat16
def test_each_framework_verified_alone_agrees_with_the_reference_and_every_recorded_framework(framework, adapter):
    """How a framework no venv shares with torch or Keras (MXNet) meets them: through their recorded outputs.
    A case it cannot compute (``Adapter.cannot``) is listed not run; every other case runs."""
    vectors = golden.load(GOLDEN_KERAS2 if KERAS2 and framework == "keras" else GOLDEN)  # each Keras its own
    result = golden.verify(vectors, {framework: adapter})
    assert result.passed, "\n".join(c.message() for c in result.comparisons if not c.passed)
    pairs = {r.pair for c in result.comparisons for r in c.results}
    expected = {(framework, "reference")} | {(framework, f"{other}{RECORDED}") for other in vectors.frameworks
                                             if other != framework}
    assert expected <= pairs, f"got pairs {sorted(pairs)}, but should hold {sorted(expected - pairs)}"
    assert {r.case_id for r in result.not_run} == {c.id for c in vectors.cases if why_not_run(adapter, c.spec)}
    ran = sum(any(r.pair[0] == framework for r in c.results) for c in result.comparisons)
    whole = sum(not r.layers for r in result.not_run)  # a case not run at all; a missing celu skips only its layer
    assert ran == len(vectors.cases) - whole > 50


@needs_bfloat16
def test_recorded_keras_outputs_keep_the_known_differences_of_the_backend_they_were_recorded_on(
        monkeypatch, torch_adapter):
    """Found on KERAS_BACKEND=jax: the shipped Keras outputs (TensorFlow's float32 gelu constant in float64,
    its subnormal flush...) were judged with jax's named differences and failed. Outputs computed now
    follow this process's backend; recorded ones, the backend in the manifest's fingerprint."""
    vectors = golden.load(GOLDEN)
    assert vectors.keras_backend == "tensorflow"
    tf_only = {c.id for c in vectors.cases if c.spec.dtype == "float64"
               and {"gelu", "leaky_relu_0.2"} & set(c.spec.activations)}
    assert tf_only, "the golden set lost its float64 gelu/leaky_relu cases: pick cases a TF-only entry covers"
    subset = golden.GoldenSet(vectors.folder, vectors.manifest, tuple(c for c in vectors.cases if c.id in tf_only))
    jax_here = RecordedFacts({**flatten(fingerprint(("torch",))), "frameworks.keras.keras_backend": "jax"},
                             recorded=False)
    monkeypatch.setattr(known_differences, "FACTS", jax_here)  # as in a make check KERAS_BACKEND=jax process
    result = golden.verify(subset, {"torch": torch_adapter})
    assert result.passed, [c.message() for c in result.comparisons if not c.passed]
    case = subset.cases[0]  # judged as if recorded on jax, the same outputs fail
    as_jax = compare_layers(case.spec, case.weights, case.x, {f"keras{RECORDED}": case.outputs["keras"]},
                            reference=case.traces(), facts={f"keras{RECORDED}": jax_here})
    assert not as_jax.passed


@needs_bfloat16
def test_torch_drifting_alone_fails_against_keras_recorded_outputs(monkeypatch, torch_adapter):
    import torch

    original = torch.nn.Sigmoid.forward
    monkeypatch.setattr(torch.nn.Sigmoid, "forward", lambda self, x: original(self, x) * (1 + 1e-4))
    result = golden.verify(golden.load(GOLDEN), {"torch": torch_adapter})
    failing = {pair for c in result.comparisons for pair in c.failing_pairs()}
    assert failing == {"torch vs reference", "torch vs keras@recorded"}, failing


class _Gaps:
    """The torch adapter declaring gaps: whole dtypes (``"*"``, as MXNet's float16 on CPU) or (activation,
    dtype) pairs (as ONNX Runtime's float64 Erf)."""

    def __init__(self, adapter, gaps):
        self._adapter, self._gaps = adapter, gaps

    def cannot(self, activation, dtype):
        return self._gaps.get((activation, dtype)) or self._gaps.get(("*", dtype))

    def __getattr__(self, name):
        return getattr(self._adapter, name)


@needs_bfloat16
def test_cases_in_a_dtype_the_framework_cannot_compute_are_listed_not_run(torch_adapter, capsys):
    vectors = golden.load(GOLDEN)
    gaps = {("*", "float16"): "no float16 kernel here", ("*", "bfloat16"): "no bfloat16 kernel here"}
    result = golden.verify(vectors, {"torch": _Gaps(torch_adapter, gaps)})
    half = {c.id for c in vectors.cases if c.spec.dtype in ("float16", "bfloat16")}
    assert half and {r.case_id for r in result.not_run} == half
    assert {r.reason for r in result.not_run} == {"no float16 kernel here", "no bfloat16 kernel here"}
    ran = {c.case_id for c in result.comparisons if any(r.pair[0] == "torch" for r in c.results)}
    assert ran == {c.id for c in vectors.cases} - half and result.passed
    cli._print_not_run(result.not_run, len(vectors.cases))
    assert f"torch: {len(half)} of {len(vectors.cases)} cases not run" in capsys.readouterr().out


@needs_bfloat16
def test_gaps_that_come_in_activation_dtype_pairs_are_listed_not_run(torch_adapter, capsys):
    vectors = golden.load(GOLDEN)
    result = golden.verify(vectors, {"torch": _Gaps(torch_adapter, {("gelu", "float64"): "no float64 Erf kernel"})})
    gelu64 = {c.id for c in vectors.cases if c.spec.dtype == "float64" and "gelu" in c.spec.activations}
    assert gelu64 and {r.case_id for r in result.not_run} == gelu64 and result.passed
    assert any(c.spec.dtype == "float64" and c.id not in gelu64 for c in vectors.cases)  # other float64 cases ran
    for r in result.not_run:  # only the gelu layers: every layer is fed the recorded input, so the others run
        spec = next(c.spec for c in vectors.cases if c.id == r.case_id)
        assert r.layers == tuple(i for i, act in enumerate(spec.activations) if act == "gelu"), r
        compared = {x.layer for c in result.comparisons if c.case_id == r.case_id for x in c.results
                    if x.pair[0] == "torch"}
        assert compared == set(range(spec.depth)) - set(r.layers), r
    cli._print_not_run(result.not_run, len(vectors.cases))
    assert (f"torch: {len(gelu64)} of {len(vectors.cases)} cases run in part (their other layers checked), layers "
            f"not run: no float64 Erf kernel ({len(gelu64)} cases)") in capsys.readouterr().out


@needs_bfloat16
def test_a_framework_refusing_a_case_mid_run_lists_it_not_run_and_goes_on(torch_adapter, monkeypatch, capsys):
    """A runtime that refuses a graph or kernel mid-run (ONNX Runtime's InvalidGraph) is never a traceback."""
    from equivalence.frameworks.base import FrameworkRefused

    real = torch_adapter.apply_layer

    def refuse_softplus(model, index, x):
        if any(type(m).__name__ == "Softplus" for pair in model for m in pair):
            raise FrameworkRefused("torch 2.13: no Softplus kernel (simulated)")
        return real(model, index, x)

    monkeypatch.setattr(torch_adapter, "apply_layer", refuse_softplus)
    vectors = golden.load(GOLDEN)
    result = golden.verify(vectors, {"torch": torch_adapter})
    softplus = {c.id for c in vectors.cases if "softplus" in c.spec.activations}
    assert softplus and {r.case_id for r in result.not_run} == softplus
    assert {r.reason for r in result.not_run} == {"torch 2.13: no Softplus kernel (simulated)"} and result.passed


def test_a_framework_that_can_compute_no_case_is_a_clear_input_error():
    not_run = [golden.NotRun("mxnet", f"case{i}", "float16", "no float16 kernel") for i in range(3)]
    with pytest.raises(cli.InputError, match=r"--framework mxnet: it can compute none of the 3 cases \(dtypes float16"):
        cli._print_not_run(not_run, 3)


# --- the vectors' own consistency -----------------------------------------------------

def vectors_with(tmp_path: Path, change) -> Path:
    """A copy of the shipped vectors with ``change(key, array)`` applied to every array, sha256 recomputed."""
    import shutil

    return damage(Path(shutil.copytree(GOLDEN, tmp_path / "golden")), change)


def damage(folder: Path, change) -> Path:
    """``change(key, array)`` applied to every array of the vectors in ``folder``, sha256 recomputed."""
    import hashlib
    import io
    import json

    manifest = json.loads((folder / golden.MANIFEST).read_text())
    path = folder / manifest["data"]["file"]
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: change(key, npz[key]) for key in npz.files}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    manifest["data"]["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    (folder / golden.MANIFEST).write_text(json.dumps(manifest))
    return folder


def test_the_shipped_vectors_agree_with_themselves(capsys):
    vectors = golden.load(GOLDEN)
    checks = golden.self_check(vectors)
    assert len(checks) == len(vectors.cases) and all(c.passed for c in checks), [c.message() for c in checks]
    pairs = {r.pair_name for c in checks for r in c.results}
    assert pairs == {f"torch{RECORDED} vs reference", f"keras{RECORDED} vs reference",
                     f"torch{RECORDED} vs keras{RECORDED}"}


def keras_times_1_01(key: str, a: np.ndarray) -> np.ndarray:
    return (a * 1.01).astype(a.dtype) if ".keras" in key and a.dtype.kind == "f" else a


def test_record_does_not_keep_vectors_that_contradict_themselves(tmp_path, torch_adapter, keras_adapter, capsys):
    """Same cases, same versions: kept by default, unless the vectors there are inconsistent."""
    folder = tmp_path / "golden"
    assert cli.main(["record", str(folder), "-k", "1-1_sigmoid"]) == 0
    damage(folder, keras_times_1_01)
    capsys.readouterr()
    assert cli.main(["record", str(folder), "-k", "1-1_sigmoid"]) == 0
    assert capsys.readouterr().out.startswith("recorded "), "inconsistent vectors must be re-recorded, not kept"
    assert all(c.passed for c in golden.self_check(golden.load(folder)))


def test_recorded_keras_outputs_off_by_1_percent_fail_as_inconsistent_vectors_not_as_drift(
        tmp_path, torch_adapter, keras_adapter, capsys):
    """The issue's reproduction: Keras' recorded outputs x 1.01 (sha256 recomputed) used to pass as drift."""
    folder = vectors_with(tmp_path, keras_times_1_01)
    assert cli.main(["verify", str(folder)]) == cli.EXIT_DISAGREE
    out = capsys.readouterr().out
    assert re.search(r"error model: (\d+) of \1 layer comparisons agree", out), "the installed frameworks agree"
    assert re.search(r"^vectors inconsistent: 1-1_sigmoid_f32_n1_x1_unit_layers, keras@recorded vs reference, "
                     r"layer 0, ratio \d", out, flags=re.MULTILINE), out
    assert "torch@recorded vs reference" not in out, "torch's recorded outputs were not changed"
    assert re.search(r"^FAIL: vectors inconsistent in \d+ of 174 cases", out, flags=re.MULTILINE), out
    assert "OK:" not in out
    assert not re.search(r"^FAIL \S+: ", out, flags=re.MULTILINE), "no installed framework failed"


# --- the baseline policy and drift causes ------------------------------------------------------

def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _edit_fingerprint(folder: Path, edit) -> None:
    import json

    for name in (golden.MANIFEST, golden.ACCURACY_FILE):  # recorded together, under one fingerprint
        path = folder / name
        if path.is_file():
            recorded = json.loads(path.read_text())
            edit(recorded["fingerprint"])
            path.write_text(json.dumps(recorded))


def test_record_keeps_vectors_of_the_same_versions_and_rerecords_on_a_version_change(
        tmp_path, torch_adapter, keras_adapter, capsys):
    """make baseline on another machine must not churn golden/: same cases and versions are kept (the kernel
    path moved bits within the error model); a version change, or --force, re-records."""
    folder = tmp_path / "golden"
    assert cli.main(["record", str(folder), "-k", "1-1_"]) == 0
    capsys.readouterr()
    _edit_fingerprint(folder, lambda fp: fp["kernel"].update(onednn_isa="AVX2", cpu_isa="AVX2"))  # another CPU
    before = _snapshot(folder)
    assert cli.main(["record", str(folder), "-k", "1-1_"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"kept {folder}") and "re-recorded on a version change only" in out, out
    assert _snapshot(folder) == before

    _edit_fingerprint(folder, lambda fp: fp["frameworks"]["torch"].update(torch="2.12.0+cpu"))  # an upgrade
    assert cli.main(["record", str(folder), "-k", "1-1_"]) == 0
    assert capsys.readouterr().out.startswith("recorded "), "a version change must re-record"
    assert golden.load(folder).fingerprint["frameworks"]["torch"]["torch"] != "2.12.0+cpu"

    before = _snapshot(folder)
    assert cli.main(["record", str(folder), "-k", "1-1_", "--force"]) == 0
    assert capsys.readouterr().out.startswith("recorded ")
    assert set(_snapshot(folder)) == set(before)  # same data name: the same bits recorded again


def test_record_rerecords_when_the_case_set_changed(tmp_path, torch_adapter, keras_adapter, capsys):
    folder = tmp_path / "golden"
    assert cli.main(["record", str(folder), "-k", "1-1_sigmoid"]) == 0
    assert cli.main(["record", str(folder), "-k", "1-1_"]) == 0
    assert capsys.readouterr().out.count("recorded ") == 2


@pytest.mark.parametrize(("edit", "cause", "code"), [
    (lambda fp: fp["kernel"].update(onednn_isa="OTHER_ISA") or fp["frameworks"]["torch"].update(cpu_capability="OTHER"),
     "came with a kernel-path change (cpu_capability OTHER -> {capability}; onednn_isa OTHER_ISA -> {isa}), no "
     "version change: the machine changed", cli.EXIT_OK),
    # the sigmoid's systematic shift of ~4 ulps (within the error model) fails through its error statistics
    (lambda fp: fp["frameworks"]["torch"].update(torch="2.12.0+cpu"),
     "came with a version change (torch 2.12.0+cpu -> {version}): the framework changed", cli.EXIT_DISAGREE),
], ids=["machine", "framework"])
def test_verify_says_whether_the_machine_or_the_framework_changed(edit, cause, code, tmp_path, monkeypatch,
                                                                   torch_adapter, keras_adapter, capsys):
    import torch

    from equivalence.core.kernels import kernel_facts

    folder = tmp_path / "golden"
    assert cli.main(["record", str(folder), "-k", "1-1_sigmoid"]) == 0
    _edit_fingerprint(folder, edit)
    original = torch.nn.Sigmoid.forward  # a few ulps: drift well within the error model
    monkeypatch.setattr(torch.nn.Sigmoid, "forward", lambda self, x: original(self, x) * (1 + 2**-21))
    capsys.readouterr()
    assert cli.main(["verify", str(folder), "--framework", "torch"]) == code
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("  torch:"))
    accuracy = "FAIL accuracy torch sigmoid float32" if code else "torch: the machine changed (cpu_capability OTHER"
    assert accuracy in out, out
    versions = torch_adapter.versions()
    expected = cause.format(capability=versions["cpu_capability"], isa=kernel_facts()["onednn_isa"],
                            version=versions["torch"])
    assert "cases changed" in line and line.endswith(expected), f"got {line!r}, but should end {expected!r}"
    assert "known differences active now:" in out
    from equivalence.core.known_differences import FACTS, PROBES

    scope = FACTS.get(PROBES["torch_gelu_nan_at_plus_inf"].key)  # verify names the probed scope where found
    assert (f"torch_gelu_nan_at_plus_inf = {scope}" in out) == (scope != "none"), out
