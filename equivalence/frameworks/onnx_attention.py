"""Multi-head self-attention in an ONNX graph, read as one region of nodes into the core's ``SelfAttention`` kind.

Exporters write an attention layer as tens of ops. torch's (``torch.onnx.export(dynamo=False)``): a ``Transpose`` to
``(L, N, E)``, one ``MatMul`` by the packed ``in_proj_weight`` (transposed, ``(E, 3E)``) and its bias ``Add``, a
``Reshape``/``Gather`` split into query, key and value, per-head ``Reshape``s and ``Transpose``s, a ``MatMul`` of the
scaled query and key, a ``Softmax``, a ``MatMul`` by the values, the output projection (a ``Gemm``, or a ``MatMul``
without bias) and a ``Transpose`` back. tf2onnx's Keras ``MultiHeadAttention``: three ``MatMul``s by the
``(E, heads * d)`` kernels, bias ``Add``s of ``(heads, d)``, TensorFlow's einsums as ``Reshape``, ``Transpose`` and
``MatMul`` ops, the scale after the scores.

The region is found by roles, not by an op sequence. The scores are the input of a ``Softmax`` that is a product of
two computed tensors (only layout ops and a scale ``Mul``/``Div`` between; an ``Add``, ``Sub`` or ``Where`` there is
a mask, refused); the query and key are that product's inputs, the values the other input of the product the
weights feed. Each is traced back through layout ops, a scale, a bias ``Add`` (of a constant) and a ``Gather`` or
``Split`` (the part of a packed projection) to its projection, a ``MatMul``/``Gemm`` by a constant, whose input must
be the sequence the region starts at (else cross-attention, refused). The output projection is the first
``MatMul``/``Gemm`` by a constant after the values' product, with its bias ``Add``, and the layout ops after it up to
the batch-first ``(batch, L, E)`` tensor. The region is every node between the sequence and that tensor; a node
taking a tensor from outside it is refused (a mask, cross-attention), and so is an inner tensor feeding a node
outside it (the attention weights as a second output).

Assumed, not read from the graph: part ``p`` of a packed projection (its ``Gather`` index, its ``Split`` output) is
its columns ``[p * w, (p + 1) * w)``, and a projection's columns split into heads as ``(heads, d)`` (torch's and
Keras' layouts). The head count is the scores' shape, ``(batch, heads, L, L)`` or ``(batch * heads, L, L)``, learned
by running the graph once on zeros. What the region computes is then judged: it runs as one unit on ORT against the
float64 reference of the weights read, so a misread weight, or a region computing anything else (another scale,
interleaved heads), is a difference named at the layer, never a silent pass.

torch's exporter bakes the batch it traced with into the region's ``Reshape`` targets: in a graph whose input
declares a fixed batch, the attention unit runs in chunks of that batch (``InBatches``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from equivalence.core.attention import SelfAttention
from equivalence.core.walk import ModelNotSupported
from equivalence.frameworks.onnx_kinds import attr
from equivalence.frameworks.ort_errors import ORT_ERRORS, refusal

LAYOUT_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Flatten")
"""Ops that move a tensor's elements without computing: between a projection and the scores, heads split and
joined."""
SCALE_OPS = ("Mul", "Div")
MASK_OPS = ("Add", "Sub", "Where")
"""Ops that put a mask on the scores (an ``attn_mask``, a ``key_padding_mask``, a causal mask)."""
DATA_OPS = LAYOUT_OPS + SCALE_OPS + ("MatMul", "Gemm", "Add", "Softmax", "Gather", "Split", "Dropout")
"""The ops a region computes its values with (shape computations aside)."""
JUDGED = "batch-first multi-head self-attention without masks (torch's MultiheadAttention(x, x, x), Keras' " \
         "MultiHeadAttention(x, x))"
ROLES = ("query", "key", "value")


@dataclass(frozen=True)
class AttentionRead:
    """A self-attention region: its kind, canonical weights (``SelfAttention.pack``), the weights as stored, its
    nodes' indices in graph order, the tensor it gives and the graph's fixed batch (None: free)."""

    layer_kind: SelfAttention
    W: np.ndarray
    b: np.ndarray | None
    native: np.ndarray
    nodes: list[int]
    output: str
    batch: int | None


@dataclass(frozen=True)
class _Projection:
    """A query, key or value projection: its ``MatMul``/``Gemm``, the matrix it multiplies by ``(in, out)``, its
    bias, the part of a packed projection it takes (None: all of it) and the tensor it projects."""

    index: int
    W: np.ndarray
    stored: np.ndarray
    bias: np.ndarray | None
    bias_packed: bool  # the bias is added before the parts are taken: sliced as the columns are
    part: int | None
    source: str


class _Graph:
    """The graph as the reader walks it: each tensor's producer and users, and which tensors are static (constants,
    and what ``Shape`` nodes and constants alone compute: shape arithmetic)."""

    def __init__(self, model: onnx.ModelProto, consts: dict[str, np.ndarray]) -> None:
        self.model, self.nodes, self.consts = model, list(model.graph.node), consts
        self.producer = {t: i for i, n in enumerate(self.nodes) for t in n.output}
        self.users: dict[str, list[int]] = {}
        for i, node in enumerate(self.nodes):
            for t in dict.fromkeys(t for t in node.input if t):
                self.users.setdefault(t, []).append(i)
        self.arithmetic = _arithmetic_of(self.nodes, consts)
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)

    def static(self, t: str) -> bool:
        return not t or t in self.consts or t in self.arithmetic

    def dynamic(self, node: onnx.NodeProto) -> list[str]:
        return [t for t in node.input if not self.static(t)]

    def takers(self, t: str) -> list[int]:
        """The nodes computing values with ``t`` (not its shape)."""
        return [i for i in self.users.get(t, []) if self.nodes[i].output[0] not in self.arithmetic]

    def refuse(self, index: int, problem: str) -> ModelNotSupported:
        node = self.nodes[index]
        return ModelNotSupported("onnx", node.name or f"{node.op_type}_{index}", node.op_type, index, problem)


def _arithmetic_of(nodes: list[onnx.NodeProto], consts: dict[str, np.ndarray]) -> frozenset[str]:
    """Tensors computed by ``Shape`` nodes, or from those and constants alone by other nodes than ``Constant`` and
    its ``Identity`` (torch's ``Mod`` of two constants, its ``Slice`` of a shape by it, in a region's reshapes): copied
    with the region's nodes."""
    out: set[str] = set()
    for node in nodes:
        inputs = [t for t in node.input if t]
        if node.output[0] in consts:
            continue
        if node.op_type == "Shape" or (inputs and all(t in consts or t in out for t in inputs)):
            out.update(node.output)
    return frozenset(out)


