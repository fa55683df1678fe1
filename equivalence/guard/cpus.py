"""The CPUs the probes were measured on, and this machine's probes beside them.

Machines of this project's kind come with at least three CPUs. A named difference's scope must come from
measurement on the machine at hand (its probe, ``equivalence.core.conditions.Probe``), and a kernel path can only
be emulated downward (``ONEDNN_MAX_CPU_ISA`` lowers oneDNN's ISA, nothing raises it). So ``make portability``
first probes every named difference here and prints the scope beside the ones recorded below; a scope seen on no
recorded CPU is reported as new, with the facts needed to name it, rather than as a red test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from equivalence.core.conditions import Facts, Probe, Scope


@dataclass(frozen=True)
class RecordedCpu:
    """One CPU's kernel facts and each probe's scope there (encoded, ``Scope.encode``), with how it is known."""

    name: str
    facts: Mapping[str, str]
    scopes: Mapping[str, str]
    source: str


RECORDED_CPUS: tuple[RecordedCpu, ...] = (
    RecordedCpu(
        "AMD EPYC, AVX-512", {"kernel.cpu_isa": "AVX512_CORE_BF16", "kernel.onednn_isa": "AVX512_CORE_BF16",
                              "frameworks.torch.cpu_capability": "AVX512", "frameworks.keras.onednn_enabled": "on"},
        {"torch_gelu_nan_at_plus_inf": "float32, bfloat16", "keras_gelu_nan_at_plus_inf": "none",
         "keras_softmax_finite_beside_inf": "float32, bfloat16", "torch_linear_nan_leaks_across_rows": "none",
         "keras_dense_nan_leaks_across_rows": "none"},
        "every probe measured (2026-12-04, torch 2.13.0, TF 2.21.0, Keras 3.15.1 on TensorFlow); Keras' NaN leak "
        "measured at its ISA on the Intel Xeon (ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16, 2026-12-05)"),
    RecordedCpu(
        "AMD EPYC, AVX2 only", {"kernel.cpu_isa": "AVX2", "kernel.onednn_isa": "AVX2",
                                "frameworks.torch.cpu_capability": "AVX2", "frameworks.keras.onednn_enabled": "off"},
        {"torch_gelu_nan_at_plus_inf": "none", "keras_gelu_nan_at_plus_inf": "none",
         "keras_softmax_finite_beside_inf": "none", "torch_linear_nan_leaks_across_rows": "none",
         "keras_dense_nan_leaks_across_rows": "none"},
        "float32 gelu and softmax measured on the machine (2026-12-01); the rest measured in the avx2-machine cell "
        "on the AVX-512 EPYC, which emulates it"),
    RecordedCpu(
        "Intel Xeon, AVX512-FP16 + AMX", {"kernel.cpu_isa": "AVX512_CORE_AMX", "kernel.onednn_isa": "AVX512_CORE_AMX",
                                          "frameworks.torch.cpu_capability": "AVX512",
                                          "frameworks.keras.onednn_enabled": "on"},
        {"torch_gelu_nan_at_plus_inf": "float32, float16, bfloat16", "keras_gelu_nan_at_plus_inf": "none",
         "keras_softmax_finite_beside_inf": "float32, float16, bfloat16",
         "torch_linear_nan_leaks_across_rows": "bfloat16 (17x17x17 33x33x33)",
         "keras_dense_nan_leaks_across_rows": "bfloat16 (17x33x1 33x40x24 33x33x33 17x65x1)"},
        "gelu in float16, and the bfloat16 NaN leak over eight of the grid's shapes, measured there (issue 23); "
        "every probe measured there on 2026-12-05 (make probes; Keras' NaN leak and float16 softmax found "
        "then)"),
)

RECORDED_KERAS_BACKEND = "tensorflow"
"""The Keras backend the recorded scopes of the Keras probes were measured on; on another backend they are shown
but not compared (Keras on torch computes torch's gelu: its scope is torch's)."""

NAMING_FACTS = ("kernel.cpu_model", "kernel.machine", "kernel.cpu_flags", "kernel.cpu_isa", "kernel.onednn_isa",
                "frameworks.torch.cpu_capability", "frameworks.keras.onednn_enabled", "frameworks.keras.keras_backend",
                "kernel.ONEDNN_MAX_CPU_ISA", "kernel.ATEN_CPU_CAPABILITY", "kernel.TF_ENABLE_ONEDNN_OPTS")
"""The facts a new scope is reported with: what a named condition for it would be written from."""


def _found(scope: Scope) -> set[tuple[str, tuple[int, ...] | None]]:
    """``{(dtype, shape or None)}``: the dtypes and, for shaped probes, each shape where it showed."""
    return {(dtype, shape) for dtype, shapes in scope.shapes.items() for shape in (shapes or (None,))}


def new_findings(probe: Probe, here: Scope, recorded: Sequence[RecordedCpu] = RECORDED_CPUS) -> list[str]:
    """What ``probe`` found here that no recorded CPU shows: ``"bfloat16"``, ``"bfloat16 at 20x21x8"``."""
    seen = set().union(*(_found(Scope.parse(cpu.scopes[probe.name], probe.legacy_yes)) for cpu in recorded
                         if probe.name in cpu.scopes))
    return [dtype + (f" at {'x'.join(map(str, shape))}" if shape else "")
            for dtype, shape in sorted(_found(here) - seen, key=str)]


def probe_table(probes: Mapping[str, Probe], facts: Facts, recorded: Sequence[RecordedCpu] = RECORDED_CPUS) -> str:
    """Markdown: each probe's scope here beside the recorded CPUs', then the new findings with the naming facts."""
    lines = ["| probe | here | " + " | ".join(cpu.name for cpu in recorded) + " |",
             "|---|---|" + "---|" * len(recorded)]
    news = []
    backend = facts.get("frameworks.keras.keras_backend")
    for name, probe in probes.items():
        here = probe.scope(facts)
        compared = here is not None and (probe.framework != "keras" or backend == RECORDED_KERAS_BACKEND)
        shown = (here.encode() + ("" if compared else f" (Keras on {backend}: not compared)")) if here \
            else "not measured (framework missing)"
        lines.append(f"| {name} | {shown} | " + " | ".join(cpu.scopes.get(name, "not measured") for cpu in recorded)
                     + " |")
        news += [f"{name} in {what}" for what in (new_findings(probe, here, recorded) if compared else [])]
    lines.append("")
    lines += [f"- {cpu.name}: {cpu.source}." for cpu in recorded]
    lines.append(f"- The Keras probes were recorded with Keras on its {RECORDED_KERAS_BACKEND} backend.")
    if news:
        lines += ["", "NEW here, seen on no recorded CPU: " + "; ".join(news) + ".",
                  "Facts to name it by: " + ", ".join(f"{key.rpartition('.')[2]}={facts.get(key)}"
                                                      for key in NAMING_FACTS) + "."]
    else:
        lines += ["", "Nothing new here: every scope measured is one a recorded CPU shows."]
    return "\n".join(lines) + "\n"
