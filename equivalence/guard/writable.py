"""Checks that what a command will write can be written, made before any work.

A read-only output folder used to be reported by a temporary file's name, after
the whole run; a ``GITHUB_STEP_SUMMARY`` pointing at a folder made ``report`` exit 2
after it had written its files. Every check here raises ``InputError`` naming the
path (or the variable) and writes nothing that stays: writability is probed by
creating and removing a temporary file, because ``os.access`` says yes to root on
a read-only mount.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from equivalence.core.atomic import TEMP_PREFIX
from equivalence.core.errors import InputError


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(".")  # pragma: no cover - a relative path's parents end at "."


def _probe(folder: Path) -> str | None:
    """Why a new file cannot be created in ``folder``, or None."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=".probe")
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(name)
    return None


def check_folder(folder: Path, *, option: str) -> None:
    """``folder`` exists as a folder a file can be created in, or can be created (its nearest existing
    ancestor is such a folder). ``option`` names where the path came from (``--out``, ``DIR``)."""
    if str(folder) == "":
        raise InputError(f"{option} is empty: name a folder")
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        what = "exists and is not a folder" if existing == folder else f"cannot be created: {existing} is not a folder"
        raise InputError(f"{what} ({option} must name a folder)", folder)
    problem = _probe(existing)
    if problem:
        where = "" if existing == folder else f" (its nearest existing parent, {existing})"
        raise InputError(f"cannot create files there{where}: {problem}", folder)


def check_files(paths: Iterable[Path]) -> None:
    """None of ``paths`` is a folder or a link to one (an atomic replace of such a name fails after the work)."""
    for path in paths:
        if path.is_dir():
            raise InputError("is a folder; it would be replaced by a file (move it away first)", path)


def check_step_summary(value: str) -> Path:
    """The ``GITHUB_STEP_SUMMARY`` file ``report`` appends to: a regular file, or one its folder can hold."""
    path = Path(value)
    name = f"GITHUB_STEP_SUMMARY={value}"
    if path.is_dir():
        raise InputError(f"{name} is a folder; it must name a file to append the Markdown summary to")
    if path.exists():
        if not path.is_file():
            raise InputError(f"{name} is not a regular file")
        try:
            with open(path, "ab"):  # opened for appending, nothing written
                pass
        except OSError as exc:
            raise InputError(f"{name} cannot be appended to: {exc.strerror or exc}") from None
        return path
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"{name}: its folder {parent} does not exist")
    problem = _probe(parent)
    if problem:
        raise InputError(f"{name} cannot be created in {parent}: {problem}")
    return path
