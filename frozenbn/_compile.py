"""Runs one step of a statistics pass compiled, the fastest honest way.

`frozenbn._stats` writes a step as `body(run_model, state, x, batch_index)`
in `keras.ops`; `Step` runs it the running backend's way
(`frozenbn._backend`: a `tf.function`, a `jax.jit` of `stateless_call`, or
eagerly under `torch.no_grad()`), batches placed on the model's replicas.
The state stays on the device until `finish`. A step that fails to compile
runs eagerly, with a warning giving the reason.
"""

import logging

import numpy as np

from frozenbn import _checks
from frozenbn._backend import native

logger = logging.getLogger("frozenbn")


class Step:
    """`body(run_model, state, x, batch_index) -> (state, outputs)` compiled
    for `model`, batches placed where its variables are (`placement`)."""

    def __init__(self, model, body):
        self._model = model
        self._body = body
        self._where = native.placement(model)
        self._pending = None
        self._compiled = native.compile_step(model, body, self._where)
        self._eager = (bool(getattr(model, "run_eagerly", False))
                       or self._compiled is None)

    @property
    def eager(self) -> bool:
        """Whether the step runs eagerly (op by op)."""
        return self._eager

    def init_state(self, state):
        """Places a host state (NumPy arrays) where the steps keep it."""
        return native.place_state(self._where, state)

    def build(self, x) -> None:
        """Builds the model by calling it once, eagerly, in inference mode."""
        with native.no_grad():
            self._model(native.place_batch(None, x), training=False)

    def __call__(self, state, x, batch_index: int):
        x = native.place_batch(self._where, x)
        index = np.int32(batch_index)
        with native.no_grad():
            if not self._eager:
                try:
                    result = self._compiled(state, x, index)
                except Exception as compiled_error:  # noqa: BLE001
                    result = self._eager_call(state, x, index)
                    logger.warning(
                        "The statistics pass of model '%s' runs eagerly (op "
                        "by op, slower) because its compiled step failed: "
                        "%s",
                        self._model.name,
                        f"{type(compiled_error).__name__}: "
                        f"{_checks.one_line(compiled_error)}",
                    )
                    self._eager = True
            else:
                result = self._eager_call(state, x, index)
        # Where steps run asynchronously (JAX), wait for the step before
        # this one, so at most two steps are in flight.
        if self._pending is not None:
            native.block_until_ready(self._pending)
        self._pending = result[0]
        return result[0], native.local_outputs(self._where, result[1])

    def finish(self, state):
        """The state pooled over all replicas and workers, as NumPy arrays."""
        self._pending = None
        return native.pool_replicas(self._where, state)

    def _eager_call(self, state, x, index):
        return native.eager_step(
            self._model, self._body, self._where, state, x, index)
