"""Residual connections in a user's torch model: ``out = x + f(x)`` in ``forward`` (``+``, ``torch.add``,
``x.add(...)``, ``aten.add`` in a ``torch.export`` graph) is one Add unit (``equivalence.core.residual``) after the
units of ``f``.

The walker records where the chain forks (``taps``: a node whose value feeds two ops, mapped to the unit whose
output it is); the Add joining the chain's output with a tapped value closes the block. Two computed branches
``a(x) + b(x)`` are walked in ``forward``'s order: ``a``'s units, a Branch unit (``b`` starts from ``x`` again: an
exact copy), ``b``'s units, the Add of ``b`` and ``a``. A value tapped before an activation of its layer, a value
feeding three ops and ``torch.add`` with ``alpha`` are refused with the reason.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import torch
from torch import fx

from equivalence.core.residual import INPUT, Residual
from equivalence.core.walk import DenseUnit
from equivalence.frameworks.torch import TORCH_DTYPES, onnx2torch, to_numpy, to_tensor

FRAMEWORK = "torch"
_aten = torch.ops.aten
_OUT_OF_PLACE = {operator.add: operator.add, operator.iadd: operator.add, torch.add: torch.add,
                 _aten.add.Tensor: _aten.add.Tensor, _aten.add_.Tensor: _aten.add.Tensor, "add": "add", "add_": "add"}
"""The adds judged, each with the op the unit runs: the out-of-place one (``out += x`` is ``aten.add_`` in a
``torch.export`` graph; run in place it would write into the operand)."""


def is_add(node: fx.Node) -> bool:
    """``a + b``, ``a += b``, ``torch.add(a, b)``, ``a.add(b)``, ``a.add_(b)`` or ``aten.add(_).Tensor``."""
    return (node.op in ("call_function", "call_method") and isinstance(node.target, Hashable)
            and node.target in _OUT_OF_PLACE) or onnx2torch.is_add(node)


def fork(users: list[fx.Node]) -> bool:
    """A value feeding two ops that an Add joins first: the next layer of its chain and the Add (``x + f(x)``), or
    two branches (``a(x) + b(x)``). A concatenation or a cross-attention joining them is not a fork."""
    if len(users) != 2:
        return False
    first, second = (_downstream(u) for u in users)
    joins = [n for n in users[0].graph.nodes if n in first and n in second]
    return bool(joins) and is_add(joins[0])


def _downstream(node: fx.Node) -> set[fx.Node]:
    """``node`` and every node computed from it."""
    seen, stack = {node}, [node]
    while stack:
        for user in stack.pop().users:
            if user not in seen:
                seen.add(user)
                stack.append(user)
    return seen


def tap(current: fx.Node, pending: dict[str, Any] | None, units: list, taps: dict[fx.Node, int]) -> None:
    """Record ``current`` (the input, or the output of the unit being assembled) as a skip operand."""
    taps[current] = INPUT if pending is None else len(units)
    if pending is not None:
        pending["tapped"] = True


def check_untapped(pending: dict[str, Any], refuse: Callable[[str], Exception], act: str) -> None:
    """Refuse an activation attached to a unit whose output a skip connection already took."""
    if pending.get("tapped"):
        raise refuse(f"the skip connection takes the output of {pending['name']!r} before this {act}: the suite "
                     "judges a skip from a layer's output after its activation, or from the model's input")


def second_branch(current: fx.Node, tensors: list[fx.Node], taps: dict[fx.Node, int]) -> fx.Node | None:
    """The value a second branch starts from when ``node`` takes a tapped value other than the chain's output
    (``b(x)`` after ``a(x)``), else None."""
    return tensors[0] if len(tensors) == 1 and tensors[0] is not current and tensors[0] in taps else None


def residual_part(node: fx.Node, current: fx.Node, tensors: list[fx.Node], taps: dict[fx.Node, int],
                  refuse: Callable[[str], Exception]) -> dict[str, Any] | None:
    """The Add unit's parts when ``node`` adds the chain's output (``current``) and a tapped value; else None.
    An Add of anything else is refused naming the residual connection it is not."""
    if not is_add(node):
        return None
    if len(tensors) != 2 or current not in tensors:
        raise refuse("an Add that does not take the chain's output: the suite judges a residual x + f(x)")
    skip = tensors[1] if tensors[0] is current else tensors[0]
    if skip is current:
        raise refuse("adds a tensor to itself (x + x): not a residual connection")
    if skip not in taps:
        raise refuse("a residual Add of a value that is not an earlier layer's output: the suite judges x + f(x) and "
                     "a(x) + b(x), the skip or the branches taken from a layer's output or the model's input")
    alpha = node.kwargs.get("alpha", node.args[2] if len(node.args) > 2 else 1)
    if alpha != 1:
        raise refuse(f"torch.add with alpha={alpha}: the suite judges a plain sum")
    return {"skip": taps[skip], "operands": (current, skip), "build": residual_unit}


def _call(node: fx.Node, branch: fx.Node, skip: fx.Node) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The node's own add, its operands in the places the user wrote them."""
    if node.op == "call_module":  # onnx2torch's Add module
        target = node.graph.owning_module.get_submodule(node.target)
    else:
        target = _OUT_OF_PLACE[node.target]

    def call(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        put = lambda v: a if v is branch else b if v is skip else v  # noqa: E731
        args, kwargs = [put(v) for v in node.args], {k: put(v) for k, v in node.kwargs.items()}
        if node.op == "call_method":
            return getattr(args[0], target)(*args[1:], **kwargs)
        return target(*args, **kwargs)
    return call


def torch_axes(in_shape: tuple[int, ...], *, batch_first: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The axes that take a canonical (channels-last) batch of ``in_shape`` samples to torch's layout, and back:
    channels first on a spatial tensor; none moved on a token sequence (``batch_first``: ``(N, L, features)`` in
    torch too) or a vector."""
    if batch_first:
        return (tuple(range(len(in_shape) + 1)),) * 2
    rank = len(in_shape) - 1
    return (0, rank + 1, *range(1, rank + 1)), (0, *range(2, rank + 2), 1)


def residual_unit(p: dict[str, Any]) -> DenseUnit:
    """The Add unit: its canonical input ``[branch, skip]`` split, added by the user's op in torch's layout
    (channels first on a spatial tensor, batch-first on a token sequence), its activation applied, back to
    channels-last."""
    kind: Residual = p["layer_kind"]
    call, act_fn = _call(p["node"], *p["operands"]), p["act_fn"]
    first, last = torch_axes(kind.features, batch_first=p.get("batch_first", False))

    def run(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        dtype = TORCH_DTYPES.get(x.dtype.name, torch.float32)
        a, b = (to_tensor(np.ascontiguousarray(part.transpose(first)), dtype) for part in kind.split(x))
        with torch.no_grad():
            y = call(a, b)
            if act_fn is not None:
                y = act_fn(y)
        return to_numpy(y, x.dtype).transpose(last)

    return DenseUnit.without_weights(FRAMEWORK, p["name"], p["kind"], p["position"], p["act"], p["act_source"], run,
                                     layer_kind=kind,
                                     in_shape=kind.operands_shape, out_shape=tuple(kind.features))
