"""Golden vectors: what the frameworks computed when recorded, checked against what they compute now.

A golden-vector folder holds two files, both written by ``record`` and nothing else:

* ``manifest.json``: format name, schema version, fingerprint, the data file's
  name and sha256, and every case's spec and seed;
* ``vectors-<sha256[:16]>.npz``: per case the canonical weights, the inputs,
  every layer's float64 reference output, and each framework's per-layer outputs
  as produced (each layer fed the reference's input, as ``check_case`` does).

The npz is read with ``allow_pickle=False``. Writes are atomic and the manifest
is the commit point: the new data file is written under a new name first, then
the manifest is replaced, then the old data file is removed. A crash at any
point leaves a folder whose manifest names a complete data file.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from equivalence.core.atomic import TEMP_PREFIX, write_bytes_atomic, write_text_atomic
from equivalence.core.chain import NO_WEIGHTS, chain_shapes, check_chain_weights, spec_from_json, spec_to_json
from equivalence.core.check import LayerPool, reference_inputs, run_available, run_layers, why_not_run
from equivalence.core.compare import Comparison, LayerResult, compare_arrays, compare_layers
from equivalence.core.conditions import RecordedFacts
from equivalence.core.dtypes import numpy_dtype
from equivalence.core.errors import InputError
from equivalence.core.known_differences import excused
from equivalence.core.layout import LayerWeights, check_spec_weights
from equivalence.core.reference import LayerTrace, layer_inputs, layerwise_reference
from equivalence.core.spec import ChainSpec, StackSpec
from equivalence.core.tolerance import PAIR_FACTOR, RECORDED, SAFETY, forward_bound
from equivalence.frameworks.base import Adapter, FrameworkRefused
from equivalence.guard.accuracy import FILE as ACCURACY_FILE
from equivalence.guard.fingerprint import flatten, version_changes
from equivalence.guard.manifest import check as check_manifest
from equivalence.guard.manifest import read_json, refuse_symlink
from equivalence.guard.matrix import MatrixCase

FORMAT = "equivalence-golden-vectors"
SCHEMA_VERSION = 3
"""2: a case's spec may be a chain of layers of any kind (``equivalence.core.chain``), and a case added later
carries the fingerprint it was recorded with; 3: a chain may hold the sequence and recurrent kinds, and one that
starts with an embedding takes token ids, stored as int64 (``IDS``). Versions 1 and 2 are read as they are."""
IDS = "int64"
"""How a chain's token ids are stored (never rounded to the chain's dtype)."""
MANIFEST = "manifest.json"
DATA_NAME = re.compile(r"vectors-[0-9a-f]{16}\.npz")
_ZIP_MAGIC = b"PK\x03\x04"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed zip timestamps: the same vectors give the same bytes

Progress = Callable[[], None] | None


# --- in memory -----------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class GoldenCase:
    """One recorded case. ``outputs[framework][l]`` is that framework's layer ``l`` as recorded."""

    id: str
    spec: StackSpec | ChainSpec
    weights: tuple[LayerWeights, ...]
    x: np.ndarray
    reference: tuple[np.ndarray, ...]
    outputs: Mapping[str, tuple[np.ndarray | None, ...]]
    """None: a layer the framework had no activation for when recorded (the manifest's ``not_run``)."""
    meta: Mapping[str, Any] = field(default_factory=dict)
    fingerprint: Mapping[str, Any] | None = None
    """The fingerprint this case was recorded with, where it is not the set's (a case added to the vectors later,
    ``extend``: the machine may differ); None: the set's."""

    def layer_inputs(self) -> list[np.ndarray]:
        """What every framework's layer ``l`` is fed: ``x`` (values or token ids), then the reference's ``l-1``
        rounded to the dtype (a residual Add: its operands side by side; a second branch: the value it starts
        from)."""
        dt = numpy_dtype(self.spec.dtype)
        return layer_inputs(self.spec, self.x, [h.astype(dt) for h in self.reference[:-1]])

    def traces(self) -> list[LayerTrace]:
        """The recorded reference as traces (``z`` is not recorded: ``compare_layers`` reads ``x`` and ``h``)."""
        return [LayerTrace(x if np.issubdtype(x.dtype, np.integer) else x.astype(np.float64), None, h)
                for x, h in zip(self.layer_inputs(), self.reference)]


