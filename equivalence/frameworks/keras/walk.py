"""Walk a user's Keras model into dense units, in execution order, reading and never writing it.

The order comes from the model's own call: the model's ``call`` is run once on a symbolic
``keras.KerasTensor``, which makes every layer (and every ``keras.ops`` activation) it calls
record a node, and the chain is read back from the output. That works the same for
``Sequential``, functional and subclassed models, nested ones too, whatever order their
layers were created in. Dropout, Identity, Flatten and InputLayer are skipped; anything
that is not a ``Dense`` or a known activation is refused with its name, type and position.

On a spatial input, Conv1D, Conv2D, MaxPooling1D/2D, AveragePooling1D/2D and a Flatten of their output are layers
too (``equivalence.core.spatial``); their kernels are already in the canonical layout. A channels-first model is
converted to the canonical channels-last layout at every unit, as torch's (``equivalence.frameworks.keras.
channels_first``). So are
Embedding, MultiHeadAttention called as ``mha(x, x)`` and GlobalAveragePooling1D
(``equivalence.frameworks.keras.sequence``). A residual ``Add()([x, f(x)])`` or ``x + f(x)`` is an Add unit after the
units of ``f``, and ``Add()([a(x), b(x)])`` a branch unit between their units
(``equivalence.frameworks.keras.residual``); any other branch is refused.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import zipfile
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from equivalence.core.activations import activation_name
from equivalence.core.norms import BatchNorm, LayerNorm
from equivalence.core.recurrent import Recurrent
from equivalence.core.residual import INPUT, branch_unit, check_residuals
from equivalence.core.spatial import Conv, Flatten, Pool, flatten_permutation
from equivalence.core.tokens import is_sequence
from equivalence.core.walk import (
    DenseUnit,
    ModelNotSupported,
    NotJudged,
    Refused,
    attach_activation,
    check_chain,
    in_flatten_order,
    judged_activation,
)
from equivalence.frameworks.keras import ACTIVATIONS as REGISTERED
from equivalence.frameworks.keras import PARAMETRIC_ACTIVATIONS
from equivalence.frameworks.keras import channels_first as cf
from equivalence.frameworks.keras.layer_config import axis_is_last, keras_padding
from equivalence.frameworks.keras.recurrent import recurrent_kind, recurrent_unit
from equivalence.frameworks.keras.residual import SECOND_BRANCH, is_add, operands, residual_part, source_of
from equivalence.frameworks.keras.sequence import (
    SEQUENCE_KINDS,
    data_tensors,
    is_self_attention,
    sequence_kind,
    sequence_unit,
)
from equivalence.frameworks.registry import get_adapter

FRAMEWORK = "keras"
L = keras.layers
try:
    from keras.src.models.functional import Functional  # Keras 3.0 and later: the functional model's class
except ImportError:  # pragma: no cover - a Keras without it: no functional graph to read, only symbolic calls
    Functional = None


_Refuse = Refused

JUDGED = ("Dense, Conv1D, Conv2D, MaxPooling1D/2D, AveragePooling1D/2D, Flatten, BatchNormalization, "
          "LayerNormalization, Embedding, MultiHeadAttention, GlobalAveragePooling1D, LSTM and GRU layers, a residual "
          "Add, their activations, and skips Dropout, Identity, InputLayer and a Flatten of 2-D inputs")
"""What the Keras walker reads, for its refusal of anything else."""


def _default(fn: Callable, name: str) -> Any:
    return inspect.signature(fn).parameters[name].default


def _functions() -> dict[Any, str]:
    """Keras activation functions -> the name, their default arguments read from Keras itself."""
    a = keras.activations
    present = {name: fn for name in ("celu", "hard_silu") if (fn := getattr(a, name, None)) is not None}
    table = {
        a.relu: "relu", a.sigmoid: "sigmoid", a.tanh: "tanh", a.linear: "linear", a.selu: "selu",
        a.silu: "silu", a.softplus: "softplus", a.softsign: "softsign", a.relu6: "relu6",
        a.hard_sigmoid: "hard_sigmoid", a.mish: "mish",
        a.gelu: "gelu" if _default(a.gelu, "approximate") is False else "gelu_tanh",
        a.elu: activation_name("elu", _default(a.elu, "alpha")),
        a.leaky_relu: activation_name("leaky_relu", _default(a.leaky_relu, "negative_slope")),
        a.softmax: activation_name("softmax_axis", _default(a.softmax, "axis")),
        a.log_softmax: activation_name("log_softmax_axis", _default(a.log_softmax, "axis")),
    }
    if "hard_silu" in present:  # Keras 3.0.5 has neither hard_silu nor celu
        table[present["hard_silu"]] = "hard_silu"
    if "celu" in present:
        table[present["celu"]] = activation_name("celu", _default(present["celu"], "alpha"))
    if _default(a.relu, "max_value") is not None or _default(a.relu, "negative_slope") != 0:
        del table[a.relu]  # defaults changed: refuse rather than guess
    table.update({fn: name for name, fn in REGISTERED.items() if callable(fn)})  # the suite's own, for .keras files
    table.update({fn: name for name, fn in PARAMETRIC_ACTIVATIONS.items()})
    return table


def _activation_function(fn: Any) -> str:
    if isinstance(fn, str):
        fn = keras.activations.get(fn)
    name = _functions().get(fn)
    if name is None:
        raise _Refuse(f"activation {getattr(fn, '__name__', fn)!r} is not one the suite knows "
                      "(pass a Keras activation, or a separate activation layer)")
    return name


def _relu_layer(layer: Any) -> str:
    if layer.threshold != 0:
        raise _Refuse(f"ReLU(threshold={layer.threshold}) is not judged")
    if layer.max_value is not None:
        if layer.max_value == 6 and layer.negative_slope == 0:
            return "relu6"
        raise _Refuse(f"ReLU(max_value={layer.max_value}, negative_slope={layer.negative_slope}) is not judged")
    return "relu" if layer.negative_slope == 0 else activation_name("leaky_relu", layer.negative_slope)


def _softmax_layer(layer: Any) -> str:
    axis = layer.axis
    if isinstance(axis, (tuple, list)):
        if len(axis) != 1:
            raise _Refuse(f"Softmax over axes {axis}")
        axis = axis[0]
    return activation_name("softmax_axis", axis)


LAYERS: dict[type, Callable[[Any], str | None]] = {
    L.Activation: lambda layer: _activation_function(layer.activation),
    L.ReLU: _relu_layer,
    L.LeakyReLU: lambda layer: activation_name("leaky_relu", layer.negative_slope),
    L.ELU: lambda layer: activation_name("elu", layer.alpha),
    L.Softmax: _softmax_layer,
    L.Dropout: lambda layer: None,
    L.Identity: lambda layer: None,
    L.Flatten: lambda layer: None,
    L.InputLayer: lambda layer: None,
}
"""Activation layers; ``None`` means skipped at inference."""


def _op_activation(op: Any) -> str:
    """A ``keras.ops`` activation called in a subclassed model's ``call`` (an Operation node)."""
    kind = type(op).__name__
    fixed = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Selu": "selu", "Silu": "silu",
             "Softplus": "softplus", "Softsign": "softsign", "Relu6": "relu6", "HardSigmoid": "hard_sigmoid",
             "HardSilu": "hard_silu", "Mish": "mish"}
    if kind in fixed:
        return fixed[kind]
    if kind == "Gelu":
        return "gelu" if op.approximate is False else "gelu_tanh"
    if kind in ("Elu", "Celu"):
        return activation_name(kind.lower(), op.alpha)
    if kind == "LeakyRelu":
        return activation_name("leaky_relu", op.negative_slope)
    if kind in ("Softmax", "LogSoftmax"):
        return activation_name("softmax_axis" if kind == "Softmax" else "log_softmax_axis", op.axis)
    raise NotJudged(kind)


