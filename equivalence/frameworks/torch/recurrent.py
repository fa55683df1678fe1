"""``nn.LSTM`` and ``nn.GRU`` in a user's torch model, as units of the walk (``equivalence.core.recurrent``).

A recurrent module returns a tuple, ``(output, (h_n, c_n))`` or ``(output, h_n)``, so a model takes one part of
it in ``forward``: ``out, _ = self.lstm(x)`` then ``out`` (the sequence) or ``out[:, -1]`` (the last step), or
``_, (h, c) = self.lstm(x)`` then ``h[-1]`` (the last step: ``h_n`` of a one-layer, one-direction module is the
output's last step). The walk follows those selections (``select``) and refuses anything else, naming it.

The canonical layout is Keras' (``equivalence.core.recurrent``): ``W = [weight_ih; weight_hh]`` transposed, its
gates reordered for a GRU (torch ``r, z, n`` -> Keras ``z, r, h``; an LSTM's ``i, f, g, o`` is Keras' order); an
LSTM's bias ``bias_ih + bias_hh`` (Keras has one), a GRU's ``(bias_ih, bias_hh)`` stacked (Keras'
``reset_after=True`` pair). ``native`` holds torch's own tensors side by side, ``[weight_ih | weight_hh | bias_ih |
bias_hh]`` (rows in torch's gate order), so a port's mistake can be named (one bias of the two, gates unordered).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from equivalence.core.dtypes import numpy_dtype
from equivalence.core.recurrent import Recurrent
from equivalence.core.walk import DenseUnit, ModelNotSupported
from equivalence.frameworks.torch import TORCH_DTYPES, to_numpy, to_tensor

FRAMEWORK = "torch"
_CELLS = {nn.LSTM: "lstm", nn.GRU: "gru"}
_DTYPE_NAMES = {v: k for k, v in TORCH_DTYPES.items()}


def gate_order(cell: str, units: int) -> np.ndarray:
    """Torch's rows in the canonical gate order: ``canonical = torch[order]`` (a GRU's ``r, z, n`` -> ``z, r, h``)."""
    blocks = (0, 1, 2, 3) if cell == "lstm" else (1, 0, 2)
    return np.concatenate([np.arange(g * units, (g + 1) * units) for g in blocks])


def is_recurrent(gm: fx.GraphModule, node: fx.Node) -> bool:
    """``node`` calls an ``nn.LSTM`` or ``nn.GRU``: a state passed beside its input is named by ``recurrent_of``
    (an initial state), not taken for a parameter used by hand."""
    return node.op == "call_module" and type(gm.get_submodule(node.target)) in _CELLS


def recurrent_of(gm: fx.GraphModule, node: fx.Node, shape: tuple[int, ...] | None,
                 refuse: Callable[[str], Exception]) -> dict[str, Any] | None:
    """The unit's parts when ``node`` calls an ``nn.LSTM`` or ``nn.GRU`` (its output the whole tuple until
    ``select`` narrows it); else None."""
    module = gm.get_submodule(node.target) if node.op == "call_module" else None
    if type(module) not in _CELLS:
        return None
    problems = [f"{what}={value}" for what, value, ok in (
        ("num_layers", module.num_layers, module.num_layers == 1),
        ("bidirectional", module.bidirectional, not module.bidirectional),
        ("proj_size", getattr(module, "proj_size", 0), not getattr(module, "proj_size", 0)),
        ("batch_first", module.batch_first, module.batch_first)) if not ok]
    if problems:
        raise refuse(f"{', '.join(problems)}: the suite judges one-layer, one-direction recurrent layers without "
                     "projection, batch_first=True (x given as N, T, features)")
    if any(state is not None for state in (*node.args[1:], *node.kwargs.values())):  # rnn(x, None) starts at zero
        raise refuse("called with an initial state: the suite judges a recurrent layer started from zeros")
    if shape is None or len(shape) != 2:
        raise refuse("a recurrent layer, but its input's sequence length is unknown or its input not a sequence: "
                     "build the Keras model with keras.Input(shape=(T, features)) and feed the layer a sequence")
    if shape[1] != module.input_size:
        raise refuse(f"takes {module.input_size} features, but gets {shape[1]}")
    kind = Recurrent(_CELLS[type(module)], module.input_size, module.hidden_size, shape[0], True)
    return {"layer_kind": kind, "recurrent": module, "selection": "tuple", "in_shape": shape, "weight": None}


def _index(node: fx.Node) -> Any:
    return node.args[1] if node.op == "call_function" and node.target is operator.getitem else None


def _is_last_step(index: Any) -> bool:
    """``[:, -1]`` or ``[:, -1, :]`` of a batch-first sequence."""
    full = slice(None, None, None)
    return isinstance(index, tuple) and index[:1] == (full,) and len(index) >= 2 and index[1] == -1 \
        and all(i == full for i in index[2:]) and len(index) <= 3


_NEXT = {  # (selection, what the node does) -> the selection after it
    ("tuple", 0): "sequence", ("tuple", 1): "state", ("state tuple", 0): "h_n", ("h_n", -1): "last",
    ("h_n", 0): "last", ("sequence", "last step"): "last",
}


def select(node: fx.Node, pending: dict[str, Any] | None, refuse: Callable[[str], Exception]) -> bool:
    """Follow ``node`` when it selects a part of the pending recurrent layer's output; True when it did."""
    if pending is None or "recurrent" not in pending or pending["selection"] == "last":
        return False
    selection, index = pending["selection"], _index(node)
    if selection == "state":
        selection = "state tuple" if pending["layer_kind"].cell == "lstm" else "h_n"
    if index is None and node.op == "call_method" and node.target == "squeeze" and node.args[1:] == (0,):
        index = 0
    if selection == "sequence" and _is_last_step(index):
        index = "last step"
    if index is None:
        return False  # not a selection: ``selected`` says whether the layer's output may be used as it is
    after = _NEXT.get((selection, index)) if isinstance(index, (int, str)) else None
    if after is None:
        if selection == "state tuple" and index == 1:
            raise refuse("takes an LSTM's cell state c_n: the suite judges its output or hidden state h_n")
        raise refuse(f"takes [{index!r}] of a recurrent layer's {selection}: the suite judges out (the sequence), "
                     "out[:, -1] or h_n[-1] (the last step)")
    pending["selection"] = after
    pending["pick"] = (*pending.get("pick", ()), index)
    if after == "last":
        pending["layer_kind"] = pending["layer_kind"].last_step()
    return True