@dataclass(frozen=True, eq=False)
class GoldenSet:
    folder: Path
    manifest: Mapping[str, Any]
    cases: tuple[GoldenCase, ...]

    @property
    def frameworks(self) -> tuple[str, ...]:
        return tuple(self.manifest["frameworks"])

    @property
    def fingerprint(self) -> Mapping[str, Any]:
        return self.manifest["fingerprint"]

    @property
    def keras_backend(self) -> str:
        """The Keras backend the Keras outputs were recorded on (vectors from before the backend was
        fingerprinted were recorded on TensorFlow, the only backend then)."""
        return self.fingerprint.get("frameworks", {}).get("keras", {}).get("keras_backend", "tensorflow")

    @property
    def facts(self) -> RecordedFacts:
        """The facts the outputs were recorded under (backend, kernel path, probes): recorded outputs are judged
        with the known differences active *there*. A fact older vectors lack counts as holding (they passed the
        error model when recorded), but for the Keras backend, which was TensorFlow before it was recorded."""
        return RecordedFacts({"frameworks.keras.keras_backend": self.keras_backend, **flatten(self.fingerprint)})

    def case(self, case_id: str) -> GoldenCase:
        return next(case for case in self.cases if case.id == case_id)

    def fingerprint_of(self, case: GoldenCase) -> Mapping[str, Any]:
        """The fingerprint ``case``'s outputs were recorded with (the set's, unless it was added later)."""
        return self.fingerprint if case.fingerprint is None else case.fingerprint

    def facts_of(self, case: GoldenCase) -> RecordedFacts:
        """``facts`` for the fingerprint ``case`` was recorded with."""
        if case.fingerprint is None:
            return self.facts
        backend = case.fingerprint.get("frameworks", {}).get("keras", {}).get("keras_backend", "tensorflow")
        return RecordedFacts({"frameworks.keras.keras_backend": backend, **flatten(case.fingerprint)})


# --- record --------------------------------------------------------------------

@dataclass(frozen=True)
class Recording:
    comparisons: tuple[Comparison, ...]
    written: Path | None  # the data file, or None when nothing was written (some case failed)
    size: int


def record(folder: str | Path, cases: Sequence[MatrixCase], adapters: Mapping[str, Adapter], *,
           fingerprint: Mapping[str, Any], pool: LayerPool | None = None, progress: Progress = None,
           replace: bool = False) -> Recording:
    """Run ``cases`` and write them as golden vectors into ``folder`` (only if every case agrees).

    Refuses (``InputError``, nothing written) a folder holding anything ``record`` did not write, and,
    unless ``replace``, vectors there holding a case or a framework the new ones would not.
    """
    folder = Path(folder)
    old_data = check_folder_is_ours(folder)
    if not replace:
        check_replacement(folder, [c.id for c in cases], list(adapters))
    arrays: dict[str, np.ndarray] = {}
    entries, comparisons = _record_cases(cases, 0, adapters, pool or LayerPool(), arrays, progress)
    if not all(c.passed for c in comparisons):
        return Recording(tuple(comparisons), None, 0)
    manifest = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "fingerprint": dict(fingerprint),
        "frameworks": list(adapters),
        "error_model": {"safety": SAFETY, "pair_factor": PAIR_FACTOR},
        "cases": entries,
    }
    data_path, size = _write(folder, manifest, arrays, old_data)
    return Recording(tuple(comparisons), data_path, size)


def extend(folder: str | Path, existing: GoldenSet, cases: Sequence[MatrixCase], adapters: Mapping[str, Adapter],
           *, fingerprint: Mapping[str, Any], pool: LayerPool | None = None,
           progress: Progress = None) -> Recording:
    """Add ``cases`` to the vectors ``existing`` holds, keeping every recorded case's arrays byte for byte and its
    manifest entry as it is (only if every new case agrees). Each new case's entry carries the ``fingerprint``
    it was recorded with: the vectors' machine and this one may differ, and ``verify`` judges and explains each
    case's drift from its own.
    """
    folder = Path(folder)
    old_data = check_folder_is_ours(folder)
    arrays = _read_npz((folder / existing.manifest["data"]["file"]).read_bytes(), folder)
    entries, comparisons = _record_cases(cases, len(existing.cases), adapters, pool or LayerPool(), arrays, progress)
    if not all(c.passed for c in comparisons):
        return Recording(tuple(comparisons), None, 0)
    for entry in entries:
        entry["fingerprint"] = dict(fingerprint)
    manifest = {**existing.manifest, "schema_version": SCHEMA_VERSION,
                "cases": [*existing.manifest["cases"], *entries]}
    data_path, size = _write(folder, manifest, arrays, old_data)
    return Recording(tuple(comparisons), data_path, size)


