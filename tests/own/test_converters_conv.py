"""A Keras conv net through ``model.export(format="onnx")`` (tf2onnx), and a torch one through ONNX and onnx2tf to
``.tflite``, judged layer by layer (issue 26 item 2):
``make converters`` (marker ``converters``). tf2onnx writes the channels-last input, a ``Transpose`` to
channels-first before the first conv and one back before the ``Flatten`` (its optimizer cancels the pairs between),
each read with its conv or pooling node as one unit, and the Keras ``Flatten`` as a ``Reshape`` to a shape computed
from the tensor's own (``Shape``, ``Gather``, ``Slice``, ``Concat``). onnx2tf folds the torch ``Flatten`` into the
``FULLY_CONNECTED`` after it, which the reader reads as a flatten unit and the dense one; its SavedModel has
``Transpose`` ops, read with the op each leads into."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tests.own.pairs import read_as
from tests.own.test_converters import _converters, moved  # noqa: F401 - the autouse skip without the converters

pytestmark = pytest.mark.converters


def keras_convnet(*, norm: bool = False):
    import keras

    L = keras.layers
    layers = [keras.Input((8, 8, 3)), L.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
              L.MaxPooling2D(2, name="pool"), L.Conv2D(5, 3, strides=2, padding="same", name="conv_1"),
              L.AveragePooling2D(2, strides=1, padding="same", name="avg")]
    layers += [L.BatchNormalization(name="norm")] if norm else []
    layers += [L.Flatten(name="flatten"), L.Dense(6, activation="tanh", name="dense"), L.Dense(2, name="dense_1")]
    model = keras.Sequential(layers)
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(0.5 if norm else -1, 1, w.shape).astype("float32") for w in model.get_weights()])
    model(np.zeros((1, 8, 8, 3), "float32"))  # Keras' ONNX export wants a model that was called
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory, keras_adapter):
    folder = tmp_path_factory.mktemp("keras_conv_onnx")
    model = keras_convnet()
    model.export(str(folder / "convnet.onnx"), format="onnx", verbose=False)
    return model, folder


TF2ONNX_UNITS = ["onnx Transpose+Conv", "onnx MaxPool", "onnx Conv", "onnx AveragePool+Transpose", "onnx Reshape",
                 "onnx MatMul+Add", "onnx MatMul+Add"]
"""What the reader says each unit of tf2onnx's graph is: the transposes read with the conv and the pooling."""


def test_a_keras_conv_net_and_its_onnx_export_agree_and_the_report_names_the_transposes(exported):
    result = read_as(exported[0], exported[1] / "convnet.onnx", TF2ONNX_UNITS)
    assert "layer 3: keras 'avg' (AveragePooling2D; linear: none) = ort " in result.matched()[3]
    assert "(onnx AveragePool+Transpose; linear: none)" in result.matched()[3]


def test_a_moved_conv_weight_in_the_keras_export_is_named_at_its_layer(exported):
    from equivalence import compare_models

    model, folder = exported
    kernel = model.get_layer("conv_1").kernel.numpy().transpose(3, 2, 0, 1)  # as ONNX stores it: (out, in, kh, kw)
    wrong = moved(folder / "convnet.onnx", kernel, 7, 1e-3, folder / "wrong.onnx")
    message = compare_models(model, wrong, max_examples=3).message()
    assert "layer 2 (keras 'conv_1', ort " in message and "kernel: 1 / 180 elements differ" in message, message


