"""Reading a golden-vector manifest safely, and checking it whole before anything runs.

``verify`` used to find a bad field (a missing ``fingerprint``, a ``batch`` that is
a string) only when it reached it, after running the frameworks for many seconds,
as a ``KeyError``. Here every field ``record`` writes is checked at load time, and
every problem is one ``InputError`` naming the manifest, the field and what is wrong.

The JSON itself is read with limits: a manifest is a regular file (not a symbolic
link), at most ``MAX_BYTES``, without duplicate keys, nested at most ``MAX_DEPTH``
deep (a manifest nested 200,000 levels deep must not end in a ``RecursionError``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from equivalence.core.chain import spec_from_json
from equivalence.core.errors import InputError
from equivalence.frameworks.registry import names

MAX_BYTES = 64 * 2**20
"""A manifest is ~0.4 kB a case; 64 MB is room for 150,000 cases, and refuses reading a runaway file."""

MAX_DEPTH = 32
"""Nesting ``record`` writes: 4 levels (the fingerprint's framework versions)."""

CASE_KEY = re.compile(r"c[0-9]{3,}")
SHA256 = re.compile(r"[0-9a-f]{64}")


def refuse_symlink(path: Path, what: str) -> None:
    """Golden-vector files are regular files that ``record`` wrote; a link could point anywhere."""
    if path.is_symlink():
        raise InputError(f"is a symbolic link (to {path.readlink()}); the {what} must be a regular file "
                         "written by `equivalence record`", path)


def read_json(path: Path) -> Any:
    """The JSON in ``path``, within ``MAX_BYTES`` and ``MAX_DEPTH``, refusing duplicate keys."""
    refuse_symlink(path, "manifest")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise InputError(f"is {size / 2**20:.0f} MB; a manifest is at most {MAX_BYTES // 2**20} MB", path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path) from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): "
                         "truncated or corrupted", path) from None
    except RecursionError:
        raise InputError(f"nested deeper than {MAX_DEPTH} levels; not a manifest `record` wrote", path) from None
    except _DuplicateKey as exc:
        raise InputError(f"holds the key {exc.args[0]!r} twice in one object", path) from None
    depth = nesting_depth(data)
    if depth > MAX_DEPTH:
        raise InputError(f"nested {depth} levels deep, more than {MAX_DEPTH}; not a manifest `record` wrote", path)
    return data


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def nesting_depth(data: Any) -> int:
    """Levels of lists and objects (a scalar is 0), without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


# --- the fields --------------------------------------------------------------------

def _type_name(value: Any) -> str:
    return "null" if value is None else {dict: "object", list: "list", str: "string", bool: "boolean"}.get(
        type(value), type(value).__name__)


def _got(value: Any) -> str:
    shown = repr(value)
    return f"{shown[:60]}..." if len(shown) > 60 else shown


def _field(mapping: Mapping[str, Any], name: str, where: str, path: Path) -> Any:
    if name not in mapping:
        raise InputError(f"{where}'{name}' is missing", path)
    return mapping[name]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check(manifest: Mapping[str, Any], path: Path, *, data_name: re.Pattern[str]) -> None:
    """Raise ``InputError`` (naming ``path`` and the field) unless every field ``record`` writes is well-formed.

    ``format`` and ``schema_version`` are checked by the caller first (they decide whether this is our file).
    """
    recorded_at = _field(manifest, "recorded_at", "", path)
    if not isinstance(recorded_at, str):
        raise InputError(f"'recorded_at' must be a timestamp string, got {_type_name(recorded_at)} "
                         f"{_got(recorded_at)}", path)
    _check_fingerprint(_field(manifest, "fingerprint", "", path), path)
    frameworks = _field(manifest, "frameworks", "", path)
    if not isinstance(frameworks, list) or not frameworks or not all(isinstance(f, str) for f in frameworks):
        raise InputError(f"'frameworks' must be a non-empty list of framework names, got {_got(frameworks)}", path)
    unknown = [f for f in frameworks if f not in names()]
    if unknown:
        raise InputError(f"'frameworks' names {unknown[0]!r}, which is not one of {', '.join(names())}", path)
    if len(set(frameworks)) != len(frameworks):
        twice = next(f for f in frameworks if frameworks.count(f) > 1)
        raise InputError(f"'frameworks' lists {twice!r} twice", path)
    error_model = manifest.get("error_model", {})
    if not isinstance(error_model, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in error_model.values()):
        raise InputError(f"'error_model' must be an object of numbers, got {_got(error_model)}", path)
    data = _field(manifest, "data", "", path)
    if not isinstance(data, dict) or not isinstance(data.get("file"), str) or not data_name.fullmatch(data["file"]):
        raise InputError("'data' must name a vectors-<16 hex digits>.npz file and its sha256", path)
    if not isinstance(data.get("sha256"), str) or not SHA256.fullmatch(data["sha256"]):
        raise InputError(f"'data.sha256' must be 64 lowercase hex digits, got {_got(data.get('sha256'))}", path)
    if "bytes" in data and (not _is_int(data["bytes"]) or data["bytes"] < 0):
        raise InputError(f"'data.bytes' must be a byte count, got {_got(data['bytes'])}", path)
    _check_cases(_field(manifest, "cases", "", path), path)


def _check_fingerprint(fp: Any, path: Path) -> None:
    if not isinstance(fp, dict):
        raise InputError(f"'fingerprint' must be an object (versions, CPU, settings), got {_type_name(fp)} "
                         f"{_got(fp)}", path)
    frameworks = fp.get("frameworks", {})
    if not isinstance(frameworks, dict):
        raise InputError(f"'fingerprint.frameworks' must be an object, got {_type_name(frameworks)}", path)
    for name, versions in frameworks.items():
        if not isinstance(versions, dict) or not all(isinstance(v, (str, int, float, bool)) or v is None
                                                     for v in versions.values()):
            raise InputError(f"'fingerprint.frameworks.{name}' must be an object of versions and settings, "
                             f"got {_got(versions)}", path)
    backend = frameworks.get("keras", {}).get("keras_backend", "tensorflow")
    if not isinstance(backend, str):
        raise InputError(f"'fingerprint.frameworks.keras.keras_backend' must be a string, got {_got(backend)}", path)


def _check_cases(entries: Any, path: Path) -> None:
    if not isinstance(entries, list) or not entries:
        raise InputError(f"'cases' must be a non-empty list, got {_type_name(entries)}", path)
    keys: dict[str, int] = {}
    ids: dict[str, int] = {}
    for index, entry in enumerate(entries):
        where = f"cases[{index}]"
        if not isinstance(entry, dict):
            raise InputError(f"{where} must be an object, got {_type_name(entry)} {_got(entry)}", path)
        key, case_id = _field(entry, "key", f"{where}: ", path), _field(entry, "id", f"{where}: ", path)
        if not isinstance(key, str) or not CASE_KEY.fullmatch(key):
            raise InputError(f"{where}: 'key' must be 'c' and three or more digits (c000), got {_got(key)}", path)
        if not isinstance(case_id, str) or not case_id:
            raise InputError(f"{where}: 'id' must be a non-empty string, got {_got(case_id)}", path)
        if key in keys:
            raise InputError(f"{where} repeats key {key!r} of cases[{keys[key]}]: duplicate case entries", path)
        if case_id in ids:
            raise InputError(f"{where} repeats id {case_id!r} of cases[{ids[case_id]}]: duplicate case entries",
                             path)
        keys[key], ids[case_id] = index, index
        where = f"{where} ({case_id})"
        try:
            spec_from_json(_field(entry, "spec", f"{where}: ", path))
        except ValueError as exc:
            raise InputError(f"{where}: bad 'spec': {exc}", path) from None
        batch = _field(entry, "batch", f"{where}: ", path)
        if not _is_int(batch) or batch < 1:
            raise InputError(f"{where}: 'batch' must be a positive integer, got {_type_name(batch)} {_got(batch)}",
                             path)
        seed = entry.get("seed", 0)
        if not _is_int(seed) or seed < 0:
            raise InputError(f"{where}: 'seed' must be a non-negative integer, got {_got(seed)}", path)
        scale = entry.get("input_scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise InputError(f"{where}: 'input_scale' must be a positive number, got {_got(scale)}", path)
        if "fingerprint" in entry:  # a case added to the vectors later (``golden.extend``)
            _check_fingerprint(entry["fingerprint"], path)
        if not isinstance(entry.get("weight_scale", ""), str):
            raise InputError(f"{where}: 'weight_scale' must be a string, got {_got(entry['weight_scale'])}", path)