def added_cases(existing: GoldenSet, cases: Sequence[MatrixCase], frameworks: Sequence[str],
                fingerprint: Mapping[str, Any]) -> list[MatrixCase] | None:
    """The cases recording ``cases`` would add to ``existing`` when it holds the first of them, in order (the same
    ids and seeds), with the same frameworks and versions; None when recording them would change any case it
    holds (``make baseline`` then re-records them all)."""
    recorded = [(e.get("id"), e.get("seed")) for e in existing.manifest["cases"]]
    if [(c.id, c.seed) for c in cases[:len(recorded)]] != recorded or len(cases) <= len(recorded):
        return None
    if list(existing.frameworks) != list(frameworks) or version_changes(existing.fingerprint, fingerprint,
                                                                         ("reference", *frameworks)):
        return None
    return list(cases[len(recorded):])


def _record_cases(cases: Sequence[MatrixCase], first: int, adapters: Mapping[str, Adapter], pool: LayerPool,
                  arrays: dict[str, np.ndarray], progress: Progress) -> tuple[list[dict[str, Any]], list[Comparison]]:
    """Run ``cases`` (keys from ``c{first}`` on), adding their arrays to ``arrays``: their manifest entries, and
    their comparisons."""
    entries, comparisons = [], []
    for index, mcase in enumerate(cases, start=first):
        case = mcase.make()
        traces = layerwise_reference(case.spec, case.weights, case.x)
        inputs = reference_inputs(case.spec, traces)
        outputs, layers_not_run = _record_outputs(case.spec, case.weights, inputs, adapters, pool)
        comparisons.append(compare_layers(case.spec, case.weights, case.x, outputs, case_id=mcase.id,
                                          reference=traces))
        key = f"c{index:03d}"
        arrays[f"{key}.x"] = _stored(case.x, _input_dtype(case.spec))
        for layer, ((W, b), trace) in enumerate(zip(case.weights, traces)):
            if np.size(W):  # a pooling or flatten layer has none
                arrays[f"{key}.W{layer}"] = _stored(W, case.spec.dtype)
            if b is not None:
                arrays[f"{key}.b{layer}"] = _stored(b, case.spec.dtype)
            arrays[f"{key}.reference{layer}"] = trace.h
            for name, outs in outputs.items():
                if outs[layer] is not None:
                    arrays[f"{key}.{name}{layer}"] = _stored(outs[layer], case.spec.dtype)
        entries.append({"key": key, "id": mcase.id, "spec": spec_to_json(case.spec), "seed": mcase.seed,
                        "batch": mcase.inputs.batch, "input_scale": mcase.inputs.input_scale,
                        "weight_scale": mcase.inputs.weight_scale,
                        **({"not_run": layers_not_run} if layers_not_run else {})})
        if progress:
            progress()
    return entries, comparisons


def _write(folder: Path, manifest: dict[str, Any], arrays: Mapping[str, np.ndarray],
           old_data: Sequence[Path]) -> tuple[Path, int]:
    """Write ``arrays`` under a new name, then ``manifest`` naming it (the commit point), then drop ``old_data``."""
    data = _npz_bytes(arrays)
    digest = hashlib.sha256(data).hexdigest()
    data_path = folder / f"vectors-{digest[:16]}.npz"
    manifest = {**{k: v for k, v in manifest.items() if k != "cases"},
                "data": {"file": data_path.name, "sha256": digest, "bytes": len(data)}, "cases": manifest["cases"]}
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(data_path, data)
    write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=1) + "\n")  # the commit point
    for stale in old_data:
        if stale != data_path:
            stale.unlink(missing_ok=True)
    return data_path, len(data)


def _record_outputs(spec: StackSpec | ChainSpec, weights: Sequence[LayerWeights], inputs: Sequence[np.ndarray],
                    adapters: Mapping[str, Adapter], pool: LayerPool
                    ) -> tuple[dict[str, list[np.ndarray | None]], dict[str, dict[str, Any]]]:
    """Each framework's per-layer outputs; a layer whose activation a framework lacks (Keras 2 has no ``celu``)
    is None, and listed ``{framework: {"layers": [...], "reason": ...}}`` for the manifest (``not_run``); so is
    every layer of a chain a framework cannot build."""
    outputs: dict[str, list[np.ndarray | None]] = {}
    not_run: dict[str, dict[str, Any]] = {}
    if isinstance(spec, ChainSpec):
        ran, refused = run_available(spec, weights, inputs, adapters, pool.model_for(spec, weights))
        outputs.update(ran)
        for name, reason in refused.items():
            outputs[name] = [None] * spec.depth
            not_run[name] = {"layers": list(range(spec.depth)), "reason": reason}
        return outputs, not_run
    for name, adapter in adapters.items():
        reason = why_not_run(adapter, spec)
        if reason is None:
            outputs.update(run_layers(weights, inputs, {name: (adapter, pool.stack(adapter, spec))}))
            continue
        partial = _layers_available(spec, weights, inputs, adapter, pool) or [None] * spec.depth
        outputs[name] = partial
        not_run[name] = {"layers": [i for i, out in enumerate(partial) if out is None], "reason": reason}
    return outputs, not_run


