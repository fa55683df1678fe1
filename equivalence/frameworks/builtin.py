"""The registry entries of the frameworks that ship with equivalence: torch, Keras (Keras 3 on the backend
``KERAS_BACKEND`` chooses, or Keras 2 under ``TF_USE_LEGACY_KERAS=1``: ``keras.variant``), MXNet Gluon, and the
runtimes: ONNX Runtime (``ort``, torch's export), Keras on TensorFlow through ``tf.function`` (``keras_graph``)
and XLA (``keras_xla``), ``torch.compile`` (``torch_compile``), LiteRT on TensorFlow's converter (``litert``,
``litert_fp16w``: float16 weights) and torch.export (``torch_export``).
Data only: nothing here imports a framework. The registry finds these entries through ``equivalence``'s own
entry point (group ``equivalence.frameworks`` in ``pyproject.toml``: ``FRAMEWORKS``), as it finds a third
party's."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
from collections.abc import Callable, Mapping

from equivalence.frameworks.keras import known_differences as keras_facts
from equivalence.frameworks.mxnet import known_differences as mxnet_facts
from equivalence.frameworks.registry import Framework
from equivalence.frameworks.torch import known_differences as torch_facts

LEGACY_VARIABLE = "TF_USE_LEGACY_KERAS"


def legacy_keras_requested() -> bool:
    """``TF_USE_LEGACY_KERAS`` as TensorFlow reads it (``1``, ``true`` or ``True``)."""
    return os.environ.get(LEGACY_VARIABLE) in ("1", "true", "True")


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
    "torch", "equivalence.frameworks.torch.adapter:TorchAdapter", packages=("torch",),
    styles=("sequential", "modulelist", "plain_list"),
    registering_styles=("sequential", "modulelist"),  # plain_list: the seed notes' trap, nothing registered
    save_formats=(".pt",),  # state_dict through torch.save, read back with torch.load(weights_only=True)
    default=True, version_keys=("torch",), kernel_keys=("cpu_capability",), describe=_torch,
    walker="equivalence.frameworks.torch.walk:walk",
    known_differences=torch_facts.TORCH, probes=tuple(torch_facts.PROBES.values()))

KERAS = Framework(
    "keras", "equivalence.frameworks.keras.variant:adapter", packages=("keras", "tensorflow", "jax", "tf_keras"),
    styles=("sequential", "functional", "subclass"),
    save_formats=(".weights.h5", ".keras"),  # save_weights / load_weights; model.save / load_model(safe_mode=True)
    default=True,
    version_keys=("keras", "tensorflow", "keras_backend", "jax", "keras_torch"),
    kernel_keys=("onednn_enabled", "tf_intra_op_threads"), describe=_keras,
    check_environment=keras_backend_problem, walker="equivalence.frameworks.keras.variant:walk",
    known_differences=keras_facts.KERAS, probes=tuple(keras_facts.PROBES.values()))

MXNET = Framework(
    "mxnet", "equivalence.frameworks.mxnet.adapter:GluonAdapter", packages=("mxnet",),
    styles=("sequential", "hybridized", "subclass"),
    save_formats=(".params",),  # save_parameters / load_parameters: MXNet's own NDArray container, no pickle
    install_hint="MXNet 1.9.1 needs numpy<1.24, so it cannot share .venv with TensorFlow: make mxnet creates "
                 ".venv-mxnet",
    version_keys=("mxnet",), kernel_keys=("mxnet_onednn", "mxnet_blas"), describe=_mxnet,
    known_differences=mxnet_facts.MXNET)

def _keras2_problem(names: str) -> str | None:
    """The runtimes built on the Keras 3 adapter cannot run Keras 2 (``TF_USE_LEGACY_KERAS=1``)."""
    if not legacy_keras_requested():
        return None
    return (f"{names} run Keras 3; {LEGACY_VARIABLE}={os.environ[LEGACY_VARIABLE]} asks for Keras 2 "
            "(make keras2 checks Keras 2 eagerly)")


def keras_on_tensorflow_problem() -> str | None:
    """The graph and XLA variants run Keras on TensorFlow: any other ``KERAS_BACKEND`` is a reason they cannot."""
    problem = keras_backend_problem() or _keras2_problem("keras_graph and keras_xla")
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if problem or backend == "tensorflow":
        return problem
    return (f"keras_graph and keras_xla run Keras on TensorFlow (tf.function), not on KERAS_BACKEND={backend!r}"
            + (" (the keras entry there already runs every layer through jax.jit)" if backend == "jax" else ""))


def _keras_compiled(how: str) -> Callable[[Mapping[str, str]], str]:
    return lambda v: f"{_keras(v)}, through {how}"


def _ort(v: Mapping[str, str]) -> str:
    return (f"onnxruntime {v.get('onnxruntime', '?')} (onnx {v.get('onnx', '?')}, opset {v.get('onnx_opset', '?')}, "
            f"{v.get('ort_graph_optimization', '?')})")


ORT = Framework(
    "ort", "equivalence.frameworks.torch.ort:OnnxRuntimeAdapter", packages=("onnxruntime", "onnx", "torch"),
    styles=("sequential",), capabilities=frozenset(),  # inference only: no gradients, SGD or save/load here
    install_hint="pip install 'equivalence[ort]' (onnxruntime and onnx; the graphs come from torch.onnx.export)",
    version_keys=("onnxruntime", "onnx", "onnx_opset", "exporter"),
    kernel_keys=("ort_provider", "ort_graph_optimization", "ort_intra_op_threads"), describe=_ort,
    known_differences=torch_facts.ORT,
    in_suite_default=False)  # its own properties run in make check (tests/frameworks/test_runtimes.py), all in
    # make runtimes

_KERAS_VARIANT = dict(
    packages=("keras", "tensorflow"), styles=("sequential",),  # the build styles are the keras entry's to check
    capabilities=frozenset(),  # what these check is the forward pass; gradients and save/load stay with keras
    version_keys=("keras", "tensorflow", "keras_backend", "tf_function_jit_compile"),
    kernel_keys=("onednn_enabled", "tf_intra_op_threads"), check_environment=keras_on_tensorflow_problem,
    in_suite_default=False)  # as ort: its own properties in make check, the whole suite in make runtimes

KERAS_GRAPH = Framework("keras_graph", "equivalence.frameworks.keras.graph:GraphKeras", runs_on="keras",
                        describe=_keras_compiled("tf.function (predict's graph)"),
                        known_differences=keras_facts.KERAS_GRAPH, **_KERAS_VARIANT)
KERAS_XLA = Framework("keras_xla", "equivalence.frameworks.keras.graph:XlaKeras", runs_on="keras",
                      describe=_keras_compiled("XLA (tf.function(jit_compile=True))"),
                      known_differences=keras_facts.KERAS_XLA, **_KERAS_VARIANT)

def cxx_compiler_problem() -> str | None:
    """Why torch.compile's inductor cannot build its C++ kernels here (one line), or None; torch not imported."""
    wanted = os.environ.get("CXX") or "g++"
    if shutil.which(wanted) or (not os.environ.get("CXX") and shutil.which("clang++")):
        return None
    return (f"torch.compile's inductor backend builds C++ kernels on CPU and needs a C++ compiler: {wanted} is not "
            "on PATH (install g++, e.g. apt-get install g++, or clang++; or point CXX at one)")


