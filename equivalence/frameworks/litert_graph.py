"""Read a LiteRT (TFLite) flatbuffer (a ``.tflite`` file) into dense units, and run each on the LiteRT interpreter.

The flatbuffer is read as a graph (``ai_edge_litert``'s schema): a dense unit is a ``FULLY_CONNECTED`` op on the
chain's tensor and a constant weight (stored ``(out, in)``), its bias the op's third input or a following ``ADD`` of
a constant, and its activation the op's fused one (``RELU``, ``RELU6``, ``TANH``) or the ops after it (``LOGISTIC``,
``TANH``, ``SOFTMAX``, ``GELU``, ``HARD_SWISH``, ``ELU``, ``LEAKY_RELU``, ``LOGISTIC``+``MUL`` for SiLU...).
``CONV_2D``, ``MAX_POOL_2D``, ``AVERAGE_POOL_2D`` and a ``RESHAPE`` of a spatial tensor (its target computed from
``SHAPE``, ``STRIDED_SLICE``, ``PACK`` or constant) start units of the core's other kinds
(``equivalence.frameworks.litert_kinds``), channels-last as LiteRT computes; a ``FULLY_CONNECTED`` on a spatial
tensor (onnx2tf folds the flatten into it) is read as a flatten unit then its dense unit; onnx2tf's ``TRANSPOSE`` to
channels-first and ``RESHAPE`` (torch's ``Flatten`` in its ``C, H, W`` order) as one flatten unit, its output put in
the canonical order and the next dense unit's rows permuted to it; the ``TRANSPOSE`` of a channels-first input with
the op after it. A 1-D conv or pool is written on its input lifted to ``(N, 1, L, C)``: ``EXPAND_DIMS``, the 2-D op,
a ``RESHAPE`` back, read as one unit of the 1-D kind (a flatten after it may take the lifted tensor: run on the input
lifted so). A LayerNormalization's ops (``MEAN`` ... ``ADD``, in three forms) are one ``LayerNorm`` unit
(``litert_norms``); a norm between a channels-first flatten and its dense unit is read in the canonical order (its
parameters in torch's ``C, H, W`` one: ``in_flatten_order``); a BatchNormalization the converter folded into a
``MUL`` and an ``ADD`` of per-channel constants is one
``ChannelAffine`` unit, and a layer whose constants are named after one it folded in is marked so in its kind
(``NAMED_FOLD``: the comparison matches it with the model's layers, ``equivalence.own_folded``). A Keras model of token
ids gives an Embedding (its id wrap and ``GATHER``, the unit fed the ids), dense layers and LayerNorms token by token
and a ``MEAN`` over the tokens (``litert_sequence``); a Keras ``MultiHeadAttention`` called as self-attention, its
projections, ``BATCH_MATMUL``s, ``SOFTMAX`` and layout ops, is one ``SelfAttention`` unit (``litert_attention``);
recurrent ops, and a ``BATCH_MATMUL`` outside such a region, are refused wherever they are.
``RESHAPE`` between dense units is skipped; dilated and depthwise convolutions, anything else or a branch is refused
with the op's index in the subgraph.
Weights stored as float16 (float16 weight quantisation: a ``DEQUANTIZE`` op of each float16 constant before the
float32 kernels) are read as the float16 values, exactly, and the units are labelled ``litert_fp16w``: that
registered framework's ``weights_dtype`` (float16) adds the weight rounding term to the error model, and the other
model's weights are compared rounded to float16 (``equivalence.own``). Any other ``DEQUANTIZE`` (integer
quantisation) is refused.

Each unit runs where the model lives: its own ops, cut out of a copy of the flatbuffer into a model of their own
(input the tensor feeding the ``FULLY_CONNECTED``, output the activation's), on the interpreter with its default
resolver (XNNPACK on CPU) and one thread. The file is never modified. The units' label is ``litert``, so its
named differences apply. A file with float16 weights in some layers and float32 in others is refused: one model
has one label, so one weight-rounding term.
"""

from __future__ import annotations

import copy
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from equivalence.core.activations import activation_name
from equivalence.core.folded import NAMED_FOLD
from equivalence.core.kinds import DENSE
from equivalence.core.residual import branch_unit, check_residuals
from equivalence.core.spatial import Conv, Flatten, flatten_permutation
from equivalence.core.walk import DenseUnit, ModelNotSupported, Refused, check_chain, in_flatten_order
from equivalence.frameworks.graph_kinds import KindRead, not_read_yet
from equivalence.frameworks.graph_residual import Forks, Value, residual_kind
from equivalence.frameworks.litert_attention import AttentionRefused, AttentionRegion, find_attentions
from equivalence.frameworks.litert_kinds import KIND_OPS, REFUSED, one_dimensional, read_kind
from equivalence.frameworks.litert_norms import (
    channel_affine,
    layer_norm,
    named_after_norm,
)
from equivalence.frameworks.litert_sequence import (
    FEED_TYPES,
    INTEGER_TYPES,
    SEQUENCE_REFUSED,
    embedding,
    id_prelude,
    ids_used_otherwise,
    not_read_sequence_op,
    sequence_mean,
    sequence_refusal,
    starts_layer_norm,
    tensordot,
    tensordot_target,
)

FRAMEWORK = "litert"
FLOAT16_WEIGHTS = "litert_fp16w"
"""The label of units whose weights the file stores as float16 (the registered ``litert_fp16w`` framework)."""
FORM = "tflite"
_FUSED = {0: "linear", 1: "relu", 3: "relu6", 4: "tanh"}  # ActivationFunctionType: NONE, RELU, RELU6, TANH
_SINGLE = {"LOGISTIC": "sigmoid", "TANH": "tanh", "RELU": "relu", "RELU6": "relu6", "HARD_SWISH": "hard_silu",
           "ELU": "elu"}
_ACTIVATIONS = (*_SINGLE, "SOFTMAX", "LOG_SOFTMAX", "GELU", "LEAKY_RELU")


@dataclass(frozen=True)
class LiteRTModel:
    """A ``.tflite`` file's bytes, as read (the form ``equivalence.own`` knows it by: ``equivalence_form``)."""

    path: str
    content: bytes
    equivalence_form = FORM


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated as schema

    return schema


def load_model(path: str | Path) -> LiteRTModel:
    """A ``.tflite`` file, checked to be a LiteRT flatbuffer; ``ValueError`` with one line otherwise."""
    content = Path(path).read_bytes()
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise ValueError("not a LiteRT (.tflite) flatbuffer: no TFL3 identifier (random bytes, a truncated file, or "
                         "another format's file)")
    try:
        model = _read(content)
        if not model.subgraphs or not model.subgraphs[0].operators:
            raise ValueError("no subgraph")
        _interpreter(content)
    except (ValueError, IndexError, RuntimeError, TypeError, struct.error) as exc:  # flatbuffers', the interpreter's
        raise ValueError(f"not a readable LiteRT (.tflite) flatbuffer, a truncated file? ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:160]})") from None
    return LiteRTModel(str(path), content)