def same_recording(existing: GoldenSet, cases: Sequence[MatrixCase], frameworks: Sequence[str],
                   fingerprint: Mapping[str, Any]) -> bool:
    """Whether recording ``cases`` with ``frameworks`` now would record what ``existing`` holds: the same cases
    (ids and seeds), the same frameworks, and the same versions of everything that decides their bits.

    The baseline policy (``make baseline``): vectors are re-recorded on a version change only, never because
    the machine changed; another CPU's kernel path moves bits within the error model, which ``verify``
    reports as drift with its cause.
    """
    recorded = [(e.get("id"), e.get("seed")) for e in existing.manifest["cases"]]
    return (recorded == [(c.id, c.seed) for c in cases] and list(existing.frameworks) == list(frameworks)
            and not version_changes(existing.fingerprint, fingerprint, ("reference", *frameworks)))


def check_folder_is_ours(folder: Path) -> list[Path]:
    """Raise ``InputError`` unless ``folder`` is missing, empty, or holds only what ``record`` writes.

    Returns our data files and leftover temporary files there (to remove once the new vectors are in).
    """
    if not folder.exists():
        return []
    if not folder.is_dir():
        raise InputError("exists and is not a folder; refusing to record golden vectors there", folder)
    ours, foreign = [], []
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink():  # record never writes a link; replacing one would leave its target behind
            foreign.append(f"{entry.name} (a symbolic link)")
        elif entry.name == MANIFEST and entry.is_file():
            _read_manifest(entry)  # raises on a foreign or newer manifest: never overwrite those
        elif entry.name == ACCURACY_FILE and entry.is_file():
            continue  # the accuracy statistics (guard/accuracy.py): kept, replaced on their own
        elif entry.is_file() and (DATA_NAME.fullmatch(entry.name) or entry.name.startswith(TEMP_PREFIX)):
            ours.append(entry)
        else:
            foreign.append(entry.name)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise InputError(f"holds {shown}, which equivalence did not write; refusing to record there "
                         "(use a new folder, or one holding only golden vectors)", folder)
    return ours


def check_replacement(folder: Path, case_ids: Sequence[str], frameworks: Sequence[str]) -> None:
    """Raise ``InputError`` when recording ``case_ids`` with ``frameworks`` into ``folder`` would lose a case
    or a framework's outputs the vectors there hold (``record --replace`` skips this check).

    Run before any case: ``record golden -k X --framework torch`` must not quietly turn a 114-case,
    two-framework set into 4 torch-only cases.
    """
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return
    manifest = _read_manifest(path)
    try:
        check_manifest(manifest, path, data_name=DATA_NAME)
    except InputError as exc:
        raise InputError(f"{exc.problem}; cannot tell what recording over it would lose (pass --replace to "
                         "replace it anyway)", path) from None
    old_ids = [entry["id"] for entry in manifest["cases"]]
    kept = set(case_ids)
    lost_cases = [case_id for case_id in old_ids if case_id not in kept]
    lost_frameworks = [name for name in manifest["frameworks"] if name not in frameworks]
    if not lost_cases and not lost_frameworks:
        return
    lost = []
    if lost_cases:
        lost.append(f"{len(lost_cases)} of its {len(old_ids)} cases (first {lost_cases[0]})")
    if lost_frameworks:
        lost.append(f"its {' and '.join(lost_frameworks)} outputs")
    raise InputError(f"holds vectors that recording {len(case_ids)} cases with {', '.join(frameworks)} would "
                     f"replace, losing {' and '.join(lost)}; pass --replace to replace them, or record into "
                     "another folder", folder)


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An npz archive (what ``np.savez_compressed`` writes) with fixed timestamps, so it is reproducible."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w") as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arrays[key]), allow_pickle=False)
    return buf.getvalue()


