"""Residual connections in a LiteRT flatbuffer (issue 26): what ``TFLiteConverter`` writes from a Keras functional
model with ``layers.Add()`` (an ``ADD`` of two computed tensors, its activation fused in it or after it) is read as
the core's ``Residual`` unit, a second branch ``Add()([a(x), b(x)])`` as a ``Branch`` unit, with the kinds, skip
indices and shapes the Keras walker gives (a BatchNorm folded into its conv renumbering the skips), so the pair is
judged layer by layer, the ADD run on the interpreter sliced out with two inputs. A moved kernel element inside a
branch is named at its layer; a product, difference or concatenation of two branches, a broadcast add and three live
branches are refused in one line naming the op and its position."""

from __future__ import annotations

import re

import numpy as np
import pytest

from equivalence.cli import EXIT_OK, main
from equivalence.core.residual import residual_adds, value_shape
from tests.helpers import keras3_only
from tests.own.test_litert_spatial_models import converted_and_saved
from tests.residual_models import drawn_weights, keras_block_models

pytestmark = keras3_only  # the TFLite converter of Keras 3 on TensorFlow


def refused_models() -> dict:
    """What is not a residual Add: a product, a difference, a concatenation of two branches, a broadcast add (a
    branch of one feature), three live branches."""
    import keras

    L = keras.layers

    def two(join, b_width: int = 4):
        x = keras.Input((4,))
        return drawn_weights(keras.Model(x, L.Dense(2, name="head")(join([L.Dense(4, name="a")(x),
                                                                  L.Dense(b_width, name="b")(x)]))))

    x = keras.Input((4,))
    three = drawn_weights(keras.Model(x, L.Add(name="add")([L.Dense(4, name=n)(x) for n in "abc"])))
    return {"multiply": two(L.Multiply(name="mul")), "subtract": two(L.Subtract(name="sub")),
            "concatenate": two(L.Concatenate(name="cat")), "broadcast": two(L.Add(name="add"), 1), "three": three}


KINDS = {
    "dense": ["Dense", "Dense", "Residual", "Dense"],
    "projection": ["Dense", "Dense", "Dense", "Branch", "Dense", "Residual", "Dense"],
    "conv": ["FoldedConv", "Conv", "FoldedConv", "Residual", "Pool", "Flatten", "Dense"],  # BatchNorms folded
    "tokens": ["Embedding", "Dense", "Residual", "SequenceMean", "Dense"],
}


def kinds(units) -> list[str]:
    return [type(u.layer_kind).__name__ for u in units]


def links(units) -> list[tuple]:
    """Every Add and Branch with what it takes, and each unit's output shape per sample."""
    return [residual_adds(units), [value_shape(units, i) for i in range(len(units))]]


@pytest.fixture(scope="module")
def converted(tmp_path_factory, keras_adapter):
    folder = tmp_path_factory.mktemp("litert_residual")
    models = keras_block_models()
    for name, model in models.items():
        converted_and_saved(model, folder, name)
    return models, folder


@pytest.mark.parametrize("name", list(KINDS))
def test_a_keras_residual_model_and_its_tflite_agree_layer_by_layer(converted, name):
    from equivalence import assert_equivalent

    models, folder = converted
    result = assert_equivalent(models[name], folder / f"{name}.tflite", max_examples=10)
    assert kinds(result.keras_layers) == KINDS[name]
    assert kinds(result.torch_layers) == KINDS[name]
    assert links(result.keras_layers) == links(result.torch_layers)


@pytest.mark.parametrize("name", ["dense", "projection", "tokens"])
def test_the_reader_alone_gives_the_keras_walker_s_adds_branches_and_shapes(converted, name):
    from equivalence.frameworks.keras.walk import walk as keras_walk
    from equivalence.frameworks.litert_graph import walk

    models, folder = converted
    assert links(walk(folder / f"{name}.tflite")) == links(keras_walk(models[name]))


def test_the_folded_stem_s_skip_is_renumbered_to_the_keras_walker_s(converted):
    """The file's stem is one CONV_2D (bn0 folded, the ReLU fused): the ADD takes unit 0's output, the Keras walker's
    bn0 is unit 1; matched once the norms are folded."""
    from equivalence.frameworks.keras.walk import walk as keras_walk
    from equivalence.frameworks.litert_graph import walk

    models, folder = converted
    assert residual_adds(walk(folder / "conv.tflite")) == [(3, ("add", 0))]
    assert residual_adds(keras_walk(models["conv"])) == [(5, ("add", 1))]


def test_the_add_unit_adds_the_canonical_operands_with_its_fused_relu(converted):
    from equivalence.frameworks.litert_graph import walk

    add = walk(converted[1] / "dense.tflite")[2]
    x = np.random.default_rng(0).normal(size=(6, 8)).astype("float32")
    assert add.activation == "relu" and add.activation_source == "fused in ADD op 2"
    np.testing.assert_array_equal(add.run(x), np.maximum(x[:, :4] + x[:, 4:], 0))


@pytest.mark.parametrize(("name", "layer", "element", "says"), [
    ("projection", "proj", 7, r"layer 4 \(keras 'proj', litert 'op 4'\): kernel: 1 / 25 elements differ"),
    ("dense", "fc2", 5, r"layer 1 \(keras 'fc2', litert 'op 1'\): kernel: 1 / 24 elements differ"),
])
def test_a_moved_kernel_in_a_branch_of_the_tflite_is_named_at_its_layer(converted, tmp_path, name, layer, element,
                                                                       says):
    from equivalence import compare_models
    from tests.own.test_converters import moved

    models, folder = converted
    model = models[name]
    stored = model.get_layer(layer).kernel.numpy().T  # LiteRT's (out, in)
    wrong = moved(folder / f"{name}.tflite", stored, element, 1e-3, tmp_path / "wrong.tflite")
    message = compare_models(model, wrong, max_examples=3).message()
    assert re.search(says, message), message


@pytest.fixture(scope="module")
def refused(tmp_path_factory, keras_adapter):
    folder = tmp_path_factory.mktemp("litert_residual_refused")
    for name, model in refused_models().items():
        converted_and_saved(model, folder, name)
    return folder


@pytest.mark.parametrize(("name", "says"), [
    ("multiply", r"\(MUL\) at position 2: joins two branches with a MUL"),
    ("subtract", r"\(SUB\) at position 2: joins two branches with a SUB"),
    ("concatenate", r"\(CONCATENATION\) at position 2: joins two branches with a CONCATENATION"),
    ("broadcast", r"\(ADD\) at position 2: a residual Add of shapes \(1,\) \(the branch\) and \(4,\)"),
    ("three", r"at position 0: a branch: its input feeds 3 ops \(more than two live branches\)"),
])
def test_what_is_not_a_residual_add_is_refused_in_one_line_naming_the_op(refused, name, says):
    from equivalence.core.walk import ModelNotSupported
    from equivalence.frameworks.litert_graph import walk

    with pytest.raises(ModelNotSupported) as caught:
        walk(refused / f"{name}.tflite")
    message = str(caught.value)
    assert "\n" not in message and re.search(says, message), message


def test_compare_takes_a_keras_residual_file_and_its_tflite(converted, capsys):
    folder = converted[1]
    code = main(["compare", str(folder / "projection.keras"), str(folder / "projection.tflite"), "--examples", "5"])
    out, err = capsys.readouterr()
    assert code == EXIT_OK and "all 7 layers agree" in out, (out, err)
