"""Convs, pooling, Flatten and norms of an ONNX graph (issue 26): read into the core's kinds, each unit run on ONNX
Runtime in ONNX's channels-first layout, judged layer by layer against a torch model as a hand port is."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from hypothesis import given, settings

from conftest import adapter_or_skip
from equivalence.cli import EXIT_DISAGREE, EXIT_OK, EXIT_USAGE, main
from tests.conv_models import conv_archs, torch_conv_model
from tests.own.test_onnx_models import perturbed


@pytest.fixture(scope="module", autouse=True)
def _ort_and_torch():
    adapter_or_skip("ort", own=True)


def export(module, shape, *, opset: int = 20, **options):
    """``module`` through ``torch.onnx.export(dynamo=False)`` on a zero input of ``shape`` (batch 1)."""
    import onnx
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module, (torch.zeros(*shape),), buffer, dynamo=False, opset_version=opset, **options)
    return onnx.load_from_string(buffer.getvalue())


CONVNET = '''
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 5, 3, stride=2), nn.Tanh(), nn.AvgPool2d(2, stride=1, padding=1),
                         nn.Flatten(), nn.Linear(20, 6), nn.SiLU(), nn.Linear(6, 2)).eval()
'''
SHAPE = (1, 3, 8, 8)


def convnet():
    namespace: dict = {}
    exec(CONVNET, namespace)  # noqa: S102 - the factory the command test imports, built here the same way
    return namespace["build"]()


def normnet():
    import torch
    from torch import nn

    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 6), nn.LayerNorm(6),
                          nn.Tanh(), nn.Linear(6, 3)).eval()
    with torch.no_grad():  # statistics a trained model has, not the defaults (mean 0, var 1)
        norm = model[1]
        norm.running_mean.uniform_(-2, 2), norm.running_var.uniform_(0.2, 3)
        norm.weight.uniform_(0.5, 2), norm.bias.uniform_(-1, 1)
        model[4].weight.uniform_(0.5, 2), model[4].bias.uniform_(-1, 1)
    return model


def test_a_torch_conv_stack_and_its_onnx_export_agree_layer_by_layer_and_the_report_says_what_was_matched():
    from equivalence import assert_equivalent
    from equivalence.core.spatial import Conv, Flatten, Pool

    model = convnet()
    graph = export(model, SHAPE)
    before = graph.SerializeToString()
    result = assert_equivalent(model, graph, max_examples=10)
    kinds = [type(u.layer_kind).__name__ for u in result.keras_layers]
    assert kinds == [type(u.layer_kind).__name__ for u in result.torch_layers] == \
        ["Conv", "Pool", "Conv", "Pool", "Flatten", "Dense", "Dense"]
    assert [u.layer_kind for u in result.keras_layers[:5]] == [u.layer_kind for u in result.torch_layers[:5]]
    assert result.keras_layers[3].layer_kind == Pool("avg", (2, 2), (1, 1), ((1, 1), (1, 1)), True)
    assert isinstance(result.keras_layers[0].layer_kind, Conv) and isinstance(result.keras_layers[4].layer_kind,
                                                                             Flatten)
    matched = result.matched()
    assert "layer 0: torch '0' (Conv2d; relu: ReLU '1') = ort '/0/Conv' (onnx Conv; relu: Relu node 1)" in matched
    assert "layer 4: torch '6' (Flatten; linear: none) = ort '/6/Flatten' (onnx Flatten; linear: none)" in matched
    assert "layer 5: torch '7' (Linear; silu: SiLU '8') = ort '/7/Gemm' (onnx Gemm(transB=1); silu: Sigmoid+Mul " \
        "nodes 8, 9)" in matched
    assert graph.SerializeToString() == before, "the user's ModelProto must not be modified"
    assert assert_equivalent(graph, model, max_examples=3).labels == ("ort", "torch")  # either side


def test_the_dense_layer_after_a_flatten_has_its_rows_in_the_canonical_order():
    """ONNX flattens N,C,H,W as torch does: the Gemm's rows are permuted to the canonical H,W,C, as the torch
    walker's are, so the two kernels are equal exactly."""
    from equivalence import compare_models

    result = compare_models(convnet(), export(convnet(), SHAPE), max_examples=2)
    torch_dense, onnx_dense = result.torch_layers[5], result.keras_layers[5]
    assert np.array_equal(torch_dense.W, onnx_dense.W)
    assert not np.array_equal(onnx_dense.W, onnx_dense.native.T), "the rows should be permuted (C,H,W -> H,W,C)"


@settings(max_examples=15)
@given(arch=conv_archs(dtype="float32"))
def test_drawn_conv_stacks_agree_with_their_onnx_export(arch):
    """Conv1d/Conv2d (valid and symmetric padding, strides 1-2), max and average pooling, Flatten, Linear: every
    ORT unit within its kind's bound, the kinds and output shapes read from the graph equal the torch walker's."""
    from equivalence import compare_models

    model = torch_conv_model(arch).eval()
    x = np.random.default_rng(arch.seed).uniform(-1, 1, (4, *arch.torch_input))
    result = compare_models(model, export(model, (1, *arch.torch_input)), x=x)
    assert result.passed, result.message()
    assert [u.layer_kind for u in result.keras_layers] == [u.layer_kind for u in result.torch_layers]
    assert [u.out_shape for u in result.keras_layers] == [u.out_shape for u in result.torch_layers]