def _storage_dtype(dtype: str) -> np.dtype:
    """bfloat16 is stored as its uint16 bit pattern: plain npy readers know no bfloat16."""
    return np.dtype(np.uint16) if dtype == "bfloat16" else _numpy_dtype(dtype)


def _numpy_dtype(dtype: str) -> np.dtype:
    return np.dtype(np.int64) if dtype == IDS else numpy_dtype(dtype)


def _input_dtype(spec: StackSpec | ChainSpec) -> str:
    """What a case's ``x`` holds: token ids (``IDS``) when its first layer takes them, else values of its dtype."""
    return IDS if getattr(spec.kinds[0], "integer_input", False) else spec.dtype


def _stored(a: np.ndarray, dtype: str) -> np.ndarray:
    a = np.asarray(a, dtype=_numpy_dtype(dtype))
    return a.view(np.uint16) if dtype == "bfloat16" else a


# --- load ----------------------------------------------------------------------

def load(folder: str | Path) -> GoldenSet:
    """Read and check a golden-vector folder; every problem is an ``InputError`` naming the file."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError("no such folder", folder)
    if not folder.is_dir():
        raise InputError("is not a folder", folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise InputError(f"no {MANIFEST}: not a golden-vector folder (write one with `equivalence record`)", folder)
    manifest = _read_manifest(manifest_path)
    check_manifest(manifest, manifest_path, data_name=DATA_NAME)  # every field, before any array is read
    data = manifest["data"]
    data_path = folder / data["file"]
    refuse_symlink(data_path, "data file")
    if not data_path.is_file():
        raise InputError(f"missing: {MANIFEST} names it as the data file", data_path)
    raw = data_path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != data["sha256"]:
        raise InputError(f"contents ({len(raw)} bytes) do not match the sha256 in {MANIFEST}: "
                         "the file is truncated or corrupted", data_path)
    arrays = _read_npz(raw, data_path)
    frameworks, entries = manifest["frameworks"], manifest["cases"]
    cases = tuple(_case(i, entry, arrays, frameworks, manifest_path, data_path) for i, entry in enumerate(entries))
    used = {key for case in cases for key in case.meta["keys"]}
    unexpected = sorted(set(arrays) - used)
    if unexpected:
        raise InputError(f"holds arrays no case in {MANIFEST} names: {', '.join(unexpected[:3])}", data_path)
    return GoldenSet(folder, manifest, cases)


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest = read_json(path)  # a regular file, size and nesting capped
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(f"not an equivalence golden-vector manifest (its 'format' is not {FORMAT!r})", path)
    version = manifest.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InputError(f"schema_version must be a positive integer, got {version!r}", path)
    if version > SCHEMA_VERSION:
        raise InputError(f"schema version {version} is newer than this equivalence reads ({SCHEMA_VERSION}); "
                         "upgrade equivalence to use these vectors", path)
    return manifest


def _read_npz(raw: bytes, path: Path) -> dict[str, np.ndarray]:
    if not raw.startswith(_ZIP_MAGIC):
        raise InputError("not an npz archive (no zip signature): corrupted", path)
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise InputError("holds a pickled object (an object array); golden vectors are numeric arrays "
                             "and are never unpickled", path) from None
        raise InputError(f"not a valid npz archive ({exc})", path) from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
        raise InputError(f"not a valid npz archive ({type(exc).__name__}: {exc})", path) from None


def _case(index: int, entry: Any, arrays: Mapping[str, np.ndarray], frameworks: Sequence[str],
          manifest_path: Path, data_path: Path) -> GoldenCase:
    if not isinstance(entry, dict) or not isinstance(entry.get("key"), str) or not isinstance(entry.get("id"), str):
        raise InputError(f"case {index} must have a 'key' and an 'id'", manifest_path)
    key, case_id = entry["key"], entry["id"]
    where = f"case {key} ({case_id})"
    try:
        spec = spec_from_json(entry["spec"])
        batch = entry["batch"]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{where} has a bad spec ({type(exc).__name__}: {exc})", manifest_path) from None
    keys: list[str] = []

    def array(name: str, shape: tuple[int, ...] | None, dtype: str | None) -> np.ndarray:
        full = f"{key}.{name}"
        if full not in arrays:
            raise InputError(f"{where}: array {full!r} is missing", data_path)
        keys.append(full)
        a = arrays[full]
        expected_dtype = np.dtype(np.float64) if dtype is None else _storage_dtype(dtype)
        if a.dtype != expected_dtype:
            raise InputError(f"{where}: array {full!r} has dtype {a.dtype}, expected {expected_dtype}", data_path)
        if shape is not None and a.shape != shape:
            raise InputError(f"{where}: array {full!r} has shape {a.shape}, expected {shape} for spec {spec.id} "
                             f"and batch {batch}", data_path)
        if dtype != "bfloat16":
            return a
        try:
            return a.view(numpy_dtype(dtype))
        except ValueError as exc:  # no ml_dtypes here: the file is fine, this Python cannot read bfloat16
            raise InputError(f"{where} is bfloat16: {exc}", data_path) from None

    def optional(name: str) -> str | None:
        return name if f"{key}.{name}" in arrays else None

    chain = isinstance(spec, ChainSpec)
    weights = []
    for layer in range(spec.depth):
        W = array(f"W{layer}", None, spec.dtype) if not chain or optional(f"W{layer}") else NO_WEIGHTS
        b = array(f"b{layer}", None, spec.dtype) if optional(f"b{layer}") else None
        weights.append(LayerWeights(W, b))
    try:
        if chain:
            check_chain_weights(spec, weights, what=f"{where}: spec does not match its weights")
        else:
            check_spec_weights(spec, weights, what=f"{where}: spec does not match its weights")
    except ValueError as exc:
        raise InputError(str(exc), data_path) from None
    x = array("x", (batch, *spec.input_shape) if chain else (batch, spec.input_width), _input_dtype(spec))
    shapes = chain_shapes(spec, weights) if chain else [(w,) for w in spec.widths]
    reference = tuple(array(f"reference{layer}", (batch, *shape), None) for layer, shape in enumerate(shapes))
    missing = _layers_not_run(entry, frameworks, spec, where, manifest_path)
    outputs = {fw: tuple(None if layer in missing.get(fw, ()) else array(f"{fw}{layer}", (batch, *shape), spec.dtype)
                         for layer, shape in enumerate(shapes))
               for fw in frameworks}
    return GoldenCase(case_id, spec, tuple(weights), x, reference, outputs, meta={**entry, "keys": keys},
                      fingerprint=entry.get("fingerprint"))


def _layers_not_run(entry: Mapping[str, Any], frameworks: Sequence[str], spec: StackSpec | ChainSpec, where: str,
                    manifest_path: Path) -> dict[str, set[int]]:
    """A case's ``not_run``: framework -> the layers it had no activation for when recorded (no arrays)."""
    not_run = entry.get("not_run", {})
    problem = None
    if not isinstance(not_run, dict):
        problem = f"'not_run' must be an object, got {type(not_run).__name__}"
    else:
        for fw, value in not_run.items():
            layers = value.get("layers") if isinstance(value, dict) else None
            if fw not in frameworks:
                problem = f"'not_run' names {fw!r}, which is not among the recorded frameworks"
            elif (not isinstance(layers, list) or not layers
                  or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < spec.depth for i in layers)
                  or not isinstance(value.get("reason"), str)):
                problem = (f"'not_run' of {fw} must be {{\"layers\": [layer numbers below {spec.depth}], "
                           f"\"reason\": text}}")
            if problem:
                break
    if problem:
        raise InputError(f"{where}: {problem}", manifest_path)
    return {fw: set(value["layers"]) for fw, value in not_run.items()}