def keras_conv_norm():
    """Conv2D, BatchNormalization, ReLU: the BatchNorm right after the conv (tf2onnx does not fold it into it)."""
    import keras

    L = keras.layers
    model = keras.Sequential([keras.Input((6, 6, 2)), L.Conv2D(3, 3, padding="same", name="conv"),
                              L.BatchNormalization(name="norm"), L.ReLU(name="relu"), L.Flatten(name="flatten"),
                              L.Dense(2, name="dense")])
    rng = np.random.default_rng(1)
    norm = model.get_layer("norm")
    model.set_weights([rng.uniform(-1, 1, w.shape).astype("float32") for w in model.get_weights()])
    norm.moving_mean.assign(rng.uniform(-2, 2, 3).astype("float32"))
    norm.moving_variance.assign(rng.uniform(0.1, 3, 3).astype("float32"))
    model(np.zeros((1, 6, 6, 2), "float32"))
    return model


FOLDED = "the BatchNorm's statistics folded into a scale and a shift by the converter"


@pytest.mark.parametrize(("build", "at", "kinds"), [
    (lambda: keras_convnet(norm=True), 4, TF2ONNX_UNITS[:3] + ["onnx AveragePool", f"onnx Mul+Add+Transpose, {FOLDED}"]
     + TF2ONNX_UNITS[4:]),
    (keras_conv_norm, 1, ["onnx Transpose+Conv", f"onnx Mul+Add+Transpose, {FOLDED}", "onnx Reshape",
                          "onnx MatMul+Add"])], ids=["after_pooling", "after_conv"])
def test_a_batch_norm_tf2onnx_wrote_as_a_mul_and_an_add_agrees_as_its_scale_and_shift(tmp_path, keras_adapter, build,
                                                                                       at, kinds):
    from equivalence.core.folded import ChannelAffine

    model = build()
    model.export(str(tmp_path / "norm.onnx"), format="onnx", verbose=False)
    result = read_as(model, tmp_path / "norm.onnx", kinds)
    assert result.keras_layers[at].layer_kind == ChannelAffine(model.get_layer("norm").moving_mean.shape[0])
    assert f"layer {at}: keras 'norm' (BatchNormalization; " in result.matched()[at]


def keras_starting_with(first: str):
    """A Keras model on a (6, 6, 2) image whose first layer is a BatchNormalization (before a conv) or a Flatten
    (an MLP with a BatchNormalization): tf2onnx writes no Transpose first, its Mul and Add or its Reshape act on the
    channels-last input as it is."""
    import keras

    L = keras.layers
    layers = [L.BatchNormalization(name="norm"), L.Conv2D(2, 3, name="conv"), L.Flatten(name="flatten"),
              L.Dense(2, name="dense")] if first == "norm" else \
        [L.Flatten(name="flatten"), L.Dense(4, activation="relu", name="dense"), L.BatchNormalization(name="norm"),
         L.Dense(2, name="dense_1")]
    model = keras.Sequential([keras.Input((6, 6, 2)), *layers])
    rng = np.random.default_rng(1)
    model.set_weights([rng.uniform(-1, 1, w.shape).astype("float32") for w in model.get_weights()])
    norm = model.get_layer("norm")
    norm.moving_mean.assign(rng.uniform(-2, 2, norm.moving_mean.shape).astype("float32"))
    norm.moving_variance.assign(rng.uniform(0.1, 3, norm.moving_variance.shape).astype("float32"))
    model(np.zeros((1, 6, 6, 2), "float32"))
    return model


@pytest.mark.parametrize(("first", "at", "kinds"), [
    ("norm", 0, [f"onnx Mul+Add, {FOLDED}", "onnx Transpose+Conv+Transpose", "onnx Reshape", "onnx MatMul+Add"]),
    ("flatten", 2, ["onnx Reshape", "onnx MatMul+Add", f"onnx Mul+Add, {FOLDED}", "onnx MatMul+Add"])])
