"""Keras on jax: every layer through ``jax.jit`` (what ``predict`` runs there), float64 only with x64 on."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import jax
import keras

from equivalence.frameworks.keras import KerasAdapter


class JaxKeras(KerasAdapter):
    backend = "jax"

    def __init__(self) -> None:
        super().__init__()
        self._jitted: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def run(self, block: Any, x: Any) -> Any:
        """Through ``jax.jit`` of the call with the variables' values passed in (``keras.StatelessScope``),
        compiled once per block and input shape: eager jax compiles every op for every new shape, which made
        the suite compile-bound (docs/measurements.md). The jitted and eager results are bit-identical but for
        float16/bfloat16 softmax (one ulp: XLA keeps excess precision in the fusion). A jitted block keeps the
        code it was traced with: ``forget_compiled`` drops them all."""
        fn = self._jitted.get(block)
        if fn is None:
            ref = weakref.ref(block)  # the cache must not keep a pooled layer alive

            def call(values: list[Any], x: Any) -> Any:
                # Not stateless_call: on a bare layer it runs call(), skipping __call__'s input casts and
                # autocast (a mixed_float16 Dense would return float32). predict runs __call__ too.
                layer = ref()
                with keras.StatelessScope(state_mapping=list(zip(layer.trainable_variables, values))):
                    return layer(x)

            fn = self._jitted[block] = jax.jit(call)
        return fn([v.value for v in block.trainable_variables], x)

    def forget_compiled(self) -> None:
        self._jitted.clear()

    def float64_available(self) -> bool:
        """Keras on jax truncates float64 to float32 (with only a UserWarning) unless jax_enable_x64 is on."""
        return bool(jax.config.jax_enable_x64)

    def autodiff(self, forward: Any, x: Any, variables: Sequence[Any]) -> tuple[Any, list[Any]]:
        """``jax.grad`` of a pure function, the variables' values substituted through ``keras.StatelessScope``."""

        def loss(x_value: Any, values: list[Any]) -> Any:
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return self.mean(forward(x_value))

        dx, grads = jax.grad(loss, argnums=(0, 1))(x, [v.value for v in variables])
        return dx, list(grads)

    def backend_versions(self) -> dict[str, str]:
        return {"jax": jax.__version__}
