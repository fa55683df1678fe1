"""The registry entries of the frameworks that ship with equivalence: torch, Keras (Keras 3 on the backend
``KERAS_BACKEND`` chooses, or Keras 2 under ``TF_USE_LEGACY_KERAS=1``: ``keras_variant``) and MXNet Gluon.
Data only: nothing here imports a framework."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from collections.abc import Mapping

from equivalence.frameworks.registry import Framework, register

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
    return _legacy_keras_problem(backend)


def _legacy_keras_problem(backend: str) -> str | None:
    """``TF_USE_LEGACY_KERAS=1`` asks for Keras 2 (tf-keras): refused where it would silently test Keras 3."""
    from equivalence.frameworks.keras_variant import LEGACY_VARIABLE, legacy_keras_requested

    if not legacy_keras_requested():
        return None
    value = os.environ[LEGACY_VARIABLE]
    if backend != "tensorflow":
        return (f"{LEGACY_VARIABLE}={value} asks for Keras 2 (tf-keras), which runs on TensorFlow only, but "
                f"KERAS_BACKEND={backend!r}; unset one of them")
    if importlib.util.find_spec("tf_keras") is None:
        return (f"{LEGACY_VARIABLE}={value} asks for Keras 2, but the tf-keras package is not installed, so Keras "
                f"would be Keras 3 (keras {_installed('keras')}); make keras2 creates .venv-keras2 with tf-keras, "
                f"or unset {LEGACY_VARIABLE} to test Keras 3")
    return None


def _installed(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _torch(v: Mapping[str, str]) -> str:
    return f"torch {v.get('torch', '?')}" + (f" ({v['cpu_capability']} kernels)" if "cpu_capability" in v else "")


def _keras(v: Mapping[str, str]) -> str:
    parts = []
    if "tensorflow" in v:
        parts.append(f"tensorflow {v['tensorflow']} (oneDNN {v.get('onednn_enabled', 'unknown')})")
    if v.get("keras_package") == "tf-keras":
        parts.append(f"keras {v.get('keras', '?')} (Keras 2: tf-keras, TF_USE_LEGACY_KERAS=1)")
    else:
        parts.append(f"keras {v.get('keras', '?')} ({v.get('keras_backend', '?')} backend)")
    parts += [f"{key.replace('keras_', '')} {v[key]} (under keras)" for key in ("jax", "keras_torch") if key in v]
    return ", ".join(parts)


def _mxnet(v: Mapping[str, str]) -> str:
    return f"mxnet {v.get('mxnet', '?')} (oneDNN {v.get('mxnet_onednn', 'unknown')})"


TORCH = Framework(
    "torch", "equivalence.frameworks.torch:TorchAdapter", packages=("torch",),
    styles=("sequential", "modulelist", "plain_list"),
    registering_styles=("sequential", "modulelist"),  # plain_list: the seed notes' trap, nothing registered
    save_formats=(".pt",),  # state_dict through torch.save, read back with torch.load(weights_only=True)
    default=True, version_keys=("torch",), kernel_keys=("cpu_capability",), describe=_torch,
    walker="equivalence.frameworks.torch_walk:walk")

KERAS = Framework(
    "keras", "equivalence.frameworks.keras_variant:adapter", packages=("keras", "tensorflow", "jax", "tf_keras"),
    styles=("sequential", "functional", "subclass"),
    save_formats=(".weights.h5", ".keras"),  # save_weights / load_weights; model.save / load_model(safe_mode=True)
    default=True,
    version_keys=("keras", "tensorflow", "keras_backend", "jax", "keras_torch"),
    kernel_keys=("onednn_enabled", "tf_intra_op_threads"), describe=_keras,
    check_environment=keras_backend_problem, walker="equivalence.frameworks.keras.walk:walk")

MXNET = Framework(
    "mxnet", "equivalence.frameworks.mxnet:GluonAdapter", packages=("mxnet",),
    styles=("sequential", "hybridized", "subclass"),
    save_formats=(".params",),  # save_parameters / load_parameters: MXNet's own NDArray container, no pickle
    install_hint="MXNet 1.9.1 needs numpy<1.24, so it cannot share .venv with TensorFlow: make mxnet creates "
                 ".venv-mxnet",
    version_keys=("mxnet",), kernel_keys=("mxnet_onednn", "mxnet_blas"), describe=_mxnet)

for _framework in (TORCH, KERAS, MXNET):
    register(_framework)
