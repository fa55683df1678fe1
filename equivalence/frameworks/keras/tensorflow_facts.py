"""TensorFlow's facts for the fingerprint, shared by Keras 3 on TensorFlow and Keras 2 (tf-keras).

Imports TensorFlow only, never a Keras: Keras 2's adapter must not load Keras 3 to learn TF's settings.
"""

from __future__ import annotations

import os

import tensorflow as tf


def onednn_enabled() -> str:
    """Whether TF's oneDNN custom ops are on, as TF itself decides (the variable, else the CPU: on with AVX-512,
    off on an AVX2-only CPU; docs/measurements.md). The answer comes from TF's util port (``IsMklEnabled``),
    which has no public API; "unknown" if it moves."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # pragma: no cover - depends on the TF build
        return "unknown"
    is_enabled = getattr(_pywrap_util_port, "IsMklEnabled", None)
    return "unknown" if is_enabled is None else ("on" if is_enabled() else "off")


def tensorflow_versions() -> dict[str, str]:
    """TF's version, thread counts and oneDNN switch: what decides a TF kernel's bits."""
    return {
        "tensorflow": tf.__version__,
        # 0 means "TF chooses": one thread per core.
        "tf_intra_op_threads": str(tf.config.threading.get_intra_op_parallelism_threads()),
        "tf_inter_op_threads": str(tf.config.threading.get_inter_op_parallelism_threads()),
        "onednn_enabled": onednn_enabled(),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (build default)"),
    }
