"""Convs, pooling and Flatten of a LiteRT flatbuffer (issue 26 item 2): ``CONV_2D``, ``MAX_POOL_2D``,
``AVERAGE_POOL_2D`` and a ``RESHAPE`` of a spatial tensor read into the core's kinds, channels-last as LiteRT
computes, each unit run on the interpreter; what ``TFLiteConverter`` writes from a Keras conv net is judged layer
by layer, a moved filter named."""

from __future__ import annotations

import numpy as np
import pytest

from equivalence.cli import EXIT_OK, main
from tests.helpers import keras3_only
from tests.own.pairs import read_as

pytestmark = keras3_only  # the TFLite converter of Keras 3 on TensorFlow


def keras_convnet(*, dilation: int = 1, depthwise: bool = False):
    import keras

    L = keras.layers
    first = L.DepthwiseConv2D(3, padding="same", name="conv") if depthwise else \
        L.Conv2D(4, 3, padding="same", activation="relu", dilation_rate=dilation, name="conv")
    model = keras.Sequential([keras.Input((8, 8, 3)), first, L.MaxPooling2D(2, name="pool"),
                              L.Conv2D(5, 3, strides=2, padding="same", name="conv_1"),
                              L.AveragePooling2D(2, strides=1, padding="same", name="avg"), L.Flatten(name="flatten"),
                              L.Dense(6, activation="tanh", name="dense"), L.Dense(2, name="dense_1")])
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(-1, 1, w.shape).astype("float32") for w in model.get_weights()])
    return model


def convert(model, path):
    import tensorflow as tf

    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


def converted_and_saved(model, folder, name: str) -> None:
    """``model`` saved as ``name.keras`` and converted to ``name.tflite`` in ``folder``; skips without the TFLite
    converter (Keras on TensorFlow) or the LiteRT interpreter."""
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the TFLite converter needs Keras on TensorFlow")
    pytest.importorskip("ai_edge_litert", reason="the LiteRT interpreter (pip install 'equivalence[runtimes]')")
    convert(model, folder / f"{name}.tflite")
    model.save(folder / f"{name}.keras")


@pytest.fixture(scope="module")
def converted(tmp_path_factory, keras_adapter):
    folder = tmp_path_factory.mktemp("litert_conv")
    model = keras_convnet()
    converted_and_saved(model, folder, "convnet")
    return model, folder


def test_a_keras_conv_net_and_its_tflite_agree_layer_by_layer_and_the_report_says_what_was_matched(converted):
    model, folder = converted
    result = read_as(model, folder / "convnet.tflite", [
        "tflite CONV_2D", "tflite MAX_POOL_2D", "tflite CONV_2D", "tflite AVERAGE_POOL_2D", "tflite RESHAPE",
        "tflite FULLY_CONNECTED", "tflite FULLY_CONNECTED"])
    matched = result.matched()
    assert "layer 0: keras 'conv' (Conv2D; relu: Conv2D(activation='relu')) = litert 'op 0' (tflite CONV_2D; relu: " \
        "fused in CONV_2D op 0)" in matched
    assert any(line.startswith("layer 4: keras 'flatten' (Flatten; linear: none) = litert 'op ")
               and "(tflite RESHAPE; linear: none)" in line for line in matched), matched


def test_a_moved_filter_in_the_tflite_is_named_at_its_layer(converted, tmp_path):
    from equivalence import compare_models
    from tests.own.test_converters import moved

    model, folder = converted
    stored = model.get_layer("conv_1").kernel.numpy().transpose(3, 0, 1, 2)  # LiteRT's (out, kh, kw, in)
    wrong = moved(folder / "convnet.tflite", stored, 11, 1e-3, tmp_path / "wrong.tflite")
    message = compare_models(model, wrong, max_examples=3).message()
    assert "layer 2 (keras 'conv_1', litert 'op 2'): kernel: 1 / 180 elements differ" in message, message
    assert "first divergence, keras vs litert, layer 2" in message, message


@pytest.mark.parametrize(("options", "says"), [
    ({"dilation": 2}, r"\(SPACE_TO_BATCH_ND\) at position 0: SPACE_TO_BATCH_ND starts a dilated convolution"),
    ({"depthwise": True}, r"\(DEPTHWISE_CONV_2D\) at position 0: DEPTHWISE_CONV_2D is a depthwise convolution \(a "
                          r"group per input channel\): the suite judges convolutions of one group"),
])
def test_what_the_reader_does_not_judge_is_refused_naming_the_op(converted, tmp_path, options, says):
    from equivalence import ModelNotSupported, compare_models

    model = keras_convnet(**options)
    with pytest.raises(ModelNotSupported, match=says):
        compare_models(model, convert(model, tmp_path / "refused.tflite"))


def test_compare_takes_a_keras_conv_file_and_its_tflite(converted, capsys):
    _, folder = converted
    code = main(["compare", str(folder / "convnet.keras"), str(folder / "convnet.tflite"), "--examples", "5"])
    out, err = capsys.readouterr()
    assert code == EXIT_OK and "all 7 layers agree" in out, (out, err)


def _converted_by_hand(tmp_path, name: str, **options):
    """``_torch_conv_flatten`` written as onnx2tf writes it (``_saved_by_hand``), converted to ``.tflite``."""
    import tensorflow as tf

    from tests.own.test_saved_model_spatial_models import _saved_by_hand, _torch_conv_flatten

    model = _torch_conv_flatten()
    folder = _saved_by_hand(tmp_path / name, model, **options)
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(folder)).convert())
    return model, path


@pytest.mark.parametrize(("batch", "target", "kept"), [(None, [-1, 48], False), (1, [1, 48], False),
                                                      (1, [1, 48], True)],
                         ids=["free_batch", "batch_of_1", "channels_first_input"])
def test_a_flatten_in_torch_s_order_as_a_transpose_and_a_reshape_agrees_with_torch(tmp_path, batch, target, kept):
    """onnx2tf's ``TRANSPOSE`` to channels-first and ``RESHAPE`` (torch's ``Flatten``) read as one flatten unit, the
    dense rows after it permuted; a ``RESHAPE`` to ``[1, features]`` runs a sample at a time; the ``TRANSPOSE`` of a
    channels-first input is read with the conv after it."""
    from equivalence import assert_equivalent

    model, path = _converted_by_hand(tmp_path, "hand", batch=batch, perm=[0, 3, 1, 2], target=target, kept=kept)
    result = assert_equivalent(model, path, max_examples=10)
    conv = "tflite TRANSPOSE+CONV_2D" if kept else "tflite CONV_2D"
    assert [u.kind for u in result.keras_layers] == [conv, "tflite TRANSPOSE+RESHAPE", "tflite FULLY_CONNECTED"]


def test_a_transpose_onnx2tf_does_not_write_is_refused_naming_it(tmp_path):
    from equivalence import ModelNotSupported, compare_models

    model, path = _converted_by_hand(tmp_path, "other", batch=None, perm=[0, 2, 1, 3], target=[-1, 48])
    with pytest.raises(ModelNotSupported, match=r"\(TRANSPOSE\) at position 1: a TRANSPOSE \(perm \[0, 2, 1, 3\]\) "
                                                r"before RESHAPE: the suite reads one to channels-first before the "
                                                r"RESHAPE of a flatten"):
        compare_models(model, path)
