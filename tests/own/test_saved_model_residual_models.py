"""Residual connections in a SavedModel (issue 26): what Keras 3's ``model.export`` writes for ``layers.Add()`` (an
``AddV2`` of two computed tensors, the activation's op after it) is read as the core's ``Residual`` unit, a second
branch as a ``Branch`` unit, with the Keras walker's kinds, skip indices and shapes, the Add run in TensorFlow pruned
into a graph of two placeholders. A moved kernel element in a branch (a Keras twin, exported) is named at its layer;
a product, difference or concatenation of two branches, a broadcast add and three live branches are refused in one
line naming the node and its position."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.helpers import keras3_only
from tests.own.test_litert_residual_models import KINDS, kinds, links, refused_models
from tests.residual_models import keras_block_models

pytestmark = keras3_only  # model.export of Keras 3 on TensorFlow

SAVED_KINDS = {**KINDS, "conv": ["Conv", "BatchNorm", "Conv", "Conv", "BatchNorm", "Residual", "Pool", "Flatten",
                                 "Dense"]}
"""The export keeps the BatchNorms as ops: nothing folded."""


def _export(model, path):
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("SavedModel export needs Keras on TensorFlow")
    model.export(str(path), verbose=False)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory, keras_adapter):
    folder = tmp_path_factory.mktemp("saved_residual")
    models = keras_block_models()
    for name, model in models.items():
        _export(model, folder / name)
    return models, folder


@pytest.mark.parametrize("name", list(SAVED_KINDS))
def test_a_keras_residual_model_and_its_saved_model_agree_layer_by_layer(exported, name):
    from equivalence import assert_equivalent
    from equivalence.frameworks.keras.walk import walk as keras_walk

    models, folder = exported
    result = assert_equivalent(models[name], folder / name, max_examples=10)
    assert kinds(result.keras_layers) == SAVED_KINDS[name]
    assert kinds(result.torch_layers) == SAVED_KINDS[name]
    assert links(result.torch_layers) == links(keras_walk(models[name]))


def test_the_add_unit_adds_the_canonical_operands_and_its_relu(exported):
    from equivalence.frameworks.keras.saved_model_graph import walk

    add = walk(exported[1] / "dense")[2]
    x = np.random.default_rng(0).normal(size=(6, 8)).astype("float32")
    assert add.activation == "relu" and add.kind == "saved_model AddV2"
    np.testing.assert_array_equal(add.run(x), np.maximum(x[:, :4] + x[:, 4:], 0))


@pytest.mark.parametrize(("name", "layer", "at"), [("projection", "proj", 4), ("conv", "c1", 2)])
def test_a_moved_kernel_in_a_branch_is_named_at_its_layer(exported, tmp_path, name, layer, at):
    import keras

    from equivalence import compare_models

    models, _ = exported
    model = models[name]
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    kernel = twin.get_layer(layer).kernel
    moved = kernel.numpy().reshape(-1)
    moved[7] += 1e-3
    kernel.assign(moved.reshape(kernel.shape))
    message = compare_models(model, _export(twin, tmp_path / "twin"), max_examples=3).message()
    assert re.search(rf"layer {at} \(keras '{layer}', keras_graph '[^']*{layer}_1/\w+'\): kernel: 1 / \d+ elements "
                     "differ", message), message


@pytest.fixture(scope="module")
def refused(tmp_path_factory, keras_adapter):
    folder = tmp_path_factory.mktemp("saved_residual_refused")
    for name, model in refused_models().items():
        _export(model, folder / name)
    return folder


@pytest.mark.parametrize(("name", "says"), [
    ("multiply", r"\(Mul\) at position \d+: joins two branches with a Mul"),
    ("subtract", r"\(Sub\) at position \d+: joins two branches with a Sub"),
    ("concatenate", r"\(ConcatV2\) at position \d+: joins two branches with a ConcatV2"),
    ("broadcast", r"\(AddV2\) at position \d+: a residual Add of shapes \(1,\) \(the branch\) and \(4,\)"),
    ("three", r"at position \d+: a branch: its input feeds 3 ops \(more than two live branches\)"),
])
def test_what_is_not_a_residual_add_is_refused_in_one_line_naming_the_node(refused, name, says):
    from equivalence.core.walk import ModelNotSupported
    from equivalence.frameworks.keras.saved_model_graph import walk

    with pytest.raises(ModelNotSupported) as caught:
        walk(refused / name)
    message = str(caught.value)
    assert "\n" not in message and re.search(says, message), message
