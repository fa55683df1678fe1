"""A SavedModel folder and a LiteRT ``.tflite`` as one side of a pair (issue 26): the graph read (MatMul/BiasAdd or
FULLY_CONNECTED, the activation's ops), each unit run on TensorFlow or the LiteRT interpreter; what TensorFlow's
own writers (``model.export``, ``TFLiteConverter``) produce from a Keras model is judged, a moved weight named."""

from __future__ import annotations

import numpy as np
import pytest

from equivalence.cli import EXIT_OK, EXIT_USAGE, main
from tests.helpers import keras3_only

pytestmark = keras3_only  # model.export and the converter of Keras 3 on TensorFlow


@pytest.fixture(scope="module")
def converted(tmp_path_factory, keras_adapter):
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("SavedModel export and the TFLite converter need Keras on TensorFlow")
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("tf_graphs")
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(7, activation="relu", name="dense"),
                              keras.layers.Dense(4, activation="silu", name="dense_1"),
                              keras.layers.Dense(3, name="dense_2"), keras.layers.Softmax()])  # names: not counters
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(-1, 1, w.shape).astype("float32") for w in model.get_weights()])
    model.export(str(folder / "saved"), verbose=False)
    (folder / "mlp.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    (folder / "random.tflite").write_bytes(rng.bytes(3000))
    data = (folder / "mlp.tflite").read_bytes()
    (folder / "truncated.tflite").write_bytes(data[: len(data) // 2])
    (folder / "broken").mkdir()
    (folder / "broken" / "saved_model.pb").write_bytes(rng.bytes(500))
    return model, folder


def test_a_keras_model_and_its_saved_model_agree_layer_by_layer(converted):
    from equivalence import assert_equivalent

    model, folder = converted
    result = assert_equivalent(model, folder / "saved", max_examples=10)
    assert [u.activation for u in result.keras_layers] == ["relu", "silu", "softmax"]
    assert [u.kind for u in result.keras_layers] == ["saved_model MatMul+BiasAdd"] * 3
    assert result.labels == ("keras", "keras_graph")


def test_a_moved_saved_model_weight_is_named(converted, tmp_path):
    import tensorflow as tf

    from equivalence import compare_models

    model, folder = converted
    loaded = tf.saved_model.load(str(folder / "saved"))
    variable = next(v for v in loaded.variables if tuple(v.shape) == (7, 4))
    variable.assign_add(np.where(np.arange(28).reshape(7, 4) == 9, 1e-3, 0).astype("float32"))
    tf.saved_model.save(loaded, str(tmp_path / "wrong"), signatures=loaded.signatures["serving_default"])
    message = compare_models(model, tmp_path / "wrong", max_examples=5).message()
    assert "layer 1 (keras 'dense_1', keras_graph " in message and "kernel: 1 / 28 elements differ" in message, \
        message


def test_a_keras_model_and_its_tflite_agree_and_a_moved_weight_is_named(converted, tmp_path):
    pytest.importorskip("ai_edge_litert")  # the interpreter alone: the litert adapter (make runtimes) is not needed
    from equivalence import assert_equivalent, compare_models

    model, folder = converted
    result = assert_equivalent(model, folder / "mlp.tflite", max_examples=10)
    assert [u.activation for u in result.keras_layers] == ["relu", "silu", "softmax"]
    data = bytearray((folder / "mlp.tflite").read_bytes())
    stored = np.ascontiguousarray(model.layers[2].kernel.numpy().T).tobytes()  # FULLY_CONNECTED keeps (out, in)
    at = bytes(data).find(stored)
    assert at >= 0
    data[at:at + 4] = (np.frombuffer(stored[:4], "float32") + np.float32(1e-3)).tobytes()
    (tmp_path / "wrong.tflite").write_bytes(bytes(data))
    message = compare_models(model, tmp_path / "wrong.tflite", max_examples=5).message()
    assert "layer 2 (keras 'dense_2', litert 'op " in message and "kernel: 1 / 12 elements differ" in message, \
        message


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["compare", *map(str, argv), "--examples", "3"])
    out, err = capsys.readouterr()
    return code, out, err


def test_compare_takes_a_saved_model_folder_and_a_tflite_file(converted, capsys):
    pytest.importorskip("ai_edge_litert")  # the interpreter alone: the litert adapter (make runtimes) is not needed
    model, folder = converted
    code, out, err = run(capsys, folder / "saved", folder / "mlp.tflite")
    assert code == EXIT_OK and "keras_graph SavedModelGraph vs litert LiteRTModel: all 3 layers agree" in out, \
        (out, err)
    assert "silu: LOGISTIC+MUL ops" in out, out


@pytest.mark.parametrize(("name", "says"), [
    ("random.tflite", "not a LiteRT (.tflite) flatbuffer: no TFL3 identifier"),
    ("truncated.tflite", "not a readable LiteRT (.tflite) flatbuffer, a truncated file?"),
    ("broken", "not a readable SavedModel, truncated or corrupt?"),
])
def test_a_broken_tf_graph_file_is_one_line_naming_the_file_and_the_format(converted, capsys, name, says):
    pytest.importorskip("ai_edge_litert")  # the interpreter alone: the litert adapter (make runtimes) is not needed
    model, folder = converted
    code, out, err = run(capsys, folder / "saved", folder / name)
    assert code == EXIT_USAGE and out == "" and err.count("\n") == 1, (out, err)
    assert f"{folder / name}: {says}" in err, err



def _with_one_layer_float32(content: bytes) -> bytes:
    """A float16-weights flatbuffer with its first FULLY_CONNECTED's float16 constants stored float32 in place of
    their DEQUANTIZE ops: a file with float16 weights in some layers and float32 in others."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(content, 0))
    graph = model.subgraphs[0]
    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    name = lambda op: names[max(model.operatorCodes[op.opcodeIndex].builtinCode,  # noqa: E731
                                model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode)]
    dense = next(op for op in graph.operators if name(op) == "FULLY_CONNECTED")
    for op in [op for op in graph.operators if name(op) == "DEQUANTIZE" and op.outputs[0] in list(dense.inputs)]:
        stored = graph.tensors[op.inputs[0]]
        values = np.frombuffer(bytes(bytearray(model.buffers[stored.buffer].data)), np.float16).astype(np.float32)
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(values.tobytes(), np.uint8)
        model.buffers.append(buffer)
        graph.tensors[op.outputs[0]].buffer = len(model.buffers) - 1
        graph.operators.remove(op)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_a_tflite_with_float16_and_float32_weights_is_refused_in_one_line(converted, tmp_path):
    """One side has one label, and the label gives the weight-rounding term: a mixed file would get the wrong one
    for some layers."""
    pytest.importorskip("ai_edge_litert")  # the interpreter alone: the litert adapter (make runtimes) is not needed
    import tensorflow as tf

    from equivalence import ModelNotSupported
    from equivalence.frameworks.litert_graph import walk

    model, _ = converted
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations, converter.target_spec.supported_types = [tf.lite.Optimize.DEFAULT], [tf.float16]
    content = converter.convert()
    assert {u.framework for u in walk(_saved(tmp_path, "fp16w", content))} == {"litert_fp16w"}
    mixed = _saved(tmp_path, "mixed", _with_one_layer_float32(content))
    with pytest.raises(ModelNotSupported, match=r"stores its weights as float32, but 'op \d+' \(op \d+\) as float16 "
                                                r"\(DEQUANTIZE\): the suite judges a file whose weights are all "
                                                "float16 or all float32") as info:
        walk(mixed)
    assert "\n" not in str(info.value)


def _saved(folder, name: str, content: bytes):
    (folder / f"{name}.tflite").write_bytes(content)
    return folder / f"{name}.tflite"
