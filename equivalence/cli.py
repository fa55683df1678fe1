"""The command line: ``equivalence report | record DIR | verify DIR | env``.

Exit codes: 0 everything agrees, 1 something disagrees, 2 usage or input error
(one line on stderr naming the file and the problem; nothing written).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NoReturn

from equivalence.core.errors import InputError
from equivalence.frameworks.base import Adapter
from equivalence.frameworks.registry import FrameworkUnavailable, defaults, get_adapter, names

EXIT_OK, EXIT_DISAGREE, EXIT_USAGE = 0, 1, 2
PROG = "equivalence"
MOVED_SHOWN = 12
"""Moved layers listed per source without ``--verbose``."""

_pool = None


def _layer_pool():
    """One pool per process: ``main`` may run many times in one process (tests), builds are the slow part."""
    global _pool
    if _pool is None:
        from equivalence.core.check import LayerPool

        _pool = LayerPool()
    return _pool


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (and the hint to ``--help``) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _path(value: str) -> Path:
    """A folder argument; ``""`` would silently mean the current folder."""
    if not value.strip():
        raise argparse.ArgumentTypeError("empty path: name a folder")
    return Path(value)


FRAMEWORK_OUTPUT_HELP = ("also print the frameworks' own log lines (TensorFlow's C++ start-up lines, absl, torch's "
                         "logged tracebacks), held back by default")


def build_parser() -> argparse.ArgumentParser:
    from equivalence import __version__

    parser = _Parser(prog=PROG, description="Prove PyTorch and Keras compute the same dense networks, layer by "
                     "layer, and notice the day a framework upgrade changes that.",
                     epilog="exit codes: 0 all agree, 1 something disagrees, 2 usage or input error")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser, required=True)

    def frameworks_option(p: argparse.ArgumentParser, default: str) -> None:
        p.add_argument("--framework", action="append", choices=names(), dest="frameworks",
                       help=f"run only this framework (repeat for several; default: {default})")

    report = sub.add_parser("report", help="run the fixed, seeded case matrix and write JSON, Markdown and a PNG",
                            description="Run the fixed, seeded report matrix (equivalence/guard/matrix.py) "
                            "through every framework and build style; print a summary per group of cases "
                            "(build and dtype) "
                            "and pair, and every failing case; write report.json, report.md (also appended to "
                            "$GITHUB_STEP_SUMMARY when set) and report.png. The table follows the terminal's "
                            "width (COLUMNS when set; 100 when not a terminal).")
    report.add_argument("--out", type=_path, default=Path("report"), metavar="DIR",
                        help="folder for report.json, report.md and report.png, created when missing "
                        "(default: %(default)s)")
    report.add_argument("-k", dest="patterns", action="append", metavar="TEXT",
                        help="only cases whose id contains TEXT (repeat for several)")
    shown = report.add_mutually_exclusive_group()
    shown.add_argument("-v", "--verbose", action="store_true",
                       help="print the full table, one row per case and pair, instead of the grouped summary; "
                       "and the frameworks' own log lines")
    shown.add_argument("--quiet", action="store_true",
                       help="print no table: the failing cases and the summary lines only")
    frameworks_option(report, f"{' and '.join(defaults())}")

    record = sub.add_parser("record", help="record golden vectors into DIR",
                            description="Run the golden case set and record, per case, the spec, weights, inputs, "
                            "every layer's float64 reference and each framework's outputs, with the fingerprint. "
                            "Writes nothing unless every case agrees. Refuses a folder holding other files, and "
                            "vectors there that the new ones would lose cases or frameworks of (unless --replace).")
    record.add_argument("folder", type=_path, metavar="DIR",
                        help="folder for manifest.json and the vectors file: new, empty, or holding golden vectors "
                        "(replaced only when every case agrees)")
    record.add_argument("-k", dest="patterns", action="append", metavar="TEXT",
                        help="only cases whose id contains TEXT (repeat for several)")
    record.add_argument("--replace", action="store_true",
                        help="replace vectors in DIR even when the new set has fewer cases or frameworks")
    record.add_argument("--force", action="store_true",
                        help="re-record even when DIR holds the same cases recorded with the same versions (by "
                        "default those are kept when they agree here within the error model: another machine's "
                        "kernel path is drift, not a reason to rewrite golden vectors)")
    record.add_argument("-v", "--verbose", action="store_true", help=FRAMEWORK_OUTPUT_HELP)
    frameworks_option(record, f"{' and '.join(defaults())}")

    verify = sub.add_parser("verify", help="check the installed frameworks against golden vectors in DIR",
                            description="Check every layer of the installed frameworks against the recorded float64 "
                            "reference (exit 1 on any disagreement), check that the vectors agree with "
                            "themselves (recorded outputs against the recorded reference; exit 1 when they do not), "
                            "and report drift against the recorded framework outputs: cases changed bit for bit, "
                            "largest change in ulps, layers moved.")
    verify.add_argument("folder", type=_path, metavar="DIR",
                        help="folder holding manifest.json and its vectors file (the shipped set is golden)")
    verify.add_argument("-v", "--verbose", action="store_true",
                        help="list every moved layer and every inconsistent recorded layer; and the frameworks' "
                        "own log lines")
    frameworks_option(verify, "the frameworks the vectors were recorded with")

    _add_compare(sub)

    env = sub.add_parser("env", help="print the environment fingerprint",
                         description="Print the fingerprint stored in every report and recording: versions, "
                         "Keras backend, oneDNN, thread counts, CPU.")
    env.add_argument("--json", action="store_true", help="print it as JSON")
    env.add_argument("-v", "--verbose", action="store_true", help=FRAMEWORK_OUTPUT_HELP)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse already printed
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    command = {"report": cmd_report, "record": cmd_record, "verify": cmd_verify, "env": cmd_env,
               "compare": cmd_compare}[args.command]
    notes: list[str] = []
    try:
        _check_keras_backend_name()
        with _framework_output(shown=getattr(args, "verbose", False), notes=notes):
            code = command(args)
        for note in notes:
            print(f"{PROG} {args.command}: {note}", file=sys.stderr)
        return code
    except InputError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a refused read or write (permissions, disk full); atomic writes leave no half file
        print(f"{PROG} {args.command}: error: {_where(exc)}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130


# --- helpers -------------------------------------------------------------------

_user_stderr: Any = None
"""The user's stderr while ``_framework_output`` holds fd 2 (progress bars go there); None otherwise."""
_swallowed: list[Any] = []
"""Streams that stood in for ``sys.stderr``: kept open, as a framework's log handler created meanwhile holds one."""