def test_a_tf2onnx_graph_starting_without_a_transpose_takes_its_input_channels_last(tmp_path, keras_adapter, first,
                                                                                    at, kinds):
    """Its first node no Transpose, the graph's layout is tf2onnx's (TensorFlow's channels-last); read as
    channels-first, the Flatten's order and the per-channel axis were wrong and ORT refused the input's shape."""
    from equivalence import compare_models

    model = keras_starting_with(first)
    model.export(str(tmp_path / "first.onnx"), format="onnx", verbose=False)
    result = read_as(model, tmp_path / "first.onnx", kinds)
    assert f"layer {at}: keras 'norm' (BatchNormalization; " in result.matched()[at]
    mean = model.get_layer("norm").moving_mean
    mean.assign(mean.numpy() + np.eye(1, mean.shape[0], 1, dtype="float32")[0])  # one channel's mean moved by 1
    message = compare_models(model, tmp_path / "first.onnx", max_examples=3).message()
    assert f"layer {at} (keras 'norm', ort " in message and "shift: 1 / " in message, message


def test_a_wrong_statistic_in_the_keras_model_against_its_export_is_named_and_far_outside(tmp_path, keras_adapter):
    from equivalence import compare_models

    model = keras_conv_norm()
    model.export(str(tmp_path / "norm.onnx"), format="onnx", verbose=False)
    variance = model.get_layer("norm").moving_variance
    variance.assign(variance.numpy() * np.array([1, 1.01, 1], "float32"))
    result = compare_models(model, tmp_path / "norm.onnx", x=np.random.default_rng(0).uniform(-1, 1, (8, 2, 6, 6)))
    message = result.message()
    assert "layer 1 (keras 'norm', ort 'sequential" in message and "scale: 1 / 3 elements differ from the keras " \
        "layers folded" in message, message
    assert max(r.ratio for r in result.results if r.layer == 1 and r.pair == ("keras", "ort")) > 100, message


def test_a_keras_layer_norm_tf2onnx_wrote_as_ops_agrees_and_a_moved_gamma_is_named(tmp_path, keras_adapter):
    import keras

    from equivalence import compare_models
    from equivalence.core.norms import LayerNorm

    L = keras.layers
    model = keras.Sequential([keras.Input((6,)), L.Dense(5, name="dense"), L.LayerNormalization(name="norm"),
                              L.Dense(2, activation="tanh", name="out")])
    rng = np.random.default_rng(2)
    model.set_weights([rng.uniform(-1, 1, w.shape).astype("float32") for w in model.get_weights()])
    model(np.zeros((1, 6), "float32"))
    model.export(str(tmp_path / "norm.onnx"), format="onnx", verbose=False)
    ops = "ReduceMean+Neg+Sub+Mul+ReduceMean+Add+Sqrt+Reciprocal+Mul+Mul+Mul+Add+Add"
    result = read_as(model, tmp_path / "norm.onnx", ["onnx MatMul+Add", f"onnx {ops}", "onnx MatMul+Add"])
    assert result.keras_layers[1].layer_kind == LayerNorm(5, 1e-3)
    gamma = model.get_layer("norm").gamma.numpy().reshape(1, -1)  # tf2onnx stores it (1, features)
    wrong = moved(tmp_path / "norm.onnx", gamma, 3, 1e-3, tmp_path / "wrong.onnx")
    message = compare_models(model, wrong, max_examples=3).message()
    assert "layer 1 (keras 'norm', ort " in message and "kernel: 1 / 10 elements differ" in message, message


# --- torch -> ONNX -> onnx2tf -> .tflite ------------------------------------------------------------

def torch_convnet():
    import torch
    from torch import nn

    torch.manual_seed(0)  # 4 input channels: with 3, onnx2tf downloads sample images to check its conversion
    return nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 5, 3), nn.Tanh(),
                         nn.AvgPool2d(2, stride=1), nn.Flatten(), nn.Linear(5, 6), nn.SiLU(), nn.Linear(6, 2)).eval()


@pytest.fixture(scope="module")
def onnx2tf_files(tmp_path_factory):
    import torch

    from tests.own.test_converters import onnx2tf

    folder = tmp_path_factory.mktemp("torch_conv_converted")
    model = torch_convnet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (torch.zeros(1, 4, 8, 8),), folder / "convnet.onnx", dynamo=False, opset_version=20)
    onnx2tf(folder / "convnet.onnx", folder / "onnx2tf")
    return model, folder / "onnx2tf"


