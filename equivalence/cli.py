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
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from equivalence.adapters import FRAMEWORKS, Adapter, FrameworkUnavailable, get_adapter
from equivalence.errors import InputError

EXIT_OK, EXIT_DISAGREE, EXIT_USAGE = 0, 1, 2
PROG = "equivalence"
MOVED_SHOWN = 12
"""Moved layers listed per source without ``--verbose``."""

_pool = None


def _layer_pool():
    """One pool per process: ``main`` may run many times in one process (tests), builds are the slow part."""
    global _pool
    if _pool is None:
        from equivalence.check import LayerPool

        _pool = LayerPool()
    return _pool


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (and the hint to ``--help``) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from equivalence import __version__

    parser = _Parser(prog=PROG, description="Prove PyTorch and Keras compute the same dense networks, layer by "
                     "layer, and notice the day a framework upgrade changes that.",
                     epilog="exit codes: 0 all agree, 1 something disagrees, 2 usage or input error")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser, required=True)

    def frameworks_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--framework", action="append", choices=FRAMEWORKS, dest="frameworks",
                       help="check only this framework (repeat for several; default: all of "
                       f"{', '.join(FRAMEWORKS)})")

    report = sub.add_parser("report", help="run the fixed, seeded case matrix and write JSON, Markdown and a PNG",
                            description="Run the fixed, seeded report matrix (equivalence/matrix.py) through every "
                            "framework and build style; print one row per case and pair; write report.json, "
                            "report.md (also appended to $GITHUB_STEP_SUMMARY when set) and report.png.")
    report.add_argument("--out", type=Path, default=Path("report"), metavar="DIR",
                        help="folder for report.json, report.md and report.png (default: %(default)s)")
    report.add_argument("-k", dest="patterns", action="append", metavar="TEXT",
                        help="only cases whose id contains TEXT (repeat for several)")
    report.add_argument("--quiet", action="store_true", help="print the summary line, not the table")
    frameworks_option(report)

    record = sub.add_parser("record", help="record golden vectors into DIR",
                            description="Run the golden case set and record, per case, the spec, weights, inputs, "
                            "every layer's float64 reference and each framework's outputs, with the fingerprint. "
                            "Writes nothing unless every case agrees. Refuses a folder holding other files.")
    record.add_argument("folder", type=Path, metavar="DIR")
    record.add_argument("-k", dest="patterns", action="append", metavar="TEXT",
                        help="only cases whose id contains TEXT (repeat for several)")
    frameworks_option(record)

    verify = sub.add_parser("verify", help="check the installed frameworks against golden vectors in DIR",
                            description="Check every layer of the installed frameworks against the recorded float64 "
                            "reference (exit 1 on any disagreement), and report drift against the recorded "
                            "framework outputs: cases changed bit for bit, largest change in ulps, layers moved.")
    verify.add_argument("folder", type=Path, metavar="DIR")
    verify.add_argument("-v", "--verbose", action="store_true", help="list every moved layer")
    frameworks_option(verify)

    _add_compare(sub)

    env = sub.add_parser("env", help="print the environment fingerprint",
                         description="Print the fingerprint stored in every report and recording: versions, "
                         "Keras backend, oneDNN, thread counts, CPU.")
    env.add_argument("--json", action="store_true", help="print it as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse already printed
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return {"report": cmd_report, "record": cmd_record, "verify": cmd_verify, "env": cmd_env,
                "compare": cmd_compare}[args.command](args)
    except InputError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a refused read or write (permissions, disk full); atomic writes leave no half file
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{PROG} {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130


# --- helpers -------------------------------------------------------------------

DEFAULT_FRAMEWORKS = ("torch", "keras")
"""What report and record run unless --framework says otherwise; MXNet (its own venv) is opt-in."""


def _adapters(names: Sequence[str] | None) -> dict[str, Adapter]:
    out = {}
    for name in dict.fromkeys(names or DEFAULT_FRAMEWORKS):
        try:
            out[name] = get_adapter(name)
        except FrameworkUnavailable as exc:
            others = [f for f in DEFAULT_FRAMEWORKS if f != name]
            raise InputError(f"{exc} (or pass --framework {others[0]} to leave it out)" if others else str(exc)) \
                from None
    return out


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Not a terminal (CI logs, files): wide enough that case ids are not folded.
    return Console(file=stream, width=None if stream.isatty() else 200, soft_wrap=False)


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
    from equivalence.matrix import select

    chosen = select(cases, patterns)
    if not chosen:
        shown = " ".join(f"-k {p!r}" for p in patterns or ())
        raise InputError(f"{shown} matches none of the {len(cases)} {what} case ids")
    return chosen


def _out_folder(folder: Path) -> Path:
    if folder.exists() and not folder.is_dir():
        raise InputError("exists and is not a folder; pass --out a folder for the report files", folder)
    return folder


# --- commands ------------------------------------------------------------------

def cmd_report(args: argparse.Namespace) -> int:
    from equivalence import report as rep
    from equivalence.fingerprint import fingerprint, summary
    from equivalence.matrix import report_cases

    out = _out_folder(args.out)
    cases = _selected(report_cases(), args.patterns, "report")
    adapters = _adapters(args.frameworks)
    fp = fingerprint()
    start = time.perf_counter()
    results = []
    with _progress("report", len(cases)) as advance:
        for mcase in cases:
            results.append((mcase, rep.run_case(mcase, adapters, _layer_pool())))
            advance()
    data = rep.to_json(results, fingerprint=fp, elapsed=time.perf_counter() - start)
    markdown = rep.to_markdown(data)
    png = rep.plot_png(data, title=f"equivalence report: {rep.short_headline(data)}\n{summary(fp)}")

    from equivalence.atomic import write_bytes_atomic, write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    paths = rep.output_paths(out)
    write_text_atomic(paths["json"], rep.json_text(data))
    write_text_atomic(paths["md"], markdown)
    write_bytes_atomic(paths["png"], png)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as f:
            f.write(markdown)

    console = _console()
    if not args.quiet:
        console.print(rep.rich_table(data))
    for case in data["cases"]:
        for layer in case["layers"]:
            if "detail" in layer:
                console.print(f"[red]FAIL[/red] {case['id']}: {layer['detail']}", highlight=False)
    console.print(f"{summary(fp)}\n{rep.headline(data)}", highlight=False)
    console.print("wrote " + ", ".join(str(p) for p in paths.values())
                  + (f", appended to {step_summary}" if step_summary else ""), highlight=False)
    return EXIT_OK if data["summary"]["passed"] else EXIT_DISAGREE


def cmd_record(args: argparse.Namespace) -> int:
    from equivalence import golden
    from equivalence.fingerprint import fingerprint, summary
    from equivalence.matrix import golden_cases

    golden.check_folder_is_ours(args.folder)  # refuse before spending any time
    cases = _selected(golden_cases(), args.patterns, "golden")
    adapters = _adapters(args.frameworks)
    fp = fingerprint(tuple(adapters))
    with _progress("record", len(cases)) as advance:
        rec = golden.record(args.folder, cases, adapters, fingerprint=fp, pool=_layer_pool(), progress=advance)
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
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from equivalence import golden
    from equivalence.fingerprint import changes, fingerprint, summary

    vectors = golden.load(args.folder)
    wanted = args.frameworks or vectors.frameworks
    adapters = _adapters(wanted)
    fp = fingerprint(tuple(adapters))
    with _progress("verify", len(vectors.cases)) as advance:
        result = golden.verify(vectors, adapters, pool=_layer_pool(), progress=advance)

    n = len(vectors.cases)
    print(f"verified {n} cases in {args.folder} (recorded {vectors.manifest.get('recorded_at', '?')} with "
          f"{summary(vectors.fingerprint)})\nnow: {summary(fp)}")
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
    _print_drift(result, n, verbose=args.verbose)
    if failures:
        for comparison in failures:
            named: set[tuple[str, str]] = set()
            for r in sorted(comparison.failures, key=lambda r: r.layer):  # each pair's first diverging layer
                if r.pair not in named:
                    named.add(r.pair)
                    print(f"FAIL {comparison.case_id}: {r.describe()}")
        print(f"FAIL: {len(failures)} of {n} cases disagree beyond the error model")
        return EXIT_DISAGREE
    print(f"OK: all {n} cases agree within the error model" + (" (drift above is within it)" if result.drift else ""))
    return EXIT_OK


def _print_not_run(not_run: Any, n: int) -> None:
    """Cases a framework has no Dense layer for (its dtype); a framework that can run none is bad input."""
    for framework in dict.fromkeys(r.framework for r in not_run):
        skipped = [r for r in not_run if r.framework == framework]
        if len(skipped) == n:
            raise InputError(f"--framework {framework}: it can compute none of the {n} cases (dtypes "
                             f"{', '.join(sorted({r.dtype for r in skipped}))}), so there is nothing to verify")
        reasons = {r.dtype: r.reason for r in skipped}
        print(f"{framework}: {len(skipped)} of {n} cases not run, no Dense layer in their dtype here: "
              + "; ".join(f"{dtype} ({reason})" for dtype, reason in reasons.items()))


def _print_drift(result: Any, n: int, *, verbose: bool) -> None:
    print("drift against the recorded outputs (reported, not failed):")
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
              f"largest change {worst.max_ulps:.0f} ulps of {worst.dtype} ({worst.case_id}, layer {worst.layer})")
        shown = moved if verbose else moved[:MOVED_SHOWN]
        for d in shown:
            print(f"    {d.case_id} layer {d.layer}: {d.changed} of {d.size} elements, up to {d.max_ulps:.0f} ulps")
        if len(shown) < len(moved):
            print(f"    ... and {len(moved) - len(shown)} more layers (--verbose lists all)")


def cmd_env(args: argparse.Namespace) -> int:
    from equivalence.fingerprint import fingerprint, flatten, summary

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
    compare = sub.add_parser("compare", help="check a torch.export program (.pt2) against its Keras port (.keras)",
                             description="Walk both models in execution order and compare structure, weights (with "
                             "the transposition) and every layer's values against the float64 reference of each "
                             "model's own weights and against each other. Inputs from --input, else drawn.")
    compare.add_argument("torch_file", type=Path, metavar="TORCH_FILE", help="torch.export.save output (.pt2)")
    compare.add_argument("keras_file", type=Path, metavar="KERAS_FILE", help="model.save output (.keras)")
    compare.add_argument("--input", type=Path, metavar="X.npy", help="inputs (batch, n_in); default: drawn")
    compare.add_argument("--examples", type=int, default=100, metavar="N",
                         help="input batches drawn when --input is not given (default: %(default)s)")
    compare.add_argument("--table", type=Path, metavar="PATH", help="write the per-layer table (Markdown) there")


def cmd_compare(args: argparse.Namespace) -> int:
    import numpy as np

    from equivalence.own import compare_models
    from equivalence.walk import ModelNotSupported

    for path in (args.torch_file, args.keras_file, args.input):
        if path is not None and not path.is_file():
            raise InputError("no such file", path)
    if args.examples < 1:
        raise InputError(f"--examples {args.examples}: must be at least 1")
    x = None
    if args.input is not None:
        try:
            x = np.load(args.input, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"not a numpy .npy array without pickled objects ({exc})", args.input) from None
    models = []
    for framework, path, loader in (("torch", args.torch_file, "load_program"), ("keras", args.keras_file,
                                                                                   "load_model")):
        try:
            module = _adapter_module(framework)
            models.append(getattr(module, loader)(str(path)))
        except ValueError as exc:
            raise InputError(str(exc), path) from None
    try:
        result = compare_models(*models, x, max_examples=args.examples, table=args.table)
    except ModelNotSupported as exc:
        raise InputError(f"cannot be judged: {exc}") from None
    except ValueError as exc:  # inputs of the wrong width
        raise InputError(str(exc), args.input) from None
    print(result.message())
    if args.table is not None:
        print(f"wrote the per-layer table to {args.table}")
    return EXIT_OK if result.passed else EXIT_DISAGREE


def _adapter_module(framework: str) -> Any:
    import importlib

    try:
        get_adapter(framework)
    except FrameworkUnavailable as exc:  # one line, exit 2
        raise InputError(str(exc)) from None
    return importlib.import_module(f"equivalence.{framework}_walk")
