"""1-D layers and LayerNorms of a LiteRT flatbuffer (issue 26, "beyond Dense"): what ``TFLiteConverter`` writes from
a Keras ``Conv1D``, ``MaxPooling1D``, ``AveragePooling1D`` (``EXPAND_DIMS``, the 2-D op, ``RESHAPE``) and
``LayerNormalization`` (``MEAN`` ... ``ADD``, eleven ops) is read into the core's kinds and judged layer by layer
against the Keras model and against a torch twin; a moved parameter is named at its layer; what the converter
writes for kinds the suite does not judge (dilated and depthwise convolutions) is refused with one line saying so.
A BatchNormalization it folded is matched with the Keras layers: ``tests/own/test_litert_folded_norms.py``."""

from __future__ import annotations

import numpy as np
import pytest

from equivalence.cli import EXIT_OK, main
from tests.helpers import keras3_only
from tests.own.pairs import read_as
from tests.own.test_litert_spatial_models import convert, converted_and_saved

pytestmark = keras3_only  # the TFLite converter of Keras 3 on TensorFlow

CONV1D_UNITS = ["tflite EXPAND_DIMS+CONV_2D+RESHAPE", "tflite EXPAND_DIMS+CONV_2D+RESHAPE",
                "tflite EXPAND_DIMS+MAX_POOL_2D+RESHAPE", "tflite EXPAND_DIMS+AVERAGE_POOL_2D+RESHAPE",
                "tflite RESHAPE", "tflite FULLY_CONNECTED"]
"""What the reader says each unit of the converted 1-D net is: the lifting and squeezing read with the layer."""
LAYER_NORM = "tflite MEAN+NEG+SQUARED_DIFFERENCE+MEAN+ADD+RSQRT+MUL+MUL+ADD+MUL+ADD"
NORM_UNITS = ["tflite FULLY_CONNECTED", LAYER_NORM, "tflite FULLY_CONNECTED", LAYER_NORM, "tflite FULLY_CONNECTED"]


def _randomised(model, low: float = -1.0):
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(low, 1, w.shape).astype("float32") for w in model.get_weights()])
    return model


def keras_conv1d_net():
    """A sigmoid the converter writes between the CONV_2D and its RESHAPE, a GELU after the RESHAPE; the stride-2
    ``"same"`` conv pads ``(1, 1)`` at length 11, so torch's ``padding=1`` is its twin."""
    import keras

    L = keras.layers
    return _randomised(keras.Sequential([
        keras.Input((13, 3)), L.Conv1D(4, 3, activation="sigmoid", name="conv"),
        L.Conv1D(5, 3, strides=2, padding="same", activation="gelu", name="conv_1"), L.MaxPooling1D(2, name="pool"),
        L.AveragePooling1D(2, strides=1, name="avg"), L.Flatten(name="flatten"), L.Dense(2, name="dense")]))


def torch_conv1d_net():
    from torch import nn

    return nn.Sequential(nn.Conv1d(3, 4, 3), nn.Sigmoid(), nn.Conv1d(4, 5, 3, stride=2, padding=1), nn.GELU(),
                         nn.MaxPool1d(2), nn.AvgPool1d(2, stride=1), nn.Flatten(), nn.Linear(10, 2)).eval()


def keras_norm_net():
    """A LayerNorm with a ReLU the converter fuses into its last ADD, one with a sigmoid after it, epsilons 1e-3 (the
    Keras default) and 1e-5; gamma and beta drawn, not the initial ones and zeros."""
    import keras

    L = keras.layers
    return _randomised(keras.Sequential([
        keras.Input((5,)), L.Dense(6, name="dense"), L.LayerNormalization(name="norm"), L.ReLU(name="relu"),
        L.Dense(4, activation="tanh", name="dense_1"), L.LayerNormalization(epsilon=1e-5, name="norm_1"),
        L.Activation("sigmoid", name="sigmoid"), L.Dense(2, name="dense_2")]))


