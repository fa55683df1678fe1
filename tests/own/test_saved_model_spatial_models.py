"""Convs, pooling, Flatten, BatchNorm and LayerNorm of a SavedModel (issue 26): what Keras 3's ``model.export``
writes (``Conv2D``+``BiasAdd``, ``MaxPool``, ``AvgPool``, a ``Reshape`` to a shape computed from ``Shape``, the
BatchNorm and LayerNorm as ops) read into the core's kinds, channels-last as TensorFlow computes, each unit run in
TensorFlow; judged layer by layer against the Keras model and its torch twin, a moved filter or statistic named."""

from __future__ import annotations

import numpy as np
import pytest

from equivalence.cli import EXIT_OK, EXIT_USAGE, main
from tests.helpers import keras3_only

pytestmark = keras3_only  # model.export of Keras 3 on TensorFlow

UNITS = ["saved_model Conv2D+BiasAdd",
         "saved_model Mul+AddV2 (BatchNorm: AddV2+Rsqrt+Mul+Mul+Sub of its parameters)", "saved_model MaxPool",
         "saved_model Conv2D+BiasAdd", "saved_model AvgPool", "saved_model Reshape", "saved_model MatMul+BiasAdd",
         "saved_model Mean+StopGradient+SquaredDifference+Mean+AddV2+Rsqrt+Mul+Mul+Neg+Mul+AddV2+AddV2",
         "saved_model MatMul+BiasAdd"]
"""What the reader says each unit of the export is: the TensorFlow ops it matched."""


def keras_convnet(*, strided: bool = True):
    """Conv (relu), BatchNorm, max pool, conv, average pool, Flatten, Dense (tanh), LayerNorm, Dense; ``strided``:
    TensorFlow's asymmetric ``"same"`` pads (a stride-2 conv, a stride-1 pool), else ones torch can write."""
    import keras

    L = keras.layers
    model = keras.Sequential([
        keras.Input((8, 8, 3)), L.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
        L.BatchNormalization(name="bn"), L.MaxPooling2D(2, name="pool"),
        L.Conv2D(5, 3, strides=2 if strided else 1, padding="same", name="conv_1"),
        L.AveragePooling2D(2, strides=1, padding="same" if strided else "valid", name="avg"),
        L.Flatten(name="flatten"), L.Dense(6, activation="tanh", name="dense"), L.LayerNormalization(name="ln"),
        L.Dense(2, name="dense_1")])
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") if "variance" in w.path else
                       rng.uniform(-1, 1, w.shape).astype("float32") for w in model.weights])
    return model


def torch_twin():
    """``keras_convnet(strided=False)`` written in torch (Keras' epsilons, its momentum in torch's meaning)."""
    from torch import nn

    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(4, eps=1e-3, momentum=0.01),
                         nn.MaxPool2d(2), nn.Conv2d(4, 5, 3, padding=1), nn.AvgPool2d(2, stride=1), nn.Flatten(),
                         nn.Linear(45, 6), nn.Tanh(), nn.LayerNorm(6, eps=1e-3), nn.Linear(6, 2)).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, keras_adapter):
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("SavedModel export needs Keras on TensorFlow")
    folder = tmp_path_factory.mktemp("saved_conv")
    model = keras_convnet()
    model.export(str(folder / "saved"), verbose=False)
    model.save(folder / "convnet.keras")
    return model, folder


def test_a_keras_conv_net_and_its_saved_model_agree_layer_by_layer_and_the_report_names_the_ops(exported):
    from dataclasses import replace

    from equivalence import assert_equivalent
    from equivalence.core.norms import BatchNorm

    model, folder = exported
    result = assert_equivalent(model, folder / "saved", max_examples=20)
    assert [u.kind for u in result.keras_layers] == UNITS
    recorded = [replace(k, momentum=None) if isinstance(k, BatchNorm) else k  # a graph does not record a momentum
                for k in (u.layer_kind for u in result.torch_layers)]
    assert [u.layer_kind for u in result.keras_layers] == recorded
    matched = result.matched()
    assert matched[0].startswith("layer 0: keras 'conv' (Conv2D; relu: Conv2D(activation='relu')) = keras_graph ")
    assert "(saved_model Conv2D+BiasAdd; relu: Relu '" in matched[0], matched[0]
    assert "keras 'bn' (BatchNormalization; linear: none) = keras_graph " in matched[1]


