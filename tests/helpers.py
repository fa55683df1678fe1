"""Assertion helpers: keyword-only, one message format (what, where, got, expected), a replay note."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st

from equivalence.core.case import Case
from equivalence.core.check import why_not_run
from equivalence.core.compare import Comparison
from equivalence.core.dtypes import numpy_dtype
from equivalence.core.kinds import DENSE
from equivalence.core.layout import LayerWeights, weights_equal
from equivalence.core.repro import save_case, snippet
from equivalence.core.strategies import ACTIVATION_NAMES, DTYPE_NAMES, boundary_widths_up_to, cases, specs
from equivalence.core.tolerance import forward_bound, rounded_weights_error
from equivalence.frameworks.base import Adapter
from equivalence.frameworks.registry import entry, names
from tests import stats

try:
    import ml_dtypes  # noqa: F401  (numpy's bfloat16; absent in the MXNet venv)

    HAS_BFLOAT16 = True
except ModuleNotFoundError:
    HAS_BFLOAT16 = False
needs_bfloat16 = pytest.mark.skipif(not HAS_BFLOAT16, reason="bfloat16 needs ml_dtypes (not in .venv-mxnet)")
BFLOAT16 = pytest.param("bfloat16", marks=needs_bfloat16)
"""Use in a dtype parametrization instead of "bfloat16"."""

RUNTIMES = tuple(name for name in names() if not entry(name).in_suite_default)
"""The runtimes (the registry leaves them out of the suite's default: ort, keras_graph, keras_xla, torch_compile,
litert, litert_fp16w, torch_export): their named differences are measured in tests/frameworks/test_runtimes.py and
tests/frameworks/test_litert.py."""

# Example budgets by cost, scaled from the active hypothesis profile (100 in dev and ci).
NUMERIC_EXAMPLES = 13 * settings.default.max_examples
"""Pooled numeric properties: ~15 ms an example with hypothesis' own cost, the bulk of the cross-framework
cases. 13x keeps ``make check`` over 2,000 of them (2,208 in ci) inside its 120 s budget on 2 noisy cores."""
BUILD_EXAMPLES = max(10, settings.default.max_examples // 4)
"""Properties that build real Keras models each example (~15-20 ms a build)."""

def computable_cases(adapter: Adapter, *, dtypes: Sequence[str] = DTYPE_NAMES, small: bool = False
                     ) -> st.SearchStrategy[Case]:
    """Cases drawing every activation (per layer) and bias on or off, in those of ``dtypes`` the framework
    computes (``Adapter.cannot``; bfloat16 only where numpy has it), as ``strategies.breadth_specs``.

    ``small``: at most 4 layers of width 16, for properties whose examples run backward passes or write files.
    Draw it inside the test (``data.draw``): which dtypes a framework computes is known once its adapter is.
    """
    return _computable_cases(adapter, tuple(dtypes), small)


@functools.cache
def _computable_cases(adapter: Adapter, dtypes: tuple[str, ...], small: bool) -> st.SearchStrategy[Case]:
    runnable = [d for d in dtypes if (d != "bfloat16" or HAS_BFLOAT16)
                and not all(adapter.cannot(a, d) for a in ACTIVATION_NAMES)]
    if not runnable:
        raise ValueError(f"{adapter.name} computes none of the dtypes {', '.join(dtypes)}")
    shape = dict(max_depth=4, width=boundary_widths_up_to(16)) if small else {}
    return cases(specs(activations=ACTIVATION_NAMES, dtypes=runnable, **shape)).filter(
        lambda case: why_not_run(adapter, case.spec) is None)  # gaps in (activation, dtype) pairs


KERAS2 = os.environ.get("TF_USE_LEGACY_KERAS") in ("1", "true", "True")
"""Keras 2 (tf-keras) runs as the keras framework here (``make keras2``)."""
keras3_only = pytest.mark.skipif(
    KERAS2,
    reason="builds, patches or walks Keras 3 objects; Keras 2 (tf-keras, TF_USE_LEGACY_KERAS=1) runs here "
           "(make keras2)")
"""Tests of Keras 3 itself (its walker, its internals patched by meta tests, its quirks), not of the properties."""


keras3_vectors = pytest.mark.skipif(
    KERAS2, reason="golden/ holds Keras 3's outputs: under Keras 2 hard_sigmoid moved beyond the error model by "
                   "design (tests/frameworks/test_keras_migration.py); make keras2 verifies tests/golden-keras2")


def keras_walker_problem() -> str | None:
    """Why the Keras walker cannot read a plain ``Sequential`` here (Keras 2 runs, or a one-line
    ``ModelNotSupported``), or None.
    Keras 3.0 to 3.3 cannot call one on a symbolic tensor; the walker reads its functional graph there instead."""
    from equivalence.core.walk import ModelNotSupported
    from equivalence.frameworks.keras.walk import walk
    from tests.own_models import keras_model

    if KERAS2:
        return ("these tests build Keras 3 models, and Keras 2 (tf-keras, TF_USE_LEGACY_KERAS=1) is the keras "
                "framework here: tests/own/test_own_keras2.py checks its own models")
    try:
        walk(keras_model("sequential", (2, 3), ("relu",)))
    except ModelNotSupported as exc:
        return f"the keras walker cannot read a Sequential on this Keras: {exc}"
    return None


def assume_runnable(case: Case, *adapters: Adapter) -> None:
    """Drop a drawn case a framework has no activation for (Keras 2 has no celu): "not run" there, as in
    ``verify``, never a traceback; every case the frameworks can compute is still checked."""
    from hypothesis import assume

    from equivalence.core.check import why_not_run

    assume(all(why_not_run(adapter, case.spec) is None for adapter in adapters))


def assume_reference_definitions(case: Case, *adapters: Adapter) -> None:
    """Drop a drawn case with an activation a framework defines otherwise (a ``definition`` difference: Keras 2's
    hard_sigmoid): its forward pass is checked against its own definition, but the float64 backward reference
    knows only the reference definitions, so its gradients are not compared."""
    from hypothesis import assume

    from equivalence.core.known_differences import definition

    assume(not any(definition(adapter.name, act, case.spec.dtype) for adapter in adapters
                   for act in case.spec.activations))


REPLAY_BUILDS = {"torch": "sequential", "keras": "functional"}
"""How the snippet of a failing case rebuilds it: framework -> build style."""


def replay_note(case: Case) -> str:
    """Where the failing case was written (pickle-free) and a snippet that re-runs it.

    The hypothesis blob (``print_blob`` is on in every profile) replays the whole example.
    Shrinking calls the test many times: each failing call overwrites the same files, so
    what stays is the final, minimal example.
    """
    test = os.environ.get("PYTEST_CURRENT_TEST", "case").split(" ")[0]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", test.split("::", 1)[-1])[:120]
    path = save_case(case, name)
    return f"\nfailing case written to {path} (+ .npz); rebuild it with:\n{snippet(path, REPLAY_BUILDS)}"


def assert_layers_agree(*, comparison: Comparison, case: Case) -> None:
    """Every pair agrees at every layer; else name each failing pair's first diverging layer."""
    stats.record(case.spec, comparison)
    if not comparison.passed:
        raise AssertionError(comparison.message() + replay_note(case))