TORCH_COMPILE = Framework(
    "torch_compile", "equivalence.frameworks.torch.compile:TorchCompileAdapter", packages=("torch",), runs_on="torch",
    styles=("sequential",), capabilities=frozenset(),  # the forward pass compiled; training stays with torch
    version_keys=("torch", "torch_compile_backend"),
    kernel_keys=("cpu_capability", "inductor_cpp_compiler", "inductor_simd"),
    describe=lambda v: f"{_torch(v)}, through torch.compile (inductor)", check_environment=cxx_compiler_problem,
    known_differences=torch_facts.TORCH_COMPILE,
    in_suite_default=False, own_tests_default=False)  # ~17 s before its first layer: make runtimes runs it

def litert_problem() -> str | None:
    """LiteRT's converter reads Keras on TensorFlow: any other ``KERAS_BACKEND`` is a reason it cannot run."""
    problem = keras_backend_problem() or _keras2_problem("litert and litert_fp16w")
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if problem or backend == "tensorflow":
        return problem
    return f"litert and litert_fp16w convert Keras on TensorFlow (TFLiteConverter), not on KERAS_BACKEND={backend!r}"


def _litert(weights: str) -> Callable[[Mapping[str, str]], str]:
    return lambda v: (f"ai-edge-litert {v.get('ai_edge_litert', '?')} ({weights} weights, "
                      f"{v.get('litert_op_resolver', '?')}), converted from {_keras(v)}")


_LITERT = dict(
    packages=("keras", "tensorflow", "ai_edge_litert"), styles=("sequential",),
    capabilities=frozenset(),  # inference only: a converted model has no gradients, SGD or save/load here
    install_hint="pip install 'equivalence[runtimes]' (ai-edge-litert; the converter is TensorFlow's)",
    version_keys=("ai_edge_litert", "litert_converter", "litert_weights", "keras", "tensorflow", "keras_backend"),
    kernel_keys=("litert_op_resolver", "litert_threads"), check_environment=litert_problem,
    in_suite_default=False, own_tests_default=False)  # its tests take minutes: make runtimes runs them

LITERT = Framework("litert", "equivalence.frameworks.keras.litert:LiteRTKeras", describe=_litert("float32"),
                   weights_dtype="float32", known_differences=keras_facts.LITERT, **_LITERT)
LITERT_FP16W = Framework("litert_fp16w", "equivalence.frameworks.keras.litert:LiteRTFloat16WeightsKeras",
                         describe=_litert("float16"), weights_dtype="float16", runs_on="litert",
                         known_differences=keras_facts.LITERT_FP16W, **_LITERT)

TORCH_EXPORT = Framework(
    "torch_export", "equivalence.frameworks.torch.export:TorchExportAdapter", packages=("torch",), runs_on="torch",
    styles=("sequential",), capabilities=frozenset(),  # the exported forward pass; training stays with torch
    version_keys=("torch", "torch_export"), kernel_keys=("cpu_capability",),
    describe=lambda v: f"{_torch(v)}, through {v.get('torch_export', 'torch.export')}",
    in_suite_default=False)  # as ort: its own properties in make check, the whole suite in make runtimes

FRAMEWORKS = (TORCH, KERAS, MXNET, ORT, KERAS_GRAPH, KERAS_XLA, TORCH_COMPILE, LITERT, LITERT_FP16W, TORCH_EXPORT)
"""The built-in frameworks in the registry's order: ``equivalence``'s entry point ``builtin`` names this tuple."""