def test_a_keras_conv_net_its_torch_twin_and_the_saved_model_agree(tmp_path, keras_adapter):
    from equivalence import assert_equivalent, port_weights

    model, twin = keras_convnet(strided=False), torch_twin()
    port_weights(model, twin)
    model.export(str(tmp_path / "saved"), verbose=False)
    result = assert_equivalent(twin, tmp_path / "saved", max_examples=20)
    assert [type(u.layer_kind).__name__ for u in result.keras_layers] == [
        "Conv", "BatchNorm", "Pool", "Conv", "Pool", "Flatten", "Dense", "LayerNorm", "Dense"]
    assert result.labels == ("torch", "keras_graph")


@pytest.mark.parametrize(("layer", "weight", "element", "says"), [
    ("conv_1", 0, 11, "layer 3 (keras 'conv_1', keras_graph "),
    ("bn", 2, 1, "layer 1 (keras 'bn', keras_graph "),  # the moving mean
    ("ln", 0, 4, "layer 7 (keras 'ln', keras_graph "),  # gamma
])
def test_a_moved_filter_or_statistic_in_the_saved_model_is_named_at_its_layer(exported, tmp_path, layer, weight,
                                                                               element, says):
    from equivalence import compare_models

    model, _ = exported
    twin = keras_convnet()
    variable = twin.get_layer(layer).weights[weight]
    values = variable.numpy()
    values.reshape(-1)[element] += 1e-3
    variable.assign(values)
    twin.export(str(tmp_path / "wrong"), verbose=False)
    message = compare_models(model, tmp_path / "wrong", max_examples=3).message()
    assert says in message and "1 / " in message and "elements differ" in message, message
    assert f"first divergence, keras vs keras_graph, layer {says.split()[1]}" in message, message


def _refused_models():
    import keras

    L = keras.layers
    return {
        "depthwise": keras.Sequential([keras.Input((8, 8, 3)), L.DepthwiseConv2D(3), L.Flatten(), L.Dense(2)]),
        "conv3d": keras.Sequential([keras.Input((4, 4, 4, 2)), L.Conv3D(3, 2), L.Flatten(), L.Dense(2)]),
        "conv1d": keras.Sequential([keras.Input((8, 3)), L.Conv1D(4, 3), L.Flatten(), L.Dense(2)]),
        "spatial_ln": keras.Sequential([keras.Input((4, 4, 3)), L.LayerNormalization(), L.Flatten(), L.Dense(2)]),
    }


@pytest.mark.parametrize(("name", "says"), [
    ("depthwise", r"\(DepthwiseConv2dNative\) at position \d+: DepthwiseConv2dNative starts a depthwise convolution: "
                  r"the suite does not read this kind from converted graphs yet"),
    ("conv3d", r"\(Conv3D\) at position \d+: Conv3D starts a 3-D convolution"),
    ("conv1d", r"\(ExpandDims\) at position \d+: ExpandDims starts a 1-D convolution"),
    ("spatial_ln", r"\(Mean\) at position \d+: a Mean of a spatial tensor"),
])
def test_what_the_reader_does_not_judge_is_refused_naming_the_op(exported, tmp_path, name, says):
    from equivalence import ModelNotSupported, compare_models

    model = _refused_models()[name]
    model.export(str(tmp_path / name), verbose=False)
    with pytest.raises(ModelNotSupported, match=says):
        compare_models(model, tmp_path / name)


def test_compare_takes_a_keras_conv_file_and_its_saved_model(exported, capsys):
    _, folder = exported
    code = main(["compare", str(folder / "convnet.keras"), str(folder / "saved"), "--examples", "5"])
    out, err = capsys.readouterr()
    assert code == EXIT_OK and "all 9 layers agree" in out, (out, err)


def test_compare_refuses_an_unread_op_in_one_line(exported, tmp_path, capsys):
    model = _refused_models()["depthwise"]
    model.save(tmp_path / "depthwise.keras")
    model.export(str(tmp_path / "depthwise"), verbose=False)
    code = main(["compare", str(tmp_path / "depthwise.keras"), str(tmp_path / "depthwise")])
    out, err = capsys.readouterr()
    assert code == EXIT_USAGE and "DepthwiseConv2dNative starts a depthwise convolution" in err, (out, err)
    assert len(err.strip().splitlines()) == 1, err


