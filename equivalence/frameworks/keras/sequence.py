"""Sequence layers in a user's Keras model: ``Embedding``, ``MultiHeadAttention`` called as ``mha(x, x)`` and
``GlobalAveragePooling1D``, as units of the core's kinds (``equivalence.core.embedding``,
``equivalence.core.attention``). Their weights are already in the canonical layout: the attention's per-head
``query``/``key``/``value`` kernels ``(E, heads, d)`` and biases ``(heads, d)``, its ``output`` kernel
``(heads, d, E)`` and bias ``(E,)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from equivalence.core.attention import SelfAttention
from equivalence.core.dtypes import numpy_dtype
from equivalence.core.embedding import Embedding, SequenceMean
from equivalence.core.kinds import LayerWeights
from equivalence.core.walk import DenseUnit
from equivalence.frameworks.registry import get_adapter

FRAMEWORK = "keras"
L = keras.layers
SEQUENCE_KINDS = (Embedding, SelfAttention, SequenceMean)
_PROJECTIONS = ("query", "key", "value", "output")


ATTENTION_OPTIONS = ("query_mask", "value_mask", "key_mask", "attention_mask", "use_causal_mask",
                     "return_attention_scores")
"""``MultiHeadAttention.call``'s arguments beyond its tensors: each changes what the layer computes or returns, and
the unit runs it as ``mha(x, x)``, so a call giving any of them is refused (``attention_options``)."""


def data_tensors(node: Any) -> list[Any]:
    """The node's input tensors without the masks Keras passes along (``mask=``: an Embedding's ``mask_zero``,
    named by the walk's configs, not a branch) and an attention's mask arguments (refused by name, not as a
    branch: ``attention_options``)."""
    kwargs = node.arguments.kwargs
    masks = [m for m in (kwargs.get(name) for name in ("mask", *ATTENTION_OPTIONS)) if m is not None]
    return [t for t in node.input_tensors if not any(t is m for m in keras.tree.flatten(masks))]


def attention_options(node: Any) -> list[str]:
    """The ``ATTENTION_OPTIONS`` a ``MultiHeadAttention`` call gives (a mask tensor, ``use_causal_mask=True``,
    ``return_attention_scores=True``)."""
    kwargs = node.arguments.kwargs
    return [name for name in ATTENTION_OPTIONS if kwargs.get(name) is not None and kwargs.get(name) is not False]


def is_self_attention(op: Any, node: Any) -> bool:
    """``op`` is a ``MultiHeadAttention`` called with one tensor as query, value (and key)."""
    tensors = data_tensors(node)
    return type(op) is L.MultiHeadAttention and all(t is tensors[0] for t in tensors)


def sequence_kind(op: Any, node: Any, shape: tuple[int, ...], refuse: Callable[[str], Exception]) -> Any:
    """The kind of an Embedding, a self-attention or a GlobalAveragePooling1D (``node``: its call); else None."""
    if type(op) is L.Embedding:
        if len(shape) != 1:
            raise refuse(f"an Embedding on a {len(shape) + 1}-D input: the suite judges token ids (batch, tokens)")
        if getattr(op, "quantization_mode", None):
            raise refuse(f"quantized ({op.quantization_mode}): not judged")
        return Embedding(op.input_dim, op.output_dim, shape[0], mask_zero=bool(op.mask_zero))
    if type(op) is L.GlobalAveragePooling1D:
        if op.keepdims or len(shape) != 2:  # shape: canonical (a channels_first model's made channels-last)
            raise refuse("a GlobalAveragePooling1D other than without keepdims, on (batch, tokens, features): not "
                         "judged")
        return SequenceMean(*shape)
    if type(op) is L.MultiHeadAttention:
        options = attention_options(node)
        if options:
            raise refuse(f"called with {', '.join(options)}: the suite judges self-attention without masks, "
                         "returning its output only (mha(x, x))")
        return _attention_kind(op, shape, refuse)
    return None


def _attention_kind(op: Any, shape: tuple[int, ...], refuse: Callable[[str], Exception]) -> SelfAttention:
    if len(shape) != 2:
        raise refuse(f"a MultiHeadAttention on a {len(shape) + 1}-D input: the suite judges (batch, tokens, features)")
    value_dim = op._value_dim if op._value_dim is not None else op._key_dim
    problems = [what for what, ok in (
        (f"value_dim {value_dim} other than key_dim {op._key_dim}", value_dim == op._key_dim),
        (f"output_shape {op._output_shape}", op._output_shape in (None, shape[-1], (shape[-1],))),
        (f"attention_axes {op._attention_axes}", op._attention_axes in (None, (1,), [1], 1))) if not ok]
    if problems:
        raise refuse(f"{', '.join(problems)}: the suite judges attention over the tokens with value_dim = key_dim "
                     "and the input's width out (what torch's nn.MultiheadAttention computes)")
    along = "tokens" if op._use_bias and op._key_dim == 1 and op.num_heads == shape[0] > 1 \
        and _bias_added_along_tokens() else "heads"
    return SelfAttention(shape[-1], op.num_heads, op._key_dim, shape[0], along)


def _bias_added_along_tokens() -> bool:
    """Whether ``keras_attention_bias_along_tokens`` holds here (Keras on TensorFlow)."""
    from equivalence.frameworks.keras.known_differences import KERAS

    return next(d for d in KERAS if d.name == "keras_attention_bias_along_tokens").active()


def _variables(layer: Any) -> tuple[list[Any], list[Any]]:
    dense = [getattr(layer, f"_{name}_dense") for name in _PROJECTIONS]
    return [d.kernel for d in dense], [d.bias for d in dense if d.bias is not None]


def sequence_unit(p: dict[str, Any]) -> DenseUnit:
    """The unit of a sequence layer (``p``: the walk's pending layer)."""
    layer, kind, act_op = p["layer"], p["layer_kind"], p["act_op"]
    adapter = get_adapter("keras")

    def run(x: np.ndarray) -> np.ndarray:
        t = adapter.to_tensor(x)
        y = layer(t, t) if isinstance(kind, SelfAttention) else layer(t)
        if act_op is not None:
            y = adapter.run(act_op, y) if isinstance(act_op, L.Layer) else act_op(y)
        return adapter.to_numpy(y)

    dtype = layer.compute_dtype
    if isinstance(kind, SequenceMean):  # no weights; the chain's dtype (check_chain)
        W, b, native, write, dtype = np.zeros((0,)), None, np.zeros((0,)), None, ""
    elif isinstance(kind, Embedding):
        native = adapter.to_numpy(layer.embeddings).astype(numpy_dtype(dtype))
        W, b = native.copy(), None

        def write(W: np.ndarray, bias: np.ndarray | None) -> None:
            layer.embeddings.assign(np.asarray(W, dtype=layer.embeddings.dtype))
    else:
        kernels, biases = _variables(layer)
        parts = {n: adapter.to_numpy(v).astype(numpy_dtype(dtype)) for n, v in zip(_PROJECTIONS, kernels)}
        parts.update({f"{n}_bias": adapter.to_numpy(v).astype(numpy_dtype(dtype))
                      for n, v in zip(_PROJECTIONS, biases)})
        weights = kind.pack(parts)
        W, b, native = weights.W, weights.b, weights.W.copy()

        def write(W: np.ndarray, bias: np.ndarray | None) -> None:
            parts = kind.unpack(LayerWeights(W, bias))
            for name, variable in zip(_PROJECTIONS, kernels):
                variable.assign(np.asarray(parts[name], dtype=variable.dtype))
            if bias is not None:
                for name, variable in zip(_PROJECTIONS, biases):
                    variable.assign(np.asarray(parts[f"{name}_bias"], dtype=variable.dtype))

    return DenseUnit(FRAMEWORK, layer.name, type(layer).__name__, p["position"], W, b, native, p["act"],
                     p["act_source"], dtype, run, write, layer_kind=kind, in_shape=p["in_shape"],
                     out_shape=kind.output_shape(p["in_shape"]))
