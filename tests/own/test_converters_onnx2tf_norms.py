"""onnx2tf's SavedModel and ``.tflite`` of torch models with a ``LayerNorm`` or a ``BatchNorm1d`` (torch ->
``torch.onnx.export(dynamo=False)`` -> onnx2tf), judged layer by layer against the torch model (issue 26): ``make
converters`` (marker ``converters``).

onnx2tf writes a LayerNorm as ops: an ONNX ``LayerNormalization`` (opset 17 on) as tf_keras' (``Mean``,
``StopGradient``, ``SquaredDifference``, ``Mean``, ``AddV2``, ``Rsqrt``, ``Mul``, ``Mul``, ``Mul``, ``Sub``,
``AddV2``; in the ``.tflite`` ``MEAN`` ... ``ADD``, ten ops), and the nine ops of torch's export below opset 17 one by
one (``Mean``, ``Sub``, ``Pow``, ``Mean``, ``AddV2``, ``Sqrt``, ``RealDiv``, ``Mul``, ``AddV2``; in the ``.tflite``
``MEAN``, ``SUB``, ``MUL``, ``MEAN``, ``ADD``, ``RSQRT``, ``MUL``, ``MUL``, ``ADD``): each read as one ``LayerNorm``
unit. A norm after a conv net's flatten (onnx2tf's ``Transpose`` to channels-first and ``Reshape``: the features in
torch's ``C, H, W`` order) holds its parameters in that order: read in the canonical ``H, W, C`` order, as the torch
walker reads the model's, so a parameter moved in the file is named at its layer. The flatten's input is 2 x 2 x 5,
so a wrong order would show."""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings

import numpy as np
import pytest

from equivalence import ModelNotSupported, compare_models
from tests.own.pairs import read_as
from tests.own.test_converters import _converters, moved  # noqa: F401 - the autouse skip without them

pytestmark = pytest.mark.converters

NETS = '''
from torch import nn


def mlp():
    """Linear, LayerNorm, ReLU, Linear on 6 features."""
    return nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 3)).eval()


def conv(norm):
    """Conv2d, ReLU, Flatten, a norm of its 20 features (BatchNorm1d or LayerNorm), Linear on 4 x 4 x 4 inputs."""
    layer = nn.BatchNorm1d(20) if norm == "batch" else nn.LayerNorm(20)
    return nn.Sequential(nn.Conv2d(4, 5, 3), nn.ReLU(), nn.Flatten(), layer, nn.Linear(20, 3)).eval()
'''
CASES = {"mlp17": ("mlp", 17), "mlp13": ("mlp", 13), "conv_batch": ("batch", 17), "conv_layer17": ("layer", 17),
         "conv_layer13": ("layer", 13)}
"""Each conversion: the model (``mlp``, or a conv net with that norm after its flatten) and the export's opset."""
SAVED_LN = "saved_model Mean+StopGradient+SquaredDifference+Mean+AddV2+Rsqrt+Mul+Mul+Mul+Sub+AddV2"
SAVED_LN13 = "saved_model Mean+Sub+Pow+Mean+AddV2+Sqrt+RealDiv+Mul+AddV2"
TFLITE_LN = "tflite MEAN+SQUARED_DIFFERENCE+MEAN+ADD+RSQRT+MUL+MUL+MUL+SUB+ADD"
TFLITE_LN13 = "tflite MEAN+SUB+MUL+MEAN+ADD+RSQRT+MUL+MUL+ADD"
AFFINE = ", the BatchNorm's statistics folded into a scale and a shift by the converter"
FOLDED_AFTER = ", the BatchNorm before it folded into the dense layer by the converter"
CONV_SAVED = ["saved_model Transpose+Conv2D+AddV2", "saved_model Transpose+Reshape"]
CONV_TFLITE = ["tflite CONV_2D", "tflite TRANSPOSE+RESHAPE"]


