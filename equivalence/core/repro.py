"""Reproduce a failing case without hypothesis: save it pickle-free, load it, rebuild it.

A failing property writes its case as ``<name>.json`` (the spec) and
``<name>.npz`` (canonical weights and inputs, read back with
``allow_pickle=False``), and prints a snippet that re-runs exactly that case.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from equivalence.core.atomic import write_bytes_atomic, write_text_atomic
from equivalence.core.case import Case
from equivalence.core.dtypes import numpy_dtype
from equivalence.core.errors import InputError
from equivalence.core.layout import LayerWeights, check_spec_weights
from equivalence.core.spec import StackSpec

FAILURES = Path("failures")


def save_case(case: Case, name: str, folder: Path = FAILURES) -> Path:
    """Write ``case`` as ``folder/name.json`` + ``folder/name.npz`` (atomically); returns the json path.

    Arrays are stored as float32 for bfloat16 (exact) so that plain numpy reads them.
    """
    folder.mkdir(parents=True, exist_ok=True)
    store = np.float32 if case.spec.dtype == "bfloat16" else numpy_dtype(case.spec.dtype)
    arrays = {"x": np.asarray(case.x, dtype=store)}
    for i, (W, b) in enumerate(case.weights):
        arrays[f"W{i}"] = np.asarray(W, dtype=store)
        if b is not None:
            arrays[f"b{i}"] = np.asarray(b, dtype=store)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(folder / f"{name}.npz", buffer.getvalue())
    path = folder / f"{name}.json"
    write_text_atomic(path, json.dumps({"case": case.id, "spec": case.spec.to_json()}, indent=2) + "\n")
    return path


def load_case(path: str | Path) -> Case:
    """The case saved by ``save_case`` (``path`` is its .json); ``InputError`` names a bad file."""
    path = Path(path)
    try:
        spec = StackSpec.from_json(json.loads(path.read_text())["spec"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"not a saved case ({type(exc).__name__}: {exc})", path) from None
    npz = path.with_suffix(".npz")
    try:
        with np.load(npz, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the arrays ({exc})", npz) from None
    dt = numpy_dtype(spec.dtype)
    try:
        weights = tuple(LayerWeights(arrays[f"W{i}"].astype(dt), arrays[f"b{i}"].astype(dt) if spec.bias else None)
                        for i in range(spec.depth))
        x = arrays["x"].astype(dt)
    except KeyError as exc:
        raise InputError(f"missing array {exc}", npz) from None
    check_spec_weights(spec, weights, what=str(npz))
    return Case(spec, weights, x)


def snippet(path: Path, builds: Mapping[str, str]) -> str:
    """Python that re-runs the saved case on each framework of ``builds`` (framework -> build style) and the
    reference, and prints the comparison."""
    lines = ["from equivalence import check_case, get_adapter", "from equivalence.core.repro import load_case",
             f"case = load_case({str(path)!r})", "models = {}"]
    for framework, style in builds.items():
        lines += [f"adapter = get_adapter({framework!r})",
                  f"models[{framework!r}] = (adapter, adapter.build(case.spec, {style!r}))"]
    return "\n".join([*lines, "print(check_case(case, models).message())"])