def sequence_input(value: onnx.ValueInfoProto) -> tuple[int, int] | None:
    """``(L, E)`` of a graph's float input ``(batch, L, E)`` with ``L`` and ``E`` fixed (a sequence an attention may
    start at); else None."""
    dims = value.type.tensor_type.shape.dim
    dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
    if len(dims) != 3 or not np.issubdtype(dtype, np.floating) or not all(d.dim_value > 0 for d in dims[1:]):
        return None
    return dims[1].dim_value, dims[2].dim_value


def read_attention(model: onnx.ModelProto, consts: dict[str, np.ndarray], start: str, tokens: tuple[int, int],
                   first: int) -> AttentionRead | None:
    """The self-attention region starting at the sequence ``start`` ``(batch, *tokens)`` whose first node is
    ``first``; None when no attention starts there; ``ModelNotSupported`` naming the node of one the suite does not
    judge."""
    g = _Graph(model, consts)
    found = _scores(g, start)
    if found is None:
        return None
    softmax, product = found
    values, v = _values(g, softmax)
    scores = g.nodes[product]
    q, k, vp = (_projection(g, t, role, start, user) for t, role, user in
                ((scores.input[0], "query", product), (scores.input[1], "key", product), (v, "value", values)))
    if q.source != start:
        return None  # an attention of a later tensor: the walk reads the layers before it first
    for p, role in ((k, "key"), (vp, "value")):
        if p.source != start:
            raise g.refuse(p.index, f"projects the {role}s from {p.source!r}, not from the queries' sequence "
                                    f"{start!r}: cross-attention (keys and values of another tensor, as kdim or vdim "
                                    f"make them) is not judged; the suite judges {JUDGED}")
    output, ends = _output(g, values)
    region = _region(g, start, ends[0][1])
    if first != min(i for i in region if not _arithmetic(g, i)):
        return None  # the walk meets another node of the sequence first
    shapes, batch = _probe(g, [g.nodes[softmax].input[0]] + [t for _, t in ends], tokens, first, q.W.dtype)
    heads = _heads(g, softmax, shapes[g.nodes[softmax].input[0]], shapes["batch"], tokens)
    end = _end(g, ends, shapes, tokens)
    region = _region(g, start, end)
    _check(g, region, end)
    kind, W, b, native = _canonical(g, (q, k, vp), output, heads, tokens)
    return AttentionRead(kind, W, b, native, region, end, batch)