def build(case: str):
    import torch

    namespace: dict = {}
    exec(NETS, namespace)
    torch.manual_seed(0)
    kind, _ = CASES[case]
    model = namespace["mlp"]() if kind == "mlp" else namespace["conv"](kind)
    norm = model[1] if kind == "mlp" else model[3]
    with torch.no_grad():  # parameters (and statistics) away from the identity, so a wrong order would show
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
        if kind == "batch":
            norm.running_mean.uniform_(-1, 1)
            norm.running_var.uniform_(0.5, 2)
    return model


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, tuple]:
    """Every case exported to ONNX and converted by onnx2tf, the conversions in child processes run together."""
    import torch

    folder = tmp_path_factory.mktemp("onnx2tf_norms")
    models, procs = {}, {}
    for case, (kind, opset) in CASES.items():
        models[case] = build(case)
        shape = (1, 6) if kind == "mlp" else (1, 4, 4, 4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(models[case], (torch.zeros(*shape),), folder / f"{case}.onnx", dynamo=False,
                              opset_version=opset)
        command = ["-i", str(folder / f"{case}.onnx"), "-o", str(folder / case), "-n"]
        procs[case] = subprocess.Popen([sys.executable, "-m", "onnx2tf", *command], stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True)
    for case, proc in procs.items():  # the case named when its conversion fails
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, (case, out[-2000:])
    return {case: (models[case], folder / case) for case in CASES}


@pytest.mark.parametrize(("case", "file", "units"), [
    ("mlp17", ".", ["saved_model MatMul+AddV2", SAVED_LN, "saved_model MatMul+AddV2"]),
    ("mlp17", "mlp17_float32.tflite", ["tflite FULLY_CONNECTED", TFLITE_LN, "tflite FULLY_CONNECTED"]),
    ("mlp13", ".", ["saved_model MatMul+AddV2", SAVED_LN13, "saved_model MatMul+AddV2"]),
    ("mlp13", "mlp13_float32.tflite", ["tflite FULLY_CONNECTED", TFLITE_LN13, "tflite FULLY_CONNECTED"])],
    ids=["saved_model_opset17", "tflite_opset17", "saved_model_opset13", "tflite_opset13"])
def test_onnx2tf_s_layer_norm_ops_are_one_layer_norm_matched_with_the_model_s(converted, case, file, units):
    """The ReLU after the norm is its activation (in the ``.tflite`` fused into the last ``ADD``); epsilon 1e-5 read
    from the file and matched with the model's."""
    model, folder = converted[case]
    result = read_as(model, folder / file, units)
    assert result.keras_layers[1].layer_kind == result.torch_layers[1].layer_kind
    assert result.keras_layers[1].layer_kind.epsilon == 1e-5
    assert result.keras_layers[1].activation == "relu"


@pytest.mark.parametrize(("case", "file", "units"), [
    ("conv_batch", ".", [*CONV_SAVED, f"saved_model Mul+AddV2{AFFINE}", "saved_model MatMul+AddV2"]),
    ("conv_batch", "conv_batch_float32.tflite", [CONV_TFLITE[0], CONV_TFLITE[1],
                                                 f"tflite FULLY_CONNECTED{FOLDED_AFTER}"]),
    ("conv_layer17", ".", [*CONV_SAVED, SAVED_LN, "saved_model MatMul+AddV2"]),
    ("conv_layer17", "conv_layer17_float32.tflite", [*CONV_TFLITE, TFLITE_LN, "tflite FULLY_CONNECTED"]),
    ("conv_layer13", ".", [*CONV_SAVED, SAVED_LN13, "saved_model MatMul+AddV2"]),
    ("conv_layer13", "conv_layer13_float32.tflite", [*CONV_TFLITE, TFLITE_LN13, "tflite FULLY_CONNECTED"])],
    ids=["batch_saved_model", "batch_tflite", "layer17_saved_model", "layer17_tflite", "layer13_saved_model",
         "layer13_tflite"])
def test_a_norm_after_onnx2tf_s_channels_first_flatten_agrees_in_the_canonical_order(converted, case, file, units):
    """The BatchNorm1d onnx2tf writes as a ``Mul`` and an ``AddV2`` (``ChannelAffine``, the model's norm folded
    exactly); the TFLite converter folds that into the ``FULLY_CONNECTED`` after it (matched with the model's norm
    and Linear folded). Its parameters, stored in torch's ``C, H, W`` order, are read in the canonical one."""
    model, folder = converted[case]
    result = read_as(model, folder / file, units)
    assert "(Flatten; linear: none) = " in result.matched()[1], result.matched()


@pytest.mark.parametrize(("case", "file", "label", "row"), [
    ("conv_layer17", ".", "keras_graph", "kernel"), ("conv_layer17", "conv_layer17_float32.tflite", "litert", "kernel"),
    ("conv_layer13", ".", "keras_graph", "kernel"), ("conv_layer13", "conv_layer13_float32.tflite", "litert", "kernel"),
    ("conv_batch", ".", "keras_graph", "scale"), ("mlp17", ".", "keras_graph", "kernel"),
    ("mlp13", "mlp13_float32.tflite", "litert", "kernel")],
    ids=["layer17_saved_model", "layer17_tflite", "layer13_saved_model", "layer13_tflite", "batch_saved_model",
         "mlp17_saved_model", "mlp13_tflite"])
def test_a_changed_norm_parameter_in_the_torch_model_is_named_at_its_layer(converted, case, file, label, row):
    """Torch's gamma 3 changed: named in the norm (a LayerNorm's gamma and beta are its two rows, ``kernel``; a
    BatchNorm1d's folded scale, ``scale``), at the canonical index of torch's feature 3 after a flatten (channel 0
    at h 1, w 1: 15 of the 2 x 2 x 5)."""
    import torch

    from equivalence.core.spatial import flatten_permutation

    model, folder = converted[case]
    mlp = case.startswith("mlp")
    at, layer = (1, 1) if mlp else (3, 2)
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        wrong[at].weight[3] += 1e-2
    message = compare_models(wrong, folder / file, max_examples=3).message()
    features = wrong[at].weight.numel()
    index = 3 if mlp else int(list(flatten_permutation((2, 2, 5))).index(3))
    where = f"({index},)" if row == "scale" else f"(0, {index})"
    elements = features if row == "scale" else 2 * features
    assert f"layer {layer} (torch '{at}', {label} '" in message, message
    assert f"{row}: 1 / {elements} elements differ" in message and f"at index {where}" in message, message


@pytest.mark.parametrize("file", [".", "conv_layer17_float32.tflite"], ids=["saved_model", "tflite"])
def test_a_gamma_moved_in_onnx2tf_s_file_is_named_at_its_layer(converted, tmp_path, file):
    """The gamma as onnx2tf stores it (torch's ``C, H, W`` order): its element 7 moved in the file is named in the
    norm, one of its 20; read in the wrong order, all would differ."""
    from equivalence.core.spatial import flatten_permutation

    model, folder = converted["conv_layer17"]
    gamma = model[3].weight.detach().numpy()
    if file == ".":  # tf_keras' LayerNormalization keeps gamma a variable: changed in the loaded model, saved again
        import tensorflow as tf

        loaded = tf.saved_model.load(str(folder))
        found = [v for v in loaded.signatures["serving_default"].variables if np.array_equal(v.numpy(), gamma)]
        assert len(found) == 1, found
        found[0].assign(found[0].numpy() + np.eye(1, gamma.size, 7, dtype=gamma.dtype)[0] * 1e-2)
        wrong = tmp_path / "wrong"
        tf.saved_model.save(loaded, str(wrong), signatures=loaded.signatures["serving_default"])
    else:
        wrong = moved(folder / file, gamma, 7, 1e-2, tmp_path / "wrong.tflite")
    message = compare_models(model, wrong, max_examples=3).message()
    assert "layer 2 (torch '3', " in message and "kernel: 1 / 40 elements differ" in message, message
    assert f"at index (0, {list(flatten_permutation((2, 2, 5))).index(7)})" in message, message


def test_float16_weights_with_a_layer_norm_are_refused_in_one_line(converted):
    """The TFLite converter stores the norm's epsilon as float16 with its gamma and beta (1e-5 as 1.0013580e-5)."""
    model, folder = converted["mlp17"]
    with pytest.raises(ModelNotSupported, match=r"\(MEAN\) at position 8: a LayerNormalization whose epsilon the file "
                                                r"stores as float16 \(DEQUANTIZE: .* rounds it, to 1.001358e-05\)"):
        compare_models(model, folder / "mlp17_float16.tflite", max_examples=3)