@contextmanager
def _framework_output(*, shown: bool, notes: list[str]) -> Iterator[None]:
    """Keep the frameworks' own output off the user's screen unless ``shown`` (``--verbose``).

    TensorFlow's C++ start-up lines (oneDNN, ``cpu_feature_guard``, absl's "before InitializeLog") are written
    to fd 2 before ``TF_CPP_MIN_LOG_LEVEL`` is read, and torch logs a traceback before raising its own error:
    so fd 2 and ``sys.stderr`` point into a temporary file for the command, and our own one-line messages are
    printed after it. A framework warning (``UserWarning``) becomes one line of ours in ``notes``. Should the
    command crash, what was held back is written out before the traceback.
    """
    global _user_stderr
    if shown:
        yield
        return
    import io
    import tempfile
    import warnings

    with tempfile.TemporaryFile() as held:
        user_fd = os.dup(2)
        saved_stderr = sys.stderr
        standin = io.StringIO()
        _swallowed.append(standin)
        with suppress(OSError, ValueError):  # a closed or detached stderr has nothing to flush
            sys.stderr.flush()
        os.dup2(held.fileno(), 2)
        sys.stderr = standin
        _user_stderr = open(user_fd, "w", closefd=False, encoding="utf-8", errors="replace")  # noqa: SIM115
        crashed = True
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("default")
                yield
            crashed = False
        except (InputError, OSError, KeyboardInterrupt):
            crashed = False
            raise
        finally:
            _user_stderr.flush()
            _user_stderr = None
            sys.stderr = saved_stderr
            os.dup2(user_fd, 2)
            os.close(user_fd)
            if crashed:
                held.seek(0)
                sys.stderr.write(held.read().decode("utf-8", "replace") + standin.getvalue())
    notes += dict.fromkeys(_warning_line(w) for w in caught if _matters(w))


def _matters(warning: Any) -> bool:
    """A ``UserWarning`` (a model saved by another version, a fallback a framework took); not the deprecation
    notices (``DeprecationWarning``, ``FutureWarning``), which are about the frameworks' code, not this check."""
    return issubclass(warning.category, UserWarning)


def _warning_line(warning: Any) -> str:
    source = Path(str(warning.filename)).parts
    framework = next((part for part in source if part in ("torch", "keras", "tensorflow", "tf_keras", "jax")),
                     "python")
    return f"warning from {framework}: {' '.join(str(warning.message).split())[:300]}"


def _where(exc: OSError) -> str:
    """The file an ``OSError`` is about, as the user knows it: the final name (``filename2`` of a rename),
    or the folder of one of our temporary files, never the temporary file's own name."""
    from equivalence.core.atomic import TEMP_PREFIX

    name = exc.filename2 or exc.filename
    if not name:
        return ""
    path = Path(name)
    return f"{path.parent if path.name.startswith(TEMP_PREFIX) else path}: "


def _check_keras_backend_name() -> None:
    """An unknown ``KERAS_BACKEND`` is a typo in the environment: refused by every command, even one that
    leaves Keras out (a missing backend package only matters where Keras runs: ``_adapters`` says so)."""
    from equivalence.frameworks.builtin import KERAS_BACKENDS, keras_backend_problem

    if os.environ.get("KERAS_BACKEND", "tensorflow") not in KERAS_BACKENDS:
        raise InputError(str(keras_backend_problem()))


def _adapters(wanted: Sequence[str] | None) -> dict[str, Adapter]:
    """The adapters of ``wanted`` (the registry's defaults when None); a missing framework is bad input."""
    out = {}
    for name in dict.fromkeys(wanted or defaults()):
        try:
            out[name] = get_adapter(name)
        except FrameworkUnavailable as exc:
            others = [f for f in defaults() if f != name]
            raise InputError(f"{exc}; or pass --framework {others[0]} to leave {name} out" if others else str(exc)) \
                from None
    return out


