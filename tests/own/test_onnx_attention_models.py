"""Multi-head self-attention in an ONNX graph (issue 26): torch's ``nn.MultiheadAttention`` called as
``att(x, x, x)`` and exported by ``torch.onnx.export(dynamo=False)``, and Keras' ``MultiHeadAttention`` through
tf2onnx, read as one unit of their whole region of ops (``equivalence.frameworks.onnx_attention``), run on ONNX
Runtime and judged layer by layer against the model they were exported from; what the reader does not judge is
refused naming the node."""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
import pytest

from conftest import adapter_or_skip
from equivalence.cli import EXIT_DISAGREE, EXIT_OK, main
from tests.own.test_onnx_models import perturbed


@pytest.fixture(scope="module", autouse=True)
def _ort_and_torch():
    adapter_or_skip("ort", own=True)


LENGTH, ROWS, E = 6, 20, 8

ATTNET = '''
import torch
from torch import nn


class AttentionNet(nn.Module):
    """Embedding -> self-attention -> mean over the tokens -> Linear."""

    def __init__(self, heads=2, bias=True, need_weights=False):
        super().__init__()
        self.emb, self.fc = nn.Embedding(20, 8), nn.Linear(8, 3)
        self.att = nn.MultiheadAttention(8, heads, batch_first=True, bias=bias)
        self.need_weights = need_weights

    def forward(self, x):
        h = self.emb(x)
        return self.fc(self.att(h, h, h, need_weights=self.need_weights)[0].mean(1))


def build():
    torch.manual_seed(0)
    return AttentionNet().eval()
'''


def _namespace() -> dict:
    namespace: dict = {}
    exec(ATTNET, namespace)  # noqa: S102 - the factory the command test imports, built here the same way
    return namespace


def token_net(heads: int = 2, bias: bool = True, *, need_weights: bool = False, seed: int = 0):
    import torch

    torch.manual_seed(seed)
    model = _namespace()["AttentionNet"](heads, bias, need_weights).eval()
    if bias:  # torch starts the biases at zero: a bias read from the wrong place would not show
        with torch.no_grad():
            model.att.in_proj_bias.uniform_(-1, 1), model.att.out_proj.bias.uniform_(-1, 1)
    return model


def sequence_net(heads: int = 2, *, need_weights: bool = False, batch_first: bool = True):
    """Self-attention on the model's float ``(batch, L, 8)`` input -> mean over the tokens -> Linear."""
    import torch
    from torch import nn

    class SequenceNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.att, self.fc = nn.MultiheadAttention(E, heads, batch_first=batch_first), nn.Linear(E, 3)

        def forward(self, x):
            return self.fc(self.att(x, x, x, need_weights=need_weights)[0].mean(1))

    torch.manual_seed(3)
    model = SequenceNet().eval()
    with torch.no_grad():
        model.att.in_proj_bias.uniform_(-1, 1), model.att.out_proj.bias.uniform_(-1, 1)
    return model


def export(module, *, opset: int = 17, example=None, **options):
    """``module`` through ``torch.onnx.export(dynamo=False)`` on zero token ids ``(1, L)`` (or ``example``)."""
    import onnx
    import torch

    example = torch.zeros(1, LENGTH, dtype=torch.long) if example is None else example
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=opset, **options)
    return onnx.load_from_string(buffer.getvalue())


def ids(seed: int, batch: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, ROWS, (batch, LENGTH))