def assert_weights_identical(*, got: Sequence[LayerWeights], expected: Sequence[LayerWeights], what: str) -> None:
    if weights_equal(got, expected):
        return
    for i, ((gw, gb), (ew, eb)) in enumerate(zip(got, expected)):
        if gw.shape != ew.shape or gw.dtype != ew.dtype or not np.array_equal(gw, ew):
            differing = np.count_nonzero(gw != ew) if gw.shape == ew.shape else "all"
            raise AssertionError(f"{what}: layer {i} kernel differs: got {gw.dtype}{gw.shape}, expected "
                                 f"{ew.dtype}{ew.shape}, {differing} elements differ")
        if (gb is None) != (eb is None) or (gb is not None and not np.array_equal(gb, eb)):
            raise AssertionError(f"{what}: layer {i} bias differs: got {gb}, expected {eb}")
    raise AssertionError(f"{what}: {len(got)} layers, expected {len(expected)}")


def reference_inputs(case: Case) -> list[np.ndarray]:
    from equivalence.core import check
    from equivalence.core.reference import layerwise_reference

    return check.reference_inputs(case.spec, layerwise_reference(case.spec, case.weights, case.x))


def build_loaded(adapter: Adapter, case: Case, style: str) -> Any:
    model = adapter.build(case.spec, style)
    adapter.set_weights(model, case.weights)
    return model


def chained_in(adapter: Adapter, case: Case, dtype: str) -> list[np.ndarray]:
    """The case's layers chained in ``dtype`` (its weights and input converted exactly: ``dtype`` is the wider),
    each output rounded back to the case's dtype: what a whole-model graph computing in ``dtype`` gives
    (``known_differences.whole_graph_dtype``)."""
    wide = dataclasses.replace(case.spec, dtype=dtype)
    to = numpy_dtype(dtype)
    model = adapter.build(wide, "sequential")
    adapter.set_weights(model, [LayerWeights(w.W.astype(to), None if w.b is None else w.b.astype(to))
                                for w in case.weights])
    return [out.astype(case.x.dtype) for out in adapter.taps(model, case.x.astype(to))]


def last_layer_bound(*, chained: Sequence[np.ndarray], case: Case, framework: str) -> float:
    """``framework``'s bound of the case's last layer at its chained input, plus each earlier layer's weight
    rounding term (zero unless ``framework`` stores its weights narrower)."""
    inputs = [case.x, *chained[:-1]]
    last = DENSE.reference(inputs[-1], case.weights[-1], case.spec.activations[-1])
    bound = forward_bound(last, case.weights[-1], case.spec.activations[-1], case.spec.dtype,
                          {framework: None}).against_reference(framework)
    return bound + sum(rounded_weights_error(framework, x=np.asarray(x_k, np.float64), weights=w, activation=a,
                                             dtype=case.spec.dtype)
                       for x_k, w, a in zip(inputs[:-1], case.weights, case.spec.activations))