NOT_A_TERMINAL_WIDTH = 100
"""Columns of the output when it is not a terminal (CI logs, files) and COLUMNS is not set."""


def terminal_width(stream: Any) -> int | None:
    """``COLUMNS`` when it is a positive integer, else the terminal's own width (None: rich asks it), else 100."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    return None if stream.isatty() else NOT_A_TERMINAL_WIDTH


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = (_user_stderr or sys.stderr) if stderr else sys.stdout
    return Console(file=stream, width=terminal_width(stream), soft_wrap=False)


@contextmanager
def _progress(label: str, total: int) -> Iterator[Any]:
    """A rich progress bar on stderr in a terminal; silent otherwise (CI logs stay readable), and where rich
    is not installed (``verify`` runs with numpy alone, e.g. in make mxnet's venv)."""
    try:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:
        yield lambda: None
        return

    console = _console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)


def _selected(cases: list, patterns: Sequence[str] | None, what: str) -> list:
    from equivalence.guard.matrix import select

    chosen = select(cases, patterns)
    if not chosen:
        shown = " ".join(f"-k {p!r}" for p in patterns or ())
        raise InputError(f"{shown} matches none of the {len(cases)} {what} case ids")
    return chosen


def _step_summary() -> Path | None:
    """``$GITHUB_STEP_SUMMARY``, checked before any work (unset or empty: none)."""
    from equivalence.guard.writable import check_step_summary

    value = os.environ.get("GITHUB_STEP_SUMMARY", "")
    return check_step_summary(value) if value else None


# --- commands ------------------------------------------------------------------

def cmd_report(args: argparse.Namespace) -> int:
    from equivalence.guard import report as rep
    from equivalence.guard.fingerprint import fingerprint, summary
    from equivalence.guard.matrix import report_cases
    from equivalence.guard.writable import check_files, check_folder

    check_folder(args.out, option="--out")  # everything that will be written, checked before the run
    check_files(rep.output_paths(args.out).values())
    step_summary = _step_summary()
    cases = _selected(report_cases(), args.patterns, "report")
    adapters = _adapters(args.frameworks)
    fp = fingerprint(tuple(adapters))
    start = time.perf_counter()
    results = []
    with _progress("report", len(cases)) as advance:
        for mcase in cases:
            results.append((mcase, rep.run_case(mcase, adapters, _layer_pool())))
            advance()
    data = rep.to_json(results, fingerprint=fp, elapsed=time.perf_counter() - start)
    markdown = rep.to_markdown(data)
    png = rep.plot_png(data, title=f"equivalence report: {rep.short_headline(data)}\n{summary(fp)}")
    accuracy_png = _accuracy_png(adapters, summary(fp))

    from equivalence.core.atomic import write_bytes_atomic, write_text_atomic

    args.out.mkdir(parents=True, exist_ok=True)
    paths = rep.output_paths(args.out)
    write_text_atomic(paths["json"], rep.json_text(data))
    write_text_atomic(paths["md"], markdown)
    write_bytes_atomic(paths["png"], png)
    write_bytes_atomic(paths["accuracy"], accuracy_png)
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as f:
            f.write(markdown)

    console = _console()
    if not args.quiet:
        console.print(rep.terminal_view(data, width=console.width, verbose=args.verbose))
    for line in rep.failing_rows(data):  # every failing case and pair, whatever the view
        console.print(line, style="red", highlight=False, markup=False)
    for line in rep.not_run_lines(data):
        console.print(line, highlight=False, markup=False)
    active = fp.get("known_differences", {}).get("active", [])
    console.print("known differences active here: " + (", ".join(active) or "none"), highlight=False, markup=False)
    console.print(f"{summary(fp)}\n{rep.headline(data)}", highlight=False)
    console.print("wrote " + ", ".join(str(p) for p in paths.values())
                  + (f", appended to {step_summary}" if step_summary else ""), highlight=False)
    return EXIT_OK if data["summary"]["passed"] else EXIT_DISAGREE


def _accuracy_png(adapters: dict[str, Adapter], machine: str) -> bytes:
    """The ulp histograms of every activation alone, per framework and dtype (``equivalence.guard.accuracy``)."""
    from equivalence.guard import accuracy

    stats, _ = accuracy.measure_all(adapters)
    return accuracy.plot_png(stats, title=f"signed error in ulps of each activation alone on a fixed grid "
                                          f"(negative: toward zero)\n{machine}")