def torch_norm_net():
    from torch import nn

    return nn.Sequential(nn.Linear(5, 6), nn.LayerNorm(6, eps=1e-3), nn.ReLU(), nn.Linear(6, 4), nn.Tanh(),
                         nn.LayerNorm(4, eps=1e-5), nn.Sigmoid(), nn.Linear(4, 2)).eval()


@pytest.fixture(scope="module")
def converted(tmp_path_factory, keras_adapter):
    """Each Keras net, saved and converted: ``{"conv1d": (model, folder), "norm": ...}``."""
    folder = tmp_path_factory.mktemp("litert_1d_norm")
    out = {}
    for name, build in (("conv1d", keras_conv1d_net), ("norm", keras_norm_net)):
        model = build()
        converted_and_saved(model, folder, name)
        out[name] = (model, folder)
    return out


def test_a_keras_1d_conv_net_and_its_tflite_agree_layer_by_layer_and_the_report_says_what_was_matched(converted):
    model, folder = converted["conv1d"]
    result = read_as(model, folder / "conv1d.tflite", CONV1D_UNITS)
    assert [u.out_shape for u in result.keras_layers][:-1] == [u.out_shape for u in result.torch_layers][:-1]
    matched = "\n".join(result.matched())
    assert "layer 0: keras 'conv' (Conv1D; sigmoid: Conv1D(activation='sigmoid')) = litert 'op 1' (tflite " \
        "EXPAND_DIMS+CONV_2D+RESHAPE; sigmoid: LOGISTIC op 2)" in matched, matched
    assert "(tflite EXPAND_DIMS+CONV_2D+RESHAPE; gelu: GELU op " in matched, matched


def test_a_keras_layer_norm_net_and_its_tflite_agree_layer_by_layer(converted):
    model, folder = converted["norm"]
    result = read_as(model, folder / "norm.tflite", NORM_UNITS)
    kinds = [u.layer_kind.describe() for u in result.keras_layers if u.kind == LAYER_NORM]
    assert kinds == ["LayerNorm 6 epsilon 0.001", "LayerNorm 4 epsilon 1e-05"]
    assert [u.activation for u in result.keras_layers if u.kind == LAYER_NORM] == ["relu", "sigmoid"]
    assert "fused in ADD op 11" in result.keras_layers[1].activation_source


@pytest.mark.parametrize(("name", "torch_net", "kinds"), [("conv1d", torch_conv1d_net, CONV1D_UNITS),
                                                          ("norm", torch_norm_net, NORM_UNITS)])
def test_the_torch_twin_of_a_converted_keras_net_agrees_with_its_tflite(converted, torch_adapter, name, torch_net,
                                                                        kinds):
    """The Keras weights ported into the torch twin: torch against the ``.tflite`` is a hand port judged as one."""
    from equivalence import port_weights

    model, folder = converted[name]
    twin = torch_net()
    port_weights(model, twin)
    read_as(twin, folder / f"{name}.tflite", kinds)


def test_a_one_filter_conv1d_whose_bias_the_converter_writes_as_an_add_is_read_with_its_conv(converted, tmp_path):
    """With one filter the converter gives the ``CONV_2D`` a zero bias and adds the layer's after the ``RESHAPE``
    (a ReLU fused into that ``ADD``): read into the conv's unit; the bias moved in the file is named there."""
    import keras

    from equivalence import compare_models
    from tests.own.test_converters import moved

    L = keras.layers
    model = _randomised(keras.Sequential([keras.Input((5, 2)), L.Conv1D(1, 2, activation="tanh", name="conv"),
                                          L.Conv1D(1, 2, activation="relu", name="conv_1"), L.Flatten(),
                                          L.Dense(1, name="dense")]))
    path = convert(model, tmp_path / "one_filter.tflite")
    result = read_as(model, path, ["tflite EXPAND_DIMS+CONV_2D+RESHAPE+ADD", "tflite EXPAND_DIMS+CONV_2D+RESHAPE+ADD",
                                   "tflite RESHAPE", "tflite FULLY_CONNECTED"])
    assert [u.activation_source for u in result.keras_layers[:2]] == ["TANH op 4", "fused in ADD op 8"]
    bias = model.get_layer("conv_1").bias.numpy()
    message = compare_models(model, moved(path, bias, 0, 1e-3, tmp_path / "wrong.tflite"), max_examples=3).message()
    assert "layer 1 (keras 'conv_1', litert 'op 6'): bias: 1 / 1 elements differ" in message, message