def assert_within_last_layer_bound(*, got: np.ndarray, chained: Sequence[np.ndarray], case: Case, what: str,
                                   framework: str) -> None:
    """``got`` (``framework``'s whole model's output) agrees with the layers ``chained`` within its last layer's
    error bound (``tolerance.forward_bound``), taken at its chained input, plus each earlier layer's weight
    rounding term where ``framework`` stores its weights narrower (``tolerance.rounded_weights_error``: a
    converter folding layers rounds the folded weights once); positions of NaN and inf identical."""
    bound = last_layer_bound(chained=chained, case=case, framework=framework)
    got64, want64 = np.asarray(got, np.float64), np.asarray(chained[-1], np.float64)
    np.testing.assert_array_equal(np.isfinite(got64), np.isfinite(want64), err_msg=what)
    finite = np.isfinite(want64)
    error = float(np.max(np.abs(got64 - want64)[finite], initial=0.0))
    assert error <= bound, (f"{what}: got {error:.3g} between the whole model and its chained layers, but should "
                            f"be within the last layer's bound {bound:.3g}")


def flip_torch_conv_kernels(monkeypatch) -> None:
    """Break torch's Conv1d and Conv2d: a true convolution (the kernel flipped) instead of a cross-correlation."""
    import torch

    def flipped(self, x):
        return self._conv_forward(x, torch.flip(self.weight, dims=tuple(range(2, self.weight.ndim))), self.bias)

    monkeypatch.setattr(torch.nn.Conv1d, "forward", flipped)
    monkeypatch.setattr(torch.nn.Conv2d, "forward", flipped)


def swap_torch_gates(monkeypatch, cell: str) -> None:
    """torch's LSTM or GRU computing with its first two gates' rows swapped (i and f, or r and z)."""
    import torch
    from torch import nn

    module = nn.LSTM if cell == "lstm" else nn.GRU
    original = module.forward

    def swapped(self, x, hx=None):
        units = self.hidden_size
        saved = [p.detach().clone() for p in self._flat_weights]
        with torch.no_grad():
            for p in self._flat_weights:
                p.copy_(torch.cat([p[units:2 * units], p[:units], p[2 * units:]]))
        try:
            return original(self, x, hx)
        finally:
            with torch.no_grad():
                for p, value in zip(self._flat_weights, saved):
                    p.copy_(value)

    monkeypatch.setattr(module, "forward", swapped)


def compare_files_through_the_cli(tmp_path: Any, monkeypatch: Any, capsys: Any, *, factory: str, module: str,
                                  port: Any, after_port: Any = None, args: Sequence[str] = ()) -> tuple[int, str]:
    """``equivalence compare state.pt port.keras --torch-model module:build``: the torch model ``build()`` in
    ``factory`` (source of a module written to ``tmp_path``), ported into the Keras model ``port``, both saved;
    returns the exit code and what was printed. ``after_port(torch_model, port)``: a change made after the port
    (a wrong weight); ``args``: more arguments."""
    import importlib
    import sys

    import torch

    from equivalence import port_weights
    from equivalence.cli import main

    (tmp_path / f"{module}.py").write_text(factory, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [str(tmp_path), *sys.path])
    torch_model = importlib.import_module(module).build().eval()
    port_weights(torch_model, port)
    if after_port is not None:
        after_port(torch_model, port)
    torch.save(torch_model.state_dict(), tmp_path / "state.pt")
    port.save(tmp_path / "port.keras")
    code = main(["compare", str(tmp_path / "state.pt"), str(tmp_path / "port.keras"), "--torch-model",
                 f"{module}:build", "--examples", "3", *args])
    return code, capsys.readouterr().out


def assert_ported_pairs_agree(archs: st.SearchStrategy, *, ported: Any, inputs: Any, max_examples: int,
                              then: Any, named: Any = lambda arch: ()) -> None:
    """For every drawn architecture: ``ported(arch)`` gives a torch model and its Keras port, which agree layer by
    layer on ``inputs(arch)``; ``then(arch, torch_model, keras_model, result)`` checks the rest (shapes, counts).
    ``named(arch)``: the differences a known difference names for this pair (each model then agrees with its own
    reference, and the pair fails naming them)."""
    from hypothesis import given

    from equivalence import compare_models

    @settings(max_examples=max_examples)
    @given(arch=archs)
    def check(arch: Any) -> None:
        t, k = ported(arch)
        result = compare_models(t, k, x=inputs(arch))
        expected = list(named(arch))
        assert [d.what for d in result.differences] == expected, result.message()
        assert not [r for r in result.failures if r.pair[1] == "reference" or not expected], result.message()
        then(arch, t, k, result)

    check()


def skip_chainless(*adapters: Adapter) -> None:
    """Skip, naming why, where a framework builds no chains of other kinds (Keras 2, the runtimes): their chain
    cases are "not run" there by declaration, which the chain tests would otherwise read as a failure."""
    for adapter in adapters:
        reason = adapter.chainless()
        if reason:
            pytest.skip(reason)
