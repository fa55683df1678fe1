"""onnx2tf's SavedModel and ``.tflite`` of a torch conv net (torch -> ``torch.onnx.export(dynamo=False)`` ->
onnx2tf), judged layer by layer against the torch model (issue 26): ``make converters`` (marker ``converters``).

onnx2tf makes the graph channels-last (its input ``N, H, W, C``) and writes torch's ``Flatten`` as a ``Transpose``
to channels-first and a ``Reshape`` to ``[1, features]`` (the batch torch's export fixed): the features in torch's
``C, H, W`` order. The readers read the two as one flatten unit (run a sample at a time, as the graph fixes its
batch at 1), its output put in the canonical ``H, W, C`` order, and the dense layer after it with its rows permuted
to that order, as the torch walker permutes a ``Linear``'s. A ``BatchNorm2d`` the export folded into the conv is
matched with the model's conv and norm (``equivalence.own_folded``). The flatten's input is 2 x 2 x 5, so a wrong
order would show."""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from equivalence.cli import EXIT_DISAGREE, EXIT_OK, main
from tests.own.pairs import read_as
from tests.own.test_converters import _converters, resaved  # noqa: F401 - the autouse skip without the converters

pytestmark = pytest.mark.converters

CONVNET = '''
from torch import nn


def build(norm=False):
    """Conv2d, (BatchNorm2d,) ReLU, MaxPool2d, Conv2d, AvgPool2d, Flatten, Linear on 4 x 10 x 10 inputs."""
    layers = [nn.Conv2d(4, 4, 3, padding=1), *([nn.BatchNorm2d(4)] if norm else []), nn.ReLU(), nn.MaxPool2d(2),
              nn.Conv2d(4, 5, 3), nn.AvgPool2d(2, stride=1), nn.Flatten(), nn.Linear(20, 6)]
    return nn.Sequential(*layers).eval()


def build_norm_after_relu():
    """Conv2d, ReLU, BatchNorm2d (which no export folds into the conv), MaxPool2d, Flatten, Linear."""
    return nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(4), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(100, 3)).eval()
'''
SHAPE = (4, 10, 10)  # 4 input channels: with 3, onnx2tf downloads sample images to check its conversion
SAVED_UNITS = ["saved_model Conv2D+AddV2", "saved_model MaxPool", "saved_model Conv2D+AddV2", "saved_model AvgPool",
               "saved_model Transpose+Reshape", "saved_model MatMul+AddV2"]
"""What the SavedModel reader says each unit of onnx2tf's graph is: the transpose read with the flatten."""
TFLITE_UNITS = ["tflite CONV_2D", "tflite MAX_POOL_2D", "tflite CONV_2D", "tflite AVERAGE_POOL_2D",
                "tflite TRANSPOSE+RESHAPE", "tflite FULLY_CONNECTED"]
TFLITE_FP16_UNITS = [u if "FULLY" not in u and "CONV" not in u else f"{u} (float16 weights, DEQUANTIZE)"
                     for u in TFLITE_UNITS]
FOLDED = ", the BatchNorm folded into the conv by the converter"


def build(norm: bool | str = False):
    """The conv net; ``norm``: with a BatchNorm2d after the first conv (``True``), or after its ReLU
    (``"after_relu"``)."""
    import torch

    namespace: dict = {}
    exec(CONVNET, namespace)  # the module the command imports too (--torch-model convnet:build)
    torch.manual_seed(0)
    model = namespace["build_norm_after_relu"]() if norm == "after_relu" else namespace["build"](norm)
    at = 2 if norm == "after_relu" else 1
    if norm:  # statistics and affine parameters away from the identity, so the fold moves every weight
        with torch.no_grad():
            model[at].running_mean.uniform_(-1, 1)
            model[at].running_var.uniform_(0.5, 2)
            model[at].weight.uniform_(0.5, 1.5)
            model[at].bias.uniform_(-1, 1)
    return model


