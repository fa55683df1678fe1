"""The interface every framework adapter implements, and lazy access to them.

One small class per framework (as einops' backends): the same methods
everywhere, the framework imported only when its adapter is first asked for.
Everything outside the adapters talks numpy and the canonical weight layout.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from equivalence.core.layout import LayerWeights
from equivalence.core.spec import StackSpec

if TYPE_CHECKING:
    from equivalence.core.gradients import Gradients


class FrameworkUnavailable(RuntimeError):
    """The framework behind an adapter is not installed (tests skip on this)."""


@dataclass(frozen=True)
class ParamCount:
    """Parameter counts as the framework itself reports them."""

    per_layer: tuple[int, ...]
    total: int
    trainable_tensors: int


STYLES: dict[str, tuple[str, ...]] = {
    "torch": ("sequential", "modulelist", "plain_list"),
    "keras": ("sequential", "functional", "subclass"),
    "mxnet": ("sequential", "hybridized", "subclass"),
}
"""Build styles per framework, known without importing any framework (for pytest ids)."""

SAVE_FORMATS: dict[str, tuple[str, ...]] = {
    "torch": (".pt",),  # state_dict through torch.save, read back with torch.load(weights_only=True)
    "keras": (".weights.h5", ".keras"),  # save_weights / load_weights; model.save / load_model(safe_mode=True)
    "mxnet": (".params",),  # save_parameters / load_parameters: MXNet's own NDArray container, no pickle
}
"""File suffixes each adapter's ``save`` and ``load`` understand."""

REGISTERING_STYLES: dict[str, tuple[str, ...]] = {
    "torch": ("sequential", "modulelist"),
    "keras": STYLES["keras"],
    "mxnet": STYLES["mxnet"],
}
"""Styles whose parameters the framework registers; torch's ``plain_list`` is the seed notes' trap."""


class Adapter(ABC):
    """The same small set of operations for every framework.

    ``kernel_layout`` says how the framework stores a kernel natively:
    ``"out_in"`` (torch) or ``"in_out"`` (Keras, the canonical layout).
    """

    name: str
    styles: tuple[str, ...]
    kernel_layout: str
    unsupported_dtypes: Mapping[str, str] = MappingProxyType({})
    """dtype -> why this framework cannot compute a Dense layer in it here (measured; empty: every dtype)."""

    @abstractmethod
    def build(self, spec: StackSpec, style: str) -> Any:
        """A new model of ``spec`` in ``style``, built (weights exist) and ready to call."""

    @abstractmethod
    def build_layer(self, n_in: int, n_out: int, activation: str, *, bias: bool, dtype: str) -> Any:
        """One built dense layer with its activation.

        Every method below also accepts a plain list of such layers as the model
        (the bare-layers form the numeric hot path reuses, see ``check.LayerPool``).
        """

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

    @abstractmethod
    def forward(self, model: Any, x: np.ndarray) -> np.ndarray:
        """The model's own end-to-end forward pass."""

    @abstractmethod
    def count_params(self, model: Any) -> ParamCount:
        """Trainable parameters per layer and in total, and the number of trainable tensors."""

    @abstractmethod
    def loss_gradients(self, model: Any, x: np.ndarray) -> Gradients:
        """``dL/dW``, ``dL/db`` (canonical layout) and ``dL/dX`` for ``L = mean(forward(x))``.

        Every call starts from zero gradients (torch's ``.grad`` would otherwise accumulate).
        """

    @abstractmethod
    def sgd_step(self, model: Any, x: np.ndarray, *, learning_rate: float) -> None:
        """One step of the framework's own plain SGD optimizer (no momentum) on ``L = mean(forward(x))``."""

    @abstractmethod
    def save(self, model: Any, path: str | os.PathLike) -> None:
        """Write ``model`` to ``path`` in the format its suffix names (``SAVE_FORMATS``).

        Refuses to overwrite an existing file (``FileExistsError``).
        """

    @abstractmethod
    def load(self, path: str | os.PathLike, spec: StackSpec, style: str) -> Any:
        """A model of ``spec`` in ``style`` holding what ``save`` wrote, loaded without pickle."""

    def check_new_file(self, path: str | os.PathLike, formats: Sequence[str]) -> None:
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
        for i in range(len(self.get_weights(model))):
            x = self.apply_layer(model, i, x)
            outs.append(x)
        return outs

    def check_style(self, style: str) -> None:
        if style not in self.styles:
            raise ValueError(f"unknown {self.name} style {style!r}; use one of {', '.join(self.styles)}")


_ADAPTERS = {  # name -> (module, class, packages whose absence means "not installed")
    "torch": ("equivalence.frameworks.torch", "TorchAdapter", ("torch",)),
    "keras": ("equivalence.frameworks.keras", "KerasAdapter", ("keras", "tensorflow")),
    "mxnet": ("equivalence.frameworks.mxnet", "GluonAdapter", ("mxnet",)),
}
_INSTALL_HINTS = {  # name -> how to get the framework, when not the default `make venv`
    "mxnet": "MXNet 1.9.1 needs numpy<1.24, so it cannot share .venv with TensorFlow: make mxnet creates .venv-mxnet",
}
FRAMEWORKS: tuple[str, ...] = tuple(_ADAPTERS)
_cache: dict[str, Adapter] = {}

KERAS_BACKENDS: dict[str, str] = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}
"""Keras backends the Keras adapter runs on -> the package each needs (Keras also knows numpy and openvino,
which have no gradients the adapter could use)."""


def keras_backend_problem() -> str | None:
    """What is wrong with ``KERAS_BACKEND`` (one line naming the variable), or None.

    Checked before Keras is imported: Keras itself raises a bare ``ValueError`` deep in its import for an
    unknown backend, and a ``ModuleNotFoundError`` for a backend whose package is missing. Keras not being
    installed at all is not a problem here (its tests skip; ``get_adapter`` says it is not installed).
    """
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend not in KERAS_BACKENDS:
        return (f"KERAS_BACKEND={backend!r} is not a Keras backend equivalence runs on; "
                f"use one of {', '.join(KERAS_BACKENDS)} (unset means tensorflow)")
    package = KERAS_BACKENDS[backend]
    if importlib.util.find_spec("keras") is not None and importlib.util.find_spec(package) is None:
        hint = "make check KERAS_BACKEND=jax installs it" if backend == "jax" else "make venv installs it"
        return f"KERAS_BACKEND={backend!r} needs the {package!r} package, which is not installed ({hint})"
    return None


def loaded_adapters() -> tuple[Adapter, ...]:
    """The adapters ``get_adapter`` has created so far (imports nothing)."""
    return tuple(_cache.values())


def get_adapter(name: str) -> Adapter:
    """The adapter for ``name`` (one of ``FRAMEWORKS``), importing its framework on first use.

    Raises ``FrameworkUnavailable`` (with the install hint) when the framework is missing.
    """
    if name in _cache:
        return _cache[name]
    if name not in _ADAPTERS:
        raise ValueError(f"unknown framework {name!r}; use one of {', '.join(FRAMEWORKS)}")
    module_name, class_name, packages = _ADAPTERS[name]
    problem = keras_backend_problem() if name == "keras" else None
    if problem:
        raise FrameworkUnavailable(problem)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in packages:
            raise FrameworkUnavailable(
                f"{name} adapter needs the {exc.name!r} package, which is not installed "
                f"({_INSTALL_HINTS.get(name, 'make venv installs the pinned CPU builds')})"
            ) from exc
        raise
    adapter = getattr(module, class_name)()
    _cache[name] = adapter
    return adapter
