"""equivalence: prove PyTorch and Keras compute the same dense networks.

The package imports with numpy alone; torch and Keras load when their adapter
is first asked for (``get_adapter("torch")``).
"""

from equivalence.adapters import FRAMEWORKS, Adapter, FrameworkUnavailable, ParamCount, get_adapter
from equivalence.case import Case, make_case
from equivalence.check import LayerPool, check_case
from equivalence.compare import Comparison, LayerResult, compare_layers
from equivalence.layout import LayerWeights
from equivalence.reference import layerwise_reference, reference_forward
from equivalence.spec import StackSpec
from equivalence.transfer import transfer

_OWN = ("Difference", "ModelComparison", "ModelNotSupported", "PortMismatch", "assert_equivalent", "compare_models",
        "port_weights")


def __getattr__(name: str):
    """Check your own models (``equivalence.own``), loaded on first use."""
    if name in _OWN:
        from equivalence import own

        return getattr(own, name)
    raise AttributeError(f"module 'equivalence' has no attribute {name!r}")


__all__ = [
    "FRAMEWORKS", "Adapter", "Case", "Comparison", "FrameworkUnavailable", "LayerResult", "LayerWeights",
    "LayerPool", "ParamCount", "StackSpec", "check_case", "compare_layers", "get_adapter", "layerwise_reference",
    "make_case", "reference_forward", "transfer", *_OWN,
]
__version__ = "0.1.0"