# --- the roles ------------------------------------------------------------------------------------

def _descendants(g: _Graph, start: str) -> set[int]:
    """Every node computed from ``start``, shape computations included."""
    seen: set[int] = set()
    stack = [start]
    while stack:
        for i in g.users.get(stack.pop(), []):
            if i not in seen:
                seen.add(i)
                stack.extend(g.nodes[i].output)
    return seen


def _scores(g: _Graph, start: str) -> tuple[int, int] | None:
    """The first ``Softmax`` after ``start`` (graph order) of a product of two computed tensors: its index and the
    product's (``MatMul``); ``ModelNotSupported`` for a mask between them; None without one."""
    for i in sorted(_descendants(g, start)):
        if g.nodes[i].op_type != "Softmax":
            continue
        found = _product_above(g, g.nodes[i].input[0], [])
        if found is None:
            continue
        product, path = found
        masks = [j for j in path if g.nodes[j].op_type in MASK_OPS]
        if masks:
            raise g.refuse(min(masks), f"{_a(g.nodes[min(masks)].op_type)} on the attention scores before the Softmax "
                                       "(an attn_mask, a key_padding_mask, a causal mask): masked attention is not "
                                       f"judged; the suite judges {JUDGED}")
        return i, product
    return None


def _product_above(g: _Graph, t: str, path: list[int]) -> tuple[int, list[int]] | None:
    """The ``MatMul`` of two computed tensors ``t`` is computed from through layout ops, a scale and mask ops, and
    the nodes between; else None."""
    i = g.producer.get(t)
    if i is None:
        return None
    node, dynamic = g.nodes[i], g.dynamic(g.nodes[i])
    if node.op_type == "MatMul":
        return (i, path) if len(dynamic) == 2 else None
    if (node.op_type in LAYOUT_OPS or (node.op_type in SCALE_OPS and len(dynamic) == 1)) and dynamic:
        return _product_above(g, dynamic[0], path + [i])
    if node.op_type in MASK_OPS:
        for data in dynamic:
            found = _product_above(g, data, path + [i])
            if found is not None:
                return found
    return None


def _values(g: _Graph, softmax: int) -> tuple[int, str]:
    """The product of the attention weights by the values (a ``MatMul``, the weights its first input, through
    layout ops and an identity ``Dropout``): its index and the values tensor."""
    t, at = g.nodes[softmax].output[0], softmax
    while True:
        users = g.takers(t)
        if len(users) != 1:
            raise g.refuse(at, f"the attention weights {t!r} feed {len(users)} nodes: the suite judges them multiplied "
                               "by the values alone (the weights not an output: need_weights=False, or unused)")
        i = users[0]
        node = g.nodes[i]
        if node.op_type == "MatMul" and node.input[0] == t and not g.static(node.input[1]):
            return i, node.input[1]
        if node.op_type == "Dropout":
            _identity(g, i)
        elif node.op_type not in LAYOUT_OPS or node.input[0] != t:
            raise g.refuse(i, f"{_a(node.op_type)} between the Softmax and the product by the values: not read; the "
                              f"suite judges {JUDGED}")
        t, at = node.output[0], i