def _read(content: bytes) -> Any:
    schema = _schema()
    return schema.ModelT.InitFromObj(schema.Model.GetRootAs(content, 0))


def _interpreter(content: bytes) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=content, num_threads=1)


def _op_names() -> dict[int, str]:
    return {code: name for name, code in vars(_schema().BuiltinOperator).items() if not name.startswith("_")}


@dataclass
class _Pending:
    index: int
    input: int
    ops: list[Any]
    W: np.ndarray
    native: np.ndarray
    b: np.ndarray | None
    act: str
    act_source: str
    fused: bool
    input_of_act: int = -1
    dequantize: list[Any] | None = None  # the DEQUANTIZE ops of its float16 weights, run before its own ops
    layer_kind: Any = DENSE
    in_shape: tuple[int, ...] = ()  # canonical (channels-last, as LiteRT computes), per sample; dense: empty
    out_shape: tuple[int, ...] = ()
    shape_ops: list[Any] = field(default_factory=list)  # a RESHAPE's target computed from SHAPE: run before it
    feed_shape: tuple[int, ...] = ()  # the per-sample shape its first op takes, when not the canonical one: a
    # FULLY_CONNECTED on a spatial tensor flattens it itself; a flatten of a 1-D layer's output takes it lifted
    lifted: bool = False  # a 1-D layer written on its input lifted to (N, 1, L, C): its output is reshaped back
    label: str = ""  # what the unit is, in its ops ("EXPAND_DIMS+CONV_2D+RESHAPE"); empty: its first op's name
    named_fold: bool = False  # a constant of its op is named after a BatchNormalization the converter folded in
    channels_first: bool = False  # a flatten of the tensor made channels-first: its output put in canonical order
    per_sample: bool = False  # a RESHAPE to the file's fixed batch (onnx2tf's [1, features]): run a sample at a time
    permutation: np.ndarray | None = None  # a dense unit after a channels-first flatten: its rows, stored order
    flatten_order: np.ndarray | None = None  # a norm between a channels-first flatten and its dense unit: its order
    fed_channels_first: bool = False  # a unit starting at the TRANSPOSE of a channels-first input: fed so
    feeds: np.dtype | None = None  # the dtype its input is fed in, when not float32 (an Embedding's token ids)
    skip: int = -1  # a residual Add's second operand (its first: ``input``)


