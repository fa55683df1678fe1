"""The environment fingerprint stored in every report and every recorded golden-vector file.

Framework versions and settings come from the adapters' ``versions()`` (framework
imports stay in the adapters); the rest is numpy, the standard library and /proc.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from equivalence.adapters import FRAMEWORKS, FrameworkUnavailable, get_adapter

THREAD_VARIABLES = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
)
"""Environment variables that change thread counts, and with them (for TF at fan-in >= 4096) the bits."""


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _usable_cpus() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count()


def fingerprint(frameworks: Sequence[str] = FRAMEWORKS) -> dict[str, Any]:
    """Versions, backend, oneDNN, thread counts and CPU of this process, as a JSON-able dict."""
    fw: dict[str, dict[str, str]] = {}
    for name in frameworks:
        try:
            fw[name] = dict(get_adapter(name).versions())
        except FrameworkUnavailable as exc:
            fw[name] = {"installed": "no", "reason": str(exc)}
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": _usable_cpus(),
        "thread_env": {var: os.environ.get(var, "unset") for var in THREAD_VARIABLES},
        "frameworks": fw,
    }


def flatten(fp: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"frameworks.keras.keras": "3.15.1", ...}``: one line per fact, for printing and diffs."""
    out: dict[str, str] = {}
    for key, value in fp.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{name}."))
        else:
            out[name] = str(value)
    return out


def summary(fp: Mapping[str, Any]) -> str:
    """One line: the versions that decide the numbers."""
    fw = fp.get("frameworks", {})
    parts = []
    torch_v = fw.get("torch", {})
    if "torch" in torch_v:
        parts.append(f"torch {torch_v['torch']}")
    keras_v = fw.get("keras", {})
    if "tensorflow" in keras_v:
        parts.append(f"tensorflow {keras_v['tensorflow']} (oneDNN {keras_v.get('onednn_enabled', 'unknown')})")
    if "keras" in keras_v:
        parts.append(f"keras {keras_v['keras']} ({keras_v.get('keras_backend', '?')} backend)")
    for key in ("jax", "keras_torch"):
        if key in keras_v:
            parts.append(f"{key.replace('keras_', '')} {keras_v[key]} (under keras)")
    mxnet_v = fw.get("mxnet", {})
    if "mxnet" in mxnet_v:
        parts.append(f"mxnet {mxnet_v['mxnet']} (oneDNN {mxnet_v.get('mxnet_onednn', 'unknown')})")
    parts.append(f"numpy {fp.get('numpy', '?')}")
    parts.append(f"Python {fp.get('python', '?')}")
    return ", ".join(parts)


# torch's thread count does not change its bits (measured, shared/measurements.md); TF's does, so it stays.
_NOISE = ("frameworks.torch.torch_threads", "frameworks.torch.torch_interop_threads")


def changes(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``["frameworks.keras.tensorflow: 2.21.0 -> 2.20.0", ...]``: what differs since recording.

    Only frameworks in both fingerprints are compared: one recorded but not run now (or run now but not
    recorded, as MXNet against the shipped vectors) did not change, it is just not here.
    """
    shared = set(recorded.get("frameworks", {})) & set(current.get("frameworks", {}))
    old, new = (flatten({**fp, "frameworks": {k: v for k, v in fp.get("frameworks", {}).items() if k in shared}})
                for fp in (recorded, current))
    out = []
    for key in sorted(set(old) | set(new)):
        if key in _NOISE and key in old and key in new:
            continue
        a, b = old.get(key, "absent"), new.get(key, "absent")
        if a != b:
            out.append(f"{key}: {a} -> {b}")
    return out
