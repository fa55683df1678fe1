"""The report matrix covers what the issue asks for; the fingerprint holds what a reader needs."""

from __future__ import annotations

import zlib
from itertools import product

from equivalence.core.spec import StackSpec
from equivalence.core.strategies import ACTIVATION_NAMES, DTYPE_NAMES
from equivalence.frameworks.keras.known_differences import keras_backend
from equivalence.frameworks.registry import entry
from equivalence.guard.fingerprint import changes, fingerprint, flatten, summary
from equivalence.guard.matrix import ACTIVATION_AXIS, CHAIN_BLUEPRINTS, DTYPE_AXIS, golden_cases, report_cases, select


def test_case_ids_are_unique_and_seeds_come_from_them():
    for cases in (report_cases(), golden_cases()):
        ids = [c.id for c in cases]
        assert len(ids) == len(set(ids)), "two cases of a matrix share an id"
        assert all(c.seed == zlib.crc32(c.id.encode()) for c in cases)


def test_the_report_matrix_covers_every_style_pairing_activation_dtype_and_regime():
    every = report_cases()
    cases = [c for c in every if isinstance(c.spec, StackSpec)]
    pairings = {c.styles for c in cases if c.styles}
    assert pairings == {(("torch", t), ("keras", k)) for t, k in product(entry("torch").styles, entry("keras").styles)}
    assert {a for c in cases for a in c.spec.activations} == set(ACTIVATION_NAMES) >= set(ACTIVATION_AXIS)
    assert {c.spec.dtype for c in cases} == set(DTYPE_NAMES) >= set(DTYPE_AXIS)
    golden = [c for c in golden_cases() if isinstance(c.spec, StackSpec)]
    assert {a for c in golden for a in c.spec.activations} == set(ACTIVATION_NAMES)
    assert {(c.spec.dtype, c.spec.bias) for c in golden} == set(product(DTYPE_NAMES, (True, False)))
    assert any(len(set(c.spec.activations)) > 1 for c in cases), "no mixed-activation stack"
    assert {c.inputs.batch for c in cases} >= {1} and max(c.inputs.batch for c in cases) > 1
    assert max(c.inputs.input_scale for c in cases) >= 100, "no saturating inputs"
    assert any(not c.spec.bias for c in cases)
    square = [c for c in cases if any(i == o > 1 for i, o in c.spec.layer_shapes)]
    assert square, "no square layer, where a missing transpose is shape-valid"
    assert max(c.spec.depth for c in cases) >= 8 and max(max(c.spec.fan_ins) for c in cases) >= 512


def test_the_chains_of_the_matrices_mix_every_kind_in_every_dtype():
    kinds = {"conv", "pool", "flatten", "batchnorm", "layernorm", "dense", "embedding", "mean", "attention", "lstm",
             "gru", "add", "branch"}
    for cases in (report_cases(), golden_cases()):
        chains = [c for c in cases if not isinstance(c.spec, StackSpec)]
        assert len(chains) > len(CHAIN_BLUEPRINTS)
        for dtype in DTYPE_NAMES:
            assert {k.name for c in chains if c.spec.dtype == dtype for k in c.spec.kinds} == kinds, dtype
        assert any({"conv", "flatten", "dense"} <= {k.name for k in c.spec.kinds} for c in chains)
        assert any(c.spec.input_shape == (10,) and {"batchnorm", "layernorm"} <= {k.name for k in c.spec.kinds}
                   for c in chains), "no norm inside an MLP"
        assert {k.op for c in chains for k in c.spec.kinds if k.name == "pool"} == {"max", "avg"}
        assert {len(c.spec.input_shape) for c in chains} == {1, 2, 3}  # MLP, 1-D and 2-D convs


def test_the_same_matrix_case_always_draws_the_same_arrays():
    a, b = report_cases()[7].make(), report_cases()[7].make()
    assert a.x.tobytes() == b.x.tobytes()
    assert all(wa.W.tobytes() == wb.W.tobytes() for wa, wb in zip(a.weights, b.weights))


def test_select_keeps_cases_matching_any_pattern():
    cases = report_cases()
    chosen = select(cases, ["_relu_", "keras-subclass"])
    assert chosen and all("_relu_" in c.id or "keras-subclass" in c.id for c in chosen)
    assert select(cases, None) == cases


def test_the_fingerprint_holds_versions_backend_onednn_threads_and_cpu(torch_adapter, keras_adapter):
    fp = fingerprint()
    flat = flatten(fp)
    backend = keras_backend()
    backend_keys = {"tensorflow": ("frameworks.keras.tensorflow", "frameworks.keras.onednn_enabled",
                                   "frameworks.keras.TF_ENABLE_ONEDNN_OPTS", "frameworks.keras.tf_intra_op_threads"),
                    "torch": ("frameworks.keras.keras_torch",), "jax": ("frameworks.keras.jax",)}[backend]
    for key in ("python", "numpy", "cpu_model", "cpu_count", "frameworks.torch.torch", "frameworks.torch.torch_threads",
                "frameworks.keras.keras", "frameworks.keras.keras_backend", "thread_env.OMP_NUM_THREADS",
                *backend_keys):
        assert flat.get(key) not in (None, ""), f"fingerprint lacks {key}: {flat}"
    assert flat["frameworks.keras.keras_backend"] == backend
    if backend == "tensorflow":
        assert flat["frameworks.keras.onednn_enabled"] in ("on", "off")
    assert fp["cpu_model"] != "unknown"
    assert f"torch {flat['frameworks.torch.torch']}" in summary(fp)


def test_changes_name_what_moved_since_recording():
    old = {"numpy": "2.4.6", "frameworks": {"keras": {"tensorflow": "2.21.0"}, "torch": {"torch_threads": "2"}}}
    new = {"numpy": "2.4.6", "frameworks": {"keras": {"tensorflow": "2.20.0"}, "torch": {"torch_threads": "8"}}}
    assert changes(old, new) == ["frameworks.keras.tensorflow: 2.21.0 -> 2.20.0"]


def test_changes_leave_out_frameworks_not_in_both_fingerprints():
    recorded = {"numpy": "2.4.6", "frameworks": {"keras": {"keras": "3.15.1"}, "torch": {"torch": "2.13.0"}}}
    mxnet_venv = {"numpy": "1.23.5", "frameworks": {"mxnet": {"mxnet": "1.9.1"}}}
    assert changes(recorded, mxnet_venv) == ["numpy: 2.4.6 -> 1.23.5"]
    torch_only = {"numpy": "2.4.6", "frameworks": {"torch": {"torch": "2.14.0"}}}
    assert changes(recorded, torch_only) == ["frameworks.torch.torch: 2.13.0 -> 2.14.0"]
    lost_key = {"numpy": "2.4.6", "frameworks": {"keras": {}, "torch": {"torch": "2.13.0"}}}
    assert changes(recorded, lost_key) == ["frameworks.keras.keras: 3.15.1 -> absent"]