def cmd_record(args: argparse.Namespace) -> int:
    from equivalence.guard import golden
    from equivalence.guard.fingerprint import fingerprint, summary
    from equivalence.guard.matrix import golden_cases
    from equivalence.guard.writable import check_folder

    golden.check_folder_is_ours(args.folder)  # refuse before spending any time
    cases = _selected(golden_cases(), args.patterns, "golden")
    if not args.replace:
        golden.check_replacement(args.folder, [c.id for c in cases], list(dict.fromkeys(args.frameworks or
                                                                                         defaults())))
    check_folder(args.folder, option="DIR")
    adapters = _adapters(args.frameworks)
    fp = fingerprint(tuple(adapters))
    if not args.force and (args.folder / golden.MANIFEST).is_file():
        verdict = EXIT_OK if _kept(args.folder, cases, adapters, fp) else _extended(args.folder, cases, adapters, fp)
        if verdict == EXIT_OK and not (args.folder / golden.ACCURACY_FILE).is_file():  # from before the statistics
            _record_accuracy(args.folder, adapters, fp)
        if verdict is not None:
            return verdict
    with _progress("record", len(cases)) as advance:
        rec = golden.record(args.folder, cases, adapters, fingerprint=fp, pool=_layer_pool(), progress=advance,
                            replace=args.replace)
    failures = [c for c in rec.comparisons if not c.passed]
    for comparison in failures:
        print(comparison.message())
    if rec.written is None:
        print(f"{len(failures)} of {len(cases)} cases disagree: recorded nothing (the vectors in "
              f"{args.folder} are unchanged)")
        return EXIT_DISAGREE
    layers = sum(c.depth for c in (m.spec for m in cases))
    worst = max(c.worst_ratio for c in rec.comparisons)
    print(f"recorded {len(cases)} cases ({layers} layers, frameworks {', '.join(adapters)}) into {rec.written} "
          f"({rec.size / 1e6:.2f} MB), worst error/bound {worst:.3g}\nwith {summary(fp)}")
    reasons: dict[tuple[str, str], int] = {}
    for entry in golden.load(args.folder).manifest["cases"]:
        for framework, gap in entry.get("not_run", {}).items():
            reasons[framework, gap["reason"]] = reasons.get((framework, gap["reason"]), 0) + 1
    for (framework, reason), count in reasons.items():
        print(f"{framework}: layers not recorded in {_cases(count)}: {reason} (its other layers are recorded)")
    _record_accuracy(args.folder, adapters, fp)
    return EXIT_OK


def _record_accuracy(folder: Path, adapters: dict[str, Adapter], fp: dict[str, Any]) -> None:
    """The activations' error statistics beside the vectors (``equivalence.guard.accuracy``)."""
    from equivalence.guard import accuracy

    stats, skipped = accuracy.measure_all(adapters)
    path = accuracy.write(folder, stats, fp)
    print(f"accuracy: wrote {len(stats)} activation error statistics to {path}"
          + "".join(f"\n  {line}" for line in skipped))


def _kept(folder: Path, cases: list, adapters: dict[str, Adapter], fp: dict[str, Any]) -> bool:
    """The baseline policy: keep vectors of the same cases and versions that agree here within the error model."""
    from equivalence.guard import golden
    from equivalence.guard.fingerprint import summary

    try:
        existing = golden.load(folder)
    except InputError:  # unreadable vectors are not kept (record --replace records over them)
        return False
    if not golden.same_recording(existing, cases, tuple(adapters), fp):
        return False
    if not all(c.passed for c in golden.self_check(existing)):  # vectors that contradict themselves are not kept
        return False
    with _progress("check the recorded vectors", len(existing.cases)) as advance:
        result = golden.verify(existing, adapters, pool=_layer_pool(), progress=advance)
    if not result.passed:
        return False
    moved = {source: len(result.changed_cases(source)) for source in (*adapters, "reference")}
    print(f"kept {folder}: it holds the same {len(cases)} cases recorded with the same versions, and every case "
          "agrees here within the error model; cases that moved within it on this machine: "
          + ", ".join(f"{source} {count}" for source, count in moved.items())
          + f".\nrecorded with {summary(existing.fingerprint)}\nnow: {summary(fp)}\n"
          "Golden vectors are re-recorded on a version change only (--force re-records anyway).")
    return True


