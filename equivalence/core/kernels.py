"""The machine's kernel facts: which CPU, which vector ISA oneDNN will use, which BLAS kernel numpy runs.

The same framework versions compute different bits on different CPUs (``docs/measurements.md``,
"Kernel paths"): torch and TensorFlow each bundle oneDNN, which picks its kernels by the CPU's
instruction set (capped by ``ONEDNN_MAX_CPU_ISA``), and numpy's OpenBLAS picks its float64 matmul
kernel by CPU too (overridden by ``OPENBLAS_CORETYPE``), which moves the float64 reference by a
few ulps. These facts go into every fingerprint, so the guard can say "the machine changed"
apart from "the framework changed". Only the standard library, /proc and numpy here; the
frameworks' own facts (torch's CPU capability, TF's oneDNN switch) come from their adapters.
"""

from __future__ import annotations

import os
import platform
from functools import cache

CPU_FLAGS = ("sse4_1", "avx", "avx2", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
"""The x86 flags that decide oneDNN's, torch's and OpenBLAS' kernels (the fingerprint keeps the ones present)."""

ONEDNN_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
               "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16")
"""oneDNN's CPU ISA levels, lowest first (the values ``ONEDNN_MAX_CPU_ISA`` takes; AVX10_1_512* alias the FP16
and AMX levels)."""

AVX512_ISAS = tuple(isa for isa in ONEDNN_ISAS if isa.startswith("AVX512"))
"""The ISA levels on which oneDNN runs its AVX-512 kernels."""


_ISA_ALIASES = {"AVX10_1_512": "AVX512_CORE_FP16", "AVX10_1_512_AMX": "AVX512_CORE_AMX",
                "AVX10_1_512_AMX_FP16": "AVX512_CORE_AMX_FP16"}
_NO_CAP = ("", "DEFAULT", "ALL")


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, else what ``platform`` knows."""
    for key, value in _cpuinfo():
        if key in ("model name", "Hardware", "cpu model"):
            return value
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> tuple[str, ...]:
    """The flags of ``CPU_FLAGS`` this CPU has (empty off x86 Linux)."""
    for key, value in _cpuinfo():
        if key == "flags":
            present = set(value.split())
            return tuple(f for f in CPU_FLAGS if f in present)
    return ()


def _cpuinfo() -> list[tuple[str, str]]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            lines = f.read().split("\n\n", 1)[0].splitlines()  # the first processor is enough
    except OSError:
        return []
    return [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines)]


def cpu_isa(flags: tuple[str, ...]) -> str:
    """The highest oneDNN ISA level the CPU itself supports, or ``"n/a"`` off x86."""
    has = set(flags)
    if not has:
        return f"n/a ({platform.machine() or 'unknown machine'})"
    core = {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= has
    for isa, needs in (("AVX512_CORE_AMX", {"amx_tile", "amx_bf16", "amx_int8"}), ("AVX512_CORE_FP16", {"avx512_fp16"}),
                       ("AVX512_CORE_BF16", {"avx512_bf16"}), ("AVX512_CORE_VNNI", {"avx512_vnni"})):
        if core and needs <= has:
            return isa
    if core:
        return "AVX512_CORE"
    for isa, flag in (("AVX2_VNNI", "avx_vnni"), ("AVX2", "avx2"), ("AVX", "avx"), ("SSE41", "sse4_1")):
        if flag in has and (isa != "AVX2_VNNI" or "avx2" in has):
            return isa
    return "below SSE41"


def onednn_isa(flags: tuple[str, ...], cap: str | None) -> str:
    """The ISA oneDNN runs at: the CPU's own, lowered to ``cap`` (``ONEDNN_MAX_CPU_ISA``) when that is lower."""
    own = cpu_isa(flags)
    wanted = _ISA_ALIASES.get((cap or "").upper(), (cap or "").upper())
    if own not in ONEDNN_ISAS or wanted in _NO_CAP:
        return own
    if wanted not in ONEDNN_ISAS:
        return f"{own} (ONEDNN_MAX_CPU_ISA={cap} is not an ISA oneDNN knows)"
    return min(own, wanted, key=ONEDNN_ISAS.index)


def blas() -> dict[str, str]:
    """numpy's BLAS: library, version and the kernel it picked for this CPU (threadpoolctl's view).

    OpenBLAS builds with DYNAMIC_ARCH pick their kernels by CPU (``Haswell``, ``SkylakeX``, ``Zen``...),
    and ``OPENBLAS_CORETYPE`` overrides the pick: a different kernel sums a float64 dot product in another
    order, which is why the float64 reference moves between machines (measured: 17 of 114 golden cases).
    """
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {"blas": "unknown (threadpoolctl not installed)"}
    import numpy  # noqa: F401  (loads numpy's BLAS, so threadpoolctl can see it)

    for info in threadpool_info():
        if info.get("user_api") == "blas":
            return {"blas": f"{info.get('internal_api', '?')} {info.get('version', '?')}",
                    "blas_core": str(info.get("architecture", "unknown")),
                    "blas_threads": str(info.get("num_threads", "?"))}
    return {"blas": "none found"}


KERNEL_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "TF_ENABLE_ONEDNN_OPTS",
                    "OPENBLAS_CORETYPE")
"""Environment variables that choose kernels (and with them the bits)."""


@cache
def kernel_facts() -> dict[str, str]:
    """This process's kernel facts, as the fingerprint's ``kernel`` section (all strings)."""
    flags = cpu_flags()
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return {
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "cpu_flags": " ".join(flags) or "n/a",
        "cpu_isa": cpu_isa(flags),
        "onednn_isa": onednn_isa(flags, cap),
        **blas(),
        **{var: os.environ.get(var, "unset") for var in KERNEL_VARIABLES},
    }
