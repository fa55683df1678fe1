"""A BatchNorm a converter folded away (issue 26): ``torch.onnx.export`` in eval mode folds a ``BatchNorm2d`` into the
``Conv`` before it; tf2onnx writes a Keras ``BatchNormalization`` as a ``Mul`` and an ``Add`` of per-channel constants
(its round trip: ``tests/own/test_converters_conv.py``, marker ``converters``; here the same two ops written into a
torch export). The model's side is folded exactly, in float64, and judged against the graph's one layer within the
folded kind's bound (``equivalence.core.folded``); the report says what was matched with what."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import adapter_or_skip
from tests.own.test_onnx_models import perturbed
from tests.own.test_onnx_spatial_models import export


@pytest.fixture(scope="module", autouse=True)
def _ort_and_torch():
    adapter_or_skip("ort", own=True)


SHAPE = (1, 2, 6, 6)


def trained(norm, rng: np.random.Generator, *, mean: float = 2.0, var: float = 3.0) -> None:
    """Statistics and an affine part a trained model has, not the defaults (mean 0, var 1, gamma 1, beta 0)."""
    import torch

    channels = norm.num_features
    with torch.no_grad():
        norm.running_mean.copy_(torch.tensor(rng.uniform(-mean, mean, channels)))
        norm.running_var.copy_(torch.tensor(rng.uniform(0.0, var, channels)))
        norm.weight.copy_(torch.tensor(rng.uniform(-2, 2, channels)))
        norm.bias.copy_(torch.tensor(rng.uniform(-mean, mean, channels)))


def folded_net(seed: int = 0, *, bias: bool = True):
    """Conv2d, BatchNorm2d, ReLU, MaxPool2d, Flatten, Linear in eval mode."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=bias), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(27, 2)).eval()
    trained(model[1], np.random.default_rng(seed))
    return model


def _conv_input(graph, position: int) -> int:
    """The index among the initializers of the first Conv node's input ``position`` (1: weight, 2: bias)."""
    name = next(n for n in graph.graph.node if n.op_type == "Conv").input[position]
    return next(i for i, init in enumerate(graph.graph.initializer) if init.name == name)


def test_a_conv_and_the_batch_norm_the_exporter_folded_into_it_agree_and_the_report_names_the_fold():
    from equivalence import assert_equivalent
    from equivalence.core.folded import FoldedConv
    from equivalence.core.norms import BatchNorm
    from equivalence.core.spatial import Conv

    model = folded_net()
    graph = export(model, SHAPE)
    assert [n.op_type for n in graph.graph.node][:2] == ["Conv", "Relu"], "the exporter should fold the BatchNorm"
    result = assert_equivalent(model, graph, max_examples=20)
    assert [u.layer_kind for u in result.keras_layers] == [u.layer_kind for u in result.torch_layers]
    assert result.torch_layers[0].layer_kind == FoldedConv(model_conv := result.keras_layers[0].layer_kind.conv)
    assert isinstance(model_conv, Conv)
    assert result.matched()[0] == ("layer 0: torch '0+1' (Conv2d+BatchNorm2d; relu: ReLU '2') = ort '/0/Conv' (onnx "
                                   "Conv, the BatchNorm folded into the conv by the converter; relu: Relu node 1)")
    unfolded = assert_equivalent(model, export(model, SHAPE, do_constant_folding=False), max_examples=3)
    assert [type(u.layer_kind) for u in unfolded.keras_layers[:2]] == [Conv, BatchNorm]  # layer by layer as before


def test_a_conv_without_bias_folds_into_one_with_a_bias():
    from equivalence import assert_equivalent

    model = folded_net(3, bias=False)
    result = assert_equivalent(model, export(model, SHAPE), max_examples=5)
    assert result.torch_layers[0].b.shape == (2, 3), "the shift's terms: -mean * s, beta"
    assert result.keras_layers[0].b.shape == (3,)


@pytest.mark.parametrize(("position", "what", "size"), [(1, "kernel", 54), (2, "bias", 3)])
def test_a_moved_folded_weight_is_named_at_its_node(position, what, size):
    from equivalence import compare_models

    model = folded_net()
    graph = export(model, SHAPE)
    result = compare_models(model, perturbed(graph, initializer=_conv_input(graph, position), index=1, by=1e-3),
                            max_examples=3)
    message = result.message()
    assert f"layer 0 (torch '0+1', ort '/0/Conv'): {what}: 1 / {size} elements differ from the torch layers folded " \
           "(beyond the fold's rounding, 8 eps of float32 of the terms each sums)" in message, message
    assert "first divergence, torch vs ort, layer 0: " in message, message