def _identity(g: _Graph, index: int) -> None:
    """A ``Dropout`` is the identity unless its ``training_mode`` input is set (a constant true, or computed)."""
    node = g.nodes[index]
    mode = node.input[2] if len(node.input) > 2 else ""
    if mode and (mode not in g.consts or bool(np.asarray(g.consts[mode]).reshape(-1)[0])):
        raise g.refuse(index, "a Dropout in training mode (its training_mode input set): dropout that drops is not "
                              "judged; export the model in eval mode")


def _projection(g: _Graph, t: str, role: str, start: str, user: int) -> _Projection:
    """The projection the ``role`` tensor ``t`` comes from, traced back from the node ``user`` that takes it."""
    part: int | None = None
    bias, bias_packed = None, False
    while True:
        i = g.producer.get(t)
        if i is None:
            raise g.refuse(user, f"takes the graph's input {t!r} as the {role}s, without a projection: not "
                                 f"attention's; the suite judges {JUDGED}")
        node, dynamic = g.nodes[i], g.dynamic(g.nodes[i])
        op = node.op_type
        if op in ("MatMul", "Gemm") and dynamic == [node.input[0]]:
            W, stored, c = _matrix(g, i)
            if c is not None and bias is not None:
                raise g.refuse(i, f"a Gemm with a C after which a bias is added again: the {role} projection is read "
                                  "with one bias")
            return _Projection(i, W, stored, c if c is not None else bias, bias_packed or c is not None, part,
                               _source(g, node.input[0], start))
        if op == "Dropout":
            _identity(g, i)
            t = node.input[0]
        elif (op in LAYOUT_OPS and dynamic == [node.input[0]]) or (op in SCALE_OPS and len(dynamic) == 1):
            t = dynamic[0]
        elif op == "Add" and len(dynamic) == 1 and bias is None:
            constant = next((g.consts[s] for s in node.input if s in g.consts), None)
            if constant is None:
                raise g.refuse(i, f"adds a computed tensor to the {role}s, not a constant bias: not read")
            bias, bias_packed, t = constant, part is not None, dynamic[0]
        elif op == "Gather" and part is None and dynamic == [node.input[0]] and node.input[1] in g.consts and \
                np.asarray(g.consts[node.input[1]]).size == 1:
            part, t = int(np.asarray(g.consts[node.input[1]]).reshape(-1)[0]), node.input[0]
        elif op == "Split" and part is None and dynamic == [node.input[0]]:
            part, t = list(node.output).index(t), node.input[0]
        elif op in ("Concat", "Pad"):
            raise g.refuse(i, f"{_a(op)} onto the {role}s: extra key or value tokens (torch's add_bias_kv or "
                              f"add_zero_attn) are not judged; the suite judges {JUDGED}")
        else:
            raise g.refuse(i, f"{_a(op)} between the {role} projection and the attention scores: not read; the suite "
                              f"judges {JUDGED}")


def _source(g: _Graph, t: str, start: str) -> str:
    """The tensor a projection's input is a layout of (torch transposes the sequence to ``(L, N, E)`` first)."""
    while t != start and t in g.producer and g.nodes[g.producer[t]].op_type in LAYOUT_OPS:
        t = g.nodes[g.producer[t]].input[0]
    return t


