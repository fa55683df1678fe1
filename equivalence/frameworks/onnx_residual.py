"""Residual connections in an ONNX graph: an ``Add`` of the chain's tensor and an earlier one, read as the core's
``Residual`` unit (``equivalence.core.residual``), and a second branch ``a(x) + b(x)`` as a ``Branch`` unit, in the
kinds, order and indices the torch walker gives the model the graph was exported from.

The graph reader (``equivalence.frameworks.onnx_graph``) walks the nodes in order; ``Forks`` remembers the values a
later Add takes. A value feeding two nodes (a fork) is tapped when the walk meets it: both paths from it must meet
first at an ``Add`` (``x + f(x)``: the next layer and the Add; ``a(x) + b(x)``: two layers), else the node where
they meet (a ``Concat``, a ``Mul``, a ``Sub``...) is refused by name, as is a value feeding three nodes. When a node
takes a tapped value other than the chain's tensor, a second branch starts there: the chain's tensor (``a(x)``) waits
for the Add, which must be its one consumer. The Add of the chain's tensor and a tapped or waiting value of the same
shape and layout is one unit, its activation after it (``Relu``...) read with it, as every unit's is; it runs on ORT
as the Add and activation nodes cut out with two inputs, the canonical ``[branch, skip]`` input split in two
(``residual_runner``), channels-first where ONNX computes the tensor so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from equivalence.core.residual import Residual, skip_source, value_shape
from equivalence.core.walk import DenseUnit, ModelNotSupported
from equivalence.frameworks.graph_kinds import KindRead
from equivalence.frameworks.ort_errors import ORT_ERRORS, refusal

JOINED = "the suite judges a value feeding two nodes whose paths meet at an Add (x + f(x), a(x) + b(x))"


@dataclass(frozen=True)
class Value:
    """A tensor of the chain a later Add takes: the unit whose output it is (``INPUT``: the graph's input), the
    walk's state there (its canonical spatial shape, channels-last or not, its token sequence's ``(L, features)``)
    and the index of the Add that joins it."""

    tensor: str
    unit: int
    shape: tuple[int, ...] | None
    layout_last: bool
    tokens: tuple[int, int] | None
    join: int = -1


class Forks:
    """The values of a graph's chain that a residual Add or a second branch will take, met in the walk's order."""

    def __init__(self, graph: onnx.GraphProto, consumers: dict[str, list[int]]) -> None:
        self.graph, self.consumers = graph, consumers
        self.taps: dict[str, Value] = {}

    def tap(self, value: Value, permutation: np.ndarray | None) -> None:
        """Record ``value``, which feeds several nodes; ``ModelNotSupported`` unless two, whose paths meet first at
        an Add (that node named when it is not one)."""
        if value.tensor in self.taps:
            return
        users = sorted(set(self.consumers[value.tensor]))
        first = self.graph.node[users[0]]
        if len(users) > 2:
            raise _refuse(first, users[0], f"a branch: {value.tensor!r} feeds {len(users)} nodes (more than two live "
                                           f"branches); {JOINED}")
        self._meet(value, users[0], users[1], permutation)

    def tap_region(self, value: Value, region: Sequence[int], permutation: np.ndarray | None) -> None:
        """Record ``value``, the input of a region of nodes read as one unit (a self-attention, which feeds it to
        its queries, keys and values), when it feeds one node outside the region too: ``x + att(x)``, the
        region's last node standing for the branch through it."""
        outside = sorted(set(self.consumers.get(value.tensor, [])) - set(region))
        if not outside or value.tensor in self.taps:
            return
        if len(outside) > 1:
            raise _refuse(self.graph.node[outside[0]], outside[0],
                          f"a branch: {value.tensor!r} feeds a self-attention and {len(outside)} other nodes (more "
                          f"than two live branches); {JOINED}")
        self._meet(value, max(region), outside[0], permutation)

    def _meet(self, value: Value, one: int, other: int, permutation: np.ndarray | None) -> None:
        """Keep ``value`` when the paths from nodes ``one`` and ``other`` first meet at an Add, else refuse."""
        first = self.graph.node[min(one, other)]
        common = sorted(self._downstream(one) & self._downstream(other))
        if not common:
            raise _refuse(first, min(one, other),
                          f"a branch: {value.tensor!r} feeds two nodes whose paths never meet; {JOINED}")
        join = self.graph.node[common[0]]
        if join.op_type != "Add":
            raise _refuse(join, common[0], f"joins two branches from {value.tensor!r} with a {join.op_type}: "
                                           f"{JOINED}; concatenations, products and differences of branches are not "
                                           "judged")
        self._keep(value, common[0], permutation, first, min(one, other))

    def second_branch(self, node: onnx.NodeProto, index: int, dynamic: list[str], chain: Value) -> Value | None:
        """The tapped value a second branch starts from when ``node`` takes one other than the chain's tensor
        (``b(x)`` after ``a(x)``), else None; the chain's end (``a(x)``) then waits for the Add."""
        start = self.taps.get(dynamic[0]) if len(dynamic) == 1 and dynamic[0] != chain.tensor else None
        if start is None:
            return None
        if set(self.consumers.get(chain.tensor, [])) != {start.join}:
            join = self.graph.node[start.join]
            raise _refuse(node, index, f"starts a second branch from {start.tensor!r} before the first one ends at "
                                       f"the Add {join.name or join.op_type!r} that joins them (its end "
                                       f"{chain.tensor!r} feeds other nodes): {JOINED}")
        self._keep(chain, start.join, None, node, index)
        return start

    def joined(self, node: onnx.NodeProto, index: int, dynamic: list[str], current: str) -> Value | None:
        """The tapped or waiting value ``node`` adds to the chain's tensor ``current`` (a residual Add), None for
        another node; ``ModelNotSupported`` for an Add of two tensors that is not one."""
        if node.op_type != "Add" or len(dynamic) < 2:
            return None
        if len(dynamic) != 2 or current not in dynamic:
            raise _refuse(node, index, f"an Add of {', '.join(map(repr, dynamic))}, not of the previous layer's "
                                       f"output {current!r} and an earlier value: {JOINED}")
        skip = dynamic[1] if dynamic[0] == current else dynamic[0]
        if skip == current:
            raise _refuse(node, index, "adds a tensor to itself (x + x): not a residual connection")
        value = self.taps.get(skip)
        if value is None or value.join != index:
            raise _refuse(node, index, f"adds {skip!r}, which is not an earlier layer's output or the graph's input "
                                       f"that the chain forked from: {JOINED}")
        return value

    def _keep(self, value: Value, join: int, permutation: np.ndarray | None, node: onnx.NodeProto,
              index: int) -> None:
        if permutation is not None:
            raise _refuse(node, index, f"a branch from {value.tensor!r}, a Flatten's output in ONNX's channels-first "
                                       "order: the suite judges a skip connection before the Flatten or after the "
                                       "dense layer that follows it")
        self.taps[value.tensor] = Value(value.tensor, value.unit, value.shape, value.layout_last, value.tokens, join)

    def _downstream(self, start: int) -> set[int]:
        """The index of node ``start`` and of every node computed from its output."""
        seen, stack = {start}, [start]
        while stack:
            for tensor in self.graph.node[stack.pop()].output:
                for user in self.consumers.get(tensor, []):
                    if user not in seen:
                        seen.add(user)
                        stack.append(user)
        return seen


