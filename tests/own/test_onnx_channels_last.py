"""A channels-last ONNX graph (what converters from Keras write): the input ``N, H, W, C``, a ``Transpose`` to ONNX's
channels-first before each conv or pooling node and one back after it. Each pair is read with its node as one unit
(``onnx Transpose+Conv+Transpose``), judged against the Keras model of the same weights, and the report says what
was matched with what."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import adapter_or_skip

TO_FIRST, TO_LAST = [0, 3, 1, 2], [0, 2, 3, 1]


@pytest.fixture(scope="module", autouse=True)
def _ort():
    adapter_or_skip("ort", own=True)


def weights():
    rng = np.random.default_rng(0)
    return {"conv_w": rng.uniform(-1, 1, (4, 3, 3, 3)).astype("float32"),  # ONNX (out, in, kh, kw)
            "conv_b": rng.uniform(-1, 1, 4).astype("float32"),
            "dense_w": rng.uniform(-1, 1, (4 * 3 * 3, 5)).astype("float32"),  # MatMul (in, out), H,W,C rows
            "dense_b": rng.uniform(-1, 1, 5).astype("float32")}


def channels_last_graph(*, pushed: bool = False):
    """``Transpose, Conv(pad 1), Relu, Transpose, Transpose, MaxPool(2, stride 2), Transpose, Reshape[-1, 36],
    MatMul, Add`` on an ``(N, 6, 6, 3)`` input; ``pushed``: the middle pair cancelled (``Transpose, Conv, Relu,
    MaxPool, Transpose``), as tf2onnx's optimizer leaves it."""
    import onnx
    from onnx import helper, numpy_helper

    w = weights()
    node = helper.make_node
    nodes = [node("Transpose", ["x"], ["x_first"], perm=TO_FIRST, name="to_first"),
             node("Conv", ["x_first", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1], kernel_shape=[3, 3],
                  name="conv"),
             node("Relu", ["conv"], ["relu"], name="relu")]
    if pushed:
        nodes.append(node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2], name="pool"))
    else:
        nodes += [node("Transpose", ["relu"], ["relu_last"], perm=TO_LAST, name="conv_to_last"),
                  node("Transpose", ["relu_last"], ["relu_first"], perm=TO_FIRST, name="pool_to_first"),
                  node("MaxPool", ["relu_first"], ["pool"], kernel_shape=[2, 2], strides=[2, 2], name="pool")]
    nodes += [node("Transpose", ["pool"], ["pool_last"], perm=TO_LAST, name="pool_to_last"),
              node("Reshape", ["pool_last", "flat_shape"], ["flat"], name="flatten"),
              node("MatMul", ["flat", "dense_w"], ["mm"], name="dense"),
              node("Add", ["mm", "dense_b"], ["y"], name="dense_bias")]
    initializers = [numpy_helper.from_array(v, k) for k, v in w.items()]
    initializers.append(numpy_helper.from_array(np.array([-1, 36], dtype=np.int64), "flat_shape"))
    graph = helper.make_graph(nodes, "channels_last", [helper.make_tensor_value_info("x", 1, ["n", 6, 6, 3])],
                              [helper.make_tensor_value_info("y", 1, ["n", 5])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def keras_port():
    import keras

    w = weights()
    L = keras.layers
    model = keras.Sequential([keras.Input((6, 6, 3)), L.Conv2D(4, 3, padding="same", activation="relu", name="c"),
                              L.MaxPooling2D(2, name="p"), L.Flatten(name="f"), L.Dense(5, name="d")])
    model.layers[0].set_weights([w["conv_w"].transpose(2, 3, 1, 0), w["conv_b"]])
    model.layers[3].set_weights([w["dense_w"], w["dense_b"]])
    return model


@pytest.mark.usefixtures("keras_walker_or_skip")
@pytest.mark.parametrize("pushed", [False, True])
def test_transpose_pairs_around_a_conv_are_read_with_it_and_the_report_says_so(pushed):
    from equivalence import assert_equivalent
    from equivalence.core.spatial import Conv, Flatten, Pool

    result = assert_equivalent(channels_last_graph(pushed=pushed), keras_port(), max_examples=10)
    units = result.torch_layers
    assert [type(u.layer_kind) for u in units] == [Conv, Pool, Flatten, type(units[3].layer_kind)]
    assert [u.layer_kind for u in units[:3]] == [u.layer_kind for u in result.keras_layers[:3]]
    conv_kind, pool_kind = (("Transpose+Conv+Transpose", "Transpose+MaxPool+Transpose") if not pushed else
                            ("Transpose+Conv", "MaxPool+Transpose"))
    assert [u.kind for u in units] == [f"onnx {conv_kind}", f"onnx {pool_kind}", "onnx Reshape", "onnx MatMul+Add"]
    matched = result.matched()
    assert f"layer 0: ort 'conv' (onnx {conv_kind}; relu: Relu node 2) = keras 'c'" in matched[0], matched
    assert np.array_equal(units[3].W, weights()["dense_w"]), "a channels-last flatten: the rows as stored"


@pytest.mark.usefixtures("keras_walker_or_skip")
def test_a_moved_conv_weight_in_a_channels_last_graph_is_named_at_its_node():
    from onnx import numpy_helper

    from equivalence import compare_models

    graph = channels_last_graph()
    init = next(i for i in graph.graph.initializer if i.name == "conv_w")
    values = numpy_helper.to_array(init).copy()
    values[1, 2, 0, 1] += 1e-3
    init.CopyFrom(numpy_helper.from_array(values, "conv_w"))
    message = compare_models(graph, keras_port(), max_examples=3).message()
    assert "layer 0 (ort 'conv', keras 'c'): kernel: 1 / 108 elements differ" in message, message


def test_a_transpose_not_around_a_conv_is_refused_naming_it():
    from onnx import helper

    from equivalence import ModelNotSupported, compare_models

    graph = channels_last_graph()
    nodes = list(graph.graph.node)
    dense = next(i for i, n in enumerate(nodes) if n.name == "dense")
    odd = helper.make_node("Transpose", ["flat"], ["flat_t"], perm=[1, 0], name="odd")
    nodes[dense].input[0] = "flat_t"
    del graph.graph.node[:]
    graph.graph.node.extend(nodes[:dense] + [odd] + nodes[dense:])
    with pytest.raises(ModelNotSupported, match=r"onnx layer 'odd' \(Transpose\) at position 8: Transpose starts a "
                                                r"transpose"):
        compare_models(graph, graph)
