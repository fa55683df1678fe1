"""Every bad input and environment found so far, one line each: exit 2, one line on stderr naming the file or
the variable and the problem, no traceback, and nothing written or changed anywhere under the test's folder.

Each row sets up one bad input on a copy of the shipped golden vectors (``{vectors}``) in a fresh folder
(``{tmp}``), runs the command in-process, and checks all of the above. The rows that need a fresh process
(``KERAS_BACKEND`` decides what Keras imports) are at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path

import pytest

from equivalence import cli
from equivalence.guard import golden

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "golden"
PROC = Path("/proc/self")  # procfs: no file can be created there, even by root (who ignores chmod)
needs_procfs = pytest.mark.skipif(not PROC.is_dir(), reason="needs Linux procfs for an unwritable folder")


def tree(folder: Path) -> dict[str, bytes | str]:
    """Every file's bytes, every folder and link, under ``folder``: what "nothing written" compares."""
    out: dict[str, bytes | str] = {}
    for p in sorted(folder.rglob("*")):
        key = str(p.relative_to(folder))
        out[key] = f"-> {os.readlink(p)}" if p.is_symlink() else ("dir" if p.is_dir() else p.read_bytes())
    return out


def manifest_edit(edit: Callable[[dict], None]) -> Callable[[Path, Path], None]:
    def setup(vectors: Path, tmp: Path) -> None:
        path = vectors / golden.MANIFEST
        manifest = json.loads(path.read_text())
        edit(manifest)
        path.write_text(json.dumps(manifest))
    return setup


def manifest_text(text: str | bytes) -> Callable[[Path, Path], None]:
    def setup(vectors: Path, tmp: Path) -> None:
        path = vectors / golden.MANIFEST
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return setup


def data_name(vectors: Path) -> str:
    return json.loads((vectors / golden.MANIFEST).read_text())["data"]["file"]


def symlinked_data(vectors: Path, tmp: Path) -> None:
    name = data_name(vectors)
    (vectors / name).rename(tmp / "elsewhere.npz")
    (vectors / name).symlink_to(tmp / "elsewhere.npz")


def symlinked_manifest(vectors: Path, tmp: Path) -> None:
    (vectors / golden.MANIFEST).rename(tmp / "elsewhere.json")
    (vectors / golden.MANIFEST).symlink_to(tmp / "elsewhere.json")


def missing_data(vectors: Path, tmp: Path) -> None:
    (vectors / data_name(vectors)).unlink()


def a_link_in_the_folder(vectors: Path, tmp: Path) -> None:
    (tmp / "notes.txt").write_text("mine")
    (vectors / "notes.txt").symlink_to(tmp / "notes.txt")


def a_file(name: str) -> Callable[[Path, Path], None]:
    def setup(vectors: Path, tmp: Path) -> None:
        (tmp / name).write_text("mine")
    return setup


def a_folder(name: str) -> Callable[[Path, Path], None]:
    def setup(vectors: Path, tmp: Path) -> None:
        (tmp / name).mkdir(parents=True)
    return setup


def duplicate_first_case(new_key: str | None) -> Callable[[dict], None]:
    def edit(m: dict) -> None:
        m["cases"].append({**m["cases"][0], **({"key": new_key} if new_key else {})})
    return edit


def spec_of_first_case(**fields) -> Callable[[dict], None]:
    return lambda m: m["cases"][0]["spec"].update(fields)


def nothing(vectors: Path, tmp: Path) -> None:
    pass


FIRST = "1-1_sigmoid_f32_n1_x1_unit_layers"
M = "{vectors}/manifest.json"
CHAIN = "norm_mlp_f32_n3_x10_unit_chain"
"""A golden case (cases[133]): a chain of dense and norm layers (``equivalence.core.chain``)."""


def chain_entry(m: dict) -> dict:
    return next(case for case in m["cases"] if case["id"] == CHAIN)


def chain_layer(**kind) -> Callable[[dict], None]:
    return lambda m: chain_entry(m)["spec"]["layers"][1]["kind"].update(kind)

