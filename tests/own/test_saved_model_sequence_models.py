"""Token sequence models in a SavedModel (issue 26, "any pair of model files"): what Keras 3's ``model.export`` writes
from ``Input((L,), dtype="int32") -> Embedding -> Dense per token -> LayerNormalization -> GlobalAveragePooling1D ->
Dense``, frozen (the id wrap and ``GatherV2``, TensorFlow's ``Tensordot``: ``Transpose``, ``Reshape``, ``MatMul``,
``Reshape``, the LayerNorm's ops on a 3-D tensor, ``Mean`` over axis 1), read into the core's kinds with the Keras
walker's kinds and shapes, each unit run in TensorFlow fed int ids, and judged layer by layer; a moved table row or
kernel element is named at its layer; what is not read on a sequence is refused in one line naming the node."""

from __future__ import annotations

import re

import numpy as np
import pytest

from equivalence.cli import EXIT_OK, main
from tests.helpers import keras3_only
from tests.own.pairs import read_as
from tests.own.test_litert_sequence_models import DIM, LENGTH, _refused, ids, keras_token_model, torch_token_model

pytestmark = keras3_only  # model.export of Keras 3 on TensorFlow

EMBEDDING = "saved_model Less+AddV2+SelectV2+GatherV2"
"""Keras' wrap of negative ids (``ids < 0 ? ids + rows : ids``), read with the gather."""
TENSORDOT = "saved_model Transpose+Reshape+MatMul+Reshape+BiasAdd"
LAYER_NORM = "saved_model Mean+StopGradient+SquaredDifference+Mean+AddV2+Rsqrt+Mul+Mul+Neg+Mul+AddV2+AddV2"
UNITS = {
    "full": [EMBEDDING, TENSORDOT, LAYER_NORM, "saved_model Mean", "saved_model MatMul+BiasAdd"],
    "no_norm": [EMBEDDING, TENSORDOT, "saved_model Mean", "saved_model MatMul+BiasAdd"],
    "no_dense": [EMBEDDING, LAYER_NORM, "saved_model Mean", "saved_model MatMul+BiasAdd"],
}
BUILDS = {"full": {}, "no_norm": {"norm": False, "activation": "tanh"}, "no_dense": {"dense": False}}


def export(model, folder):
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("SavedModel export needs Keras on TensorFlow")
    model.export(str(folder), verbose=False)
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory, keras_adapter):
    """Each Keras model exported (``name/``) and saved (``name.keras``): ``{name: (model, folder)}``."""
    folder = tmp_path_factory.mktemp("saved_sequence")
    out = {}
    for name, options in BUILDS.items():
        model = keras_token_model(**options)
        export(model, folder / name)
        model.save(folder / f"{name}.keras")
        out[name] = (model, folder)
    return out


@pytest.mark.parametrize("name", list(BUILDS))
def test_a_keras_token_model_and_its_saved_model_agree_layer_by_layer_with_the_keras_walker_s_kinds(exported, name):
    from equivalence import assert_equivalent

    model, folder = exported[name]
    result = read_as(model, folder / name, UNITS[name])
    assert [u.shape for u in result.keras_layers] == [u.shape for u in result.torch_layers]
    shapes = [(u.in_shape, u.out_shape) for u in result.keras_layers[:-1]]  # the last, a dense chain's: its widths
    assert shapes == [(u.in_shape, u.out_shape) for u in result.torch_layers[:-1]], shapes
    assert shapes[0] == ((LENGTH,), (LENGTH, DIM))
    first = result.matched()[0]
    assert re.fullmatch(rf"layer 0: keras 'emb' \(Embedding; linear: none\) = keras_graph '\S+/emb[_\d]*/GatherV2' "
                        rf"\({re.escape(EMBEDDING)}; linear: none\)", first), first
    assert_equivalent(model, folder / name, x=ids(len(name)))  # given int ids


def test_the_dense_per_token_reads_the_frozen_kernel_and_its_relu(exported):
    from equivalence import compare_models

    model, folder = exported["full"]
    result = compare_models(model, folder / "full", x=ids(1))
    keras_tok, graph_tok = result.torch_layers[1], result.keras_layers[1]
    assert np.array_equal(graph_tok.W, keras_tok.W) and np.array_equal(graph_tok.b, keras_tok.b)
    assert graph_tok.activation == "relu" and graph_tok.activation_source.startswith("Relu '")
    assert (graph_tok.in_shape, graph_tok.out_shape) == ((LENGTH, DIM), (LENGTH, 5))


