"""Walk a user's torch model into dense units, in execution order, reading and never writing it.

The order comes from the model's own graph: ``torch.fx.symbolic_trace`` for an ``nn.Module``
(``nn.Sequential``, nested or not, ``nn.ModuleList`` loops, a custom ``forward`` calling
modules or functional ops such as ``torch.relu``, ``F.gelu``, ``torch.sigmoid``), or the
graph of a ``torch.export`` program (aten ops). Registration order never matters.
Dropout, Identity, Flatten and ``view``/``reshape`` are skipped (inference, 2-D inputs);
anything else that is not a Linear or a known activation is refused with its name,
type and position.

Given the input's canonical shape (channels-last, one sample: ``input_shape``), Conv1d, Conv2d, MaxPool1d/2d,
AvgPool1d/2d and a Flatten of their output are layers too (``equivalence.core.spatial``): each unit runs on
channels-last numpy, transposing to torch's N,C,... and back, its kernel transposed to ``(*kernel, in, out)``,
and the Linear after a Flatten has its rows permuted from torch's C,H,W order to the canonical H,W,C.
Embedding, MultiheadAttention (self-attention) and a mean over the tokens are units of the sequence kinds
(``equivalence.frameworks.torch.sequence``). A residual ``x + f(x)`` is an Add unit after the units of ``f``, and
``a(x) + b(x)`` a branch unit between their units (``equivalence.frameworks.torch.residual``); any other branch is
refused. onnx2torch's modules around those (the Transposes and Reshape tf2onnx writes around convs, a padded conv,
its Add) are read by ``equivalence.frameworks.torch.onnx2torch``, its other modules refused naming them.
"""

from __future__ import annotations

import logging
import operator
import pickle
import weakref
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from equivalence.core.activations import activation_name
from equivalence.core.dtypes import numpy_dtype
from equivalence.core.embedding import SequenceMean
from equivalence.core.norms import BatchNorm, LayerNorm
from equivalence.core.residual import Residual, branch_unit, check_residuals
from equivalence.core.spatial import Conv, Flatten, Pool, flatten_permutation
from equivalence.core.tokens import is_sequence
from equivalence.core.walk import (
    DenseUnit,
    ModelNotSupported,
    NotJudged,
    Refused,
    check_chain,
    in_flatten_order,
    judged_activation,
    looked_up,
)
from equivalence.frameworks.torch import TORCH_DTYPES, converted, onnx2torch, to_numpy, to_tensor
from equivalence.frameworks.torch.recurrent import is_recurrent, recurrent_of, recurrent_unit, select, selected
from equivalence.frameworks.torch.residual import (
    check_untapped,
    fork,
    is_add,
    residual_part,
    second_branch,
    tap,
    torch_axes,
)
from equivalence.frameworks.torch.sequence import SKIP, is_attention, is_self_attention, sequence_part

FRAMEWORK = "torch"
_DTYPE_NAMES = {v: k for k, v in TORCH_DTYPES.items()}
_aten = torch.ops.aten

# --- activation modules: type -> name of the activation (with its parameters) ---------------------


def _softmax_dim(dim: int | None) -> int:
    return 1 if dim is None else dim  # nn.Softmax(dim=None) on a 2-D input picks dim 1 (and warns)


def _softplus(beta: float, threshold: float) -> str:
    if beta != 1 or threshold != 20:
        raise _Refuse(f"Softplus(beta={beta}, threshold={threshold}): only beta=1, threshold=20 is judged")
    return "softplus"


_Refuse = Refused

JUDGED = ("Linear, Conv1d, Conv2d, MaxPool1d/2d, AvgPool1d/2d, Flatten, BatchNorm, LayerNorm, Embedding, "
          "MultiheadAttention, LSTM and GRU modules, a mean over the tokens, a residual Add, their activations, and "
          "skips Dropout, Identity and a Flatten of 2-D inputs")
"""What the torch walker reads, for its refusal of anything else."""


MODULES: dict[type, Callable[[nn.Module], str | None]] = {
    nn.ReLU: lambda m: "relu",
    nn.Sigmoid: lambda m: "sigmoid",
    nn.Tanh: lambda m: "tanh",
    nn.GELU: lambda m: "gelu" if m.approximate == "none" else "gelu_tanh",
    nn.ELU: lambda m: activation_name("elu", m.alpha),
    nn.CELU: lambda m: activation_name("celu", m.alpha),
    nn.SELU: lambda m: "selu",
    nn.SiLU: lambda m: "silu",
    nn.Softplus: lambda m: _softplus(m.beta, m.threshold),
    nn.Softsign: lambda m: "softsign",
    nn.ReLU6: lambda m: "relu6",
    nn.Hardsigmoid: lambda m: "hard_sigmoid",
    nn.Hardswish: lambda m: "hard_silu",
    nn.LeakyReLU: lambda m: activation_name("leaky_relu", m.negative_slope),
    nn.Mish: lambda m: "mish",
    nn.Softmax: lambda m: activation_name("softmax_axis", _softmax_dim(m.dim)),
    nn.LogSoftmax: lambda m: activation_name("log_softmax_axis", _softmax_dim(m.dim)),
    nn.Identity: lambda m: None,
    nn.Dropout: lambda m: None,
    nn.AlphaDropout: lambda m: None,
    nn.Flatten: lambda m: None,
}
"""Activation modules; ``None`` means skipped at inference."""


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    """Argument ``index`` (after the tensor, which is 0) or keyword ``name`` of a call."""
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


def _gelu(args: tuple, kwargs: dict) -> str:
    return "gelu" if _arg(args, kwargs, 1, "approximate", "none") == "none" else "gelu_tanh"


def _elu(args: tuple, kwargs: dict) -> str:
    if _arg(args, kwargs, 2, "scale", 1.0) != 1 or _arg(args, kwargs, 3, "input_scale", 1.0) != 1:
        raise _Refuse("elu with scale or input_scale other than 1")
    return activation_name("elu", _arg(args, kwargs, 1, "alpha", 1.0))