# (id, argv, setup, environment, what stderr names, the problem it states)
BAD_INPUTS = [
    # --- a golden-vector manifest, checked whole before anything runs
    ("fingerprint-missing", ["verify", "{vectors}"], manifest_edit(lambda m: m.pop("fingerprint")), {}, M,
     "'fingerprint' is missing"),
    ("fingerprint-a-string", ["verify", "{vectors}"], manifest_edit(lambda m: m.update(fingerprint="x")), {}, M,
     "'fingerprint' must be an object (versions, CPU, settings), got string 'x'"),
    ("fingerprint-framework-a-string", ["verify", "{vectors}"],
     manifest_edit(lambda m: m["fingerprint"]["frameworks"].update(keras="3.15")), {}, M,
     "'fingerprint.frameworks.keras' must be an object"),
    ("nested-200000-deep", ["verify", "{vectors}"], manifest_text("[" * 200_000 + "]" * 200_000), {}, M,
     "nested deeper than 32 levels"),
    ("nested-100-deep", ["verify", "{vectors}"],
     manifest_edit(lambda m: m.update(extra=json.loads("[" * 99 + "]" * 99))), {}, M,
     "nested 100 levels deep, more than 32"),
    ("duplicate-case-entry", ["verify", "{vectors}"], manifest_edit(duplicate_first_case(None)), {}, M,
     "cases[174] repeats key 'c000' of cases[0]: duplicate case entries"),
    ("duplicate-case-id", ["verify", "{vectors}"], manifest_edit(duplicate_first_case("c999")), {}, M,
     f"cases[174] repeats id '{FIRST}' of cases[0]: duplicate case entries"),
    ("duplicate-json-key", ["verify", "{vectors}"], manifest_text('{"format": "x", "format": "y"}'), {}, M,
     "holds the key 'format' twice"),
    ("activations-a-string", ["verify", "{vectors}"], manifest_edit(spec_of_first_case(activations="sigmoid")), {},
     M, f"cases[0] ({FIRST}): bad 'spec': activations must be a list of activation names, one per layer; got str"),
    ("activations-a-number", ["verify", "{vectors}"], manifest_edit(spec_of_first_case(activations=[7])), {}, M,
     "activations[0] (layer 0) must be a name (a str), got 7 (int)"),
    ("widths-a-number", ["verify", "{vectors}"], manifest_edit(spec_of_first_case(widths=1)), {}, M,
     "widths must be a list of positive integers, one per layer; got int 1"),
    ("chain-kind-unknown", ["verify", "{vectors}"], manifest_edit(chain_layer(name="rnn")), {}, M,
     f"cases[133] ({CHAIN}): bad 'spec': a layer kind must be an object whose 'name' is one of dense, conv, pool, "
     "flatten, layernorm, batchnorm, embedding, mean, attention, lstm, gru"),
    ("chain-kind-unknown-field", ["verify", "{vectors}"], manifest_edit(chain_layer(eps=0.1)), {}, M,
     "bad 'spec': layer kind batchnorm: BatchNorm.__init__() got an unexpected keyword argument 'eps'"),
    ("chain-kind-epsilon-a-string", ["verify", "{vectors}"], manifest_edit(chain_layer(epsilon="x")), {}, M,
     f"cases[133] ({CHAIN}): bad 'spec': layer kind batchnorm: epsilon must be a finite number, 0 or more, got 'x'"),
    ("chain-kind-features-zero", ["verify", "{vectors}"], manifest_edit(chain_layer(features=0)), {}, M,
     "bad 'spec': layer kind batchnorm: features must be a positive integer, got 0"),
    ("chain-weights-of-another-kind", ["verify", "{vectors}"],
     manifest_edit(lambda m: chain_entry(m)["spec"]["layers"][1].update(
         kind={"name": "layernorm", "features": 12, "epsilon": 1e-3})), {}, "{vectors}/vectors-",
     f"case c133 ({CHAIN}): spec does not match its weights: layer 1 (layernorm) has parameters shaped ((4, 12),), "
     "expected ((2, 12),)"),
    ("batch-a-string", ["verify", "{vectors}"], manifest_edit(lambda m: m["cases"][0].update(batch="1")), {}, M,
     f"cases[0] ({FIRST}): 'batch' must be a positive integer, got string '1'"),
    ("batch-a-boolean", ["verify", "{vectors}"], manifest_edit(lambda m: m["cases"][0].update(batch=True)), {}, M,
     "'batch' must be a positive integer, got boolean True"),
    ("batch-zero", ["verify", "{vectors}"], manifest_edit(lambda m: m["cases"][0].update(batch=0)), {}, M,
     "'batch' must be a positive integer, got int 0"),
    ("case-not-an-object", ["verify", "{vectors}"], manifest_edit(lambda m: m["cases"].insert(0, "c000")), {}, M,
     "cases[0] must be an object, got string 'c000'"),
    ("case-without-spec", ["verify", "{vectors}"], manifest_edit(lambda m: m["cases"][0].pop("spec")), {}, M,
     f"cases[0] ({FIRST}): 'spec' is missing"),
    ("no-cases", ["verify", "{vectors}"], manifest_edit(lambda m: m.update(cases=[])), {}, M,
     "'cases' must be a non-empty list"),
    ("unknown-framework", ["verify", "{vectors}"], manifest_edit(lambda m: m.update(frameworks=["torch", "jax"])), {},
     M, "'frameworks' names 'jax', which is not one of torch, keras, mxnet"),
    ("framework-twice", ["verify", "{vectors}"], manifest_edit(lambda m: m.update(frameworks=["torch", "torch"])), {},
     M, "'frameworks' lists 'torch' twice"),
    ("recorded-at-missing", ["verify", "{vectors}"], manifest_edit(lambda m: m.pop("recorded_at")), {}, M,
     "'recorded_at' is missing"),
    ("sha256-not-hex", ["verify", "{vectors}"], manifest_edit(lambda m: m["data"].update(sha256="x" * 64)), {}, M,
     "'data.sha256' must be 64 lowercase hex digits"),
    ("manifest-not-utf8", ["verify", "{vectors}"], manifest_text(b"\xff\xfe{}"), {}, M, "not UTF-8 text"),
    ("manifest-a-symlink", ["verify", "{vectors}"], symlinked_manifest, {}, M,
     "is a symbolic link (to {tmp}/elsewhere.json); the manifest must be a regular file"),
    ("data-file-a-symlink", ["verify", "{vectors}"], symlinked_data, {}, "{vectors}/vectors-",
     "is a symbolic link (to {tmp}/elsewhere.npz); the data file must be a regular file"),
    ("data-file-missing", ["verify", "{vectors}"], missing_data, {}, "{vectors}/vectors-",
     "missing: manifest.json names it as the data file"),
    ("verify-dir-empty", ["verify", ""], nothing, {}, "argument DIR", "empty path: name a folder"),
    # --- record: never shrinks a set without --replace, never writes through a link
    ("record-fewer-cases-and-frameworks", ["record", "{vectors}", "-k", "1-1_sigmoid", "--framework", "torch"],
     nothing, {}, "{vectors}", "recording 3 cases with torch would replace, losing 171 of its 174 cases "
     "(first 1-1_tanh_f32_n1_x1_unit_layers) and its keras outputs; pass --replace"),
    ("record-fewer-cases", ["record", "{vectors}", "-k", "1-1_"], nothing, {}, "{vectors}",
     "losing 162 of its 174 cases"),
    ("record-over-an-unreadable-set", ["record", "{vectors}"], manifest_edit(lambda m: m.update(fingerprint="x")), {},
     M, "got string 'x'; cannot tell what recording over it would lose (pass --replace"),
    ("record-into-a-folder-with-a-link", ["record", "{vectors}", "--replace"], a_link_in_the_folder, {}, "{vectors}",
     "holds notes.txt (a symbolic link), which equivalence did not write"),
    ("record-dir-empty", ["record", ""], nothing, {}, "argument DIR", "empty path: name a folder"),
    ("record-dir-unwritable", ["record", "/proc/self/golden"], nothing, {}, "/proc/self/golden",
     "cannot create files there (its nearest existing parent, /proc/self)"),
    # --- report: where it writes, checked before the run
    ("report-out-empty", ["report", "--out", ""], nothing, {}, "argument --out", "empty path: name a folder"),
    ("report-out-unwritable", ["report", "--out", "/proc/self/report"], nothing, {}, "/proc/self/report",
     "cannot create files there (its nearest existing parent, /proc/self)"),
    ("report-out-a-file", ["report", "--out", "{tmp}/out"], a_file("out"), {}, "{tmp}/out",
     "exists and is not a folder"),
    ("report-out-under-a-file", ["report", "--out", "{tmp}/out/sub"], a_file("out"), {}, "{tmp}/out/sub",
     "cannot be created: {tmp}/out is not a folder"),
    ("report-json-is-a-folder", ["report", "--out", "{tmp}/out"], a_folder("out/report.json"), {},
     "{tmp}/out/report.json", "is a folder; it would be replaced by a file"),
    ("step-summary-folder-missing", ["report", "--out", "{tmp}/out"], nothing,
     {"GITHUB_STEP_SUMMARY": "{tmp}/missing/summary.md"}, "GITHUB_STEP_SUMMARY={tmp}/missing/summary.md",
     "its folder {tmp}/missing does not exist"),
    ("step-summary-a-folder", ["report", "--out", "{tmp}/out"], nothing, {"GITHUB_STEP_SUMMARY": "{tmp}"},
     "GITHUB_STEP_SUMMARY={tmp}", "is a folder; it must name a file"),
    ("report-verbose-and-quiet", ["report", "-v", "--quiet"], nothing, {}, "argument --quiet",
     "not allowed with argument -v/--verbose"),
    # --- the environment
    ("keras-backend-unknown", ["verify", "{vectors}"], nothing, {"KERAS_BACKEND": "nosuch"}, "KERAS_BACKEND='nosuch'",
     "is not a Keras backend equivalence runs on; use one of tensorflow, torch, jax"),
    ("keras-backend-unknown-env", ["env"], nothing, {"KERAS_BACKEND": "nosuch"}, "KERAS_BACKEND='nosuch'",
     "is not a Keras backend"),
    ("keras-backend-unknown-torch-only", ["report", "--framework", "torch", "--out", "{tmp}/out"], nothing,
     {"KERAS_BACKEND": "nosuch"}, "KERAS_BACKEND='nosuch'", "is not a Keras backend"),
]


