"""The numerical changelog of framework releases: replay the golden vectors under each, then diff consecutive ones.

``make history`` runs the nox ``history`` sessions (``noxfile.py``), one venv per historical (TensorFlow, Keras)
pair. Each session verifies ``golden/`` there and keeps what every framework computed for every layer
(``replay``: ``history/<label>.npz`` and ``.json``, plain arrays, no pickle). Then ``changelog`` reads the
replays in release order and prints, for each consecutive pair, which activations and dtypes moved, in how many
cases and by how many ulps, and their mean and max error in ulps against the float64 reference before and after;
a pair where nothing moved is stated bit-identical. Its last column gives the accuracy of each activation alone
(``accuracy_changes``): each statistic that changed on the grid, its size in ulps and its direction. The changelog
is Markdown (docs/versions-and-keras2.md's table).

    python -m equivalence.guard.history replay golden --label tf2.21.0-keras3.15.1 --out history
    python -m equivalence.guard.history changelog history tf2.20.0-keras3.11.3 tf2.21.0-keras3.15.1
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from equivalence.core.accuracy import FAR_ULPS, ErrorStats, reference_digest
from equivalence.core.dtypes import EPSILON, numpy_dtype
from equivalence.core.errors import InputError

if TYPE_CHECKING:
    from equivalence.guard.accuracy import Shift


def replay(folder: Path, label: str, out: Path, frameworks: Sequence[str] | None = None) -> int:
    """Verify ``folder`` with the installed frameworks, and keep every layer they computed under ``label``."""
    from equivalence.core.check import LayerPool
    from equivalence.frameworks.registry import get_adapter
    from equivalence.guard import accuracy, golden
    from equivalence.guard.fingerprint import fingerprint, summary

    vectors = golden.load(folder)
    adapters = {name: get_adapter(name) for name in (frameworks or vectors.frameworks)}
    captured: dict[str, np.ndarray] = {}
    pool = LayerPool()
    result = golden.verify(vectors, adapters, pool=pool)
    not_run = [{"framework": r.framework, "case": r.case_id, "layers": list(r.layers), "reason": r.reason}
               for r in result.not_run]
    skipped = {(r.framework, r.case_id): set(r.layers) or None for r in result.not_run}
    for case in vectors.cases:
        inputs = case.layer_inputs()
        for name, adapter in adapters.items():
            gap = skipped.get((name, case.id), set())
            if gap is None:  # the whole case was not run
                continue
            for layer, ((n_in, n_out), act, weights, x) in enumerate(zip(case.spec.layer_shapes,
                                                                         case.spec.activations, case.weights,
                                                                         inputs)):
                if layer in gap:
                    continue
                single = case.spec.__class__(n_in, (n_out,), (act,), bias=case.spec.bias, dtype=case.spec.dtype)
                model = pool.stack(adapter, single)
                adapter.set_weights(model, [weights])
                captured[key(case.id, name, layer)] = golden._stored(adapter.apply_layer(model, 0, x),
                                                                       case.spec.dtype)
    fp = fingerprint(tuple(adapters))
    stats, _ = accuracy.measure_all(adapters)
    meta = {"label": label, "replayed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cpu": fp.get("cpu_model", "?"), "summary": summary(fp),
            "frameworks": {k: fp["frameworks"][k] for k in adapters},
            "passed": result.passed, "failures": sum(not c.passed for c in result.comparisons),
            "moved": len(result.moved), "not_run": not_run, "cases": len(vectors.cases),
            "accuracy": [s.to_json() for s in stats],
            "accuracy_reference": {f"{a} {d}": reference_digest(a, d) for a, d in {s.key[1:] for s in stats}}}
    write_replay(out, label, captured, meta)
    print(f"{label}: {summary(fp)}\n  verify {folder}: {'passed' if result.passed else 'FAILED'} "
          f"({meta['failures']} cases disagree, {meta['moved']} layers moved beyond the error model); "
          f"{len(captured)} layer outputs kept; not run: "
          + ("; ".join(sorted({f"{r['framework']}: {r['reason']}" for r in not_run})) or "none"))
    return 0 if result.passed else 1


def key(case_id: str, framework: str, layer: int) -> str:
    """A layer output's name in a replay."""
    return f"{case_id}|{framework}|{layer}"