def _softmax_of_a_tensor(op: Any, shape: tuple[int, ...], refuse: Callable[[str], Exception]) -> str | None:
    """A ``Softmax`` layer or a softmax op of a tensor of more than two axes (``shape``: one sample's, canonical):
    its name when it acts over the last axis (a channels-last conv's channels, a token sequence's features),
    refused over any other; None for another op. The activation tables read axes of a 2-D tensor, where 1 is the
    last. (A softmax of a channels-first tensor is refused by ``channels_first``.)"""
    kind = type(op).__name__
    if kind not in ("Softmax", "LogSoftmax"):
        return None
    family = "log_softmax" if kind == "LogSoftmax" else "softmax"
    axes = op.axis if isinstance(op.axis, (tuple, list)) else (op.axis,)
    rank = len(shape) + 1
    if len(axes) != 1 or int(axes[0]) % rank != rank - 1:
        raise refuse(f"a {family} over axis {op.axis} of a {rank}-D tensor (batch, {', '.join(map(str, shape))}): the "
                     "suite judges it over the last axis (the channels, or a sequence's features)")
    return family


# --- the walk -----------------------------------------------------------------------------------

def input_shape(model: Any) -> tuple[int, ...] | None:
    """One sample's canonical input shape as the model declares it (``keras.Input``, or the shape it was built
    with; a channels-first model's ``(C, *spatial)`` made ``(*spatial, C)``), or None when it does not say."""
    shape = _declared_shape(model)
    return None if shape is None else cf.canonical(shape, cf.declared_format(model))


