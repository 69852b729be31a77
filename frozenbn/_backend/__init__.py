"""What frozenbn does differently on each Keras backend, chosen in one place.

`native` is the module of the running backend: `tensorflow`, `jax` or
`torch` of this package, or `generic` (one device, `keras.ops` only, eager
statistics steps) for any other. Each extends `generic`, whose `__all__` is
the interface: native gradients of frozen BN and of a fused layer's kernel
scaling, a statistics pass's fused batch moments, its compiled step, and
where its batches run (`tf.distribute` replicas, a JAX `keras.distribution`).
This is the only module that asks Keras which backend runs.
"""

import importlib

import keras

BACKEND = keras.config.backend()

native = importlib.import_module(
    f"{__name__}."
    + (BACKEND if BACKEND in ("tensorflow", "jax", "torch") else "generic")
)
