"""The interface every framework adapter implements, where the core can use it without importing a framework.

One small class per framework (as einops' backends): the same methods everywhere, the framework imported
only when its adapter is first asked for (``equivalence.frameworks.registry.get_adapter``). Everything outside
the adapters talks numpy and the canonical weight layout.

The methods every adapter has are abstract; the optional capabilities (``registry.CAPABILITIES``: gradients,
an SGD step, save/load) raise ``NotImplementedError`` unless the adapter has them and its registry entry
declares them, so a runtime that cannot train is one module too.

The core never imports the registry: where it needs an adapter by name (a probe measuring a framework's
activation, a fact from its versions), it asks ``adapter_for``, which the registry serves once imported
(``provide_registry``; importing ``equivalence`` imports it).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np

from equivalence.core.layout import LayerWeights
from equivalence.core.spec import ChainSpec, StackSpec
from equivalence.core.types import Gradients, ParamCount

__all__ = ["Adapter", "FrameworkEntry", "FrameworkRefused", "FrameworkUnavailable", "Gradients", "ParamCount",
           "adapter_for", "entry_for", "provide_registry", "registered"]


class FrameworkUnavailable(RuntimeError):
    """The framework behind an adapter is not installed, or its environment is unusable (tests skip on this)."""


class FrameworkEntry(Protocol):
    """What adapters and the core read of a registry entry (``equivalence.frameworks.registry.Framework``)."""

    name: str
    styles: tuple[str, ...]
    save_formats: tuple[str, ...]
    capabilities: frozenset[str]
    runs_on: str | None
    weights_dtype: str | None
    known_differences: tuple[Any, ...]
    """Its measured differences (``equivalence.core.known_differences.KnownDifference``)."""
    probes: tuple[Any, ...]
    """The start-up probes its differences' conditions name (``equivalence.core.conditions.Probe``)."""


class FrameworkRefused(RuntimeError):
    """The framework refused a graph or kernel mid-run (an op it has no kernel for, a primitive it cannot create).

    Adapters raise it with a one-line reason instead of the framework's own exception; ``verify`` and ``report``
    list the case as "not run: reason" for that framework and go on.
    """


