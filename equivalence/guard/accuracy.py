"""The accuracy statistics recorded beside the golden vectors, and ``verify``'s verdict on a systematic shift.

``record`` writes ``accuracy.json`` into the golden folder (the vectors and their manifest are untouched): the
fingerprint, and per (framework, activation, dtype) the signed-error statistics of the framework's activation
alone on the fixed grid (``equivalence.core.accuracy``). ``verify`` measures them again and judges each
against the recording (``judge``):

* **Same kernel path** (the kernel facts of that framework's fingerprint unchanged: CPU ISA, oneDNN's ISA,
  torch's ``cpu_capability``, TensorFlow's oneDNN switch). The grid and the kernels are the same, so the numbers
  are the same unless the framework's code changed. A shift of the mean by more than the sampling error of the
  two means, ``sqrt(ci95_then^2 + ci95_now^2)``, plus ``FLOOR`` ulps fails; so does a change of the spread (the
  standard deviation) by more than its sampling error (``spread_ci95``) plus ``SPREAD_FLOOR`` ulps, and a change
  of the share of far-off outputs by more than its sampling error (a proportion's) plus ``FAR_FLOOR``. The
  failure names the framework, op and dtype, the shift in ulps, and the direction: **more accurate** when the RMS
  signed error (bias and spread together) fell, **less accurate** when it rose (fewer or more far-off outputs
  first).
* **Another kernel path** (another CPU, or a kernel variable set): kernels change each op's rounding (measured:
  softmax float32 moves by 0.09 ulp between oneDNN/ATen paths), so a shift is reported as "the machine changed",
  never as a framework regression, and does not fail. What holds on every kernel path is the bias limit
  ``core.accuracy.MEAN_LIMIT``, which the suite checks on each path (``make portability``).

The file is JSON (``manifest.read_json``: size and depth capped), never pickled.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from equivalence.core import accuracy
from equivalence.core.accuracy import Z95, ErrorStats
from equivalence.core.activations import ACTIVATIONS
from equivalence.core.atomic import write_text_atomic
from equivalence.core.dtypes import DTYPES
from equivalence.core.errors import InputError
from equivalence.frameworks.base import Adapter, FrameworkRefused
from equivalence.guard.fingerprint import drift_causes
from equivalence.guard.manifest import read_json

FILE = "accuracy.json"
FORMAT = "equivalence-accuracy"
SCHEMA_VERSION = 1
FLOOR = 0.02
"""Ulps a mean may move on the same kernel path beyond the sampling error before ``verify`` fails: above the
rounding noise of a reworked kernel that is not biased, below the -0.25 ulp of one output in four truncated."""
SPREAD_FLOOR = 0.02
"""Ulps the spread (standard deviation) may move on the same kernel path beyond its sampling error: the mean's
floor. A spread that grows without moving the mean (TF 2.20's float64 tanh: sd 0.37 -> 1.26 ulp, mean +0.017) is a
less accurate op that the mean alone lets pass."""
FAR_FLOOR = 1e-3
"""Share of the grid the far-off outputs' share may move by on the same kernel path beyond its sampling error."""


def activations() -> tuple[str, ...]:
    """The activations measured: every fixed name of the table (the parametric ones are the same kernels)."""
    return tuple(dict.keys(ACTIVATIONS))


def measure_all(adapters: Mapping[str, Adapter]) -> tuple[list[ErrorStats], list[str]]:
    """The statistics of every (framework, activation, dtype) the adapters can compute alone, and one line per
    framework that cannot apply an activation alone or refused some."""
    stats, skipped = [], []
    for name, adapter in adapters.items():
        refused = []
        for dtype in DTYPES:
            for act in activations():
                if adapter.cannot(act, dtype) is not None:
                    continue
                try:
                    stats.append(accuracy.measure(name, adapter.activation, act, dtype))
                except NotImplementedError as exc:
                    skipped.append(f"{name}: {exc}")
                    break
                except (FrameworkRefused, KeyError, ValueError) as exc:  # an activation this version lacks
                    refused.append(f"{act} {dtype} ({type(exc).__name__})")
            else:
                continue
            break
        if refused:
            skipped.append(f"{name}: not measured: {', '.join(refused[:4])}"
                           + (f" and {len(refused) - 4} more" if len(refused) > 4 else ""))
    return stats, skipped


# --- the file -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Recorded:
    fingerprint: Mapping[str, Any]
    recorded_at: str
    stats: Mapping[tuple[str, str, str], ErrorStats]


def write(folder: Path, stats: Sequence[ErrorStats], fingerprint: Mapping[str, Any]) -> Path:
    path = Path(folder) / FILE
    data = {"format": FORMAT, "schema_version": SCHEMA_VERSION,
            "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "grid": {"version": accuracy.GRID_VERSION, "core_range": accuracy.CORE_RANGE,
                     "core_points": accuracy.CORE_POINTS, "tail_points": accuracy.TAIL_POINTS,
                     "far_ulps": accuracy.FAR_ULPS, "bin_edges": [str(e) for e in accuracy.BIN_EDGES]},
            "fingerprint": dict(fingerprint), "stats": [s.to_json() for s in stats]}
    write_text_atomic(path, json.dumps(data, indent=0) + "\n")
    return path


