"""The adapter interface, for the adapters: it lives in ``equivalence.core.adapter``, where the core uses it
without importing a framework."""

from equivalence.core.adapter import Adapter, FrameworkRefused, FrameworkUnavailable, Gradients, ParamCount

__all__ = ["Adapter", "FrameworkRefused", "FrameworkUnavailable", "Gradients", "ParamCount"]