@pytest.mark.parametrize(("opset", "layer_norm"), [
    (14, "'/4/ReduceMean' (onnx ReduceMean+Sub+Pow+ReduceMean+Add+Sqrt+Div+Mul+Add; tanh: Tanh node 15)"),
    (17, "'/4/LayerNormalization' (onnx LayerNormalization; tanh: Tanh node"),
    (20, "'/4/LayerNormalization' (onnx LayerNormalization; tanh: Tanh node"),
])
def test_batch_and_layer_normalization_nodes_agree_with_the_torch_norms(opset, layer_norm):
    """Below opset 17 torch's exporter writes a LayerNorm as nine ops: read as one LayerNorm unit, the report
    naming them."""
    from equivalence import assert_equivalent
    from equivalence.core.norms import BatchNorm, LayerNorm

    model = normnet()
    graph = export(model, (2, 5), opset=opset)
    result = assert_equivalent(model, graph, max_examples=10)
    onnx_kinds = [u.layer_kind for u in result.keras_layers]
    assert onnx_kinds[1] == BatchNorm(8, 1e-5, 0.9) and onnx_kinds[3] == LayerNorm(6, 1e-5)
    assert onnx_kinds == [u.layer_kind for u in result.torch_layers]
    assert f"layer 3: torch '4' (LayerNorm; tanh: Tanh '5') = ort {layer_norm}" in "\n".join(result.matched())
    rows = 1e3 + np.random.default_rng(opset).uniform(-1, 1, (16, 5))  # a large offset: the mean's cancellation
    assert_equivalent(model, graph, x=rows)


def test_a_layer_norm_written_with_other_ops_is_refused_naming_the_check_that_fails():
    from onnx import helper

    from equivalence import ModelNotSupported, compare_models

    graph = export(normnet(), (2, 5), opset=14)
    power = next(n for n in graph.graph.node if n.op_type == "Pow")
    three = helper.make_node("Constant", [], ["three"], value=helper.make_tensor("three", 1, [], [3.0]))
    power.input[1] = "three"
    graph.graph.node.insert(0, three)
    with pytest.raises(ModelNotSupported, match=r"onnx layer '/4/ReduceMean' \(ReduceMean\) at position 5: the ops of "
                                                r"a LayerNorm \(ReduceMean\+Sub.*\), but wired otherwise \(check 4 of "
                                                r"10 fails\)"):
        compare_models(graph, graph)


@pytest.mark.parametrize(("initializer", "says"), [
    ("0.weight", "layer 0 (torch '0', ort '/0/Conv'): kernel: 1 / 108 elements differ from the torch weight.T"),
    ("0.bias", "layer 0 (torch '0', ort '/0/Conv'): bias: 1 / 4 elements differ"),
])
def test_a_perturbed_conv_initializer_is_caught_and_its_node_named(initializer, says):
    from equivalence import compare_models

    model = convnet()
    graph = export(model, SHAPE)
    index = next(i for i, init in enumerate(graph.graph.initializer) if init.name == initializer)
    result = compare_models(model, perturbed(graph, initializer=index, index=3, by=1e-3), max_examples=3)
    assert not result.passed
    assert says in result.message(), result.message()
    assert "first divergence, torch vs ort, layer 0: " in result.message(), result.message()
    assert "[torch '0', ort '/0/Conv']" in result.message(), result.message()


def test_a_perturbed_batch_norm_statistic_is_caught_at_its_layer():
    from equivalence import compare_models

    model = normnet()
    graph = export(model, (2, 5))
    index = next(i for i, init in enumerate(graph.graph.initializer) if init.name == "1.running_var")
    result = compare_models(model, perturbed(graph, initializer=index, index=2, by=0.5), max_examples=3)
    assert "layer 1 (torch '1', ort '/1/BatchNormalization'): kernel: 1 / 32 elements differ" in result.message()
    assert "first divergence, torch vs ort, layer 1: " in result.message(), result.message()
    assert "[torch '1', ort '/1/BatchNormalization']" in result.message(), result.message()


@pytest.mark.parametrize("norm", ["layernorm", "batchnorm"])
def test_a_norm_between_the_flatten_and_the_gemm_is_read_in_the_canonical_order(norm):
    """ONNX flattens C, H, W as torch does; the norm after the Flatten is put in the canonical H, W, C order on both
    sides (its parameters' columns permuted, as the Gemm's rows are), and a moved element is named there."""
    from equivalence import assert_equivalent, compare_models
    from tests.own_models import norm_after_flatten

    model = norm_after_flatten(norm)
    graph = export(model, (1, 2, 5, 5), opset=17)
    assert_equivalent(model, graph, max_examples=10)
    index = next(i for i, init in enumerate(graph.graph.initializer) if init.name == "3.weight")
    message = compare_models(model, perturbed(graph, initializer=index, index=5, by=0.5), max_examples=3).message()
    assert "layer 2 (torch '3', ort '/3/" in message and "1 / " in message, message


