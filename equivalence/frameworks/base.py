"""The adapter interface, for the adapters: it lives in ``equivalence.core.adapter``, where the core uses it
without importing a framework. And ``adapter_names``: a framework package's names loaded on first use."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

from equivalence.core.adapter import Adapter, FrameworkRefused, FrameworkUnavailable, Gradients, ParamCount

__all__ = ["Adapter", "FrameworkRefused", "FrameworkUnavailable", "Gradients", "ParamCount", "adapter_names"]


def adapter_names(package: str) -> Callable[[str], Any]:
    """A package's ``__getattr__`` giving its ``adapter`` module's names, importing it (and so the framework)
    on first use: the package itself imports nothing heavy, so its data-only modules (``known_differences``)
    load without the framework. A submodule's name is left to the import system.

    A name asked for while the framework cannot import is an ``AttributeError`` naming why, as the protocol of a
    module's ``__getattr__`` wants: ``pickle.whichmodule`` (which torch.compile's graph cache calls) asks every
    module in ``sys.modules`` for a name and expects nothing else."""

    def __getattr__(name: str) -> Any:
        if importlib.util.find_spec(f"{package}.{name}") is not None:
            raise AttributeError(f"module {package!r} has no attribute {name!r} until its submodule is imported")
        try:
            adapter = importlib.import_module(f"{package}.adapter")
        except (ImportError, FrameworkUnavailable) as exc:
            raise AttributeError(f"module {package!r} gives {name!r} from its adapter, which cannot import here: "
                                 f"{exc}") from exc
        return getattr(adapter, name)

    return __getattr__
