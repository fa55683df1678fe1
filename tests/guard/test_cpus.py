"""The CPUs the probes were recorded on (``equivalence.guard.cpus``): consistent with the named causes, and a scope
seen on none of them reported as new with the facts to name it. Pure data and numpy: runs on every machine."""

import pytest

from equivalence.core.conditions import RecordedFacts, Scope
from equivalence.core.known_differences import PROBES
from equivalence.guard.cpus import RECORDED_CPUS, RECORDED_KERAS_BACKEND, new_findings, probe_table

RECORDED = [(cpu, name) for cpu in RECORDED_CPUS for name in cpu.scopes]


@pytest.mark.parametrize(("cpu", "name"), RECORDED, ids=[f"{cpu.name}-{name}" for cpu, name in RECORDED])
def test_every_recorded_scope_agrees_with_the_named_causes(cpu, name):
    probe = PROBES[name]
    facts = RecordedFacts({**cpu.facts, "frameworks.keras.keras_backend": RECORDED_KERAS_BACKEND})
    scope = Scope.parse(cpu.scopes[name])
    for dtype in probe.dtypes:
        expected = probe.expected(facts, dtype)
        if expected is not None:
            assert (dtype in scope.shapes) == expected, (
                f"{cpu.name}: {name} in {dtype} got {'yes' if dtype in scope.shapes else 'no'}, but the named cause "
                f"says {'yes' if expected else 'no'}")
    if probe.shape_class is not None:
        assert all(probe.shape_class(s) for shapes in scope.shapes.values() for s in shapes), cpu.name


def test_a_scope_seen_on_no_recorded_cpu_is_reported_new_with_the_facts_to_name_it():
    leak, gelu = PROBES["torch_linear_nan_leaks_across_rows"], PROBES["torch_gelu_nan_at_plus_inf"]
    assert new_findings(leak, Scope.parse("bfloat16 (17x17x17 33x33x33)")) == []
    assert new_findings(leak, Scope.parse("bfloat16 (17x17x17 20x21x8)")) == ["bfloat16 at 20x21x8"]
    assert new_findings(gelu, Scope.parse("float64")) == ["float64"]
    assert new_findings(gelu, Scope.parse("none")) == []
    facts = RecordedFacts({gelu.key: "float64, float32", leak.key: "none", "kernel.cpu_isa": "AVX10_2",
                           "frameworks.keras.keras_backend": "tensorflow"})
    table = probe_table({gelu.name: gelu, leak.name: leak}, facts)
    assert "NEW here, seen on no recorded CPU: torch_gelu_nan_at_plus_inf in float64." in table
    assert "cpu_isa=AVX10_2" in table
    quiet = probe_table({leak.name: leak}, RecordedFacts({leak.key: "none"}))
    assert "Nothing new here" in quiet and "NEW" not in quiet
