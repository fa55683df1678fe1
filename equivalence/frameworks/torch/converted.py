"""Dense units in what onnx2torch writes: an ``fx.GraphModule`` whose dense layer is an ``OnnxMatMul`` module called
on the chain's tensor and a constant buffer (the ONNX weight, stored ``(in, out)``), then an
``OnnxBinaryMathOperation`` adding a constant bias, then the activation's modules (``nn.ReLU``, ``nn.Sigmoid``,
``nn.Softmax``...: those the walker knows).

Recognised by the modules' class names and their ``onnx2torch`` package, never by importing onnx2torch (it imports
torchvision). The unit runs the user's own two modules on its own buffers; its weight is the buffer's transpose,
a view, so ``port_weights`` writes into the buffer itself.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

MATMUL = "OnnxMatMul"
BINARY = "OnnxBinaryMathOperation"


def _onnx2torch_module(gm: fx.GraphModule, node: fx.Node, name: str) -> Any:
    if node.op != "call_module":
        return None
    module = gm.get_submodule(node.target)
    cls = type(module)
    return module if cls.__name__ == name and cls.__module__.split(".")[0] == "onnx2torch" else None


def _constant(owner: Any, node: Any) -> torch.Tensor | None:
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    obj: Any = owner
    for part in str(node.target).split("."):
        obj = getattr(obj, part)
    return obj if isinstance(obj, torch.Tensor) else None


def matmul_of(gm: fx.GraphModule, owner: Any, node: fx.Node, current: fx.Node) -> tuple | None:
    """(name, kind, weight, bias, call) as ``walk._linear_of`` gives them (the walker adds the writer), for an
    ``OnnxMatMul`` of the chain's tensor by a constant 2-D buffer (``weight``: its ``(out, in)`` transpose, torch's
    layout); else None."""
    module = _onnx2torch_module(gm, node, MATMUL)
    if module is None or len(node.args) != 2 or node.args[0] is not current:
        return None
    stored = _constant(owner, node.args[1])
    if stored is None or stored.ndim != 2:
        return None
    weight = stored.detach().T  # a view: written through by port_weights

    def call(x: torch.Tensor, module: Any = module, stored: torch.Tensor = stored) -> torch.Tensor:
        return module(x, stored)

    return str(node.target), MATMUL, weight, None, call


def add_bias(gm: fx.GraphModule, owner: Any, node: fx.Node, pending: dict[str, Any] | None,
             current: fx.Node) -> bool:
    """Whether ``node`` adds a constant bias to the pending ``OnnxMatMul`` unit's output ``current`` (its only use);
    then the bias and the add are the unit's (``pending`` updated)."""
    if pending is None or pending.get("kind") != MATMUL or pending.get("bias") is not None:
        return False
    module = _onnx2torch_module(gm, node, BINARY)
    if module is None or module.math_op_function is not torch.add or len(node.args) != 2 or node.kwargs:
        return False
    constants = [_constant(owner, a) for a in node.args]
    bias = next((c for c in constants if c is not None), None)
    if [a for a, c in zip(node.args, constants) if c is None] != [current] or len(current.users) != 1:
        return False
    if bias is None or bias.ndim != 1 or bias.shape[0] != pending["weight"].shape[0]:
        return False
    matmul, constant_first = pending["linear"], constants[0] is not None

    def call(x: torch.Tensor) -> torch.Tensor:
        y = matmul(x)
        return module(bias, y) if constant_first else module(y, bias)

    pending.update(bias=bias.detach(), linear=call, kind=f"{MATMUL}+Add")
    return True
