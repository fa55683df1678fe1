"""The registry entry: everything equivalence needs to know about this framework without importing it."""

from __future__ import annotations

from collections.abc import Mapping

from equivalence.frameworks.registry import Framework


def _describe(versions: Mapping[str, str]) -> str:
    return f"numpy-dense {versions.get('numpy_dense', '?')} (numpy {versions.get('numpy', '?')})"


def framework() -> Framework:
    """The entry point's target: a runtime that computes forward passes only, so it declares no capability
    (no gradients, SGD step or save/load); the tests that need one skip, naming it."""
    return Framework(
        "numpy", "equivalence_numpy.adapter:NumpyAdapter", packages=("numpy",), styles=("sequential",),
        capabilities=frozenset(), install_hint="pip install equivalence-numpy",
        version_keys=("numpy_dense", "numpy"), describe=_describe)
