"""Sequence layers in a user's torch model: ``nn.Embedding``, ``nn.MultiheadAttention`` used as self-attention, and
a mean over the sequence (``x.mean(1)``), walked into units of the core's kinds (``equivalence.core.embedding``,
``equivalence.core.attention``).

torch's sequences are batch-first ``(N, L, features)`` here, which is the canonical layout: nothing is transposed
around a layer. The attention's packed ``in_proj_weight`` ``(3E, E)`` and ``out_proj.weight`` ``(E, E)`` (both
``(out, in)``) become the canonical per-head kernels ``(E, heads, d)`` and ``(heads, d, E)``: each block
transposed, its output features split as ``(heads, d)``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from equivalence.core.attention import SelfAttention
from equivalence.core.dtypes import numpy_dtype
from equivalence.core.embedding import Embedding, SequenceMean
from equivalence.core.kinds import LayerWeights
from equivalence.core.walk import DenseUnit, ModelNotSupported
from equivalence.frameworks.torch import TORCH_DTYPES, to_numpy, to_tensor

FRAMEWORK = "torch"
SKIP = "skip"
"""``sequence_part``'s answer for a node that is part of the layer before it (the attention output's ``[0]``)."""
SEQUENCE_KINDS = (Embedding, SelfAttention)
"""Kinds whose output is a token sequence ``(N, L, features)``, batch-first in torch as in the canonical layout."""

_MEANS = (torch.mean,)


_QKV = ("query", "key", "value")


def attention_inputs(node: fx.Node) -> list[Any]:
    """The query, key and value an ``nn.MultiheadAttention`` call passes, by position or by keyword (None where
    one is missing)."""
    return [node.args[i] if i < len(node.args) else node.kwargs.get(name) for i, name in enumerate(_QKV)]


def is_self_attention(gm: fx.GraphModule, node: fx.Node, current: fx.Node) -> bool:
    """``node`` calls an ``nn.MultiheadAttention`` with the previous output as query, key and value
    (``attn(x, x, x)``, ``attn(query=x, key=x, value=x)``)."""
    return is_attention(gm, node) and all(a is current for a in attention_inputs(node))


def is_attention(gm: fx.GraphModule, node: fx.Node) -> bool:
    """``node`` calls an ``nn.MultiheadAttention`` (whose masks are judged by ``sequence_part``, not taken for
    hand-written parameters)."""
    return node.op == "call_module" and type(gm.get_submodule(node.target)) is nn.MultiheadAttention


def sequence_part(gm: fx.GraphModule, node: fx.Node, shape: tuple[int, ...] | None, declared: tuple[int, ...] | None,
                  after: Any, refuse: Callable[[str], Exception], *,
                  sequence: bool | None = False) -> dict[str, Any] | str | None:
    """The unit's parts when ``node`` is an Embedding, a self-attention or a mean over the sequence; ``SKIP`` for
    the attention output's ``[0]``; None for anything else (refused here when it takes a token sequence and acts on
    another axis than the features). ``declared``: the model's declared input shape (its sequence length);
    ``after``: the kind of the unit before (a mean also follows a recurrent layer's output sequence, as Keras'
    GlobalAveragePooling1D follows an LSTM with return_sequences); ``sequence``: ``node`` takes a token sequence
    (True), the model's input (None), or another layer's output, such as a conv's channels-first ``(N, C, L)``
    (False; ``equivalence.core.tokens``)."""
    module = gm.get_submodule(node.target) if node.op == "call_module" else None
    if type(module) is nn.Embedding:
        return _embedding(module, declared, refuse)
    if type(module) is nn.MultiheadAttention:
        return _attention(gm, node, module, shape, refuse,
                          channels_first=sequence is False and not getattr(after, "return_sequences", False))
    if node.op == "call_function" and node.target is operator.getitem and isinstance(after, SelfAttention):
        if node.args[1] != 0:
            raise refuse("uses the attention weights (output [1]): the suite judges the attention's output [0]")
        return SKIP
    if _is_sequence_mean(node) and (sequence or getattr(after, "return_sequences", False)):
        kind = SequenceMean(*shape)
        return {"layer_kind": kind, "in_shape": shape, "next_shape": None, "build": _mean_unit}
    if sequence and (module is not None and type(module) in _NOT_ON_SEQUENCES or _is_reduction(node)):
        raise refuse("on the (batch, tokens, features) sequence of an Embedding or an attention, where torch's "
                     "channels-first layers take the tokens for channels: the suite judges attention, a Linear and a "
                     "LayerNorm over the features, activations, a residual Add and a mean over the tokens (x.mean(1)) "
                     "there")
    return None


_NOT_ON_SEQUENCES = (nn.Conv1d, nn.Conv2d, nn.MaxPool1d, nn.AvgPool1d, nn.MaxPool2d, nn.AvgPool2d,
                     nn.Flatten, nn.BatchNorm1d, nn.BatchNorm2d, nn.AdaptiveAvgPool1d)


def _is_reduction(node: fx.Node) -> bool:
    return node.op in ("call_method", "call_function") and getattr(node.target, "__name__", node.target) in (
        "mean", "sum", "max", "flatten", "view", "reshape", "permute", "transpose")


def _is_sequence_mean(node: fx.Node) -> bool:
    """``x.mean(1)``, ``x.mean(dim=1)``, ``torch.mean(x, 1)`` (or dim -2), without keepdim or a dtype."""
    if not ((node.op == "call_method" and node.target == "mean") or
            (node.op == "call_function" and node.target in _MEANS)):
        return False
    args, kwargs = node.args, node.kwargs
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    keepdim = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
    return dim in (1, -2, (1,), [1]) and not keepdim and kwargs.get("dtype") is None


def _embedding(module: nn.Embedding, declared: tuple[int, ...] | None,
               refuse: Callable[[str], Exception]) -> dict[str, Any]:
    if declared is None or len(declared) != 1:
        raise refuse("an Embedding, but the sequence length is unknown: give the Keras model its input "
                     "(keras.Input(shape=(L,), dtype='int32'))")
    problems = [f"{what}={value}" for what, value, ok in (
        ("max_norm", module.max_norm, module.max_norm is None), ("sparse", module.sparse, not module.sparse)) if not ok]
    if problems:
        raise refuse(f"{', '.join(problems)}: the suite judges a plain lookup (max_norm renormalises the rows it "
                     "reads, in place)")
    kind = Embedding(module.num_embeddings, module.embedding_dim, declared[0],
                     padding_idx=None if module.padding_idx is None else int(module.padding_idx))
    return {"layer_kind": kind, "in_shape": declared, "next_shape": kind.output_shape(declared),
            "build": _embedding_unit, "module": module}


def _attention(gm: fx.GraphModule, node: fx.Node, module: nn.MultiheadAttention, shape: tuple[int, ...] | None,
               refuse: Callable[[str], Exception], *, channels_first: bool = False) -> dict[str, Any]:
    if channels_first:  # its (L, C) canonical shape has a sequence's rank, but torch holds it (N, C, L)
        raise refuse("a MultiheadAttention on a conv's or pooling's channels-first (batch, channels, positions) "
                     "output: torch takes the channels for its tokens and the positions for its features; the suite "
                     "judges attention on an Embedding's, an attention's or the model's input (batch, tokens, "
                     "features) sequence")
    if shape is None or len(shape) != 2:
        raise refuse("a MultiheadAttention on other than the (batch, tokens, features) output of an Embedding or "
                     "an attention")
    if not is_self_attention(gm, node, attention_inputs(node)[0]):
        raise refuse("a MultiheadAttention whose query, key and value are not the same tensor: the suite judges "
                     "self-attention")
    masks = [n for n in ("key_padding_mask", "attn_mask") if node.kwargs.get(n) is not None] + \
        (["is_causal"] if node.kwargs.get("is_causal") else []) + \
        ([f"{len(node.args) - 3} positional arguments after the value"] if len(node.args) > 3 else [])
    problems = [what for what, ok in (
        ("batch_first=False (it takes (L, N, E))", module.batch_first),
        ("kdim or vdim other than embed_dim", module._qkv_same_embed_dim),
        ("add_bias_kv", module.bias_k is None), ("add_zero_attn", not module.add_zero_attn),
        ("dropout in training mode (call model.eval())", not (module.training and module.dropout > 0))) if not ok]
    if masks or problems:
        raise refuse(f"{', '.join(masks + problems)}: the suite judges batch-first self-attention without masks")
    if shape[1] != module.embed_dim:
        raise refuse(f"takes {module.embed_dim} features, but gets {shape[1]}")
    kind = SelfAttention(module.embed_dim, module.num_heads, module.head_dim, shape[0])
    return {"layer_kind": kind, "in_shape": shape, "next_shape": shape, "build": _attention_unit, "module": module,
            "call_options": {k: v for k, v in node.kwargs.items() if k not in _QKV}}  # need_weights as the model
    # calls it: another kernel path in torch


def _dtype_name(p: dict[str, Any], tensor: torch.Tensor) -> str:
    names = {v: k for k, v in TORCH_DTYPES.items()}
    if tensor.dtype not in names:
        raise ModelNotSupported(FRAMEWORK, p["name"], p["kind"], p["position"],
                                f"weights in {tensor.dtype}: the suite judges {', '.join(TORCH_DTYPES)}")
    return names[tensor.dtype]


def _runner(call: Callable[[torch.Tensor], torch.Tensor], act_fn: Any, dtype: torch.dtype,
            out: np.dtype) -> Callable[[np.ndarray], np.ndarray]:
    def run(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        with torch.no_grad():
            t = torch.from_numpy(np.ascontiguousarray(x)).long() if np.issubdtype(x.dtype, np.integer) \
                else to_tensor(np.ascontiguousarray(x), dtype)
            y = call(t)
            if act_fn is not None:
                y = act_fn(y)
        return to_numpy(y, out)
    return run


def _unit(p: dict[str, Any], W: np.ndarray, b: np.ndarray | None, native: np.ndarray, dtype: str,
          run: Callable[[np.ndarray], np.ndarray], write: Any) -> DenseUnit:
    kind = p["layer_kind"]
    return DenseUnit(FRAMEWORK, p["name"], p["kind"], p["position"], W, b, native, p["act"], p["act_source"], dtype,
                     run, write if p.get("write", True) is not None else None, layer_kind=kind,
                     in_shape=p["in_shape"], out_shape=kind.output_shape(p["in_shape"]))


def _embedding_unit(p: dict[str, Any]) -> DenseUnit:
    module = p["module"]
    dtype = _dtype_name(p, module.weight)
    native = to_numpy(module.weight.detach(), numpy_dtype(dtype))

    def write(W: np.ndarray, b: np.ndarray | None) -> None:
        with torch.no_grad():
            module.weight.copy_(to_tensor(np.asarray(W), module.weight.dtype))

    run = _runner(module, p["act_fn"], module.weight.dtype, native.dtype)
    return _unit(p, native.copy(), None, native, dtype, run, write)


def canonical_attention(kind: SelfAttention, module: nn.MultiheadAttention, dtype: np.dtype) -> LayerWeights:
    """The module's packed weights in the canonical per-head layout."""
    E, H, d = kind.embed_dim, kind.heads, kind.head_dim
    weight = to_numpy(module.in_proj_weight.detach(), dtype)
    out = to_numpy(module.out_proj.weight.detach(), dtype)
    parts = {name: weight[i * E:(i + 1) * E].T.reshape(E, H, d) for i, name in enumerate(("query", "key", "value"))}
    parts["output"] = out.T.reshape(H, d, E)
    if module.in_proj_bias is not None:
        bias = to_numpy(module.in_proj_bias.detach(), dtype)
        parts.update({f"{name}_bias": bias[i * E:(i + 1) * E].reshape(H, d)
                      for i, name in enumerate(("query", "key", "value"))})
        parts["output_bias"] = to_numpy(module.out_proj.bias.detach(), dtype)
    return kind.pack(parts)


