"""onnx2torch's modules that are plain ops around the layers the torch walker reads, in the graph onnx2torch writes
from tf2onnx's export of a Keras model (``model.export(format="onnx")``, then ``onnx2torch.convert``).

onnx2torch turns a ``Conv``, a ``MaxPool`` and a ``Relu`` into ``nn.Conv2d``, ``nn.MaxPool2d``, ``nn.ReLU``, which the
walker reads as any torch model's; the ops tf2onnx writes around them stay onnx2torch's own modules:

* an ``OnnxTranspose`` (perm ``[0, 3, 1, 2]``) of the graph's channels-last input: the walker's own change of layout
  (its units run on torch's ``N, C, H, W``), so it is skipped, as the ONNX reader reads tf2onnx's first
  ``Transpose`` as the input's layout;
* an ``OnnxTranspose`` back to channels-last (perm ``[0, 2, 3, 1]``) then an ``OnnxReshape`` to ``(N, -1)``:
  Keras' ``Flatten`` of a channels-last tensor, one Flatten unit in the canonical ``H, W, C`` order (the dense layer
  after it keeps its rows as stored). The unit runs the user's own three modules and the ones computing the target
  shape from the tensor's (``OnnxShape``, ``OnnxGather``, ``OnnxCast``, ``OnnxSlice``, ``OnnxConcat``: shape
  arithmetic, never a value of the tensor, so not a branch);
* an ``nn.Sequential`` of an ``OnnxPadStatic`` and a conv (a conv ONNX pads unevenly: ``padded_conv``): one
  Conv unit, the pad added to the conv's padding;
* an ``OnnxFunction`` of ``torch.tanh`` (ONNX's ``Tanh``): the tanh activation;
* an ``OnnxBinaryMathOperation`` of ``torch.add`` of two computed tensors: a residual Add
  (``equivalence.frameworks.torch.residual``).

Recognised by the modules' class names and their ``onnx2torch`` package, never by importing onnx2torch (it imports
torchvision). Any other onnx2torch module is refused naming it (``refusal``): onnx2torch's BatchNorm folded into a
``Mul`` and an ``Add``, its LayerNorm's thirteen ops, its Embedding's id wrap and ``Gather``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn

from equivalence.core.spatial import Flatten

PACKAGE = "onnx2torch"
_SHAPE_ARITHMETIC = ("OnnxGather", "OnnxCast", "OnnxSlice", "OnnxConcat", "OnnxUnsqueeze", "OnnxSqueeze")
_FUNCTIONS = {torch.tanh: "tanh"}
"""``OnnxFunction``'s functions that are activations (the others are Abs, Exp, Log, Sin...)."""


def module_of(node: Any, *names: str) -> Any:
    """The onnx2torch module ``node`` calls (one of ``names``, any if none given); else None."""
    if not isinstance(node, fx.Node) or node.op != "call_module" or node.graph.owning_module is None:
        return None
    module = node.graph.owning_module.get_submodule(node.target)
    cls = type(module)
    if cls.__module__.split(".")[0] != PACKAGE:
        return None
    return module if not names or cls.__name__ in names else None


def _tensors(node: fx.Node) -> list[fx.Node]:
    return [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node)]


def is_shape_computation(node: fx.Node) -> bool:
    """An ``OnnxShape``, or onnx2torch's shape arithmetic of shapes and constants alone (a computed Reshape target)."""
    if module_of(node, "OnnxShape") is not None:
        return True
    if module_of(node, *_SHAPE_ARITHMETIC) is None:
        return False
    computed = [a for a in _tensors(node) if a.op != "get_attr"]
    return bool(computed) and all(is_shape_computation(a) for a in computed)


def activation_of(module: Any) -> str | None:
    """The activation an ``OnnxFunction`` computes (``tanh``); None for another module."""
    if type(module).__name__ != "OnnxFunction" or type(module).__module__.split(".")[0] != PACKAGE:
        return None
    return _FUNCTIONS.get(getattr(module, "function", None))


def is_add(node: fx.Node) -> bool:
    """An ``OnnxBinaryMathOperation`` adding two tensors (no old-style broadcast): ONNX's ``Add``."""
    module = module_of(node, "OnnxBinaryMathOperation")
    return module is not None and module.math_op_function is torch.add and module.broadcast != 1


def _permutation(node: fx.Node) -> tuple[int, ...] | None:
    module = module_of(node, "OnnxTranspose")
    return None if module is None or module.perm is None else tuple(int(p) for p in module.perm)


def _to_channels_first(rank: int) -> tuple[int, ...]:
    return (0, rank + 1, *range(1, rank + 1))


def _to_channels_last(rank: int) -> tuple[int, ...]:
    return (0, *range(2, rank + 2), 1)


def _flatten_reshape(node: fx.Node) -> fx.Node | None:
    """The ``OnnxReshape`` that is ``node``'s only computing user, reading it as its tensor."""
    users = [u for u in node.users if not is_shape_computation(u)]
    if len(users) != 1 or module_of(users[0], "OnnxReshape") is None or users[0].args[0] is not node:
        return None
    return users[0]