def test_a_fused_batch_norm_and_a_constant_flatten_written_by_hand_are_read(tmp_path, keras_adapter):
    """``tf.nn.fused_batch_norm`` (``FusedBatchNormV3``) and a ``Reshape`` to the constant ``[-1, features]``, as a
    ``tf.function`` rather than Keras writes them, agree with the Keras layers they compute."""
    import keras
    import tensorflow as tf

    from equivalence import assert_equivalent

    L = keras.layers
    model = keras.Sequential([keras.Input((6, 6, 2)), L.Conv2D(3, 3, name="conv"), L.BatchNormalization(name="bn"),
                              L.Flatten(name="flatten"), L.Dense(2, name="dense")])
    rng = np.random.default_rng(1)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") if "variance" in w.path else
                       rng.uniform(-1, 1, w.shape).astype("float32") for w in model.weights])
    conv, bn, dense = (model.get_layer(n) for n in ("conv", "bn", "dense"))
    weights = [tf.constant(w.numpy()) for w in (conv.kernel, conv.bias, bn.gamma, bn.beta, bn.moving_mean,
                                                bn.moving_variance, dense.kernel, dense.bias)]

    @tf.function(input_signature=[tf.TensorSpec([None, 6, 6, 2], tf.float32)])
    def serve(x):
        kernel, bias, gamma, beta, mean, variance, w, b = weights
        h = tf.nn.bias_add(tf.nn.conv2d(x, kernel, 1, "VALID"), bias)
        h = tf.compat.v1.nn.fused_batch_norm(h, gamma, beta, mean, variance, epsilon=1e-3, is_training=False)[0]
        return tf.nn.bias_add(tf.matmul(tf.reshape(h, [-1, 48]), w), b)

    module = tf.Module()
    module.serve = serve
    tf.saved_model.save(module, str(tmp_path / "fused"), signatures=serve)
    result = assert_equivalent(model, tmp_path / "fused", max_examples=10)
    assert [u.kind for u in result.keras_layers] == ["saved_model Conv2D+BiasAdd", "saved_model FusedBatchNormV3",
                                                     "saved_model Reshape", "saved_model MatMul+BiasAdd"]


def test_a_batch_norm_of_one_channel_and_one_after_a_dense_layer_are_read(tmp_path, keras_adapter):
    """One channel: the variance and epsilon are both one value, told apart by their shapes ((1,) and ()); after a
    Dense the BatchNorm is read on the 2-D tensor."""
    import keras

    from equivalence import assert_equivalent
    from equivalence.core.norms import BatchNorm

    L = keras.layers
    model = keras.Sequential([keras.Input((5, 5, 2)), L.Conv2D(1, 3), L.BatchNormalization(epsilon=0.01),
                              L.Flatten(), L.Dense(3), L.BatchNormalization()])
    rng = np.random.default_rng(2)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") if "variance" in w.path else
                       rng.uniform(-1, 1, w.shape).astype("float32") for w in model.weights])
    model.export(str(tmp_path / "saved"), verbose=False)
    result = assert_equivalent(model, tmp_path / "saved", max_examples=10)
    norms = [u.layer_kind for u in result.keras_layers if isinstance(u.layer_kind, BatchNorm)]
    assert norms == [BatchNorm(1, 0.01, None), BatchNorm(3, 0.001, None)]


def _torch_conv_flatten():
    import torch
    from torch import nn

    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2)).eval()


def _saved_by_hand(folder, model, *, batch, perm, target, kept=False):
    """``model`` (``_torch_conv_flatten``) written as onnx2tf writes a torch conv net: channels-last ops, its input
    ``(batch, 6, 6, 2)`` (``kept``: ``(batch, 2, 6, 6)`` and a ``Transpose`` to channels-last, onnx2tf's ``-kt``),
    a ``Transpose`` by ``perm`` and a ``Reshape`` to ``target`` for torch's ``Flatten``."""
    import tensorflow as tf

    conv, linear = model[0], model[3]
    kernel = tf.constant(conv.weight.detach().numpy().transpose(2, 3, 1, 0))
    bias, w, b = (tf.constant(t.detach().numpy()) for t in (conv.bias, linear.weight.T, linear.bias))

    @tf.function(input_signature=[tf.TensorSpec([batch, 2, 6, 6] if kept else [batch, 6, 6, 2], tf.float32)])
    def serve(x):
        x = tf.transpose(x, [0, 2, 3, 1]) if kept else x
        h = tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "VALID") + bias)
        return tf.matmul(tf.reshape(tf.transpose(h, perm), target), w) + b

    module = tf.Module()
    module.serve = serve
    tf.saved_model.save(module, str(folder), signatures=serve)
    return folder


