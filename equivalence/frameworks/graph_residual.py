"""Residual connections in a graph of ops walked in order (a LiteRT flatbuffer's, a SavedModel's frozen graph), the
format-neutral part: which values a later Add takes, read as the core's ``Residual`` unit and a second branch as a
``Branch`` unit (``equivalence.core.residual``), in the kinds, order and indices the Keras walker gives.

It is ``onnx_residual.Forks``' logic on a graph given by callables: ops by their index in the walk's order, what each
is (``op``), which ops read a tensor (``users``) and which read an op's outputs (``successors``). A value feeding two
ops (a fork) is tapped when the walk meets it: both paths from it must meet first at an Add (``x + f(x)``, ``a(x) +
b(x)``), else the op where they meet (a ``MUL``, a ``SUB``, a ``CONCATENATION``...) is refused by name and position,
as is a value feeding three ops. When an op takes a tapped value other than the chain's tensor, a second branch starts
there; the chain's end waits for the Add, which must be its one reader. An Add of the chain's tensor and a tapped or
waiting value of the same shape is one unit.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, replace

from equivalence.core.residual import Residual, skip_source, value_shape
from equivalence.core.walk import DenseUnit, ModelNotSupported

JOINED = "the suite judges a value feeding two ops whose paths meet at an Add (x + f(x), a(x) + b(x))"

Refuse = Callable[[int, str], ModelNotSupported]
"""``refuse(index, problem)``: the one-line refusal naming the op at ``index`` of the walk's order."""


@dataclass(frozen=True)
class Value:
    """A tensor of the chain a later Add takes: the unit whose output it is (``INPUT``: the model's input), the walk's
    state there (its spatial shape per sample, its token sequence's ``(L, features)``) and the Add that joins it."""

    tensor: Hashable
    unit: int
    shape: tuple[int, ...] | None
    tokens: tuple[int, int] | None
    join: int = -1


class Forks:
    """The values of a graph's chain that a residual Add or a second branch will take, met in the walk's order."""

    def __init__(self, op: Callable[[int], str], users: Callable[[Hashable], Sequence[int]],
                 successors: Callable[[int], Iterable[int]], refuse: Refuse, adds: tuple[str, ...]) -> None:
        self.op, self.users, self.successors, self.refuse, self.adds = op, users, successors, refuse, adds
        self.taps: dict[Hashable, Value] = {}

    def forks(self, tensor: Hashable) -> bool:
        """Whether ``tensor`` feeds more than one op."""
        return len(set(self.users(tensor))) > 1

    def tap(self, value: Value, region: Iterable[int] = (), at: int = 0) -> None:
        """Record ``value`` when it feeds several ops from ``at`` on (the op walked; an earlier one reading it is a
        unit's own, a 1-D layer's squeeze) besides those of ``region`` (the unit reading it, whose ops may read it more
        than once: a LayerNorm's); ``ModelNotSupported`` unless two, whose paths meet first at an Add (that op named
        when it is not one). ``region``'s last op stands for the branch through it."""
        inside = set(region)
        users = sorted({u for u in self.users(value.tensor) if u >= at} - inside)
        if inside and users:
            users = sorted({max(inside), *users})
        if value.tensor in self.taps or len(users) < 2:
            return
        if len(users) > 2:
            raise self.refuse(users[0], f"a branch: its input feeds {len(users)} ops (more than two live branches); "
                                        f"{JOINED}")
        one, other = users
        common = sorted(self._downstream(one) & self._downstream(other))
        if not common:
            raise self.refuse(one, f"a branch: its input feeds two ops whose paths never meet; {JOINED}")
        join = common[0]
        if self.op(join) not in self.adds:
            raise self.refuse(join, f"joins two branches with a {self.op(join)}: {JOINED}; concatenations, products "
                                    "and differences of branches are not judged")
        self.taps[value.tensor] = replace(value, join=join)

    def second_branch(self, index: int, dynamic: Sequence[Hashable], chain: Value) -> Value | None:
        """The tapped value a second branch starts from when the op at ``index`` takes one other than the chain's
        tensor (``b(x)`` after ``a(x)``), else None; the chain's end (``a(x)``) then waits for the Add."""
        start = self.taps.get(dynamic[0]) if len(dynamic) == 1 and dynamic[0] != chain.tensor else None
        if start is None:
            return None
        if set(self.users(chain.tensor)) != {start.join}:
            raise self.refuse(index, f"starts a second branch before the first one ends at the Add (op {start.join}) "
                                     f"that joins them (its end feeds other ops): {JOINED}")
        self.taps[chain.tensor] = replace(chain, join=start.join)
        return start

    def joined(self, index: int, dynamic: Sequence[Hashable], current: Hashable) -> Value | None:
        """The tapped or waiting value the op at ``index`` adds to the chain's tensor ``current`` (a residual Add),
        None for another op; ``ModelNotSupported`` for an Add of two computed tensors that is not one."""
        if self.op(index) not in self.adds or len(dynamic) < 2:
            return None
        if len(dynamic) != 2 or current not in dynamic:
            raise self.refuse(index, f"an Add of {len(dynamic)} computed tensors, not of the previous layer's output "
                                     f"and an earlier value: {JOINED}")
        skip = dynamic[1] if dynamic[0] == current else dynamic[0]
        if skip == current:
            raise self.refuse(index, "adds a tensor to itself (x + x): not a residual connection")
        value = self.taps.get(skip)
        if value is None or value.join != index:
            raise self.refuse(index, "adds a tensor which is not an earlier layer's output (after its activation) or "
                                     f"the model's input that the chain forked from: {JOINED}")
        return value

    def _downstream(self, start: int) -> set[int]:
        """The index of op ``start`` and of every op computed from its outputs."""
        seen, stack = {start}, [start]
        while stack:
            for user in self.successors(stack.pop()):
                if user not in seen:
                    seen.add(user)
                    stack.append(user)
        return seen


def residual_kind(index: int, units: Sequence[DenseUnit], skip: Value, current: Value, refuse: Refuse) -> Residual:
    """The Add at ``index`` of the chain's output (``current``, unit ``units[-1]``'s) and ``skip`` as the
    ``Residual`` kind; ``ModelNotSupported`` for operands of other shapes (a broadcast) or no layer between them."""
    if not units or units[-1].layer_kind.name == "branch" or current.unit <= skip.unit:
        raise refuse(index, f"a residual Add whose branch has no layer after {skip_source(skip.unit, units)}")
    branch, other = value_shape(units, current.unit), value_shape(units, skip.unit)
    if branch != other or (current.tokens is None) != (skip.tokens is None):
        raise refuse(index, f"a residual Add of shapes {branch} (the branch) and {other} "
                            f"({skip_source(skip.unit, units)}): the suite judges an Add of equal shapes, not a "
                            "broadcast")
    return Residual(branch, skip.unit)