def _declared_shape(model: Any) -> tuple[int, ...] | None:
    """One sample's input shape in the model's own layout, or None."""
    inputs = getattr(model, "inputs", None)
    try:
        if inputs:
            if len(inputs) != 1:
                raise ModelNotSupported(FRAMEWORK, model.name, type(model).__name__, None,
                                        f"takes {len(inputs)} inputs; the suite judges a model of one input")
            shape = tuple(inputs[0].shape[1:])
            if all(n is not None for n in shape):
                return tuple(int(n) for n in shape)
    except (AttributeError, ValueError, TypeError):
        pass
    shapes = getattr(model, "_build_shapes_dict", None) or {}
    for shape in shapes.values():
        if shape and all(n is not None for n in shape[1:]):
            return tuple(int(n) for n in shape[1:])
    return None


def _input_shape(model: Any, hint: int | None) -> tuple[int, ...]:
    shape = _declared_shape(model)
    if shape is not None:
        return shape
    if hint is not None:
        return (hint,)
    raise ModelNotSupported(FRAMEWORK, model.name, type(model).__name__, None,
                            f"its input shape is unknown: {_how_to_build(model)}")


def _how_to_build(model: Any) -> str:
    """How to give ``model`` its input shape, in its input's form: token ids ``(L,)`` before an Embedding, a
    sequence ``(T, features)`` before a recurrent layer or an attention, else ``(n_in,)``."""
    layers = model._flatten_layers(include_self=False) if hasattr(model, "_flatten_layers") else []
    first = next((layer for layer in layers if isinstance(layer, (L.Embedding, L.LSTM, L.GRU, L.MultiHeadAttention,
                                                                  L.Dense))), None)
    if isinstance(first, L.Embedding):
        return "start it with keras.Input(shape=(L,), dtype='int32') or call model.build((None, L)), L its " \
               "sequence length"
    if first is not None and not isinstance(first, L.Dense):
        return "start it with keras.Input(shape=(T, features)) or call model.build((None, T, features)), T its " \
               "sequence length"
    return "start it with keras.Input(shape=(n_in,)) or call model.build((None, n_in))"


def _graph(block: Any) -> tuple[Any, Any] | None:
    """The one input and one output of a functional graph the model already holds (a functional model, or a
    ``Sequential`` started with ``keras.Input``: its ``_functional``), or None."""
    if Functional is None:
        return None
    functional = block if isinstance(block, Functional) else getattr(block, "_functional", None)
    if not isinstance(functional, Functional):
        return None
    inputs, outputs = functional.inputs, functional.outputs
    if not isinstance(inputs, (list, tuple)) or not isinstance(outputs, (list, tuple)):
        inputs, outputs = [inputs], [outputs]
    return (inputs[0], outputs[0]) if len(inputs) == len(outputs) == 1 else None