def walk(model: Any) -> list[DenseUnit]:
    """The dense units of a ``.tflite`` model in execution order; ``ModelNotSupported`` names what cannot be judged."""
    if isinstance(model, (str, Path)):
        model = load_model(model)
    flat = _read(model.content)
    graph = flat.subgraphs[0]
    names = _op_names()

    dequantized: dict[int, tuple[np.ndarray, Any]] = {}  # a DEQUANTIZE op's output: its float16 input as float32

    def constant(tensor: int) -> np.ndarray | None:
        if tensor < 0:
            return None
        if tensor in dequantized:
            return dequantized[tensor][0]
        t = graph.tensors[tensor]
        data = flat.buffers[t.buffer].data
        if data is None or len(data) == 0:
            return None
        dtype = {0: np.float32, 1: np.float16, 7: np.float64}.get(t.type)
        if dtype is None:
            return np.zeros(0)  # a constant of a type the suite does not judge: refused where it is used
        return np.frombuffer(bytes(bytearray(data)), dtype=dtype).reshape(tuple(t.shape))

    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ModelNotSupported("tflite", "subgraph 0", "subgraph", None,
                                f"takes {len(graph.inputs)} inputs and gives {len(graph.outputs)} outputs; the suite "
                                "judges a model of one input and one output")
    current = int(graph.inputs[0])
    declared = tuple(int(d) for d in graph.tensors[current].shape)
    shape = declared[1:] if len(declared) > 2 else None  # canonical per sample while spatial; None once 2-D
    computed = _shape_computations(flat, names, constant)
    batch = declared[0] if declared and declared[0] > 0 else None  # the input's batch, where the file fixes it
    into_last = _input_transpose(flat, names, graph, current)  # a channels-first input's TRANSPOSE (onnx2tf -kt)
    if shape is not None and into_last is not None:
        shape = (*shape[1:], shape[0])
    attentions = _attentions(flat, names, graph, constant)  # self-attention regions, by their first op
    _refuse_recurrent_or_attention(flat, names, graph, {i for a in attentions.values() for i in a.ops})
    prelude = _id_prelude(flat, names, graph, current, constant, computed)  # Keras' wrap of negative ids, and GATHER
    permutation = None  # a channels-first flatten's: the next dense unit's rows
    units: list[DenseUnit] = []
    pending: _Pending | None = None
    tokens: tuple[int, int] | None = None  # (L, features) while the chain's tensor is a token sequence
    lifting: Any = None  # an EXPAND_DIMS lifting a 1-D tensor to (N, 1, L, C), awaiting its conv or pool
    lifted = False  # the chain's tensor holds a 1-D sample lifted to (N, 1, L, C)
    squeezed: dict[int, int] = {}  # a 1-D layer's output squeezed back to (N, L, C): the lifted tensor it was
    absorbed: set[int] = set(prelude[1] if prelude else ())  # the ops of a norm written as ops, read with its first
    forks = _forks(flat, names, graph, computed, absorbed)  # the values a residual Add or a second branch takes
    for index, op in enumerate(graph.operators):
        name = _op_name(flat, names, op)
        inputs = [int(t) for t in op.inputs]
        if int(op.outputs[0]) in computed or index in absorbed:
            continue
        dynamic = [t for t in inputs if t >= 0 and constant(t) is None and t not in computed]
        label = _tensor_name(graph, int(op.outputs[0]))

        def refuse(problem: str, label: str = label, name: str = name, index: int = index) -> ModelNotSupported:
            return ModelNotSupported("tflite", label, name, index, problem)

        if name == "DEQUANTIZE":
            stored = constant(inputs[0])
            if stored is None or stored.dtype != np.float16:
                raise refuse("dequantises a tensor that is not a float16 constant (integer quantisation): the suite "
                             "judges float32 models and float16 weights")
            dequantized[int(op.outputs[0])] = (stored.astype(np.float32), op)
            continue
        if index in attentions:  # x + att(x): the region's last op stands for the branch through it
            forks.tap(Value(current, len(units) - (pending is None), shape, tokens), attentions[index].ops)
            if pending is not None:
                units.append(_close(pending, model.content, flat))
            pending = _attention(attentions[index], graph, current, tokens, refuse)
            absorbed.update(attentions[index].ops)
            current = attentions[index].end
            continue
        if name in REFUSED:
            raise refuse(f"{name} {REFUSED[name]}")
        if tokens is not None and name in SEQUENCE_REFUSED:
            raise refuse(sequence_refusal(name, tokens))
        if name == "GATHER":
            if pending is not None:
                units.append(_close(pending, model.content, flat))
            pending = _embedding(index, op, prelude, flat, names, graph, current, constant, refuse)
            pending.dequantize = [dequantized[t][1] for t in inputs if t in dequantized]
            tokens, current = pending.out_shape, int(op.outputs[0])
            continue
        if prelude is None and int(graph.tensors[current].type) in INTEGER_TYPES:
            raise refuse(ids_used_otherwise(name))
        if name == "MUL" and dynamic == [current] and not lifted and tokens is None and (affine := channel_affine(
                op, _following(flat, names, graph, index), constant, current, int(graph.tensors[current].shape[-1]))):
            if pending is not None:
                units.append(_close(pending, model.content, flat))
            add, read = affine
            pending = _affine(index, op, add, read, current, shape, refuse)
            pending.flatten_order = permutation if shape is None else None
            pending.dequantize = [dequantized[t][1] for o in (op, add) for t in o.inputs if int(t) in dequantized]
            absorbed.add(index + 1)
            current = int(add.outputs[0])
            continue
        if pending is not None and name == "MUL" and pending.act == "sigmoid" and not pending.fused \
                and sorted(dynamic) == sorted([pending.input_of_act, current]):
            pending.ops.append(op)
            pending.act, pending.act_source = "silu", f"LOGISTIC+MUL ops {index - 1}, {index}"
            current = int(op.outputs[0])
            continue
        if name == "RESHAPE" and dynamic and dynamic[0] == squeezed.get(current):  # a flatten of a 1-D layer's
            current, lifted = dynamic[0], True                                    # output as it was, lifted
        chain = Value(current, len(units) - (pending is None), shape, tokens)  # whose output (INPUT: the input's)
        skip = forks.joined(index, dynamic, current)  # residual Adds and branches: graph_residual
        start = forks.second_branch(index, dynamic, chain) if skip is None else None
        if pending is not None and (skip or start) is not None:
            units.append(_close(pending, model.content, flat))
            pending = None
        if skip is not None:  # x + f(x): one unit, its activation (fused, or the ops after it) with it
            pending, current = _residual(index, op, units, skip, chain, forks.refuse), int(op.outputs[0])
            continue
        if start is not None:  # a(x) + b(x): a's end waits for the Add, b starts from x again (a Branch unit)
            units.append(branch_unit(FRAMEWORK, "branch", index, units, start.unit))
            current, shape, tokens = start.tensor, start.shape, start.tokens
        if dynamic != [current]:
            raise refuse(f"a branch: it takes {len(dynamic)} computed tensors, but should take the previous layer's "
                         "output alone (a residual ADD of it and an earlier value is judged; concatenations are "
                         "not)")
        if forks.forks(current) and name != "MEAN" and not (pending is not None and (name in _ACTIVATIONS or (
                name == "ADD" and _takes_bias(pending)) or (lifted and name == "RESHAPE"))):  # a fork: both paths
            forks.tap(chain, at=index)  # must meet at an ADD (a MEAN's unit, a norm reading it thrice, taps once read;
            # a 1-D layer's squeeze and the flatten taking its lifted output are no fork)
        if lifting is not None and name not in KIND_OPS:
            raise refuse("follows an EXPAND_DIMS lifting a 1-D tensor to (N, 1, L, C), but is no CONV_2D or pool: the "
                         "suite reads the 1-D layers written so")
        declared = tuple(int(d) for d in graph.tensors[op.outputs[0]].shape)
        if name == "EXPAND_DIMS":
            if shape is None or len(shape) != 2 or declared[1:] != (1, *shape):
                raise refuse(f"an EXPAND_DIMS to {list(declared)}: the suite reads the one a 1-D layer is written "
                             "with, (N, L, C) to (N, 1, L, C)")
            if pending is not None:
                units.append(_close(pending, model.content, flat))
                pending = None
            lifting, lifted, current = op, True, int(op.outputs[0])
            continue
        if name == "MEAN":
            if pending is not None:
                units.append(_close(pending, model.content, flat))
            axes, keep = _integers(flat, graph, inputs[1]), bool(getattr(op.builtinOptions, "keepDims", False))
            if tokens is not None and not starts_layer_norm(axes, keep):
                forks.tap(chain, [index])
                pending = _sequence_mean(index, op, current, axes, keep, tokens, refuse)
                tokens, current = None, int(op.outputs[0])
                continue
            pending, norm_ops = _layer_norm(index, flat, names, graph, current, shape, constant, refuse, tokens)
            pending.dequantize = [dequantized[t][1] for o in pending.ops for t in o.inputs if int(t) in dequantized]
            _float16_epsilon(pending, dequantized, refuse)
            absorbed.update(norm_ops)
            forks.tap(chain, norm_ops)
            if permutation is not None:  # between a C,H,W flatten and its dense unit: columns permuted
                pending.flatten_order = permutation
            current = int(pending.ops[-1].outputs[0])
            continue
        if lifted and pending is not None and name == "RESHAPE" and declared[1:] == shape:  # squeezed to (N, L, C)
            pending.ops.append(op)
            pending.label += "+RESHAPE"
            squeezed[int(op.outputs[0])] = current
            lifted, current = False, int(op.outputs[0])
            continue
        if op is into_last:  # read with the op it leads into, the unit fed channels-first
            current = int(op.outputs[0])
            continue
        if name == "TRANSPOSE" and shape is not None:
            if pending is not None:
                units.append(_close(pending, model.content, flat))
            pending = _channels_first_flatten(index, op, flat, names, graph, shape, current, constant, refuse, batch)
            absorbed.add(index + 1)
            permutation, shape, current = flatten_permutation(pending.in_shape), None, int(pending.ops[-1].outputs[0])
            continue
        if name in KIND_OPS or (name == "RESHAPE" and shape is not None):
            if pending is not None:
                units.append(_close(pending, model.content, flat))
            pending = _kind(index, op, name, current, shape, constant, refuse, declared, lifting, lifted)
            pending.named_fold = named_after_norm(_constant_names(graph, inputs, constant))
            if into_last is not None and current == int(into_last.outputs[0]):
                pending.ops, pending.input, pending.fed_channels_first = [into_last, *pending.ops], int(
                    into_last.inputs[0]), True
                pending.label = f"TRANSPOSE+{pending.label or name}"
            if name == "RESHAPE":
                pending.per_sample = _per_sample(flat, graph, op, batch, refuse)
            pending.dequantize = [dequantized[t][1] for t in inputs if t in dequantized]
            pending.shape_ops = _computing(computed, inputs)
            shape = read_shape if (read_shape := pending.out_shape) and len(read_shape) > 1 else None
            lifting, lifted = None, lifting is not None
        elif name == "RESHAPE" and tokens is not None:
            if pending is not None:
                units.append(_close(pending, model.content, flat))
            pending, read_with = _token_dense(index, op, flat, names, graph, current, constant, computed, tokens,
                                              refuse)
            pending.dequantize = [dequantized[t][1] for o in pending.ops for t in o.inputs if int(t) in dequantized]
            absorbed.update(read_with)
            tokens, current = pending.out_shape, int(pending.ops[-1].outputs[0])
            continue
        elif name == "FULLY_CONNECTED":
            if pending is not None:
                units.append(_close(pending, model.content, flat))
            pending = _dense(index, op, current, constant, refuse, permutation)
            permutation = None
            if tokens is not None:  # the batch fixed: one FULLY_CONNECTED keeping the tokens
                if not getattr(op.builtinOptions, "keepNumDims", False) or pending.W.shape[0] != tokens[1]:
                    raise refuse(f"a FULLY_CONNECTED of {pending.W.shape[0]} features without keep_num_dims on the "
                                 f"(batch, {tokens[0]}, {tokens[1]}) token sequence: the suite judges a dense layer "
                                 "token by token (keep_num_dims, or the RESHAPE, FULLY_CONNECTED, RESHAPE of "
                                 "TensorFlow's Tensordot)")
                pending.in_shape, pending.out_shape = tokens, (tokens[0], pending.W.shape[1])
                tokens = pending.out_shape
            pending.named_fold = named_after_norm(_constant_names(graph, inputs, constant))
            if shape is not None:  # the converter fused a flatten into it: a Flatten unit, then the dense one
                if pending.W.shape[0] != int(np.prod(shape)):
                    raise refuse(f"takes {pending.W.shape[0]} features from a tensor of {shape} per sample")
                units.append(_fused_flatten(index, shape))
                pending.feed_shape, shape = shape, None
            pending.dequantize = [dequantized[t][1] for t in inputs if t in dequantized]
        elif name == "ADD" and pending is not None and _takes_bias(pending):
            bias = next(constant(t) for t in inputs if t >= 0 and constant(t) is not None)
            if bias.size != pending.W.shape[-1]:
                raise refuse(f"adds a constant of shape {bias.shape}, but a bias of {pending.W.shape[-1]} values "
                             f"should follow the {_name_of(flat, pending.ops[-1])}")
            pending.b = bias.reshape(-1).astype(pending.W.dtype)
            pending.ops.append(op)
            pending.label += "+ADD" if pending.label else ""
            pending.dequantize = [*(pending.dequantize or []), *(dequantized[t][1] for t in inputs if t in dequantized)]
            fused = getattr(op.builtinOptions, "fusedActivationFunction", 0)
            if fused not in _FUSED:
                raise refuse(f"fused activation {fused} (ActivationFunctionType) is not one the suite knows")
            pending.act, pending.fused = _FUSED[fused], bool(fused)
            pending.act_source = f"fused in ADD op {index}" if fused else "none"
        elif name == "RESHAPE":
            if pending is not None:
                units.append(_close(pending, model.content, flat))
                pending = None
        elif pending is None or not_read_yet(name):
            raise refuse(not_read_yet(name) or "not a layer the suite reads, and before any: it judges "
                         "FULLY_CONNECTED (a bias ADD), CONV_2D, MAX_POOL_2D, AVERAGE_POOL_2D (and their 1-D forms: "
                         "EXPAND_DIMS, the op, RESHAPE), a RESHAPE of a spatial tensor, a LayerNormalization's ops, "
                         "and their activations")
        else:
            if pending.act != "linear":
                raise refuse(f"a second activation after {pending.act}: the suite judges one per dense layer")
            try:
                act = _activation(name, op)
            except KeyError:
                raise refuse("not a dense layer's activation the suite knows") from None
            pending.act, pending.act_source, pending.fused = act, f"{name} op {index}", False
            pending.input_of_act = current
            pending.ops.append(op)
        current = int(op.outputs[0])
    if pending is not None:
        units.append(_close(pending, model.content, flat))
    if int(graph.outputs[0]) != current:
        raise ModelNotSupported("tflite", "output", "subgraph", None,
                                "the model's output is not the end of its single chain of ops")
    return check_residuals(check_chain(_one_weight_label(units), "tflite"), "tflite")


