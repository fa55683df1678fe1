"""The framework registry: entries validate themselves, capabilities are optional, and a framework from another
package (examples/equivalence-numpy) joins through its entry point alone, with no change to equivalence."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from equivalence.core.case import make_case
from equivalence.core.check import LayerPool, check_case, reference_inputs
from equivalence.core.compare import compare_layers
from equivalence.core.reference import layerwise_reference
from equivalence.core.spec import StackSpec
from equivalence.frameworks import registry
from equivalence.frameworks.registry import CAPABILITIES, Framework, entry, get_adapter, names, register, unregister

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "equivalence-numpy"


@pytest.mark.parametrize(("kwargs", "problem"), [
    (dict(name="a b"), "letters, digits and underscores"),
    (dict(adapter="no_colon"), "must be 'module:attribute'"),
    (dict(capabilities=frozenset({"fly"})), "unknown capabilities ['fly']"),
    (dict(styles=()), "at least one build style"),
    (dict(registering_styles=("other",)), "registering styles ['other'] are not among its styles"),
])
def test_an_entry_says_what_is_wrong_with_it(kwargs, problem):
    fields = dict(name="demo", adapter="demo.adapter:Demo", packages=("demo",), styles=("sequential",)) | kwargs
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        Framework(**fields)


def test_the_builtin_frameworks_are_registered_with_what_the_suite_reads():
    assert {"torch", "keras", "mxnet"} <= set(names())
    assert registry.defaults() == ("torch", "keras")
    assert entry("torch").registering == ("sequential", "modulelist")  # plain_list: the trap, nothing registered
    assert entry("keras").registering == entry("keras").styles
    assert all(set(entry(name).capabilities) == set(CAPABILITIES) for name in ("torch", "keras", "mxnet"))
    with pytest.raises(ValueError, match="unknown framework 'nosuch'; use one of torch, keras, mxnet"):
        entry("nosuch")


def test_a_name_is_registered_once_unless_replaced():
    first = Framework("demo", "demo.adapter:Demo", packages=("demo",), styles=("sequential",))
    register(first)
    try:
        register(first)  # the same entry again: fine
        with pytest.raises(ValueError, match="registered already; pass replace=True"):
            register(Framework("demo", "other:Other", packages=(), styles=("sequential",)))
        register(Framework("demo", "other:Other", packages=(), styles=("sequential",)), replace=True)
        assert entry("demo").adapter == "other:Other"
    finally:
        unregister("demo")
    assert "demo" not in names()


def test_a_framework_s_facts_reach_the_core_through_its_entry():
    """``runs_on`` and ``weights_dtype`` live in the entry, not in the core: a framework running torch's ops gets
    torch's named differences, one storing float16 weights the error model's weight rounding term."""
    from equivalence.core.known_differences import extra_error
    from equivalence.core.layout import LayerWeights
    from equivalence.core.tolerance import rounded_weights_error

    weights = LayerWeights(np.full((2, 2), 0.1), np.full(2, 0.1))
    x = np.ones((3, 2))
    assert extra_error("demo", "softplus", "float64") == 0.0
    assert rounded_weights_error("demo", x=x, weights=weights, activation="tanh", dtype="float32") == 0.0
    register(Framework("demo", "other:Other", packages=(), styles=("sequential",), runs_on="torch",
                       weights_dtype="float16"))
    try:
        assert extra_error("demo", "softplus", "float64") == extra_error("torch", "softplus", "float64") > 0
        assert rounded_weights_error("demo", x=x, weights=weights, activation="tanh", dtype="float32") > 0
    finally:
        unregister("demo")


def test_a_missing_package_is_unavailable_with_the_install_hint():
    register(Framework("demo", "equivalence_no_such_module:Demo", packages=("equivalence_no_such_module",),
                       styles=("sequential",), install_hint="pip install the-demo"))
    try:
        with pytest.raises(registry.FrameworkUnavailable, match="needs the 'equivalence_no_such_module' package.*"
                                                                 r"\(pip install the-demo\)"):
            get_adapter("demo")
    finally:
        unregister("demo")


@pytest.mark.parametrize("package", ["equivalence.frameworks.torch", "equivalence.frameworks.keras",
                                     "equivalence.frameworks.mxnet"])
def test_a_framework_package_answers_an_unknown_name_with_attribute_error(package):
    """``pickle.whichmodule`` asks every module in ``sys.modules`` for a name and catches only AttributeError:
    torch.compile's graph cache pickled through it and met MXNet's ModuleNotFoundError (found by make runtimes)."""
    module = __import__(package, fromlist=["known_differences"])
    assert getattr(module, "no_such_name_anywhere", None) is None


def test_pickle_finds_a_function_s_module_while_the_framework_packages_are_imported():
    import pickle

    from equivalence.frameworks import builtin  # imports the three packages' data modules, so sys.modules has them

    def local():  # pragma: no cover - only looked up
        pass

    local.__module__ = None
    assert builtin.FRAMEWORKS
    assert pickle.whichmodule(local, "no_such_name_anywhere") == "__main__"


@pytest.fixture
def numpy_framework(monkeypatch):
    """The example package registered in-process (the entry point is tested in a fresh process below)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from equivalence_numpy import framework

    register(framework())
    yield get_adapter("numpy")
    unregister("numpy")