def _symbolic_call(block: Any, shape: tuple[int, ...]) -> tuple[Any, Any]:
    """``block``'s call run on a fresh ``KerasTensor``: (that input, the output).

    Keras 3.0 to 3.3's functional ``call`` converts its input with the backend's ``convert_to_tensor``, which
    refuses a ``KerasTensor`` (``ValueError: A KerasTensor cannot be used as input to a TensorFlow function``);
    a functional model's (or a ``Sequential``'s) own graph is the same chain, so it is read directly there.
    """
    start = keras.KerasTensor((None, *shape), dtype=_input_dtype(block) or getattr(block, "compute_dtype", None)
                              or "float32")
    try:
        return start, block.call(start)
    except Exception as exc:  # noqa: BLE001 - a call that cannot run symbolically: control flow, TF ops
        graph = _graph(block)
        if graph is not None:
            return graph
        raise ModelNotSupported(FRAMEWORK, block.name, type(block).__name__, None,
                                f"its call cannot be traced symbolically ({type(exc).__name__}: "
                                f"{' '.join(str(exc).split())[:200]})") from None


def _input_dtype(block: Any) -> str | None:
    """The dtype of an integer input the model declares (token ids), else None (the model's compute dtype)."""
    inputs = getattr(block, "inputs", None) or []
    dtype = str(getattr(inputs[0], "dtype", "")) if len(inputs) == 1 else ""
    return dtype if dtype.startswith(("int", "uint")) else None


def _trace(block: Any, shape: tuple[int, ...]) -> tuple[set[int], list[tuple[Any, Any, Any]]]:
    """The ids of the input tensor (and of its casts), and ``(operation, node, skip)`` of every call in ``block``'s
    chain, input to output, nested models expanded; ``skip`` is a residual Add's other operand (the chain follows
    its branch), else None."""
    start, out = _symbolic_call(block, shape)
    if isinstance(out, (list, tuple)) and len(out) == 1:
        out = out[0]
    if not isinstance(out, keras.KerasTensor):
        raise ModelNotSupported(FRAMEWORK, block.name, type(block).__name__, None,
                                f"returns {type(out).__name__}, not one tensor")
    chain = _back(block, out, start, start)
    chain.reverse()
    casts = [entry for entry in chain if type(entry[0]).__name__ == "ConvertToTensor"]  # the call's own input cast
    starts = {id(start), *(id(node.output_tensors[0]) for _, node, _ in casts)}
    chain = [entry for entry in chain if type(entry[0]).__name__ != "ConvertToTensor"]
    for position, (op, node, skip) in enumerate(chain):
        if skip is None and op is not SECOND_BRANCH and len(data_tensors(node)) != 1 \
                and not is_self_attention(op, node):
            raise ModelNotSupported(FRAMEWORK, op.name, type(op).__name__, position,
                                    f"a branch: it takes {len(node.input_tensors)} tensors (concatenations are not "
                                    "judged; a residual Add of the chain's output and an earlier one is)")
    expanded: list[tuple[Any, Any, Any]] = []
    for op, node, skip in chain:
        if isinstance(op, keras.Model):
            inner_starts, inner = _trace(op, _width_of(node))
            outer = node.input_tensors[0]  # what the nested model's input is in this chain
            expanded.extend((o, n, outer if id(s) in inner_starts else s) for o, n, s in inner)
        else:
            expanded.append((op, node, skip))
    return starts, expanded


def _back(block: Any, tensor: Any, until: Any, start: Any) -> list[tuple[Any, Any, Any]]:
    """The entries from ``tensor`` back to ``until``, output first; at ``a(x) + b(x)``, ``b``'s then a
    ``SECOND_BRANCH`` entry, then ``a``'s (``equivalence.frameworks.keras.residual``)."""
    chain: list[tuple[Any, Any, Any]] = []
    while tensor is not until:
        history = getattr(tensor, "_keras_history", None)
        if history is None or tensor is start:
            raise ModelNotSupported(FRAMEWORK, block.name, type(block).__name__, None,
                                    "its output does not come from its input through Keras layers")
        op = history.operation
        node = op._inbound_nodes[history.node_index]
        inputs = list(node.input_tensors)
        if not inputs:
            raise ModelNotSupported(FRAMEWORK, op.name, type(op).__name__, None, "takes no input tensor")
        tensor, skip, fork = operands(op, node, start) if is_add(op) and len(inputs) > 1 else (inputs[0], None, None)
        chain.append((op, node, skip))
        if fork is not None:  # a(x) + b(x): b back to x, where it starts, then a back to x
            chain += [*_back(block, tensor, fork, start), (SECOND_BRANCH, None, fork), *_back(block, skip, fork, start)]
            tensor = fork
    return chain


