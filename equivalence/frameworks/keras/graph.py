"""Keras on TensorFlow through its graph paths: ``tf.function`` (what ``predict`` and ``fit`` run there) and XLA
(``tf.function(jit_compile=True)``), each a registered framework of its own (``keras_graph``, ``keras_xla``).

Eager Keras (``keras``) runs each op as TF's eager kernel; a graph lets Grappler and oneDNN rewrite and fuse
(MatMul + BiasAdd + activation into one ``_FusedMatMul``), and XLA compiles the layer into its own fused CPU
kernels. Each changes bits (``tests/frameworks/test_runtimes.py`` measures which), all within the error model.

A layer is traced (and, for XLA, compiled) once per input shape, and the cache is per layer and weakly held:
the weights are variables the function reads, so a weight change needs no retrace. ``predict`` itself is not
called per layer: it wraps the same ``tf.function`` in a data pipeline and batches of 32, at ~40 ms a call
(docs/measurements.md); ``model.jit_compile`` is False on a CPU TensorFlow (measured), so ``predict`` is the
``keras_graph`` path.
"""

from __future__ import annotations

import weakref
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from equivalence.core.dtypes import numpy_dtype
from equivalence.frameworks.keras import ACTIVATIONS
from equivalence.frameworks.keras.tensorflow import TensorFlowKeras


class GraphKeras(TensorFlowKeras):
    """Every layer and model through ``tf.function`` (no XLA)."""

    name = "keras_graph"
    chain_builder = False  # its layers traced: a chain built here would run eagerly
    jit_compile = False

    def __init__(self) -> None:
        super().__init__()
        self._compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @property
    def variant(self) -> str:
        return f"keras/tensorflow-{'xla' if self.jit_compile else 'graph'}"

    def run(self, block: Any, x: Any) -> Any:
        fn = self._compiled.get(block)
        if fn is None:
            ref = weakref.ref(block)  # the cache must not keep a pooled layer alive

            @tf.autograph.experimental.do_not_convert
            def call(t: Any) -> Any:
                return ref()(t)

            fn = self._compiled[block] = tf.function(call, jit_compile=self.jit_compile, autograph=False)
        return super().run(fn, x)

    def forget_compiled(self) -> None:
        self._compiled.clear()

    def activation(self, name: str, x: np.ndarray, dtype: str) -> np.ndarray:
        """The activation alone, through the same ``tf.function`` (XLA or not) as the layers."""
        fn = keras.activations.get(ACTIVATIONS[name]) if isinstance(ACTIVATIONS[name], str) else ACTIVATIONS[name]
        tensor = keras.ops.convert_to_tensor(np.asarray(x, dtype=np.float64).astype(numpy_dtype(dtype)), dtype=dtype)
        compiled = tf.function(tf.autograph.experimental.do_not_convert(lambda t: tf.cast(fn(t), tf.float64)),
                               jit_compile=self.jit_compile, autograph=False)
        return compiled(tensor).numpy()

    def backend_versions(self) -> dict[str, str]:
        return {**super().backend_versions(), "tf_function_jit_compile": str(self.jit_compile)}


class XlaKeras(GraphKeras):
    """Every layer and model through ``tf.function(jit_compile=True)``: XLA's CPU compiler."""

    name = "keras_xla"
    jit_compile = True