@pytest.mark.parametrize(("file", "label"), [("convnet_float32.tflite", "litert"),
                                             ("convnet_float16.tflite", "litert_fp16w")])
def test_onnx2tf_s_tflite_of_a_torch_conv_net_agrees_and_its_fused_flatten_is_named(onnx2tf_files, file, label):
    from equivalence import assert_equivalent

    model, folder = onnx2tf_files
    result = assert_equivalent(model, folder / file, max_examples=20)
    assert result.labels == ("torch", label)
    assert [u.layer_kind for u in result.keras_layers] == [u.layer_kind for u in result.torch_layers]
    assert f"layer 4: torch '6' (Flatten; linear: none) = {label} 'op " in result.matched()[4]
    assert "(tflite FULLY_CONNECTED (the flatten of its input); linear: none)" in result.matched()[4]


def test_a_moved_filter_in_onnx2tf_s_tflite_is_named_at_its_layer(onnx2tf_files, tmp_path):
    from equivalence import compare_models

    model, folder = onnx2tf_files
    stored = model[3].weight.detach().numpy().transpose(0, 2, 3, 1)  # LiteRT's (out, kh, kw, in)
    wrong = moved(folder / "convnet_float32.tflite", stored, 11, 1e-3, tmp_path / "wrong.tflite")
    message = compare_models(model, wrong, max_examples=3).message()
    assert "layer 2 (torch '3', litert 'op 2'): kernel: 1 / 180 elements differ" in message, message


def test_onnx2tf_s_saved_model_of_a_torch_conv_net_agrees_its_transposes_read_with_their_ops(onnx2tf_files):
    """onnx2tf puts a ``Transpose`` that moves nothing (``perm [0, 1, 2, 3]``) before the conv after the pooling, and
    one to channels-first before the flatten (torch's order): each read with the op it leads into
    (``tests/own/test_converters_onnx2tf_conv.py`` has the conv net whose flatten order matters)."""
    model, folder = onnx2tf_files
    units = ["saved_model Conv2D+AddV2", "saved_model MaxPool", "saved_model Transpose+Conv2D+AddV2",
             "saved_model AvgPool", "saved_model Transpose+Reshape", "saved_model MatMul+AddV2",
             "saved_model MatMul+AddV2"]
    result = read_as(model, folder, units)
    assert "(saved_model Transpose+Conv2D+AddV2; tanh: Tanh " in result.matched()[2], result.matched()


def test_a_tf2onnx_graph_with_its_input_made_nchw_starts_channels_first(tmp_path, keras_adapter):
    """tf2onnx's ``inputs_as_nchw`` makes the graph's input N, C, H, W and cancels its Transpose against the conv's:
    the graph starts with a Conv, which ONNX computes channels-first, so the input is read channels-first although
    tf2onnx wrote the graph (the producer rule applies only where no such op comes first)."""
    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx

    from equivalence import assert_equivalent

    L = keras.layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(3, 3, padding="same", activation="relu"),
                              L.Flatten(), L.Dense(3)])
    model(np.zeros((1, 8, 8, 3), "float32"))
    spec = (tf.TensorSpec((None, 8, 8, 3), tf.float32, name="x"),)
    graph, _ = tf2onnx.convert.from_function(tf.function(lambda x: model(x)), input_signature=spec, opset=17,
                                             inputs_as_nchw=["x:0"])
    assert graph.producer_name == "tf2onnx" and graph.graph.node[0].op_type == "Conv"
    onnx.save(graph, tmp_path / "nchw.onnx")
    result = assert_equivalent(model, tmp_path / "nchw.onnx", max_examples=20)
    assert [u.kind for u in result.keras_layers] == ["onnx Conv+Transpose", "onnx Reshape", "onnx MatMul"]
