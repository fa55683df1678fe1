"""Residual connections in a user's Keras model: ``layers.Add()([x, f(x)])`` in a functional model, or ``x + f(x)``
(``keras.ops.add``) in a subclassed model's ``call``, is one Add unit (``equivalence.core.residual``) after the units
of ``f``.

Reading the chain back from the output, an Add's two operands are told apart by the graph: the skip is the one
the other (the branch) is computed from, so the walk follows the branch. Of two computed branches
(``Add()([a, b])``, neither computed from the other), ``a``'s units come first, then a Branch unit (``b`` starts
from the value both are computed from), then ``b``'s: the Add's operand order, which torch's ``a(x) + b(x)``
evaluates in. An Add of more than two tensors and a skip taken before its layer's activation are refused with the
reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from equivalence.core.residual import INPUT, Residual
from equivalence.core.walk import DenseUnit, ModelNotSupported
from equivalence.frameworks.keras.sequence import data_tensors
from equivalence.frameworks.registry import get_adapter

FRAMEWORK = "keras"


def is_add(op: Any) -> bool:
    """A ``keras.layers.Add`` layer, or the ``Add`` operation ``x + y`` and ``keras.ops.add`` record."""
    return isinstance(op, keras.layers.Add) or (type(op).__name__ == "Add"
                                                and type(op).__module__.startswith("keras.src.ops"))


class SecondBranch:
    """The operation of a walk's entry where a second branch starts (``b`` of ``a(x) + b(x)``): its skip is ``x``."""

    name = "branch"


SECOND_BRANCH = SecondBranch()


def _inputs(tensor: Any) -> list[Any]:
    history = getattr(tensor, "_keras_history", None)
    return [] if history is None else list(history.operation._inbound_nodes[history.node_index].input_tensors)


def _ancestors(tensor: Any, start: Any) -> list[Any]:
    """``tensor`` and the tensors it is computed from (back to ``start``), nearest first."""
    seen, order, queue = {id(tensor)}, [tensor], [tensor]
    while queue:
        t = queue.pop(0)
        for parent in [] if t is start else _inputs(t):
            if id(parent) not in seen:
                seen.add(id(parent))
                order.append(parent)
                queue.append(parent)
    return order


def operands(op: Any, node: Any, start: Any) -> tuple[Any, Any, Any]:
    """``(followed, skip, fork)`` of an Add. ``x + f(x)``: the branch, the skip (the operand the branch is computed
    from), None. ``a(x) + b(x)``: ``b``, ``a`` (each branch is walked back to ``x``, ``b``'s units right before the
    Add, as torch evaluates ``a(x) + b(x)``), and ``x``, the nearest value both are computed from."""
    def refuse(problem: str) -> ModelNotSupported:
        return ModelNotSupported(FRAMEWORK, op.name, type(op).__name__, None, problem)

    tensors = data_tensors(node)
    if len(tensors) != 2:
        raise refuse(f"an Add of {len(tensors)} tensors: the suite judges a residual Add of two, x + f(x)")
    a, b = tensors
    if beneath_skipped(a, start) is beneath_skipped(b, start):
        raise refuse("adds a tensor to itself (x + x): not a residual connection")
    first, second = _ancestors(a, start), _ancestors(b, start)
    if any(t is beneath_skipped(b, start) for t in first):
        return a, beneath_skipped(b, start), None
    if any(t is beneath_skipped(a, start) for t in second):
        return b, beneath_skipped(a, start), None
    reached = {id(t) for t in first}
    return b, a, next(t for t in second if id(t) in reached)  # start, at the latest


def beneath_skipped(tensor: Any, start: Any) -> Any:
    """The value under the layers skipped at inference a tensor went through (``Dropout(0.2)(x)``: ``x``): a
    Dropout on a skip, ``Add()([Dropout(0.2)(x), f(x)])``, adds ``x``."""
    while tensor is not start:
        history = getattr(tensor, "_keras_history", None)
        if history is None or not isinstance(history.operation, (keras.layers.Dropout, keras.layers.Identity)):
            break
        tensor = _inputs(tensor)[0]
    return tensor


def source_of(skip: Any, units: list[DenseUnit], where: dict[int, tuple[int, str]],
              refuse: Callable[[str], Exception]) -> int:
    """The unit whose output ``skip`` is (``INPUT``: the model's input); ``where`` maps each tensor met so far to
    (that unit, its activation then), so a value taken before its layer's activation is refused."""
    index, act = where.get(id(skip), (None, None))
    if index is None:
        raise refuse("a residual Add or branch whose operand is not an earlier layer's output or the model's input")
    if index != INPUT and units[index].activation != act:
        raise refuse(f"the skip connection takes the output of {units[index].name!r} before its activation "
                     f"{units[index].activation}: the suite judges a skip from a layer's output after its activation")
    return index


def residual_part(op: Any, node: Any, skip: Any, units: list[DenseUnit], where: dict[int, tuple[int, str]],
                  refuse: Callable[[str], Exception]) -> dict[str, Any]:
    """The Add unit's parts (``source_of`` its skip)."""
    index = source_of(skip, units, where, refuse)
    # the operands in the order written; under a Dropout on the skip (beneath_skipped: neither operand is the skip)
    # the branch first, the same sum bit for bit (IEEE addition commutes)
    return {"layer": op, "layer_kind": Residual(tuple(units[-1].out_shape), index), "act_op": None,
            "branch_first": data_tensors(node)[0] is not skip, "build": residual_unit}


def residual_unit(p: dict[str, Any]) -> DenseUnit:
    """The Add unit: its canonical input ``[branch, skip]`` split, added by the user's layer or op in the order
    written, its activation applied."""
    op, kind, act_op, first = p["layer"], p["layer_kind"], p["act_op"], p["branch_first"]
    adapter = get_adapter("keras")

    def run(x: np.ndarray) -> np.ndarray:
        branch, skip = (adapter.to_tensor(np.ascontiguousarray(part)) for part in kind.split(np.asarray(x)))
        pair = [branch, skip] if first else [skip, branch]
        y = op(pair) if isinstance(op, keras.layers.Layer) else op(*pair)
        if act_op is not None:
            y = adapter.run(act_op, y) if isinstance(act_op, keras.layers.Layer) else act_op(y)
        return adapter.to_numpy(y)

    return DenseUnit.without_weights(FRAMEWORK, op.name, type(op).__name__, p["position"], p["act"],
                                     p["act_source"], run, layer_kind=kind,
                                     in_shape=kind.operands_shape, out_shape=tuple(kind.features))
