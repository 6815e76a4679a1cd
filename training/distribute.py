"""Data parallelism: the same model on several devices or processes, each step splitting the batch.

- `none`: one device (the default).
- `mirrored`: every GPU of this machine, or every CPU device when there is none. TensorFlow
  backend: tf.distribute.MirroredStrategy; JAX backend: keras.distribution.DataParallel.
- `multiworker`: several processes (machines), each started with TF_CONFIG (cluster.py).
  TensorFlow: tf.distribute.MultiWorkerMirroredStrategy; JAX: jax.distributed.initialize and
  keras.distribution.DataParallel over every process's devices. Without TF_CONFIG, one worker.

`--batch-size` is the global batch: a step of R replicas sees batch i whole, replica r the rows
[r B/R, (r+1) B/R) of it, and gradients are all-reduced, so the run follows the schedule of one
device. Under multiworker each process feeds only its replicas' rows (`train_input`); batch i
is drawn from (seed, i) on every process, so the split needs no communication.

Example:
    >>> with data_parallel("mirrored", batch_size=32) as parallel:
    ...     model = GPT(config); model.compile(...)   # build and compile inside the scope
    ...     model.fit(parallel.train_input(batches), validation_data=parallel.validation(val))
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import keras
import numpy as np

from edgellm.training import cluster as cluster_lib

# A worker that died is noticed by the others' health checks: every HEALTH_INTERVAL seconds each
# worker pings its peers (HEALTH_TIMEOUT seconds, 3 tries), then aborts its collectives; so the
# others stop within about HEALTH_INTERVAL + 3 x HEALTH_TIMEOUT = 35 s. Workers wait up to
# WAIT_FOR_CLUSTER seconds at the start for all of them to be up.
HEALTH_INTERVAL, HEALTH_TIMEOUT, WAIT_FOR_CLUSTER = 5, 10, 300


class WorkerLost(RuntimeError):
    """Another worker of the cluster stopped or cannot be reached."""


@dataclass
class Parallel:
    kind: str
    replicas: int  # in the whole cluster
    batch_size: int  # global
    cluster: cluster_lib.Cluster | None = None
    strategy: object = None  # the tf.distribute strategy, under TensorFlow

    @property
    def workers(self) -> int:
        return self.cluster.count if self.cluster else 1

    @property
    def worker(self) -> int:
        return self.cluster.index if self.cluster else 0

    def _rows(self, replica: int) -> slice:
        per = self.batch_size // self.replicas
        return slice(replica * per, (replica + 1) * per)

    def train_input(self, batches: keras.utils.PyDataset):
        """What `fit` takes: `batches` itself, or under multiworker this process's rows of each."""
        if self.kind != "multiworker":
            return batches
        local = self.replicas // self.workers
        mine = [self._rows(r) for r in range(self.worker * local, (self.worker + 1) * local)]
        if self.strategy is None:  # JAX: Keras assembles the global batch from each process's rows
            return _Rows(batches, mine)
        import tensorflow as tf

        def generate():  # per-replica batches, replica by replica: how the strategy deals them out
            for i in range(len(batches)):
                batch = batches[i]
                for rows in mine:
                    yield tuple(a[rows] for a in batch)

        spec = tuple(tf.TensorSpec((mine[0].stop - mine[0].start, *a.shape[1:]), tf.as_dtype(a.dtype))
                     for a in batches[0])
        dataset = lambda context: tf.data.Dataset.from_generator(generate, output_signature=spec).prefetch(2)
        return self.strategy.distribute_datasets_from_function(dataset)

    def validation(self, arrays: tuple) -> tuple:
        """Validation arrays, trimmed so every batch splits evenly over the replicas; under JAX
        multiworker this process's rows of each validation batch (TensorFlow splits them itself)."""
        arrays = tuple(a[: len(a) - len(a) % self.replicas] for a in arrays)
        if self.kind != "multiworker" or self.strategy is not None or self.workers == 1:
            return arrays
        keep = np.concatenate([np.arange(start, min(start + self.batch_size, len(arrays[0])))
                               .reshape(self.workers, -1)[self.worker] for start in
                               range(0, len(arrays[0]), self.batch_size)])
        return tuple(a[keep] for a in arrays)

    @property
    def validation_batch_size(self) -> int:
        jax_shares = self.kind == "multiworker" and self.strategy is None
        return self.batch_size // self.workers if jax_shares else self.batch_size

    def agree(self, items: dict) -> None:
        """Stop with a message naming what differs when the workers were not started alike."""
        if self.workers == 1:
            return
        hashes = np.array([cluster_lib.fingerprints(items)], np.int64)  # (1, items)
        if self.strategy is not None:
            import tensorflow as tf

            value = self.strategy.experimental_distribute_values_from_function(lambda _: tf.constant(hashes))
            gathered = np.asarray(self.strategy.gather(value, axis=0))[:: self.replicas // self.workers]
        else:
            from jax.experimental import multihost_utils

            gathered = np.asarray(multihost_utils.process_allgather(hashes)).reshape(self.workers, -1)
        message = cluster_lib.disagreement(items, gathered, self.worker)
        if message:
            raise ValueError(message)

    def prepare(self, model, sample: tuple) -> None:
        """Two steps around Keras 3.15's fit under TensorFlow's multiworker strategy, which fails
        in more than one process (keras/src/backend/tensorflow/trainer.py):

        - fit first all-reduces one batch of the distributed dataset to learn its shapes, which
          fails for a tuple of integer tensors ("Attempt to convert a value (PerReplica...)").
          So the compiled model's loss and metrics are built here from a local batch, and fit
          takes the strategy of the scope it runs in instead.
        - each step's logs are averaged over the replicas with `strategy.reduce(MEAN, v, axis=0)`,
          which fails for the scalars they are. So the steps return them with one axis, (1,).
        """
        if self.kind != "multiworker" or self.strategy is None or not self.strategy.extended._in_multi_worker_mode():
            return  # one worker: Keras takes its single-process path, which works
        import tensorflow as tf

        model._symbolic_build(data_batch=tuple(a[self._rows(0)] for a in sample))
        model._distribute_strategy = None  # the trainer then asks tf.distribute for the scope's
        for name in ("train_step", "test_step"):
            step = getattr(model, name)
            setattr(model, name, lambda data, step=step: {k: tf.reshape(v, (1,)) for k, v in step(data).items()})


class _Rows(keras.utils.PyDataset):
    """The given rows of each batch of `batches`."""

    def __init__(self, batches, rows: list[slice]):
        super().__init__()
        self.batches, self.rows = batches, rows

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return tuple(np.concatenate([a[r] for r in self.rows]) for a in self.batches[index])


@contextlib.contextmanager
def data_parallel(kind: str, batch_size: int, cluster: cluster_lib.Cluster | None = None):
    """Scope in which to build, compile and fit the model. Yields a `Parallel`."""
    backend = keras.backend.backend()
    if kind == "none":
        yield Parallel(kind, 1, batch_size)
        return
    if backend == "tensorflow":
        strategy = _tf_strategy(kind, cluster)
        _check_divides(batch_size, strategy.num_replicas_in_sync)
        with strategy.scope():
            yield Parallel(kind, strategy.num_replicas_in_sync, batch_size, cluster, strategy)
    elif backend == "jax":
        devices = _jax_devices(kind, cluster)
        _check_divides(batch_size, len(devices))
        distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=kind != "multiworker")
        with distribution.scope():
            yield Parallel(kind, len(devices), batch_size, cluster if kind == "multiworker" else None)
    else:
        raise ValueError(f"--distribute {kind} is not available with the {backend} backend. "
                         f"Received: distribute={kind!r}. Use the tensorflow or jax backend (KERAS_BACKEND).")