def test_a_framework_without_capabilities_checks_numbers_and_declines_the_rest(numpy_framework):
    adapter = numpy_framework
    spec = StackSpec(input_width=6, widths=(6, 6, 3), activations=("gelu", "tanh", "softmax"), dtype="float64")
    case = make_case(spec, seed=3, batch=5)
    comparison = check_case(case, {"numpy": (adapter, LayerPool().stack(adapter, spec))})
    assert comparison.passed, comparison.message()
    assert not any(adapter.can(capability) for capability in CAPABILITIES)
    model = adapter.build(spec, "sequential")
    for call, capability in ((lambda: adapter.loss_gradients(model, case.x), "gradients"),
                             (lambda: adapter.sgd_step(model, case.x, learning_rate=0.1), "sgd"),
                             (lambda: adapter.save(model, "x.npz"), "save_load")):
        with pytest.raises(NotImplementedError, match=f"numpy does not declare '{capability}'"):
            call()
    assert adapter.cannot("sigmoid", "bfloat16") == "the numpy example computes float64 and float32 only"
    assert adapter.cannot("sigmoid", "float32") is None


def test_a_transposed_square_layer_fails_in_the_example_framework_too(numpy_framework):
    """The example is a real framework to the suite: the same check catches the same porting bug."""
    adapter = numpy_framework
    spec = StackSpec(input_width=8, widths=(8, 8), activations="sigmoid")
    case = make_case(spec, seed=1, batch=4)
    model = adapter.build(spec, "sequential")
    adapter.set_weights(model, case.weights)
    model[1].W = model[1].W.T.copy()  # shape-valid, wrong
    traces = layerwise_reference(spec, case.weights, case.x)
    got = {"numpy": adapter.layer_outputs(model, reference_inputs(spec, traces))}
    comparison = compare_layers(spec, case.weights, case.x, got, reference=traces)
    assert [r.layer for r in comparison.failures] == [1]


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory) -> dict[str, str]:
    """``pip install`` of the example into a folder of its own: its entry point is all equivalence sees."""
    target = tmp_path_factory.mktemp("site")
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                          "--disable-pip-version-check", "--target", str(target), str(EXAMPLE)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    for scratch in (EXAMPLE / "build", *EXAMPLE.glob("*.egg-info")):  # setuptools' leftovers: the example stays
        shutil.rmtree(scratch, ignore_errors=True)
    return {**os.environ, "PYTHONPATH": str(target)}


def _cli(env: dict[str, str], *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "equivalence", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


def test_the_installed_example_shows_in_env(installed_example):
    run = _cli(installed_example, "env", "--json")
    assert run.returncode == 0, run.stderr
    fp = json.loads(run.stdout)
    assert fp["frameworks"]["numpy"] == {"numpy_dense": "0.1.0", "numpy": np.__version__}


def test_the_installed_example_runs_the_report(installed_example, tmp_path):
    pytest.importorskip("rich", reason="report needs rich (the report extra)")
    run = _cli(installed_example, "report", "--framework", "numpy", "-k", "_f32_n1_", "--out", str(tmp_path),
               "--quiet")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "numpy-dense 0.1.0" in run.stdout and "all agree" in run.stdout, run.stdout
    assert "Traceback" not in run.stderr


def test_the_installed_example_verifies_the_golden_vectors(installed_example):
    run = _cli(installed_example, "verify", "golden", "--framework", "numpy")
    assert run.returncode == 0, run.stdout + run.stderr
    assert ("numpy: 68 of 174 cases not run: the numpy example computes float64 and float32 only (32 cases); numpy "
            "builds dense stacks only here (no conv, pooling, norm, sequence or recurrent layers) (36 cases)"
            ) in run.stdout, run.stdout
    assert "numpy vs torch@recorded" not in run.stdout  # no failure lines
    # the last line: every case agrees (drift of the numpy reference on another numpy/BLAS is reported above it)
    assert run.stdout.rstrip().splitlines()[-1].startswith("OK: all 174 cases agree within the error model"), \
        run.stdout[-500:]