def _softmax(family: str) -> Callable[[tuple, dict], str]:
    def name(args: tuple, kwargs: dict) -> str:
        if _arg(args, kwargs, 2, "dtype", None) not in (None, False):
            raise _Refuse(f"{family} with a dtype argument")
        return activation_name(family, _softmax_dim(_arg(args, kwargs, 1, "dim", None)))
    return name


_fixed = lambda name: (lambda args, kwargs: name)  # noqa: E731
_skip = lambda args, kwargs: None  # noqa: E731

FUNCTIONS: dict[Any, Callable[[tuple, dict], str | None]] = {}
"""Functional activations, torch-level and aten-level (``torch.export``): target -> name or None (skipped)."""
for _targets, _namer in [
    ((torch.relu, F.relu, _aten.relu.default), _fixed("relu")),
    ((torch.sigmoid, F.sigmoid, _aten.sigmoid.default), _fixed("sigmoid")),
    ((torch.tanh, F.tanh, _aten.tanh.default), _fixed("tanh")),
    ((F.gelu, _aten.gelu.default), _gelu),
    ((F.elu, _aten.elu.default), _elu),
    ((F.celu, _aten.celu.default), lambda a, k: activation_name("celu", _arg(a, k, 1, "alpha", 1.0))),
    ((F.selu, torch.selu, _aten.selu.default), _fixed("selu")),
    ((F.silu, _aten.silu.default), _fixed("silu")),
    ((F.softplus, _aten.softplus.default),
     lambda a, k: _softplus(_arg(a, k, 1, "beta", 1.0), _arg(a, k, 2, "threshold", 20.0))),
    ((F.softsign,), _fixed("softsign")),
    ((F.relu6,), _fixed("relu6")),
    ((F.hardsigmoid, _aten.hardsigmoid.default), _fixed("hard_sigmoid")),
    ((F.hardswish, _aten.hardswish.default), _fixed("hard_silu")),
    ((F.leaky_relu, _aten.leaky_relu.default),
     lambda a, k: activation_name("leaky_relu", _arg(a, k, 1, "negative_slope", 0.01))),
    ((F.mish, _aten.mish.default), _fixed("mish")),
    ((F.softmax, torch.softmax, _aten.softmax.int), _softmax("softmax_axis")),
    ((_aten._softmax.default,), lambda a, k: activation_name("softmax_axis", a[1])),
    ((F.log_softmax, torch.log_softmax, _aten.log_softmax.int), _softmax("log_softmax_axis")),
    ((_aten._log_softmax.default,), lambda a, k: activation_name("log_softmax_axis", a[1])),
    ((F.dropout, torch.dropout, _aten.dropout.default, torch.flatten, torch.reshape,
      _aten.view.default, _aten.reshape.default, _aten.flatten.using_ints, _aten.clone.default,
      _aten.alias.default), _skip),
]:
    for _target in _targets:
        FUNCTIONS[_target] = _namer

METHODS: dict[str, Callable[[tuple, dict], str | None]] = {
    "relu": _fixed("relu"), "sigmoid": _fixed("sigmoid"), "tanh": _fixed("tanh"),
    "softmax": _softmax("softmax_axis"), "log_softmax": _softmax("log_softmax_axis"),
    "view": _skip, "reshape": _skip, "flatten": _skip, "contiguous": _skip,
}
"""Tensor methods (``x.relu()``, ``x.view(n, -1)``): name -> name of the activation or None (skipped)."""

_SHAPE_METHODS = ("size", "dim")
_LINEAR_FUNCTIONS = (F.linear, _aten.linear.default)


# --- the walk -----------------------------------------------------------------------------------

def graph_of(model: Any) -> tuple[fx.GraphModule, Any, bool]:
    """The model's graph, the object its parameters are read from, and whether they may be written.

    A torch.export program's graph (its parameters are the program's copies: not written); else
    ``torch.fx.symbolic_trace``; where that fails (control flow in ``forward``), ``torch.export`` of
    the model on a zero batch, its parameters looked up by name in the model itself.
    """
    if isinstance(model, torch.export.ExportedProgram):
        gm = model.module()
        return gm, gm, False
    if isinstance(model, fx.GraphModule):
        return model, model, True
    if not isinstance(model, nn.Module):
        raise ModelNotSupported(FRAMEWORK, "model", type(model).__name__, None,
                                "is neither an nn.Module nor a torch.export program")
    try:
        gm = fx.symbolic_trace(model)
        return gm, gm, True
    except NameError as exc:  # a module called in forward that is not registered as a submodule
        raise ModelNotSupported(FRAMEWORK, "model", type(model).__name__, None,
                                f"forward calls a module that is not registered ({exc}); layers held in a plain "
                                "python list are invisible to torch (use nn.ModuleList)") from None
    except Exception as exc:  # noqa: BLE001 - fx raises many kinds (TraceError, TypeError on control flow)
        fx_error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
    first = next((m for m in model.modules() if type(m) is nn.Linear), None)
    if first is None:
        raise ModelNotSupported(FRAMEWORK, "model", type(model).__name__, None,
                                f"torch.fx cannot trace its forward ({fx_error}) and it holds no nn.Linear")
    try:
        x = torch.zeros(2, first.in_features, dtype=first.weight.dtype)
        return torch.export.export(model, (x,), strict=False).module(), model, True
    except Exception as exc:  # noqa: BLE001 - export raises many kinds
        raise ModelNotSupported(FRAMEWORK, "model", type(model).__name__, None,
                                f"neither torch.fx ({fx_error}) nor torch.export ({type(exc).__name__}: "
                                f"{' '.join(str(exc).split())[:160]}) can trace its forward") from None


def _is_shape_node(node: fx.Node) -> bool:
    if node.op == "call_method" and node.target in _SHAPE_METHODS:
        return True
    if node.op == "call_function" and node.target is getattr and node.args[1:] == ("shape",):
        return True
    if node.op == "call_function" and node.target is operator.getitem and isinstance(node.args[0], fx.Node):
        return _is_shape_node(node.args[0])
    return onnx2torch.is_shape_computation(node)  # onnx2torch's Shape and the shape arithmetic on it


