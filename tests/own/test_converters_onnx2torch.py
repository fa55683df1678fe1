"""Keras -> ``model.export(format="onnx")`` (tf2onnx) -> onnx2torch, for other layer kinds than the dense MLP of
``tests/own/test_converters.py`` (marker ``converters``; onnx2torch converts in a child process with an empty
``torchvision`` module standing in, as there). The conv net's ``OnnxTranspose`` of the channels-last input is the
walker's own change of layout, its ``OnnxTranspose`` + ``OnnxReshape`` (the shape computed by ``OnnxShape``,
``OnnxGather``...) a Flatten in the canonical order, its ``Sequential(OnnxPadStatic, Conv2d)`` one Conv,
``OnnxFunction(tanh)`` an activation, and an ``OnnxBinaryMathOperation`` adding two computed tensors a residual Add
(``equivalence.frameworks.torch.onnx2torch``). tf2onnx's BatchNorm and LayerNorm written as ops, an Embedding's id
wrap and ``Gather``, a Conv1D's ``Unsqueeze`` and a second branch are refused in one line naming the module."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.own.test_converters import ONNX2TORCH_CHILD, _converters  # noqa: F401 - the autouse skip
from tests.residual_models import drawn_weights, keras_block_models

pytestmark = pytest.mark.converters


def keras_models() -> dict:
    """A conv net (Conv2D, MaxPooling2D, Conv2D, Flatten, Dense), a conv ONNX pads unevenly (``"same"``, stride 2:
    onnx2torch's ``Sequential(OnnxPadStatic, Conv2d)``), a Conv1D, an MLP with a BatchNormalization and a
    LayerNormalization, a token model (Embedding, Dense per token, GlobalAveragePooling1D, Dense), a residual
    block ``relu(fc2(relu(fc1(x))) + x)`` and two computed branches ``Add()([a(fc1(s)), proj(s)])``, each called
    once (Keras' ONNX export wants that)."""
    import keras

    L = keras.layers
    conv = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
                             L.MaxPooling2D(2, name="pool"), L.Conv2D(5, 3, name="conv_1"), L.Flatten(name="flatten"),
                             L.Dense(6, activation="tanh", name="dense"), L.Dense(2, name="dense_1")])
    norms = keras.Sequential([keras.Input((5,)), L.Dense(6, activation="relu", name="dense"),
                              L.BatchNormalization(name="bn"), L.Dense(4, name="dense_1"),
                              L.LayerNormalization(name="ln"), L.Dense(3, name="dense_2")])
    ids = keras.Input((5,), dtype="int32")
    t = L.Dense(6, activation="relu", name="ff")(L.Embedding(10, 4, name="emb")(ids))
    tokens = keras.Model(ids, L.Dense(2, name="head")(L.GlobalAveragePooling1D(name="mean")(t)))
    padded = keras.Sequential([keras.Input((8, 8, 2)), L.Conv2D(3, 3, strides=2, padding="same", name="conv"),
                               L.Flatten(name="flatten"), L.Dense(2, name="dense")])
    conv1d = keras.Sequential([keras.Input((10, 2)), L.Conv1D(3, 3, name="conv"), L.Flatten(name="flatten"),
                               L.Dense(2, name="dense")])
    blocks = keras_block_models()
    models = {"conv": drawn_weights(conv), "padded": drawn_weights(padded), "norms": drawn_weights(norms),
              "tokens": drawn_weights(tokens), "conv1d": drawn_weights(conv1d), "residual": blocks["dense"],
              "projection": blocks["projection"]}
    for model in models.values():
        model(np.zeros((1, *model.inputs[0].shape[1:]), model.inputs[0].dtype))
    return models


