"""The machine's kernel facts: oneDNN's ISA as the CPU and ONEDNN_MAX_CPU_ISA decide it, BLAS, CPU flags."""

from __future__ import annotations

import pytest

from equivalence.core.kernels import ONEDNN_ISAS, cpu_isa, kernel_facts, onednn_isa

ZEN4 = ("sse4_1", "avx", "avx2", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni",
        "avx512_bf16")
ZEN3 = ("sse4_1", "avx", "avx2")
SAPPHIRE_RAPIDS = (*ZEN4, "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


@pytest.mark.parametrize(("flags", "expected"), [
    (ZEN4, "AVX512_CORE_BF16"), (ZEN3, "AVX2"), (SAPPHIRE_RAPIDS, "AVX512_CORE_AMX"),
    (("sse4_1", "avx", "avx2", "avx512f"), "AVX2"),  # avx512f alone is not oneDNN's AVX512_CORE
    (("sse4_1",), "SSE41"),
])
def test_the_cpu_isa_is_the_highest_level_its_flags_carry(flags, expected):
    assert cpu_isa(flags) == expected


@pytest.mark.parametrize(("cap", "expected"), [
    (None, "AVX512_CORE_BF16"), ("", "AVX512_CORE_BF16"), ("DEFAULT", "AVX512_CORE_BF16"),
    ("SSE41", "SSE41"), ("avx2", "AVX2"), ("AVX512_CORE", "AVX512_CORE"),
    ("AVX512_CORE_AMX", "AVX512_CORE_BF16"),  # a cap above the CPU changes nothing
    ("AVX10_1_512_AMX", "AVX512_CORE_BF16"),
])
def test_onednn_runs_at_the_lower_of_the_cpu_and_the_cap(cap, expected):
    assert onednn_isa(ZEN4, cap) == expected


def test_an_unknown_cap_is_named_not_guessed():
    assert "not an ISA oneDNN knows" in onednn_isa(ZEN4, "AVX9000")
    assert onednn_isa(ZEN4, "AVX9000").startswith("AVX512_CORE_BF16 ")  # the CPU's own, with the remark


def test_off_x86_there_is_no_onednn_isa_to_name():
    assert onednn_isa((), None).startswith("n/a")
    assert onednn_isa((), "AVX2").startswith("n/a")


def test_this_machine_has_its_kernel_facts():
    facts = kernel_facts()
    for key in ("cpu_model", "cpu_flags", "cpu_isa", "onednn_isa", "blas", "ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE"):
        assert facts[key], key
    if facts["cpu_flags"] != "n/a":
        assert facts["cpu_isa"] in ONEDNN_ISAS
    assert facts["blas"] != "none found", "numpy's BLAS was not seen by threadpoolctl"