def test_a_moved_1d_filter_in_the_tflite_is_named_at_its_layer(converted, tmp_path):
    from equivalence import compare_models
    from tests.own.test_converters import moved

    model, folder = converted["conv1d"]
    stored = model.get_layer("conv_1").kernel.numpy().transpose(2, 0, 1)[:, None]  # LiteRT's (out, 1, k, in)
    wrong = moved(folder / "conv1d.tflite", stored, 7, 1e-3, tmp_path / "wrong.tflite")
    message = compare_models(model, wrong, max_examples=3).message()
    assert "layer 1 (keras 'conv_1', litert 'op 5'): kernel: 1 / 60 elements differ" in message, message
    assert "first divergence, keras vs litert, layer 1" in message, message


@pytest.mark.parametrize(("parameter", "element", "says"), [
    ("gamma", 2, "layer 3 (keras 'norm_1', litert 'op 14'): kernel: 1 / 8 elements differ"),
    ("beta", 0, "layer 3 (keras 'norm_1', litert 'op 14'): kernel: 1 / 8 elements differ"),
])
def test_a_moved_layer_norm_parameter_in_the_tflite_is_named_at_its_layer(converted, tmp_path, parameter, element,
                                                                          says):
    from equivalence import compare_models
    from tests.own.test_converters import moved

    model, folder = converted["norm"]
    stored = getattr(model.get_layer("norm_1"), parameter).numpy()
    wrong = moved(folder / "norm.tflite", stored, element, 1e-3, tmp_path / "wrong.tflite")
    message = compare_models(model, wrong, max_examples=3).message()
    assert says in message, message
    assert "first divergence, keras vs litert, layer 3" in message, message


def test_a_layer_norm_epsilon_changed_in_the_tflite_is_named_before_any_value(converted, tmp_path):
    from equivalence import compare_models
    from tests.own.test_converters import moved

    model, folder = converted["norm"]
    wrong = moved(folder / "norm.tflite", np.float32(1e-5).reshape(1), 0, 1e-4, tmp_path / "wrong.tflite")
    message = compare_models(model, wrong, max_examples=3).message()
    assert "layer 3 (keras 'norm_1', litert 'op 14'): epsilon" in message, message


def _refused_model(case: str):
    """A Keras model whose conversion holds what the suite does not read."""
    import keras

    L = keras.layers
    spatial, sequence = keras.Input((8, 8, 3)), keras.Input((6, 3))
    layers = {
        "dilated Conv2D": [spatial, L.Conv2D(4, 3, dilation_rate=2, padding="same")],
        "dilated Conv1D": [sequence, L.Conv1D(4, 3, dilation_rate=2)],
        "DepthwiseConv2D": [spatial, L.DepthwiseConv2D(3)],
        "LayerNorm of a sequence": [sequence, L.Conv1D(4, 3), L.LayerNormalization()],
    }[case]
    return _randomised(keras.Sequential(layers), low=0.5)


