"""equivalence: prove PyTorch and Keras compute the same dense networks.

The package imports with numpy alone; torch and Keras load when their adapter
is first asked for (``get_adapter("torch")``).
"""

from equivalence.core.case import Case, make_case
from equivalence.core.check import LayerPool, check_case
from equivalence.core.compare import Comparison, LayerResult, compare_layers
from equivalence.core.layout import LayerWeights
from equivalence.core.reference import layerwise_reference, reference_forward
from equivalence.core.spec import StackSpec
from equivalence.core.transfer import transfer
from equivalence.core.types import ParamCount
from equivalence.frameworks.base import Adapter, FrameworkRefused
from equivalence.frameworks.registry import Framework, FrameworkUnavailable, get_adapter, register

_OWN = ("Difference", "ModelComparison", "ModelNotSupported", "PortMismatch", "assert_equivalent", "compare_models",
        "port_weights")


def __getattr__(name: str):
    """Check your own models (``equivalence.own``), loaded on first use."""
    if name in _OWN:
        from equivalence import own

        return getattr(own, name)
    raise AttributeError(f"module 'equivalence' has no attribute {name!r}")


__all__ = [
    "Adapter", "Case", "Comparison", "Framework", "FrameworkRefused", "FrameworkUnavailable", "LayerPool",
    "LayerResult", "LayerWeights", "ParamCount", "StackSpec", "check_case", "compare_layers", "get_adapter",
    "layerwise_reference", "make_case", "reference_forward", "register", "transfer", *_OWN,
]
__version__ = "0.1.0"
