"""The framework-version matrix: ``make matrix`` (or ``nox``) runs ``check`` and ``guard`` per version.

Each session gets its own virtualenv under ``.nox/`` with torch 2.13.0 and one
``tensorflow-cpu`` with the Keras released beside it, then runs the test suite
(``check``) or verifies the shipped golden vectors (``guard``). The guard session
under another TensorFlow shows the drift against the recorded outputs.

Keras' backend is the third axis (``KERAS_BACKEND``): every TensorFlow runs the
tensorflow backend; the newest one also runs Keras on torch and on jax (the jax
cell installs jax, pinned in ``JAX``).

To add a TensorFlow, add a line to ``TENSORFLOW``. To add a torch, see the README
("The version matrix"): any torch other than 2.13.0 is a multi-GB CUDA build on
the project's machines.

``history`` (``make history``): one session per historical (TensorFlow, Keras) pair in ``HISTORY``, each replaying
``golden/`` in its own venv (``equivalence.guard.history replay``); ``make history`` then prints the numerical
changelog between consecutive pairs, from Keras 2 (tf-keras) through every Keras 3 release line. Not among the
default sessions: twenty venvs of ~2 GB (a ~230 MB TensorFlow wheel each), ~1.5 minutes each.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["check", "guard"]

TORCH = ("2.13.0",)
"""torch versions; 2.13.0 is the only CPU build on local disk here."""

TENSORFLOW = {
    # tensorflow-cpu: the Keras 3 release current when it came out (it only asks for keras>=3.10)
    "2.20.0": "3.11.3",
    "2.21.0": "3.15.1",
}

KERAS_BACKENDS = ("tensorflow", "torch", "jax")
"""Keras backends; tensorflow under every TensorFlow, the others under the newest."""

JAX = "0.10.2"
"""jax and jaxlib for the jax cell (what constraints.txt pins for make check KERAS_BACKEND=jax)."""

_NEWEST_TF = max(TENSORFLOW, key=lambda v: tuple(map(int, v.split("."))))
CELLS = [
    nox.param(torch, tf, TENSORFLOW[tf], backend, id=f"torch{torch}-tf{tf}-{backend}")
    for torch in TORCH for tf in TENSORFLOW for backend in KERAS_BACKENDS
    if backend == "tensorflow" or tf == _NEWEST_TF
]


HISTORY = (
    # (tensorflow-cpu, keras, numpy): Keras 2 first, then each Keras 3 release line (its newest patch) with the
    # TensorFlow it was released beside. TF 2.16-2.18 were built against numpy 1.x; TF 2.21 asks for keras>=3.12.
    ("2.16.2", "tf-keras 2.16.0", "numpy<2"),  # Keras 2: tf-keras beside TF 2.16, under TF_USE_LEGACY_KERAS=1
    ("2.16.2", "3.0.5", "numpy<2"),
    ("2.16.2", "3.1.1", "numpy<2"),
    ("2.16.2", "3.2.1", "numpy<2"),
    ("2.16.2", "3.3.0", "numpy<2"),
    ("2.16.2", "3.3.1", "numpy<2"),
    ("2.16.2", "3.3.2", "numpy<2"),
    ("2.16.2", "3.3.3", "numpy<2"),
    ("2.17.1", "3.4.1", "numpy<2"),
    ("2.17.1", "3.5.0", "numpy<2"),
    ("2.18.1", "3.6.0", "numpy<2"),
    ("2.18.1", "3.7.0", "numpy<2"),
    ("2.18.1", "3.8.0", "numpy<2"),
    ("2.19.1", "3.9.2", "numpy>=2"),
    ("2.19.1", "3.10.0", "numpy>=2"),
    ("2.20.0", "3.11.3", "numpy>=2"),
    ("2.20.0", "3.12.4", "numpy>=2"),
    ("2.21.0", "3.13.2", "numpy>=2"),
    ("2.21.0", "3.14.1", "numpy>=2"),
    ("2.21.0", "3.15.1", "numpy>=2"),
)
"""Release order: the changelog diffs each pair against the one before it."""

TF_KERAS = "tf-keras "
"""How a Keras 2 row names its keras: ``tf-keras <version>``."""

KERAS3_BESIDE_KERAS2 = "3.0.5"
"""The Keras 3 a Keras 2 row's venv also holds (tensorflow-cpu 2.16 asks for keras>=3.0; never imported there)."""