def selected(pending: dict[str, Any] | None, refuse: Callable[[str], Exception]) -> None:
    """Refuse a recurrent layer's output used before a sequence or a step was taken out of its tuple."""
    if pending is not None and pending.get("selection") not in (None, "sequence", "last"):
        raise refuse(f"uses the {pending['selection']} recurrent layer {pending['name']!r} returns as a tensor: "
                     "write out, _ = self.lstm(x) in forward, then use out or out[:, -1] (an nn.Sequential cannot "
                     "hold a recurrent layer usefully: it returns a tuple)")


def _pick(result: Any, picks: tuple) -> torch.Tensor:
    for index in picks:
        result = result[:, -1] if index == "last step" else result[index]
    return result


def _torch_parts(module: nn.Module) -> list[torch.Tensor]:
    names = ["weight_ih_l0", "weight_hh_l0"] + (["bias_ih_l0", "bias_hh_l0"] if module.bias else [])
    return [getattr(module, name) for name in names]


def recurrent_unit(p: dict[str, Any]) -> DenseUnit:
    """The walked layer: canonical weights, torch's own side by side, its run and its writer."""
    module, kind, act_fn, picks = p["recurrent"], p["layer_kind"], p["act_fn"], p.get("pick", ())
    parts = _torch_parts(module)
    dtype = _DTYPE_NAMES.get(parts[0].dtype)
    if dtype is None:
        raise ModelNotSupported(FRAMEWORK, p["name"], p["kind"], p["position"],
                                f"weights in {parts[0].dtype}: the suite judges {', '.join(TORCH_DTYPES)}")
    dt = numpy_dtype(dtype)
    wide = [to_numpy(t.detach(), np.float64) for t in parts]
    order = gate_order(kind.cell, kind.units)
    W = np.concatenate([wide[0][order].T, wide[1][order].T]).astype(dt)
    b = None
    if module.bias:
        b = (wide[2] + wide[3])[order] if kind.cell == "lstm" else np.stack([wide[2][order], wide[3][order]])
        b = b.astype(dt)
    native = np.concatenate([w if w.ndim == 2 else w[:, None] for w in wide], axis=1).astype(dt)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            y = _pick(module(to_tensor(np.ascontiguousarray(x), parts[0].dtype)), picks)
            if act_fn is not None:
                y = act_fn(y)
        return to_numpy(y, dt)

    def write(W: np.ndarray, bias: np.ndarray | None) -> None:
        """Canonical -> torch: the kernels transposed back into torch's gate order; an LSTM's one bias written to
        ``bias_ih`` with ``bias_hh`` zero (their sum is what computes)."""
        back = np.argsort(order)
        W = np.asarray(W, dtype=np.float64)
        tensors = [W[:kind.features][:, back].T, W[kind.features:][:, back].T]
        if module.bias and bias is not None:
            bias = np.asarray(bias, dtype=np.float64)
            rows = (bias, np.zeros_like(bias)) if bias.ndim == 1 else (bias[0], bias[1])
            tensors += [row[back] for row in rows]
        with torch.no_grad():
            for tensor, value in zip(parts, tensors):
                tensor.copy_(to_tensor(np.ascontiguousarray(value), tensor.dtype))

    return DenseUnit(FRAMEWORK, p["name"], p["kind"], p["position"], W, b, native, p["act"], p["act_source"],
                     dtype, run, write if p.get("write", True) is not None else None, layer_kind=kind,
                     in_shape=p["in_shape"], out_shape=kind.output_shape(p["in_shape"]))
