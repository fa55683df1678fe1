"""Self-attention in a SavedModel (issue 26, "any pair of model files"): what Keras 3's ``model.export`` writes from
``Input((L,), dtype="int32") -> Embedding -> MultiHeadAttention(heads, key_dim)(h, h) -> GlobalAveragePooling1D ->
Dense``, frozen (each projection a ``BatchMatMulV2`` by the reshaped kernel, a ``Reshape`` and an ``AddV2`` bias; the
scores an ``Einsum``, a scale ``Mul``, the ``Softmax``; the weighted values an ``Einsum``; the output ``Reshape``,
``BatchMatMulV2`` and ``BiasAdd``) is read as one ``SelfAttention`` unit whose weights are the Keras walker's, run in
TensorFlow, and judged layer by layer; a Keras twin with one kernel element moved, exported, is named at the attention
against the untouched model; a mask or cross-attention is refused in one line naming the node."""

from __future__ import annotations

import re

import numpy as np
import pytest

from equivalence.cli import EXIT_OK, main
from tests.helpers import keras3_only
from tests.own.pairs import read_as
from tests.own.test_litert_attention_models import BUILDS, attention_model
from tests.own.test_litert_sequence_models import DIM, LENGTH
from tests.own.test_saved_model_sequence_models import EMBEDDING, export

pytestmark = keras3_only  # model.export of Keras 3 on TensorFlow

NODES = {True: 16, False: 12}
"""The nodes of the attention's region (``Identity`` nodes of the frozen call among them): with biases, the three
``AddV2``s of the query, key and value and the output's ``BiasAdd``."""


@pytest.fixture(scope="module")
def exported(tmp_path_factory, keras_adapter):
    """Each model exported (``name/``) and saved (``name.keras``): ``{name: (model, folder)}``."""
    folder = tmp_path_factory.mktemp("saved_attention")
    out = {}
    for name, build in BUILDS.items():
        model = attention_model(*build)
        export(model, folder / name)
        model.save(folder / f"{name}.keras")
        out[name] = (model, folder)
    return out


@pytest.mark.parametrize("name", list(BUILDS))
def test_a_keras_attention_model_and_its_saved_model_agree_layer_by_layer_with_the_keras_walker_s_kinds(exported,
                                                                                                      name):
    model, folder = exported[name]
    heads, key_dim, bias = BUILDS[name]
    result = read_as(model, folder / name, [EMBEDDING, f"saved_model self-attention ({NODES[bias]} nodes)",
                                            "saved_model Mean", "saved_model MatMul+BiasAdd"])
    keras_unit, graph_unit = result.torch_layers[1], result.keras_layers[1]
    kind = graph_unit.layer_kind
    assert (kind.embed_dim, kind.heads, kind.head_dim, kind.length) == (DIM, heads, key_dim, LENGTH)
    assert (graph_unit.in_shape, graph_unit.out_shape) == ((LENGTH, DIM), (LENGTH, DIM))
    assert np.array_equal(graph_unit.W, keras_unit.W)
    assert (graph_unit.b is None) == (not bias) and (not bias or np.array_equal(graph_unit.b, keras_unit.b))
    assert re.fullmatch(r"layer 1: keras 'mha' \(MultiHeadAttention; linear: none\) = keras_graph '\S+/mha[_\d]*/"
                        rf"query[_\d]*/MatMul' \(saved_model self-attention \({NODES[bias]} nodes\); linear: none\)",
                        result.matched()[1]), result.matched()[1]