def _forks(flat: Any, names: dict[int, str], graph: Any, computed: dict[int, tuple[int, Any]],
           absorbed: set[int]) -> Forks:
    """The fork tracker (``graph_residual``) of the subgraph's ops: who reads a tensor, the ops computing a
    ``RESHAPE``'s target from a ``SHAPE`` and an Embedding's id wrap left out."""
    ops = graph.operators
    readers: dict[int, list[int]] = {}
    for index, op in enumerate(ops):
        if int(op.outputs[0]) not in computed and index not in absorbed:
            for t in op.inputs:
                readers.setdefault(int(t), []).append(index)

    def refuse(index: int, problem: str) -> ModelNotSupported:
        op = ops[index]
        return ModelNotSupported("tflite", _tensor_name(graph, int(op.outputs[0])), _op_name(flat, names, op), index,
                                 problem)

    return Forks(lambda i: _op_name(flat, names, ops[i]), lambda t: readers.get(int(t), []),
                 lambda i: (u for t in ops[i].outputs for u in readers.get(int(t), [])), refuse, ("ADD",))


def _residual(index: int, op: Any, units: list[DenseUnit], skip: Value, chain: Value, refuse: Any) -> _Pending:
    """The residual ``ADD`` at ``index`` of the chain's output and ``skip``, its fused activation read."""
    kind = residual_kind(index, units, skip, chain, refuse)
    fused = getattr(op.builtinOptions, "fusedActivationFunction", 0)
    if fused not in _FUSED:
        raise refuse(index, f"fused activation {fused} (ActivationFunctionType) is not one the suite knows")
    empty = np.zeros((0,))
    return _Pending(index, int(chain.tensor), [op], empty, empty, None, _FUSED[fused],
                    f"fused in ADD op {index}" if fused else "none", bool(fused), layer_kind=kind,
                    in_shape=kind.operands_shape, out_shape=tuple(kind.features), label="ADD", skip=int(skip.tensor))