@pytest.mark.parametrize(("batch", "target", "kept"), [(None, [-1, 48], False), (1, [1, 48], False),
                                                      (1, [1, 48], True)],
                         ids=["free_batch", "batch_of_1", "channels_first_input"])
def test_a_flatten_in_torch_s_order_written_as_a_transpose_and_a_reshape_agrees_with_torch(tmp_path, batch, target,
                                                                                            kept):
    """The ``Transpose`` to channels-first before the ``Reshape`` (onnx2tf's torch ``Flatten``) is read with it as
    one flatten unit, its output in the canonical order and the dense rows after it permuted to it; a ``Reshape``
    to ``[1, features]`` of a graph whose input fixes the batch at 1 runs a sample at a time; the ``Transpose`` of a
    channels-first input is read with the conv after it."""
    from equivalence import assert_equivalent

    model = _torch_conv_flatten()
    saved = _saved_by_hand(tmp_path / "saved", model, batch=batch, perm=[0, 3, 1, 2], target=target, kept=kept)
    result = assert_equivalent(model, saved, max_examples=10)
    conv = "saved_model Transpose+Conv2D+AddV2" if kept else "saved_model Conv2D+AddV2"
    assert [u.kind for u in result.keras_layers] == [conv, "saved_model Transpose+Reshape", "saved_model MatMul+AddV2"]


@pytest.mark.parametrize(("batch", "perm", "target", "says"), [
    (None, [0, 2, 1, 3], [-1, 48], r"\(Transpose\) at position \d+: a Transpose \(perm \[0, 2, 1, 3\]\) before a "
                                   r"Reshape: the suite reads a Transpose that moves nothing before a layer, and one "
                                   r"to channels-first before a flatten"),
    (None, [0, 3, 1, 2], [1, 48], r"\(Transpose\) at position \d+: a Reshape to \[1, 48\]: the suite judges a flatten "
                                  r"to \(batch, 48\)"),
    (2, [0, 3, 1, 2], [2, 48], r"\(Transpose\) at position \d+: a Reshape to \[2, 48\]: the suite judges a flatten to "
                               r"\(batch, 48\) \(shape \[-1, 48\], or \[1, 48\] where the graph.s input fixes its "
                               r"batch at 1; this one.s is 2\)"),
], ids=["other_perm", "fixed_batch_on_a_free_input", "batch_of_2"])
def test_a_transpose_or_a_reshape_onnx2tf_does_not_write_is_refused_naming_it(tmp_path, batch, perm, target, says):
    from equivalence import ModelNotSupported, compare_models

    model = _torch_conv_flatten()
    saved = _saved_by_hand(tmp_path / "saved", model, batch=batch, perm=perm, target=target)
    with pytest.raises(ModelNotSupported, match=says):
        compare_models(model, saved)


def test_a_batch_norm_written_as_a_mul_and_an_add_per_channel_agrees_as_its_scale_and_shift(tmp_path):
    """A ``BatchNorm2d`` after a ReLU as onnx2tf writes it, ``x * s + t`` of per-channel constants: read as the
    ``ChannelAffine`` kind, the torch norm folded exactly to compare; a changed statistic is named at it."""
    import tensorflow as tf
    import torch
    from torch import nn

    from equivalence import assert_equivalent, compare_models
    from equivalence.core.folded import ChannelAffine

    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(48, 2)).eval()
    norm = model[2]
    with torch.no_grad():
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    scale = (norm.weight / torch.sqrt(norm.running_var + norm.eps)).detach()
    shift = (norm.bias - norm.running_mean * scale).detach()
    kernel = tf.constant(model[0].weight.detach().numpy().transpose(2, 3, 1, 0))
    bias, s, t, w, b = (tf.constant(v.detach().numpy()) for v in (model[0].bias, scale, shift, model[4].weight.T,
                                                                  model[4].bias))

    @tf.function(input_signature=[tf.TensorSpec([1, 6, 6, 2], tf.float32)])
    def serve(x):
        h = tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "VALID") + bias) * s + t
        return tf.matmul(tf.reshape(tf.transpose(h, [0, 3, 1, 2]), [1, 48]), w) + b

    module = tf.Module()
    module.serve = serve
    tf.saved_model.save(module, str(tmp_path / "saved"), signatures=serve)
    result = assert_equivalent(model, tmp_path / "saved", max_examples=10)
    assert result.keras_layers[1].layer_kind == ChannelAffine(3)
    assert result.keras_layers[1].kind == ("saved_model Mul+AddV2, the BatchNorm's statistics folded into a scale and "
                                           "a shift by the converter")
    with torch.no_grad():
        norm.running_var[0] *= 1.01
    message = compare_models(model, tmp_path / "saved", max_examples=3).message()
    assert "layer 1 (torch '2', keras_graph " in message and "scale: 1 / 3 elements differ from the torch layers " \
        "folded" in message, message