CHILD = ONNX2TORCH_CHILD.split("from equivalence import")[0] + """
import json
from equivalence import assert_equivalent, compare_models
from equivalence.core.walk import ModelNotSupported
from tests.own.test_converters_onnx2torch import keras_models

models, out = keras_models(), {}
converted = {}
for name, model in models.items():
    path = Path(sys.argv[1]) / f"{name}.onnx"
    model.export(str(path), format="onnx", verbose=False)
    converted[name] = onnx2torch.convert(onnx.load(path))
for name in ("conv", "padded", "residual"):
    result = assert_equivalent(converted[name], models[name], max_examples=20)
    pairs = zip(result.torch_layers, result.keras_layers)
    out[name] = {"message": result.message(), "matched": result.matched(),
                 "kinds": [u.kind for u in result.torch_layers],
                 "layer_kinds": [(t.layer_kind, t.in_shape, t.out_shape) == (k.layer_kind, k.in_shape, k.out_shape)
                                 for t, k in pairs]}
with torch.no_grad():
    [conv for conv in converted["conv"].modules() if isinstance(conv, torch.nn.Conv2d)][1].weight[2, 1, 0, 2] += 1e-3
    next(c for c in converted["padded"].modules() if isinstance(c, torch.nn.Conv2d)).weight[1, 0, 2, 1] += 1e-3
    next(b for b in converted["residual"].buffers() if tuple(b.shape) == (6, 4))[3, 1] += 1e-3  # fc2's, (in, out)
for name in ("conv", "padded", "residual"):
    out[name]["moved"] = compare_models(converted[name], models[name], max_examples=5).message()
for name in ("norms", "tokens", "conv1d", "projection"):
    try:
        compare_models(converted[name], models[name], max_examples=5)
    except ModelNotSupported as exc:
        out[name] = {"refused": str(exc)}
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def judged(tmp_path_factory) -> dict:
    """What the child process found for each model: its messages, or the refusal."""
    if importlib.util.find_spec("onnx2torch") is None:
        pytest.skip("onnx2torch is not installed: make converters installs it (--no-deps)")
    folder = tmp_path_factory.mktemp("onnx2torch_kinds")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(folder)], capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_a_keras_conv_net_through_onnx2torch_is_judged_layer_by_layer(judged):
    conv = judged["conv"]
    assert "all 6 layers agree" in conv["message"], conv["message"]
    assert conv["kinds"] == ["Conv2d", "MaxPool2d", "Conv2d", "OnnxTranspose+OnnxReshape", "OnnxMatMul+Add",
                             "OnnxMatMul+Add"], conv["kinds"]
    assert all(conv["layer_kinds"]), conv["matched"]  # the Keras walker's kinds and shapes, unit by unit
    assert "(OnnxTranspose+OnnxReshape; linear: none) = keras 'flatten' (Flatten" in conv["matched"][3]
    assert "tanh: OnnxFunction " in conv["matched"][4], conv["matched"][4]


def test_a_moved_conv_weight_in_onnx2torch_s_module_is_named_at_its_layer(judged):
    moved = judged["conv"]["moved"]
    assert "/conv_1_2/BiasAdd', keras 'conv_1'): kernel: 1 / 180 elements differ" \
        in moved and "layer 2 (torch " in moved, moved


def test_a_keras_residual_block_through_onnx2torch_is_judged_with_its_add(judged):
    residual = judged["residual"]
    assert "all 4 layers agree" in residual["message"], residual["message"]
    assert residual["kinds"] == ["OnnxMatMul+Add", "OnnxMatMul+Add", "OnnxBinaryMathOperation", "OnnxMatMul+Add"]
    assert all(residual["layer_kinds"]), residual["matched"]
    assert "= keras 'add' (Add; relu: Activation 'after')" in residual["matched"][2], residual["matched"][2]
    assert "layer 1 (torch " in residual["moved"] and "keras 'fc2'): kernel: 1 / 24 elements differ" \
        in residual["moved"], residual["moved"]


@pytest.mark.parametrize(("name", "module"), [
    ("norms", "bn_1/batchnorm/mul_1' (OnnxBinaryMathOperation) at position 3: onnx2torch's "
              "OnnxBinaryMathOperation (mul): not read"),
    ("tokens", "(OnnxBinaryMathOperation) at position 0: onnx2torch's OnnxBinaryMathOperation (add): not read"),
    ("conv1d", "conv_1/convolution/ExpandDims' (OnnxUnsqueezeStaticAxes) at position 0: onnx2torch's "
               "OnnxUnsqueezeStaticAxes: not read"),  # tf2onnx's Conv1D: ExpandDims, a 2-D Conv, Squeeze
    ("projection", "fc1_1/MatMul' (OnnxMatMul) at position 5: onnx2torch's OnnxMatMul not of the previous layer's "
                   "output by a 2-D constant: not read (a second branch"),  # proj's MatMul comes first in its graph
])
def test_what_onnx2torch_s_modules_are_not_read_is_refused_in_one_line_naming_the_module(judged, name, module):
    refused = judged[name]["refused"]
    assert module in refused and "\n" not in refused, refused


def test_a_conv_onnx_pads_unevenly_is_read_through_onnx2torch_s_pad_module_and_a_moved_weight_named(judged):
    padded = judged["padded"]
    assert "all 3 layers agree" in padded["message"], padded["message"]
    assert padded["kinds"] == ["OnnxPadStatic+Conv2d", "OnnxTranspose+OnnxReshape", "OnnxMatMul+Add"]
    assert all(padded["layer_kinds"]), padded["matched"]  # the padding (0, 1) per axis as Keras' "same", stride 2
    assert "layer 0 (torch " in padded["moved"] and "keras 'conv'): kernel: 1 / 54 elements differ" \
        in padded["moved"], padded["moved"]