def _agrees_with_the_torch_walk(result, heads: int, length: int = LENGTH) -> None:
    """The kinds, shapes and weights read from the graph are the torch walker's, the attention's exactly."""
    from equivalence.core.attention import SelfAttention

    assert [u.layer_kind for u in result.keras_layers] == [u.layer_kind for u in result.torch_layers]
    graph_att, torch_att = (next(u for u in side if isinstance(u.layer_kind, SelfAttention))
                            for side in (result.keras_layers, result.torch_layers))
    assert graph_att.layer_kind == SelfAttention(E, heads, E // heads, length)
    assert graph_att.in_shape == graph_att.out_shape == torch_att.in_shape == (length, E)
    assert np.array_equal(graph_att.W, torch_att.W)
    assert (graph_att.b is None and torch_att.b is None) or np.array_equal(graph_att.b, torch_att.b)


@pytest.mark.parametrize("opset", [14, 17, 20])
@pytest.mark.parametrize("heads", [1, 2, 4])
@pytest.mark.parametrize("bias", [True, False])
def test_a_token_attention_net_and_its_onnx_export_agree_layer_by_layer(opset, heads, bias):
    """torch writes the attention as a Transpose to (L, N, E), a MatMul by the packed in_proj_weight (transposed)
    and its bias Add, a Reshape/Gather split, the heads' Reshapes, the scaled scores' MatMul, the Softmax, the
    values' MatMul, the output projection (a Gemm, or a MatMul without bias) and a Transpose back: one unit."""
    from equivalence import assert_equivalent

    model = token_net(heads, bias)
    graph = export(model, opset=opset)
    before = graph.SerializeToString()
    result = assert_equivalent(model, graph, max_examples=10)
    _agrees_with_the_torch_walk(result, heads)
    assert re.search(r"layer 1: torch 'att' \(MultiheadAttention; linear: none\) = ort '/att/Transpose' \(onnx "
                     r"self-attention \(\d+ nodes\); linear: none\)", "\n".join(result.matched())), result.matched()
    assert graph.SerializeToString() == before, "the user's ModelProto must not be modified"
    assert_equivalent(model, graph, x=ids(opset + heads))


def test_the_exported_batch_is_baked_in_and_the_unit_runs_any_batch_in_chunks_of_it():
    """torch's exporter writes the traced batch (1) into the attention's Reshape targets (as (L, N * heads, d)): the
    unit runs a batch of 5 one sample at a time; exported with a dynamic batch, the targets computed, in one run."""
    from onnx import numpy_helper

    from equivalence import assert_equivalent
    from equivalence.frameworks.onnx_graph import walk

    model = token_net(4)
    fixed, free = export(model), export(model, input_names=["ids"], dynamic_axes={"ids": {0: "batch"}})
    targets = [numpy_helper.to_array(n.attribute[0].t).tolist() for n in fixed.graph.node if n.op_type == "Constant"]
    assert [LENGTH, 1 * 4, E // 4] in targets
    x = np.random.default_rng(0).standard_normal((5, LENGTH, E)).astype(np.float32)
    assert walk(fixed)[1].run(x).shape == walk(free)[1].run(x).shape == (5, LENGTH, E)
    for graph in (fixed, free):
        assert_equivalent(model, graph, x=ids(1, batch=5))


@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("opset", [14, 20])
def test_an_attention_on_the_float_input_and_both_export_forms_are_read(need_weights, opset):
    """need_weights=True exports another form (the heads batched as (N * heads, L, d), the scale a constant Mul of
    the queries): both read; the graph's float (batch, L, E) input is the sequence the attention starts at."""
    import torch

    from equivalence import assert_equivalent

    model = sequence_net(2, need_weights=need_weights)
    graph = export(model, opset=opset, example=torch.zeros(1, 5, E))
    result = assert_equivalent(model, graph, max_examples=10)
    _agrees_with_the_torch_walk(result, 2, length=5)
    assert result.keras_layers[0].name == "/att/Transpose"


@pytest.mark.parametrize(("part", "column"), [("query", 1), ("key", E + 2), ("value", 2 * E + 5)])
def test_a_moved_in_projection_element_in_the_file_is_named_at_the_attention(part, column):
    """The packed (E, 3E) projection torch stores transposed: its query, key and value columns each read."""
    from equivalence import compare_models

    model = token_net()
    graph = export(model)
    at = next(i for i, init in enumerate(graph.graph.initializer) if tuple(init.dims) == (E, 3 * E))
    message = compare_models(model, perturbed(graph, initializer=at, index=3 * E * 4 + column, by=1e-3),
                             max_examples=3).message()
    assert f"layer 1 (torch 'att', ort '/att/Transpose'): kernel: 1 / {4 * E * E} elements differ" in message, message


@pytest.mark.parametrize(("initializer", "index", "what"), [
    ("att.out_proj.weight", 13, "kernel"), ("att.in_proj_bias", E + 3, "bias"), ("att.out_proj.bias", 6, "bias")])
def test_a_moved_output_projection_or_bias_element_is_named_at_the_attention(initializer, index, what):
    from equivalence import compare_models

    model = token_net()
    graph = export(model)
    at = next(i for i, init in enumerate(graph.graph.initializer) if init.name == initializer)
    message = compare_models(model, perturbed(graph, initializer=at, index=index, by=1e-3), max_examples=3).message()
    size = 4 * E * E if what == "kernel" else 4 * E
    assert f"layer 1 (torch 'att', ort '/att/Transpose'): {what}: 1 / {size} elements differ" in message, message


def transformer_block():
    """Embedding -> LayerNorm(h + att(h)) -> LayerNorm(h + relu(ff(h))) per token -> mean over the tokens ->
    Linear: a post-norm transformer block, both residual Adds around units the reader reads."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.att = nn.Embedding(ROWS, E), nn.MultiheadAttention(E, 2, batch_first=True)
            self.ln1, self.ff, self.ln2, self.fc = nn.LayerNorm(E), nn.Linear(E, E), nn.LayerNorm(E), nn.Linear(E, 3)

        def forward(self, x):
            h = self.emb(x)
            h = self.ln1(h + self.att(h, h, h, need_weights=False)[0])
            h = self.ln2(h + torch.relu(self.ff(h)))
            return self.fc(h.mean(1))

    torch.manual_seed(0)
    model = Block().eval()
    with torch.no_grad():
        model.att.in_proj_bias.uniform_(-1, 1)
        for norm in (model.ln1, model.ln2):
            norm.weight.uniform_(0.5, 1.5), norm.bias.uniform_(-1, 1)
    return model


@pytest.mark.parametrize("opset", [17, 20])
def test_a_transformer_block_and_its_onnx_export_agree_layer_by_layer(opset):
    """The attention's input feeds its region and the residual Add after it (x + att(x)): tapped as a fork whose
    region stands for one branch, so the Add is the torch walker's Residual unit, skip the Embedding's output."""
    from equivalence import assert_equivalent
    from equivalence.core.residual import Residual

    model = transformer_block()
    graph = export(model, opset=opset, input_names=["ids"], dynamic_axes={"ids": {0: "batch"}})
    result = assert_equivalent(model, graph, max_examples=10)
    kinds = [type(u.layer_kind).__name__ for u in result.keras_layers]
    assert kinds == [type(u.layer_kind).__name__ for u in result.torch_layers] == [
        "Embedding", "SelfAttention", "Residual", "LayerNorm", "Dense", "Residual", "LayerNorm", "SequenceMean",
        "Dense"], kinds
    assert [u.layer_kind.skip for u in result.keras_layers if isinstance(u.layer_kind, Residual)] == \
        [u.layer_kind.skip for u in result.torch_layers if isinstance(u.layer_kind, Residual)] == [0, 3]
    assert_equivalent(model, graph, x=ids(opset))


def test_a_moved_weight_in_a_transformer_block_s_file_is_named_at_its_layer():
    from equivalence import compare_models

    model = transformer_block()
    graph = export(model)
    at = next(i for i, init in enumerate(graph.graph.initializer)  # ff's weight, stored (in, out) for its MatMul
              if tuple(init.dims) == (E, E) and init.name.startswith("onnx::MatMul"))
    message = compare_models(model, perturbed(graph, initializer=at, index=9, by=1e-3), max_examples=3).message()
    assert re.search(r"layer 4 \(torch 'ff', ort '[^']+'\): kernel: 1 / 64 elements differ", message), message


def test_a_region_computing_another_attention_than_its_weights_say_is_a_difference_at_the_layer():
    """The scale is not read but run: the need_weights=True form scales the queries by a constant 1/sqrt(d); made
    1/d, the weights read are still torch's, and ORT's attention is judged out of bound against the reference."""
    from onnx import numpy_helper

    from equivalence import compare_models

    model = token_net(need_weights=True)
    graph = export(model)
    scale = next(n for n in graph.graph.node if n.op_type == "Mul" and n.name.startswith("/att/"))
    constant = next(n for n in graph.graph.node if n.output[0] == scale.input[1])
    value = numpy_helper.to_array(constant.attribute[0].t)
    assert float(value) == 0.5  # 1 / sqrt(4)
    constant.attribute[0].t.CopyFrom(numpy_helper.from_array(np.asarray(value * 0.5, value.dtype)))
    message = compare_models(model, graph, max_examples=5).message()
    assert "0 differences in structure or weights" in message, message
    assert re.search(r"first divergence, ort vs reference, layer 1 \(attention: .*\[torch 'att', ort "
                     r"'/att/Transpose'\]", message), message


# --- what is refused --------------------------------------------------------------------------------

def _variant(name: str):
    """Embedding -> an attention the suite does not judge -> mean -> Linear."""
    import torch
    from torch import nn

    options = {"bias_kv": {"add_bias_kv": True}, "zero_attn": {"add_zero_attn": True},
               "kdim": {"kdim": 5, "vdim": 5}}.get(name, {})

    class Variant(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.fc = nn.Embedding(ROWS, E), nn.Linear(E, 3)
            self.att = nn.MultiheadAttention(E, 2, batch_first=True, **options)
            self.other = nn.Linear(E, 5 if name == "kdim" else E)
            self.register_buffer("mask", torch.triu(torch.ones(LENGTH, LENGTH, dtype=torch.bool), 1))
            self.register_buffer("padding", torch.arange(LENGTH)[None] >= LENGTH - 2)  # the last two tokens

        def forward(self, x):
            h = self.emb(x)
            if name in ("cross", "kdim"):
                y = self.other(h)
                return self.fc(self.att(h, y, y, need_weights=False)[0].mean(1))
            masks = {"mask": {"attn_mask": self.mask}, "causal": {"attn_mask": self.mask, "is_causal": True},
                     "padding": {"key_padding_mask": self.padding}, "ids_padding": {"key_padding_mask": x == 0}
                     }.get(name, {})
            return self.fc(self.att(h, h, h, need_weights=False, **masks)[0].mean(1))

    torch.manual_seed(0)
    return Variant().eval()


@pytest.mark.parametrize(("name", "says"), [
    ("mask", r"'/att/Add_\d+' \(Add\) at position \d+: an Add on the attention scores before the Softmax \(an "
             r"attn_mask, a key_padding_mask, a causal mask\): masked attention is not judged"),
    ("causal", r"'/att/Add_\d+' \(Add\) at position \d+: an Add on the attention scores before the Softmax"),
    ("padding", r"'/att/Add_\d+' \(Add\) at position \d+: an Add on the attention scores before the Softmax"),
    # a padding mask of the ids forks them: refused where the mask's branch starts (residual forks are read: the
    # fork must end at an Add of two branches), or, were it read, at the Add on the scores
    ("ids_padding", r"('/Equal' \(Equal\) at position \d+: starts a second branch from 'input' before the first one "
                    r"ends|'/att/Add_\d+' \(Add\) at position \d+: an Add on the attention scores before the Softmax)"),
    ("cross", r"'/att/MatMul_1' \(MatMul\) at position \d+: projects the keys from '/other/Add_output_0', not "
              r"from the queries' sequence '/emb/Gather_output_0': cross-attention \(keys and values of another "
              r"tensor, as kdim or vdim make them\) is not judged"),
    ("kdim", r"'/att/MatMul_1' \(MatMul\) at position \d+: projects the keys from .*cross-attention"),
    ("bias_kv", r"'/att/Concat_1' \(Concat\) at position \d+: a Concat onto the keys: extra key or value tokens "
                r"\(torch's add_bias_kv or add_zero_attn\) are not judged"),
    ("zero_attn", r"'/att/Concat_1' \(Concat\) at position \d+: a Concat onto the keys: extra key or value tokens"),
])
def test_an_attention_the_suite_does_not_judge_is_refused_naming_the_node(name, says):
    from equivalence import ModelNotSupported, compare_models

    graph = export(_variant(name))
    with pytest.raises(ModelNotSupported, match=rf"^onnx layer {says}"):
        compare_models(graph, graph)


def test_an_attention_over_the_batch_axis_is_refused_at_its_softmax():
    """batch_first=False on a batch-first (N, L, E) input attends over the batch: the scores are (L, heads, N, N)."""
    import torch

    from equivalence import ModelNotSupported, compare_models

    graph = export(sequence_net(batch_first=False), example=torch.zeros(1, 5, E))
    with pytest.raises(ModelNotSupported, match=r"^onnx layer '/att/Softmax' \(Softmax\) at position \d+: scores of "
                                                r"shape \(5, 2, 1, 1\) \(run on a batch of 1\): not over the 5 tokens"):
        compare_models(graph, graph)


def test_a_dropout_in_training_mode_is_refused_naming_it():
    """Exported in training mode, torch writes the weights' Dropout without training_mode: ORT runs it as the
    identity, read so; with training_mode set it drops, refused."""
    import onnx
    import torch
    from onnx import helper

    from equivalence import ModelNotSupported, compare_models

    model = token_net()
    model.att.dropout = 0.25
    graph = export(model.train(), training=torch.onnx.TrainingMode.TRAINING)
    dropout = next(i for i, n in enumerate(graph.graph.node) if n.op_type == "Dropout")
    graph.graph.initializer.append(helper.make_tensor("training", onnx.TensorProto.BOOL, [], [True]))
    graph.graph.node[dropout].input.append("training")
    with pytest.raises(ModelNotSupported, match=rf"^onnx layer '/att/Dropout' \(Dropout\) at position {dropout}: a "
                                                r"Dropout in training mode"):
        compare_models(graph, graph)


def _by_hand(perm: tuple[int, ...], heads: int = 2, length: int = 4):
    """An attention written by hand on a float (batch, L, 8) input, its heads transposed by ``perm`` from
    (batch, L, heads, d): (0, 2, 1, 3) is the batch-first (batch, heads, L, d) every exporter writes."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    d = E // heads
    weights = {name: rng.uniform(-1, 1, (E, E)).astype(np.float32) for name in ("wq", "wk", "wv", "wo")}
    inverse = tuple(int(i) for i in np.argsort(perm))
    to_keys = (*perm[:2], perm[3], perm[2])
    nodes = [helper.make_node("MatMul", ["x", f"w{r}"], [r]) for r in "qkv"]
    nodes += [helper.make_node("Reshape", [r, "heads"], [f"{r}4"]) for r in "qkv"]
    nodes += [helper.make_node("Transpose", [f"{r}4"], [f"{r}h"], perm=list(to_keys if r == "k" else perm))
              for r in "qkv"]
    nodes += [helper.make_node("MatMul", ["qh", "kh"], ["s"]), helper.make_node("Mul", ["s", "scale"], ["ss"]),
              helper.make_node("Softmax", ["ss"], ["a"], axis=-1), helper.make_node("MatMul", ["a", "vh"], ["o"]),
              helper.make_node("Transpose", ["o"], ["ob"], perm=list(inverse)),
              helper.make_node("Reshape", ["ob", "joined"], ["oj"]), helper.make_node("MatMul", ["oj", "wo"], ["y"])]
    inits = [numpy_helper.from_array(w, name) for name, w in weights.items()] + [
        numpy_helper.from_array(np.array([0, 0, heads, d], np.int64), "heads"),
        numpy_helper.from_array(np.array([0, 0, E], np.int64), "joined"),
        numpy_helper.from_array(np.array(1 / np.sqrt(d), np.float32), "scale")]
    graph = helper.make_graph(nodes, "by hand", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                               ["batch", length, E])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", length, E])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), weights


def test_an_attention_written_by_hand_is_read_and_its_heads_first_variant_refused():
    """Read by roles, not by torch's op sequence: projections without bias, the heads split (batch, heads, L, d),
    the scale after the scores; with the heads first (heads, batch, L, d) the head count is not inferable."""
    from equivalence import ModelNotSupported, assert_equivalent
    from equivalence.core.attention import SelfAttention
    from equivalence.frameworks.onnx_graph import walk

    graph, weights = _by_hand((0, 2, 1, 3))
    (unit,) = walk(graph)
    assert unit.layer_kind == SelfAttention(E, 2, 4, 4) and unit.b is None
    parts = unit.layer_kind.unpack((unit.W, unit.b))
    assert np.array_equal(parts["key"], weights["wk"].reshape(E, 2, 4))
    assert np.array_equal(parts["output"], weights["wo"].reshape(2, 4, E))
    assert_equivalent(graph, graph, max_examples=5)
    with pytest.raises(ModelNotSupported, match=r"^onnx layer 'Softmax_11' \(Softmax\) at position 11: scores of "
                                                r"shape \(2, 5, 4, 4\) \(run on a batch of 5\): the head count is not "
                                                r"inferable"):
        walk(_by_hand((2, 0, 1, 3))[0])


# --- the command ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import torch

    folder = tmp_path_factory.mktemp("onnx_attention")
    (folder / "attnet.py").write_text(ATTNET, encoding="utf-8")
    model = _namespace()["build"]()
    torch.save(model.state_dict(), folder / "state.pt")
    graph = export(model)
    (folder / "model.onnx").write_bytes(graph.SerializeToString())
    at = next(i for i, init in enumerate(graph.graph.initializer) if init.name == "att.out_proj.weight")
    (folder / "wrong.onnx").write_bytes(perturbed(graph, initializer=at, index=9, by=1e-2).SerializeToString())
    return folder


def run(files, monkeypatch, capsys, onnx_file: str) -> tuple[int, str, str]:
    monkeypatch.chdir(files)
    monkeypatch.syspath_prepend(str(files))
    code = main(["compare", str(files / "state.pt"), str(files / onnx_file), "--torch-model", "attnet:build",
                 "--examples", "5"])
    out, err = capsys.readouterr()
    return code, out, err


def test_compare_takes_an_attention_state_dict_and_its_onnx_export(files, monkeypatch, capsys):
    code, out, err = run(files, monkeypatch, capsys, "model.onnx")
    assert code == EXIT_OK and "all 4 layers agree" in out, (out, err)
    assert "= ort '/att/Transpose' (onnx self-attention" in out, out


def test_compare_names_the_attention_of_a_moved_output_weight(files, monkeypatch, capsys):
    code, out, err = run(files, monkeypatch, capsys, "wrong.onnx")
    assert code == EXIT_DISAGREE, (out, err)
    assert f"layer 1 (torch 'att', ort '/att/Transpose'): kernel: 1 / {4 * E * E} elements differ" in out, out


# --- a Keras model through tf2onnx (model.export(format="onnx")) -----------------------------------

@pytest.fixture(scope="module", params=[(2, True), (4, False), (1, True)], ids=lambda p: f"heads{p[0]}-bias{p[1]}")
def keras_export(request, tmp_path_factory):
    pytest.importorskip("tf2onnx", reason="tf2onnx is installed by make converters only")
    import keras

    heads, bias = request.param
    L = keras.layers
    ids_in = keras.Input((LENGTH,), dtype="int32")
    h = L.Embedding(ROWS, E, name="emb")(ids_in)
    a = L.MultiHeadAttention(heads, E // heads, use_bias=bias, name="att")(h, h)
    model = keras.Model(ids_in, L.Dense(3, name="fc")(L.GlobalAveragePooling1D(name="mean")(a)))
    rng = np.random.default_rng(heads)
    model.set_weights([rng.uniform(-1, 1, w.shape).astype("float32") for w in model.get_weights()])
    model(np.zeros((1, LENGTH), "int32"))  # Keras' ONNX export wants a model that was called
    folder = tmp_path_factory.mktemp("keras_attention_onnx")
    model.export(str(folder / "att.onnx"), format="onnx", verbose=False)
    return model, folder, heads


@pytest.mark.converters
def test_a_keras_attention_and_its_tf2onnx_export_agree_layer_by_layer(keras_export):
    """tf2onnx writes MultiHeadAttention as three MatMuls by the (E, heads * d) kernels, (heads, d) bias Adds and
    TensorFlow's einsums as Reshape/Transpose/MatMul ops: the same region reading, its kernels Keras' exactly."""
    from equivalence import assert_equivalent
    from equivalence.core.attention import SelfAttention

    model, folder, heads = keras_export
    result = assert_equivalent(model, folder / "att.onnx", max_examples=20)
    assert [u.layer_kind for u in result.keras_layers] == [u.layer_kind for u in result.torch_layers]
    graph_att, keras_att = result.keras_layers[1], result.torch_layers[1]
    assert graph_att.layer_kind == SelfAttention(E, heads, E // heads, LENGTH)
    assert graph_att.kind.startswith("onnx self-attention")
    assert np.array_equal(graph_att.W, keras_att.W)
    assert_equivalent(model, folder / "att.onnx", x=ids(5))


@pytest.mark.converters
@pytest.mark.parametrize("part", ["query", "key", "value", "output"])
def test_a_moved_kernel_element_in_the_tf2onnx_export_is_named_at_the_attention(keras_export, part):
    from equivalence import compare_models
    from tests.own.test_converters import moved

    model, folder, heads = keras_export
    layer = model.get_layer("att")
    kernel = getattr(layer, f"_{part}_dense").kernel.numpy()
    wrong = moved(folder / "att.onnx", kernel, 5, 1e-3, folder / f"wrong_{part}.onnx")
    message = compare_models(model, wrong, max_examples=3).message()
    assert re.search(rf"layer 1 \(keras 'att', ort '[^']*'\): kernel: 1 / {4 * E * E} elements differ", message), \
        message
