"""The environment fingerprint stored in every report and every recorded golden-vector file.

Framework versions and settings come from the adapters' ``versions()`` (framework
imports stay in the adapters); the machine's kernel facts (CPU, oneDNN's ISA, numpy's
BLAS kernel) from ``equivalence.core.kernels``; which named known differences are active
here from their conditions (``equivalence.core.known_differences``), probes included.
The rest is numpy, the standard library and /proc.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from equivalence.core.kernels import cpu_model, kernel_facts
from equivalence.frameworks.registry import FrameworkUnavailable, entry, get_adapter, names

THREAD_VARIABLES = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
)
"""Environment variables that change thread counts, and with them (for TF at fan-in >= 4096) the bits."""

__all__ = ["changes", "cpu_model", "drift_causes", "fingerprint", "flatten", "summary"]


def _usable_cpus() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count()


def fingerprint(frameworks: Sequence[str] | None = None) -> dict[str, Any]:
    """Versions, backend, oneDNN, thread counts and CPU of this process, as a JSON-able dict."""
    fw: dict[str, dict[str, str]] = {}
    for name in names() if frameworks is None else frameworks:
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
        "kernel": kernel_facts(),
        "frameworks": fw,
        **_known_differences(fw),
    }


def _known_differences(fw: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """The probes of the installed frameworks and the named differences active here, as recorded facts."""
    from equivalence.core.known_differences import FACTS, known_differences, probes, runs_on

    here = {name for name, versions in fw.items() if "installed" not in versions}
    here |= {runs_on(name) for name in here} - {None}  # keras_xla runs Keras' ops: its entries apply
    return {
        "probes": {name: FACTS.get(p.key) for name, p in probes().items() if p.framework in here},
        "known_differences": {"active": [d.name for d in known_differences() if d.framework in here and d.active()]},
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
    kernel = fp.get("kernel", {})
    parts = [fp.get("cpu_model", "?") + (f" ({kernel['cpu_isa']}, oneDNN at {kernel['onednn_isa']})" if kernel else "")]
    for name, versions in fw.items():  # each framework in its registry entry's words
        if "installed" in versions:
            continue
        try:
            parts.append(entry(name).summary(versions))
        except ValueError:  # recorded by a framework not registered here: its first version
            parts.append(f"{name} {next(iter(versions.values()), '?')}")
    blas = " ".join(kernel[k] for k in ("blas", "blas_core") if k in kernel)
    parts.append(f"numpy {fp.get('numpy', '?')}" + (f" ({blas})" if blas else ""))
    parts.append(f"Python {fp.get('python', '?')}")
    return ", ".join(parts)


# torch's thread count does not change its bits (measured, docs/measurements.md); TF's does, so it stays.
_NOISE = ("frameworks.torch.torch_threads", "frameworks.torch.torch_interop_threads")


def changes(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``["frameworks.keras.tensorflow: 2.21.0 -> 2.20.0", ...]``: what differs since recording.

    Only frameworks in both fingerprints are compared: one recorded but not run now (or run now but not
    recorded, as MXNet against the shipped vectors) did not change, it is just not here.
    Facts the recording lacks (vectors older than the fact) are not changes; the probes and the active known
    differences are reported on their own (``cli._print_known_differences``).
    """
    shared = set(recorded.get("frameworks", {})) & set(current.get("frameworks", {}))
    old, new = (flatten({**fp, "frameworks": {k: v for k, v in fp.get("frameworks", {}).items() if k in shared}})
                for fp in (recorded, current))
    out = []
    for key in sorted(set(old) | set(new)):
        if key in _NOISE or key not in old or key.startswith(("probes.", "known_differences.")):
            continue
        a, b = old.get(key, "absent"), new.get(key, "absent")
        if a != b:
            out.append(f"{key}: {a} -> {b}")
    return out


REFERENCE_VERSION_KEYS = ("numpy",)
REFERENCE_KERNEL_KEYS = ("kernel.blas", "kernel.blas_core", "kernel.cpu_isa", "kernel.OPENBLAS_CORETYPE")
"""What decides the float64 reference's bits: numpy's version, and its BLAS kernel (the machine)."""
SHARED_KERNEL_KEYS = ("kernel.onednn_isa", "kernel.cpu_isa")
"""Kernel facts every framework's bits can follow (torch and TF each bundle oneDNN)."""


def _keys(source: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(version keys, kernel keys)`` of ``source``: the reference, or a framework by its registry entry."""
    if source == "reference":
        return REFERENCE_VERSION_KEYS, REFERENCE_KERNEL_KEYS
    try:
        framework = entry(source)
    except ValueError:  # recorded by a framework not registered here
        return (), ()
    prefix = f"frameworks.{source}."
    return (tuple(prefix + k for k in framework.version_keys),
            tuple(prefix + k for k in framework.kernel_keys) + SHARED_KERNEL_KEYS)


def version_changes(recorded: Mapping[str, Any], current: Mapping[str, Any], sources: Sequence[str]) -> list[str]:
    """The version changes since recording that decide any of ``sources``' bits (numpy's for the reference)."""
    return [change for source in sources for change in drift_causes(source, recorded, current)[0]]


def drift_causes(source: str, recorded: Mapping[str, Any], current: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """What changed since recording that can move ``source``'s bits: ``(version changes, kernel-path changes)``,
    each ``"key: old -> new"``. Facts a fingerprint lacks (vectors older than the fact) count as unchanged."""
    old, new = flatten(recorded), flatten(current)

    def changed(keys: Sequence[str]) -> list[str]:
        return [f"{key.rpartition('.')[2]} {old[key]} -> {new[key]}" for key in keys
                if key in old and key in new and old[key] != new[key]]

    version_keys, kernel_keys = _keys(source)
    return changed(version_keys), changed(kernel_keys)
