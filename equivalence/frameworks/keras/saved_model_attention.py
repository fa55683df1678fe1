"""Multi-head self-attention in a SavedModel's frozen graph, read as one region of nodes into the core's
``SelfAttention`` kind.

What ``model.export(path)`` writes (frozen: ``convert_variables_to_constants_v2``) for a Keras 3
``MultiHeadAttention(heads, key_dim)(h, h)`` on a ``(batch, L, E)`` token sequence, TensorFlow 2.21:

* each of the query, key and value projections (Keras' ``EinsumDense``): a ``BatchMatMulV2`` of the sequence by the
  kernel reshaped to ``(E, heads * key_dim)`` (a ``Reshape`` of the constant, folded), a ``Reshape`` to ``(batch, L,
  heads, key_dim)``, the ``(heads, key_dim)`` bias an ``AddV2``;
* the scores: an ``Einsum`` ``BTNH,BSNH->BNTS``, the scale ``1 / sqrt(key_dim)`` a ``Mul`` by a scalar after it, the
  ``Softmax``;
* the weighted values: an ``Einsum`` ``BNTS,BSNH->BTNH``;
* the output projection: a ``Reshape`` to ``(batch, L, heads * key_dim)``, a ``BatchMatMulV2`` by the kernel
  reshaped to ``(heads * key_dim, E)``, a ``BiasAdd``.

The region is found by roles, as in the ONNX and LiteRT readers (``equivalence.frameworks.onnx_attention``,
``equivalence.frameworks.litert_attention``): a ``Softmax`` whose input is a product (``Einsum``, ``BatchMatMul*``) of
two computed tensors through layout ops and a scalar ``Mul`` (an ``AddV2``, ``SelectV2``... there is a mask:
refused); the query and key that product's inputs, the values the other input of the product the weights feed; each
traced back through layout ops, a scalar ``Mul`` and a constant bias add to its ``BatchMatMulV2``/``MatMul`` by a
constant 2-D matrix, whose input must be the queries' sequence (else cross-attention, refused); the output projection
the first product by a constant after the values', with its bias add. The tokens and head count are read from the
``Reshape`` target ``(-1, L, heads, key_dim)`` on the query's path. What the region computes is judged: it runs as one
unit on TensorFlow against the float64 reference of the weights read, so a misread weight (or an einsum equation other
than Keras') is a difference named at the layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from equivalence.core.attention import SelfAttention
from equivalence.frameworks.keras.saved_model_kinds import Graph, node_of, tensor

LAYOUT_OPS = ("Reshape", "Transpose", "Identity")
PRODUCTS = ("Einsum", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")
PROJECTIONS = ("BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "MatMul")
BIAS_ADDS = ("AddV2", "Add", "BiasAdd")
MASK_OPS = ("AddV2", "Add", "Sub", "SelectV2", "Select", "Minimum", "Maximum", "Mul")
REGION_OPS = (*LAYOUT_OPS, *PRODUCTS, "MatMul", "AddV2", "Add", "BiasAdd", "Mul", "Softmax")
JUDGED = "Keras' MultiHeadAttention called as self-attention (mha(h, h)) without masks"
ROLES = ("query", "key", "value")


class AttentionRefused(Exception):
    """An attention region the suite does not judge: the node and why."""

    def __init__(self, node: Any, problem: str) -> None:
        super().__init__(problem)
        self.node, self.problem = node, problem


@dataclass(frozen=True)
class AttentionRegion:
    """A self-attention region: its kind, canonical weights (``SelfAttention.pack``), the stored matrices flat, its
    nodes (their names, in no order: the walk orders them), the tensor it takes and the one it gives."""

    layer_kind: SelfAttention
    W: np.ndarray
    b: np.ndarray | None
    native: np.ndarray
    nodes: frozenset[str]
    start: str
    end: str


@dataclass(frozen=True)
class _Projection:
    node: Any
    W: np.ndarray  # (in, out), as it multiplies
    stored: np.ndarray
    bias: np.ndarray | None
    split: tuple[int, int] | None  # the tokens and heads of the Reshape target on its path: (-1, L, heads, key_dim)
    source: str


def find_attentions(order: list[Any], graph: Graph, skipped: frozenset[str]) -> list[AttentionRegion]:
    """Every self-attention region of the frozen graph (``order``: its nodes in execution order; ``skipped``: nodes
    computed from constants or shapes alone). ``AttentionRefused`` naming the node of one the suite does not
    judge."""
    found = []
    for node in order:
        if node.op == "Softmax" and node.name not in skipped:
            product = _scores(graph, node)
            if product is not None:
                found.append(_region_of(graph, node, product, skipped))
    return found


def _dynamic(graph: Graph, node: Any) -> list[str]:
    return [tensor(t) for t in node.input if not t.startswith("^") and graph.constant(t) is None]


def _scalar(graph: Graph, node: Any) -> bool:
    constants = [graph.constant(t) for t in node.input if not t.startswith("^")]
    return len(_dynamic(graph, node)) == 1 and any(c is not None and np.size(c) == 1 for c in constants)


def _passes(graph: Graph, node: Any) -> bool:
    """A layout op of one computed tensor, or a scale."""
    dynamic = _dynamic(graph, node)
    return (node.op in LAYOUT_OPS and dynamic == [tensor(node.input[0])]) or (node.op == "Mul" and _scalar(graph,
                                                                                                          node))


def _scores(graph: Graph, softmax: Any) -> Any | None:
    """The product of two computed tensors the ``Softmax`` takes, through layout ops and a scale; a mask between them
    refused; None when no such product is above it."""
    t, masks = tensor(softmax.input[0]), []
    while (node := graph.nodes.get(node_of(t))) is not None:
        dynamic = _dynamic(graph, node)
        if node.op in PRODUCTS:
            if len(dynamic) != 2:
                return None
            if masks:
                raise AttentionRefused(masks[0], f"{_a(masks[0].op)} on the attention scores before the Softmax "
                                                 "(use_causal_mask, an attention_mask): masked attention is not "
                                                 f"judged; the suite judges {JUDGED}")
            return node
        if _passes(graph, node):
            t = dynamic[0]
        elif node.op in MASK_OPS and dynamic:
            masks.append(node)
            t = next((s for s in dynamic if _above(graph, s)), dynamic[0])
        else:
            return None
    return None


def _above(graph: Graph, t: str) -> bool:
    """Whether a product of two computed tensors gives ``t`` through layout ops and scales."""
    while (node := graph.nodes.get(node_of(t))) is not None:
        if node.op in PRODUCTS:
            return len(_dynamic(graph, node)) == 2
        if not _passes(graph, node):
            return False
        t = _dynamic(graph, node)[0]
    return False


def _region_of(graph: Graph, softmax: Any, product: Any, skipped: frozenset[str]) -> AttentionRegion:
    values, v = _values(graph, softmax)
    q_t, k_t = _dynamic(graph, product)
    q, k, vp = (_projection(graph, t, role, user) for t, role, user in
                ((q_t, "query", product), (k_t, "key", product), (v, "value", values)))
    for p, role in ((k, "key"), (vp, "value")):
        if p.source != q.source:
            raise AttentionRefused(p.node, f"projects the {role}s from another tensor than the queries': "
                                           f"cross-attention is not judged; the suite judges {JUDGED}")
    output, end = _output(graph, values)
    nodes = _region(graph, q.source, end, skipped)
    _check(graph, nodes, end)
    kind, W, b, native = _canonical((q, k, vp), output, softmax)
    return AttentionRegion(kind, W, b, native, frozenset(n.name for n in nodes), q.source, end)


def _values(graph: Graph, softmax: Any) -> tuple[Any, str]:
    """The product of the attention weights (its first input) by the values: the node and the values tensor."""
    t, at = f"{softmax.name}:0", softmax
    while True:
        users = graph.consumers.get(t, [])
        if len(users) != 1:
            raise AttentionRefused(at, f"the attention weights feed {len(users)} nodes: the suite judges {JUDGED}")
        node, dynamic = users[0], _dynamic(graph, users[0])
        if node.op in PRODUCTS and len(dynamic) == 2 and tensor(node.input[0]) == t:
            return node, dynamic[1]
        if node.op not in LAYOUT_OPS or dynamic != [t]:
            raise AttentionRefused(node, f"{_a(node.op)} between the Softmax and the product by the values: not "
                                         f"read; the suite judges {JUDGED}")
        t, at = f"{node.name}:0", node


def _matrix(graph: Graph, node: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """A projection's matrix ``(in, out)`` as it multiplies and as stored, when ``node`` multiplies a computed tensor
    by a constant 2-D one; else None."""
    if node.op not in PROJECTIONS or _dynamic(graph, node) != [tensor(node.input[0])]:
        return None
    stored = graph.constant(node.input[1])
    if stored is None or np.ndim(stored) != 2:
        return None
    flags = ("transpose_a", "transpose_b") if node.op == "MatMul" else ("adj_x", "adj_y")
    if node.attr[flags[0]].b:
        raise AttentionRefused(node, f"a {node.op} with {flags[0]}: not a projection of the tokens")
    return (stored.T if node.attr[flags[1]].b else stored), stored


def _projection(graph: Graph, t: str, role: str, user: Any) -> _Projection:
    """The projection the ``role`` tensor ``t`` comes from, traced back from the node ``user`` taking it."""
    bias, split = None, None
    while True:
        node = graph.nodes.get(node_of(t))
        if node is None or node.op == "Placeholder":
            raise AttentionRefused(user, f"takes the model's input as the {role}s, without a projection: not read")
        dynamic = _dynamic(graph, node)
        matrix = _matrix(graph, node)
        if matrix is not None:
            return _Projection(node, matrix[0], matrix[1], bias, split, _source(graph, dynamic[0]))
        if node.op == "Reshape" and split is None and dynamic == [tensor(node.input[0])]:
            target = graph.constant(node.input[1])
            if target is not None and np.size(target) == 4:
                split = int(np.reshape(target, -1)[1]), int(np.reshape(target, -1)[2])
        if _passes(graph, node):
            t = dynamic[0]
        elif node.op in BIAS_ADDS and len(dynamic) == 1 and bias is None:
            bias = next(c for s in node.input if (c := graph.constant(s)) is not None)
            t = dynamic[0]
        else:
            raise AttentionRefused(node, f"{_a(node.op)} between the {role} projection and the attention scores: not "
                                         f"read; the suite judges {JUDGED}")


def _source(graph: Graph, t: str) -> str:
    """The tensor a projection's input is, past ``Identity`` nodes."""
    while (node := graph.nodes.get(node_of(t))) is not None and node.op == "Identity":
        t = tensor(node.input[0])
    return t