def _shape_computations(flat: Any, names: dict[int, str], constant: Any) -> dict[int, tuple[int, Any]]:
    """Tensors computed from a ``SHAPE`` op and constants alone (the converter's Keras ``Flatten``: ``SHAPE``,
    ``STRIDED_SLICE``, ``PACK`` into a ``RESHAPE``), each with the op computing it: read with the ``RESHAPE``."""
    out: dict[int, tuple[int, Any]] = {}
    for index, op in enumerate(flat.subgraphs[0].operators):
        code = flat.operatorCodes[op.opcodeIndex]
        dynamic = [int(t) for t in op.inputs if t >= 0 and constant(int(t)) is None]
        if names.get(max(code.builtinCode, code.deprecatedBuiltinCode)) == "SHAPE" or \
                (dynamic and all(t in out for t in dynamic)):
            out.update({int(t): (index, op) for t in op.outputs})
    return out


def _fused_flatten(index: int, shape: tuple[int, ...]) -> DenseUnit:
    """The flatten a ``FULLY_CONNECTED`` does to its spatial input (onnx2tf folds the ``RESHAPE`` into it): a unit of
    its own, so the pair lines up with a model's ``Flatten`` layer. It has no op of its own to run: its values are the
    input's, reshaped (channels-last ``H, W, C`` order, as the op reads it), which is all the op does to it."""
    return DenseUnit.without_weights(FRAMEWORK, f"op {index}", "tflite FULLY_CONNECTED (the flatten of its input)",
                                     index, "linear", "none", lambda x: np.asarray(x).reshape(len(x), -1),
                                     layer_kind=Flatten(shape), in_shape=shape, out_shape=(int(np.prod(shape)),))


def _computing(computed: dict[int, tuple[int, Any]], inputs: list[int]) -> list[Any]:
    """The ops computing ``inputs`` from a ``SHAPE`` (transitively), in execution order."""
    found: dict[int, Any] = {}
    todo = [t for t in inputs if t in computed]
    while todo:
        index, op = computed[todo.pop()]
        if index not in found:
            found[index] = op
            todo += [int(t) for t in op.inputs if int(t) in computed]
    return [found[i] for i in sorted(found)]


def _kind(index: int, op: Any, name: str, current: int, shape: tuple[int, ...] | None, constant: Any, refuse: Any,
          declared: tuple[int, ...], lifting: Any, lifted: bool) -> _Pending:
    """A conv, pooling or flatten unit (``litert_kinds``), its fused activation read. ``lifting``: the EXPAND_DIMS
    before a 1-D layer's op (its unit's first op); ``lifted``: the op takes a 1-D tensor lifted to ``(N, 1, L, C)``
    (a flatten of a 1-D layer's output as the layer gave it)."""
    if shape is None:
        raise refuse(f"a {name} on a 2-D tensor: the suite judges it on (N, H, W, C)")
    try:
        if lifting is not None:
            read = one_dimensional(read_kind(name, op, constant, (1, *shape), declared), shape)
        else:
            read = read_kind(name, op, constant, shape, declared)
    except Refused as exc:
        raise refuse(str(exc)) from None
    fused = getattr(op.builtinOptions, "fusedActivationFunction", 0) if name != "RESHAPE" else 0
    if fused not in _FUSED:
        raise refuse(f"fused activation {fused} (ActivationFunctionType) is not one the suite knows")
    out_shape = read.layer_kind.output_shape(shape)
    ops, source = ([op], current) if lifting is None else ([lifting, op], int(lifting.inputs[0]))
    return _Pending(index, source, ops, read.W, read.native, read.b, _FUSED[fused],
                    f"fused in {name} op {index}" if fused else "none", bool(fused), layer_kind=read.layer_kind,
                    in_shape=shape, out_shape=out_shape, feed_shape=(1, *shape) if lifted and lifting is None else (),
                    lifted=lifting is not None, label=name if lifting is None else f"EXPAND_DIMS+{name}")


def _layer_norm(index: int, flat: Any, names: dict[int, str], graph: Any, current: int,
                shape: tuple[int, ...] | None, constant: Any, refuse: Any,
                tokens: tuple[int, int] | None = None) -> tuple[_Pending, list[int]]:
    """The LayerNorm the converter wrote as ops from the ``MEAN`` at ``index`` (``litert_norms``: found by their
    dataflow, among ops it does not need), its activation the last ``ADD``'s fused one, and its ops' positions; on a
    token sequence (``tokens``: ``(L, features)``) over each token's features."""
    if shape is not None:
        raise refuse(f"a MEAN of a spatial tensor (per sample {shape}): a global pooling or a normalisation over the "
                     "spatial axes written as ops, which the suite does not read")
    following = [(_op_name(flat, names, op), op) for op in graph.operators[index:]]
    features = int(graph.tensors[current].shape[-1])
    try:
        read, form, found = layer_norm(following, constant, lambda t: _integers(flat, graph, t), current, features,
                                       rank=2 if tokens is None else 3)
    except Refused as exc:
        raise refuse(str(exc)) from None
    ops = [following[p][1] for p in found]
    fused = getattr(ops[-1].builtinOptions, "fusedActivationFunction", 0)
    if fused not in _FUSED:
        raise refuse(f"fused activation {fused} (ActivationFunctionType) is not one the suite knows")
    pending = _Pending(index, current, ops, read.W, read.native, None, _FUSED[fused],
                       f"fused in ADD op {index + found[-1]}" if fused else "none", bool(fused),
                       layer_kind=read.layer_kind, in_shape=tokens or (features,), out_shape=tokens or (features,),
                       label="+".join(form))
    return pending, [index + p for p in found]


def _affine(index: int, mul: Any, add: Any, read: KindRead, current: int, shape: tuple[int, ...] | None,
            refuse: Any) -> _Pending:
    """A ``MUL`` and an ``ADD`` of per-channel constants (``litert_norms.channel_affine``) as one ``ChannelAffine``
    unit on the chain's tensor (spatial ``shape``, or 2-D: None), its activation the ``ADD``'s fused one."""
    fused = getattr(add.builtinOptions, "fusedActivationFunction", 0)
    if fused not in _FUSED:
        raise refuse(f"fused activation {fused} (ActivationFunctionType) is not one the suite knows")
    features = shape if shape is not None else (read.layer_kind.features,)
    return _Pending(index, current, [mul, add], read.W, read.native, read.b, _FUSED[fused],
                    f"fused in ADD op {index + 1}" if fused else "none", bool(fused), layer_kind=read.layer_kind,
                    in_shape=features, out_shape=features, label="MUL+ADD")


def _refuse_recurrent_or_attention(flat: Any, names: dict[int, str], graph: Any, read: set[int]) -> None:
    """Refuse a file holding a recurrent or attention op (``litert_sequence.NOT_READ_SEQUENCE_OPS``) outside the
    self-attention regions read (``read``: their ops' indices), naming it, wherever it is: before the walk reaches it
    as a branch or an unread op."""
    found = not_read_sequence_op([_op_name(flat, names, op) if i not in read else "" for i, op in
                                  enumerate(graph.operators)])
    if found is not None:
        index, problem = found
        op = graph.operators[index]
        raise ModelNotSupported("tflite", _tensor_name(graph, int(op.outputs[0])), _op_name(flat, names, op), index,
                                problem)