def write_replay(out: Path, label: str, outputs: Mapping[str, np.ndarray], meta: Mapping) -> None:
    """``out/<label>.npz`` (every layer output, bfloat16 as its uint16 bits) and ``out/<label>.json``."""
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / f"{label}.npz", **outputs)
    (out / f"{label}.json").write_text(json.dumps(meta, indent=1) + "\n")


@dataclass(frozen=True)
class Replay:
    label: str
    meta: Mapping
    outputs: Mapping[str, np.ndarray]


def load_replay(folder: Path, label: str) -> Replay:
    meta_path, data_path = folder / f"{label}.json", folder / f"{label}.npz"
    if not meta_path.is_file() or not data_path.is_file():
        raise InputError(f"no replay {label!r} (run its nox history session first)", folder)
    with np.load(data_path, allow_pickle=False) as npz:
        outputs = {key: npz[key] for key in npz.files}
    return Replay(label, json.loads(meta_path.read_text()), outputs)


def _ulps(a: np.ndarray, b: np.ndarray, dtype: str) -> np.ndarray:
    from equivalence.guard.golden import ulp_distance

    return ulp_distance(a, b, dtype)


def changelog(folder: Path, labels: Sequence[str], golden_folder: Path, framework: str = "keras") -> str:
    """Markdown: per consecutive pair of replays, what moved in ``framework``'s outputs and which way."""
    from equivalence.guard import golden

    vectors = golden.load(golden_folder)
    layers = {}  # key -> (activation, dtype, reference rounded to the dtype)
    for case in vectors.cases:
        dt = numpy_dtype(case.spec.dtype)
        for layer, (act, ref) in enumerate(zip(case.spec.activations, case.reference)):
            with np.errstate(over="ignore", invalid="ignore"):
                layers[key(case.id, framework, layer)] = (act, case.spec.dtype, ref.astype(dt), case.id)
    replays = [load_replay(folder, label) for label in labels]
    dates = sorted(r.meta.get("replayed_at") or datetime.fromtimestamp((folder / f"{r.label}.json").stat().st_mtime,
                                                                       timezone.utc).isoformat(timespec="seconds")
                   for r in replays)
    cpus = sorted({r.meta.get("cpu") or r.meta["summary"].split(" (")[0] for r in replays})
    lines = [f"{framework} outputs of {golden_folder} ({len(vectors.cases)} cases) replayed under {len(replays)} "
             f"releases with torch {_torch(replays[-1])}, {dates[0][:10]} to {dates[-1][:10]}, on {', '.join(cpus)}; "
             "a move is the largest distance in ulps between the two releases' bits; errors are in units of "
             "eps * max(1, |reference|).", "",
             "| from | to | what moved (activation, dtype: cases, largest move) | error vs float64 reference, "
             "ulps: mean / max, before -> after | accuracy of each activation alone: signed error in ulps, mean / "
             f"max of the outputs within {FAR_ULPS:g} ulps, before -> after (the shift of the mean, the RMS, the "
             f"outputs beyond {FAR_ULPS:g} ulps if their count changed, the direction) |", "|---|---|---|---|---|"]
    for before, after in zip(replays, replays[1:]):
        moved: dict[tuple[str, str], dict] = {}
        for name, (act, dtype, _ref, case_id) in layers.items():
            a, b = before.outputs.get(name), after.outputs.get(name)
            if a is None or b is None:
                continue
            a, b = _view(a, dtype), _view(b, dtype)
            d = _ulps(a, b, dtype)
            if not np.any(d):
                continue
            entry = moved.setdefault((act, dtype), {"cases": set(), "max": 0.0, "before": [], "after": []})
            entry["cases"].add(case_id)
            entry["max"] = max(entry["max"], float(np.max(d)))
        for (act, dtype), entry in moved.items():  # error against the reference over every layer of that kind
            for name, (a2, d2, ref, _) in layers.items():
                if (a2, d2) != (act, dtype) or name not in before.outputs or name not in after.outputs:
                    continue
                for side, replay_ in (("before", before), ("after", after)):
                    entry[side].append(_error(_view(replay_.outputs[name], dtype), ref, dtype))
        if not moved:
            what, errors = "bit-identical: every layer of every case", ""
        else:
            what = "; ".join(f"{act} {dtype}: {len(e['cases'])} case{'s' * (len(e['cases']) != 1)}, "
                             f"up to {e['max']:.0f} ulps" for (act, dtype), e in sorted(moved.items()))
            errors = "; ".join(f"{act} {dtype}: {_stats(e['before'])} -> {_stats(e['after'])}"
                               for (act, dtype), e in sorted(moved.items()))
        gaps = _gaps(after, before, {case.id: case.spec.activations for case in vectors.cases})
        lines.append(f"| {_describe(before)} | {_describe(after)} | {what}{gaps} | {errors} | "
                     f"{accuracy_changes(before, after, framework)} |")
    return "\n".join(lines)


