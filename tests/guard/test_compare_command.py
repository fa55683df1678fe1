"""``equivalence compare`` as a newcomer meets it (issue 28): bad files named in one line, no framework log
lines, parameter counts, a weight tolerance, and a torch ``state_dict`` loaded through a model factory."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from equivalence.cli import EXIT_DISAGREE, EXIT_OK, EXIT_USAGE, main
from tests.helpers import keras3_only, keras_walker_problem
from tests.own_models import keras_model, torch_model

pytestmark = keras3_only  # the files are written by Keras 3

WIDTHS = (6, 8, 3)
CHAIN = ("relu", "softmax")

FACTORY = '''
import torch
from torch import nn


def build():
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3), nn.Softmax(dim=-1))


def not_a_module():
    return 42
'''


@pytest.fixture(autouse=True, scope="module")
def _the_keras_walker_reads_models_here(keras_adapter):
    problem = keras_walker_problem()
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="module")
def files(tmp_path_factory, torch_adapter, keras_adapter):
    """A torch.export program, its .keras port, the same torch model as a state_dict and pickled whole,
    and broken files of either kind."""
    import torch

    from equivalence import port_weights

    folder = tmp_path_factory.mktemp("compare")
    source = torch_model("custom_functional", WIDTHS, CHAIN).eval()
    port = keras_model("functional_layers", WIDTHS, CHAIN)
    port_weights(source, port)
    out = {name: folder / name for name in ("model.pt2", "port.keras", "state.pt", "whole.pt", "random.pt2",
                                            "truncated.pt2", "random.keras", "truncated.keras", "keras2.keras")}
    torch.export.save(torch.export.export(source, (torch.zeros(2, WIDTHS[0]),)), out["model.pt2"])
    port.save(out["port.keras"])
    factory_model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3),
                                        torch.nn.Softmax(dim=-1))
    factory_model[0].load_state_dict(source.fc1.state_dict())
    factory_model[2].load_state_dict(source.fc2.state_dict())
    torch.save(factory_model.state_dict(), out["state.pt"])
    torch.save(factory_model, out["whole.pt"])
    rng = np.random.default_rng(0)
    out["random.pt2"].write_bytes(rng.bytes(2000))
    out["random.keras"].write_bytes(rng.bytes(2000))
    for name, whole in (("truncated.pt2", "model.pt2"), ("truncated.keras", "port.keras")):
        data = out[whole].read_bytes()
        out[name].write_bytes(data[: len(data) // 2])
    with zipfile.ZipFile(out["port.keras"]) as src, zipfile.ZipFile(out["keras2.keras"], "w") as dst:
        for item in src.infolist():  # as tf-keras writes it: Keras 2's version, a config Keras 3 cannot read
            data = src.read(item.filename)
            if item.filename == "metadata.json":
                data = json.dumps({**json.loads(data), "keras_version": "2.16.0"}).encode()
            if item.filename == "config.json":
                data = json.dumps({"class_name": "Functional", "config": {"layers": "keras 2"}}).encode()
            dst.writestr(item, data)
    (folder / "userpkg").mkdir()
    (folder / "userpkg" / "__init__.py").write_text("")
    (folder / "userpkg" / "nets.py").write_text(FACTORY)
    return out


def run(argv, capsys) -> tuple[int, str, str]:
    code = main(["compare", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, out: str, err: str) -> str:
    assert code == EXIT_USAGE, (code, out, err)
    assert err.count("\n") == 1 and out == "", (out, err)
    return err


def process(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "equivalence", *map(str, argv)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


# --- the defects ---------------------------------------------------------------------------------

def test_a_folder_is_named_as_a_folder_not_as_a_missing_file(files, capsys):
    folder = files["model.pt2"].parent
    err = one_line_error(*run([folder, files["port.keras"]], capsys))
    assert f"{folder}: a folder, but not a SavedModel folder: no saved_model.pb in it (a model file should be " \
        ".pt2, .keras, .h5, .onnx or .tflite)" in err


def test_an_empty_folder_on_either_side_is_named_as_not_a_saved_model(files, tmp_path, capsys):
    err = one_line_error(*run([files["model.pt2"], tmp_path], capsys))
    assert f"{tmp_path}: a folder, but not a SavedModel folder: no saved_model.pb in it" in err


def test_inputs_given_as_a_model_get_the_input_option_hint(files, tmp_path, capsys):
    import numpy as np

    np.save(tmp_path / "x.npy", np.zeros((2, 4), "float32"))
    err = one_line_error(*run([tmp_path / "x.npy", files["model.pt2"]], capsys))
    assert "x.npy: a .npy array where a model was expected: inputs go in --input X.npy" in err


@pytest.mark.parametrize(("name", "says"), [
    ("random.pt2", "not a torch.export program (not a zip archive"),
    ("truncated.pt2", "not a torch.export program (not a zip archive"),
    ("state.pt", "holds a state_dict, not a torch.export program: pass --torch-model package.module:factory"),
    ("whole.pt", "not loaded: it holds pickled objects"),
])
def test_a_broken_torch_file_is_one_line_without_torch_s_traceback(files, name, says):
    proc = process("compare", files[name], files["port.keras"])
    assert proc.returncode == EXIT_USAGE and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr


def test_swapped_arguments_are_named(files, capsys):
    err = one_line_error(*run([files["port.keras"], files["model.pt2"]], capsys))
    assert "arguments swapped? The torch file comes first: equivalence compare TORCH_FILE KERAS_FILE" in err


@pytest.mark.parametrize(("name", "says"), [
    ("random.keras", "not a .keras file: not a zip archive"),
    ("truncated.keras", "not a .keras file: not a zip archive"),
    ("keras2.keras", "saved by Keras 2.16.0 (tf-keras), which this Keras 3 cannot read: run the check under "
                     "Keras 2 (TF_USE_LEGACY_KERAS=1 with tf-keras installed)"),
])
def test_a_keras_file_that_cannot_load_says_why(files, capsys, name, says):
    err = one_line_error(*run([files["model.pt2"], files[name]], capsys))
    assert says in err and "safe mode" not in err and "File not found" not in err, err


def test_a_lambda_layer_is_refused_with_the_whole_reason(files, tmp_path, capsys):
    import keras

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3), keras.layers.Lambda(lambda x: x * 2)])
    path = tmp_path / "lambda.keras"
    model.save(path)
    err = one_line_error(*run([files["model.pt2"], path], capsys))
    assert "holds a Lambda layer (arbitrary Python code), which safe mode does not load" in err, err
    assert "If you trust the )" not in err


@pytest.mark.parametrize("fill", [np.nan, np.inf])
def test_an_input_with_no_finite_value_is_refused(files, tmp_path, capsys, fill):
    x = tmp_path / "x.npy"
    np.save(x, np.full((4, WIDTHS[0]), fill, np.float32))
    err = one_line_error(*run([files["model.pt2"], files["port.keras"], "--input", x], capsys))
    assert "x has no finite value, but should have at least one" in err


def test_table_naming_a_folder_is_refused_before_the_run(files, tmp_path, capsys, monkeypatch):
    import equivalence.own

    monkeypatch.setattr(equivalence.own, "compare_models", lambda *a, **k: pytest.fail("ran the comparison"))
    err = one_line_error(*run([files["model.pt2"], files["port.keras"], "--table", tmp_path], capsys))
    assert f"--table {tmp_path}: is a folder, but should be a file" in err


def test_the_wording_counts_right(files, tmp_path, capsys):
    x = tmp_path / "x.npy"
    np.save(x, np.ones((2, WIDTHS[0]), np.float32))
    table = tmp_path / "t.md"
    code, out, _ = run([files["model.pt2"], files["port.keras"], "--input", x, "--table", table], capsys)
    assert code == EXIT_OK
    assert "both layers agree over 1 input batch " in out and "all 2 layers" not in out
    assert "over 1 input batch," in table.read_text() and "1 input batches" not in table.read_text()


def test_the_relative_difference_is_the_worst_element_s_not_an_underflow_s():
    """An element whose reference underflowed to a subnormal and came out 0 is 100 % off: it is not the
    element the message names, so its relative difference is not the one printed."""
    from equivalence.core.compare import compare_arrays

    expected = np.array([1.0, 1e-40, 2.0])
    got = np.array([1.5, 0.0, 2.0])
    result = compare_arrays(got, expected, bound=1e-3, pair=("keras", "reference"), layer=0)
    assert result.index == (0,)
    assert "greatest abs diff 0.5 at index (0,) (keras 1.5, reference 1.0), rel diff there 0.5" in result.describe()


# --- quiet -----------------------------------------------------------------------------------------

def test_compare_and_env_print_no_framework_log_line(files):
    proc = process("compare", files["model.pt2"], files["port.keras"], "--examples", "3")
    assert proc.returncode == EXIT_OK, proc.stderr
    assert proc.stderr == "", proc.stderr
    env = process("env")
    assert env.returncode == EXIT_OK and env.stderr == "", env.stderr


# --- the expected features -------------------------------------------------------------------------

def test_compare_counts_the_parameters_of_both_models(files, capsys):
    code, out, _ = run([files["model.pt2"], files["port.keras"], "--examples", "3"], capsys)
    assert code == EXIT_OK
    assert "parameters: torch 83 ('fc1' 56, 'fc2' 27), keras 83 ('dense_0' 56, 'dense_1' 27)" in out, out


def test_a_weight_one_ulp_off_fails_by_default_and_passes_within_the_tolerance(files, tmp_path, capsys):
    import keras

    model = keras.saving.load_model(files["port.keras"])
    kernel = model.get_layer("dense_0").kernel
    nudged = kernel.numpy().copy()
    nudged[0, 0] = np.nextafter(nudged[0, 0], np.float32(np.inf))
    kernel.assign(nudged)
    path = tmp_path / "nudged.keras"
    model.save(path)
    code, out, _ = run([files["model.pt2"], path, "--examples", "3"], capsys)
    assert code == EXIT_DISAGREE and "kernel: 1 / 48 elements differ from the torch weight.T;" in out, out
    code, out, _ = run([files["model.pt2"], path, "--examples", "3", "--weight-ulps", "1"], capsys)
    assert code == EXIT_OK, out
    assert "weights within 1 ulp" in out, out


def test_weight_ulps_must_be_a_count(files, capsys):
    err = one_line_error(*run([files["model.pt2"], files["port.keras"], "--weight-ulps", "-1"], capsys))
    assert "--weight-ulps -1: must be 0 or more" in err


def test_a_state_dict_loads_through_a_model_factory(files, capsys, monkeypatch):
    monkeypatch.chdir(files["state.pt"].parent)
    monkeypatch.setattr(sys, "path", list(sys.path))
    code, out, _ = run([files["state.pt"], files["port.keras"], "--torch-model", "userpkg.nets:build",
                        "--examples", "3"], capsys)
    assert code == EXIT_OK, out
    assert "torch Sequential vs keras Functional" in out and "both layers agree" in out


@pytest.mark.parametrize(("spec", "file", "says"), [
    ("userpkg.nets:missing", "state.pt", "--torch-model userpkg.nets:missing: userpkg.nets has no 'missing'"),
    ("userpkg.absent:build", "state.pt", "--torch-model userpkg.absent:build: cannot import userpkg.absent"),
    ("userpkg.nets", "state.pt", "--torch-model userpkg.nets: should be package.module:factory"),
    ("userpkg.nets:not_a_module", "state.pt", "got int, but should be an nn.Module"),
    ("userpkg.nets:build", "whole.pt", "not loaded: it holds pickled objects"),
    ("userpkg.nets:build", "model.pt2", "--torch-model loads a state_dict (.pt), but"),
])
def test_a_bad_model_factory_or_state_dict_is_one_line(files, capsys, monkeypatch, spec, file, says):
    monkeypatch.chdir(files["state.pt"].parent)
    monkeypatch.setattr(sys, "path", list(sys.path))
    err = one_line_error(*run([files[file], files["port.keras"], "--torch-model", spec], capsys))
    assert says in err, err


def test_a_state_dict_that_does_not_fit_the_factory_s_model(files, tmp_path, capsys, monkeypatch):
    import torch

    torch.save({"0.weight": torch.zeros(8, 5)}, tmp_path / "other.pt")
    monkeypatch.chdir(files["state.pt"].parent)
    monkeypatch.setattr(sys, "path", list(sys.path))
    err = one_line_error(*run([tmp_path / "other.pt", files["port.keras"], "--torch-model", "userpkg.nets:build"],
                              capsys))
    assert "does not fit the model userpkg.nets:build returns" in err, err