def onnx2tf_minimal(onnx_path: Path, folder: Path, *options: str) -> Path:
    """onnx2tf's SavedModel and ``.tflite`` files (float32, float16 weights), converted in a child process."""
    command = ["-i", str(onnx_path), "-o", str(folder), "-n", *options]
    proc = subprocess.run([sys.executable, "-m", "onnx2tf", *command], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return folder


def converted(folder: Path, norm: bool | str):
    import torch

    model = build(norm)
    torch.save(model.state_dict(), folder / "state.pt")
    (folder / "convnet.py").write_text(CONVNET, encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (torch.zeros(1, *SHAPE),), folder / "convnet.onnx", dynamo=False,
                          opset_version=20)
    onnx2tf_minimal(folder / "convnet.onnx", folder / "onnx2tf")
    return model, folder


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return converted(tmp_path_factory.mktemp("onnx2tf_conv"), norm=False)


@pytest.fixture(scope="module")
def normed(tmp_path_factory):
    return converted(tmp_path_factory.mktemp("onnx2tf_conv_norm"), norm=True)


@pytest.fixture(scope="module")
def norm_after_relu(tmp_path_factory):
    return converted(tmp_path_factory.mktemp("onnx2tf_conv_norm_after_relu"), norm="after_relu")


def test_onnx2tf_s_saved_model_of_a_torch_conv_net_agrees_layer_by_layer(plain):
    model, folder = plain
    result = read_as(model, folder / "onnx2tf", SAVED_UNITS)
    assert result.labels == ("torch", "keras_graph")
    assert "layer 4: torch '5' (Flatten; linear: none) = keras_graph 'PartitionedCall/model/tf.compat.v1.transpose/" \
        "transpose' (saved_model Transpose+Reshape; linear: none)" in result.matched()[4], result.matched()


def test_onnx2tf_s_tflite_of_a_torch_conv_net_with_a_flatten_in_torch_s_order_agrees(plain):
    model, folder = plain
    result = read_as(model, folder / "onnx2tf" / "convnet_float32.tflite", TFLITE_UNITS)
    assert "layer 4: torch '5' (Flatten; linear: none) = litert 'op 4' (tflite TRANSPOSE+RESHAPE; linear: none)" \
        in result.matched()[4], result.matched()
    fp16 = read_as(model, folder / "onnx2tf" / "convnet_float16.tflite", TFLITE_FP16_UNITS)
    assert fp16.labels == ("torch", "litert_fp16w")


@pytest.mark.parametrize(("file", "label", "name"), [
    (".", "keras_graph", "'PartitionedCall/model/tf.nn.convolution_1/convolution'"),
    ("convnet_float32.tflite", "litert", "'op 2'")], ids=["saved_model", "tflite"])
def test_a_perturbed_conv_weight_in_the_torch_model_is_named_at_its_layer(plain, file, label, name):
    import torch

    from equivalence import compare_models

    model, folder = plain
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        wrong[3].weight[1, 2, 0, 1] += 1e-3
    result = compare_models(wrong, folder / "onnx2tf" / file, max_examples=3)
    message = result.message()
    assert f"layer 2 (torch '3', {label} {name}): kernel: 1 / 180 elements differ from the torch weight.T" in message
    assert f"first divergence, torch vs {label}, layer 2:" in message, message
    assert max(r.ratio for r in result.results if r.layer == 2) > 100, message


def test_a_moved_dense_weight_in_onnx2tf_s_saved_model_is_named_at_its_layer(plain, tmp_path):
    """The ``MatMul`` after the flatten stores its rows in torch's ``C, H, W`` order: the element moved in the file
    is named in the dense layer, one of its 120."""
    from equivalence import compare_models

    model, folder = plain
    wrong = resaved(folder / "onnx2tf", model[6].weight.detach().numpy().T, 9, 1e-3, tmp_path / "wrong")
    message = compare_models(model, wrong, max_examples=3).message()
    assert "layer 5 (torch '6', keras_graph 'PartitionedCall/model/tf.linalg.matmul/MatMul'): kernel: 1 / 120 " \
        "elements differ" in message, message


@pytest.mark.parametrize(("file", "units"), [
    (".", [SAVED_UNITS[0] + FOLDED, *SAVED_UNITS[1:]]),
    ("convnet_float32.tflite", [TFLITE_UNITS[0] + FOLDED, *TFLITE_UNITS[1:]]),
    ("convnet_float16.tflite", [TFLITE_FP16_UNITS[0] + FOLDED, *TFLITE_FP16_UNITS[1:]])],
    ids=["saved_model", "tflite", "tflite_float16"])
def test_a_batch_norm_the_export_folded_into_the_conv_agrees_as_the_model_s_conv_and_norm(normed, file, units):
    """Float16 weights: the folded kernel and bias as the converter stored them, within the fold's rounding and
    float16's."""
    from equivalence.core.folded import FoldedConv

    model, folder = normed
    result = read_as(model, folder / "onnx2tf" / file, units)
    assert isinstance(result.torch_layers[0].layer_kind, FoldedConv)
    assert result.matched()[0].startswith("layer 0: torch '0+1' (Conv2d+BatchNorm2d; relu: ReLU '2') = ")


@pytest.mark.parametrize(("file", "unit"), [
    (".", "keras_graph 'PartitionedCall/model/tf.nn.convolution/convolution'"),
    ("convnet_float16.tflite", "litert_fp16w 'op 6'")], ids=["saved_model", "tflite_float16"])
def test_a_statistic_changed_after_the_conversion_is_named_at_the_folded_conv(normed, file, unit):
    import torch

    from equivalence import compare_models

    model, folder = normed
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        wrong[1].running_var[2] *= 1.01
    message = compare_models(wrong, folder / "onnx2tf" / file, max_examples=3).message()
    assert f"layer 0 (torch '0+1', {unit}): kernel: 36 / 144 elements differ from the torch layers folded" \
        in message, message


@pytest.mark.parametrize("file", ["onnx2tf", "onnx2tf/convnet_float32.tflite"], ids=["saved_model", "tflite"])
def test_the_command_judges_onnx2tf_s_files_of_a_conv_net_and_names_a_wrong_state(plain, monkeypatch, capsys,
                                                                                   file):
    import torch

    model, folder = plain
    state = model.state_dict()
    state["3.weight"] = state["3.weight"].clone()
    state["3.weight"][1, 2, 0, 1] += 1e-3
    torch.save(state, folder / "wrong.pt")
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    code = main(["compare", "state.pt", file, "--torch-model", "convnet:build", "--examples", "5"])
    out, err = capsys.readouterr()
    assert code == EXIT_OK and "all 6 layers agree" in out and "(Flatten; linear: none) = " in out, (out, err)
    code = main(["compare", "wrong.pt", file, "--torch-model", "convnet:build", "--examples", "5"])
    out, err = capsys.readouterr()
    assert code == EXIT_DISAGREE and "layer 2 (torch '3', " in out and "kernel: 1 / 180 elements differ" in out, \
        (out, err)


def test_with_torch_s_channels_first_input_kept_the_first_transpose_is_read_with_the_conv(plain):
    """onnx2tf ``-kt`` keeps the input ``N, C, H, W`` and writes a ``Transpose`` to channels-last first: read with the
    conv it leads into, the unit fed channels-first."""
    import onnx

    model, folder = plain
    name = onnx.load(folder / "convnet.onnx").graph.input[0].name
    kept = onnx2tf_minimal(folder / "convnet.onnx", folder / "kept", "-kt", name)
    read_as(model, kept, ["saved_model Transpose+Conv2D+AddV2", *SAVED_UNITS[1:]])
    read_as(model, kept / "convnet_float32.tflite", ["tflite TRANSPOSE+CONV_2D", *TFLITE_UNITS[1:]])
    read_as(model, kept / "convnet_float16.tflite", ["tflite TRANSPOSE+CONV_2D (float16 weights, DEQUANTIZE)",
                                                     *TFLITE_FP16_UNITS[1:]])


AFFINE = ", the BatchNorm's statistics folded into a scale and a shift by the converter"


@pytest.mark.parametrize(("file", "units", "label"), [
    (".", ["saved_model Conv2D+AddV2", f"saved_model Mul+AddV2{AFFINE}", "saved_model MaxPool",
           "saved_model Transpose+Reshape", "saved_model MatMul+AddV2"], "keras_graph"),
    ("convnet_float32.tflite", ["tflite CONV_2D", f"tflite MUL+ADD{AFFINE}", "tflite MAX_POOL_2D",
                                "tflite TRANSPOSE+RESHAPE", "tflite FULLY_CONNECTED"], "litert"),
    ("convnet_float16.tflite", ["tflite CONV_2D (float16 weights, DEQUANTIZE)",
                                f"tflite MUL+ADD (float16 weights, DEQUANTIZE){AFFINE}", "tflite MAX_POOL_2D",
                                "tflite TRANSPOSE+RESHAPE", "tflite FULLY_CONNECTED (float16 weights, DEQUANTIZE)"],
     "litert_fp16w")], ids=["saved_model", "tflite", "tflite_float16"])
def test_a_batch_norm_onnx2tf_wrote_as_a_mul_and_an_add_agrees_and_a_changed_statistic_is_named(norm_after_relu,
                                                                                               file, units, label):
    """A BatchNorm2d after a ReLU (no export folds it into the conv): onnx2tf writes a ``Mul`` and an ``Add`` of
    per-channel constants, read as the ``ChannelAffine`` kind and matched with the model's norm folded exactly."""
    import torch

    from equivalence import compare_models
    from equivalence.core.folded import ChannelAffine

    model, folder = norm_after_relu
    result = read_as(model, folder / "onnx2tf" / file, units)
    assert result.keras_layers[1].layer_kind == ChannelAffine(4)
    assert result.matched()[1].startswith(f"layer 1: torch '2' (BatchNorm2d; linear: none) = {label} ")
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        wrong[2].running_var[1] *= 1.01
    message = compare_models(wrong, folder / "onnx2tf" / file, max_examples=3).message()
    assert "layer 1 (torch '2', " in message and "scale: 1 / 4 elements differ from the torch layers folded" \
        in message, message
