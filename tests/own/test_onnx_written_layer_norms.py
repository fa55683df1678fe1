"""A LayerNorm written as ops the way tf2onnx writes a Keras LayerNormalization (``ReduceMean``, ``Neg``, ``Sub``,
``Mul``, ``ReduceMean``, ``Add``, ``Sqrt``, ``Reciprocal``, ``Mul(gamma)``, ``x * k``, ``-mean * k``, ``+ beta``, the
sum): read as one LayerNorm unit, every wire checked. Written here into a torch export so it runs without tf2onnx;
the round trip from Keras is in ``tests/own/test_converters_conv.py`` (marker ``converters``)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import adapter_or_skip
from tests.own.test_onnx_folded_norms import rewritten
from tests.own.test_onnx_spatial_models import export


@pytest.fixture(scope="module", autouse=True)
def _ort_and_torch():
    adapter_or_skip("ort", own=True)


def layer_norm_net():
    import torch
    from torch import nn

    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(5, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 2)).eval()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 2), model[1].bias.uniform_(-1, 1)
    return model


def as_tf2onnx_ops(graph, *, swap_sub: bool = False):
    """``graph`` with its LayerNormalization node replaced by the thirteen ops tf2onnx writes; ``swap_sub``: the
    ``Sub`` computes ``mean - x`` (a wire that is not a LayerNorm's)."""
    from onnx import helper

    def node(op, inputs, name, **attrs):
        return helper.make_node(op, inputs, [name], name=name, **attrs)

    def build(norm, values, epsilon):
        x, out = norm.input[0], norm.output[0]
        added = {"ln_eps": epsilon.reshape(()), "ln_gamma": values[norm.input[1]].reshape(1, -1),
                 "ln_beta": values[norm.input[2]].reshape(1, -1), "ln_axes": np.array([1], np.int64)}
        return added, [
            node("ReduceMean", [x, "ln_axes"], "mean", keepdims=1), node("Neg", ["mean"], "neg"),
            node("Sub", ["mean", x] if swap_sub else [x, "mean"], "sub"), node("Mul", ["sub", "sub"], "square"),
            node("ReduceMean", ["square", "ln_axes"], "var", keepdims=1), node("Add", ["var", "ln_eps"], "add"),
            node("Sqrt", ["add"], "sqrt"), node("Reciprocal", ["sqrt"], "reciprocal"),
            node("Mul", ["reciprocal", "ln_gamma"], "factor"), node("Mul", [x, "factor"], "scaled"),
            node("Mul", ["neg", "factor"], "shifted"), node("Add", ["shifted", "ln_beta"], "offset"),
            helper.make_node("Add", ["scaled", "offset"], [out], name="sum")]

    return rewritten(graph, "LayerNormalization", build)


def test_a_layer_norm_written_as_tf2onnx_s_ops_is_read_as_one_unit():
    from equivalence import assert_equivalent
    from equivalence.core.norms import LayerNorm

    model = layer_norm_net()
    result = assert_equivalent(model, as_tf2onnx_ops(export(model, (2, 5), opset=18)), max_examples=20)
    assert result.keras_layers[1].layer_kind == result.torch_layers[1].layer_kind == LayerNorm(6, 1e-5)
    assert result.matched()[1] == ("layer 1: torch '1' (LayerNorm; tanh: Tanh '2') = ort 'mean' (onnx ReduceMean+Neg+"
                                   "Sub+Mul+ReduceMean+Add+Sqrt+Reciprocal+Mul+Mul+Mul+Add+Add; tanh: Tanh node 14)")


def test_a_wire_that_is_not_a_layer_norm_s_is_refused_naming_the_check():
    from equivalence import ModelNotSupported, compare_models

    model = layer_norm_net()
    with pytest.raises(ModelNotSupported, match=r"the ops of a LayerNorm \(ReduceMean\+Neg\+Sub\+.*\), but wired "
                                                r"otherwise \(check 3 of 13 fails\)"):
        compare_models(model, as_tf2onnx_ops(export(model, (2, 5), opset=18), swap_sub=True))