def _extended(folder: Path, cases: list, adapters: dict[str, Adapter], fp: dict[str, Any]) -> int | None:
    """The baseline policy for a grown matrix: when recording ``cases`` only adds cases to the vectors in
    ``folder`` (the same frameworks and versions; the recorded ones self-consistent), the recorded cases are kept
    byte for byte and the new ones recorded here, each with this machine's fingerprint. None when that does not
    apply (everything is recorded anew), else the exit code (``EXIT_DISAGREE``: a new case disagrees, nothing
    written)."""
    from equivalence.guard import golden
    from equivalence.guard.fingerprint import summary

    try:
        existing = golden.load(folder)
    except InputError:
        return None
    added = golden.added_cases(existing, cases, tuple(adapters), fp)
    if added is None or not all(c.passed for c in golden.self_check(existing)):
        return None
    with _progress("record the new cases", len(added)) as advance:
        rec = golden.extend(folder, existing, added, adapters, fingerprint=fp, pool=_layer_pool(), progress=advance)
    for comparison in rec.comparisons:
        if not comparison.passed:
            print(comparison.message())
    if rec.written is None:
        print(f"{sum(not c.passed for c in rec.comparisons)} of {len(added)} new cases disagree: recorded nothing "
              f"(the vectors in {folder} are unchanged)")
        return EXIT_DISAGREE
    worst = max(c.worst_ratio for c in rec.comparisons)
    print(f"kept the {len(existing.cases)} recorded cases of {folder} byte for byte and added {len(added)} new cases "
          f"({sum(m.spec.depth for m in added)} layers, frameworks {', '.join(adapters)}) into {rec.written} "
          f"({rec.size / 1e6:.2f} MB), worst error/bound {worst:.3g}\nthe new cases with {summary(fp)}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from equivalence.guard import accuracy, golden
    from equivalence.guard.fingerprint import changes, fingerprint, summary

    vectors = golden.load(args.folder)
    recorded_accuracy = accuracy.load(args.folder)  # bad input refused before any work
    wanted = args.frameworks or vectors.frameworks
    adapters = _adapters(wanted)  # a framework that cannot run is refused before any work
    consistency = golden.self_check(vectors)
    fp = fingerprint(tuple(adapters))
    with _progress("verify", len(vectors.cases)) as advance:
        result = golden.verify(vectors, adapters, pool=_layer_pool(), progress=advance)

    n = len(vectors.cases)
    print(f"verified {n} cases in {args.folder} (recorded {vectors.manifest.get('recorded_at', '?')} with "
          f"{summary(vectors.fingerprint)})\nnow: {summary(fp)}")
    print(_kinds_line(vectors.cases))
    _print_not_run(result.not_run, n)
    moved_env = changes(vectors.fingerprint, fp)
    if moved_env:
        print("changed since recording: " + "; ".join(moved_env))
    comparisons = result.comparisons
    layer_count = sum(len(c.results) for c in comparisons)
    failures = [c for c in comparisons if not c.passed]
    worst = max((r for c in comparisons for r in c.results), key=lambda r: r.ratio)
    worst_case = next(c.case_id for c in comparisons if worst in c.results)
    print(f"error model: {layer_count - sum(len(c.failures) for c in failures)} of {layer_count} layer comparisons "
          f"agree; worst error/bound {worst.ratio:.3g} ({worst_case}, {worst.pair_name}, layer {worst.layer})")
    inconsistent = _print_consistency(consistency, verbose=args.verbose)
    _print_known_differences(vectors.fingerprint, fp)
    _print_drift(result, n, verbose=args.verbose, now=fp)
    accuracy_failed = _verify_accuracy(args.folder, recorded_accuracy, adapters, fp)
    if inconsistent:
        print(f"FAIL: vectors inconsistent in {len(inconsistent)} of {n} cases: recorded outputs beyond the error "
              "model from the recorded reference (changed after recording, or recorded by a broken framework), so "
              "their drift means nothing; re-record them with frameworks you trust")
    _print_moved(result.moved)
    if failures:
        for comparison in failures:
            named: set[tuple[str, str]] = set()
            for r in sorted(comparison.failures, key=lambda r: r.layer):  # each pair's first diverging layer
                if r.pair not in named:
                    named.add(r.pair)
                    print(f"FAIL {comparison.case_id}: {r.describe()}")
        print(f"FAIL: {len(failures)} of {n} cases disagree beyond the error model")
        return EXIT_DISAGREE
    if result.moved:
        moved_cases = {m.case_id for m in result.moved}
        print(f"FAIL: {len(moved_cases)} of {n} cases moved beyond the error model since recording "
              f"(every other case agrees)")
        return EXIT_DISAGREE
    if inconsistent:
        return EXIT_DISAGREE
    if accuracy_failed:
        print(f"FAIL: {accuracy_failed} activation statistics shifted since recording on the same kernel path "
              "(every case agrees within the error model)")
        return EXIT_DISAGREE
    print(f"OK: all {n} cases agree within the error model" + (" (drift above is within it)" if result.drift else ""))
    return EXIT_OK


def _verify_accuracy(folder: Path, recorded: Any, adapters: dict[str, Adapter], fp: dict[str, Any]) -> int:
    """Print the verdict on the activations' error statistics; the number of failed ones (0 without a recording)."""
    from equivalence.guard import accuracy

    if recorded is None:
        print(f"accuracy: no {accuracy.FILE} in {folder} (recorded before the statistics): not judged")
        return 0
    measured = {fw for fw, _, _ in recorded.stats}
    stats, skipped = accuracy.measure_all({name: a for name, a in adapters.items() if name in measured})
    shifts = accuracy.judge(recorded, stats, fp)
    print("\n".join(accuracy.report_lines(recorded, stats, shifts, skipped)))
    return sum(s.failed for s in shifts)


def _kinds_line(cases: Sequence[Any]) -> str:
    """``cases by kind: dense 114 stacks, 20 chains; layers: dense 574, conv 20, ...``."""
    layers: dict[str, int] = {}
    for case in cases:
        for kind in case.spec.kinds:
            layers[kind.name] = layers.get(kind.name, 0) + 1
    chains = sum(1 for case in cases if any(kind.name != "dense" for kind in case.spec.kinds))
    return (f"cases: {len(cases) - chains} dense stacks, {chains} chains of other kinds; layers by kind: "
            + ", ".join(f"{name} {count}" for name, count in layers.items()))


def _cases(count: int) -> str:
    return f"{count} case" + ("" if count == 1 else "s")


def _print_moved(moved: Sequence[Any]) -> None:
    """Outputs that moved beyond the error model since recording, one line per framework, activation and dtype:
    how many cases, how far (absolute, against the pair bound, in ulps), and the versions either side."""
    groups: dict[tuple[str, str, str], list[Any]] = {}
    for m in moved:
        groups.setdefault((m.framework, m.activation, m.dtype), []).append(m)
    for (framework, activation, dtype), ms in groups.items():
        worst = max(ms, key=lambda m: m.result.ratio)
        print(f"FAIL {framework} {activation} {dtype} moved beyond the error model since recording: "
              f"{framework} {worst.recorded_version} when recorded, {worst.current_version} now; "
              f"{_cases(len({m.case_id for m in ms}))}, up to {worst.result.max_abs:.3g} "
              f"({worst.result.ratio:.3g} x the bound {worst.result.bound:.3g}, {worst.max_ulps:.3g} ulps of {dtype}; "
              f"{worst.case_id}, layer {worst.layer})")


def _print_consistency(consistency: Sequence[Any], *, verbose: bool) -> list[Any]:
    """The vectors' own consistency, apart from the installed frameworks; returns the inconsistent cases."""
    layers = sum(len(c.results) for c in consistency)
    inconsistent = [c for c in consistency if not c.passed]
    if not inconsistent:
        print(f"vectors consistent: {layers} of {layers} recorded layer comparisons within the error model")
        return []
    lines = []
    for comparison in inconsistent:
        named: set[tuple[str, str]] = set()
        for r in sorted(comparison.failures, key=lambda r: r.layer):  # each pair's first inconsistent layer
            if r.pair not in named:
                named.add(r.pair)
                ratio = "shape mismatch" if r.shape != r.expected_shape else f"{r.ratio:.3g}"
                lines.append(f"vectors inconsistent: {comparison.case_id}, {r.pair_name}, layer {r.layer}, "
                             f"ratio {ratio}")
    shown = lines if verbose else lines[:MOVED_SHOWN]
    print("\n".join(shown))
    if len(shown) < len(lines):
        print(f"vectors inconsistent: ... and {len(lines) - len(shown)} more (--verbose lists all)")
    return inconsistent


def _print_not_run(not_run: Any, n: int) -> None:
    """Cases a framework cannot compute (an activation in a dtype it has no kernel for) or refused mid-run, one
    line per framework with each reason and its count; a framework that can run none is bad input."""
    for framework in dict.fromkeys(r.framework for r in not_run):
        partly = [r for r in not_run if r.framework == framework and r.layers]
        if partly:
            reasons = {}
            for r in partly:
                reasons[r.reason] = reasons.get(r.reason, 0) + 1
            print(f"{framework}: {len(partly)} of {n} cases run in part (their other layers checked), layers not "
                  "run: " + "; ".join(f"{reason} ({count} cases)" for reason, count in reasons.items()))
        skipped = [r for r in not_run if r.framework == framework and not r.layers]
        if not skipped:
            continue
        if len(skipped) == n:
            raise InputError(f"--framework {framework}: it can compute none of the {n} cases (dtypes "
                             f"{', '.join(sorted({r.dtype for r in skipped}))}), so there is nothing to verify")
        reasons: dict[str, int] = {}
        for r in skipped:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
        print(f"{framework}: {len(skipped)} of {n} cases not run: "
              + "; ".join(f"{reason} ({count} cases)" for reason, count in reasons.items()))


def _print_known_differences(recorded: Any, now: Any) -> None:
    """The named differences active now, and those active when the vectors were recorded, where they differ."""
    active_now = now.get("known_differences", {}).get("active", [])
    print("known differences active now: " + (", ".join(active_now) or "none"))
    scopes = [f"{name} = {scope}" for name, scope in now.get("probes", {}).items() if scope not in ("none", "no")]
    if scopes:
        print("  probed scopes here: " + "; ".join(scopes))
    then = recorded.get("known_differences", {}).get("active")
    if then is not None and set(then) != set(active_now):  # the order is the registry's, which may change
        print("  when recorded: " + (", ".join(then) or "none") + " (recorded outputs are judged with those)")


def _drift_cause(source: str, recorded: Any, now: Any) -> str:
    """Why ``source``'s bits may have moved: a version change (the framework changed), a kernel-path change
    (the machine changed), both, or nothing recorded (``equivalence.guard.fingerprint.drift_causes``)."""
    from equivalence.guard.fingerprint import drift_causes

    versions, kernels = drift_causes(source, recorded, now)
    if versions and kernels:
        return f"came with a version change ({'; '.join(versions)}) and a kernel-path change ({'; '.join(kernels)})"
    if versions:
        return f"came with a version change ({'; '.join(versions)}): the framework changed"
    if kernels:
        return f"came with a kernel-path change ({'; '.join(kernels)}), no version change: the machine changed"
    return "no version or kernel-path change recorded: look at thread counts and the environment above"


def _print_drift(result: Any, n: int, *, verbose: bool, now: Any) -> None:
    print("drift against the recorded outputs (reported; failed only beyond the error model, below):")
    for source in (*result.frameworks, "reference"):
        moved = [d for d in result.drift if d.source == source]
        label = "reference (numpy float64)" if source == "reference" else source
        if source != "reference" and source not in result.golden.frameworks:
            print(f"  {label}: not recorded in these vectors; compared with the reference and with the recorded "
                  f"{', '.join(result.golden.frameworks)} outputs instead")
            continue
        if not moved:
            print(f"  {label}: 0 of {n} cases changed, bit for bit identical")
            continue
        worst = max(moved, key=lambda d: d.max_ulps)
        print(f"  {label}: {len(result.changed_cases(source))} of {n} cases changed; {len(moved)} layers moved; "
              f"largest change {worst.max_ulps:.0f} ulps of {worst.dtype} ({worst.case_id}, layer {worst.layer}); "
              + _drift_cause(source, result.golden.fingerprint_of(result.golden.case(worst.case_id)), now))
        shown = moved if verbose else moved[:MOVED_SHOWN]
        for d in shown:
            print(f"    {d.case_id} layer {d.layer}: {d.changed} of {d.size} elements, up to {d.max_ulps:.0f} ulps")
        if len(shown) < len(moved):
            print(f"    ... and {len(moved) - len(shown)} more layers (--verbose lists all)")


def cmd_env(args: argparse.Namespace) -> int:
    from equivalence.guard.fingerprint import fingerprint, flatten, summary

    fp = fingerprint()
    if args.json:
        print(json.dumps(fp, indent=1))
        return EXIT_OK
    print(summary(fp))
    flat = flatten(fp)
    width = max(map(len, flat))
    for key, value in flat.items():
        print(f"  {key:<{width}}  {value}")
    return EXIT_OK


# --- compare: a user's own torch.export program against its .keras port --------------------------

def _add_compare(sub: Any) -> None:
    compare = sub.add_parser("compare", help="check a torch model (.pt2, or a .pt state_dict) against its Keras port "
                             "(.keras); or either against an ONNX graph (.onnx) or a LiteRT model (.tflite)",
                             description="Walk both models in execution order and compare structure, weights (with "
                             "the transposition) and every layer's values against the float64 reference of each "
                             "model's own weights and against each other; print the parameter counts of both and what "
                             "was matched with what. An ONNX graph (.onnx) or a LiteRT model (.tflite), either side, "
                             "is read as a graph: MatMul/Gemm or FULLY_CONNECTED, a bias Add and the activation's ops, "
                             "each unit run on ONNX Runtime or the LiteRT interpreter. "
                             "Inputs from --input, else drawn.")
    compare.add_argument("torch_file", type=Path, metavar="TORCH_FILE",
                         help="torch.export.save output (.pt2), or a state_dict (.pt) with --torch-model; or an ONNX "
                         "graph (.onnx), a LiteRT model (.tflite), a Keras 2 model (.h5) or a SavedModel folder")
    compare.add_argument("keras_file", type=Path, metavar="KERAS_FILE",
                         help="model.save output (.keras); or an ONNX graph (.onnx), a LiteRT model (.tflite), a "
                         "Keras 2 model (.h5) or a SavedModel folder")
    compare.add_argument("--torch-model", metavar="PACKAGE.MODULE:FACTORY",
                         help="a function returning the nn.Module whose state_dict TORCH_FILE holds (torch.save("
                         "model.state_dict(), path)); the file is read with torch.load(weights_only=True), no "
                         "pickled objects. The module is imported from the current folder or the installed packages")
    compare.add_argument("--input", type=Path, metavar="X.npy", help="inputs (batch, n_in); default: drawn")
    compare.add_argument("--examples", type=int, default=100, metavar="N",
                         help="input batches drawn when --input is not given (default: %(default)s)")
    compare.add_argument("--weight-ulps", type=int, default=0, metavar="N",
                         help="accept weights (kernel and bias) that differ across the pair by at most N units in "
                         "the last place of their dtype (default: %(default)s, exact: a port copies the weights, so "
                         "any difference is a mistake in the copy; 1 accepts weights rounded once on the way, e.g. "
                         "converted through another dtype or format)")
    compare.add_argument("--table", type=Path, metavar="PATH", help="write the per-layer table (Markdown) there")
    compare.add_argument("-v", "--verbose", action="store_true", help=FRAMEWORK_OUTPUT_HELP)


KERAS_SUFFIXES = (".keras",)
TORCH_SUFFIXES = (".pt2", ".pt", ".pth")
GRAPH_SUFFIXES = {".onnx": "onnx", ".tflite": "tflite", ".h5": "keras2"}  # own.GRAPH_SUFFIXES, not imported


def _a_file(path: Path, what: str) -> None:
    if path.is_dir():
        raise InputError(f"is a folder, but should be {what}", path)
    if not path.is_file():
        raise InputError("no such file", path)


def _check_compare_arguments(args: argparse.Namespace) -> None:
    """Everything about the arguments that can be refused before a framework is loaded."""
    for path, what in ((args.torch_file, "a torch file (TORCH_FILE)"), (args.keras_file, "a .keras file (KERAS_FILE)")):
        if path.is_dir() and not _saved_model(path):
            raise InputError("a folder, but not a SavedModel folder: no saved_model.pb in it (a model file should be "
                             ".pt2, .keras, .h5, .onnx or .tflite)", path)
        if not _saved_model(path):
            _a_file(path, what)
        if path.suffix == ".npy":
            raise InputError("a .npy array where a model was expected: inputs go in --input X.npy "
                             "(equivalence compare MODEL_A MODEL_B --input X.npy)", path)
    if args.input is not None:
        _a_file(args.input, "a .npy file (--input)")
    if _graphs(args):
        for path in (args.torch_file, args.keras_file):
            if path.suffix not in (*GRAPH_SUFFIXES, *KERAS_SUFFIXES, *TORCH_SUFFIXES) and not _saved_model(path):
                raise InputError(f"got a {path.suffix or 'suffix-less'} file, but should be a model file: .pt2 (or a "
                                 ".pt state_dict with --torch-model), .keras, .h5 (Keras 2), .onnx, .tflite or a "
                                 "SavedModel folder", path)
    elif args.torch_file.suffix in KERAS_SUFFIXES and args.keras_file.suffix not in KERAS_SUFFIXES:
        raise InputError("a Keras file where TORCH_FILE was expected: arguments swapped? The torch file comes "
                         "first: equivalence compare TORCH_FILE KERAS_FILE", args.torch_file)
    if args.examples < 1:
        raise InputError(f"--examples {args.examples}: must be at least 1")
    if args.weight_ulps < 0:
        raise InputError(f"--weight-ulps {args.weight_ulps}: must be 0 or more")
    if args.table is not None:
        if args.table.is_dir():
            raise InputError(f"--table {args.table}: is a folder, but should be a file")
        if not args.table.parent.is_dir():
            raise InputError(f"--table {args.table}: no folder {args.table.parent} to write it in")


def _model_factory(spec: str) -> tuple[str, Any]:
    """``package.module:factory`` imported (the current folder first, as ``python -m`` would)."""
    import importlib

    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise InputError(f"--torch-model {spec}: should be package.module:factory")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"--torch-model {spec}: cannot import {module_name} ({exc})") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise InputError(f"--torch-model {spec}: {module_name} has no {name!r} function")
    return spec, factory


