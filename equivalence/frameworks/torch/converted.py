"""Dense units in what onnx2torch writes: an ``fx.GraphModule`` whose dense layer is an ``OnnxMatMul`` module called
on the chain's tensor and a constant buffer (the ONNX weight, stored ``(in, out)``), then an
``OnnxBinaryMathOperation`` adding a constant bias, then the activation's modules (``nn.ReLU``, ``nn.Sigmoid``,
``nn.Softmax``...: those the walker knows).

Recognised by the modules' class names and their ``onnx2torch`` package, never by importing onnx2torch (it imports
torchvision). The unit runs the user's own two modules on its own buffers; its weight is the buffer's transpose,
a view, so ``port_weights`` writes into the buffer itself.

The same graph through ``torch.export`` (a ``.pt2``) has lost its modules: ``aten.matmul`` of the chain's tensor by
a 2-D buffer, then ``aten.add`` of a 1-D one. Read so too, by a constant that is no parameter: a converter's
weights are buffers, while ``x @ self.weight`` by a trained ``nn.Parameter`` is a layer written by hand, which the
walker refuses (write it as ``nn.Linear``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

MATMUL = "OnnxMatMul"
BINARY = "OnnxBinaryMathOperation"
EXPORTED_MATMUL = "aten.matmul"
_aten = torch.ops.aten


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


def _buffer(owner: Any, node: Any) -> torch.Tensor | None:
    """The constant ``node`` reads when it is no parameter (a buffer, or a constant torch.export lifted)."""
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    if str(node.target) in dict(owner.named_parameters()):
        return None
    return _constant(owner, node)


def _exported(node: fx.Node, *targets: Any) -> bool:
    return node.op == "call_function" and node.target in targets and not node.kwargs


def matmul_of(gm: fx.GraphModule, owner: Any, node: fx.Node, current: fx.Node) -> tuple | None:
    """(name, kind, weight, bias, call) as ``walk._linear_of`` gives them (the walker adds the writer), for an
    ``OnnxMatMul`` (or, exported, an ``aten.matmul``) of the chain's tensor by a constant 2-D buffer (``weight``: its
    ``(out, in)`` transpose, torch's layout); else None."""
    module = _onnx2torch_module(gm, node, MATMUL)
    exported = module is None and _exported(node, _aten.matmul.default, _aten.mm.default)
    if (module is None and not exported) or len(node.args) != 2 or node.args[0] is not current:
        return None
    stored = _buffer(owner, node.args[1]) if exported else _constant(owner, node.args[1])
    if stored is None or stored.ndim != 2:
        return None
    weight = stored.detach().T  # a view: written through by port_weights
    if exported:
        return str(node.args[1].target), EXPORTED_MATMUL, weight, None, \
            lambda x, stored=stored: torch.matmul(x, stored)

    def call(x: torch.Tensor, module: Any = module, stored: torch.Tensor = stored) -> torch.Tensor:
        return module(x, stored)

    return str(node.target), MATMUL, weight, None, call


def add_bias(gm: fx.GraphModule, owner: Any, node: fx.Node, pending: dict[str, Any] | None,
             current: fx.Node) -> bool:
    """Whether ``node`` adds a constant bias to the pending ``OnnxMatMul`` unit's output ``current`` (its only use);
    then the bias and the add are the unit's (``pending`` updated)."""
    if pending is None or pending.get("kind") not in (MATMUL, EXPORTED_MATMUL) or pending.get("bias") is not None:
        return False
    if pending["kind"] == EXPORTED_MATMUL:
        if not _exported(node, _aten.add.Tensor) or len(node.args) != 2:
            return False
        module, constants = torch.add, [_buffer(owner, a) for a in node.args]
    else:
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

    suffix = "add" if pending["kind"] == EXPORTED_MATMUL else "Add"
    pending.update(bias=bias.detach(), linear=call, kind=f"{pending['kind']}+{suffix}")
    return True