def _attention_unit(p: dict[str, Any]) -> DenseUnit:
    module, kind = p["module"], p["layer_kind"]
    dtype = _dtype_name(p, module.in_proj_weight)
    weights = canonical_attention(kind, module, numpy_dtype(dtype))
    native = np.concatenate([to_numpy(t.detach(), numpy_dtype(dtype)).ravel()
                             for t in (module.in_proj_weight, module.out_proj.weight)])
    E = kind.embed_dim

    def write(W: np.ndarray, b: np.ndarray | None) -> None:
        parts = kind.unpack(LayerWeights(W, b))
        packed = np.concatenate([parts[n].reshape(E, E).T for n in ("query", "key", "value")])
        with torch.no_grad():
            module.in_proj_weight.copy_(to_tensor(np.ascontiguousarray(packed), module.in_proj_weight.dtype))
            module.out_proj.weight.copy_(to_tensor(np.ascontiguousarray(parts["output"].reshape(E, E).T),
                                                   module.out_proj.weight.dtype))
            if module.in_proj_bias is not None and b is not None:
                bias = np.concatenate([parts[f"{n}_bias"].ravel() for n in ("query", "key", "value")])
                module.in_proj_bias.copy_(to_tensor(bias, module.in_proj_bias.dtype))
                module.out_proj.bias.copy_(to_tensor(parts["output_bias"], module.out_proj.bias.dtype))

    options = p["call_options"]
    run = _runner(lambda t: module(t, t, t, **options)[0], p["act_fn"], module.in_proj_weight.dtype, native.dtype)
    return _unit(p, weights.W.copy(), None if weights.b is None else weights.b.copy(), native, dtype, run, write)


def _mean_unit(p: dict[str, Any]) -> DenseUnit:
    """The mean over the tokens, computed in the input's dtype (the chain's: a mean holds no weights)."""
    act_fn = p["act_fn"]

    def run(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        with torch.no_grad():
            y = to_tensor(np.ascontiguousarray(x), TORCH_DTYPES[_name(x)]).mean(1)
            if act_fn is not None:
                y = act_fn(y)
        return to_numpy(y, x.dtype)

    return _unit(p, np.zeros((0,)), None, np.zeros((0,)), "", run, None)


def _name(x: np.ndarray) -> str:
    return "bfloat16" if x.dtype.name not in TORCH_DTYPES else x.dtype.name