def _live_users(node: fx.Node) -> list[fx.Node]:
    """Users that compute something: not shape queries, not dead code (export's guard calls, the unused parts of
    a tuple a recurrent layer returns: ``out, (h, c) = self.lstm(x)`` with only ``out`` used)."""
    return [u for u in node.users if not _is_shape_node(u) and _reaches_output(u)]


def _reaches_output(node: fx.Node) -> bool:
    """Whether ``node``'s value reaches the graph's output through its users."""
    live = _LIVE.get(node.graph)
    if live is None:
        live = _LIVE[node.graph] = _live_names(node.graph)
    return node.name in live


_LIVE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Each walked graph's ``_live_names``, for as long as the graph lives: names, not nodes, so the cache holds
nothing of the graph (a cache of its nodes kept the last walked models and their weights alive)."""


def _live_names(graph: fx.Graph) -> frozenset[str]:
    """The names of the nodes whose value reaches the output: the graph's nodes are in topological order, so one
    pass back."""
    live: set[str] = set()
    for node in reversed(graph.nodes):
        if node.op == "output" or any(u.name in live for u in node.users):
            live.add(node.name)
    return frozenset(live)


def _describe(gm: fx.GraphModule, node: fx.Node) -> tuple[str, str]:
    """(name, type) of a node, as the user wrote it."""
    if node.op == "call_module":
        return str(node.target), type(gm.get_submodule(node.target)).__name__
    if node.op == "call_method":
        return node.name, f"Tensor.{node.target}"
    target = node.target
    kind = getattr(target, "__name__", None) or str(target)
    module = getattr(target, "__module__", None) or ""
    if module.startswith("torch"):
        kind = f"{module.replace('torch.nn.functional', 'F')}.{kind}" if "functional" in module else f"torch.{kind}"
    return node.name, str(target) if str(target).startswith("aten.") else kind


def walk(model: Any, *, input_shape: tuple[int, ...] | None = None) -> list[DenseUnit]:
    """The units of ``model`` in execution order; ``ModelNotSupported`` names what cannot be judged.

    ``input_shape``: one sample's canonical (channels-last) input shape, which a conv, a pooling layer and a
    Flatten after them need (their padding and permutation depend on it); None for a dense model.
    """
    gm, owner, writable = graph_of(model)
    nodes = [n for n in gm.graph.nodes if n.op != "get_attr" and not _is_shape_node(n)
             and (n.op in ("output", "placeholder") or _reaches_output(n))]
    inputs = [n for n in nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise ModelNotSupported(FRAMEWORK, "model", type(model).__name__, None,
                                f"takes {len(inputs)} inputs; the suite judges a model of one input")
    current = inputs[0]
    units: list[DenseUnit] = []
    pending: dict[str, Any] | None = None  # the unit being assembled: its Linear, then its activation
    position = 0
    shape = tuple(input_shape) if input_shape is not None and len(input_shape) > 1 else None
    permutation = None  # a Flatten's: the next Linear's rows
    declared = tuple(input_shape) if input_shape is not None else None  # an Embedding's sequence length
    taps: dict[fx.Node, int] = {}  # values a residual Add takes as its skip operand: whose output each is
    sequences: dict[fx.Node, bool | None] = {current: None}  # each value met: a token sequence (None: the input)
    for node in nodes:
        if node.op == "placeholder":
            continue
        name, kind = _describe(gm, node)
        refuse = lambda problem, n=name, k=kind, p=position: ModelNotSupported(FRAMEWORK, n, k, p, problem)  # noqa: E731
        if node.op == "output":
            selected(pending, refuse)
            out = node.args[0]
            out = out[0] if isinstance(out, (tuple, list)) and len(out) == 1 else out
            if out is not current:
                raise refuse("the model's output is not the end of its single chain of layers")
            break
        tensors = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node)
                   and a.op != "get_attr" and not _is_shape_node(a)]
        linear = _linear_of(gm, owner, node) or _converted_matmul(gm, owner, node, current)
        sequence = sequences[node] = sequences[current]  # what a token-wise op gives; corrected below
        if converted.add_bias(gm, owner, node, pending, current):  # onnx2torch's bias Add after its OnnxMatMul
            pending["write"] = _writer(pending["weight"], pending["bias"]) if pending["write"] else None
            current, position = node, position + 1
            continue
        judged_elsewhere = linear is not None or is_attention(gm, node) or is_recurrent(gm, node)
        parameters = [] if judged_elsewhere else _hand_written_parameters(node)
        if parameters and onnx2torch.refusal(node):  # a converter's constant, not a hand-written layer
            raise refuse(onnx2torch.refusal(node))
        if parameters:
            raise refuse(f"computes with the parameter {', '.join(map(repr, parameters))} directly (x @ W.T + b "
                         "written by hand): write it as nn.Linear or F.linear(x, weight, bias), which the suite "
                         "judges")
        residual = residual_part(node, current, tensors, taps, refuse) if len(tensors) > 1 else None
        if residual is not None:  # x + f(x): the Add closes the block (equivalence.frameworks.torch.residual)
            if pending is not None:
                units.append(_unit(pending))
            pending = {"position": position, "name": name, "kind": kind, "act": "linear", "act_source": "none",
                       "act_fn": None, "node": node, "layer_kind": Residual(units[-1].out_shape, residual["skip"]),
                       "batch_first": bool(sequence), **residual}
            current, position = node, position + 1
            continue
        start = second_branch(current, tensors, taps)
        if start is not None and _skipped(gm, node):  # an Identity or Dropout on a skip: the skip itself
            taps[node] = taps[start]
            continue
        if start is not None:  # a(x) + b(x): a's output waits for the Add, b starts from x (a Branch unit)
            if pending is not None:
                units.append(_unit(pending))
                pending = None
            taps[current] = len(units) - 1
            units.append(branch_unit(FRAMEWORK, "branch", position, units, taps[start]))
            current, sequence = start, sequences[start]
            sequences[node] = sequence
        if tensors != [current] and not is_self_attention(gm, node, current):
            raise refuse("a branch: it takes other tensors than the previous layer's output alone (concatenations "
                         "are not judged; a residual Add of the chain's output and an earlier one is)")
        if len(_live_users(current)) > 1 and current not in taps:
            if _is_swish(current):
                raise refuse("x * sigmoid(x) written by hand (Swish): not an activation the suite judges; use "
                             "nn.SiLU or F.silu, which compute it and are judged")
            if not fork(_live_users(current)):
                raise refuse(f"a branch: the previous layer's output feeds {len(_live_users(current))} layers, but the "
                             "suite judges a value feeding two that an Add joins (x + f(x), a(x) + b(x))")
            tap(current, pending, units, taps)
        if tensors == [current] and current in taps and _skipped(gm, node) and _feeds_an_add_only(node):
            taps[node] = taps[current]  # drop(x) + f(x): a Dropout or Identity on the skip, met first: the skip
            continue
        if select(node, pending, refuse):  # out, _ = self.lstm(x); out[:, -1]
            shape = pending["layer_kind"].output_shape(pending["in_shape"])
            shape, current, position = (shape if len(shape) > 1 else None), node, position + 1
            sequences[node] = False  # batch-first, but not a sequence a Linear or a LayerNorm is judged on
            continue
        selected(pending, refuse)
        part = onnx2torch.spatial_part(node, current, shape, refuse) \
            or sequence_part(gm, node, shape, declared, pending.get("layer_kind") if pending else None, refuse,
                             sequence=sequence)
        if part == SKIP:
            current = node
            continue
        spatial = part or _spatial_of(gm, node, shape, refuse) or _norm_of(gm, node, shape, refuse,
                                                                         sequence=bool(sequence))
        if spatial is not None and pending is not None and pending.get("selection") == "sequence" \
                and not isinstance(spatial["layer_kind"], SequenceMean):
            raise refuse("a spatial or normalisation layer on a recurrent layer's output sequence: the suite judges "
                         "a sequence fed to another LSTM or GRU, its last step, or its mean over the steps")
        spatial = spatial or recurrent_of(gm, node, shape, refuse)
        if spatial is not None:
            if pending is not None:
                units.append(_unit(pending))
            pending = {"position": position, "name": name, "kind": kind, "act": "linear", "act_source": "none",
                       "act_fn": None, "in_shape": shape, **spatial}
            sequences[node] = is_sequence(spatial["layer_kind"], sequence)
            if not writable:
                pending["write"] = None
            if permutation is not None and isinstance(spatial["layer_kind"], (LayerNorm, BatchNorm)):
                pending["flatten_order"] = permutation  # between the Flatten and its Linear: columns permuted
            shape = spatial["next_shape"] if "next_shape" in spatial else spatial["layer_kind"].output_shape(shape)
            if isinstance(spatial["layer_kind"], Flatten):
                canonical = spatial.get("canonical_order")  # onnx2torch's: flattened channels-last
                permutation = None if canonical else flatten_permutation(spatial["layer_kind"].in_shape)
                shape = None  # a dense chain from here
        elif linear is not None:
            if shape is not None and not sequence:
                raise refuse(f"a Linear on a {len(shape) + 1}-D tensor (per sample {shape}): the suite judges a "
                             "Linear after a Flatten, or on the (batch, tokens, features) sequence of an Embedding "
                             "or an attention, token by token")
            if sequence and linear[2].shape[1] != shape[-1]:
                raise refuse(f"takes {linear[2].shape[1]} features, but the sequence before it has {shape[-1]}")
            if permutation is not None and linear[2].shape[1] != len(permutation):
                raise refuse(f"takes {linear[2].shape[1]} features, but the Flatten before it gives "
                             f"{len(permutation)}")
            if pending is not None:
                units.append(_unit(pending))
            pending = {"position": position, "name": linear[0], "kind": linear[1], "weight": linear[2],
                       "bias": linear[3], "linear": linear[4], "write": linear[5] if writable else None,
                       "act": "linear", "act_source": "none", "act_fn": None, "permutation": permutation}
            if permutation is not None and writable:
                pending["write"] = _writer(linear[2], linear[3], permutation)
            permutation = None
            if sequence:  # token by token: a dense layer on N * L rows (equivalence.core.kinds.Dense)
                pending["in_shape"], shape = shape, (*shape[:-1], linear[2].shape[0])
        else:
            act = _softmax_of_a_tensor(gm, node, shape, bool(sequence), pending, refuse) if shape is not None \
                else None
            act = act or judged_activation(lambda node=node: _activation_of(gm, node), refuse, JUDGED)
            if act is not None:
                if pending is None:
                    raise refuse("an activation before any Linear layer")
                check_untapped(pending, refuse, act)
                if pending["act"] != "linear":
                    raise refuse(f"a second activation after {pending['name']!r} ({pending['act']} already): "
                                 "the suite judges one activation per dense layer")
                pending.update(act=act, act_source=f"{kind} {name!r}", act_fn=_caller(gm, node))
        current = node
        position += 1
    if pending is not None:
        units.append(_unit(pending))
    return check_residuals(check_chain(units, FRAMEWORK), FRAMEWORK)


_SOFTMAXES = {F.softmax: "softmax", torch.softmax: "softmax", _aten.softmax.int: "softmax",
              _aten._softmax.default: "softmax", F.log_softmax: "log_softmax", torch.log_softmax: "log_softmax",
              _aten.log_softmax.int: "log_softmax", _aten._log_softmax.default: "log_softmax"}


def _softmax_of_a_tensor(gm: fx.GraphModule, node: fx.Node, shape: tuple[int, ...], sequence: bool,
                         pending: dict[str, Any] | None, refuse: Callable[[str], Exception]) -> str | None:
    """A softmax or log_softmax of a tensor of more than two axes (``shape``: one sample's, canonical): its name
    when it acts over the axis the canonical layout puts last (a conv's channels, dim 1 of torch's N, C, H, W; a
    token sequence's features, its last dim), refused over any other; None for another node. The activation
    tables read dims of a 2-D tensor, where dim 1 is the last."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        family = {nn.Softmax: "softmax", nn.LogSoftmax: "log_softmax"}.get(type(module))
        dim = getattr(module, "dim", None)
    elif node.op == "call_method" and node.target in ("softmax", "log_softmax"):
        family, dim = node.target, _arg(node.args, node.kwargs, 1, "dim", None)
    elif node.op == "call_function" and node.target in _SOFTMAXES:
        family, dim = _SOFTMAXES[node.target], _arg(node.args, node.kwargs, 1, "dim", None)
    else:
        return None
    if family is None:
        return None
    rank = len(shape) + 1
    if "recurrent" in (pending or {}):
        raise refuse(f"a {family} of a recurrent layer's output sequence: the suite judges one of its last step")
    over = rank - 1 if sequence else 1  # a token sequence's features; a conv's channels (torch: N, C, ...)
    implicit = 0 if rank == 3 else 1  # torch's dim=None picks 0 for a 3-D input, 1 for a 4-D one
    if (implicit if dim is None else int(dim)) % rank != over:
        axis = "features (dim=-1)" if sequence else "channels (dim=1)"
        raise refuse(f"a {family} over dim {dim} of a {rank}-D tensor (batch, {', '.join(map(str, shape))} in the "
                     f"canonical layout): the suite judges it over the {axis}, the axis the canonical layout puts last")
    return family


def _skipped(gm: fx.GraphModule, node: fx.Node) -> bool:
    """An op skipped at inference (Identity, Dropout, a reshape)."""
    try:
        return _activation_of(gm, node) is None
    except (KeyError, Refused):
        return False


def _feeds_an_add_only(node: fx.Node) -> bool:
    users = _live_users(node)
    return len(users) == 1 and is_add(users[0])


def _parameters_of(node: fx.Node) -> list[str] | None:
    """The parameters ``node`` is computed from when it is computed from parameters alone (``w``, ``w.T``), else
    None."""
    if node.op == "get_attr":
        return [str(node.target)]
    args = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node)]
    if node.op not in ("call_function", "call_method") or not args:
        return None
    parts = [_parameters_of(a) for a in args]
    return None if any(p is None for p in parts) else [name for p in parts for name in p]