class Adapter(ABC):
    """The same small set of operations for every framework.

    ``kernel_layout`` says how the framework stores a kernel natively:
    ``"out_in"`` (torch) or ``"in_out"`` (Keras, the canonical layout).
    """

    name: str
    kernel_layout: str
    unsupported_dtypes: Mapping[str, str] = MappingProxyType({})
    """dtype -> why this framework cannot compute a Dense layer in it here (measured; empty: every dtype)."""
    framework: FrameworkEntry
    """The registry entry (set by ``registry.get_adapter``)."""
    chain_builder: bool = False
    """Whether ``build_chain`` builds chains of other kinds than dense here. A subclass that runs models another way
    (a runtime, a compiled or converted form) sets it back to False: the chain would run uncompiled, unconverted."""

    @property
    def styles(self) -> tuple[str, ...]:
        return self.framework.styles

    @property
    def weights_dtype(self) -> str | None:
        """The dtype its native weights are stored in (its registry entry's ``weights_dtype``)."""
        return self.framework.weights_dtype

    @property
    def variant(self) -> str:
        """The framework and its variant, e.g. ``"keras/jax"``: what recorded outputs and reports name."""
        return self.name

    def can(self, capability: str) -> bool:
        """Whether the registry entry declares ``capability`` (one of ``registry.CAPABILITIES``)."""
        return capability in self.framework.capabilities

    def cannot(self, activation: str, dtype: str) -> str | None:
        """Why this framework cannot compute a Dense layer with ``activation`` in ``dtype`` here, or None.

        The default knows whole dtypes (``unsupported_dtypes``); a runtime whose gaps come in pairs (no float64
        Erf, say) overrides it.
        """
        return self.unsupported_dtypes.get(dtype)

    def _lacks(self, capability: str) -> NotImplementedError:
        return NotImplementedError(f"{self.name} does not declare {capability!r} in its registry entry")

    @abstractmethod
    def build(self, spec: StackSpec, style: str) -> Any:
        """A new model of ``spec`` in ``style``, built (weights exist) and ready to call."""

    @abstractmethod
    def build_layer(self, n_in: int, n_out: int, activation: str, *, bias: bool, dtype: str) -> Any:
        """One built dense layer with its activation.

        Every method below also accepts a plain list of such layers as the model
        (the bare-layers form the numeric hot path reuses, see ``check.LayerPool``).
        """

    def build_chain(self, spec: ChainSpec, weights: Sequence[LayerWeights]) -> list[Any]:
        """A chain of layers of any kind (conv, pooling, flatten, norms, dense: ``equivalence.core.chain``) built as
        a model of this framework holding ``weights``, as its units (``equivalence.core.walk.DenseUnit``: ``run``
        takes and gives the canonical layout), one per layer. ``FrameworkRefused`` where the framework builds dense
        stacks only (the default), or has no layer for a kind's configuration."""
        raise FrameworkRefused(self.chainless())

    def chainless(self) -> str | None:
        """Why this framework builds no chains at all (``chain_builder`` is False), or None."""
        if self.chain_builder:
            return None
        return f"{self.name} builds dense stacks only here (no conv, pooling, norm, sequence or recurrent layers)"

    @abstractmethod
    def get_weights(self, model: Any) -> list[LayerWeights]:
        """The model's weights in the canonical layout (copies): ``W (in, out)``, ``b (out,)`` or None."""

    @abstractmethod
    def set_weights(self, model: Any, weights: Sequence[LayerWeights]) -> None:
        """Write canonical weights into the model; checks every layer before writing any."""

    @abstractmethod
    def native_weights(self, model: Any) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """The weights exactly as the framework stores them (no transpose), for layout checks."""

    @abstractmethod
    def apply_layer(self, model: Any, index: int, x: np.ndarray) -> np.ndarray:
        """Layer ``index`` (dense + activation) of the model applied to ``x``."""

    def forward(self, model: Any, x: np.ndarray) -> np.ndarray:
        """The model's own end-to-end forward pass; of pooled bare layers (a plain list of ``build_layer``'s
        layers, what ``check.LayerPool`` hands out: no model around them), their layers chained (``taps``)."""
        if isinstance(model, list):
            return self.taps(model, x)[-1]
        return self.model_forward(model, x)

    @abstractmethod
    def model_forward(self, model: Any, x: np.ndarray) -> np.ndarray:
        """A built model's own end-to-end forward pass (``forward`` handles the pooled bare layers)."""

    @abstractmethod
    def count_params(self, model: Any) -> ParamCount:
        """Trainable parameters per layer and in total, and the number of trainable tensors."""

    def loss_gradients(self, model: Any, x: np.ndarray) -> Gradients:
        """``dL/dW``, ``dL/db`` (canonical layout) and ``dL/dX`` for ``L = mean(forward(x))``.

        Every call starts from zero gradients (torch's ``.grad`` would otherwise accumulate). Optional
        (capability ``gradients``).
        """
        raise self._lacks("gradients")

    def sgd_step(self, model: Any, x: np.ndarray, *, learning_rate: float) -> None:
        """One step of the framework's own plain SGD optimizer (no momentum) on ``L = mean(forward(x))``.
        Optional (capability ``sgd``)."""
        raise self._lacks("sgd")

    def save(self, model: Any, path: str | os.PathLike) -> None:
        """Write ``model`` to ``path`` in the format its suffix names (the registry's ``save_formats``).

        Refuses to overwrite an existing file (``FileExistsError``), and pooled bare layers (no model to save).
        Optional (capability ``save_load``: ``save_model``).
        """
        if not self.can("save_load"):
            raise self._lacks("save_load")
        self.check_new_file(path)
        if isinstance(model, list):
            raise TypeError(f"{self.name} save needs a built model (build), not a list of bare layers")
        self.save_model(model, path)

    def save_model(self, model: Any, path: str | os.PathLike) -> None:
        """``save`` of a built model, to a new file of one of the registry's ``save_formats`` (checked)."""
        raise self._lacks("save_load")

    def load(self, path: str | os.PathLike, spec: StackSpec, style: str) -> Any:
        """A model of ``spec`` in ``style`` holding what ``save`` wrote, loaded without pickle. Optional
        (capability ``save_load``)."""
        raise self._lacks("save_load")

    def check_new_file(self, path: str | os.PathLike, formats: Sequence[str] | None = None) -> None:
        formats = self.framework.save_formats if formats is None else formats
        name = os.fspath(path)
        if not any(name.endswith(f) for f in formats):
            raise ValueError(f"{self.name} saves to {', '.join(formats)} files, got {name!r}")
        if os.path.exists(name):
            raise FileExistsError(f"{name} exists; {self.name} save never overwrites a file")

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """Versions and settings of the framework (its kernel path too), for fingerprints and report headers."""

    def activation(self, name: str, x: np.ndarray, dtype: str) -> np.ndarray:
        """The framework's own activation ``name`` applied to ``x`` in ``dtype``, returned as float64.

        What known-difference probes and evidence measure: the activation alone, no Dense around it
        (an identity kernel would turn an inf input into NaN through ``0 * inf``).
        """
        raise NotImplementedError(f"the {self.name} adapter cannot apply an activation alone")

    def forget_compiled(self) -> None:
        """Drop compiled forms of layers and models (Keras on jax runs each through ``jax.jit``).

        A compiled form keeps the framework code it was traced with; call this after patching the
        framework (the suite's meta tests do, through an autouse fixture). Eager frameworks: nothing to do.
        """
        return None

    def layer_outputs(self, model: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each layer ``l`` applied to its own input ``inputs[l]`` (the per-layer check)."""
        return [self.apply_layer(model, i, x) for i, x in enumerate(inputs)]

    def taps(self, model: Any, x: np.ndarray) -> list[np.ndarray]:
        """Every layer's output along one chained pass (layer ``l`` fed layer ``l-1``'s output)."""
        outs = []
        for i in range(len(model) if isinstance(model, list) else len(self.get_weights(model))):
            x = self.apply_layer(model, i, x)
            outs.append(x)
        return outs

    def check_style(self, style: str) -> None:
        if style not in self.styles:
            raise ValueError(f"unknown {self.name} style {style!r}; use one of {', '.join(self.styles)}")


_registries: list[tuple[Callable[[str], Adapter], Callable[[str], FrameworkEntry], Callable[[], Sequence[str]]]] = []


def provide_registry(adapters: Callable[[str], Adapter], entries: Callable[[str], FrameworkEntry],
                     names: Callable[[], Sequence[str]]) -> None:
    """Where ``adapter_for``, ``entry_for`` and ``registered`` look names up (the registry's ``get_adapter``,
    ``entry`` and ``names``; the latest wins). The registry calls it when imported."""
    _registries.append((adapters, entries, names))


def registered() -> tuple[FrameworkEntry, ...]:
    """Every registered framework's entry, in the registry's order; none with no registry imported."""
    if not _registries:
        return ()
    _, entries, names = _registries[-1]
    return tuple(entries(name) for name in names())


def adapter_for(name: str) -> Adapter:
    """The adapter of framework ``name``, from the registry; ``FrameworkUnavailable`` when no registry was
    imported (``import equivalence`` imports it)."""
    if not _registries:
        raise FrameworkUnavailable(f"no adapter registry is loaded to give the {name} adapter "
                                   "(import equivalence.frameworks.registry)")
    return _registries[-1][0](name)


def entry_for(name: str) -> FrameworkEntry | None:
    """The registry entry of framework ``name``: its facts (``runs_on``, ``weights_dtype``); None for a name
    nobody registered, or with no registry imported."""
    if not _registries:
        return None
    try:
        return _registries[-1][1](name)
    except ValueError:  # not registered
        return None