# --- the vectors' own consistency ---------------------------------------------------

def self_check(golden: GoldenSet) -> tuple[Comparison, ...]:
    """The vectors against themselves: each recorded framework output against the recorded reference, and the
    recorded frameworks against each other, within the error model (numpy only, no framework runs).

    ``record`` writes nothing unless every case agrees, so a failure here means the vectors were changed
    after recording (with the sha256 recomputed), or recorded by a broken ``record``: either way they cannot
    judge the installed frameworks' drift. Recorded outputs are judged with the named differences active where
    they were recorded (backend, kernel path, probes: ``GoldenSet.facts``).
    """
    recorded = [f"{name}{RECORDED}" for name in golden.frameworks]
    return tuple(
        compare_layers(case.spec, case.weights, case.x,
                       {f"{name}{RECORDED}": outs for name, outs in case.outputs.items()},
                       case_id=case.id, reference=case.traces(),
                       facts={label: golden.facts_of(case) for label in recorded})
        for case in golden.cases)


# --- verify --------------------------------------------------------------------

@dataclass(frozen=True)
class LayerDrift:
    """A layer whose outputs changed since recording: how many elements, and the largest change in ulps."""

    source: str  # a framework, or "reference" for the float64 numpy reference
    case_id: str
    layer: int
    changed: int
    size: int
    max_ulps: float
    dtype: str