def _hand_written_parameters(node: fx.Node) -> list[str]:
    """The parameters ``node`` computes with outside ``nn.Linear`` and ``F.linear``, as in ``x @ self.w.T + self.b``:
    a dense layer written by hand."""
    args = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node)]
    return list(dict.fromkeys(name for a in args for name in _parameters_of(a) or ()))


_SIGMOIDS = (torch.sigmoid, F.sigmoid, _aten.sigmoid.default)
_PRODUCTS = (operator.mul, torch.mul, _aten.mul.Tensor)


def _is_swish(current: fx.Node) -> bool:
    """``current`` feeds exactly ``sigmoid(current)`` and ``current * sigmoid(current)``: Swish written by hand."""
    users = _live_users(current)
    sigmoid = next((u for u in users if u.target in _SIGMOIDS or (u.op == "call_method" and u.target == "sigmoid")),
                   None)
    product = next((u for u in users if u.target in _PRODUCTS or (u.op == "call_method" and u.target == "mul")), None)
    return len(users) == 2 and sigmoid is not None and product is not None \
        and set(product.args) == {current, sigmoid}


def _linear_of(gm: fx.GraphModule, owner: Any, node: fx.Node) -> tuple | None:
    """(name, kind, weight, bias, call, write) when the node is a Linear (module, F.linear or aten.linear)."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if type(module) is not nn.Linear:
            return None
        return (str(node.target), "Linear", module.weight, module.bias, module, _writer(module.weight, module.bias))
    if node.op == "call_function" and node.target in _LINEAR_FUNCTIONS:
        params = [a for a in node.args[1:] if isinstance(a, fx.Node)]
        if not params or any(p.op != "get_attr" for p in params):
            return None
        weight = _get_attr(owner, params[0].target)
        bias = _get_attr(owner, params[1].target) if len(params) > 1 else None
        name = params[0].target.rsplit(".", 1)[0] if "." in params[0].target else params[0].target
        kind = "aten.linear" if node.target is _aten.linear.default else "F.linear"
        return (name, kind, weight, bias, lambda x, w=weight, b=bias: F.linear(x, w, b), _writer(weight, bias))
    return None


def _converted_matmul(gm: fx.GraphModule, owner: Any, node: fx.Node, current: fx.Node) -> tuple | None:
    """onnx2torch's ``OnnxMatMul`` by a constant, as ``_linear_of`` gives a Linear (``converted``)."""
    found = converted.matmul_of(gm, owner, node, current)
    return None if found is None else (*found, _writer(found[2], None))