def load(folder: Path) -> Recorded | None:
    """The recorded statistics of ``folder``, or None when it has none (vectors recorded before them)."""
    path = Path(folder) / FILE
    if not path.exists():
        return None
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"not an equivalence accuracy file (its 'format' is not {FORMAT!r})", path)
    if data.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"got schema_version {data.get('schema_version')!r}, but should be {SCHEMA_VERSION}", path)
    grid = data.get("grid", {})
    if grid.get("version") != accuracy.GRID_VERSION or grid.get("far_ulps") != accuracy.FAR_ULPS:
        raise InputError(f"got statistics over grid {grid.get('version')!r}, but should be over grid "
                         f"{accuracy.GRID_VERSION}: re-record them (make baseline)", path)
    try:
        stats = [ErrorStats.from_json(s) for s in data["stats"]]
    except (KeyError, TypeError) as exc:
        raise InputError(f"holds a bad statistics entry ({type(exc).__name__}: {exc})", path) from None
    return Recorded(data["fingerprint"], str(data.get("recorded_at", "?")), {s.key: s for s in stats})


# --- the verdict ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shift:
    """One (framework, activation, dtype) whose statistics moved since recording."""

    then: ErrorStats
    now: ErrorStats
    machine: tuple[str, ...] = ()
    """The kernel-path changes of the framework since recording (and a Keras backend change); non-empty: the
    machine changed, not judged."""
    versions: tuple[str, ...] = ()

    @property
    def shift(self) -> float:
        return self.now.mean - self.then.mean

    @property
    def spread_shift(self) -> float:
        return self.now.sd - self.then.sd

    @property
    def far_change(self) -> int:
        return self.now.far - self.then.far

    @property
    def allowed(self) -> float:
        """How far the mean may move on the same kernel path: the sampling error of both means, plus ``FLOOR``."""
        return math.hypot(self.then.ci95, self.now.ci95) + FLOOR

    @property
    def spread_allowed(self) -> float:
        """How far the spread may move on the same kernel path: the sampling error of both spreads (``spread_ci95``),
        plus ``SPREAD_FLOOR``."""
        return math.hypot(spread_ci95(self.then), spread_ci95(self.now)) + SPREAD_FLOOR

    @property
    def mean_beyond(self) -> bool:
        return abs(self.shift) > self.allowed

    @property
    def spread_beyond(self) -> bool:
        return abs(self.spread_shift) > self.spread_allowed

    @property
    def far_allowed(self) -> float:
        """How far the share of far-off outputs may move on the same kernel path: the sampling error of both shares
        (a proportion's, ``sqrt(p (1 - p) / n)``, at 95 %), plus ``FAR_FLOOR``."""
        return Z95 * math.hypot(*(math.sqrt(_share_far(s) * (1 - _share_far(s)) / max(1, s.n))
                                  for s in (self.then, self.now))) + FAR_FLOOR

    @property
    def far_beyond(self) -> bool:
        return abs(_share_far(self.now) - _share_far(self.then)) > self.far_allowed

    @property
    def beyond(self) -> bool:
        """Moved beyond what the same kernel path lets pass (by the mean, the spread or the far-off count)."""
        return self.mean_beyond or self.spread_beyond or self.far_beyond

    @property
    def failed(self) -> bool:
        return not self.machine

    @property
    def direction(self) -> str:
        """Fewer or more outputs beyond ``FAR_ULPS`` first; else the RMS signed error (bias and spread)."""
        if self.far_change:
            return "more accurate" if self.far_change < 0 else "less accurate"
        return "more accurate" if self.now.rms < self.then.rms else "less accurate"

    def describe(self) -> str:
        s = self.now
        mean = (f"mean signed error moved {self.shift:+.4f} ulp ({self.then.mean:+.4f} -> {s.mean:+.4f} "
                f"± {s.ci95:.4f}; allowed {self.allowed:.4f})")
        spread = (f"spread moved {self.spread_shift:+.4f} ulp (sd {self.then.sd:.4f} -> {s.sd:.4f} "
                  f"± {spread_ci95(s):.4f}; allowed {self.spread_allowed:.4f})")
        lead = [mean, spread] if self.mean_beyond or not self.spread_beyond else [spread, mean]
        text = (f"{s.framework} {s.activation} {s.dtype}: {', '.join(lead)}, rms {self.then.rms:.3f} -> {s.rms:.3f}, "
                f"max {self.then.max:.3g} -> {s.max:.3g}")
        if self.far_change:
            text += f", beyond {accuracy.FAR_ULPS:g} ulps {self.then.far} -> {s.far} of {s.n}"
        return f"{text}: {self.direction}"