@dataclass(frozen=True)
class NotRun:
    """A case a framework was not asked to compute: it has no Dense layer in the case's dtype here.

    ``layers``: only these layers were not run (an activation the framework lacks); its other layers were,
    each fed the recorded reference's input as always. Empty: the whole case."""

    framework: str
    case_id: str
    dtype: str
    reason: str
    layers: tuple[int, ...] = ()


@dataclass(frozen=True)
class Moved:
    """A framework output that moved beyond the error model since it was recorded: the pair bound of the two
    (each within the error model of the reference, ``tolerance.Bound.between``), grown only by what the error
    model grants either side (float32-sized named errors, weights stored narrower). A ``definition`` difference
    (another function under the same name) grants nothing here: the user's model computes something else now,
    whichever version each side's definition excuses."""

    framework: str
    case_id: str
    layer: int
    activation: str
    dtype: str
    result: LayerResult
    max_ulps: float
    recorded_version: str
    current_version: str


@dataclass(frozen=True)
class Verification:
    golden: GoldenSet
    comparisons: tuple[Comparison, ...]
    drift: tuple[LayerDrift, ...]
    frameworks: tuple[str, ...]
    not_run: tuple[NotRun, ...] = ()
    moved: tuple[Moved, ...] = ()

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons) and not self.moved

    def changed_cases(self, source: str) -> list[str]:
        return sorted({d.case_id for d in self.drift if d.source == source})


def verify(golden: GoldenSet, adapters: Mapping[str, Adapter], *, pool: LayerPool | None = None,
           progress: Progress = None, versions: Mapping[str, str] | None = None) -> Verification:
    """Every layer of the installed frameworks against the recorded reference (the error model decides),
    the drift of every output against what was recorded (reported), and every output that moved beyond the
    error model since it was recorded (``Moved``: failed, whatever named difference excuses either side).

    A framework is not asked for a case it cannot compute (``Adapter.cannot``: an activation in a dtype it has
    no kernel for, e.g. MXNet's float16 on CPU), and a framework that refuses a case mid-run
    (``FrameworkRefused``) goes on with the next; each such case is listed in ``not_run`` with the reason.
    Where only some layers' activations are missing (Keras 2 has no ``celu``), the other layers still run:
    each is fed the recorded reference's input, so it needs nothing from the layers before it.
    ``versions``: framework -> its version now, for the ``Moved`` lines (default: its adapter's first version).
    """
    pool = pool or LayerPool()
    versions = dict(versions or {})
    for name, adapter in adapters.items():
        versions.setdefault(name, next(iter(adapter.versions().values()), "?"))
    comparisons, drift, not_run, moved = [], [], [], []
    for case in golden.cases:
        dtype = case.spec.dtype
        outputs, refused = run_available(case.spec, case.weights, case.layer_inputs(), adapters,
                                         pool.model_for(case.spec, case.weights))
        for name, reason in refused.items():
            partial = _layers_available(case.spec, case.weights, case.layer_inputs(), adapters[name], pool)
            if partial is None:
                not_run.append(NotRun(name, case.id, dtype, reason))
                continue
            outputs[name] = partial
            missing = tuple(i for i, out in enumerate(partial) if out is None)
            not_run.append(NotRun(name, case.id, dtype, reason, missing))
        # A recorded framework not run now stands in through its recorded outputs (e.g. MXNet's venv has
        # neither torch nor Keras): the cross-framework pairs still hold, by way of the vectors.
        recorded = {f"{name}{RECORDED}": outs for name, outs in case.outputs.items() if name not in adapters}
        comparisons.append(compare_layers(case.spec, case.weights, case.x, {**outputs, **recorded} if outputs else {},
                                          case_id=case.id, reference=case.traces(),
                                          facts={label: golden.facts_of(case) for label in recorded}))
        for name, outs in outputs.items():
            if name in case.outputs:
                drift += _drift(name, case, outs, case.outputs[name], case.spec.dtype)
                moved += outputs_moved(golden, name, case, outs, case.outputs[name], versions[name])
        now = [t.h for t in layerwise_reference(case.spec, case.weights, case.x)]
        drift += _drift("reference", case, now, case.reference, "float64")
        if progress:
            progress()
    return Verification(golden, tuple(comparisons), tuple(drift), tuple(adapters), tuple(not_run), tuple(moved))