def cmd_compare(args: argparse.Namespace) -> int:
    import numpy as np

    from equivalence.core.walk import ModelNotSupported
    from equivalence.own import compare_models

    _check_compare_arguments(args)
    x = None
    if args.input is not None:
        try:
            x = np.load(args.input, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"not a numpy .npy array without pickled objects ({exc})", args.input) from None
    factory = _model_factory(args.torch_model) if args.torch_model else None
    graphs = _graphs(args)
    torch_model, keras_model = (_load_model_file(path, _form(path, expected, graphs), factory, args.verbose)
                                for path, expected in ((args.torch_file, "torch"), (args.keras_file, "keras")))
    try:
        result = compare_models(torch_model, keras_model, x, max_examples=args.examples, table=args.table,
                                weight_ulps=args.weight_ulps)
    except ModelNotSupported as exc:
        raise InputError(f"cannot be judged: {exc}") from None
    except ValueError as exc:  # inputs of the wrong width, or with no finite value
        raise InputError(str(exc), args.input) from None
    print(result.message())
    print(result.parameters())
    print("matched:\n" + "\n".join(f"  {line}" for line in result.matched()))
    if args.table is not None:
        print(f"wrote the per-layer table to {args.table}")
    return EXIT_OK if result.passed else EXIT_DISAGREE