def _matrix(g: _Graph, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A projection's matrix ``(in, out)`` as it multiplies, as stored, and a ``Gemm``'s ``C`` (its bias)."""
    node = g.nodes[index]
    stored = g.consts.get(node.input[1])
    if stored is None or stored.ndim != 2:
        raise g.refuse(index, f"{_a(node.op_type)} by a computed or non-2-D tensor, not a constant weight matrix: an "
                              "attention projection's is one")
    if node.op_type == "MatMul":
        return stored, stored, None
    if attr(node, "transA", 0) or attr(node, "alpha", 1.0) != 1.0 or attr(node, "beta", 1.0) != 1.0:
        raise g.refuse(index, "a Gemm with transA, alpha or beta: the suite reads a projection's plain product")
    c = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if c is not None and c not in g.consts:
        raise g.refuse(index, "a Gemm adding a computed C, not a constant bias")
    return (stored.T if attr(node, "transB", 0) else stored), stored, None if c is None else g.consts[c]


def _output(g: _Graph, values: int) -> tuple[_Projection, list[tuple[int, str]]]:
    """The output projection after the values' product, and the tensors the region may end at: its output (after its
    bias ``Add``), then each layout op after it."""
    t = g.nodes[values].output[0]
    while True:
        users = g.takers(t)
        if len(users) != 1:
            raise g.refuse(values, f"the attention's heads {t!r} feed {len(users)} nodes: the suite judges them fed to "
                                   "the output projection alone")
        i, node = users[0], g.nodes[users[0]]
        if node.op_type in ("MatMul", "Gemm") and node.input[0] == t and node.input[1] in g.consts:
            break
        if node.op_type not in LAYOUT_OPS or node.input[0] != t:
            raise g.refuse(i, f"{_a(node.op_type)} between the heads and the output projection: not read; the suite "
                              f"judges {JUDGED}")
        t = node.output[0]
    W, stored, c = _matrix(g, i)
    ends, bias = [(i, node.output[0])], c
    after = _single_user(g, node.output[0])
    if c is None and after is not None and g.nodes[after].op_type == "Add" and \
            len(g.dynamic(g.nodes[after])) == 1 and any(s in g.consts for s in g.nodes[after].input):
        bias = next(g.consts[s] for s in g.nodes[after].input if s in g.consts)
        ends = [(after, g.nodes[after].output[0])]
    while (after := _single_user(g, ends[-1][1])) is not None and g.nodes[after].op_type in LAYOUT_OPS and \
            g.nodes[after].input[0] == ends[-1][1]:
        ends.append((after, g.nodes[after].output[0]))
    return _Projection(i, W, stored, bias, False, None, t), ends


def _a(op: str) -> str:
    return f"a{'n' if op[0] in 'AEIOU' else ''} {op}"


def _single_user(g: _Graph, t: str) -> int | None:
    users = g.takers(t)
    return users[0] if len(users) == 1 else None


# --- the region -----------------------------------------------------------------------------------

def _region(g: _Graph, start: str, end: str) -> list[int]:
    """Every node ``end`` is computed with from ``start`` and constants, in graph order; ``ModelNotSupported``
    naming the node that takes a tensor from outside."""
    inside = {t for i in _descendants(g, start) for t in g.nodes[i].output}
    nodes: set[int] = set()
    seen: set[str] = set()
    stack: list[tuple[str, int | None]] = [(end, None)]
    while stack:
        t, user = stack.pop()
        if t in seen or t == start or not t or t in g.consts:
            continue
        seen.add(t)
        i = g.producer.get(t)
        if i is None or (t not in inside and t not in g.arithmetic):
            raise g.refuse(user if user is not None else g.producer[end],
                           f"takes {t!r}, computed outside the self-attention (not from its sequence {start!r}): a "
                           f"mask, or keys and values of another tensor, are not judged; the suite judges {JUDGED}")
        nodes.add(i)
        stack.extend((s, i) for s in g.nodes[i].input)
    return sorted(nodes)


def _check(g: _Graph, region: list[int], end: str) -> None:
    """Every node of the region computes with an op the reading covers, an identity ``Dropout``, and feeds only the
    region (its end aside)."""
    inside = set(region)
    for i in region:
        node = g.nodes[i]
        if _arithmetic(g, i):
            continue
        if node.op_type not in DATA_OPS:
            raise g.refuse(i, f"{_a(node.op_type)} inside the self-attention: not read; the suite judges {JUDGED}")
        if node.op_type == "Dropout":
            _identity(g, i)
        for t in node.output:
            outside = sorted(set(g.users.get(t, [])) - inside) if t != end else []
            if outside:
                raise g.refuse(i, f"a branch: {t!r} inside the self-attention also feeds node {outside[0]} outside it "
                                  "(the attention weights as an output?)")


def _arithmetic(g: _Graph, index: int) -> bool:
    """A node of shape arithmetic (on shapes or constants), not of the values."""
    return any(t in g.arithmetic for t in g.nodes[index].output)


def _probe(g: _Graph, tensors: list[str], tokens: tuple[int, int], first: int,
           dtype: np.dtype) -> tuple[dict[str, Any], int | None]:
    """The shapes of ``tensors`` when the whole graph runs once on zeros (a copy of it; the user's is left as it
    is), under ``"batch"`` the batch it ran with, and the graph's fixed batch (None: free, run with ``L + 1``)."""
    graph = g.model.graph
    value = next(i for i in graph.input if i.name not in g.consts)
    dims = value.type.tensor_type.shape.dim
    fixed = dims[0].dim_value if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
    batch = fixed or tokens[0] + 1  # not L: a batch axis taken for the tokens' shows
    shape = [batch] + [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else tokens[i]
                       for i, d in enumerate(dims[1:])]
    elem = value.type.tensor_type.elem_type
    probe = onnx.ModelProto()
    probe.CopyFrom(g.model)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(t, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), None)
                              for t in tensors)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        outs = session.run(None, {value.name: np.zeros(shape, helper.tensor_dtype_to_np_dtype(elem))})
    except ORT_ERRORS as exc:
        raise g.refuse(first, f"a self-attention whose shapes were not learned (the graph run once on zeros of "
                              f"shape {shape}): {refusal(exc, str(np.dtype(dtype)), g.opset)}") from None
    return {"batch": batch, **{t: tuple(np.shape(o)) for t, o in zip(tensors, outs)}}, fixed