def _traced(model: Any, shape: tuple[int, ...]) -> tuple[set[int], list[tuple[Any, Any, Any]]]:
    """``_trace``, leaving the model's layers as they were: the nodes the symbolic call added are dropped."""
    layers = list(model._flatten_layers(include_self=True))
    sizes = [(layer, len(layer._inbound_nodes), len(layer._outbound_nodes)) for layer in layers]
    try:
        return _trace(model, shape)
    finally:
        for layer, inbound, outbound in sizes:
            del layer._inbound_nodes[inbound:]
            del layer._outbound_nodes[outbound:]


def _width_of(node: Any) -> tuple[int, ...]:
    """One sample's shape of the node's input."""
    return tuple(int(n) for n in node.input_tensors[0].shape[1:])


def _unbuilt_dense(model: Any) -> Any | None:
    layers = model._flatten_layers(include_self=False) if hasattr(model, "_flatten_layers") else []
    return next((layer for layer in layers if isinstance(layer, L.Dense) and not layer.built), None)


def walk(model: Any, *, input_width: int | None = None) -> list[DenseUnit]:
    """The units of ``model`` in execution order; ``ModelNotSupported`` names what cannot be judged.

    ``input_width`` is used only when the model does not say (a subclassed model built by a call).
    """
    if not isinstance(model, keras.Model):
        raise ModelNotSupported(FRAMEWORK, "model", type(model).__name__, None, "is not a keras.Model")
    unbuilt = _unbuilt_dense(model)
    if unbuilt is not None:  # a symbolic call would build it, creating weights the user never had
        raise ModelNotSupported(FRAMEWORK, unbuilt.name, "Dense", None,
                                f"has no weights yet: {_how_to_build(model)}, and give it its weights first")
    starts, chain = _traced(model, _input_shape(model, input_width))
    fmt = cf.model_format((op, position, node is not None and len(_width_of(node)) > 1)
                          for position, (op, node, _) in enumerate(chain))
    units: list[DenseUnit] = []
    pending: dict[str, Any] | None = None
    permutation = None  # a Flatten's keeping C,H,W order: the next Dense's rows (channels_first)
    where = dict.fromkeys(starts, (INPUT, "linear"))  # each tensor met: whose output it is (a residual Add's skip)
    sequence: bool | None = None  # the chain's value is a token sequence (None: the model's input, as declared)
    sequences: dict[int, bool | None] = {}  # each tensor met: whether it is one (where a second branch starts)
    for position, (op, node, skip) in enumerate(chain):
        kind = type(op).__name__

        def refuse(problem: str, op: Any = op, kind: str = kind, position: int = position) -> ModelNotSupported:
            return ModelNotSupported(FRAMEWORK, op.name, kind, position, problem)

        if position and chain[position - 1][0] is not SECOND_BRANCH:  # the previous call's output: whose it is
            where[id(chain[position - 1][1].output_tensors[0])] = \
                (INPUT, "linear") if pending is None else (len(units), pending["act"])
        if op is SECOND_BRANCH:  # a(x) + b(x): a's output waits for the Add, b starts from x
            if pending is not None:
                units.append(_unit(pending))
                pending = None
            units.append(branch_unit(FRAMEWORK, "branch", position, units, source_of(skip, units, where, refuse)))
            sequence = sequences.get(id(skip))
            continue
        shape = cf.canonical(_width_of(node), fmt)
        before = sequence  # a token-wise op (a Dense, an activation, a residual Add) keeps it; corrected below
        sequences[id(node.output_tensors[0])] = before
        if skip is not None:  # x + f(x): the Add closes the block (equivalence.frameworks.keras.residual)
            if pending is not None:
                units.append(_unit(pending))
            pending = {"position": position, "name": op.name, "act": "linear", "act_source": "none",
                       "in_shape": shape, **residual_part(op, node, skip, units, where, refuse)}
            continue
        try:
            layer_kind = _spatial_kind(op, shape, refuse) or _norm_kind(op, shape, refuse, fmt,
                                                                                    sequence=bool(before)) \
                or sequence_kind(op, node, shape, refuse) or recurrent_kind(op, shape, refuse, _activation_function)
        except _Refuse as exc:
            raise refuse(str(exc)) from None
        cf.refused_kind(layer_kind, fmt, refuse)
        if layer_kind is not None:
            sequence = sequences[id(node.output_tensors[0])] = is_sequence(layer_kind, before)
            if pending is not None:
                units.append(_unit(pending))
            if fmt == cf.FIRST and isinstance(layer_kind, Flatten) and op.data_format == cf.LAST:
                permutation = flatten_permutation(shape)
            try:
                act = _activation_function(op.activation) if isinstance(layer_kind, Conv) else "linear"
            except _Refuse as exc:
                raise refuse(str(exc)) from None
            pending = {"position": position, "layer": op, "name": op.name, "act": act, "layer_kind": layer_kind,
                       "in_shape": shape, "act_op": None, "format": fmt,
                       "act_source": "none" if act == "linear" else f"{kind}(activation={act!r})"}
            if permutation is not None and isinstance(layer_kind, (LayerNorm, BatchNorm)):
                pending["flatten_order"] = permutation  # between a C,H,W Flatten and its Dense: columns permuted
            continue
        if type(op) is L.Dense and len(shape) > 1 and not before:
            raise refuse(f"a Dense on a {len(shape) + 1}-D tensor (per sample {shape}): the suite judges a Dense "
                         "after a Flatten, or on the (batch, tokens, features) sequence of an Embedding or an "
                         "attention, token by token")
        if type(op) is L.Dense:
            if pending is not None:
                units.append(_unit(pending))
            try:
                act = _activation_function(op.activation)
            except _Refuse as exc:
                raise refuse(str(exc)) from None
            pending = {"position": position, "dense": op, "name": op.name, "act": act,
                       "act_source": "none" if act == "linear" else f"Dense(activation={act!r})", "act_op": None,
                       "permutation": permutation, "in_shape": shape}  # (L, in) token by token
            permutation = None
            continue
        act = _softmax_of_a_tensor(op, shape, refuse) if len(shape) > 1 else None
        act = act or judged_activation(lambda op=op: LAYERS[type(op)](op) if type(op) in LAYERS else _op_activation(op),
                                       refuse, JUDGED)
        attach_activation(pending, act, f"{kind} {op.name!r}", op, refuse)
    if pending is not None:
        units.append(_unit(pending))
    return check_residuals(check_chain(units, FRAMEWORK), FRAMEWORK)