def _attentions(flat: Any, names: dict[int, str], graph: Any, constant: Any) -> dict[int, AttentionRegion]:
    """The self-attention regions of the subgraph (``litert_attention``) by their first op's index; one the suite does
    not judge refused naming its op."""
    ops = list(graph.operators)
    try:
        found = find_attentions([_op_name(flat, names, op) for op in ops], ops, constant,
                                lambda t: tuple(int(d) for d in graph.tensors[t].shape))
    except AttentionRefused as exc:
        op = ops[exc.index]
        raise ModelNotSupported("tflite", _tensor_name(graph, int(op.outputs[0])), _op_name(flat, names, op),
                                exc.index, exc.problem) from None
    return {region.first: region for region in found}


def _attention(region: AttentionRegion, graph: Any, current: int, tokens: tuple[int, int] | None,
               refuse: Any) -> _Pending:
    """The self-attention unit of ``region``: its ops run as one, on the chain's token sequence."""
    kind = region.layer_kind
    if region.start != current or tokens != (kind.length, kind.embed_dim):
        raise refuse(f"a self-attention on a tensor other than the chain's token sequence (batch, L, E) (now "
                     f"{tokens}): the suite reads one after an Embedding or a layer on its tokens")
    ops = [graph.operators[i] for i in region.ops]
    return _Pending(region.first, current, ops, region.W, region.native, region.b, "linear", "none", False,
                    dequantize=[graph.operators[i] for i in region.dequantize], layer_kind=kind, in_shape=tokens,
                    out_shape=tokens, label=f"self-attention ({len(ops)} ops)")


def _id_prelude(flat: Any, names: dict[int, str], graph: Any, ids: int, constant: Any,
                computed: dict[int, tuple[int, Any]]) -> tuple[int, list[int]] | None:
    """The ``GATHER`` of an Embedding and the ops computing its ids from the model's input (``litert_sequence``), a
    ``DEQUANTIZE``d table counted as the constant it is."""
    ops = [(_op_name(flat, names, op), op) for op in graph.operators]
    float16 = {int(op.outputs[0]) for name, op in ops if name == "DEQUANTIZE"}
    return id_prelude(ops, ids, lambda t: np.zeros(0) if t in float16 else constant(t),
                      lambda index, op: ops[index][0] == "DEQUANTIZE" or int(op.outputs[0]) in computed)


def _embedding(index: int, op: Any, prelude: tuple[int, list[int]] | None, flat: Any, names: dict[int, str],
               graph: Any, ids: int, constant: Any, refuse: Any) -> _Pending:
    """The Embedding unit of the ``GATHER`` at ``index``: the ops computing its ids from the model's input (``ids``)
    and the ``GATHER``, fed the ids in the input's type."""
    if prelude is None or prelude[0] != index:
        raise refuse("a GATHER that does not look up the model's token ids in a constant table: the suite judges an "
                     "Embedding (a GATHER of a constant table by the token ids, Keras' wrap of negative ids before it)")
    tensor = graph.tensors[ids]
    signature = tensor.shapeSignature if tensor.shapeSignature is not None and len(tensor.shapeSignature) else \
        tensor.shape
    try:
        read = embedding(op, constant(int(op.inputs[0])), tuple(int(d) for d in signature), int(tensor.type))
    except Refused as exc:
        raise refuse(str(exc)) from None
    kind = read.layer_kind
    ops = [graph.operators[i] for i in prelude[1]] + [op]
    return _Pending(index, ids, ops, read.W, read.native, None, "linear", "none", False, layer_kind=kind,
                    in_shape=(kind.length,), out_shape=kind.output_shape((kind.length,)),
                    label="+".join(_op_name(flat, names, o) for o in ops), feeds=FEED_TYPES[int(tensor.type)])


def _float16_epsilon(norm: _Pending, dequantized: dict[int, tuple[np.ndarray, Any]], refuse: Any) -> None:
    """Refuse a LayerNorm whose epsilon the file stores as float16: the converter's float16 weight quantisation
    rounds it with the norm's gamma (measured: Keras' norm on a 2-D tensor and on a token sequence, onnx2tf's),
    0.001 to 0.0010004, 1e-5 to 1.0014e-5, a change of the layer the weight rounding term does not cover."""
    epsilon = [dequantized[int(t)][0] for o in norm.ops for t in o.inputs
               if int(t) in dequantized and dequantized[int(t)][0].size == 1]
    if epsilon:
        raise refuse(f"a LayerNormalization whose epsilon the file stores as float16 (DEQUANTIZE: the converter's "
                     f"float16 weight quantisation rounds it, to {float(epsilon[0].reshape(-1)[0]):.8g}): the suite "
                     "judges a LayerNorm computing with the epsilon written (convert it without float16 weights)")


def _sequence_mean(index: int, op: Any, current: int, axes: list[int] | None, keep: bool, tokens: tuple[int, int],
                   refuse: Any) -> _Pending:
    """The ``MEAN`` over the tokens of a sequence: a ``SequenceMean`` unit."""
    try:
        read = sequence_mean(axes, keep, tokens)
    except Refused as exc:
        raise refuse(str(exc)) from None
    return _Pending(index, current, [op], read.W, read.native, None, "linear", "none", False,
                    layer_kind=read.layer_kind, in_shape=tokens, out_shape=(tokens[1],), label="MEAN")


def _token_dense(index: int, reshape: Any, flat: Any, names: dict[int, str], graph: Any, current: int, constant: Any,
                 computed: dict[int, tuple[int, Any]], tokens: tuple[int, int],
                 refuse: Any) -> tuple[_Pending, list[int]]:
    """A ``Dense`` on a token sequence as TensorFlow's ``Tensordot`` (``RESHAPE``, ``FULLY_CONNECTED``, ``RESHAPE``,
    ``litert_sequence.tensordot``) from the ``RESHAPE`` at ``index``: one dense unit token by token, and the indices
    of the ops read with the first."""
    following = [(i, _op_name(flat, names, o), o) for i, o in enumerate(graph.operators)
                 if i > index and int(o.outputs[0]) not in computed and _op_name(flat, names, o) != "DEQUANTIZE"]
    found = tensordot(reshape, following, tokens, lambda t: tuple(int(d) for d in graph.tensors[t].shape))
    target = _integers(flat, graph, int(reshape.inputs[1])) if len(reshape.inputs) > 1 else None
    if found is None or not tensordot_target(target, tokens):
        raise refuse(sequence_refusal("RESHAPE", tokens))
    fc_index, fc, back_index, back = found
    pending = _dense(fc_index, fc, int(reshape.outputs[0]), constant, refuse)
    if pending.W.shape[0] != tokens[1]:
        raise refuse(f"takes {pending.W.shape[0]} features, but the sequence before it has {tokens[1]}")
    pending.index, pending.input, pending.ops = index, current, [reshape, fc, back]
    pending.in_shape, pending.out_shape = tokens, (tokens[0], pending.W.shape[1])
    pending.label = "RESHAPE+FULLY_CONNECTED+RESHAPE"
    pending.shape_ops = _computing(computed, [int(t) for o in (reshape, back) for t in o.inputs])
    return pending, [fc_index, back_index]