def _heads(g: _Graph, softmax: int, scores: tuple[int, ...], batch: int, tokens: tuple[int, int]) -> int:
    """The head count: the scores' ``(batch, heads, L, L)`` or ``(batch * heads, L, L)``."""
    L = tokens[0]
    axis = attr(g.nodes[softmax], "axis", -1 if g.opset >= 13 else 1)  # over the last axis from opset 13
    if axis not in (-1, len(scores) - 1):
        raise g.refuse(softmax, f"a Softmax over axis {axis} of the scores {scores}: attention's is over the keys "
                                "(the last axis)")
    if scores[-2:] != (L, L):
        raise g.refuse(softmax, f"scores of shape {scores} (run on a batch of {batch}): not over the {L} tokens of "
                                "the batch-first sequence (batch_first=False attends over the batch)")
    if len(scores) == 4 and scores[0] == batch:
        return scores[1]
    if len(scores) == 3 and scores[0] % batch == 0:
        return scores[0] // batch
    raise g.refuse(softmax, f"scores of shape {scores} (run on a batch of {batch}): the head count is not "
                            "inferable; the suite reads (batch, heads, L, L) or (batch * heads, L, L)")


def _end(g: _Graph, ends: list[tuple[int, str]], shapes: dict[str, Any], tokens: tuple[int, int]) -> str:
    """The last tensor after the output projection that is the batch-first ``(batch, L, E)`` sequence."""
    wanted = (shapes["batch"], *tokens)
    fitting = [t for _, t in ends if shapes[t] == wanted]
    if not fitting:
        raise g.refuse(ends[0][0], f"the self-attention gives {[shapes[t] for _, t in ends]} (run on a batch of "
                                   f"{shapes['batch']}), never the batch-first {wanted} sequence it takes")
    return fitting[-1]


# --- the weights ----------------------------------------------------------------------------------