def xla_works(kind: str) -> bool:
    """False for TensorFlow strategies over CPU devices: XLA then places every replica's step on
    the first CPU device and fails to reach the others' variables."""
    if kind == "none" or keras.backend.backend() != "tensorflow":
        return True
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def lost_worker(error: BaseException) -> bool:
    """Whether `error` is how the backend reports a collective that a lost worker broke."""
    if keras.backend.backend() == "jax":
        import jax

        return isinstance(error, jax.errors.JaxRuntimeError)
    import tensorflow as tf

    return isinstance(error, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                              tf.errors.CancelledError, tf.errors.FailedPreconditionError,
                              tf.errors.AbortedError, tf.errors.InternalError))


def _tf_strategy(kind: str, cluster: cluster_lib.Cluster | None):
    import tensorflow as tf

    if kind == "multiworker":
        from tensorflow.python.distribute import collective_all_reduce_strategy

        # the class attributes TensorFlow's own multi-worker tests tune (no public setting)
        extended = collective_all_reduce_strategy.CollectiveAllReduceExtended
        extended._check_health_interval, extended._check_health_timeout = HEALTH_INTERVAL, HEALTH_TIMEOUT
        extended._check_health_initial_timeout = WAIT_FOR_CLUSTER
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as error:
            if "Timeout waiting for the cluster" not in str(error):
                raise
            raise ValueError(f"Not every worker of the cluster came up within {WAIT_FOR_CLUSTER} s. Received: "
                             f"cluster.worker={list(cluster.workers)}. Start `edgellm train` on every machine "
                             "listed, each with its own task.index.") from None
    gpus = tf.config.list_logical_devices("GPU")
    devices = gpus or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in devices])


def _jax_devices(kind: str, cluster: cluster_lib.Cluster | None) -> list:
    if kind == "multiworker" and cluster is not None:
        import jax

        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes talk over TCP
        keras.distribution.initialize(",".join(cluster.workers), cluster.count, cluster.index)
        return jax.devices()  # every process's
    return keras.distribution.list_devices()  # the accelerators, or else the CPU devices


def _check_divides(batch_size: int, replicas: int) -> None:
    if batch_size % replicas:
        raise ValueError(f"batch_size must divide by the number of devices ({replicas}) to split "
                         f"each batch evenly. Received: batch_size={batch_size}. Use a multiple of "
                         f"{replicas}.")
