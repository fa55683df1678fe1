"""Residual connections in a user's own pair of models: a faithful port of a residual MLP passes layer by layer in
every dtype (the Add judged like any layer); a port without the skip connection, or whose Add joins other branches,
is named "residual" before any value; a broken framework Add turns the suite red at its layer; what is not a
residual x + f(x) is refused in one line."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import settings

from tests.helpers import BFLOAT16, assert_ported_pairs_agree, compare_files_through_the_cli
from tests.own.pairs import assert_red_only_in
from tests.residual_models import (
    ResidualArch,
    keras_residual_model,
    residual_archs,
    torch_residual_model,
)

pytestmark = pytest.mark.usefixtures("torch_adapter", "keras_adapter", "keras_walker_or_skip")  # both, or a skip

RESIDUAL_EXAMPLES = max(5, settings.default.max_examples // 10)
"""Architectures per dtype: each builds two models."""

ARCH = ResidualArch(n_in=4, stem=None, hidden=6, blocks=1, activation="relu", after="relu", norm=False, n_out=3,
                    dtype="float32", seed=0)
"""One residual block on the input: fc1 (0), fc2 (1), the Add (2), the head (3)."""


def _ported(arch: ResidualArch):
    from equivalence import port_weights

    t, k = torch_residual_model(arch), keras_residual_model(arch)
    port_weights(t, k)
    return t, k


def _input(arch: ResidualArch, batch: int = 8, scale: float = 3.0) -> np.ndarray:
    return np.random.default_rng(arch.seed).uniform(-scale, scale, (batch, arch.n_in))


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", BFLOAT16])
def test_a_ported_residual_mlp_agrees_layer_by_layer(dtype):
    """One or two blocks, skip from the input or from a stem (or a projection of it: two computed branches), a
    LayerNorm in the branch or not, an activation after the sum or not, a functional Keras port (layers.Add) or a
    subclassed one (x + f(x))."""
    from equivalence.core.residual import INPUT

    def check(arch: ResidualArch, t, k, result) -> None:
        kinds = [u.layer_kind.name for u in result.torch_layers]
        assert kinds == [u.layer_kind.name for u in result.keras_layers]
        skips = [[u.layer_kind.skip for u in units if u.layer_kind.name == "add"]
                 for units in (result.torch_layers, result.keras_layers)]
        assert skips[0] == skips[1] and len(skips[0]) == arch.blocks
        branches = [i for i, u in enumerate(result.torch_layers) if u.layer_kind.name == "branch"]
        assert len(branches) == arch.blocks * arch.projection
        sources = [result.torch_layers[i].layer_kind.source for i in branches] if arch.projection else skips[0]
        assert sources[0] == (INPUT if arch.stem is None else 0)
        if arch.projection:  # the Add takes the first branch's end, the unit before the second branch
            assert skips[0] == [i - 1 for i in branches]
        assert [u.activation for u in result.torch_layers if u.layer_kind.name == "add"] == [arch.after] * arch.blocks
        counts = sum(u.W.size + (0 if u.b is None else u.b.size) for u in result.torch_layers)
        assert counts == sum(p.numel() for p in t.parameters()) == k.count_params()

    assert_ported_pairs_agree(residual_archs(dtype=dtype), ported=_ported, inputs=_input,
                              max_examples=RESIDUAL_EXAMPLES, then=check)


def test_drawn_inputs_pass_a_residual_port_and_the_table_names_the_add():
    from equivalence import assert_equivalent

    t, k = _ported(replace(ARCH, blocks=2, stem=5, norm=True))
    result = assert_equivalent(t, k, max_examples=10)
    names = [u.name for u in result.torch_layers]
    assert names.count("add") == 1 and "add_1" in names, names
    assert re.search(r"\| 4 \| add \| add\w* \| 10->5 \| relu \|", result.table()), result.table()


def test_a_conv_residual_block_agrees_over_drawn_inputs():
    """The Add on a channels-last spatial tensor: torch adds N, C, H, W, the unit hands it channels-last."""
    import keras
    import torch
    from torch import nn

    from equivalence import assert_equivalent, port_weights

    class ConvBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2, self.fc = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 2, 3), nn.Linear(2 * 4 * 4, 2)

        def forward(self, x):
            return self.fc(torch.flatten(self.c2(torch.relu(x + self.c1(x))), 1))

    torch.manual_seed(0)
    L = keras.layers
    x = keras.Input((6, 6, 3))
    h = L.ReLU()(L.Add()([x, L.Conv2D(3, 3, padding="same")(x)]))
    k = keras.Model(x, L.Dense(2)(L.Flatten()(L.Conv2D(2, 3)(h))))
    t = ConvBlock()
    port_weights(t, k)
    result = assert_equivalent(t, k, max_examples=10)
    assert [u.layer_kind.name for u in result.keras_layers] == ["conv", "add", "conv", "flatten", "dense"]
    assert result.torch_layers[1].layer_kind.features == (6, 6, 3) and result.torch_layers[1].activation == "relu"


@pytest.mark.parametrize("form", ["module", "torch.export program"])
def test_an_in_place_skip_add_agrees_as_a_module_and_as_an_exported_program(form):
    """``out += identity`` (ResNet's style): fx records an add, ``torch.export`` an in-place ``aten.add_``, which
    the unit runs out of place (in place it would write into its operand)."""
    import torch
    from torch import nn

    from equivalence import compare_models

    class InPlace(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2, self.head = nn.Linear(4, 6), nn.Linear(6, 4), nn.Linear(4, 3)

        def forward(self, x):
            identity = x
            out = self.fc2(torch.relu(self.fc1(x)))
            out += identity
            return self.head(torch.relu(out))

    t, k = _ported(ARCH)
    model = InPlace().eval()
    model.load_state_dict({name.replace("blocks.0.", ""): value for name, value in t.state_dict().items()})
    if form == "torch.export program":
        model = torch.export.export(model, (torch.zeros(2, 4),))
    x = _input(ARCH)
    before = x.copy()
    result = compare_models(model, k, x=x)
    assert result.passed, result.message()
    assert [u.layer_kind.name for u in result.torch_layers] == ["dense", "dense", "add", "dense"]
    assert np.array_equal(x, before)


def _differences(t, k):
    from equivalence.own import structural_differences, walk_pair

    return structural_differences(*walk_pair(t, k))


@pytest.mark.parametrize("missing_from", ["keras", "torch"])
def test_a_port_without_the_skip_connection_is_named_residual_before_any_value(missing_from):
    from equivalence import compare_models

    t = torch_residual_model(replace(ARCH, skip=missing_from != "torch"))
    k = keras_residual_model(replace(ARCH, skip=missing_from != "keras"))
    residual = [d for d in _differences(t, k) if d.what == "residual"]
    assert [d.layer for d in residual] == [2], [d.message for d in _differences(t, k)]
    assert f"the skip connection (x + f(x)) or a branch is missing from {missing_from}" in residual[0].message
    has = "torch" if missing_from == "keras" else "keras"
    assert f"layer 2 ({has} 'add" in residual[0].message and f"{has} adds the model's input" in residual[0].message
    assert not compare_models(t, k, x=_input(ARCH)).passed


def test_an_add_joining_other_branches_is_named_residual():
    """torch adds the stem's output, the Keras port the model's input (both 4 wide): same layers, same weights,
    another function."""
    import keras

    from equivalence import compare_models, port_weights

    arch = replace(ARCH, stem=4)
    t = torch_residual_model(arch)
    L = keras.layers
    x = keras.Input((4,))
    stem = L.Dense(4, activation="tanh", name="stem")(x)
    h = L.Dense(4)(L.Activation("relu")(L.Dense(6)(stem)))
    k = keras.Model(x, L.Dense(3)(L.ReLU()(L.Add(name="wrong_add")([x, h]))))
    port_weights(t, k)
    result = compare_models(t, k, x=_input(arch))
    residual = [d for d in result.differences if d.what == "residual"]
    assert [d.layer for d in residual] == [3], result.message()
    assert "keras adds the model's input, but torch adds layer 0's output ('stem') (the Add joins different " \
        "branches)" in residual[0].message
    assert not result.passed  # each Add, fed the same operands layer by layer, adds alike: the structure names it


@pytest.mark.parametrize("missing_from", ["keras", "torch"])
def test_a_port_without_the_shortcut_projection_is_named_residual(missing_from):
    """a(x) + b(x) in one model, x + a(x) in the other: the second branch (b, a Linear on the shortcut) is named."""
    t = torch_residual_model(replace(ARCH, projection=missing_from != "torch"))
    k = keras_residual_model(replace(ARCH, projection=missing_from != "keras"))
    residual = [d for d in _differences(t, k) if d.what == "residual"]
    has = "torch" if missing_from == "keras" else "keras"
    assert residual[0].layer == 2, [d.message for d in residual]
    assert f"{has} starts a second branch from the model's input" in residual[0].message
    assert f"{missing_from} adds the model's input" in residual[0].message
    assert f"(a(x) + b(x) against x + a(x): the shortcut's layers are missing from {missing_from})" \
        in residual[0].message


@pytest.mark.parametrize(("framework", "projection"), [("torch", False), ("keras", False), ("torch", True),
                                                      ("keras", True)])
def test_a_broken_framework_add_turns_the_suite_red_naming_the_layer(framework, projection, monkeypatch):
    """The meta test: the framework's add drops one operand (torch's Tensor.__add__ keeps its first, Keras' Add
    layer its second), in x + f(x) (the Add is layer 2) and in a(x) + b(x) (layer 4, after the branch and proj)."""
    from equivalence import compare_models

    t, k = _ported(replace(ARCH, projection=projection))
    if framework == "torch":
        import torch

        monkeypatch.setattr(torch.Tensor, "__add__", lambda self, other: self)
    else:
        import keras

        monkeypatch.setattr(keras.layers.Add, "call", lambda self, inputs: inputs[1])
    result = compare_models(t, k, x=_input(ARCH))
    layer = 4 if projection else 2
    assert_red_only_in(result, framework, layer)
    assert "'add'" in result.message() and f"layer {layer}" in result.message()
    worst = max(r.ratio for r in result.failures if r.pair_name == f"{framework} vs reference")
    assert worst > 1e4, worst


FACTORY = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(4, 8), nn.Linear(8, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(torch.relu(x + self.fc2(torch.tanh(self.fc1(x)))))


def build():
    torch.manual_seed(0)
    return Block()
'''


def test_the_cli_compares_a_saved_residual_pair(tmp_path, monkeypatch, capsys):
    import keras

    def port():
        L = keras.layers
        x = keras.Input((4,))
        h = L.Dense(4)(L.Dense(8, activation="tanh")(x))
        return keras.Model(x, L.Dense(2)(L.Activation("relu")(L.Add()([x, h]))))

    code, out = compare_files_through_the_cli(tmp_path, monkeypatch, capsys, factory=FACTORY, module="residual_block",
                                              port=port())
    assert code == 0, out
    assert "all 4 layers agree" in out, out


# --- refused: what is not a residual x + f(x), in one line naming the layer ---------------------------------

def _torch_refused():
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, forward) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 4)
            self.body = forward

        def forward(self, x):
            return self.body(self, x)

    return {
        "three branches": (Net(lambda m, x: m.fc1(x) + m.fc2(x) + x), "'fc1' (Linear) at position 0: a branch",
                           "feeds 3 layers"),
        "before its activation": (Net(lambda m, x: (lambda h: h + m.fc2(torch.relu(h)))(m.fc1(x))),
                                  "'relu' (torch.relu) at position 1", "takes the output of 'fc1' before this relu"),
        "alpha": (Net(lambda m, x: torch.add(x, m.fc1(x), alpha=2)), "'add' (torch.add) at position 1",
                  "alpha=2"),
        "slice": (Net(lambda m, x: x[:, :1] + m.fc1(x)), "'getitem' (getitem) at position 0",
                  "not a layer or an activation"),
        "x + x": (Net(lambda m, x: (lambda h: h + h)(m.fc1(x))), "'add' (add) at position 1", "x + x"),
    }


def test_a_torch_add_of_other_shapes_is_refused_naming_the_broadcast():
    from torch import nn

    from equivalence import ModelNotSupported
    from equivalence.frameworks.torch.walk import walk

    class Wider(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 1)

        def forward(self, x):
            return x + self.fc(x)

    with pytest.raises(ModelNotSupported, match=r"'add' \(add\) at position 1: a residual Add of shapes \(1,\) "
                                                r"\(the branch\) and \(4,\) \(the model's input\).*not a broadcast"):
        walk(Wider())


def _keras_refused():
    import keras

    L = keras.layers
    x = keras.Input((4,))
    h = L.Dense(4, name="h")(x)
    return {
        "a product": (keras.Model(x, L.Multiply(name="gate")([L.Dense(4)(x), L.Dense(4)(x)])),
                      "'gate' (Multiply) at position 1", "a branch: it takes 2 tensors"),
        "three tensors": (keras.Model(x, L.Add(name="add3")([x, h, L.Dense(4)(h)])), "'add3' (Add)",
                          "an Add of 3 tensors"),
        "before its activation": (keras.Model(x, L.Add(name="pre")([h, L.Dense(4)(L.ReLU()(h))])),
                                  "'pre' (Add) at position 3", "takes the output of 'h' before its activation relu"),
        "concatenation": (keras.Model(x, L.Concatenate(name="cat")([x, h])), "'cat' (Concatenate) at position 0",
                          "concatenations are not judged; a residual Add of the chain's output and an earlier one is"),
    }


@pytest.mark.parametrize(("framework", "name"), [
    *(("torch", name) for name in ("three branches", "before its activation", "alpha", "slice", "x + x")),
    *(("keras", name) for name in ("a product", "three tensors", "before its activation", "concatenation"))])
def test_what_is_not_a_residual_is_refused_in_one_line(framework, name):
    from equivalence import ModelNotSupported
    from equivalence.own import walk

    model, where, why = (_torch_refused if framework == "torch" else _keras_refused)()[name]
    with pytest.raises(ModelNotSupported) as info:
        walk(model, framework)
    assert str(info.value).startswith(f"{framework} layer {where}"), str(info.value)
    assert why in str(info.value) and "\n" not in str(info.value)