def _output(graph: Graph, values: Any) -> tuple[_Projection, str]:
    """The output projection after the values' product (through layout ops) with its bias add, and the tensor the
    region ends at."""
    t, at = f"{values.name}:0", values
    while True:
        users = graph.consumers.get(t, [])
        if len(users) != 1:
            raise AttentionRefused(at, f"the attention's heads feed {len(users)} nodes: the suite judges {JUDGED}")
        node = users[0]
        matrix = _matrix(graph, node)
        if matrix is not None and tensor(node.input[0]) == t:
            break
        if node.op not in LAYOUT_OPS or _dynamic(graph, node) != [t]:
            raise AttentionRefused(node, f"{_a(node.op)} between the heads and the output projection: not read; the "
                                         f"suite judges {JUDGED}")
        t, at = f"{node.name}:0", node
    end, bias = f"{node.name}:0", None
    users = graph.consumers.get(end, [])
    if len(users) == 1 and users[0].op in BIAS_ADDS and len(_dynamic(graph, users[0])) == 1:
        bias = next(c for s in users[0].input if (c := graph.constant(s)) is not None)
        end = f"{users[0].name}:0"
    return _Projection(node, matrix[0], matrix[1], bias, None, t), end


def _region(graph: Graph, start: str, end: str, skipped: frozenset[str]) -> list[Any]:
    """Every node computing ``end`` from ``start`` (constants and shape computations left to the unit's copy);
    ``AttentionRefused`` naming a node taking a tensor computed elsewhere."""
    nodes: dict[str, Any] = {}
    stack: list[tuple[str, Any]] = [(end, graph.nodes[node_of(end)])]
    while stack:
        t, user = stack.pop()
        name = node_of(t)
        if tensor(t) == start or name in nodes or name in skipped or graph.constant(t) is not None:
            continue
        node = graph.nodes.get(name)
        if node is None or node.op == "Placeholder":
            raise AttentionRefused(user, f"takes {t!r}, computed outside the self-attention (not from its sequence): "
                                         f"a mask, or keys and values of another tensor, are not judged; the suite "
                                         f"judges {JUDGED}")
        nodes[name] = node
        stack.extend((s, node) for s in node.input if not s.startswith("^"))
    return list(nodes.values())