@pytest.mark.parametrize("parameter", ["running_mean", "running_var", "weight", "bias"])
def test_a_wrong_batch_norm_parameter_sits_far_outside_the_folded_bound(parameter):
    """The model's BatchNorm changed by 1% after the export: its fold differs from the file's, named as a weight
    difference, and the values of the pair are orders of magnitude beyond the folded kind's bound."""
    import torch

    from equivalence import compare_models

    model = folded_net()
    graph = export(model, SHAPE)
    with torch.no_grad():
        getattr(model[1], parameter)[1] *= 1.01
    x = np.random.default_rng(0).uniform(-1, 1, (8, 2, 6, 6))
    result = compare_models(model, graph, x=x)
    assert not result.passed
    assert [d.what for d in result.differences if d.what not in ("kernel", "bias values")] == [], result.message()
    assert "layer 0 (torch '0+1', ort '/0/Conv'): " in result.message(), result.message()  # matched, then judged
    cross = max(r.ratio for r in result.results if r.layer == 0 and r.pair == ("torch", "ort"))
    assert cross > 100, cross


@pytest.mark.parametrize("seed", range(8))
def test_drawn_folded_convs_are_within_the_bound_and_the_weights_within_the_fold_s_rounding(seed):
    """Conv2d (1-4 channels in, 1-5 out, kernels 1-3, with and without bias) and a BatchNorm2d whose mean and beta
    reach 100 (their terms cancel in the folded bias), variances from 1e-3, then ReLU, tanh or nothing."""
    import torch
    from torch import nn

    from equivalence import compare_models
    from equivalence.core.folded import fold_tolerance, shift
    from equivalence.core.kinds import LayerWeights

    rng = np.random.default_rng(seed)
    c_in, c_out, kernel = (int(v) for v in (rng.integers(1, 5), rng.integers(1, 6), rng.integers(1, 4)))
    torch.manual_seed(seed)
    act = [nn.ReLU(), nn.Tanh(), nn.Identity()][seed % 3]
    model = nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=seed % 2, bias=bool(seed % 4 < 2)),
                          nn.BatchNorm2d(c_out), act, nn.Flatten()).eval()
    trained(model[1], rng, mean=float(rng.choice([0.1, 10, 100])), var=float(rng.choice([1e-3, 1, 100])))
    result = compare_models(model, export(model, (1, c_in, 6, 6)), max_examples=15)
    assert result.passed, result.message()
    assert result.worst_ratio < 0.5, result.worst_ratio  # measured 0.075 over 30 such nets
    exact, stored = result.torch_layers[0], result.keras_layers[0]
    allowed = fold_tolerance(LayerWeights(exact.W, exact.b), "float32")
    assert np.all(np.abs(stored.W - exact.W) <= allowed.W / 4)  # measured at most 0.12 of it
    assert np.all(np.abs(stored.b - shift(exact.b)) <= allowed.b / 4)


# --- a BatchNorm written as a Mul and an Add of per-channel constants (tf2onnx's form) ---------------------------

def rewritten(graph, op: str, build):
    """A copy of ``graph`` whose one ``op`` node is replaced by the nodes ``build(node, values, epsilon)`` gives with
    the initializers they add (``values``: the graph's initializers by name; ``epsilon``: the node's attribute)."""
    import onnx
    from onnx import numpy_helper

    copy = onnx.ModelProto()
    copy.CopyFrom(graph)
    nodes = list(copy.graph.node)
    index = next(i for i, n in enumerate(nodes) if n.op_type == op)
    values = {init.name: numpy_helper.to_array(init) for init in copy.graph.initializer}
    epsilon = np.float32(next(a.f for a in nodes[index].attribute if a.name == "epsilon"))
    added, replacement = build(nodes[index], values, epsilon)
    copy.graph.initializer.extend([numpy_helper.from_array(value, name) for name, value in added.items()])
    del copy.graph.node[:]
    copy.graph.node.extend(nodes[:index] + replacement + nodes[index + 1:])
    onnx.checker.check_model(copy)
    return copy