_CONVS = {L.Conv1D: 1, L.Conv2D: 2}
_POOLS = {L.MaxPooling1D: ("max", 1), L.MaxPooling2D: ("max", 2), L.AveragePooling1D: ("avg", 1),
          L.AveragePooling2D: ("avg", 2)}


def _spatial_kind(op: Any, shape: tuple[int, ...], refuse: Callable[[str], Exception]) -> Any:
    """The kind of a conv, a pooling layer, or a Flatten of a spatial tensor; else None."""
    if type(op) is L.Flatten:
        return Flatten(shape) if len(shape) > 1 else None
    if type(op) not in _CONVS and type(op) not in _POOLS:
        return None
    rank = _CONVS.get(type(op)) or _POOLS[type(op)][1]
    if len(shape) != rank + 1:
        raise refuse(f"a {type(op).__name__} on a {len(shape) + 1}-D input")
    if type(op) in _CONVS:
        if set(op.dilation_rate) != {1} or op.groups != 1:
            raise refuse(f"dilation_rate {op.dilation_rate}, groups {op.groups}: the suite judges convolutions "
                         "with no dilation and one group")
        kernel, strides = tuple(op.kernel_size), tuple(op.strides)
        return Conv(kernel, strides, keras_padding(op.padding, shape[:-1], kernel, strides, refuse), shape[-1],
                    op.filters)
    size, strides = tuple(op.pool_size), tuple(op.strides)
    return Pool(_POOLS[type(op)][0], size, strides, keras_padding(op.padding, shape[:-1], size, strides, refuse),
                False)  # Keras' "same" average divides by the inputs in the window only