def _canonical(g: _Graph, projections: tuple[_Projection, _Projection, _Projection], output: _Projection,
               heads: int, tokens: tuple[int, int]) -> tuple[SelfAttention, np.ndarray, np.ndarray | None, np.ndarray]:
    """The kind and its canonical weights (``SelfAttention.pack``), and the stored matrices flat."""
    L, E = tokens
    shared = Counter(p.index for p in projections)
    parts: dict[str, np.ndarray] = {}
    for p, role in zip(projections, ROLES):
        kernel, bias = _columns(g, p, role, shared[p.index], E)
        if kernel.shape[1] % heads:
            raise g.refuse(p.index, f"a {role} projection of {kernel.shape[1]} columns: not {heads} heads of one size")
        parts[role] = kernel.reshape(E, heads, kernel.shape[1] // heads)
        if bias is not None:
            parts[f"{role}_bias"] = bias.reshape(heads, kernel.shape[1] // heads)
    d = parts["query"].shape[2]
    if {parts[r].shape[2] for r in ROLES} != {d}:
        raise g.refuse(projections[2].index, f"heads of {parts['value'].shape[2]} values and {d} query and key "
                                             "features: the suite's self-attention has one head size")
    if output.W.shape != (heads * d, E):
        raise g.refuse(output.index, f"an output projection {output.W.shape[0]} -> {output.W.shape[1]}: the "
                                     f"self-attention's is {heads * d} -> {E} (its input's features)")
    parts["output"] = output.W.reshape(heads, d, E)
    if output.bias is not None:
        parts["output_bias"] = output.bias.reshape(E)
    biased = [name for name in ("query_bias", "key_bias", "value_bias", "output_bias") if name in parts]
    if biased and len(biased) != 4:
        raise g.refuse(output.index, f"biases on {', '.join(biased)} alone: the suite judges attention with all four "
                                     "projections biased, or none")
    dtypes = {a.dtype for a in parts.values()}
    if len(dtypes) != 1 or next(iter(dtypes)) not in (np.float16, np.float32, np.float64):
        raise g.refuse(output.index, f"weights in {sorted(map(str, dtypes))}: the suite judges one of float16, "
                                     "float32, float64")
    kind = SelfAttention(E, heads, d, L)
    weights = kind.pack(parts)
    native = np.concatenate([a.ravel() for a in _unique(p.stored for p in (*projections, output))])
    return kind, weights.W, weights.b, native


def _columns(g: _Graph, p: _Projection, role: str, sharing: int, E: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A projection's kernel ``(E, width)`` and bias: its part of a packed matrix (of ``sharing`` equal parts)."""
    if p.W.shape[0] != E:
        raise g.refuse(p.index, f"a {role} projection of {p.W.shape[0]} features, but the sequence has {E} (kdim or "
                                "vdim other than embed_dim): the suite judges self-attention")
    if p.part is None and sharing > 1:
        raise g.refuse(p.index, f"one projection for {sharing} roles without a Gather or Split taking each its part")
    bias = None if p.bias is None else np.asarray(p.bias).reshape(-1)
    if p.part is None:
        return p.W, bias
    width = p.W.shape[1] // sharing
    if p.W.shape[1] % sharing or not 0 <= p.part < sharing:
        raise g.refuse(p.index, f"a packed projection of {p.W.shape[1]} columns, of which the {role}s take part "
                                f"{p.part} of {sharing}: not read")
    columns = slice(p.part * width, (p.part + 1) * width)
    return p.W[:, columns], None if bias is None else (bias[columns] if p.bias_packed else bias)


def _unique(arrays: Iterable[np.ndarray]) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for a in arrays:
        if not any(a is b for b in out):
            out.append(a)
    return out


# --- running ----------------------------------------------------------------------------------------

class InBatches:
    """An ORT session of a unit whose graph fixes the batch (torch's exporter bakes it into the attention's
    ``Reshape`` targets), run in chunks of that batch: the last chunk filled with copies of its last sample, whose
    outputs are dropped (every sample's attention is its own)."""

    def __init__(self, session: Any, batch: int) -> None:
        self.session, self.batch = session, batch

    def run(self, outputs: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = feeds["x"]
        pieces = []
        for at in range(0, len(x), self.batch):
            chunk = x[at:at + self.batch]
            filled = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch - len(chunk), axis=0)])
            pieces.append(self.session.run(outputs, {"x": np.ascontiguousarray(filled)})[0][:len(chunk)])
        return [np.concatenate(pieces)]