def _get_attr(owner: Any, target: str) -> torch.Tensor:
    obj: Any = owner
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _activation_of(gm: fx.GraphModule, node: fx.Node) -> str | None:
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if onnx2torch.activation_of(module) is not None:
            return onnx2torch.activation_of(module)
        if onnx2torch.refusal(node) is not None and type(module) not in MODULES:
            raise Refused(onnx2torch.refusal(node))
        return looked_up(MODULES, type(module))(module)
    if node.op == "call_method":
        return looked_up(METHODS, node.target)(node.args, node.kwargs)
    if node.op == "call_function":
        return looked_up(FUNCTIONS, node.target)(node.args, node.kwargs)
    raise NotJudged(node.op)


def _caller(gm: fx.GraphModule, node: fx.Node) -> Callable[[torch.Tensor], torch.Tensor]:
    """The node's own call with the tensor argument replaced: the user's module or function, as called."""
    def substitute(a: Any, x: torch.Tensor) -> Any:
        return x if isinstance(a, fx.Node) else a

    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        return lambda x: module(*(substitute(a, x) for a in node.args),
                                **{k: substitute(v, x) for k, v in node.kwargs.items()})
    if node.op == "call_method":
        return lambda x: getattr(x, node.target)(*(substitute(a, x) for a in node.args[1:]),
                                                 **{k: substitute(v, x) for k, v in node.kwargs.items()})
    return lambda x: node.target(*(substitute(a, x) for a in node.args),
                                 **{k: substitute(v, x) for k, v in node.kwargs.items()})