def as_mul_add(graph, *, scalar: bool = False):
    """``graph`` with its BatchNormalization node replaced by a ``Mul`` and an ``Add`` of its statistics folded in
    float32 (shaped to broadcast over ONNX's channel axis), as tf2onnx writes a Keras BatchNormalization; with
    ``scalar``, one scale and one shift for every channel."""
    from onnx import helper

    def build(norm, values, epsilon):
        gamma, beta, mean, var = (values[t] for t in norm.input[1:5])
        scale = gamma * (np.float32(1) / np.sqrt(var + epsilon))
        offset = beta - mean * scale
        rank = len(graph.graph.input[0].type.tensor_type.shape.dim)
        shape = (1,) if scalar else (1, scale.size) + (1,) * (rank - 2)
        if scalar:
            scale, offset = scale[:1], offset[:1]
        return {"bn_scale": scale.reshape(shape), "bn_shift": offset.reshape(shape)}, [
            helper.make_node("Mul", [norm.input[0], "bn_scale"], ["bn_scaled"], name="bn/mul"),
            helper.make_node("Add", ["bn_scaled", "bn_shift"], [norm.output[0]], name="bn/add")]

    return rewritten(graph, "BatchNormalization", build)


def dense_norm_net():
    import torch
    from torch import nn

    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).eval()
    trained(model[1], np.random.default_rng(2))
    return model


@pytest.mark.parametrize(("build", "shape", "at"), [(dense_norm_net, (2, 5), 1), (folded_net, SHAPE, 1)])
def test_a_batch_norm_written_as_a_mul_and_an_add_is_read_as_its_scale_and_shift(build, shape, at):
    from equivalence import assert_equivalent
    from equivalence.core.folded import ChannelAffine

    model = build()
    graph = as_mul_add(export(model, shape, do_constant_folding=False))
    result = assert_equivalent(model, graph, max_examples=20)
    assert result.keras_layers[at].layer_kind == result.torch_layers[at].layer_kind == ChannelAffine(
        model[1].num_features)
    activation = "tanh: Tanh node 3" if build is dense_norm_net else "relu: Relu node 3"
    assert result.matched()[at].endswith(f"= ort 'bn/mul' (onnx Mul+Add, the BatchNorm's statistics folded into a "
                                         f"scale and a shift by the converter; {activation})"), result.matched()[at]


def test_a_wrong_statistic_against_a_mul_and_an_add_is_named_and_far_outside():
    import torch

    from equivalence import compare_models

    model = dense_norm_net()
    graph = as_mul_add(export(model, (2, 5), do_constant_folding=False))
    with torch.no_grad():
        model[1].running_var[2] *= 1.1
    result = compare_models(model, graph, x=np.random.default_rng(0).uniform(-1, 1, (8, 5)))
    message = result.message()
    assert "layer 1 (torch '1', ort 'bn/mul'): scale: 1 / 4 elements differ from the torch layers folded" in message
    assert max(r.ratio for r in result.results if r.layer == 1 and r.pair == ("torch", "ort")) > 100, message


def test_a_mul_and_an_add_of_one_value_for_every_channel_is_refused_naming_it():
    from equivalence import ModelNotSupported, compare_models

    model = dense_norm_net()
    graph = as_mul_add(export(model, (2, 5), do_constant_folding=False), scalar=True)
    with pytest.raises(ModelNotSupported, match=r"a Mul and an Add of constants after the Gemm\(transB=1\), but "
                                                r"not one scale and one shift per channel"):
        compare_models(model, graph)


def test_a_folded_value_stored_as_float16_is_within_the_allowance_and_one_ulp_more_is_not():
    """``fold_tolerance(..., stored="float16")``: a converter's folded value (within the fold's rounding of the exact
    one) stored as float16 to nearest stays within the allowance, over magnitudes from float16's subnormals to its
    largest; the neighbour float16 value one spacing further does not (the allowance is no wider than the
    rounding)."""
    from equivalence.core.dtypes import EPSILON
    from equivalence.core.folded import fold_tolerance
    from equivalence.core.kinds import LayerWeights

    rng = np.random.default_rng(0)
    exact = rng.choice([-1, 1], 20000) * 10.0 ** rng.uniform(-8, 4, 20000)
    tol = 8 * EPSILON["float32"] * np.abs(exact)
    folded = exact + rng.uniform(-1, 1, exact.size) * tol  # the converter's own rounding of the fold
    stored = folded.astype(np.float32).astype(np.float16).astype(np.float64)
    allowed = fold_tolerance(LayerWeights(exact, None), "float32", "float16").W
    assert np.all(np.abs(stored - exact) <= allowed)
    further = np.nextafter(stored.astype(np.float16), np.where(stored >= exact, np.inf, -np.inf).astype(np.float16))
    assert np.all(np.abs(further.astype(np.float64) - exact) > allowed)