def residual_read(node: onnx.NodeProto, index: int, units: Sequence[DenseUnit], skip: Value, current: Value,
                  ) -> KindRead:
    """The Add of the chain's output (``current``, unit ``units[-1]``'s) and ``skip`` as the ``Residual`` kind;
    ``ModelNotSupported`` for operands of other shapes (a broadcast), layouts or no layer between them."""
    if not units or units[-1].layer_kind.name == "branch" or current.unit <= skip.unit:
        raise _refuse(node, index, f"a residual Add whose branch has no layer after {skip_source(skip.unit, units)}")
    branch, other = value_shape(units, current.unit), value_shape(units, skip.unit)
    if branch != other or (current.tokens is None) != (skip.tokens is None):
        raise _refuse(node, index, f"a residual Add of shapes {branch} (the branch) and {other} "
                                   f"({skip_source(skip.unit, units)}): the suite judges an Add of equal shapes, not "
                                   "a broadcast")
    if current.layout_last != skip.layout_last:
        raise _refuse(node, index, f"a residual Add of a channels-{'last' if current.layout_last else 'first'} "
                                   f"branch and a channels-{'last' if skip.layout_last else 'first'} skip: the suite "
                                   "judges an Add of two tensors in one layout")
    return KindRead.without_weights(Residual(branch, skip.unit), current.shape)