def _constant_names(graph: Any, inputs: list[int], constant: Any) -> list[str]:
    """The names of an op's constant inputs (its weights, its bias)."""
    return [_tensor_name(graph, t) for t in inputs[1:] if t >= 0 and constant(t) is not None]


def _takes_bias(p: _Pending) -> bool:
    """Whether an ``ADD`` of a constant after ``p`` is its bias: a dense unit without one, or a conv whose own bias is
    zero (the converter writes a one-filter ``Conv1D``'s bias as an ``ADD`` after the ``RESHAPE``, the ``CONV_2D``'s
    bias zeros), before any activation."""
    if p.act != "linear" or not (p.layer_kind is DENSE or isinstance(p.layer_kind, Conv)):
        return False
    return p.b is None or (p.layer_kind is not DENSE and not np.any(p.b))


def _op_name(flat: Any, names: dict[int, str], op: Any) -> str:
    code = flat.operatorCodes[op.opcodeIndex]
    return names.get(max(code.builtinCode, code.deprecatedBuiltinCode), f"op{code.builtinCode}")


def _following(flat: Any, names: dict[int, str], graph: Any, index: int) -> tuple[str, Any] | None:
    """The op after the one at ``index``, with its name; None at the end."""
    if index + 1 >= len(graph.operators):
        return None
    op = graph.operators[index + 1]
    return _op_name(flat, names, op), op


def _tensor_name(graph: Any, tensor: int) -> str:
    name = graph.tensors[tensor].name
    return name.decode() if isinstance(name, bytes) else str(name)


def _integers(flat: Any, graph: Any, tensor: int) -> list[int] | None:
    """A constant integer tensor's values (INT32 or INT64: a reduction's axes); None for any other tensor."""
    t = graph.tensors[tensor]
    data = flat.buffers[t.buffer].data
    if data is None or len(data) == 0 or t.type not in (2, 4):  # TensorType INT32, INT64
        return None
    return [int(v) for v in np.frombuffer(bytes(bytearray(data)), dtype=np.int32 if t.type == 2 else np.int64)]


def _one_weight_label(units: list[DenseUnit]) -> list[DenseUnit]:
    """The units, every one under the file's one label, which gives its weight-rounding term (``litert_fp16w``:
    float16 weights). A file with float16 weights in some layers and float32 in others would get the wrong term
    for some, so it is refused; a unit without weights (a pool, a flatten) takes the file's label."""
    weighted = [u for u in units if u.W.size]
    if len({u.framework for u in weighted}) > 1:
        narrow = next(u for u in weighted if u.framework == FLOAT16_WEIGHTS)
        wide = next(u for u in weighted if u.framework != FLOAT16_WEIGHTS)
        raise ModelNotSupported("tflite", wide.name, wide.kind, wide.position,
                                f"stores its weights as float32, but {narrow.name!r} (op {narrow.position}) as float16 "
                                "(DEQUANTIZE): the suite judges a file whose weights are all float16 or all float32")
    label = weighted[0].framework if weighted else FRAMEWORK
    return [u if u.framework == label else replace(u, framework=label) for u in units]


def _per_sample(flat: Any, graph: Any, reshape: Any, batch: int | None, refuse: Any) -> bool:
    """Whether a flatten's ``RESHAPE`` fixes the batch: to a constant ``[1, features]`` where the file fixes its
    input's batch at 1 (onnx2tf writes the batch of torch's export), so its unit runs a sample at a time, as the file
    does; any other constant batch is refused."""
    target = _integers(flat, graph, int(reshape.inputs[1])) if len(reshape.inputs) > 1 else None
    if target is None or target[0] == -1:
        return False
    if batch != 1 or target[0] != 1:
        raise refuse(f"a RESHAPE to {target}, the input's batch {batch or 'free'}: the suite judges a flatten of all "
                     "but the batch axis (a target [-1, features], or [1, features] where the input's batch is 1)")
    return True


def _input_transpose(flat: Any, names: dict[int, str], graph: Any, tensor: int) -> Any:
    """The first op (after the ``DEQUANTIZE`` ops of float16 weights) when it is a ``TRANSPOSE`` of the 4-D input
    ``tensor`` to channels-last (``perm [0, 2, 3, 1]``): onnx2tf keeps torch's ``N, C, H, W`` input so with ``-kt``;
    None otherwise."""
    ops = [op for op in graph.operators if _op_name(flat, names, op) != "DEQUANTIZE"]
    if not ops or len(graph.tensors[tensor].shape) != 4:
        return None
    op = ops[0]
    if _op_name(flat, names, op) != "TRANSPOSE" or int(op.inputs[0]) != tensor:
        return None
    return op if _integers(flat, graph, int(op.inputs[1])) == [0, 2, 3, 1] else None


def _channels_first_flatten(index: int, op: Any, flat: Any, names: dict[int, str], graph: Any,
                            shape: tuple[int, ...], current: int, constant: Any, refuse: Any,
                            batch: int | None) -> _Pending:
    """A ``TRANSPOSE`` to channels-first (``perm [0, 3, 1, 2]``) and the ``RESHAPE`` after it: onnx2tf's flatten
    in torch's ``C, H, W`` order, read as one flatten unit, its output put in the canonical ``H, W, C`` order (the
    next dense unit's rows permuted to it, as the torch walker permutes a ``Linear``'s)."""
    perm = _integers(flat, graph, int(op.inputs[1]))
    rank = len(shape) + 1
    following = _following(flat, names, graph, index)
    if perm != [0, rank - 1, *range(1, rank - 1)] or following is None or following[0] != "RESHAPE" or \
            int(following[1].inputs[0]) != int(op.outputs[0]):
        raise refuse(f"a TRANSPOSE (perm {perm}) before {following[0] if following else 'the end'}: the suite reads "
                     "one to channels-first before the RESHAPE of a flatten (torch's C, H, W order, as onnx2tf "
                     "writes)")
    reshape = following[1]
    declared = tuple(int(d) for d in graph.tensors[reshape.outputs[0]].shape)
    pending = _kind(index, reshape, "RESHAPE", current, shape, constant, refuse, declared, None, False)
    pending.ops, pending.label, pending.channels_first = [op, reshape], "TRANSPOSE+RESHAPE", True
    pending.per_sample = _per_sample(flat, graph, reshape, batch, refuse)
    return pending


