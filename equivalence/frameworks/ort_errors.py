"""What ONNX Runtime raises, and its errors as one line naming what it lacks: shared by the ``ort`` framework
(torch's export run by ORT) and the reader of users' ONNX graphs, without importing torch."""

from __future__ import annotations

import re

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

ORT_ERRORS: tuple[type[Exception], ...] = tuple(
    getattr(_ort_state, name) for name in ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf",
                                           "NotImplemented", "RuntimeException", "EPFail", "EngineError")
    if hasattr(_ort_state, name))
"""What ORT raises (plain ``Exception`` subclasses of its pybind module)."""

_NO_KERNEL = re.compile(r"Could not find an implementation for (\w+)\((\d+)\)")
_NO_TYPE = re.compile(r"Type '(tensor\(\w+\))' of input parameter .* of operator \((\w+)\)")


def refusal(exc: Exception, dtype: str, opset: int | str) -> str:
    """ORT's error as one line naming what it lacks: "no float64 Erf kernel in ORT 1.32.0 (CPU)"."""
    message = " ".join(str(exc).split())
    kernel = _NO_KERNEL.search(message)
    if kernel:
        op, version = kernel.groups()
        return f"no {dtype} {op} kernel in ORT {ort.__version__} (CPU, {op}-{version})"
    typed = _NO_TYPE.search(message)
    if typed:
        tensor, op = typed.groups()
        return f"ONNX {op} takes no {tensor} (opset {opset}); ORT {ort.__version__} refuses the graph"
    return f"ORT {ort.__version__}: {type(exc).__name__}: {message[:200]}"