@pytest.fixture
def vectors(tmp_path: Path) -> Path:
    return Path(shutil.copytree(GOLDEN, tmp_path / "golden"))


@pytest.mark.parametrize("argv, setup, env, names, problem",
                         [pytest.param(*row[1:], id=row[0],
                                       marks=[needs_procfs] if any("/proc" in a for a in row[1]) else [])
                          for row in BAD_INPUTS])
def test_bad_input_gets_one_line_and_exit_2_and_nothing_is_written(argv, setup, env, names, problem, vectors,
                                                                   tmp_path, monkeypatch, capsys):
    fill = {"vectors": vectors, "tmp": tmp_path}
    setup(vectors, tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(**fill))
    monkeypatch.chdir(tmp_path)  # an empty path must not mean "here"
    before = tree(tmp_path)
    code = cli.main([a.format(**fill) for a in argv])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_USAGE, f"exit {code}, expected 2; stdout {out[-500:]!r}; stderr {err!r}"
    assert err.count("\n") == 1 and err.endswith("\n"), f"expected one line on stderr, got {err!r}"
    assert "Traceback" not in err
    assert names.format(**fill) in err, f"stderr does not name {names.format(**fill)!r}: {err!r}"
    assert problem.format(**fill) in err, f"stderr does not say {problem.format(**fill)!r}: {err!r}"
    assert tree(tmp_path) == before, "something was written or changed"