@pytest.mark.parametrize(("case", "says"), [
    ("dilated Conv2D", r"\(SPACE_TO_BATCH_ND\) at position 0: SPACE_TO_BATCH_ND starts a dilated convolution "
                       r"\(SPACE_TO_BATCH_ND, CONV_2D, BATCH_TO_SPACE_ND\): the suite judges convolutions without "
                       r"dilation, in any framework"),
    ("dilated Conv1D", r"\(SPACE_TO_BATCH_ND\) at position 0: SPACE_TO_BATCH_ND starts a dilated convolution"),
    ("DepthwiseConv2D", r"\(DEPTHWISE_CONV_2D\) at position 0: DEPTHWISE_CONV_2D is a depthwise convolution \(a "
                        r"group per input channel\): the suite judges convolutions of one group"),
    ("LayerNorm of a sequence", r"\(MEAN\) at position 3: a MEAN of a spatial tensor \(per sample \(4, 4\)\)"),
])
def test_what_the_reader_does_not_judge_is_refused_in_one_line_naming_the_op(converted, tmp_path, case, says):
    from equivalence import ModelNotSupported
    from equivalence.frameworks.litert_graph import walk

    path = convert(_refused_model(case), tmp_path / "refused.tflite")
    with pytest.raises(ModelNotSupported, match=says) as refused:
        walk(path)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("name", ["conv1d", "norm"])
def test_compare_takes_a_keras_file_and_its_tflite(converted, capsys, name):
    _, folder = converted[name]
    code = main(["compare", str(folder / f"{name}.keras"), str(folder / f"{name}.tflite"), "--examples", "5"])
    out, err = capsys.readouterr()
    assert code == EXIT_OK and f"all {len(CONV1D_UNITS if name == 'conv1d' else NORM_UNITS)} layers agree" in out, \
        (out, err)


@pytest.mark.parametrize("wired", ["as_onnx2tf", "scaling_x"])
def test_a_layer_norm_written_as_the_nine_onnx_ops_is_one_layer_norm_and_wired_otherwise_is_refused(tmp_path, wired):
    """torch's ``LayerNorm`` exported below opset 17 as onnx2tf writes it op by op, converted: ``MEAN``, ``SUB``,
    ``MUL`` (the difference by itself), ``MEAN``, ``ADD``, ``RSQRT``, ``MUL``, ``MUL`` gamma, ``ADD`` beta (a ReLU
    fused, which keeps the converter from folding gamma and beta into the next layer): one ``LayerNorm`` unit matched
    with the model's; the same ops scaling ``x`` rather than ``x - mean`` refused naming the failing check."""
    import tensorflow as tf

    from equivalence import ModelNotSupported, assert_equivalent
    from tests.own_models import layer_norm_mlp

    model, parameters = layer_norm_mlp(relu=True)
    w0, b0, gamma, beta, w1, b1 = (tf.constant(v) for v in parameters)

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def serve(x):
        h = tf.matmul(x, w0) + b0
        centred = h - tf.reduce_mean(h, -1, keepdims=True)
        variance = tf.reduce_mean(tf.pow(centred, 2.0), -1, keepdims=True)
        normed = (centred if wired == "as_onnx2tf" else h) / tf.sqrt(variance + 1e-5)
        return tf.matmul(tf.nn.relu(normed * gamma + beta), w1) + b1

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], serve)
    (tmp_path / "ln.tflite").write_bytes(converter.convert())
    if wired == "as_onnx2tf":
        result = read_as(model, tmp_path / "ln.tflite", ["tflite FULLY_CONNECTED",
                                                         "tflite MEAN+SUB+MUL+MEAN+ADD+RSQRT+MUL+MUL+ADD",
                                                         "tflite FULLY_CONNECTED"])
        assert result.keras_layers[1].activation == "relu"
        return
    with pytest.raises(ModelNotSupported, match=r"\(MEAN\) at position 1: the ops of a LayerNormalization "
                       r"\(MEAN\+SUB\+MUL\+MEAN\+ADD\+RSQRT\+MUL\+MUL\+ADD\), but wired otherwise \(check 7 of 10 "
                       r"fails\)"):
        assert_equivalent(model, tmp_path / "ln.tflite", max_examples=3)
