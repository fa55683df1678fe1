"""The command line: bad input gets one line naming the file and the problem, exit 2, and nothing written.

Most tests call ``cli.main`` in-process (spawning Python costs ~4 s of imports);
two spawn the real ``python -m equivalence`` and the console script to prove the
exit code and the absence of a traceback.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from equivalence import cli
from equivalence.frameworks.registry import names
from equivalence.guard import golden
from tests.helpers import keras3_only

GOLDEN = Path(__file__).resolve().parents[2] / "golden"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_input_error(*, code: int, err: str, names: str, problem: str) -> None:
    """Exit 2, exactly one line on stderr, naming the file and the problem, and no traceback."""
    assert code == cli.EXIT_USAGE, f"exit code {code}, expected 2; stderr: {err!r}"
    assert err.count("\n") == 1 and err.endswith("\n"), f"expected one line on stderr, got {err!r}"
    assert "Traceback" not in err
    assert names in err, f"stderr does not name {names!r}: {err!r}"
    assert problem in err, f"stderr does not say {problem!r}: {err!r}"


def assert_refused_untouched(argv: list[str], folder: Path, capsys, *, names: str, problem: str) -> None:
    """``argv`` is refused as ``assert_input_error`` says, and ``folder`` holds the same bytes as before."""
    before = snapshot(folder)
    code, _, err = run(argv, capsys)
    assert_input_error(code=code, err=err, names=names, problem=problem)
    assert snapshot(folder) == before


@pytest.fixture
def vectors(tmp_path: Path) -> Path:
    """A copy of the shipped golden vectors, to damage."""
    return Path(shutil.copytree(GOLDEN, tmp_path / "golden"))


def data_file(folder: Path) -> Path:
    return folder / json.loads((folder / golden.MANIFEST).read_text())["data"]["file"]


def edit_manifest(folder: Path, edit) -> None:
    path = folder / golden.MANIFEST
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def replace_data(folder: Path, data: bytes) -> Path:
    """Write ``data`` as the data file, with a matching sha256 in the manifest (so deeper checks are reached)."""
    path = data_file(folder)
    path.write_bytes(data)
    edit_manifest(folder, lambda m: m["data"].update(sha256=hashlib.sha256(data).hexdigest()))
    return path


# --- usage errors ----------------------------------------------------------------

@pytest.mark.parametrize("argv, problem", [
    (["bogus"], "invalid choice: 'bogus'"),
    (["verify", "golden", "--bogus"], "unrecognized arguments: --bogus"),
    (["report", "--framework", "jax"], "invalid choice: 'jax'"),
    (["verify"], "the following arguments are required: DIR"),
    ([], "the following arguments are required: COMMAND"),
])
def test_unknown_commands_and_options_are_usage_errors(argv, problem, capsys):
    code, out, err = run(argv, capsys)
    assert_input_error(code=code, err=err, names="equivalence", problem=problem)
    assert out == ""


@pytest.mark.parametrize("command", ["report", "record", "verify", "env"])
def test_every_command_has_help(command, capsys):
    code, out, _ = run([command, "--help"], capsys)
    assert code == 0
    assert out.startswith(f"usage: equivalence {command}")


@pytest.mark.parametrize("command, says", [
    ("report", [f"--framework {{{','.join(names())}}} run only this framework (repeat for several; default: torch "
                "and keras)",
                "-v, --verbose print the full table", "--quiet print no table", "--out DIR folder for report.json"]),
    ("record", ["default: torch and keras)", "DIR folder for manifest.json and the vectors file",
                "--replace replace vectors in DIR even when the new set has fewer cases or frameworks"]),
    ("verify", ["default: the frameworks the vectors were recorded with)",
                "DIR folder holding manifest.json and its vectors file"]),
])
def test_the_help_says_each_command_s_defaults(command, says, capsys):
    code, out, _ = run([command, "--help"], capsys)
    flat = " ".join(out.split())
    assert code == 0
    for text in says:
        assert text in flat, f"{command} --help does not say {text!r}:\n{out}"
    assert "default: all of" not in flat


# --- bad golden-vector folders: caught before any framework runs ----------------------

def test_a_missing_folder(tmp_path, capsys):
    code, _, err = run(["verify", str(tmp_path / "nope")], capsys)
    assert_input_error(code=code, err=err, names=str(tmp_path / "nope"), problem="no such folder")
    assert not (tmp_path / "nope").exists()


def test_a_folder_without_a_manifest(tmp_path, capsys):
    code, _, err = run(["verify", str(tmp_path)], capsys)
    assert_input_error(code=code, err=err, names=str(tmp_path), problem="no manifest.json")


def test_a_truncated_vector_file(vectors, capsys):
    path = data_file(vectors)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_refused_untouched(["verify", str(vectors)], vectors, capsys, names=str(path),
                             problem="truncated or corrupted")


def test_a_truncated_vector_file_even_with_a_matching_hash(vectors, capsys):
    path = replace_data(vectors, data_file(vectors).read_bytes()[:100_000])
    code, _, err = run(["verify", str(vectors)], capsys)
    assert_input_error(code=code, err=err, names=str(path), problem="not a valid npz archive")


def test_a_corrupted_vector_file(vectors, capsys):
    path = replace_data(vectors, b"\x00garbage" * 100)
    code, _, err = run(["verify", str(vectors)], capsys)
    assert_input_error(code=code, err=err, names=str(path), problem="not an npz archive")


def test_a_truncated_manifest(vectors, capsys):
    path = vectors / golden.MANIFEST
    path.write_bytes(path.read_bytes()[:500])
    assert_refused_untouched(["verify", str(vectors)], vectors, capsys, names=str(path), problem="not valid JSON")


def test_a_file_from_a_newer_schema_version(vectors, capsys):
    edit_manifest(vectors, lambda m: m.update(schema_version=golden.SCHEMA_VERSION + 1))
    assert_refused_untouched(["verify", str(vectors)], vectors, capsys, names=str(vectors / golden.MANIFEST),
                             problem=f"schema version {golden.SCHEMA_VERSION + 1} is newer")


def test_an_npz_holding_a_pickled_object(vectors, capsys):
    buf = io.BytesIO()
    with np.load(data_file(vectors), allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["c000.x"] = np.array([{"payload": "unpickle me"}], dtype=object)
    np.savez(buf, **arrays)
    path = replace_data(vectors, buf.getvalue())
    assert_refused_untouched(["verify", str(vectors)], vectors, capsys, names=str(path),
                             problem="holds a pickled object")


def test_a_vector_whose_spec_does_not_match_its_weights(vectors, capsys):
    def widen(m):
        m["cases"][1]["spec"]["widths"][0] += 1

    edit_manifest(vectors, widen)
    case = json.loads((vectors / golden.MANIFEST).read_text())["cases"][1]
    code, _, err = run(["verify", str(vectors)], capsys)
    assert_input_error(code=code, err=err, names=str(data_file(vectors)),
                       problem=f"case {case['key']} ({case['id']}): spec does not match its weights: layer 0 kernel")


def test_a_vector_whose_output_has_the_wrong_shape(vectors, capsys):
    with np.load(data_file(vectors), allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["c002.torch0"] = arrays["c002.torch0"][:, :0]
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path = replace_data(vectors, buf.getvalue())
    code, _, err = run(["verify", str(vectors)], capsys)
    assert_input_error(code=code, err=err, names=str(path), problem="array 'c002.torch0' has shape")


# --- record: refuses foreign folders, writes atomically, never a failing baseline -------

def test_record_refuses_a_folder_holding_other_files(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert_refused_untouched(["record", str(tmp_path)], tmp_path, capsys, names=str(tmp_path),
                             problem="holds notes.txt, which equivalence did not")


def test_record_refuses_to_overwrite_vectors_of_a_newer_schema(vectors, capsys):
    edit_manifest(vectors, lambda m: m.update(schema_version=golden.SCHEMA_VERSION + 1))
    assert_refused_untouched(["record", str(vectors)], vectors, capsys, names=str(vectors / golden.MANIFEST),
                             problem="is newer")


def test_record_replaces_its_own_vectors_and_a_crash_mid_write_keeps_the_old_ones(
        vectors, monkeypatch, torch_adapter, keras_adapter, capsys):
    old = snapshot(vectors)
    old_ids = [c.id for c in golden.load(vectors).cases]
    real_replace = os.replace

    def crash_on_the_manifest(src, dst):
        if Path(dst).name == golden.MANIFEST:
            raise OSError("simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_the_manifest)
    code, _, err = run(["record", str(vectors), "-k", "1-1_", "--replace"], capsys)
    monkeypatch.setattr(os, "replace", real_replace)
    assert_input_error(code=code, err=err, names="equivalence record", problem="simulated crash")
    assert [c.id for c in golden.load(vectors).cases] == old_ids  # the old vectors, intact
    assert {k: v for k, v in snapshot(vectors).items() if k in old} == old

    code, out, _ = run(["record", str(vectors), "-k", "1-1_", "--replace"], capsys)
    assert code == 0, out
    new_ids = [c.id for c in golden.load(vectors).cases]
    assert new_ids and all(i.startswith("1-1_") for i in new_ids)
    assert sorted(p.name for p in vectors.iterdir()) == sorted([golden.MANIFEST, golden.ACCURACY_FILE,
                                                                data_file(vectors).name])
    assert run(["verify", str(vectors)], capsys)[0] == 0
    code, out, err = run(["record", str(vectors), "-k", "1-1_"], capsys)  # the same set: nothing lost
    assert code == 0, out + err


def test_record_writes_nothing_when_a_case_disagrees(vectors, monkeypatch, torch_adapter, keras_adapter, capsys):
    import torch

    original = torch.nn.Sigmoid.forward
    monkeypatch.setattr(torch.nn.Sigmoid, "forward", lambda self, x: original(self, x) * (1 + 1e-4))
    before = snapshot(vectors)
    code, out, _ = run(["record", str(vectors), "-k", "1-1_sigmoid", "--replace"], capsys)
    assert code == cli.EXIT_DISAGREE
    assert "torch vs reference, layer 0" in out and "recorded nothing" in out
    assert snapshot(vectors) == before


# --- report ----------------------------------------------------------------------

def test_report_writes_json_markdown_png_and_the_step_summary(tmp_path, monkeypatch, torch_adapter, keras_adapter,
                                                              capsys):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier steps\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("COLUMNS", "200")  # wide enough that no case id folds
    argv = ["report", "--out", str(tmp_path / "r"), "-k", "3-5-5-2_sigmoid", "-k", "modulelist_keras-functional",
            "-v"]
    code, out, _ = run(argv, capsys)
    assert code == 0, out
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert data["schema_version"] == 1 and data["summary"]["passed"]
    assert {r["pair"] for r in data["rows"]} == {"torch vs reference", "keras vs reference", "torch vs keras"}
    assert len(data["rows"]) == 3 * data["summary"]["cases"]
    assert any(r["build"] == "torch modulelist + keras functional" for r in data["rows"])
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert "| case | build | pair | worst error / bound |" in markdown
    assert summary.read_text() == "earlier steps\n" + markdown
    for png in ("report.png", "accuracy.png"):
        assert (tmp_path / "r" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "3-5-5-2_sigmoid_f32_n1_x1_unit_layers" in out and "torch vs keras" in out


@keras3_only
def test_report_exits_1_and_names_the_layer_when_a_framework_drifts(tmp_path, monkeypatch, torch_adapter,
                                                                    keras_adapter, capsys):
    import keras.src.ops

    original = keras.src.ops.sigmoid
    monkeypatch.setattr(keras.src.ops, "sigmoid", lambda x: original(x) * (1 + 1e-4))
    code, out, _ = run(["report", "--out", str(tmp_path), "-k", "3-5-5-2_sigmoid_f32_n1", "--quiet"], capsys)
    assert code == cli.EXIT_DISAGREE
    assert "FAIL 3-5-5-2_sigmoid_f32_n1_x1_unit_layers: keras vs reference, layer 0:" in out
    assert not json.loads((tmp_path / "report.json").read_text())["summary"]["passed"]


@pytest.mark.parametrize("argv, problem", [
    (["report", "-k", "no-such-case"], "-k 'no-such-case' matches none"),
    (["record", "{tmp}/r", "-k", "no-such-case"], "-k 'no-such-case' matches none"),
])
def test_a_filter_that_matches_nothing(argv, problem, tmp_path, capsys):
    code, _, err = run([a.format(tmp=tmp_path) for a in argv], capsys)
    assert_input_error(code=code, err=err, names="error", problem=problem)
    assert not (tmp_path / "r").exists()


def test_report_out_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "report"
    target.write_text("mine")
    code, _, err = run(["report", "--out", str(target)], capsys)
    assert_input_error(code=code, err=err, names=str(target), problem="is not a folder")
    assert target.read_text() == "mine"


# --- env, and the real process -------------------------------------------------------

def test_env_prints_the_fingerprint(capsys):
    code, out, _ = run(["env", "--json"], capsys)
    fp = json.loads(out)
    assert code == 0
    assert {"python", "numpy", "cpu_model", "thread_env", "frameworks"} <= set(fp)


def test_the_real_process_exits_2_with_one_line_and_no_traceback(tmp_path):
    missing = tmp_path / "missing"
    proc = subprocess.run([sys.executable, "-m", "equivalence", "verify", str(missing)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"equivalence verify: error: {missing}: no such folder\n"
    assert proc.stdout == ""


def test_the_console_script_is_installed_and_exits_2_on_a_usage_error():
    script = Path(sys.executable).parent / "equivalence"
    assert script.exists(), f"{script} missing: pyproject [project.scripts] installs it (pip install -e .)"
    proc = subprocess.run([str(script), "bogus"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "invalid choice: 'bogus'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bfloat16_vectors_without_ml_dtypes_are_a_one_line_error(monkeypatch, capsys):
    """A Python without ml_dtypes (the MXNet venv) cannot read bfloat16 cases: exit 2, no traceback."""
    import equivalence.guard.golden

    real = equivalence.guard.golden.numpy_dtype

    def no_ml_dtypes(dtype):
        if dtype == "bfloat16":
            raise ValueError("dtype 'bfloat16' needs the ml_dtypes package: pip install ml_dtypes")
        return real(dtype)

    monkeypatch.setattr(equivalence.guard.golden, "numpy_dtype", no_ml_dtypes)
    assert cli.main(["verify", str(GOLDEN)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "is bfloat16: dtype 'bfloat16' needs the ml_dtypes package" in err and "Traceback" not in err


def test_a_write_refused_after_the_checks_names_the_folder_not_a_temporary_file(tmp_path, monkeypatch, capsys,
                                                                               torch_adapter, keras_adapter):
    """The folder passes the checks before the run, then refuses the write (a disk filling up, a mount
    turned read-only): the one line names the folder, not the temporary file's name."""
    import tempfile

    from equivalence.guard import writable

    monkeypatch.setattr(writable, "_probe", lambda folder: None)  # as if the folder was writable at first

    def refuse(*args, dir=None, **kwargs):
        raise OSError(28, "No space left on device", str(Path(dir) / ".equivalence-tmp-abc123.part"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    code = cli.main(["report", "--out", str(tmp_path / "out"), "-k", "1-1_sigmoid_f32_n1_", "--framework", "torch"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE
    assert err == f"equivalence report: error: {tmp_path / 'out'}: No space left on device\n"