@pytest.mark.parametrize(("layer", "element", "says"), [
    ("emb", 8 * 4 + 1, r"layer 0 \(keras 'emb', keras_graph '\S+/emb[_\d]*/GatherV2'\): kernel: 1 / 160 elements "
                       r"differ"),
    ("tok", 7, r"layer 1 \(keras 'tok', keras_graph '\S+/tok[_\d]*/Tensordot/transpose'\): kernel: 1 / 40 elements "
               r"differ"),
])
def test_a_moved_table_row_or_token_kernel_element_is_named_at_its_layer(exported, tmp_path, layer, element, says):
    """The model's twin with one element moved, exported: the model against that SavedModel."""
    from equivalence import compare_models

    model, _ = exported["full"]
    twin = keras_token_model()
    variable = twin.get_layer(layer).embeddings if layer == "emb" else twin.get_layer(layer).kernel
    values = variable.numpy()
    values.reshape(-1)[element] += 1e-2
    variable.assign(values)
    message = compare_models(model, export(twin, tmp_path / "wrong"), max_examples=3).message()
    assert re.search(says, message), message


def test_the_torch_twin_of_an_exported_keras_token_model_agrees_with_its_saved_model(exported, torch_adapter):
    from equivalence import assert_equivalent, port_weights

    model, folder = exported["full"]
    twin = torch_token_model()
    port_weights(model, twin)
    result = assert_equivalent(twin, folder / "full", max_examples=10)
    assert result.labels == ("torch", "keras_graph")
    assert [u.layer_kind for u in result.keras_layers] == [u.layer_kind for u in result.torch_layers]


@pytest.mark.parametrize(("case", "says"), [
    ("lstm", r"\(TensorListFromTensor\) at position \d+: TensorListFromTensor is a tensor list \(a recurrent "
             r"layer's steps: LSTM, GRU, RNN\): the suite does not read recurrent or attention layers from converted "
             r"graphs yet"),
    ("causal_attention", r"'\S+/SelectV2' \(SelectV2\) at position \d+: a SelectV2 on the attention scores before "
                         r"the Softmax \(use_causal_mask, an attention_mask\): masked attention is not judged"),
    ("permute", r"'\S+/permute[_\d]*/transpose' \(Transpose\) at position \d+: a Transpose of the \(batch, 6, 8\) "
                r"token sequence: the suite reads an Embedding \(GatherV2\), a dense layer token by token"),
    ("conv1d", r"\(ExpandDims\) at position \d+: an ExpandDims of the \(batch, 6, 8\) token sequence: .*convolutions "
               r"over the tokens are not read"),
    ("free_length", r"'\S+/emb[_\d]*/GatherV2' \(GatherV2\) at position \d+: token ids of shape \[-1, -1\]: the suite "
                    r"judges ids \(batch, L\) with the sequence length L fixed"),
    ("mask_zero", r"\(NotEqual\) at position \d+: a NotEqual of the token ids, but not the lookup of an Embedding .*a "
                  r"mask of the ids \(Keras' mask_zero=True, whose masked mean the export writes\) is not read"),
])
def test_what_the_reader_does_not_read_on_a_sequence_is_refused_in_one_line_naming_the_node(exported, tmp_path,
                                                                                           case, says):
    from equivalence import ModelNotSupported
    from equivalence.frameworks.keras.saved_model_graph import walk

    saved = export(_refused(case), tmp_path / case)
    with pytest.raises(ModelNotSupported, match=says) as refused:
        walk(saved)
    assert "\n" not in str(refused.value)


def test_compare_takes_a_keras_token_model_file_and_its_saved_model(exported, capsys):
    _, folder = exported["full"]
    code = main(["compare", str(folder / "full.keras"), str(folder / "full"), "--examples", "5"])
    out, err = capsys.readouterr()
    assert code == EXIT_OK and "all 5 layers agree" in out, (out, err)
    assert f"({TENSORDOT}; relu: Relu '" in out, out