def accuracy_changes(before: Replay, after: Replay, framework: str) -> str:
    """Each (activation, dtype) of ``framework`` whose error statistics on the grid changed between two replays:
    the mean and max in ulps before and after, the shift of the mean, the RMS, and the direction
    (``guard.accuracy.Shift.direction``). The grid and a replay's outputs are deterministic, so any change is the
    framework's, unless the float64 reference changed with numpy (``accuracy_reference`` digests): then it is
    marked and not judged. A change within what ``verify`` lets pass on one kernel path (``Shift.beyond``: mean,
    spread and far-off count within their limits) is marked so. Replays from before the statistics: "not measured"."""
    from equivalence.guard.accuracy import Shift

    if "accuracy" not in before.meta or "accuracy" not in after.meta:
        return "not measured"
    then = {s.key: s for s in map(ErrorStats.from_json, before.meta["accuracy"]) if s.framework == framework}
    now = [s for s in map(ErrorStats.from_json, after.meta["accuracy"]) if s.framework == framework]
    cells = []
    for s in sorted(now, key=lambda s: (s.activation, s.dtype)):
        old = then.get(s.key)
        if old is None or not _changed(old, s):
            continue
        shift = Shift(old, s)
        text = (f"{s.activation} {s.dtype}: {old.mean:+.3f} / {old.max:.3g} -> {s.mean:+.3f} / {s.max:.3g} "
                f"({shift.shift:+.3f} ulp, rms {old.rms:.2f} -> {s.rms:.2f}{_far(shift)}, ")
        moved = _reference_moved(before, after, f"{s.activation} {s.dtype}")
        if moved:
            text += f"not judged: {moved})"
        else:
            text += f"{shift.direction}{'' if shift.beyond else ', within verify limit'})"
        cells.append(text)
    return "; ".join(cells) or "unchanged"


SUMMATION_NOISE = 1e-9
"""Ulps a mean or spread may differ by when only numpy's summation order changed (its release, its SIMD path)."""


def _changed(then: ErrorStats, now: ErrorStats) -> bool:
    """The outputs' errors changed: the histogram, the far count or the max (exact for the same errors), or the
    mean or spread beyond ``SUMMATION_NOISE``."""
    return (then.histogram != now.histogram or then.far != now.far or then.max != now.max
            or abs(then.mean - now.mean) > SUMMATION_NOISE or abs(then.sd - now.sd) > SUMMATION_NOISE)


def _reference_moved(before: Replay, after: Replay, name: str) -> str:
    """Why the two replays' statistics of ``name`` are not comparable, or "" when they are."""
    digests = [r.meta.get("accuracy_reference", {}).get(name) for r in (before, after)]
    numpy_versions = [_numpy(r) for r in (before, after)]
    if None in digests:  # replays from before the digests: comparable only under the same numpy
        if numpy_versions[0] != numpy_versions[1]:
            return f"numpy {numpy_versions[0]} -> {numpy_versions[1]}, reference not recorded"
        return ""
    return f"the reference moved with numpy {numpy_versions[0]} -> {numpy_versions[1]}" \
        if digests[0] != digests[1] else ""