@pytest.mark.parametrize("part", ["query", "key", "value", "output"])
def test_a_moved_kernel_element_of_a_keras_twin_s_export_is_named_at_the_attention(exported, tmp_path, part):
    """The model's twin with element 5 of one projection's kernel moved, exported: the model against that SavedModel
    differs at that element's canonical index."""
    from equivalence import compare_models

    model, _ = exported["heads4_key3"]
    heads, key_dim, bias = BUILDS["heads4_key3"]
    size = DIM * heads * key_dim
    twin = attention_model(heads, key_dim, bias)
    variable = getattr(twin.get_layer("mha"), f"_{part}_dense").kernel
    values = variable.numpy()
    values.reshape(-1)[5] += 1e-2
    variable.assign(values)
    index = ["query", "key", "value", "output"].index(part) * size + 5
    message = compare_models(model, export(twin, tmp_path / "wrong"), max_examples=3).message()
    assert re.search(rf"layer 1 \(keras 'mha', keras_graph '[^']+'\): kernel: 1 / {4 * size} elements differ from the "
                     rf"keras kernel; greatest abs diff 0.01 at index \({index},\)", message), message


@pytest.mark.parametrize(("case", "says"), [
    ("causal", r"'\S+/SelectV2' \(SelectV2\) at position \d+: a SelectV2 on the attention scores before the Softmax "
               r"\(use_causal_mask, an attention_mask\): masked attention is not judged"),
    ("cross", r"'\S+/key[_\d]*/MatMul' \(BatchMatMulV2\) at position \d+: projects the keys from another tensor than "
              r"the queries': cross-attention is not judged"),
])
def test_a_masked_or_cross_attention_is_refused_in_one_line_naming_the_node(keras_adapter, tmp_path, case, says):
    import keras

    from equivalence import ModelNotSupported
    from equivalence.frameworks.keras.saved_model_graph import walk

    calls = {"causal": lambda mha, h: mha(h, h, use_causal_mask=True),
             "cross": lambda mha, h: mha(h, keras.layers.Dense(DIM)(h))}
    saved = export(attention_model(2, 4, True, calls[case]), tmp_path / case)
    with pytest.raises(ModelNotSupported, match=says) as refused:
        walk(saved)
    assert "\n" not in str(refused.value)


def test_compare_takes_a_keras_attention_model_file_and_its_saved_model(exported, capsys):
    _, folder = exported["heads2"]
    code = main(["compare", str(folder / "heads2.keras"), str(folder / "heads2"), "--examples", "5"])
    out, err = capsys.readouterr()
    assert code == EXIT_OK and "all 4 layers agree" in out, (out, err)
    assert "(saved_model self-attention (16 nodes); linear: none)" in out, out


def test_a_post_norm_transformer_block_and_its_saved_model_agree_layer_by_layer(keras_adapter, tmp_path):
    """``Embedding -> LayerNorm(h + att(h)) -> LayerNorm(h + Dense(h)) -> mean -> Dense``: both residual Adds (the
    attention's region standing for one branch of its fork) and the norms read as the Keras walker's nine units."""
    import keras

    from equivalence import compare_models
    from tests.own.test_litert_sequence_models import ids

    inputs = keras.Input((LENGTH,), dtype="int32")
    h = keras.layers.Embedding(20, DIM, name="emb")(inputs)
    h = keras.layers.LayerNormalization(name="ln1")(keras.layers.Add(name="add1")(
        [h, keras.layers.MultiHeadAttention(2, 4, name="mha")(h, h)]))
    h = keras.layers.LayerNormalization(name="ln2")(keras.layers.Add(name="add2")(
        [h, keras.layers.Dense(DIM, activation="relu", name="ff")(h)]))
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(keras.layers.GlobalAveragePooling1D(name="mean")(h)))
    export(model, tmp_path / "block")
    result = compare_models(model, tmp_path / "block", x=ids(3))
    assert result.passed, result.message()
    kinds = [type(u.layer_kind).__name__ for u in result.keras_layers]
    assert kinds == [type(u.layer_kind).__name__ for u in result.torch_layers] == [
        "Embedding", "SelfAttention", "Residual", "LayerNorm", "Dense", "Residual", "LayerNorm", "SequenceMean",
        "Dense"], kinds
    assert [u.layer_kind.skip for u in result.keras_layers if type(u.layer_kind).__name__ == "Residual"] == [0, 3]
