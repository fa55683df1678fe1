"""MXNet Gluon: the adapter (``adapter``) and its measured differences (``known_differences``, data only).

Importing this package imports no MXNet (which needs its own venv, ``make mxnet``), so the registry reads the
facts without it; the adapter's names (``GluonAdapter``, ``onednn_active``, ...) load MXNet on first use.
"""

from __future__ import annotations

from equivalence.frameworks.base import adapter_names

__getattr__ = adapter_names(__name__)