def tf_keras_version(keras: str) -> str | None:
    """The tf-keras version of a Keras 2 row, None for a Keras 3 one."""
    return keras[len(TF_KERAS):] if keras.startswith(TF_KERAS) else None


def history_label(tf: str, keras: str) -> str:
    legacy = tf_keras_version(keras)
    return f"tf{tf}-tf-keras{legacy}" if legacy else f"tf{tf}-keras{keras}"


HISTORY_LABELS = [history_label(tf, keras) for tf, keras, _ in HISTORY]
HISTORY_PARAMS = [nox.param(*pair, id=history_label(*pair[:2])) for pair in HISTORY]


def _install_history(session: nox.Session, tf: str, keras: str, numpy: str, package: str) -> str:
    """torch 2.13.0, tensorflow-cpu ``tf`` and ``keras`` (Keras 2: tf-keras ``--no-deps``, as ``make keras2``);
    the golden vectors to replay there: Keras 2's own baseline (``tests/golden-keras2``, the same cases recorded
    under Keras 2: ``golden/`` is Keras 3's, and its hard_sigmoid cases fail under Keras 2 by design)."""
    legacy = tf_keras_version(keras)
    session.install(f"torch=={TORCH[0]}", f"tensorflow-cpu=={tf}", f"keras=={legacy and KERAS3_BESIDE_KERAS2 or keras}",
                    numpy, "-e", package)
    session.env["KERAS_BACKEND"] = "tensorflow"
    if legacy:
        # tf-keras asks for the full `tensorflow` wheel (a second, CUDA-sized TF); beside tensorflow-cpu it runs as is
        session.install("--no-deps", f"tf-keras=={legacy}")
        session.env["TF_USE_LEGACY_KERAS"] = "1"
        return "tests/golden-keras2"
    return "golden"


@nox.session
@nox.parametrize(("tf", "keras", "numpy"), HISTORY_PARAMS)
def history(session: nox.Session, tf: str, keras: str, numpy: str) -> None:
    """Replay the golden vectors under one historical (tensorflow-cpu, keras) pair with torch 2.13.0."""
    folder = _install_history(session, tf, keras, numpy, ".")
    session.run("python", "-m", "equivalence.guard.history", "replay", folder, "--label", history_label(tf, keras),
                "--out", "history", success_codes=[0, 1])


@nox.session(name="history-check")
@nox.parametrize(("tf", "keras", "numpy"), HISTORY_PARAMS)
def history_check(session: nox.Session, tf: str, keras: str, numpy: str) -> None:
    """The test suite on torch and Keras under one historical pair (the smoke profile unless posargs say
    otherwise). The runtimes (tf.function, XLA, LiteRT, ...) are measured on the current releases only: left out."""
    _install_history(session, tf, keras, numpy, ".[test,report]")
    session.run("python", "-m", "equivalence", "env")
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--frameworks", "torch,keras",
                *(session.posargs or ["--hypothesis-profile", "smoke"]))


def _install(session: nox.Session, torch: str, tf: str, keras: str, backend: str) -> None:
    jax = (f"jax=={JAX}", f"jaxlib=={JAX}") if backend == "jax" else ()
    session.install(f"torch=={torch}", f"tensorflow-cpu=={tf}", f"keras=={keras}", *jax, "-e", ".[test,report]")
    session.env["KERAS_BACKEND"] = backend
    session.run("python", "-m", "equivalence", "env")


@nox.session
@nox.parametrize(("torch", "tf", "keras", "backend"), CELLS)
def check(session: nox.Session, torch: str, tf: str, keras: str, backend: str) -> None:
    """The test suite under one (torch, tensorflow-cpu, keras, Keras backend) cell."""
    _install(session, torch, tf, keras, backend)
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *session.posargs)


@nox.session
@nox.parametrize(("torch", "tf", "keras", "backend"), CELLS)
def guard(session: nox.Session, torch: str, tf: str, keras: str, backend: str) -> None:
    """The shipped golden vectors verified under one cell (drift is reported, disagreement fails)."""
    _install(session, torch, tf, keras, backend)
    session.run("python", "-m", "equivalence", "verify", "golden", *session.posargs)