def _share_far(stats: ErrorStats) -> float:
    return stats.far / stats.n if stats.n else 0.0


def spread_ci95(stats: ErrorStats) -> float:
    """The 95 % half-width of the spread's sampling error, bounded from what is recorded (no fourth moment is): the
    sampling error of ``sd^2`` is ``sqrt(Var((e - mean)^2) / count)`` (``count`` = the outputs within
    ``FAR_ULPS``, those the statistic holds), that of ``sd`` half of it over ``sd``, and ``Var((e - mean)^2)`` is
    at most the fourth central moment, bounded twice: by ``M^2 sd^2`` with ``M = max + |mean|`` (every error lies
    within ``M`` of the mean), and by the histogram with each bin at its edge farthest from zero (capped at ``max``)
    plus ``|mean|``. The smaller bound is taken: the test errs toward letting a small change pass, never toward a
    false alarm from the sampling alone."""
    count = stats.n - stats.far
    if count < 2:
        return 0.0
    bound = (stats.max + abs(stats.mean)) / 2
    if stats.sd > 0 and len(stats.histogram) == len(accuracy.BIN_EDGES) - 1:
        edges = accuracy.BIN_EDGES
        farthest = [min(max(abs(lo), abs(hi)), stats.max) + abs(stats.mean) for lo, hi in zip(edges, edges[1:])]
        fourth = sum(c * f**4 for c, f in zip(stats.histogram, farthest)) / count
        bound = min(bound, math.sqrt(fourth) / (2 * stats.sd))
    return Z95 * bound / math.sqrt(count)


def judge(recorded: Recorded, stats: Sequence[ErrorStats], fingerprint: Mapping[str, Any]) -> list[Shift]:
    """Every statistic whose mean, spread or far-off count moved beyond what the same kernel path lets pass
    (``Shift.beyond``; see the module)."""
    out = []
    causes: dict[str, tuple[list[str], list[str]]] = {}
    for now in stats:
        then = recorded.stats.get(now.key)
        if then is None:
            continue
        if now.framework not in causes:
            causes[now.framework] = drift_causes(now.framework, recorded.fingerprint, fingerprint)
        versions, kernels = causes[now.framework]
        backend = _backend_change(now.framework, recorded.fingerprint, fingerprint)
        shift = Shift(then, now, tuple(kernels) + backend, tuple(versions))
        if shift.beyond:
            out.append(shift)
    return out


def _backend_change(framework: str, recorded: Mapping[str, Any], current: Mapping[str, Any]) -> tuple[str, ...]:
    """Keras on another backend runs another framework's kernels (jax's tanh is not TensorFlow's): like another
    kernel path, reported and not judged against the recording."""
    then, now = (fp.get("frameworks", {}).get(framework, {}).get("keras_backend") for fp in (recorded, current))
    return (f"keras_backend {then} -> {now}",) if then and now and then != now else ()