def _norm_kind(op: Any, shape: tuple[int, ...], refuse: Callable[[str], Exception], fmt: str = cf.LAST, *,
               sequence: bool = False) -> Any:
    """The kind of a LayerNormalization (over the features of 2-D inputs or of a token ``sequence``) or a
    BatchNormalization over the channels (the last axis; axis 1 in a channels-first model); else None."""
    if type(op) is L.LayerNormalization:
        if (len(shape) != 1 and not sequence) or not axis_is_last(op.axis, len(shape) + 1) \
                or getattr(op, "rms_scaling", False):
            raise refuse("a LayerNormalization other than over the features of a 2-D input or of an Embedding's or "
                         "an attention's (batch, tokens, features) sequence: not judged")
        if not (op.center and op.scale):
            raise refuse("a LayerNormalization without center and scale: not judged")
        return LayerNorm(shape[-1], float(op.epsilon))
    if type(op) is L.BatchNormalization:
        problem = cf.norm_axis_problem(op, shape, fmt)
        if problem is not None:
            raise refuse(problem)
        if not (len(shape) > 1 or axis_is_last(op.axis, 2)) or not (op.center and op.scale):
            raise refuse("a BatchNormalization other than over the last axis with center and scale: not judged")
        return BatchNorm(shape[-1], float(op.epsilon), round(float(op.momentum), 12))
    return None


_NORM_WEIGHTS = {LayerNorm: ("gamma", "beta"), BatchNorm: ("gamma", "beta", "moving_mean", "moving_variance")}


def _spatial_unit(p: dict[str, Any]) -> DenseUnit:
    layer, kind, act_op, in_shape = p["layer"], p["layer_kind"], p["act_op"], p["in_shape"]
    adapter = get_adapter("keras")

    def run(x: np.ndarray) -> np.ndarray:
        y = adapter.run(layer, x)
        if act_op is not None:
            y = adapter.run(act_op, y) if isinstance(act_op, L.Layer) else act_op(y)
        return adapter.to_numpy(y)

    if type(kind) in _NORM_WEIGHTS:
        from equivalence.core.dtypes import numpy_dtype

        variables = [getattr(layer, name) for name in _NORM_WEIGHTS[type(kind)]]
        native = np.stack([adapter.to_numpy(v) for v in variables]).astype(numpy_dtype(layer.compute_dtype))

        def write_norm(W: np.ndarray, b: np.ndarray | None) -> None:
            for variable, row in zip(variables, np.asarray(W)):
                variable.assign(np.asarray(row, dtype=variable.dtype))

        return DenseUnit(FRAMEWORK, layer.name, type(layer).__name__, p["position"], native.copy(), None, native,
                         p["act"], p["act_source"], layer.compute_dtype, run, write_norm, layer_kind=kind,
                         in_shape=in_shape, out_shape=in_shape)
    if not isinstance(kind, Conv):
        return DenseUnit.without_weights(FRAMEWORK, layer.name, type(layer).__name__, p["position"], p["act"],
                                         p["act_source"], run, layer_kind=kind, in_shape=in_shape,
                                         out_shape=kind.output_shape(in_shape))
    from equivalence.core.dtypes import numpy_dtype

    dtype = layer.compute_dtype
    native = adapter.to_numpy(layer.kernel).copy()
    b = None if layer.bias is None else adapter.to_numpy(layer.bias).astype(numpy_dtype(dtype))

    def write(W: np.ndarray, bias: np.ndarray | None) -> None:
        layer.kernel.assign(np.asarray(W, dtype=layer.kernel.dtype))
        if layer.bias is not None and bias is not None:
            layer.bias.assign(np.asarray(bias, dtype=layer.bias.dtype))

    return DenseUnit(FRAMEWORK, layer.name, type(layer).__name__, p["position"], native.astype(numpy_dtype(dtype)),
                     b, native, p["act"], p["act_source"], dtype, run, write, layer_kind=kind, in_shape=in_shape,
                     out_shape=kind.output_shape(in_shape))


