"""The traps of porting an LSTM or a GRU between torch and Keras, named from the weights before any value.

The torch unit's ``native`` holds torch's own tensors side by side, ``[weight_ih | weight_hh | bias_ih | bias_hh]``
with rows in torch's gate order (``equivalence.frameworks.torch.recurrent``); its ``W`` and ``b`` are the canonical
(Keras) layout. A port that copies torch's tensors without the conversion leaves a Keras kernel or bias that is
one of torch's arrays, or the canonical one with its gates permuted: each is recognised and named here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from equivalence.core.attention import SelfAttention
from equivalence.core.embedding import SequenceMean
from equivalence.core.recurrent import Recurrent, gate_permutation
from equivalence.core.walk import DenseUnit

TORCH_GATES = {"lstm": "i, f, g, o", "gru": "r, z, n"}
ONNX_GATES = {"lstm": ("i", "o", "f", "c"), "gru": ("z", "r", "h")}
"""ONNX's gate order in an ``LSTM``/``GRU`` node's ``W``, ``R`` and ``B`` (``equivalence.frameworks.onnx_recurrent``
reads them into the canonical order)."""


def takes_sequences(units: Sequence[DenseUnit]) -> bool:
    """The model starts with a layer of float sequences (a recurrent layer, a self-attention, a mean over the
    tokens): its input is ``(N, T, features)``, batch-first in both frameworks, not a channels-first spatial one."""
    return isinstance(units[0].layer_kind, (Recurrent, SelfAttention, SequenceMean))


def _torch_tensors(t: DenseUnit) -> dict[str, np.ndarray]:
    kind: Recurrent = t.layer_kind
    split = [kind.features, kind.features + kind.units, kind.features + kind.units + 1]
    parts = np.split(t.native, split, axis=1)
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    return {name: part for name, part in zip(names, parts) if part.size}


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return a is not None and b is not None and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


def _gate_order(where: str, t: DenseUnit, k: DenseUnit) -> list[tuple[str, str]]:
    kind: Recurrent = t.layer_kind
    gates = len(kind.gates)
    for what, expected, got in (("kernel", t.W, k.W), ("bias", t.b, k.b)):
        order = None if expected is None or got is None else gate_permutation(expected, got, gates)
        if order is not None:
            held = ", ".join(kind.gates[i] for i in order)
            canonical = ", ".join(kind.gates)
            return [("gate order", f"{where}: gate order: the keras {what} holds the gates as ({held}), but Keras' "
                     f"{kind.cell.upper()} orders them ({canonical}) (torch stores {TORCH_GATES[kind.cell]}; "
                     "port_weights reorders them)")]
    return []


def _kernel_layout(where: str, t: DenseUnit, k: DenseUnit) -> list[tuple[str, str]]:
    kind: Recurrent = t.layer_kind
    torch_tensors = _torch_tensors(t)
    kernels = {"weight_ih": (k.W[:kind.features], t.W[:kind.features]),
               "weight_hh": (k.W[kind.features:], t.W[kind.features:])}
    for name, (got, expected) in kernels.items():
        if _same(got, expected):
            continue
        if _same(got, torch_tensors[name].reshape(got.shape)):
            return [("kernel layout", f"{where}: kernel layout: the keras kernel {got.shape} is torch's {name} "
                     f"{torch_tensors[name].shape} reshaped, but should be transposed (and its gates in Keras' order)")]
        blocks = np.split(expected, len(kind.gates), axis=1)
        if name == "weight_hh" and _same(got, np.concatenate([block.T for block in blocks], axis=1)):
            return [("kernel layout", f"{where}: kernel layout: each gate's square block of the keras recurrent "
                     "kernel is transposed (units x units: the shape fits either way)")]
    return []


def _bias(where: str, t: DenseUnit, k: DenseUnit) -> list[tuple[str, str]]:
    kind: Recurrent = t.layer_kind
    if t.b is None or k.b is None or _same(t.b, k.b):
        return []
    torch_tensors = _torch_tensors(t)
    if kind.cell == "lstm":
        for name in ("bias_ih", "bias_hh"):
            if name in torch_tensors and _same(k.b, torch_tensors[name][:, 0]):
                return [("bias", f"{where}: bias: the keras bias is torch's {name} alone, but should be bias_ih + "
                         "bias_hh (torch adds two biases, Keras' LSTM has one: port_weights sums them)")]
    elif k.b.ndim == 2 and _same(k.b, t.b[::-1]):
        return [("bias", f"{where}: bias: the keras bias rows are swapped: row 0 should be torch's bias_ih (the "
                 "input's), row 1 bias_hh (the recurrent one, which Keras' reset_after=True multiplies by r)")]
    return []


def recurrent_differences(where: str, t: DenseUnit, k: DenseUnit) -> list[tuple[str, str]]:
    """A torch LSTM or GRU and its Keras port of the same configuration: the port's mistake named from the weights
    (gate order, kernel layout, one LSTM bias of two, GRU bias rows swapped), or nothing."""
    for namer in (_gate_order, _kernel_layout, _bias):
        named = namer(where, t, k)
        if named:
            return named
    return []


def _from_onnx(unit: DenseUnit) -> bool:
    return unit.kind.startswith("onnx ")


def converted_gate_order(where: str, t: DenseUnit, k: DenseUnit) -> list[tuple[str, str]]:
    """An ONNX LSTM or GRU (either side) whose ``W``, ``R`` and ``B`` hold the other model's gates in another order
    than ONNX's: named as the file holds them (an exporter that wrote torch's order unchanged); else nothing."""
    graph, other = (k, t) if _from_onnx(k) else (t, k) if _from_onnx(t) else (None, None)
    if graph is None or other.layer_kind != graph.layer_kind:
        return []
    kind: Recurrent = graph.layer_kind
    canonical, onnx_gates = kind.gates, ONNX_GATES[kind.cell]
    for what, expected, got in (("kernel", other.W, graph.W), ("bias", other.b, graph.b)):
        order = None if expected is None or got is None else gate_permutation(expected, got, len(canonical))
        if order is not None:
            held = ", ".join(canonical[order[canonical.index(gate)]] for gate in onnx_gates)
            return [("gate order", f"{where}: gate order: the ONNX {kind.cell.upper()}'s "
                     f"{'W and R hold' if what == 'kernel' else 'B holds'} the gates as ({held}), but ONNX orders them "
                     f"({', '.join(onnx_gates)}) (torch stores {TORCH_GATES[kind.cell]}, Keras "
                     f"{', '.join(canonical)}: an exporter reorders them)")]
    return []
