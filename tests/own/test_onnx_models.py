"""An ONNX graph as one side of a pair (issue 26): read as a graph (MatMul/Gemm, a bias Add, the activation's op
pattern, weights from initializers and Constant nodes), each unit run on ONNX Runtime, judged as a hand port is."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

from conftest import adapter_or_skip
from equivalence.cli import EXIT_DISAGREE, EXIT_OK, EXIT_USAGE, main


@pytest.fixture(scope="module", autouse=True)
def _ort_and_torch():
    adapter_or_skip("ort", own=True)  # onnxruntime, onnx and torch (the graphs come from torch's exporter)


def export(module, width: int, *, dtype=None):
    """``module`` through ``torch.onnx.export(dynamo=False)``, as a user ships it (batch fixed at 1)."""
    import onnx
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module, (torch.zeros(1, width, dtype=dtype or torch.float32),), buffer, dynamo=False,
                          opset_version=20)
    return onnx.load_from_string(buffer.getvalue())


def mlp(activation, *, bias: bool = True):
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), activation, nn.Linear(7, 4, bias=bias), nn.Tanh(), nn.Linear(4, 3)).eval()


def perturbed(graph, initializer: int, index: int, by: float):
    """A copy of ``graph`` with one weight element of one initializer moved by ``by``."""
    import onnx
    from onnx import numpy_helper

    copy = onnx.ModelProto()
    copy.CopyFrom(graph)
    init = copy.graph.initializer[initializer]
    values = numpy_helper.to_array(init).copy()
    values.flat[index] += by
    init.CopyFrom(numpy_helper.from_array(values, init.name))
    return copy


ACTIVATIONS = {  # torch module -> the op pattern torch's exporter writes for it (opset 20)
    "relu": lambda nn: nn.ReLU(), "gelu": lambda nn: nn.GELU(), "gelu_tanh": lambda nn: nn.GELU("tanh"),
    "silu": lambda nn: nn.SiLU(),  # Sigmoid + Mul(x, sigmoid(x))
    "mish": lambda nn: nn.Mish(),  # Softplus + Tanh + Mul
    "softsign": lambda nn: nn.Softsign(),  # Abs + Add(1) + Div
    "relu6": lambda nn: nn.ReLU6(),  # Clip with Constant nodes 0 and 6
    "leaky_relu_0.01": lambda nn: nn.LeakyReLU(), "softmax": lambda nn: nn.Softmax(dim=-1),
    "hard_sigmoid": lambda nn: nn.Hardsigmoid(), "elu_0.5": lambda nn: nn.ELU(0.5), "selu": lambda nn: nn.SELU(),
}


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_a_torch_model_and_its_onnx_export_agree_layer_by_layer(activation):
    from torch import nn

    from equivalence import assert_equivalent

    model = mlp(ACTIVATIONS[activation](nn))
    graph = export(model, 5)
    before = graph.SerializeToString()
    result = assert_equivalent(model, graph, max_examples=10)
    assert [u.activation for u in result.keras_layers] == [activation, "tanh", "linear"]
    assert [u.kind for u in result.keras_layers] == ["onnx Gemm(transB=1)", "onnx Gemm(transB=1)",
                                                     "onnx Gemm(transB=1)"]
    assert result.labels == ("torch", "ort")
    assert graph.SerializeToString() == before, "the user's ModelProto must not be modified"
    assert assert_equivalent(graph, model, max_examples=3).labels == ("ort", "torch")  # either side


def test_matmul_then_add_is_the_same_unit_as_a_gemm_and_the_report_says_which():
    from torch import nn

    from equivalence import assert_equivalent

    model = mlp(nn.ReLU(), bias=False)  # no bias: the exporter writes MatMul with the weight stored (in, out)
    result = assert_equivalent(model, export(model, 5), max_examples=5)
    assert result.keras_layers[1].kind == "onnx MatMul" and result.keras_layers[1].b is None
    assert "layer 1: torch '2' (Linear; tanh: Tanh '3') = ort '/2/MatMul' (onnx MatMul; tanh: Tanh node 3)" \
        in result.matched()


def test_a_perturbed_initializer_is_caught_and_its_node_named():
    from torch import nn

    from equivalence import compare_models

    model = mlp(nn.SiLU())
    graph = perturbed(export(model, 5), initializer=2, index=5, by=1e-3)  # the second Gemm's weight
    result = compare_models(model, graph, max_examples=5)
    message = result.message()
    assert not result.passed
    assert "layer 1 (torch '2', ort '/2/Gemm'): kernel: 1 / 28 elements differ from the torch weight.T" in message
    assert "first divergence, torch vs ort, layer 1" in message, message


def test_a_changed_activation_op_is_named_as_an_activation_difference():
    from torch import nn

    from equivalence import compare_models

    model = mlp(nn.ReLU())
    graph = export(model, 5)
    next(n for n in graph.graph.node if n.op_type == "Relu").op_type = "Sigmoid"
    result = compare_models(model, graph, max_examples=5)
    assert "activation: got sigmoid in ort (Sigmoid node 1), but torch has relu (ReLU '1')" in result.message()


def test_an_op_pattern_that_cannot_be_mapped_is_refused_naming_the_op_and_its_node_index():
    from onnx import helper
    from torch import nn

    from equivalence import ModelNotSupported, compare_models

    model = mlp(nn.ReLU())
    graph = export(model, 5)
    relu = next(n for n in graph.graph.node if n.op_type == "Relu")
    relu.CopyFrom(helper.make_node("Cos", list(relu.input), list(relu.output), name="the_cos"))
    with pytest.raises(ModelNotSupported, match=r"onnx layer 'the_cos' \(Cos\) at position 1: the op pattern Cos "
                                                r"after the Gemm\(transB=1\) is not a dense layer's activation"):
        compare_models(model, graph)


def test_a_residual_add_of_other_shapes_is_refused_naming_the_node():
    """An Add of the second Gemm's 4 outputs and the first one's 7 (a broadcast, written into the graph): refused at
    the Add (residual Adds of equal shapes are read: tests/own/test_onnx_residual_models.py)."""
    from onnx import helper
    from torch import nn

    from equivalence import ModelNotSupported, compare_models

    model = mlp(nn.ReLU())
    graph = export(model, 5)
    nodes = list(graph.graph.node)
    relu = next(n for n in nodes if n.op_type == "Relu")
    second = next(i for i, n in enumerate(nodes) if n.op_type == "Gemm" and i > 0)
    out = nodes[second].output[0]
    nodes[second].output[0] = "pre_residual"
    residual = helper.make_node("Add", ["pre_residual", relu.output[0]], [out], name="residual")
    del graph.graph.node[:]
    graph.graph.node.extend(nodes[:second + 1] + [residual] + nodes[second + 1:])
    with pytest.raises(ModelNotSupported, match=r"onnx layer 'residual' \(Add\) at position 3: a residual Add of "
                                                r"shapes \(4,\) \(the branch\) and \(7,\) \(layer 0's output "
                                                r"\('/0/Gemm'\)\): the suite judges an Add of equal shapes, not a "
                                                r"broadcast"):
        compare_models(model, graph)


def test_a_float64_op_ort_has_no_kernel_for_is_not_run_with_the_reason():
    import torch
    from torch import nn

    from equivalence import ModelNotSupported, compare_models

    model = mlp(nn.GELU()).double()
    with pytest.raises(ModelNotSupported, match=r"onnx layer '/0/Gemm' \(Gemm\) at position 0: not run: no float64 "
                                                r"Erf kernel in ORT"):  # ORT runs its Gelu as Erf
        compare_models(model, export(model, 5, dtype=torch.float64))


# --- the command ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import torch
    from torch import nn

    folder = tmp_path_factory.mktemp("onnx")
    model = mlp(nn.SiLU())
    out = {name: folder / name for name in ("model.pt2", "model.onnx", "wrong.onnx", "random.onnx",
                                            "truncated.onnx", "zip.onnx")}
    torch.export.save(torch.export.export(model, (torch.zeros(2, 5),)), out["model.pt2"])
    graph = export(model, 5)
    out["model.onnx"].write_bytes(graph.SerializeToString())
    out["wrong.onnx"].write_bytes(perturbed(graph, initializer=0, index=0, by=1e-2).SerializeToString())
    out["random.onnx"].write_bytes(np.random.default_rng(0).bytes(2000))
    data = out["model.onnx"].read_bytes()
    out["truncated.onnx"].write_bytes(data[: len(data) // 2])
    out["zip.onnx"].write_bytes(out["model.pt2"].read_bytes())
    return out


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["compare", *map(str, argv), "--examples", "5"])
    out, err = capsys.readouterr()
    return code, out, err


def test_compare_takes_an_onnx_file_on_either_side(files, capsys):
    code, out, err = run(capsys, files["model.pt2"], files["model.onnx"])
    assert code == EXIT_OK and "all 3 layers agree" in out and "= ort '/0/Gemm' (onnx Gemm(transB=1); silu: " \
        "Sigmoid+Mul nodes 1, 2)" in out, (out, err)
    code, out, err = run(capsys, files["model.onnx"], files["model.pt2"])
    assert code == EXIT_OK and "ort ModelProto vs torch ExportedProgram: all 3 layers agree" in out, (out, err)


def test_compare_names_the_node_of_a_wrong_onnx_weight(files, capsys):
    code, out, err = run(capsys, files["model.pt2"], files["wrong.onnx"])
    assert code == EXIT_DISAGREE and "layer 0 (torch '0', ort '/0/Gemm'): kernel: 1 / 35 elements differ" in out, \
        (out, err)


@pytest.mark.parametrize(("name", "says"), [
    ("random.onnx", "not an ONNX model (a protobuf ModelProto)"),
    ("truncated.onnx", "not an ONNX model"),
    ("zip.onnx", "not an ONNX model"),
])
def test_a_broken_onnx_file_is_one_line_naming_the_file_and_the_format(files, capsys, name, says):
    code, out, err = run(capsys, files["model.pt2"], files[name])
    assert code == EXIT_USAGE and out == "" and err.count("\n") == 1, (out, err)
    assert f"{files[name]}: {says}" in err, err


@pytest.mark.usefixtures("keras_walker_or_skip")  # a Keras 3 port
def test_an_onnx_export_and_a_keras_port_of_the_same_model_agree(keras_adapter):
    from equivalence import assert_equivalent, port_weights
    from tests.helpers import keras_walker_problem
    from tests.own_models import keras_model, torch_model

    if keras_walker_problem():
        pytest.skip(keras_walker_problem())
    source = torch_model("custom_functional", (6, 8, 3), ("relu", "softmax")).eval()
    port = keras_model("functional_layers", (6, 8, 3), ("relu", "softmax"))
    port_weights(source, port)
    result = assert_equivalent(export(source, 6), port, max_examples=5)
    assert result.labels == ("ort", "keras")


def test_a_path_of_a_format_not_read_as_a_graph_is_refused_naming_those_that_are(tmp_path):
    from torch import nn

    from equivalence import compare_models

    (tmp_path / "model.npz").write_bytes(b"PK")
    with pytest.raises(ValueError, match=r"model.npz: got a .npz file, but a model given as a path should be one of "
                                         r".onnx, .tflite, .h5 or a SavedModel folder"):
        compare_models(mlp(nn.ReLU()), tmp_path / "model.npz")


def test_a_keras2_h5_without_tf_keras_installed_is_refused_with_the_install_hint(tmp_path):
    import importlib.util

    from torch import nn

    from equivalence import compare_models

    if importlib.util.find_spec("tf_keras") is not None:
        pytest.skip("tf_keras is installed here: make converters judges .h5 files (tests/own/test_converters.py)")
    (tmp_path / "model.h5").write_bytes(b"HDF")
    with pytest.raises(ValueError, match=r"model.h5: a keras2 model cannot be read here \(No module named "
                                         r"'tf_keras'\): pip install --no-deps tf-keras"):
        compare_models(mlp(nn.ReLU()), tmp_path / "model.h5")


def _transposed_conv_model():
    from torch import nn

    return nn.Sequential(nn.ConvTranspose2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 10 * 10, 5)).eval(), (1, 3, 8, 8)


def _global_pool_model():
    from torch import nn

    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).eval(), \
        (1, 3, 8, 8)


def _instance_norm_model():
    from torch import nn

    return nn.Sequential(nn.Conv1d(2, 4, 3), nn.InstanceNorm1d(4, affine=True), nn.Flatten(),
                         nn.Linear(16, 3)).eval(), (1, 2, 6)


@pytest.mark.parametrize(("build", "opset", "says"), [
    (_transposed_conv_model, 20, r"onnx layer '/0/ConvTranspose' \(ConvTranspose\) at position 0: ConvTranspose "
                                 r"starts a transposed convolution: the suite does not read this kind from converted "
                                 r"graphs yet"),
    (_instance_norm_model, 20, r"onnx layer '/1/InstanceNormalization' \(InstanceNormalization\) at position 1: "
                               r"InstanceNormalization starts an instance normalisation"),
    (_global_pool_model, 20, r"\(GlobalAveragePool\) at position 1: GlobalAveragePool starts a global pooling layer"),
])
def test_a_layer_kind_not_read_from_graphs_yet_is_refused_naming_it_its_op_and_position(build, opset, says):
    import onnx
    import torch

    from equivalence import ModelNotSupported, compare_models

    model, shape = build()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (torch.zeros(*shape),), buffer, dynamo=False, opset_version=opset)
    graph = onnx.load_from_string(buffer.getvalue())
    with pytest.raises(ModelNotSupported, match=says):
        compare_models(graph, graph)


def test_a_graph_whose_input_layout_is_read_wrong_is_refused_in_one_line_not_with_ort_s_traceback(tmp_path):
    """A hand-made graph flattening a channels-last (N, 6, 6, 3) input, no Transpose first and not tf2onnx's: read
    channels-first (ONNX's layout, torch's exporter's), ORT refuses the input it is then given; one line says so."""
    from onnx import TensorProto, helper, numpy_helper

    from equivalence import ModelNotSupported, compare_models

    W = np.random.default_rng(0).uniform(-1, 1, (108, 2)).astype("float32")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["f"]), helper.make_node("MatMul", ["f", "W"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 6, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(np.array([-1, 108], dtype=np.int64), "shape"),
                     numpy_helper.from_array(W, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    import keras

    port = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Flatten(), keras.layers.Dense(2, use_bias=False)])
    port.layers[1].kernel.assign(W)
    with pytest.raises(ModelNotSupported, match=r"^onnx layer 'Reshape_0' \(Reshape\) at position 0: not run on an "
                                                r"input of shape \(\d+, 3, 6, 6\), the graph's input read "
                                                r"channels-first") as info:
        compare_models(port, model, max_examples=2)
    assert "\n" not in str(info.value) and "tf2onnx wrote it" in str(info.value)


def test_a_dropout_left_in_training_mode_is_refused_naming_it():
    """torch's training-mode export writes the Dropout's training_mode input true: the graph drops values (ORT without
    its optimisations does; with them it removes the node), so it is no skip between two dense units."""
    import onnx
    import torch
    from torch import nn

    from equivalence import ModelNotSupported, compare_models

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3)).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 8),), buffer, dynamo=False, opset_version=17,
                          training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False)
    with pytest.raises(ModelNotSupported, match=r"^onnx layer '/2/Dropout' \(Dropout\) at position \d+: a Dropout "
                                                r"in training mode"):
        compare_models(model, onnx.load_from_string(buffer.getvalue()))
    assert compare_models(model, export(model, 8)).passed  # the eval-mode export: no Dropout, or one that keeps all


def test_an_add_of_a_value_computed_from_shapes_after_a_matmul_is_refused_in_one_line():
    """A MatMul, then an Add of zeros shaped like its output (ConstantOfShape of its Shape): not a constant bias."""
    import onnx
    import torch
    from onnx import helper, numpy_helper
    from torch import nn

    from equivalence import ModelNotSupported, compare_models

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3, bias=False)).eval()
    nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"], name="mm"),
             helper.make_node("Shape", ["mm"], ["s"], name="shape"),
             helper.make_node("ConstantOfShape", ["s"], ["z"], name="zeros",
                              value=numpy_helper.from_array(np.array([0.0], np.float32))),
             helper.make_node("Add", ["mm", "z"], ["y"], name="add")]
    weight = numpy_helper.from_array(model[0].weight.detach().numpy().T.copy(), "W")
    graph = helper.make_model(helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, ["n", 4])],
                                                [helper.make_tensor_value_info("y", 1, ["n", 3])], [weight]),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(graph)
    with pytest.raises(ModelNotSupported, match=r"^onnx layer 'add' \(Add\) at position 3: adds a value computed "
                                                r"from shapes, not a constant bias"):
        compare_models(model, graph)