def _writer(weight: torch.Tensor, bias: torch.Tensor | None,
            permutation: np.ndarray | None = None) -> Callable[[np.ndarray, np.ndarray | None], None]:
    """Write canonical weights: ``(in, out)`` -> torch ``(out, in)``; after a Flatten the canonical H,W,C rows
    back to torch's C,H,W order (``permutation``); a conv's ``(*kernel, in, out)`` -> ``(out, in, *kernel)``."""
    def write(W: np.ndarray, b: np.ndarray | None) -> None:
        W = np.asarray(W)
        if permutation is not None:
            W = W[np.argsort(permutation)]
        native = W.T if W.ndim == 2 else W.transpose(W.ndim - 1, W.ndim - 2, *range(W.ndim - 2))
        with torch.no_grad():
            weight.copy_(to_tensor(np.ascontiguousarray(native), weight.dtype))
            if bias is not None and b is not None:
                bias.copy_(to_tensor(b, bias.dtype))
    return write


def _unit(p: dict[str, Any]) -> DenseUnit:
    unit = _built(p)
    return unit if p.get("flatten_order") is None else in_flatten_order(unit, p["flatten_order"])


def _built(p: dict[str, Any]) -> DenseUnit:
    if "build" in p:  # the sequence kinds (equivalence.frameworks.torch.sequence)
        return p["build"](p)
    if "recurrent" in p:
        return recurrent_unit(p)
    if "tensors" in p:
        return _norm_unit(p)
    if "layer_kind" in p:
        return _spatial_unit(p)
    weight, bias = p["weight"].detach(), p["bias"]
    dtype = _DTYPE_NAMES.get(weight.dtype)
    if dtype is None:
        raise ModelNotSupported(FRAMEWORK, p["name"], p["kind"], p["position"],
                                f"weights in {weight.dtype}: the suite judges {', '.join(TORCH_DTYPES)}")
    native = to_numpy(weight, numpy_dtype(dtype))
    b = None if bias is None else to_numpy(bias.detach(), numpy_dtype(dtype))
    linear, act_fn, permutation = p["linear"], p["act_fn"], p.get("permutation")
    back = None if permutation is None else np.argsort(permutation)

    def run(x: np.ndarray) -> np.ndarray:
        if back is not None:
            x = x[:, back]  # canonical H,W,C features -> torch's C,H,W
        with torch.no_grad():
            y = linear(to_tensor(np.ascontiguousarray(x), weight.dtype))
            if act_fn is not None:
                y = act_fn(y)
        return to_numpy(y, native.dtype)

    W = native.T if permutation is None else native.T[permutation]
    in_shape = p.get("in_shape", (W.shape[0],))  # a sequence's (L, in) for a Linear token by token
    return DenseUnit(FRAMEWORK, p["name"], p["kind"], p["position"], W.copy(), b, native,
                     p["act"], p["act_source"], dtype, run, p["write"], in_shape=in_shape,
                     out_shape=(*in_shape[:-1], W.shape[1]))


# --- convolution, pooling, flatten (channels-last numpy in and out) -------------------------------

_CONVS = {nn.Conv1d: 1, nn.Conv2d: 2}
_POOLS = {nn.MaxPool1d: ("max", 1), nn.MaxPool2d: ("max", 2), nn.AvgPool1d: ("avg", 1), nn.AvgPool2d: ("avg", 2)}
_FLATTEN_FUNCTIONS = (torch.flatten, _aten.flatten.using_ints)
_FLATTEN_METHODS = ("flatten", "view", "reshape")


def _tuple(value: Any, rank: int) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),) * rank


def _torch_padding(module: nn.Module, rank: int, kernel: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """torch's padding as explicit (before, after) pairs: an int pads both ends; ``"same"`` puts the odd pad
    at the end (stride 1 only in torch)."""
    padding = module.padding
    if padding == "valid":
        return ((0, 0),) * rank
    if padding == "same":
        return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel)
    return tuple((p, p) for p in _tuple(padding, rank))


def _spatial_of(gm: fx.GraphModule, node: fx.Node, shape: tuple[int, ...] | None,
                refuse: Callable[[str], Exception]) -> dict[str, Any] | None:
    """The unit's parts when ``node`` is a conv, a pooling layer, or a Flatten of a spatial tensor; else None."""
    module = gm.get_submodule(node.target) if node.op == "call_module" else None
    call, padded = module, onnx2torch.padded_conv(module)
    if padded is not None:  # onnx2torch's Sequential(OnnxPadStatic, Conv): the conv, its pad added
        module = padded[0]
    flatten = _is_flatten(node, module)
    if module is not None and type(module) in (*_CONVS, *_POOLS):
        if shape is None:
            raise refuse("a convolution or pooling layer, but the input shape is unknown: build the Keras model with "
                         "its input shape (keras.Input(shape=(H, W, C)))")
    elif not (flatten and shape is not None):
        return None
    rank = len(shape) - 1
    if flatten:
        # every accepted form (nn.Flatten(), torch.flatten(x, 1), x.view(x.size(0), -1), ...) is this one
        return {"layer_kind": Flatten(shape), "weight": None, "bias": None, "call": lambda t: torch.flatten(t, 1),
                "write": None}
    if type(module) in _CONVS:
        if _CONVS[type(module)] != rank:
            raise refuse(f"a {type(module).__name__} on a {rank + 2}-D input")
        problems = [f"{what} {value}" for what, value, ok in (
            ("dilation", module.dilation, set(_tuple(module.dilation, rank)) == {1}),
            ("groups", module.groups, module.groups == 1),
            ("padding_mode", repr(module.padding_mode), module.padding_mode == "zeros")) if not ok]
        if problems:
            raise refuse(f"{', '.join(problems)}: the suite judges convolutions with zero padding, no dilation and "
                         "one group")
        kernel = _tuple(module.kernel_size, rank)
        padding = _torch_padding(module, rank, kernel)
        if padded is not None:
            padding = tuple((a + c, b + d) for (a, b), (c, d) in zip(padding, padded[1]))
        kind = Conv(kernel, _tuple(module.stride, rank), padding, module.in_channels, module.out_channels)
        named = {"kind": f"OnnxPadStatic+{type(module).__name__}"} if padded is not None else {}
        return {"layer_kind": kind, "weight": module.weight, "bias": module.bias, "call": call, **named,
                "write": _writer(module.weight, module.bias)}
    op, pool_rank = _POOLS[type(module)]
    if pool_rank != rank:
        raise refuse(f"a {type(module).__name__} on a {rank + 2}-D input")
    if getattr(module, "ceil_mode", False) or getattr(module, "divisor_override", None) is not None \
            or set(_tuple(getattr(module, "dilation", 1), rank)) != {1}:
        raise refuse("ceil_mode, dilation or divisor_override: the suite judges plain pooling")
    size = _tuple(module.kernel_size, rank)
    kind = Pool(op, size, _tuple(module.stride if module.stride is not None else size, rank),
                tuple((p, p) for p in _tuple(module.padding, rank)),
                bool(getattr(module, "count_include_pad", False)))
    return {"layer_kind": kind, "weight": None, "bias": None, "call": module, "write": None}


