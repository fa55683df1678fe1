"""PyTorch and what runs its modules: the adapter (``adapter``), a user's model walked (``walk``), torch.compile
(``compile``), torch.export (``export``), ONNX Runtime on torch's export (``ort``), and their measured
differences (``known_differences``, data only).

Importing this package imports no torch, so the registry reads the facts without it; the adapter's names
(``TorchAdapter``, ``TORCH_DTYPES``, ...) load torch on first use.
"""

from __future__ import annotations

from equivalence.frameworks.base import adapter_names

__getattr__ = adapter_names(__name__)