def _unit(p: dict[str, Any]) -> DenseUnit:
    """The unit of the walk's pending layer, running on canonical (channels-last) numpy."""
    layer = p.get("layer")
    unit = cf.in_canonical_layout(_built(p), p.get("format", cf.LAST), getattr(layer, "data_format", None),
                                  p.get("permutation"))
    return unit if p.get("flatten_order") is None else in_flatten_order(unit, p["flatten_order"])


def _built(p: dict[str, Any]) -> DenseUnit:
    if "build" in p:  # a residual Add (equivalence.frameworks.keras.residual)
        return p["build"](p)
    if isinstance(p.get("layer_kind"), SEQUENCE_KINDS):
        return sequence_unit(p)
    if isinstance(p.get("layer_kind"), Recurrent):
        return recurrent_unit(p)
    if "layer_kind" in p:
        return _spatial_unit(p)
    dense, act_op = p["dense"], p["act_op"]
    dtype = dense.compute_dtype
    if dtype not in ("float64", "float32", "float16", "bfloat16"):
        raise ModelNotSupported(FRAMEWORK, dense.name, "Dense", p["position"], f"computes in {dtype}")
    if getattr(dense, "quantization_mode", None):
        raise ModelNotSupported(FRAMEWORK, dense.name, "Dense", p["position"],
                                f"quantized ({dense.quantization_mode}): not judged")
    native = get_adapter("keras").to_numpy(dense.kernel).copy()
    from equivalence.core.dtypes import numpy_dtype

    dt = numpy_dtype(dtype)
    b = None if dense.bias is None else get_adapter("keras").to_numpy(dense.bias).astype(dt)

    def run(x: np.ndarray) -> np.ndarray:
        y = get_adapter("keras").run(dense, x)
        if act_op is not None:
            y = get_adapter("keras").run(act_op, y) if isinstance(act_op, L.Layer) else act_op(y)
        return get_adapter("keras").to_numpy(y)

    def write(W: np.ndarray, bias: np.ndarray | None) -> None:
        dense.kernel.assign(np.asarray(W, dtype=dense.kernel.dtype))
        if dense.bias is not None and bias is not None:
            dense.bias.assign(np.asarray(bias, dtype=dense.bias.dtype))

    in_shape = tuple(p["in_shape"])
    return DenseUnit(FRAMEWORK, dense.name, "Dense", p["position"], native.astype(dt), b, native,
                     p["act"], p["act_source"], dtype, run, write, in_shape=in_shape,
                     out_shape=(*in_shape[:-1], native.shape[1]))


def saved_by(path: str) -> str | None:
    """The Keras version a ``.keras`` file records in its ``metadata.json``, or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            version = json.loads(archive.read("metadata.json")).get("keras_version")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    return str(version) if version else None


def load_model(path: str) -> Any:
    """A ``.keras`` model loaded with ``safe_mode=True`` (no lambdas, no arbitrary code); ``ValueError`` with
    one line saying why on anything else: not a zip archive, a file Keras 2 wrote, a Lambda layer."""
    if not str(path).endswith(".keras"):
        raise ValueError("not a .keras file (Keras 3 model.save(path) with a .keras suffix)")
    if not zipfile.is_zipfile(path):
        raise ValueError("not a .keras file: not a zip archive (random bytes, or a truncated file)")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - zip, config and deserialization errors come in many types
        reason = " ".join(str(exc).split())
    version = saved_by(path)
    if version is not None and version.startswith("2.") and importlib.util.find_spec("tf_keras") is not None:
        from equivalence.frameworks.keras import legacy

        return legacy.load_model(path)  # Keras 2's file, read by Keras 2 beside this Keras 3 (the form keras2)
    if version is not None and version.startswith("2."):
        raise ValueError(f"saved by Keras {version} (tf-keras), which this Keras 3 cannot read: run the check under "
                         "Keras 2 (TF_USE_LEGACY_KERAS=1 with tf-keras installed), or save the model again with "
                         "Keras 3")
    if "`Lambda` layer" in reason:
        raise ValueError("holds a Lambda layer (arbitrary Python code), which safe mode does not load; the suite "
                         "judges dense layers and their activations, so write the Lambda's function as a layer or "
                         "activation it knows")
    raise ValueError(f"cannot load it ({reason[:400]})")