def _is_flatten(node: fx.Node, module: nn.Module | None) -> bool:
    """``nn.Flatten()``, ``torch.flatten(x, 1)``, ``x.flatten(1)``, ``x.view(n, -1)`` or ``x.reshape(n, -1)``."""
    if module is not None:
        return type(module) is nn.Flatten and module.start_dim == 1 and module.end_dim == -1
    if node.op == "call_function" and node.target in _FLATTEN_FUNCTIONS:
        return _arg(node.args, node.kwargs, 1, "start_dim", 0) == 1 and _arg(node.args, node.kwargs, 2, "end_dim",
                                                                            -1) == -1
    if node.op == "call_method" and node.target in _FLATTEN_METHODS:
        if node.target == "flatten":
            return _arg(node.args, node.kwargs, 1, "start_dim", 0) == 1
        return len(node.args) == 3 and node.args[2] == -1
    return False


def _spatial_unit(p: dict[str, Any]) -> DenseUnit:
    kind, weight, bias, call, act_fn = p["layer_kind"], p["weight"], p["bias"], p["call"], p["act_fn"]
    in_shape = p["in_shape"]
    dtype = _DTYPE_NAMES.get(weight.dtype) if weight is not None else None
    if weight is not None and dtype is None:
        raise ModelNotSupported(FRAMEWORK, p["name"], p["kind"], p["position"],
                                f"weights in {weight.dtype}: the suite judges {', '.join(TORCH_DTYPES)}")
    rank = len(in_shape) - 1
    first = (0, rank + 1, *range(1, rank + 1))  # N,*S,C -> N,C,*S
    last = (0, *range(2, rank + 2), 1)
    flat = isinstance(kind, Flatten)
    permutation = flatten_permutation(in_shape) if flat and not p.get("canonical_order") else None

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            t = to_tensor(np.ascontiguousarray(np.asarray(x).transpose(first)), _dtype_of(x))
            y = call(t)
            if act_fn is not None:
                y = act_fn(y)
        out = to_numpy(y, np.asarray(x).dtype)
        if flat:
            return out[:, permutation] if permutation is not None else out  # onnx2torch's: canonical already
        return out.transpose(last)

    if weight is None:
        return DenseUnit.without_weights(FRAMEWORK, p["name"], p["kind"], p["position"], p["act"], p["act_source"],
                                         run, layer_kind=kind, in_shape=in_shape,
                                         out_shape=kind.output_shape(in_shape))
    native = to_numpy(weight.detach(), numpy_dtype(dtype))
    b = None if bias is None else to_numpy(bias.detach(), numpy_dtype(dtype))
    W = native.transpose(*range(2, rank + 2), 1, 0).copy()  # (out, in, *kernel) -> (*kernel, in, out)
    return DenseUnit(FRAMEWORK, p["name"], p["kind"], p["position"], W, b, native, p["act"], p["act_source"],
                     dtype, run, p["write"], layer_kind=kind, in_shape=in_shape, out_shape=kind.output_shape(in_shape))


# --- normalisation ------------------------------------------------------------------------------

_BATCH_NORMS = {nn.BatchNorm1d: (0, 1), nn.BatchNorm2d: (2,)}


