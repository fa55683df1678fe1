"""The pytest plugin in a user's temporary project, and ``equivalence compare`` on saved files."""

from __future__ import annotations

import numpy as np
import pytest

from equivalence.cli import EXIT_DISAGREE, EXIT_OK, EXIT_USAGE, main
from tests.own_models import keras_model, torch_model

pytestmark = pytest.mark.usefixtures("keras_walker_or_skip")  # Keras 3 models, read by its walker

WIDTHS = (6, 8, 8, 3)
CHAIN = ("relu", "tanh", "softmax")

USER_TEST = '''
import keras
import torch
from torch import nn


def models(keras_activation="tanh"):
    torch.manual_seed(0)
    t = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3), nn.Softmax(dim=-1))
    k = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu", name="d0"),
                          keras.layers.Dense(8, activation=keras_activation, name="d1"),
                          keras.layers.Dense(3, activation="softmax", name="d2")])
    for linear, dense in zip(t[::2], k.layers):  # copied by hand: port_weights refuses different activations
        dense.set_weights([linear.weight.detach().numpy().T, linear.bias.detach().numpy()])
    return t, k


def test_port_agrees(equivalence):
    t, k = models()
    assert equivalence.assert_equivalent(t, k, max_examples=5).passed


def test_wrong_port(equivalence):
    t, k = models(keras_activation="sigmoid")
    equivalence.assert_equivalent(t, k)
'''


def test_the_plugin_loads_from_its_entry_point_without_importing_frameworks(pytester):
    pytester.makepyfile(test_user='''
import sys

def test_fixture(equivalence):
    assert callable(equivalence.assert_equivalent) and callable(equivalence.compare_models)
    assert "torch" not in sys.modules and "tensorflow" not in sys.modules
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "--equivalence-table" in "".join(pytester.runpytest_subprocess("--help").outlines)


def test_the_plugin_checks_a_port_in_a_temporary_project(pytester, torch_adapter, keras_adapter):
    """Also listed in the project's conftest: registered once, not twice."""
    pytester.makeconftest('pytest_plugins = ["equivalence.pytest_plugin"]\n')
    pytester.makepyfile(test_port=USER_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--equivalence-table", "layers.md")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*layer 1 (torch '2', keras 'd1'): activation: got sigmoid in keras*"])
    table = (pytester.path / "layers.md").read_text()
    assert "## test_port.py::test_port_agrees" in table and "## test_port.py::test_wrong_port" in table
    assert table.count("| 1 | 2 | d1 | 8->8 |") == 2
    assert "PASS over 5 input batches" in table and "FAIL over 1 input batch," in table


def test_p_no_equivalence_turns_the_plugin_off(pytester):
    pytester.makepyfile(test_user='''
def test_fixture(equivalence):
    pass
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:equivalence")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'equivalence' not found*"])


def test_an_unsupported_model_fails_the_user_s_test_without_our_frames(pytester, torch_adapter, keras_adapter):
    pytester.makepyfile(test_user='''
import keras
from torch import nn


def test_port(equivalence):
    t = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4, elementwise_affine=False))
    k = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)])
    equivalence.assert_equivalent(t, k)
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    output = "\n".join(result.outlines)
    assert "torch layer '1' (LayerNorm) at position 1" in output
    assert "equivalence/own.py" not in output and "torch/walk.py" not in output, output
    assert "pytest_plugin.py" not in output, output


# --- equivalence compare ------------------------------------------------------------------------

@pytest.fixture
def files(tmp_path, torch_adapter, keras_adapter):
    """A torch.export program and its .keras port; a wrong port; a model it refuses."""
    import keras
    import torch

    from equivalence import port_weights

    source = torch_model("custom_functional", WIDTHS, CHAIN)
    good = keras_model("functional_layers", WIDTHS, CHAIN)
    wrong = keras_model("functional_layers", WIDTHS, ("relu", "sigmoid", "softmax"))
    port_weights(source, good)
    out = {"pt2": tmp_path / "model.pt2", "good": tmp_path / "good.keras", "wrong": tmp_path / "wrong.keras",
           "refused": tmp_path / "norm.keras", "text": tmp_path / "notes.pt2"}
    torch.export.save(torch.export.export(source.eval(), (torch.zeros(2, WIDTHS[0]),)), out["pt2"])
    good.save(out["good"])
    wrong.save(out["wrong"])
    keras.Sequential([keras.Input((6,)), keras.layers.Dense(8),  # a LayerNormalization without scale: refused
                      keras.layers.LayerNormalization(scale=False, name="norm")]).save(out["refused"])
    out["text"].write_text("not a program")
    return out


def test_compare_exits_0_for_a_faithful_port_and_writes_the_table(files, tmp_path, capsys):
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).normal(size=(5, WIDTHS[0])).astype(np.float32))
    table = tmp_path / "table.md"
    assert main(["compare", str(files["pt2"]), str(files["good"]), "--input", str(x), "--table", str(table)]) == EXIT_OK
    assert "all 3 layers agree over 1 input batch" in capsys.readouterr().out
    assert "| 2 | fc3 | dense_2 | 8->3 | softmax | float32 | same |" in table.read_text()
    assert main(["compare", str(files["pt2"]), str(files["good"]), "--examples", "5"]) == EXIT_OK


def test_compare_exits_1_naming_the_layer_of_a_wrong_port(files, capsys):
    assert main(["compare", str(files["pt2"]), str(files["wrong"])]) == EXIT_DISAGREE
    assert "layer 1 (torch 'fc2', keras 'dense_1'): activation: got sigmoid in keras" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "expected"), [
    (["text", "good"], "notes.pt2: not a torch.export program"),
    (["pt2", "missing"], "missing.keras: no such file"),
    (["good", "good"], "good.keras: not a torch.export program"),
    (["pt2", "pt2"], "model.pt2: not a .keras file"),
    (["pt2", "refused"], "cannot be judged: keras layer 'norm' (LayerNormalization) at position 1"),
])
def test_compare_exits_2_with_one_line_for_bad_or_unsupported_files(files, tmp_path, capsys, args, expected):
    paths = [str(files.get(a, tmp_path / f"{a}.keras")) for a in args]
    assert main(["compare", *paths]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1, err


def test_compare_exits_2_for_inputs_of_the_wrong_width(files, tmp_path, capsys):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 5), np.float32))
    assert main(["compare", str(files["pt2"]), str(files["good"]), "--input", str(x)]) == EXIT_USAGE
    assert "x has shape (2, 5), but the models take 6 features" in capsys.readouterr().err
