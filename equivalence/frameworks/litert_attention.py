"""Multi-head self-attention in a LiteRT flatbuffer, read as one region of ops into the core's ``SelfAttention`` kind.

What ``TFLiteConverter.from_keras_model`` writes for a Keras 3 ``MultiHeadAttention(heads, key_dim)(h, h)`` on a
``(batch, L, E)`` token sequence (the batch free: every ``RESHAPE`` target starts with -1):

* the key, query and value projections: a ``FULLY_CONNECTED`` (``keep_num_dims``) by the kernel stored ``(heads *
  key_dim, E)``, a ``RESHAPE`` to ``(batch, L, heads, key_dim)``, the ``(heads, key_dim)`` bias as an ``ADD`` (no
  ``ADD`` without bias, nor for an all-zero bias: the converter drops it);
* the scores: a ``TRANSPOSE`` of each of query and key, a ``BATCH_MATMUL``, the scale ``1 / sqrt(key_dim)`` as a
  ``MUL`` by a scalar after it (Keras scales the query; the converter moves it), a ``RESHAPE`` that moves nothing, the
  ``SOFTMAX``;
* the weighted values: a ``TRANSPOSE`` of the values, a ``BATCH_MATMUL`` by the weights, a ``RESHAPE``, a
  ``TRANSPOSE`` and a ``RESHAPE`` to ``(batch, L, heads * key_dim)``;
* the output projection: a ``FULLY_CONNECTED`` by the kernel stored ``(E, heads * key_dim)``, its bias its third
  input.

The region is found by roles, as the ONNX reader finds it (``equivalence.frameworks.onnx_attention``): a ``SOFTMAX``
whose input is a ``BATCH_MATMUL`` of two computed tensors through layout ops (``RESHAPE``, ``TRANSPOSE``) and a
``MUL`` by a scalar (a ``SELECT_V2``, ``ADD``... there is a mask: refused); the query and key are that product's
inputs, the values the other input of the product the weights feed; each traced back through layout ops, a scalar
``MUL`` and a constant bias ``ADD`` to its ``FULLY_CONNECTED`` by a constant, whose input must be the sequence the
query's projects (else cross-attention, refused); the output projection the first ``FULLY_CONNECTED`` after the
values' product, its bias an ``ADD`` of a constant after it if not its third input. The region is every op between
the sequence and the output projection's; an op taking a tensor from outside (a mask) or an inner tensor feeding an
op outside it (the attention scores as an output) is refused, and so is any op the reading does not cover.

Assumed, not read: a projection's columns split into heads as ``(heads, key_dim)`` (Keras' layout), the head count
the scores' declared shape ``(batch, heads, L, L)``. What the region computes is judged: it runs as one unit on the
interpreter against the float64 reference of the weights read, so a misread weight or a region computing anything
else is a difference named at the layer, never a silent pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from equivalence.core.attention import SelfAttention

LAYOUT_OPS = ("RESHAPE", "TRANSPOSE")
MASK_OPS = ("ADD", "SUB", "SELECT", "SELECT_V2", "MINIMUM", "MAXIMUM", "MUL")
"""Ops a mask of the scores is written with (Keras' causal mask: ``FILL``, ``LOGICAL_AND``, ``SELECT_V2``)."""
REGION_OPS = ("FULLY_CONNECTED", "RESHAPE", "TRANSPOSE", "ADD", "MUL", "BATCH_MATMUL", "SOFTMAX", "DEQUANTIZE")
JUDGED = "Keras' MultiHeadAttention called as self-attention (mha(h, h)) without masks"
ROLES = ("query", "key", "value")


class AttentionRefused(Exception):
    """An attention region the suite does not judge: the op's index in the subgraph and why."""

    def __init__(self, index: int, problem: str) -> None:
        super().__init__(problem)
        self.index, self.problem = index, problem


@dataclass(frozen=True)
class AttentionRegion:
    """A self-attention region: its kind and canonical weights (``SelfAttention.pack``), the stored matrices flat,
    its ops' indices in execution order (the ``DEQUANTIZE`` ops of float16 weights apart), the tensor it takes and the
    one it gives."""

    layer_kind: SelfAttention
    W: np.ndarray
    b: np.ndarray | None
    native: np.ndarray
    ops: list[int]
    dequantize: list[int]
    start: int
    end: int

    @property
    def first(self) -> int:
        return self.ops[0]


@dataclass(frozen=True)
class _Projection:
    index: int  # the FULLY_CONNECTED
    stored: np.ndarray  # (out, in), as stored
    bias: np.ndarray | None
    source: int  # the tensor it projects


class _Graph:
    """The subgraph as the reader walks it: op names, each tensor's producer and users, constants (a ``DEQUANTIZE``d
    float16 constant counted as one, as float32)."""

    def __init__(self, names: list[str], ops: list[Any], constant: Callable[[int], np.ndarray | None],
                 shape: Callable[[int], tuple[int, ...]]) -> None:
        self.names, self.ops, self._constant, self.shape = names, ops, constant, shape
        self.producer = {int(t): i for i, op in enumerate(ops) for t in op.outputs}
        self.users: dict[int, list[int]] = {}
        for i, op in enumerate(ops):
            for t in dict.fromkeys(int(t) for t in op.inputs if int(t) >= 0):
                self.users.setdefault(t, []).append(i)

    def constant(self, t: int) -> np.ndarray | None:
        if t < 0:
            return None
        i = self.producer.get(t)
        if i is not None and self.names[i] == "DEQUANTIZE":
            stored = self._constant(int(self.ops[i].inputs[0]))
            return None if stored is None or stored.dtype != np.float16 else stored.astype(np.float32)
        return None if i is not None else self._constant(t)

    def dynamic(self, index: int) -> list[int]:
        return [int(t) for t in self.ops[index].inputs if int(t) >= 0 and self.constant(int(t)) is None]

    def scalar(self, index: int) -> bool:
        """The op takes one computed tensor and a constant of one value (a scale)."""
        constants = [self.constant(int(t)) for t in self.ops[index].inputs if int(t) >= 0]
        return len(self.dynamic(index)) == 1 and any(c is not None and c.size == 1 for c in constants)

    def single_user(self, t: int, at: int, what: str) -> int:
        users = self.users.get(t, [])
        if len(users) != 1:
            raise AttentionRefused(at, f"{what} feeds {len(users)} ops: the suite judges {JUDGED}")
        return users[0]


def find_attentions(names: list[str], ops: list[Any], constant: Callable[[int], np.ndarray | None],
                    shape: Callable[[int], tuple[int, ...]]) -> list[AttentionRegion]:
    """Every self-attention region of the subgraph (``names``: its ops' names; ``ops``: the ops; ``constant``: a
    tensor's stored value or None; ``shape``: its declared shape), in execution order. ``AttentionRefused`` naming
    the op of one the suite does not judge."""
    g = _Graph(names, ops, constant, shape)
    return [_region_of(g, i) for i, name in enumerate(names) if name == "SOFTMAX" and _scores(g, i) is not None]


def _scores(g: _Graph, softmax: int) -> int | None:
    """The ``BATCH_MATMUL`` of two computed tensors the ``SOFTMAX`` at ``softmax`` takes (through layout ops and a
    scale); ``AttentionRefused`` for a mask between them; None when no such product is above it."""
    t, masks = int(g.ops[softmax].inputs[0]), []
    while (i := g.producer.get(t)) is not None:
        name, dynamic = g.names[i], g.dynamic(i)
        if name == "BATCH_MATMUL":
            if len(dynamic) != 2:
                return None
            if masks:
                raise AttentionRefused(masks[0], f"{_a(g.names[masks[0]])} on the attention scores before the "
                                                 "SOFTMAX (use_causal_mask, an attention_mask): masked attention is "
                                                 f"not judged; the suite judges {JUDGED}")
            return i
        if name in LAYOUT_OPS or (name == "MUL" and g.scalar(i)):
            t = dynamic[0] if dynamic else -1
        elif name in MASK_OPS and dynamic:
            masks.append(i)
            t = max(dynamic, key=lambda s: len(g.shape(s)))  # the scores, not a mask of another rank
            t = next((s for s in dynamic if _above(g, s, "BATCH_MATMUL")), t)
        else:
            return None
    return None


def _above(g: _Graph, t: int, name: str) -> bool:
    """Whether an op named ``name`` computes ``t`` through layout ops and scalar ``MUL``s."""
    while (i := g.producer.get(t)) is not None:
        if g.names[i] == name:
            return True
        if not (g.names[i] in LAYOUT_OPS or (g.names[i] == "MUL" and g.scalar(i))) or not g.dynamic(i):
            return False
        t = g.dynamic(i)[0]
    return False


def _region_of(g: _Graph, softmax: int) -> AttentionRegion:
    product = _scores(g, softmax)
    assert product is not None
    values, v = _values(g, softmax)
    q_t, k_t = g.dynamic(product)
    q, k, vp = (_projection(g, t, role, user) for t, role, user in
                ((q_t, "query", product), (k_t, "key", product), (v, "value", values)))
    for p, role in ((k, "key"), (vp, "value")):
        if p.source != q.source:
            raise AttentionRefused(p.index, f"projects the {role}s from another tensor than the queries': "
                                            f"cross-attention is not judged; the suite judges {JUDGED}")
    output, end = _output(g, values)
    start = q.source
    ops = _region(g, start, end)
    _check(g, ops, end)
    kind, W, b, native = _canonical(g, (q, k, vp), output, softmax, start)
    inner = [i for i in ops if g.names[i] != "DEQUANTIZE"]
    return AttentionRegion(kind, W, b, native, inner, [i for i in ops if g.names[i] == "DEQUANTIZE"], start, end)


def _values(g: _Graph, softmax: int) -> tuple[int, int]:
    """The ``BATCH_MATMUL`` of the attention weights (its first input, through layout ops) by the values: its index
    and the values tensor."""
    t, at = int(g.ops[softmax].outputs[0]), softmax
    while True:
        i = g.single_user(t, at, "the attention weights (SOFTMAX)")
        dynamic = g.dynamic(i)
        if g.names[i] == "BATCH_MATMUL" and len(dynamic) == 2 and int(g.ops[i].inputs[0]) == t:
            return i, dynamic[1]
        if g.names[i] not in LAYOUT_OPS or dynamic != [t]:
            raise AttentionRefused(i, f"{_a(g.names[i])} between the SOFTMAX and the product by the values: not read; "
                                      f"the suite judges {JUDGED}")
        t, at = int(g.ops[i].outputs[0]), i


def _projection(g: _Graph, t: int, role: str, user: int) -> _Projection:
    """The ``FULLY_CONNECTED`` the ``role`` tensor ``t`` comes from, traced back from the op ``user`` taking it."""
    bias = None
    while True:
        i = g.producer.get(t)
        if i is None:
            raise AttentionRefused(user, f"takes the model's input as the {role}s, without a projection: not read")
        name, dynamic = g.names[i], g.dynamic(i)
        if name == "FULLY_CONNECTED" and dynamic == [int(g.ops[i].inputs[0])]:
            stored, own = _matrix(g, i)
            if own is not None and bias is not None:
                raise AttentionRefused(i, f"a FULLY_CONNECTED with a bias after which a bias is added again: the "
                                          f"{role} projection is read with one bias")
            return _Projection(i, stored, own if own is not None else bias, _source(g, dynamic[0]))
        if (name in LAYOUT_OPS and dynamic == [int(g.ops[i].inputs[0])]) or (name == "MUL" and g.scalar(i)):
            t = dynamic[0]
        elif name == "ADD" and len(dynamic) == 1 and bias is None:
            bias = next(c for s in g.ops[i].inputs if (c := g.constant(int(s))) is not None)
            t = dynamic[0]
        else:
            raise AttentionRefused(i, f"{_a(name)} between the {role} projection and the attention scores: not "
                                      f"read; the suite judges {JUDGED}")


def _source(g: _Graph, t: int) -> int:
    """The tensor a projection's input is a layout of (a ``RESHAPE`` to ``(-1, E)`` of TensorFlow's Tensordot)."""
    while (i := g.producer.get(t)) is not None and g.names[i] == "RESHAPE":
        t = int(g.ops[i].inputs[0])
    return t


def _matrix(g: _Graph, index: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A ``FULLY_CONNECTED``'s weight as stored ``(out, in)`` and its own bias."""
    op = g.ops[index]
    inputs = [int(t) for t in op.inputs]
    weight = g.constant(inputs[1]) if len(inputs) > 1 else None
    if weight is None or weight.ndim != 2:
        raise AttentionRefused(index, "a FULLY_CONNECTED by a computed or non-2-D tensor: an attention projection's "
                                      "is a constant matrix")
    if getattr(op.builtinOptions, "fusedActivationFunction", 0):
        raise AttentionRefused(index, "a FULLY_CONNECTED with a fused activation in the attention: not read")
    bias = g.constant(inputs[2]) if len(inputs) > 2 else None
    return weight, bias


def _output(g: _Graph, values: int) -> tuple[_Projection, int]:
    """The output projection after the values' product (through layout ops), and the tensor the region ends at: its
    output, or its bias ``ADD``'s."""
    t, at = int(g.ops[values].outputs[0]), values
    while True:
        i = g.single_user(t, at, "the attention's heads")
        if g.names[i] == "FULLY_CONNECTED" and int(g.ops[i].inputs[0]) == t:
            break
        if g.names[i] not in LAYOUT_OPS or g.dynamic(i) != [t]:
            raise AttentionRefused(i, f"{_a(g.names[i])} between the heads and the output projection: not read; the "
                                      f"suite judges {JUDGED}")
        t, at = int(g.ops[i].outputs[0]), i
    stored, bias = _matrix(g, i)
    end = int(g.ops[i].outputs[0])
    users = g.users.get(end, [])
    if bias is None and len(users) == 1 and g.names[users[0]] == "ADD" and len(g.dynamic(users[0])) == 1 and \
            not getattr(g.ops[users[0]].builtinOptions, "fusedActivationFunction", 0):
        bias = next(c for s in g.ops[users[0]].inputs if (c := g.constant(int(s))) is not None)
        end = int(g.ops[users[0]].outputs[0])
    return _Projection(i, stored, bias, t), end


def _region(g: _Graph, start: int, end: int) -> list[int]:
    """Every op computing ``end`` from ``start`` and constants, in execution order; ``AttentionRefused`` naming an op
    taking a tensor computed elsewhere."""
    ops: set[int] = set()
    stack, seen = [(end, g.producer[end])], set()
    while stack:
        t, user = stack.pop()
        if t in seen or t == start or t < 0:
            continue
        seen.add(t)
        i = g.producer.get(t)
        if i is None and g.constant(t) is not None:
            continue
        if i is None:
            raise AttentionRefused(user, f"takes a tensor computed outside the self-attention (not from its "
                                         f"sequence): a mask, or keys and values of another tensor, are not judged; "
                                         f"the suite judges {JUDGED}")
        ops.add(i)
        if g.names[i] != "DEQUANTIZE":  # a float16 weight: its input is the stored constant
            stack.extend((int(s), i) for s in g.ops[i].inputs)
    return sorted(ops)


def _check(g: _Graph, ops: list[int], end: int) -> None:
    """Every op of the region is one the reading covers and feeds only the region (its end aside)."""
    inside = set(ops)
    for i in ops:
        if g.names[i] not in REGION_OPS:
            raise AttentionRefused(i, f"{_a(g.names[i])} inside the self-attention: not read; the suite judges "
                                      f"{JUDGED}")
        for t in (int(t) for t in g.ops[i].outputs):
            outside = sorted(set(g.users.get(t, [])) - inside) if t != end else []
            if outside:
                raise AttentionRefused(i, f"a branch: its output inside the self-attention also feeds op "
                                          f"{outside[0]} outside it (the attention scores as an output?)")


def _canonical(g: _Graph, projections: tuple[_Projection, ...], output: _Projection, softmax: int,
               start: int) -> tuple[SelfAttention, np.ndarray, np.ndarray | None, np.ndarray]:
    """The kind and its canonical weights (``SelfAttention.pack``), and the stored matrices flat."""
    sequence = g.shape(start)
    scores = g.shape(int(g.ops[softmax].inputs[0]))
    if len(sequence) != 3 or len(scores) != 4 or scores[-2:] != (sequence[1],) * 2:
        raise AttentionRefused(softmax, f"scores of shape {list(scores)} on a sequence of {list(sequence)}: the "
                                        "suite reads (batch, heads, L, L) over a (batch, L, E) sequence")
    L, E, heads = sequence[1], sequence[2], scores[1]
    parts: dict[str, np.ndarray] = {}
    for p, role in zip(projections, ROLES):
        if p.stored.shape[1] != E or p.stored.shape[0] % heads:
            raise AttentionRefused(p.index, f"a {role} projection {p.stored.shape[1]} -> {p.stored.shape[0]}: not "
                                            f"{E} features into {heads} heads of one size")
        parts[role] = p.stored.T.reshape(E, heads, p.stored.shape[0] // heads)
        if p.bias is not None:
            parts[f"{role}_bias"] = p.bias.reshape(heads, p.stored.shape[0] // heads)
    d = parts["query"].shape[2]
    if {parts[r].shape[2] for r in ROLES} != {d}:
        raise AttentionRefused(projections[2].index, f"heads of {parts['value'].shape[2]} values and {d} query and "
                                                     "key features: the suite's self-attention has one head size")
    if output.stored.shape != (E, heads * d):
        raise AttentionRefused(output.index, f"an output projection {output.stored.shape[1]} -> "
                                             f"{output.stored.shape[0]}: the self-attention's is {heads * d} -> {E}")
    parts["output"] = output.stored.T.reshape(heads, d, E)
    if output.bias is not None:
        parts["output_bias"] = output.bias.reshape(E)
    biased = [name for name in ("query_bias", "key_bias", "value_bias", "output_bias") if name in parts]
    if biased and len(biased) != 4:
        raise AttentionRefused(output.index, f"biases on {', '.join(biased)} alone (the converter drops an all-zero "
                                             "bias): the suite judges attention with all four projections biased, or "
                                             "none")
    if {a.dtype for a in parts.values()} != {np.dtype(np.float32)}:
        raise AttentionRefused(output.index, "weights other than float32 (or float16 through DEQUANTIZE): not judged")
    kind = SelfAttention(E, heads, d, L)
    weights = kind.pack(parts)
    native = np.concatenate([p.stored.ravel() for p in (*projections, output)])
    return kind, weights.W, weights.b, native


def _a(op: str) -> str:
    return f"a{'n' if op[0] in 'AEIOU' else ''} {op}"