def _norm_of(gm: fx.GraphModule, node: fx.Node, shape: tuple[int, ...] | None,
             refuse: Callable[[str], Exception], *, sequence: bool = False) -> dict[str, Any] | None:
    """The unit's parts when ``node`` is a LayerNorm (over the features of a 2-D input or of a token
    ``sequence``) or a BatchNorm1d/2d."""
    module = gm.get_submodule(node.target) if node.op == "call_module" else None
    if type(module) is nn.LayerNorm:
        if (shape is not None and not sequence) or len(module.normalized_shape) != 1:
            raise refuse(f"a LayerNorm over {tuple(module.normalized_shape)}: the suite judges it on 2-D inputs "
                         "and over the features of an Embedding's or an attention's (batch, tokens, features) "
                         "sequence (torch normalises the last axes, channels-last Keras the channels)")
        if not module.elementwise_affine or module.bias is None:
            raise refuse("a LayerNorm without its scale and offset: the suite judges elementwise_affine=True, "
                         "bias=True")
        kind = LayerNorm(module.normalized_shape[0], float(module.eps))
        if sequence and shape[-1] != kind.features:
            raise refuse(f"normalises {kind.features} features, but the sequence before it has {shape[-1]}")
        return {"layer_kind": kind, "tensors": (module.weight, module.bias), "call": module,
                "in_shape": shape if sequence else (kind.features,), "batch_first": sequence}
    if type(module) not in _BATCH_NORMS:
        return None
    rank = 0 if shape is None else len(shape) - 1
    if rank not in _BATCH_NORMS[type(module)]:
        raise refuse(f"a {type(module).__name__} on a {rank + 2}-D input")
    if not module.affine or not module.track_running_stats or module.momentum is None:
        raise refuse("a BatchNorm without affine parameters, running statistics or a momentum: the suite judges "
                     "affine=True, track_running_stats=True and a momentum")
    kind = BatchNorm(module.num_features, float(module.eps), round(1 - float(module.momentum), 12),
                     batch_statistics=module.training)
    tensors = (module.weight, module.bias, module.running_mean, module.running_var)

    def call(x: torch.Tensor) -> torch.Tensor:  # on copies of the running statistics: never updates the user's
        return F.batch_norm(x, module.running_mean.clone(), module.running_var.clone(), module.weight, module.bias,
                            training=module.training, momentum=module.momentum, eps=module.eps)

    return {"layer_kind": kind, "tensors": tensors, "call": call,
            "in_shape": shape if shape is not None else (kind.features,)}


def _norm_unit(p: dict[str, Any]) -> DenseUnit:
    kind, tensors, call, act_fn, in_shape = p["layer_kind"], p["tensors"], p["call"], p["act_fn"], p["in_shape"]
    dtype = _DTYPE_NAMES.get(tensors[0].dtype)
    if dtype is None:
        raise ModelNotSupported(FRAMEWORK, p["name"], p["kind"], p["position"],
                                f"weights in {tensors[0].dtype}: the suite judges {', '.join(TORCH_DTYPES)}")
    native = np.stack([to_numpy(t.detach(), numpy_dtype(dtype)) for t in tensors])
    first, last = torch_axes(in_shape, batch_first=p.get("batch_first", False))

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            y = call(to_tensor(np.ascontiguousarray(np.asarray(x).transpose(first)), tensors[0].dtype))
            if act_fn is not None:
                y = act_fn(y)
        return to_numpy(y, native.dtype).transpose(last)

    def write(W: np.ndarray, b: np.ndarray | None) -> None:
        with torch.no_grad():
            for tensor, row in zip(tensors, np.asarray(W)):
                tensor.copy_(to_tensor(row, tensor.dtype))

    return DenseUnit(FRAMEWORK, p["name"], p["kind"], p["position"], native.copy(), None, native, p["act"],
                     p["act_source"], dtype, run, write if p.get("write", True) is not None else None,
                     layer_kind=kind, in_shape=in_shape, out_shape=in_shape)


def _dtype_of(x: np.ndarray) -> torch.dtype:
    name = np.asarray(x).dtype.name
    return TORCH_DTYPES.get(name, torch.float32) if name != "bfloat16" else TORCH_DTYPES["bfloat16"]


@contextmanager
def _torch_logs(shown: bool) -> Iterator[None]:
    """torch's loggers (``torch.export`` logs a whole traceback before raising) held at ERROR unless ``shown``:
    the caller turns the error into one line of its own."""
    logger = logging.getLogger("torch")
    level = logger.level
    if not shown:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _zip_problem(path: str) -> str | None:
    return None if zipfile.is_zipfile(path) else "not a zip archive: random bytes, or a truncated file"


def _state_dict(path: str) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)``: tensors and plain containers only, never a pickled object."""
    problem = _zip_problem(path)
    if problem:
        raise ValueError(f"not a torch.save file ({problem})")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError("not loaded: it holds pickled objects (torch.save(model) pickles the module, and "
                         "unpickling runs code): save model.state_dict() instead") from None
    except Exception as exc:  # noqa: BLE001 - zip and storage errors come in many types
        raise ValueError(f"not a torch.save file ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") \
            from None
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError(f"holds a {type(loaded).__name__}, but should hold a state_dict (names to tensors)")
    return loaded


def load_program(path: str, *, logs: bool = False) -> torch.export.ExportedProgram:
    """A ``torch.export`` program from a ``.pt2`` file (``torch.export.load``: no pickled objects);
    ``ValueError`` with one line on anything else, naming a ``torch.save`` file for what it is. torch's own
    log lines are held back unless ``logs``."""
    problem = _zip_problem(path)
    if problem:
        raise ValueError(f"not a torch.export program ({problem})")
    try:
        with _torch_logs(logs):
            return torch.export.load(path)
    except Exception as exc:  # noqa: BLE001 - zip, schema and version errors come in many types
        error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    try:
        _state_dict(path)
    except ValueError as exc:
        if "pickled objects" in str(exc):
            raise ValueError(f"not a torch.export program, and {exc}; then pass it with --torch-model "
                             "package.module:factory, or torch.export.save a program") from None
    else:
        raise ValueError("holds a state_dict, not a torch.export program: pass --torch-model package.module:factory "
                         "(a function returning the nn.Module it belongs to)")
    raise ValueError(f"not a torch.export program ({error}); write one with "
                     "torch.export.save(torch.export.export(model, (x,)), path)")


def load_state_dict_model(path: str, name: str, factory: Callable[[], Any], *, logs: bool = False) -> nn.Module:
    """The module ``factory()`` returns, with the state_dict saved at ``path`` (``torch.save(model.state_dict(),
    path)``, read with ``weights_only=True``), in eval mode; ``ValueError`` with one line on anything else."""
    if path.endswith(".pt2"):
        raise ValueError("--torch-model loads a state_dict (.pt), but this is a .pt2 torch.export program: "
                         "leave --torch-model out")
    with _torch_logs(logs):
        state = _state_dict(path)
        model = factory()
    if not isinstance(model, nn.Module):
        raise ValueError(f"--torch-model {name}: got {type(model).__name__}, but should be an nn.Module")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"does not fit the model {name} returns ({' '.join(str(exc).split())[:300]})") from None
    return model.eval()