def _dense(index: int, op: Any, current: int, constant: Any, refuse: Any,
           permutation: np.ndarray | None = None) -> _Pending:
    """A ``FULLY_CONNECTED`` unit; after a channels-first flatten (``permutation``) its canonical rows are the stored
    ones in the canonical (channels-last) flatten order."""
    inputs = [int(t) for t in op.inputs]
    weight = constant(inputs[1]) if len(inputs) > 1 else None
    if inputs[0] != current or weight is None:
        raise refuse("multiplies by a computed tensor, not a constant weight")
    if weight.dtype != np.float32 or weight.ndim != 2:
        raise refuse(f"a weight of dtype {weight.dtype}, shape {weight.shape}: the suite judges float32 (out, in) "
                     "weights here")
    bias = constant(inputs[2]) if len(inputs) > 2 else None
    fused = getattr(op.builtinOptions, "fusedActivationFunction", 0)
    if fused not in _FUSED:
        raise refuse(f"fused activation {fused} (ActivationFunctionType) is not one the suite knows")
    act = _FUSED[fused]
    W = weight.T.copy()
    if permutation is not None:
        if W.shape[0] != len(permutation):
            raise refuse(f"takes {W.shape[0]} features, but the flatten before it gives {len(permutation)}")
        W = W[permutation]
    return _Pending(index, current, [op], W, weight,
                    None if bias is None else bias.reshape(-1).astype(np.float32), act,
                    f"fused in FULLY_CONNECTED op {index}" if fused else "none", bool(fused), permutation=permutation)


def _activation(name: str, op: Any) -> str:
    options = op.builtinOptions
    if name in _SINGLE:
        return _SINGLE[name]
    if name == "SOFTMAX":
        if getattr(options, "beta", 1.0) != 1.0:
            raise KeyError(name)
        return "softmax"
    if name == "LOG_SOFTMAX":
        return "log_softmax"
    if name == "GELU":
        return "gelu_tanh" if getattr(options, "approximate", False) else "gelu"
    if name == "LEAKY_RELU":
        return activation_name("leaky_relu", float(str(np.float32(options.alpha))))
    raise KeyError(name)


def _close(p: _Pending, content: bytes, flat: Any) -> DenseUnit:
    output = int(p.ops[-1].outputs[0])
    shape_ops = []
    for op in p.shape_ops:  # a SHAPE of a tensor before the unit: its batch is the unit's input's
        op = copy.deepcopy(op)
        if len(op.inputs) == 1:
            op.inputs = [p.input]
        shape_ops.append(op)
    inputs = [p.input] if p.skip < 0 else [p.input, p.skip]  # a residual Add: the branch, then the skip
    sliced = _slice(content, [*(p.dequantize or []), *shape_ops, *p.ops], inputs, output)
    state: dict[str, Any] = {}
    rows = None if p.permutation is None else np.argsort(p.permutation)  # canonical features in the stored order
    flat_order = flatten_permutation(p.in_shape) if p.channels_first else None  # channels-first made canonical

    def run(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x) if rows is None else np.asarray(x)[:, rows]
        x = np.moveaxis(x, -1, 1) if p.fed_channels_first else x
        samples = [x[i:i + 1] for i in range(len(x))] if p.per_sample and len(x) > 1 else [x]
        y = np.concatenate([once(part) for part in samples])
        return y if flat_order is None else y[:, flat_order]

    def once(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=p.feeds or np.float32)
        if p.feed_shape:
            x = x.reshape(x.shape[0], *p.feed_shape)  # as the op takes it (it flattens it itself; lifted to 2-D)
        parts = [x] if p.skip < 0 else [np.ascontiguousarray(part) for part in p.layer_kind.split(x)]
        interpreter = state.get("interpreter")
        if interpreter is None or state.get("batch") != x.shape[0]:
            interpreter = _interpreter(sliced)
            details = _inputs_in_order(interpreter, inputs, sliced)
            for detail, part in zip(details, parts):
                interpreter.resize_tensor_input(detail["index"], list(part.shape))
            interpreter.allocate_tensors()
            state.update(interpreter=interpreter, batch=x.shape[0], details=details)
        for detail, part in zip(state["details"], parts):
            interpreter.set_tensor(detail["index"], part)
        interpreter.invoke()
        y = interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()
        return y.reshape(len(y), *p.out_shape) if p.lifted else y  # (N, 1, L, C) unless squeezed: the same values

    kind = "tflite FULLY_CONNECTED" + ("+ADD" if len(p.ops) > 1 and _is_add(flat, p.ops[1]) else "")
    if p.layer_kind is not DENSE or p.label:
        kind = f"tflite {p.label or _name_of(flat, p.ops[0])}"
    if p.dequantize:
        kind = f"{kind} (float16 weights, DEQUANTIZE)"
    if p.named_fold:
        kind = f"{kind}, {NAMED_FOLD}"
    unit = DenseUnit(FLOAT16_WEIGHTS if p.dequantize else FRAMEWORK, f"op {p.index}", kind, p.index, p.W, p.b,
                     p.native, p.act, p.act_source, "float32" if p.W.size else "", run, layer_kind=p.layer_kind,
                     in_shape=p.in_shape, out_shape=p.out_shape)
    return unit if p.flatten_order is None else in_flatten_order(unit, p.flatten_order)


def _name_of(flat: Any, op: Any) -> str:
    return _op_name(flat, _op_names(), op)


def _is_add(flat: Any, op: Any) -> bool:
    return _name_of(flat, op) == "ADD"


def _inputs_in_order(interpreter: Any, inputs: list[int], sliced: bytes) -> list[dict]:
    """The interpreter's input details in the order of the sliced model's ``inputs`` (matched by tensor name)."""
    graph = _read(sliced).subgraphs[0]
    details = {d["name"]: d for d in interpreter.get_input_details()}
    return [details[_tensor_name(graph, t)] for t in inputs] if len(inputs) > 1 else \
        interpreter.get_input_details()[:1]


def _slice(content: bytes, ops: list[Any], inputs: list[int], output_tensor: int) -> bytes:
    """A flatbuffer of ``ops`` alone (copied out of ``content``): its inputs (the unit's; a residual Add's two
    operands), one output, the batch axis free."""
    import flatbuffers

    model = _read(content)
    graph = model.subgraphs[0]
    graph.operators = list(ops)  # the ops refer to tensors, buffers and op codes by index: the same in any read
    graph.inputs, graph.outputs = list(inputs), [output_tensor]
    for tensor in (*inputs, output_tensor):
        t = graph.tensors[tensor]
        t.shapeSignature = [-1, *(int(d) for d in t.shape[1:])]
    model.signatureDefs = []
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())