# --- in a fresh process: KERAS_BACKEND decides what Keras imports -------------------------------------

def run_process(argv: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, **env})


def one_line(stream: str) -> str:
    lines = [line for line in stream.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {stream!r}"
    assert "Traceback" not in stream and "INTERNALERROR" not in stream
    return lines[0]


def test_an_unknown_keras_backend_is_one_line_from_the_cli():
    proc = run_process(["-m", "equivalence", "verify", str(GOLDEN)], KERAS_BACKEND="nosuch")
    assert proc.returncode == 2, proc.stderr
    assert one_line(proc.stderr).startswith("equivalence verify: error: KERAS_BACKEND='nosuch' is not a Keras backend")
    assert proc.stdout == ""


@pytest.mark.skipif(find_spec("jax") is not None, reason="jax is installed here, so KERAS_BACKEND=jax is fine")
@pytest.mark.skipif(find_spec("torch") is None, reason="without torch, verify names torch's absence first")
def test_the_jax_backend_without_jax_is_one_line_from_the_cli():
    proc = run_process(["-m", "equivalence", "verify", str(GOLDEN)], KERAS_BACKEND="jax")
    assert proc.returncode == 2, proc.stderr
    assert one_line(proc.stderr) == (
        "equivalence verify: error: KERAS_BACKEND='jax' needs the 'jax' package, which is not installed (make check "
        "KERAS_BACKEND=jax installs it); or pass --framework torch to leave keras out")


def test_an_unknown_keras_backend_is_one_usage_error_from_pytest():
    """Not ~70 lines of INTERNALERROR, and not a green run with every Keras test skipped."""
    proc = run_process(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/core/test_spec.py"],
                       KERAS_BACKEND="nosuch")
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    assert one_line(proc.stderr).startswith("ERROR: KERAS_BACKEND='nosuch' is not a Keras backend")
    assert "passed" not in proc.stdout


@pytest.mark.skipif(find_spec("tf_keras") is not None, reason="tf-keras is installed here: Keras 2 runs (make keras2)")
def test_legacy_keras_without_tf_keras_is_one_line_naming_the_keras_that_would_run(torch_adapter, keras_adapter):
    # torch is asked for first, and "Keras would be Keras 3" needs a Keras 3 installed to name
    """TF_USE_LEGACY_KERAS=1 asks for Keras 2; without tf-keras, `import keras` is Keras 3: refused, never tested
    in Keras 2's place."""
    proc = run_process(["-m", "equivalence", "verify", str(GOLDEN)], TF_USE_LEGACY_KERAS="1")
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc.stderr)
    assert line.startswith("equivalence verify: error: TF_USE_LEGACY_KERAS=1 asks for Keras 2, but the tf-keras "
                           "package is not installed, so Keras would be Keras 3 (keras 3."), line
    assert proc.stdout == ""