def _grouped():
    from torch import nn

    return nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(64, 2)).eval(), (1, 2, 6, 6)


def _dilated():
    from torch import nn

    return nn.Sequential(nn.Conv2d(2, 4, 3, dilation=2), nn.Flatten(), nn.Linear(16, 2)).eval(), (1, 2, 6, 6)


def _ceil_pool():
    from torch import nn

    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.MaxPool2d(3, ceil_mode=True), nn.Flatten(),
                         nn.Linear(16, 2)).eval(), (1, 2, 6, 6)


def _view(*, batch_first: bool = False):
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(2, 3, 3), nn.Linear(48, 2)

        def forward(self, x):
            y = self.conv(x)
            return self.fc(y.view(y.size(0), -1) if batch_first else y.view(1, -1))

    return Net().eval(), (1, 2, 6, 6)


def test_a_reshape_to_a_shape_computed_from_the_batch_is_read_as_a_flatten():
    """``x.view(x.size(0), -1)`` exported with a dynamic batch: ``Shape``, ``Gather``, ``Unsqueeze``, ``Concat`` into
    the ``Reshape``, read with it and run in its unit."""
    from equivalence import assert_equivalent
    from equivalence.core.spatial import Flatten

    model, shape = _view(batch_first=True)
    graph = export(model, shape, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    assert "Shape" in [n.op_type for n in graph.graph.node]
    result = assert_equivalent(model, graph, max_examples=5)
    assert isinstance(result.keras_layers[1].layer_kind, Flatten) and result.keras_layers[1].kind == "onnx Reshape"


@pytest.mark.parametrize(("build", "says"), [
    (_grouped, r"onnx layer '/0/Conv' \(Conv\) at position 0: group 2: the suite judges convolutions of one group"),
    (_dilated, r"\(Conv\) at position 0: dilations \[2, 2\], ceil_mode 0: the suite judges no dilation"),
    (_ceil_pool, r"onnx layer '/1/MaxPool' \(MaxPool\) at position 1: dilations \[1, 1\], ceil_mode 1"),
    (_view, r"\(Reshape\) at position \d: a Reshape to \[1, -1\]: it fixes the batch at 1 \(export with shape "
            r"\[-1, 48\]\)"),
])
def test_what_the_reader_does_not_judge_is_refused_naming_the_node(build, says):
    from equivalence import ModelNotSupported, compare_models

    model, shape = build()
    graph = export(model, shape)
    with pytest.raises(ModelNotSupported, match=says):
        compare_models(graph, graph)


# --- the command ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import torch

    folder = tmp_path_factory.mktemp("onnx_conv")
    (folder / "convnet.py").write_text(CONVNET, encoding="utf-8")
    model = convnet()
    torch.save(model.state_dict(), folder / "state.pt")
    graph = export(model, SHAPE)
    (folder / "model.onnx").write_bytes(graph.SerializeToString())
    (folder / "wrong.onnx").write_bytes(perturbed(graph, initializer=0, index=0, by=1e-2).SerializeToString())
    (folder / "grouped.onnx").write_bytes(export(*_grouped()).SerializeToString())
    return folder


def run(files, monkeypatch, capsys, onnx_file: str) -> tuple[int, str, str]:
    monkeypatch.chdir(files)
    monkeypatch.syspath_prepend(str(files))
    code = main(["compare", str(files / "state.pt"), str(files / onnx_file), "--torch-model", "convnet:build",
                 "--examples", "5"])
    out, err = capsys.readouterr()
    return code, out, err


def test_compare_takes_a_conv_state_dict_and_its_onnx_export(files, monkeypatch, capsys):
    code, out, err = run(files, monkeypatch, capsys, "model.onnx")
    assert code == EXIT_OK and "all 7 layers agree" in out, (out, err)
    assert "= ort '/0/Conv' (onnx Conv; relu: Relu node 1)" in out and "= ort '/2/MaxPool' (onnx MaxPool" in out


def test_compare_names_the_conv_node_of_a_wrong_onnx_weight(files, monkeypatch, capsys):
    code, out, err = run(files, monkeypatch, capsys, "wrong.onnx")
    assert code == EXIT_DISAGREE and "layer 0 (torch '0', ort '/0/Conv'): kernel: 1 / 108 elements differ" in out, \
        (out, err)


def test_compare_refuses_a_grouped_conv_in_one_line(files, monkeypatch, capsys):
    code, out, err = run(files, monkeypatch, capsys, "grouped.onnx")
    assert code == EXIT_USAGE and out == "" and err.count("\n") == 1, (out, err)
    assert "onnx layer '/0/Conv' (Conv) at position 0: group 2" in err, err