def _numpy(replay_: Replay) -> str:
    summary = replay_.meta.get("summary", "")
    return summary.split("numpy ", 1)[1].split(" ", 1)[0] if "numpy " in summary else "?"


def _far(shift: Shift) -> str:
    """The outputs beyond ``FAR_ULPS`` when their count changed: the mean and max leave them out, so a change
    by millions of ulps (Keras 3.3.3's float64 gelu) shows here, not there."""
    if not shift.far_change:
        return ""
    return f", beyond {FAR_ULPS:g} ulps {shift.then.far} -> {shift.now.far} of {shift.now.n}"


def _error(out: np.ndarray, reference: np.ndarray, dtype: str) -> np.ndarray:
    """``|out - reference| / (eps * max(1, |reference|))``: the error in ulps of the error model's own unit
    (absolute, floored at 1, as ``equivalence.core.tolerance``), over the finite elements. Plain ulps of each value
    would count a saturated sigmoid's 1e-30 tail, or a subnormal TF flushes to zero, in millions."""
    out64, ref64 = out.astype(np.float64), reference.astype(np.float64)
    finite = np.isfinite(out64) & np.isfinite(ref64)
    return np.abs(out64 - ref64)[finite] / (EPSILON[dtype] * np.maximum(1.0, np.abs(ref64[finite])))


def _view(a: np.ndarray, dtype: str) -> np.ndarray:
    return a.view(numpy_dtype(dtype)) if dtype == "bfloat16" else a


def _stats(errors: Sequence[np.ndarray]) -> str:
    flat = np.concatenate(errors) if errors else np.zeros(0)
    return f"{flat.mean():.2f} / {flat.max():.2f}" if flat.size else "n/a"


def _torch(replay_: Replay) -> str:
    return replay_.meta["frameworks"].get("torch", {}).get("torch", "?")


def _describe(replay_: Replay) -> str:
    keras = replay_.meta["frameworks"].get("keras", {})
    failed = "" if replay_.meta.get("passed", True) else (
        f" (verify FAILED: {replay_.meta.get('failures', '?')} cases disagree, {replay_.meta.get('moved', '?')} "
        "layers moved beyond the error model)")
    version = keras.get("keras", "?")
    if keras.get("keras_package") == "tf-keras":  # the Keras 2 variant (TF_USE_LEGACY_KERAS=1)
        version = f"2 (tf-keras {version})"
    return f"TF {keras.get('tensorflow', '?')}, Keras {version}{failed}"


def _missing(replay_: Replay, vectors_cases: Mapping[str, Sequence[str]]) -> set[str]:
    """Activations a replay's frameworks had none of (their layers were not run)."""
    return {vectors_cases[n["case"]][layer] for n in replay_.meta["not_run"] for layer in n["layers"]}


def _gaps(after: Replay, before: Replay, activations: Mapping[str, Sequence[str]]) -> str:
    was, now = _missing(before, activations), _missing(after, activations)
    parts = [f"{name}: not run before, runs after" for name in sorted(was - now)]
    parts += [f"{name}: runs before, not run after" for name in sorted(now - was)]
    return f" ({'; '.join(parts)})" if parts else ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m equivalence.guard.history", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("replay", help="verify golden vectors here and keep every layer's output")
    rep.add_argument("folder", type=Path)
    rep.add_argument("--label", required=True)
    rep.add_argument("--out", type=Path, default=Path("history"))
    log = sub.add_parser("changelog", help="diff consecutive replays (labels in release order)")
    log.add_argument("folder", type=Path)
    log.add_argument("labels", nargs="+")
    log.add_argument("--golden", type=Path, default=Path("golden"))
    args = parser.parse_args(argv)
    try:
        if args.command == "replay":
            return replay(args.folder, args.label, args.out)
        print(changelog(args.folder, args.labels, args.golden))
        failed = [label for label in args.labels if not load_replay(args.folder, label).meta.get("passed", True)]
        if failed:
            print(f"FAIL: verify failed under {', '.join(failed)} (marked in the table)")
        return 1 if failed else 0
    except InputError as exc:
        print(f"history {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