@pytest.mark.parametrize("wired", ["as_onnx2tf", "dividing_x"])
def test_a_layer_norm_written_as_the_nine_onnx_ops_is_one_layer_norm_and_wired_otherwise_is_refused(tmp_path, wired):
    """torch's ``LayerNorm`` exported below opset 17, as onnx2tf writes its nine ops one by one (``Mean``, ``Sub``,
    ``Pow`` 2, ``Mean``, ``AddV2``, ``Sqrt``, ``RealDiv``, ``Mul``, ``AddV2``): one ``LayerNorm`` unit matched with
    the model's; the same ops dividing ``x`` rather than ``x - mean`` refused naming the failing check."""
    import tensorflow as tf

    from equivalence import ModelNotSupported, assert_equivalent
    from tests.own_models import layer_norm_mlp

    model, parameters = layer_norm_mlp()
    w0, b0, gamma, beta, w1, b1 = (tf.constant(v) for v in parameters)

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def serve(x):
        h = tf.matmul(x, w0) + b0
        centred = h - tf.reduce_mean(h, -1, keepdims=True)
        variance = tf.reduce_mean(tf.pow(centred, 2.0), -1, keepdims=True)
        normed = (centred if wired == "as_onnx2tf" else h) / tf.sqrt(variance + 1e-5)
        return tf.matmul(normed * gamma + beta, w1) + b1

    module = tf.Module()
    module.serve = serve
    tf.saved_model.save(module, str(tmp_path / "saved"), signatures=serve)
    if wired == "as_onnx2tf":
        result = assert_equivalent(model, tmp_path / "saved", max_examples=10)
        assert result.keras_layers[1].kind == "saved_model Mean+Sub+Pow+Mean+AddV2+Sqrt+RealDiv+Mul+AddV2"
        assert result.keras_layers[1].layer_kind == result.torch_layers[1].layer_kind
        return
    with pytest.raises(ModelNotSupported, match=r"\(Mean\) at position \d+: the ops of a LayerNorm "
                       r"\(Mean\+Sub\+Pow\+Mean\+AddV2\+Sqrt\+RealDiv\+Mul\+AddV2\), but wired otherwise \(check 4 of "
                       r"10 fails\)"):
        assert_equivalent(model, tmp_path / "saved", max_examples=3)


def test_a_layer_norm_written_as_tf_keras_writes_it_is_one_layer_norm(tmp_path):
    """torch's ``LayerNorm`` as onnx2tf writes an ONNX ``LayerNormalization`` (tf_keras' ops: ``tf.nn.moments``, then
    ``x * m + (beta - mean * m)``, ``m = rsqrt(var + epsilon) * gamma``), gamma and beta constants: one
    ``LayerNorm`` unit matched with the model's. (Grappler's oneDNN layer-norm fusion, which computes with epsilon
    0.001 and which the unit is run without, does not fire on this hand-written graph, only on onnx2tf's: that is
    ``tests/own/test_converters_onnx2tf_norms.py``'s.)"""
    import tensorflow as tf

    from equivalence import assert_equivalent
    from tests.own_models import layer_norm_mlp

    model, parameters = layer_norm_mlp(first_scale=0.5)
    w0, b0, gamma, beta, w1, b1 = (tf.constant(v) for v in parameters)

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def serve(x):
        h = tf.matmul(x, w0) + b0
        mean, variance = tf.nn.moments(h, [-1], keepdims=True)
        return tf.matmul(tf.nn.batch_normalization(h, mean, variance, beta, gamma, 1e-5), w1) + b1

    module = tf.Module()
    module.serve = serve
    tf.saved_model.save(module, str(tmp_path / "saved"), signatures=serve)
    result = assert_equivalent(model, tmp_path / "saved", max_examples=10)
    assert result.keras_layers[1].kind == \
        "saved_model Mean+StopGradient+SquaredDifference+Mean+AddV2+Rsqrt+Mul+Mul+Mul+Sub+AddV2"
    assert result.keras_layers[1].layer_kind == result.torch_layers[1].layer_kind
