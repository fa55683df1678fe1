"""Keras ``LSTM`` and ``GRU`` layers in a user's model, as units of the walk (``equivalence.core.recurrent``).

Their weights are the canonical layout already: ``W = [kernel; recurrent_kernel]``, the bias as Keras holds it
(an LSTM's ``(4*units,)``, a GRU's ``(2, 3*units)`` with ``reset_after`` and ``(3*units,)`` without). ``native``
stacks Keras' own tensors' rows, ``[kernel; recurrent_kernel; bias rows]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from equivalence.core.dtypes import numpy_dtype
from equivalence.core.recurrent import Recurrent
from equivalence.core.walk import DenseUnit
from equivalence.frameworks.registry import get_adapter

FRAMEWORK = "keras"
_CELLS = {keras.layers.LSTM: "lstm", keras.layers.GRU: "gru"}


def recurrent_kind(op: Any, shape: tuple[int, ...], refuse: Callable[[str], Exception],
                   activation_name: Callable[[Any], str]) -> Recurrent | None:
    """The kind of an ``LSTM`` or ``GRU`` layer (``activation_name``: the walk's mapping of Keras activations to
    the suite's names); else None."""
    if type(op) not in _CELLS:
        return None
    problems = [what for what, bad in (("return_state=True", op.return_state), ("go_backwards=True", op.go_backwards),
                                       ("stateful=True", op.stateful)) if bad]
    if problems:
        raise refuse(f"{', '.join(problems)}: the suite judges a recurrent layer run forward from a zero state, "
                     "returning its output")
    if len(shape) != 2:
        raise refuse(f"a {type(op).__name__} on a {len(shape) + 1}-D input: it takes (N, T, features)")
    if not op.built:
        raise refuse("has no weights yet: build the model (keras.Input(shape=(T, features))) and give it its "
                     "weights first")
    cell = op.cell
    return Recurrent(_CELLS[type(op)], shape[1], op.units, shape[0], bool(op.return_sequences),
                     reset_after=bool(getattr(cell, "reset_after", True)), activation=activation_name(cell.activation),
                     recurrent_activation=activation_name(cell.recurrent_activation))


def recurrent_unit(p: dict[str, Any]) -> DenseUnit:
    """The walked layer: canonical weights (Keras' own, stacked), its run and its writer."""
    layer, kind, act_op, in_shape = p["layer"], p["layer_kind"], p["act_op"], p["in_shape"]
    adapter = get_adapter("keras")
    cell = layer.cell
    dtype = layer.compute_dtype
    dt = numpy_dtype(dtype)
    variables = [cell.kernel, cell.recurrent_kernel]
    kernels = [adapter.to_numpy(v).astype(dt) for v in variables]
    b = None if cell.bias is None else adapter.to_numpy(cell.bias).astype(dt)
    width = kernels[0].shape[1]
    native = np.concatenate([*kernels, *([] if b is None else [b.reshape(-1, width)])])

    def run(x: np.ndarray) -> np.ndarray:
        y = adapter.run(layer, x)
        if act_op is not None:
            y = adapter.run(act_op, y) if isinstance(act_op, keras.layers.Layer) else act_op(y)
        return adapter.to_numpy(y)

    def write(W: np.ndarray, bias: np.ndarray | None) -> None:
        W = np.asarray(W)
        cell.kernel.assign(np.asarray(W[:kind.features], dtype=cell.kernel.dtype))
        cell.recurrent_kernel.assign(np.asarray(W[kind.features:], dtype=cell.recurrent_kernel.dtype))
        if cell.bias is not None and bias is not None:
            cell.bias.assign(np.asarray(bias, dtype=cell.bias.dtype))

    return DenseUnit(FRAMEWORK, layer.name, type(layer).__name__, p["position"], np.concatenate(kernels), b, native,
                     p["act"], p["act_source"], dtype, run, write, layer_kind=kind, in_shape=in_shape,
                     out_shape=kind.output_shape(in_shape))