def _saved_model(path: Path) -> bool:
    return path.is_dir() and (path / "saved_model.pb").is_file()


def _graphs(args: argparse.Namespace) -> bool:
    """Whether a graph (.onnx, .tflite, a SavedModel folder) is one side of the pair."""
    return any(path.suffix in GRAPH_SUFFIXES or _saved_model(path) for path in (args.torch_file, args.keras_file))


def _form(path: Path, expected: str, graphs: bool) -> str:
    """How ``path`` is read: as its position says (TORCH_FILE, KERAS_FILE) for a torch and Keras pair; by its suffix
    (or as a SavedModel folder) when a graph is one side of the pair."""
    if not graphs:
        return expected
    if _saved_model(path):
        return "saved_model"
    return GRAPH_SUFFIXES.get(path.suffix) or ("keras" if path.suffix in KERAS_SUFFIXES else "torch")


def _load_model_file(path: Path, form: str, factory: tuple[str, Any] | None, verbose: bool) -> Any:
    """The model in ``path``, read as ``form`` (``torch``, ``keras`` or ``onnx``); its problems as one line naming
    the file and the format expected."""
    try:
        if form in (*GRAPH_SUFFIXES.values(), "saved_model"):
            return _graph_reader(form).load_model(str(path))
        if form == "keras":
            return _adapter_module("keras").load_model(str(path))
        torch_walk = _adapter_module("torch")
        if factory is not None:
            return torch_walk.load_state_dict_model(str(path), *factory, logs=verbose)
        return torch_walk.load_program(str(path), logs=verbose)
    except ValueError as exc:
        raise InputError(str(exc), path) from None


def _graph_reader(form: str) -> Any:
    from equivalence.own import graph_reader

    try:
        return graph_reader(form)
    except ImportError as exc:
        raise InputError(str(exc)) from None


def _adapter_module(framework: str) -> Any:
    import importlib

    try:
        get_adapter(framework)
    except FrameworkUnavailable as exc:  # one line, exit 2
        raise InputError(str(exc)) from None
    from equivalence.frameworks.registry import entry

    return importlib.import_module(entry(framework).walker.partition(":")[0])