def _layers_available(spec: StackSpec | ChainSpec, weights: Sequence[LayerWeights], inputs: Sequence[np.ndarray],
                      adapter: Adapter, pool: LayerPool) -> list[np.ndarray | None] | None:
    """The layers of ``spec`` that ``adapter`` has activations for, each run alone on its own input
    (None for the others); None when it can run none of them, or refuses one, or ``spec`` is a chain (built
    whole or not at all)."""
    if isinstance(spec, ChainSpec):
        return None
    runnable = [adapter.cannot(act, spec.dtype) is None for act in spec.activations]
    if not any(runnable):
        return None
    out: list[np.ndarray | None] = []
    try:
        for (n_in, n_out), act, layer_weights, x, ok in zip(spec.layer_shapes, spec.activations, weights, inputs,
                                                            runnable):
            if not ok:
                out.append(None)
                continue
            single = StackSpec(n_in, (n_out,), (act,), bias=spec.bias, dtype=spec.dtype)
            out.append(run_layers([layer_weights], [x], {adapter.name: (adapter, pool.stack(adapter, single))})
                       [adapter.name][0])
    except FrameworkRefused:
        return None
    return out


def outputs_moved(golden: GoldenSet, name: str, case: GoldenCase, now: Sequence[np.ndarray | None],
                  recorded: Sequence[np.ndarray | None], version: str) -> list[Moved]:
    """The layers where ``name``'s outputs ``now`` moved beyond the error model from those ``recorded``."""
    out = []
    dtype = case.spec.dtype
    recorded_version = _recorded_version(golden, name)
    then = f"{name}{RECORDED}"
    facts = golden.facts_of(case)
    for layer, (a, b, trace, layer_weights, act, kind) in enumerate(zip(now, recorded, case.traces(), case.weights,
                                                                        case.spec.activations, case.spec.kinds)):
        if a is None or b is None:
            continue
        bound = forward_bound(trace, layer_weights, act, dtype, {name: None, then: facts}, kind=kind)
        z = kind.reference(trace.x, layer_weights, act).z  # not recorded
        both = (excused(name, act, dtype, z, np.asarray(a), x=trace.x, layer_kind=kind.name)
                | excused(name, act, dtype, z, np.asarray(b), x=trace.x, facts=facts, layer_kind=kind.name))
        result = compare_arrays(np.asarray(a), np.asarray(b), bound=bound.between(name, then), pair=(name, then),
                                layer=layer, excused=both)
        if not result.passed:
            ulps = ulp_distance(a, b, dtype)
            out.append(Moved(name, case.id, layer, act, dtype, result, float(np.max(ulps)), recorded_version,
                             version))
    return out


def _recorded_version(golden: GoldenSet, name: str) -> str:
    versions = golden.fingerprint.get("frameworks", {}).get(name, {})
    return str(next(iter(versions.values()), "?")) if versions else "?"


def _drift(source: str, case: GoldenCase, now: Sequence[np.ndarray | None], recorded: Sequence[np.ndarray | None],
           dtype: str) -> list[LayerDrift]:
    out = []
    for layer, (a, b) in enumerate(zip(now, recorded)):
        if a is None or b is None:
            continue
        ulps = ulp_distance(a, b, dtype)
        changed = int(np.count_nonzero(ulps))
        if changed:
            out.append(LayerDrift(source, case.id, layer, changed, int(ulps.size), float(ulps.max()), dtype))
    return out


def ulp_distance(a: np.ndarray, b: np.ndarray, dtype: str) -> np.ndarray:
    """Elementwise distance in units in the last place of ``dtype`` (+0 and -0 are 0 apart; NaN vs NaN is 0,
    NaN vs a number is inf)."""
    dt = numpy_dtype(dtype)
    a, b = np.asarray(a, dtype=dt), np.asarray(b, dtype=dt)
    bits = dt.itemsize * 8
    ua, ub = _ordered(a, bits), _ordered(b, bits)
    d = np.where(ua >= ub, ua - ub, ub - ua).astype(np.float64)
    nan_a, nan_b = np.isnan(a.astype(np.float64)), np.isnan(b.astype(np.float64))
    d[nan_a & nan_b] = 0.0
    d[nan_a ^ nan_b] = np.inf
    return d


def _ordered(a: np.ndarray, bits: int) -> np.ndarray:
    """Map float bit patterns to unsigned integers in the order of the floats (sign-magnitude -> offset)."""
    u = a.view(np.dtype(f"uint{bits}")).astype(np.uint64)
    half = np.uint64(1) << np.uint64(bits - 1)
    magnitude = u & (half - np.uint64(1))
    return np.where(u & half, half - magnitude, half + magnitude)
