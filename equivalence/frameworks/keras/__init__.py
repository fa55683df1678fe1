"""Keras: Keras 3's adapter (``adapter``) and its backends (``tensorflow``, ``torch``, ``jax``), legacy Keras 2
(``legacy``), which of them runs (``variant``), a user's model walked (``walk``), tf.function and XLA
(``graph``), LiteRT on TensorFlow's converter (``litert``), and their measured differences
(``known_differences``, data only).

Importing this package imports no Keras nor TensorFlow, so the registry reads the facts without them; the
adapter's names (``KerasAdapter``, ``ACTIVATIONS``, ...) load Keras 3 on first use.
"""

from __future__ import annotations

import os

from equivalence.frameworks.base import adapter_names

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # before any module of the package imports Keras
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__getattr__ = adapter_names(__name__)
