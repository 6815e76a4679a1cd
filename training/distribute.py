"""Data parallelism: the same model on several devices, each step splitting the batch among them.

- `none`: one device (the default).
- `mirrored`: every GPU of this machine, or every CPU device when there is no GPU. TensorFlow
  backend: tf.distribute.MirroredStrategy; JAX backend: keras.distribution.DataParallel.
- `multiworker`: several machines, TensorFlow backend: tf.distribute.MultiWorkerMirroredStrategy.
  Start the same command on every machine with TF_CONFIG describing the cluster (see
  docs/training.md); worker 0 is the chief. Without TF_CONFIG it runs as one worker.

Weights are replicated and gradients all-reduced, so a step sees the whole `--batch-size` (it must
divide by the number of devices) and the run follows the same schedule as on one device.

Example:
    >>> with data_parallel("mirrored", batch_size=32) as replicas:
    ...     model = GPT(config); model.compile(...)   # build and compile inside the scope
"""

from __future__ import annotations

import contextlib

import keras


@contextlib.contextmanager
def data_parallel(kind: str, batch_size: int):
    """Scope in which to build, compile and fit the model. Yields the number of replicas."""
    backend = keras.backend.backend()
    if kind == "none":
        yield 1
        return
    if backend == "tensorflow":
        strategy = _tf_strategy(kind)
        _check_divides(batch_size, strategy.num_replicas_in_sync)
        with strategy.scope():
            yield strategy.num_replicas_in_sync
    elif backend == "jax" and kind == "mirrored":
        devices = keras.distribution.list_devices()  # the accelerators, or else the CPU devices
        _check_divides(batch_size, len(devices))
        with keras.distribution.DataParallel(devices=devices).scope():
            yield len(devices)
    else:
        raise ValueError(f"--distribute {kind} is not available with the {backend} backend. "
                         f"Received: distribute={kind!r}. Use mirrored (TensorFlow or JAX) or "
                         "multiworker (TensorFlow), or set KERAS_BACKEND.")


def xla_works(kind: str) -> bool:
    """False for TensorFlow strategies over CPU devices: XLA then places every replica's step on
    the first CPU device and fails to reach the others' variables."""
    if kind == "none" or keras.backend.backend() != "tensorflow":
        return True
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def _tf_strategy(kind: str):
    import tensorflow as tf

    if kind == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    devices = gpus or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in devices])


def _check_divides(batch_size: int, replicas: int) -> None:
    if batch_size % replicas:
        raise ValueError(f"batch_size must divide by the number of devices ({replicas}) to split "
                         f"each batch evenly. Received: batch_size={batch_size}. Use a multiple of "
                         f"{replicas}.")