def report_lines(recorded: Recorded, stats: Sequence[ErrorStats], shifts: Sequence[Shift],
                 skipped: Sequence[str]) -> list[str]:
    """``verify``'s lines: a summary, one FAIL line per shift on the same kernel path, and the machine's."""
    lines = [f"accuracy: {len(stats)} activation statistics (signed error in ulps on a fixed grid, each op alone) "
             f"against those recorded {recorded.recorded_at}; " + (
                 f"{len(shifts)} moved" if shifts else "none moved beyond the sampling error")]
    lines += [f"  {line}" for line in skipped]
    failed = [s for s in shifts if s.failed]
    for s in failed:
        cause = f" (came with {'; '.join(s.versions)}: the framework changed)" if s.versions else ""
        lines.append(f"FAIL accuracy {s.describe()}{cause}")
    for framework in dict.fromkeys(s.now.framework for s in shifts if not s.failed):
        machine = [s for s in shifts if not s.failed and s.now.framework == framework]
        worst = max(machine, key=lambda s: abs(s.shift))
        lines.append(f"  {framework}: the machine changed ({'; '.join(worst.machine)}): {len(machine)} statistics "
                     f"moved, not judged against the recording (another kernel path); largest {worst.describe()}")
    return lines


# --- the plot -------------------------------------------------------------------------------------

def plot_png(stats: Sequence[ErrorStats], *, title: str) -> bytes:
    """The ulp histograms, one panel per framework and dtype: every activation's share of outputs per bin
    (grey), sigmoid and tanh drawn apart, and the far-off share; the panel title gives the largest bias."""
    import io

    import numpy as np
    from matplotlib.figure import Figure  # Agg canvas; no pyplot, no global state

    frameworks = list(dict.fromkeys(s.framework for s in stats))
    dtypes = [d for d in DTYPES if any(s.dtype == d for s in stats)]
    labels = [_bin_label(lo, hi) for lo, hi in zip(accuracy.BIN_EDGES, accuracy.BIN_EDGES[1:])] + ["far"]
    fig = Figure(figsize=(3.2 * max(1, len(dtypes)), 2.8 * max(1, len(frameworks)) + 0.6), dpi=100)
    axes = fig.subplots(max(1, len(frameworks)), max(1, len(dtypes)), squeeze=False, sharey=True)
    x = np.arange(len(labels))
    for row, framework in enumerate(frameworks):
        for col, dtype in enumerate(dtypes):
            ax = axes[row][col]
            panel = [s for s in stats if s.framework == framework and s.dtype == dtype]
            for s in panel:
                share = np.array([*s.histogram, s.far], dtype=float) / max(1, s.n)
                named = {"sigmoid": ("C0", 1.6), "tanh": ("C3", 1.6)}.get(s.activation)
                ax.step(x, np.maximum(share, 1e-7), where="mid", color=named[0] if named else "grey",
                        lw=named[1] if named else 0.6, alpha=1.0 if named else 0.35,
                        label=s.activation if named else None, zorder=3 if named else 1)
            worst = max(panel, key=lambda s: abs(s.mean), default=None)
            ax.set_yscale("log")
            ax.set_ylim(1e-6, 1.5)
            ax.set_title(f"{framework} {dtype}" + (f"\nlargest bias {worst.activation} {worst.mean:+.3f} ulp"
                                                   if worst else ""), fontsize=8)
            ax.set_xticks(x[::2], labels[::2], rotation=60, fontsize=6)
            ax.tick_params(axis="y", labelsize=6)
            ax.grid(True, alpha=0.3)
            if col == 0:
                ax.set_ylabel("share of outputs", fontsize=7)
            if row == col == 0:
                ax.legend(fontsize=6, loc="upper left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _bin_label(lo: float, hi: float) -> str:
    if abs(lo) < 1e-6 and abs(hi) < 1e-6:
        return "exact"
    if abs(hi) < 1e-6:
        hi = 0.0
    if abs(lo) < 1e-6:
        lo = 0.0
    return f"[{lo:g},{hi:g})"
