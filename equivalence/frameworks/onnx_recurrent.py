"""LSTM and GRU nodes in an ONNX graph, read with what exporters write around them into the core's ``Recurrent`` kind
(``equivalence.core.recurrent``): one layer, one direction, from a zero state, batch-first as canonical.

torch's exporter (``dynamo=False``) writes an ``nn.LSTM``/``nn.GRU`` with ``batch_first=True`` as a ``Transpose`` of
the ``(batch, L, features)`` sequence to ``(L, batch, features)`` (perm ``[1, 0, 2]``), the ``LSTM``/``GRU`` node
(``layout=0``) with zero initial states (``Expand`` of a zero constant to a shape computed from the input's), then
``Squeeze`` of the ``num_directions`` axis and a ``Transpose`` back to batch-first; ``out[:, -1]`` is a ``Gather``
over axis 1, ``h_n[-1]`` a ``Gather`` of ``Y_h`` over axis 0. tf2onnx writes a Keras ``LSTM`` the same way, its last
step as a ``Slice`` of ``Y`` (still ``(L, batch, units)``) and a ``Squeeze``; it writes Keras 3's ``GRU`` as a
TensorFlow while ``Loop``, which is refused naming it. Those selections are followed axis by axis (``_selection``)
until the tensor is ``(batch, L, units)`` (the sequence) or ``(batch, units)`` (the last step). Two layers back to
back (torch's ``num_layers=2``, and two modules, whose Transposes its exporter cancels) pass the squeezed ``Y``
``(L, batch, units)`` from node to node: each is a unit of its own, a ``Transpose`` added to its copy on that side
so that it takes and gives the canonical batch-first sequence. A node with ``layout=1`` (batch-first) is refused:
ONNX Runtime 1.32's CPU kernels do not run it.

ONNX stores ``W (1, G*units, features)``, ``R (1, G*units, units)`` and ``B (1, 2*G*units)`` (the input's biases,
then the recurrent ones), gates ``i, o, f, c`` (LSTM) and ``z, r, h`` (GRU). The canonical layout is Keras'
``[kernel; recurrent_kernel]`` ``(features + units, G*units)`` with the gates ``i, f, c, o`` / ``z, r, h``, an
LSTM's two biases summed, a GRU's kept as ``(2, 3*units)`` with ``linear_before_reset=1`` (torch's GRU, Keras'
``reset_after=True``) and summed without (``reset_after=False``). ``native`` keeps ONNX's tensors side by side,
``[W | R | Wb | Rb]`` with rows in ONNX's gate order, so a mis-ordered gate is named in ONNX's terms.

Refused in one line naming the node: weights other than float32 (ORT 1.32 runs float32 recurrent nodes alone),
another direction, ``num_directions`` other than 1, peepholes (``P``), ``clip``, other activations,
``input_forget``, an initial state that is not zero, a ``sequence_lens`` other than ``L`` for every sequence (one of
``L`` each is what an absent one means), a sequence length not fixed, a node fed the batch-first sequence without the
``Transpose`` (``layout=0`` reads it as ``(L, batch, features)``), and any selection of the output other than the
three above (another step, the cell state ``Y_c``, two outputs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from equivalence.core.recurrent import Recurrent
from equivalence.core.walk import Refused
from equivalence.frameworks.graph_kinds import KindRead
from equivalence.frameworks.onnx_kinds import attr

RECURRENT_OPS = {"LSTM": "lstm", "GRU": "gru"}
"""The ONNX ops read, and their cell."""
ONNX_GATES = {"lstm": ("i", "o", "f", "c"), "gru": ("z", "r", "h")}
"""Each cell's gates in ONNX's order (``W``, ``R`` and ``B``'s blocks)."""
CANONICAL_BLOCKS = {"lstm": (0, 2, 3, 1), "gru": (0, 1, 2)}
"""ONNX's blocks in the canonical (Keras) order: ``canonical = onnx[blocks]`` (``i, o, f, c`` -> ``i, f, c, o``)."""
DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh")}
STATES = {"LSTM": ((5, "initial_h"), (6, "initial_c")), "GRU": ((5, "initial_h"),)}
"""The initial states' input positions: absent, or zero."""
BROADCASTS = ("Expand", "Unsqueeze", "Squeeze", "Reshape", "Identity", "Cast", "Tile")
"""Ops that spread their first input's values over a shape: an initial state or ``sequence_lens`` computed from a
constant with one (torch's ``Expand`` of a zero, tf2onnx's ``Unsqueeze`` of one) holds that constant's values."""
ADDED = " (batch-first)"
"""The name's end of a ``Transpose`` added to a unit's copy: between stacked layers the graph passes the
``(L, batch, units)`` sequence from node to node, and each unit takes and gives the canonical batch-first one."""
JUDGED_SELECTIONS = ("the sequence (batch, L, units), its last step out[:, -1] (a Gather or a Slice of Y) or h_n[-1] "
                     "(a Gather of Y_h)")
LOOP = ("a Loop: a converter wrote a while loop here (tf2onnx writes Keras 3's GRU, and a recurrent layer it does not "
        "recognise, as TensorFlow's while loop), not an LSTM or GRU node: the suite reads LSTM and GRU nodes, not "
        "loops; compare the model it was converted from")


@dataclass(frozen=True)
class RecurrentBlock:
    """A recurrent layer as an exporter wrote it: its node, the nodes of the unit in chain order (the ``Transpose``
    to ``(L, batch, features)``, the node, the selection after it; between stacked layers, a ``Transpose`` added to
    the unit's copy on either side: ``ADDED``), the layer read, the tensor the unit's input replaces and the tensor
    the chain continues from."""

    index: int
    node: onnx.NodeProto
    nodes: list[tuple[int, onnx.NodeProto]]
    read: KindRead
    input: str
    output: str

    @property
    def kind(self) -> str:
        """The graph's nodes of the unit (the ones added left out)."""
        return "+".join(n.op_type for _, n in self.nodes if not n.name.endswith(ADDED))

    @property
    def tokens(self) -> tuple[int, int] | None:
        """The chain's ``(L, units)`` after it when it gives the sequence; None after the last step."""
        kind: Recurrent = self.read.layer_kind
        return (kind.steps, kind.units) if kind.return_sequences else None


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {t: node for node in graph.node for t in node.output}


def _source_values(tensor: str, consts: dict[str, np.ndarray], producers: dict[str, onnx.NodeProto]) -> \
        np.ndarray | None:
    """The constant values ``tensor`` spreads (itself a constant, or one through ``BROADCASTS``, or a
    ``ConstantOfShape``); None when it is computed otherwise."""
    for _ in range(len(producers) + 1):
        if tensor in consts:
            return np.asarray(consts[tensor])
        node = producers.get(tensor)
        if node is None:
            return None
        if node.op_type == "ConstantOfShape":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            return np.zeros(1) if value is None else numpy_helper.to_array(value)
        if node.op_type not in BROADCASTS:
            return None
        tensor = node.input[0]
    return None


def _weights(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    inputs = list(node.input) + [""] * 3
    missing = [name for name, t in zip(("W", "R"), inputs[1:3]) if t not in consts] + \
        (["B"] if inputs[3] and inputs[3] not in consts else [])
    if missing:
        raise Refused(f"its {', '.join(missing)} computed, not constant weights (initializers or Constant nodes)")
    W, R = consts[inputs[1]], consts[inputs[2]]
    return W, R, consts[inputs[3]] if inputs[3] else None


def check_configuration(node: onnx.NodeProto, consts: dict[str, np.ndarray],
                        producers: dict[str, onnx.NodeProto]) -> None:
    """``Refused`` naming the first setting of an ``LSTM``/``GRU`` node the suite does not judge."""
    op, gates = node.op_type, len(ONNX_GATES[RECURRENT_OPS[node.op_type]])
    direction = attr(node, "direction", "forward")
    if direction != "forward":
        raise Refused(f"direction={direction}: the suite judges one-direction recurrent layers (torch's "
                      "bidirectional=False, Keras without Bidirectional or go_backwards)")
    W, R, B = _weights(node, consts)
    if W.dtype != np.float32:
        raise Refused(f"weights in {W.dtype}: ONNX Runtime's CPU {op} computes float32 alone (1.32 on float64: "
                      f"'{op} operator does not support double yet'), so the unit cannot run")
    if W.ndim != 3 or R.ndim != 3 or W.shape[0] != 1:
        raise Refused(f"W of shape {W.shape}: the suite judges one direction, W (1, {gates}*units, features)")
    units = int(attr(node, "hidden_size", R.shape[-1]))
    expected = {"W": (1, gates * units, W.shape[2]), "R": (1, gates * units, units), "B": (1, 2 * gates * units)}
    for name, value in (("W", W), ("R", R), ("B", B)):
        if value is not None and value.shape != expected[name]:
            raise Refused(f"{name} of shape {value.shape}, but a {op} of hidden_size={units} has {expected[name]}")
    if attr(node, "clip", None) is not None:
        raise Refused(f"clip={attr(node, 'clip', None)}: a cell whose pre-activations are clipped is not judged (torch "
                      "and Keras do not clip)")
    activations = tuple(a.decode() if isinstance(a, bytes) else a for a in attr(node, "activations",
                                                                                  DEFAULT_ACTIVATIONS[op]))
    if activations != DEFAULT_ACTIVATIONS[op] or attr(node, "activation_alpha", None) is not None or \
            attr(node, "activation_beta", None) is not None:
        raise Refused(f"activations {list(activations)}: the suite judges the default {list(DEFAULT_ACTIVATIONS[op])} "
                      "(sigmoid gates, tanh), without activation_alpha or activation_beta")
    if op == "LSTM" and attr(node, "input_forget", 0):
        raise Refused("input_forget=1 (the input and forget gates coupled): not torch's or Keras' LSTM")
    if op == "LSTM" and len(node.input) > 7 and node.input[7]:
        raise Refused("peephole weights P: an LSTM with peepholes is not torch's or Keras' LSTM")
    if attr(node, "layout", 0) != 0:
        raise Refused(f"layout={attr(node, 'layout', 0)} (batch-first X and Y): ONNX Runtime's CPU kernels run "
                      "layout=0 alone (1.32: 'Batchwise recurrent operations (layout == 1) are not supported'), so "
                      "the unit cannot run; torch's exporter and tf2onnx write layout=0 between two Transposes")
    for position, name in STATES[op]:
        _zero_state(node, position, name, consts, producers)


def _zero_state(node: onnx.NodeProto, position: int, name: str, consts: dict[str, np.ndarray],
                producers: dict[str, onnx.NodeProto]) -> None:
    tensor = node.input[position] if len(node.input) > position else ""
    if not tensor:
        return
    values = _source_values(tensor, consts, producers)
    if values is None:
        raise Refused(f"an {name} computed from the model's input or its layers ({tensor!r}): the suite judges a "
                      "recurrent layer started from zeros")
    if np.any(values != 0):
        raise Refused(f"a nonzero {name} (largest |value| {float(np.max(np.abs(values))):.3g}): the suite judges a "
                      "recurrent layer started from zeros")


def _stacked(node: onnx.NodeProto, producers: dict[str, onnx.NodeProto]) -> bool:
    """``node``'s ``X`` is another recurrent node's ``Y`` squeezed, ``(L, batch, units)``: torch writes
    ``num_layers=2`` so, and two recurrent modules back to back (its exporter cancels the Transposes between them)."""
    below = producers.get(node.input[0])
    return below is not None and below.op_type == "Squeeze" and below.input[0] in producers and \
        producers[below.input[0]].op_type in RECURRENT_OPS and producers[below.input[0]].output[0] == below.input[0]


def not_read_recurrent(graph: onnx.GraphProto, consts: dict[str, np.ndarray]) -> \
        tuple[int, onnx.NodeProto, str] | None:
    """The first ``LSTM``/``GRU`` node configured otherwise than the suite judges, or a ``Loop``: its index, the node
    and why; else None (refused before the walk reaches them, as the other sequence ops the reader does not read)."""
    producers = _producers(graph)
    for index, node in enumerate(graph.node):
        if node.op_type == "Loop":
            return index, node, LOOP
        if node.op_type in RECURRENT_OPS:
            try:
                check_configuration(node, consts, producers)
            except Refused as exc:
                return index, node, str(exc)
    return None


def recurrent_node(index: int, node: onnx.NodeProto, graph: onnx.GraphProto,
                   consumers: dict[str, list[int]]) -> int | None:
    """The index of the ``LSTM``/``GRU`` node a recurrent layer starting at ``node`` computes: the node itself, or
    the one a ``Transpose`` to ``(L, batch, features)`` alone feeds; else None."""
    if node.op_type in RECURRENT_OPS:
        return index
    if node.op_type != "Transpose" or list(attr(node, "perm", [])) != [1, 0, 2]:
        return None
    users = set(consumers.get(node.output[0], []))
    after = graph.node[min(users)] if len(users) == 1 else None
    if after is not None and after.op_type in RECURRENT_OPS and after.input[0] == node.output[0]:
        return min(users)
    return None


def float_sequence(graph: onnx.GraphProto, value: onnx.ValueInfoProto,
                   consumers: dict[str, list[int]]) -> tuple[int, int] | None:
    """``(L, features)`` when the graph's float input ``(batch, L, features)`` feeds a recurrent layer (a token
    sequence from the start, batch-first; what else it feeds, a skip, is the walk's to judge); else None. ``Refused``
    when ``L`` or ``features`` is not fixed."""
    dims = value.type.tensor_type.shape.dim
    cells = [i for i in sorted(set(consumers.get(value.name, [])))
             if recurrent_node(i, graph.node[i], graph, consumers) is not None]
    if len(dims) != 3 or not cells:
        return None
    sizes = [d.dim_value if d.HasField("dim_value") else 0 for d in dims[1:]]
    if not all(sizes):
        shown = [d.dim_param or d.dim_value for d in dims]
        cell = graph.node[recurrent_node(cells[0], graph.node[cells[0]], graph, consumers)]
        raise Refused(f"feeds the {cell.op_type} {cell.name or cell.op_type!r} a sequence of shape {shown}: the suite "
                      "judges a sequence (batch, L, features) with L and the features fixed (export without a dynamic "
                      "sequence axis)")
    return sizes[0], sizes[1]


def read_recurrent(start: int, index: int, graph: onnx.GraphProto, consts: dict[str, np.ndarray],
                   consumers: dict[str, list[int]], tokens: tuple[int, int] | None) -> RecurrentBlock:
    """The recurrent layer from node ``start`` (its ``Transpose``, or the node at ``index`` itself when it is stacked
    on another) on the chain's ``(batch, L, features)`` sequence ``tokens`` to the tensor its selection gives;
    ``Refused`` naming what differs (the walk names the recurrent node)."""
    node = graph.node[index]
    producers = _producers(graph)
    check_configuration(node, consts, producers)
    if tokens is None:
        raise Refused(f"a{'n' if node.op_type == 'LSTM' else ''} {node.op_type} on a tensor that is not a (batch, L, "
                      "features) sequence: the suite judges one on the model's float input, an Embedding's output or "
                      "a dense layer's token by token")
    steps, features = tokens
    if start == index and not _stacked(node, producers):
        raise Refused("takes the chain's (batch, L, features) sequence as (L, batch, features) (layout=0 without a "
                      "Transpose before it): the suite judges a batch-first sequence (torch's batch_first=True; its "
                      "exporter writes a Transpose before the node)")
    read = _read_weights(node, consts, features, steps)
    output, selection, what = _selection(node, graph, consts, consumers, steps)
    kind = read.layer_kind.last_step() if what == "last" else read.layer_kind
    head = [(start, graph.node[start])] if start != index else [(index, _batch_first(node.input[0], into=True))]
    tail = [(index, _batch_first(output, into=False))] if what == "stacked" else []
    return RecurrentBlock(index, node, head + [(index, _run_as(node, consts, graph, steps))] + selection + tail,
                          KindRead(kind, read.W, read.b, read.native, None), head[0][1].input[0], output)


def _batch_first(tensor: str, *, into: bool) -> onnx.NodeProto:
    """The ``Transpose`` added to a stacked layer's unit: from the canonical batch-first input into the
    ``(L, batch, features)`` ``tensor`` the node reads (``into``), or from the ``tensor`` it gives to batch-first."""
    ends = (f"{tensor}{ADDED}", tensor) if into else (tensor, f"{tensor}{ADDED}")
    return helper.make_node("Transpose", [ends[0]], [ends[1]], name=f"{tensor}{ADDED}", perm=[1, 0, 2])


def _run_as(node: onnx.NodeProto, consts: dict[str, np.ndarray], graph: onnx.GraphProto, steps: int) -> \
        onnx.NodeProto:
    """The node the unit runs: a copy of ``node`` without its initial states (checked zero: what absent ones mean)
    and, when its ``sequence_lens`` is a constant of ``L`` for each sequence of one batch size, without it (what an
    absent one means: every sequence over all its steps), so that it runs on any batch (torch's exporter writes the
    zero states of the batch it traced with). ``Refused`` for any other ``sequence_lens``."""
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    for position, _ in STATES[node.op_type]:
        if len(copy.input) > position:
            copy.input[position] = ""
    sequence_lens = node.input[4] if len(node.input) > 4 else ""
    if not sequence_lens:
        return copy
    lengths = _source_values(sequence_lens, consts, _producers(graph))
    if lengths is None or np.any(lengths != steps):
        raise Refused("a sequence_lens other than L for every sequence" + (
            f" ({sorted(set(lengths.reshape(-1).tolist()))}, L = {steps})" if lengths is not None else
            " (computed)") + ": the suite judges every sequence run over all its steps")
    if sequence_lens in consts:  # else spread over the batch from its shape: runs on any batch as it is
        copy.input[4] = ""
    return copy


def _read_weights(node: onnx.NodeProto, consts: dict[str, np.ndarray], features: int, steps: int) -> KindRead:
    """``W``, ``R``, ``B`` in the canonical layout (the whole sequence's kind: the selection narrows it)."""
    cell = RECURRENT_OPS[node.op_type]
    W, R, B = _weights(node, consts)
    units, gates = R.shape[2], len(ONNX_GATES[cell])
    if W.shape[2] != features:
        raise Refused(f"takes {W.shape[2]} features, but the sequence before it has {features}")
    rows = np.concatenate([np.arange(g * units, (g + 1) * units) for g in CANONICAL_BLOCKS[cell]])
    wide = [np.asarray(t, dtype=np.float64) for t in (W[0], R[0])]
    kernel = np.concatenate([wide[0][rows].T, wide[1][rows].T]).astype(W.dtype)
    reset_after = cell == "lstm" or bool(attr(node, "linear_before_reset", 0))
    b = None
    native = [W[0], R[0]]
    if B is not None:
        input_bias, recurrent_bias = np.split(np.asarray(B[0], dtype=np.float64), 2)
        b = np.stack([input_bias[rows], recurrent_bias[rows]]) if cell == "gru" and reset_after else \
            (input_bias + recurrent_bias)[rows]
        b = b.astype(W.dtype)
        native += [B[0, :gates * units, None], B[0, gates * units:, None]]
    kind = Recurrent(cell, features, units, steps, True, reset_after=reset_after)
    return KindRead(kind, kernel, b, np.concatenate(native, axis=1).astype(W.dtype), None)


# --- the selection after the node: followed axis by axis ------------------------------------------

SEQUENCE, LAST, STACKED = ("N", "L", "H"), ("N", "H"), ("L", "N", "H")
"""The axes of what the suite judges: the batch-first sequence, the last step (L taken at its end), and the
sequence one recurrent node passes to the next (made batch-first in their units)."""



def _selection(node: onnx.NodeProto, graph: onnx.GraphProto, consts: dict[str, np.ndarray],
               consumers: dict[str, list[int]], steps: int) -> \
        tuple[str, list[tuple[int, onnx.NodeProto]], str]:
    """The tensor the nodes after the recurrent one give (``Squeeze``, ``Transpose``, ``Gather``, ``Slice``, followed
    while they select), those nodes, and what it is: ``"sequence"``, ``"last"`` (step), or ``"stacked"`` (the
    ``(L, batch, units)`` sequence another recurrent node reads)."""
    outputs = [(position, t) for position, t in enumerate(node.output)
               if t and (consumers.get(t) or t in {o.name for o in graph.output})]
    if len(outputs) != 1:
        used = ", ".join(("Y", "Y_h", "Y_c")[p] for p, _ in outputs) or "none"
        raise Refused(f"its outputs used: {used}; the suite judges one of them as the layer's output "
                      f"({JUDGED_SELECTIONS}; torch's h_n of num_layers > 1 joins every layer's Y_h)")
    position, tensor = outputs[0]
    if position == 2:
        raise Refused("its cell state Y_c is used: the suite judges an LSTM's output or hidden state (Y or Y_h)")
    axes = ("L", "D", "N", "H") if position == 0 else ("D", "N", "H")
    followed: list[tuple[int, onnx.NodeProto]] = []
    while True:
        users = sorted(set(consumers.get(tensor, [])))
        after = graph.node[users[0]] if len(users) == 1 else None
        stepping = after is not None and after.input[0] == tensor and _on_steps(after, consts)
        if axes == STACKED and after is not None and after.op_type in RECURRENT_OPS and after.input[0] == tensor:
            return tensor, followed, "stacked"
        if axes in (SEQUENCE, LAST) and not (axes == SEQUENCE and stepping):
            return tensor, followed, "sequence" if axes == SEQUENCE and position == 0 else "last"
        moved = None if after is None or after.input[0] != tensor else _select(after, axes, consts, steps)
        if moved is None:
            where = "is the graph's output" if not users else f"feeds {len(users)} nodes" if len(users) > 1 else \
                f"goes into the {after.op_type} {after.name or after.op_type!r}"
            raise Refused(f"its {('Y', 'Y_h')[position]}, of axes ({', '.join(_NAMES[a] for a in axes)}) there, "
                          f"{where}: the suite judges {JUDGED_SELECTIONS}")
        followed.append((users[0], after))
        tensor, axes = after.output[0], moved


_NAMES = {"N": "batch", "L": "L", "D": "num_directions", "H": "units", "1": "1 (the last step)"}


def _on_steps(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> bool:
    """``node`` takes steps out of a batch-first sequence (a ``Gather`` or a ``Slice`` over axis 1)."""
    if node.op_type == "Gather":
        return attr(node, "axis", 0) in (1, -2)
    return node.op_type == "Slice" and len(node.input) > 3 and node.input[3] in consts and \
        [int(a) for a in consts[node.input[3]].reshape(-1)] in ([1], [-2])


def _select(node: onnx.NodeProto, axes: tuple[str, ...], consts: dict[str, np.ndarray], steps: int) -> \
        tuple[str, ...] | None:
    """The axes after ``node`` when it selects (squeezes ``num_directions`` or a kept last step, transposes, takes
    the last step or the one direction); None when it does something else. ``Refused`` when it takes another step."""
    op = node.op_type
    if op == "Transpose":
        perm = list(attr(node, "perm", range(len(axes))[::-1]))
        return tuple(axes[p] for p in perm) if sorted(perm) == list(range(len(axes))) else None
    if op == "Squeeze":
        squeezed = _axes_of(node, consts, len(axes))
        return None if squeezed is None or any(axes[a] not in ("D", "1") for a in squeezed) else \
            tuple(a for i, a in enumerate(axes) if i not in squeezed)
    if op == "Gather" and node.input[1] in consts:
        return _gathered(node, axes, consts[node.input[1]], steps)
    if op == "Slice":
        return _sliced(node, axes, consts, steps)
    return None


def _axes_of(node: onnx.NodeProto, consts: dict[str, np.ndarray], rank: int) -> list[int] | None:
    values = consts.get(node.input[1]) if len(node.input) > 1 and node.input[1] else attr(node, "axes", None)
    if values is None:
        return None  # a Squeeze without axes would squeeze a batch of one too
    return sorted({int(a) % rank for a in np.asarray(values).reshape(-1)})


def _gathered(node: onnx.NodeProto, axes: tuple[str, ...], index: np.ndarray, steps: int) -> tuple[str, ...] | None:
    axis = int(attr(node, "axis", 0)) % len(axes)
    taken, size = axes[axis], {"L": steps, "D": 1, "1": 1}.get(axes[axis])
    if size is None or index.size != 1:
        return None
    at = int(index.reshape(-1)[0]) % size
    if taken == "L" and at != steps - 1:
        raise Refused(f"takes step {int(index.reshape(-1)[0])} of the {steps} (a Gather over L): the suite judges "
                      f"{JUDGED_SELECTIONS}")
    kept = "1" if taken == "L" else taken
    return tuple(a for i, a in enumerate(axes) if i != axis) if index.ndim == 0 else \
        tuple(kept if i == axis else a for i, a in enumerate(axes))


def _sliced(node: onnx.NodeProto, axes: tuple[str, ...], consts: dict[str, np.ndarray],
            steps: int) -> tuple[str, ...] | None:
    """A ``Slice`` of the last step kept as an axis of one (``[-1:]`` over L), or of all of a size-one axis."""
    inputs = list(node.input) + [""] * 5
    if not all(t in consts for t in inputs[1:3]) or any(t and t not in consts for t in inputs[3:5]):
        return None
    starts, ends = (consts[t].reshape(-1).astype(np.int64) for t in inputs[1:3])
    sliced = consts[inputs[3]].reshape(-1) if inputs[3] else np.arange(len(starts))
    step = consts[inputs[4]].reshape(-1) if inputs[4] else np.ones(len(starts), dtype=np.int64)
    out = list(axes)
    for axis, begin, end, stride in zip(sliced, starts, ends, step):
        axis = int(axis) % len(axes)
        size = {"L": steps, "D": 1, "1": 1}.get(axes[axis])
        if size is None or stride != 1:
            return None
        first, stop = range(size)[slice(int(begin), int(end))].start, range(size)[slice(int(begin), int(end))].stop
        if (first, stop) != (size - 1, size):
            if axes[axis] == "L":
                raise Refused(f"takes steps [{int(begin)}:{int(end)}] of the {steps} (a Slice over L): the suite "
                              f"judges {JUDGED_SELECTIONS}")
            return None
        out[axis] = "1" if axes[axis] == "L" else axes[axis]
    return tuple(out)