def residual_runner(session: Any, kind: Residual, *, into: bool, back: bool, dtype: np.dtype,
                    refuse: Callable[[str], ModelNotSupported]) -> Callable[[np.ndarray], np.ndarray]:
    """The Add unit on canonical numpy: ``[branch, skip]`` split into the cut-out graph's two inputs ``x`` and
    ``skip``, each made channels-first when ONNX adds them so (``into``), the output made channels-last again
    (``back``: unless a converter's Transpose after the Add, part of the unit, does it)."""

    def run(x: np.ndarray) -> np.ndarray:
        parts = kind.split(np.asarray(x))
        if into:
            parts = tuple(np.moveaxis(part, -1, 1) for part in parts)
        feeds = {name: np.ascontiguousarray(part, dtype=dtype) for name, part in zip(("x", "skip"), parts)}
        try:
            y = session.run(None, feeds)[0]
        except ORT_ERRORS as exc:
            raise refuse(f"not run on operands of shape {parts[0].shape}: {refusal(exc, str(dtype), '?')}") from None
        return np.moveaxis(y, 1, -1) if back else y

    return run


def walk_order(model: onnx.ModelProto) -> list[int]:
    """The indices of ``model``'s nodes in the order the reader walks them: the graph's; in a graph tf2onnx wrote,
    the branches of an Add of two computed branches in its operands' order (``Add()([a, b])``: ``a``'s nodes, then
    ``b``'s, as the Keras walker reads them; tf2onnx writes a topological order of its own). torch's exporter writes
    ``forward``'s order, which the torch walker reads: kept."""
    order = list(range(len(model.graph.node)))
    if model.producer_name != "tf2onnx":
        return order
    nodes = model.graph.node
    producer = {t: i for i, node in enumerate(nodes) for t in node.output}
    for node in nodes:
        operands = [producer[t] for t in node.input if t in producer]
        if node.op_type != "Add" or len(operands) != 2:
            continue
        first, second = (_ancestors(nodes, producer, i) for i in operands)
        a, b = first - second, second - first
        if a and b and order.index(min(b, key=order.index)) < order.index(min(a, key=order.index)):
            after = order.index(max(a, key=order.index))
            moved = [i for i in order if i in b]
            order = [i for i in order[:after + 1] if i not in b] + moved + order[after + 1:]
    return order if _topological(nodes, producer, order) else list(range(len(nodes)))


def _ancestors(nodes: Sequence[onnx.NodeProto], producer: dict[str, int], start: int) -> set[int]:
    """Node ``start`` and every node it is computed from."""
    seen, stack = {start}, [start]
    while stack:
        for t in nodes[stack.pop()].input:
            if t in producer and producer[t] not in seen:
                seen.add(producer[t])
                stack.append(producer[t])
    return seen


def _topological(nodes: Sequence[onnx.NodeProto], producer: dict[str, int], order: list[int]) -> bool:
    """Every node of ``order`` comes after the nodes computing its inputs."""
    place = {i: k for k, i in enumerate(order)}
    return all(place[producer[t]] < place[i] for i in order for t in nodes[i].input if t in producer)


def _refuse(node: onnx.NodeProto, index: int, problem: str) -> ModelNotSupported:
    return ModelNotSupported("onnx", node.name or f"{node.op_type}_{index}", node.op_type, index, problem)