SKIP = "skip"


def spatial_part(node: fx.Node, current: fx.Node, shape: tuple[int, ...] | None,
                 refuse: Callable[[str], Exception]) -> dict[str, Any] | str | None:
    """``SKIP`` for tf2onnx's ``Transpose`` of the channels-last input to channels-first, or for the ``Transpose``
    back to channels-last before a ``Reshape``; the Flatten unit's parts at that ``Reshape``; else None."""
    if shape is None or len(shape) < 2 or _tensors(node)[:1] != [current]:
        return None
    rank, perm = len(shape) - 1, _permutation(node)
    if perm is not None and current.op == "placeholder" and perm == _to_channels_first(rank):
        return SKIP  # the walker's units take torch's N, C, ... themselves
    if perm is not None and perm == _to_channels_last(rank) and _flatten_reshape(node) is not None:
        return SKIP  # read with the Reshape after it
    if module_of(node, "OnnxReshape") is None or _permutation(current) != _to_channels_last(rank):
        return None
    if not all(a.op == "get_attr" or is_shape_computation(a) for a in _tensors(node)[1:]):
        raise refuse("an OnnxReshape to a shape computed from other values than the tensor's shape and constants")
    return _flatten(node, current, shape, refuse)


def _flatten(reshape: fx.Node, transpose: fx.Node, shape: tuple[int, ...],
             refuse: Callable[[str], Exception]) -> dict[str, Any]:
    """Transpose to channels-last, then Reshape to ``(N, -1)``: a Flatten in the canonical order, checked on a
    batch of two (the target shape is computed from the tensor's own, so it follows the batch)."""
    source = transpose.args[0]
    owner = reshape.graph.owning_module

    def call(t: torch.Tensor) -> torch.Tensor:
        return _evaluate(reshape, {source: t}, owner)

    probe = torch.zeros(2, shape[-1], *shape[:-1])
    with torch.no_grad():
        got = tuple(call(probe).shape)
    if got != (2, probe[0].numel()):
        raise refuse(f"an OnnxReshape of a (2, {', '.join(map(str, probe.shape[1:]))}) tensor to {got}: the suite "
                     "judges a reshape of a spatial tensor that flattens it, (N, -1)")
    return {"layer_kind": Flatten(shape), "kind": "OnnxTranspose+OnnxReshape", "weight": None, "bias": None,
            "call": call, "write": None, "canonical_order": True}


def _evaluate(node: Any, values: dict[fx.Node, Any], owner: Any) -> Any:
    """``node``'s value from ``values`` (the unit's input), its constants and its onnx2torch modules, run in order."""
    if not isinstance(node, fx.Node):
        return node
    if node not in values:
        if node.op == "get_attr":
            value: Any = owner
            for part in str(node.target).split("."):
                value = getattr(value, part)
        else:
            args = [_evaluate(a, values, owner) for a in node.args]
            value = owner.get_submodule(node.target)(*args)
        values[node] = value
    return values[node]


def padded_conv(module: Any) -> tuple[nn.Module, tuple[tuple[int, int], ...]] | None:
    """onnx2torch's ``nn.Sequential(OnnxPadStatic, Conv)`` for a conv ONNX pads unevenly (tf2onnx's ``"same"`` with
    stride 2): the conv and the pad's ``(before, after)`` pairs per spatial axis, to add to the conv's own; None for
    another module (a pad other than zeros, or of the batch or channel axes, included: refused as it is)."""
    if type(module) is not nn.Sequential or len(module) != 2 or type(module[1]) not in (nn.Conv1d, nn.Conv2d):
        return None
    pad, conv = module
    if type(pad).__name__ != "OnnxPadStatic" or type(pad).__module__.split(".")[0] != PACKAGE:
        return None
    rank, pads = conv.weight.ndim - 2, [int(p) for p in pad.pads]  # F.pad's: the last axis first
    if pad.mode != "constant" or pad.constant_value != 0 or len(pads) < 2 * rank or any(pads[2 * rank:]):
        return None
    return conv, tuple((pads[2 * (rank - 1 - i)], pads[2 * (rank - 1 - i) + 1]) for i in range(rank))


def refusal(node: fx.Node) -> str | None:
    """The one-line reason an onnx2torch module the walker does not read is refused; None for another node."""
    module = module_of(node)
    if module is None:
        return None
    if type(module).__name__ == "OnnxMatMul":
        return ("onnx2torch's OnnxMatMul not of the previous layer's output by a 2-D constant: not read (a second "
                "branch, a(x) + b(x), whose dense layers onnx2torch orders otherwise than Keras' Add, or a product "
                "of two computed tensors)")
    op = getattr(module, "math_op_function", None) or getattr(module, "function", None)
    what = f" ({getattr(op, '__name__', op)})" if op is not None else ""
    return (f"onnx2torch's {type(module).__name__}{what}: not read (of onnx2torch's modules the suite reads "
            "OnnxMatMul + Add of constants, tanh, a residual Add, and the Transposes and Reshape around convs; not a "
            "BatchNorm or LayerNorm written as ops, nor an Embedding's Gather)")