def _check(graph: Graph, nodes: list[Any], end: str) -> None:
    """Every node of the region is one the reading covers and feeds only the region (its end aside)."""
    inside = {n.name for n in nodes}
    for node in nodes:
        if node.op not in REGION_OPS:
            raise AttentionRefused(node, f"{_a(node.op)} inside the self-attention: not read; the suite judges "
                                         f"{JUDGED}")
        out = f"{node.name}:0"
        outside = [n.name for n in graph.consumers.get(out, []) if n.name not in inside] if out != end else []
        if outside:
            raise AttentionRefused(node, f"a branch: its output inside the self-attention also feeds {outside[0]!r} "
                                         "outside it (the attention scores as an output?)")


def _canonical(projections: tuple[_Projection, ...], output: _Projection,
               softmax: Any) -> tuple[SelfAttention, np.ndarray, np.ndarray | None, np.ndarray]:
    """The kind and its canonical weights (``SelfAttention.pack``), and the stored matrices flat."""
    q = projections[0]
    if q.split is None or min(q.split) < 1:
        raise AttentionRefused(q.node, "no Reshape of the queries to (-1, L, heads, key_dim) after their projection: "
                                       "the tokens and head count are not read")
    (L, heads), E = q.split, q.W.shape[0]
    parts: dict[str, np.ndarray] = {}
    for p, role in zip(projections, ROLES):
        if p.W.shape[0] != E or p.W.shape[1] % heads:
            raise AttentionRefused(p.node, f"a {role} projection {p.W.shape[0]} -> {p.W.shape[1]}: not {E} features "
                                           f"into {heads} heads of one size")
        parts[role] = p.W.reshape(E, heads, p.W.shape[1] // heads)
        if p.bias is not None:
            parts[f"{role}_bias"] = np.asarray(p.bias).reshape(heads, p.W.shape[1] // heads)
    d = parts["query"].shape[2]
    if {parts[r].shape[2] for r in ROLES} != {d}:
        raise AttentionRefused(projections[2].node, "heads of another size for the values than for queries and keys: "
                                                    "the suite's self-attention has one head size")
    if output.W.shape != (heads * d, E):
        raise AttentionRefused(output.node, f"an output projection {output.W.shape[0]} -> {output.W.shape[1]}: the "
                                            f"self-attention's is {heads * d} -> {E}")
    parts["output"] = output.W.reshape(heads, d, E)
    if output.bias is not None:
        parts["output_bias"] = np.asarray(output.bias).reshape(E)
    biased = [name for name in ("query_bias", "key_bias", "value_bias", "output_bias") if name in parts]
    if biased and len(biased) != 4:
        raise AttentionRefused(output.node, f"biases on {', '.join(biased)} alone: the suite judges attention with "
                                            "all four projections biased, or none")
    dtypes = {a.dtype for a in parts.values()}
    if len(dtypes) != 1 or next(iter(dtypes)) not in (np.float16, np.float32, np.float64):
        raise AttentionRefused(softmax, f"weights in {sorted(map(str, dtypes))}: the suite judges one of float16, "
                                        "float32, float64")
    kind = SelfAttention(E, heads, d, L)
    weights = kind.pack(parts)
    native = np.concatenate([np.ravel(p.stored) for p in (*projections, output)])
    return kind, weights.W, weights.b, native


def _a(op: str) -> str:
    return f"a{'n' if op[0] in 'AEIOU' else ''} {op}"
