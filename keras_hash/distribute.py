"""Multi-worker data-parallel training (``MultiWorkerMirroredStrategy``).

Every host runs the same training script; ``TF_CONFIG`` tells each one the
cluster and its own place in it (:func:`worker_config` writes it). Worker 0
is the chief: it alone writes backups and final files
(:class:`keras_hash.callbacks.StepBackup`, :class:`keras_hash.training.Run`),
into a folder every worker must see (a shared file system), and every worker
restores from it. See ``docs/multi_worker.md``.

```python
os.environ["TF_CONFIG"] = keras_hash.distribute.worker_config(
    ["10.0.0.1:2222", "10.0.0.2:2222"], index=0  # 1 on the second host
)
strategy = tf.distribute.MultiWorkerMirroredStrategy()
with strategy.scope():
    model = keras_hash.HashNet(backbone, bits=32)
    model.compile(optimizer="adam")
model.fit(dataset)  # the global batch is split over the workers
```

The helpers at the end (:func:`first_local_batch`, :func:`logs_for_multi_worker`)
work around two places where Keras 3's TensorFlow trainer fails under this
strategy with more than one worker (keras-team/keras#20585);
:class:`keras_hash.HashModel` uses them, so its ``fit`` works there. A plain
``keras.Model`` (Keras 3.15) still fails.
"""

from __future__ import annotations

import json

import tensorflow as tf


def worker_config(workers, index: int) -> str:
    """The ``TF_CONFIG`` (JSON text) of worker ``index`` in a cluster of ``workers``.

    ```python
    hosts = ["10.0.0.1:2222", "10.0.0.2:2222"]
    os.environ["TF_CONFIG"] = keras_hash.distribute.worker_config(hosts, 1)
    ```

    Args:
        workers: the ``"host:port"`` addresses of all workers, in the same
            order on every host. The port is the one this worker's gRPC
            server listens on; worker 0 is the chief.
        index: this host's position in ``workers``.

    Raises:
        TypeError: ``workers`` is not a list of strings, or ``index`` not an int.
        ValueError: an address without a valid port, a repeated address, or
            ``index`` out of range.
    """
    if isinstance(workers, str) or not isinstance(workers, (list, tuple)):
        raise TypeError(f"workers must be a list of 'host:port', got {workers!r}")
    if not workers:
        raise ValueError("workers must name at least one 'host:port'")
    for address in workers:
        if not isinstance(address, str):
            raise TypeError(f"worker addresses must be strings, got {address!r}")
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"worker address {address!r} is not 'host:port'")
    if len(set(workers)) != len(workers):
        raise ValueError(f"worker addresses repeat: {list(workers)}")
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"index must be an int, got {index!r}")
    if not 0 <= index < len(workers):
        raise ValueError(f"index must be in [0, {len(workers)}), got {index}")
    return json.dumps(
        {
            "cluster": {"worker": list(workers)},
            "task": {"type": "worker", "index": index},
        }
    )


def num_workers(strategy=None) -> int:
    """Number of worker processes of ``strategy`` (the current one by default).

    1 for one-process strategies (default, ``MirroredStrategy``, a
    ``MultiWorkerMirroredStrategy`` without a cluster).
    """
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    jobs = resolver.cluster_spec().as_dict()
    return max(1, len(jobs.get("chief", ())) + len(jobs.get("worker", ())))


def is_multi_worker(strategy=None) -> bool:
    """Whether ``strategy`` is a ``MultiWorkerMirroredStrategy`` over 2+ workers."""
    strategy = strategy or tf.distribute.get_strategy()
    return (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and num_workers(strategy) > 1
    )


def is_chief(strategy=None) -> bool:
    """Whether this process writes files (backups, models) for ``strategy``.

    True except on the non-chief workers of a multi-worker strategy.

    ```python
    if keras_hash.distribute.is_chief(model.distribute_strategy):
        model.save("model.keras")
    ```
    """
    strategy = strategy or tf.distribute.get_strategy()
    return bool(strategy.extended.should_checkpoint)


def check_same_on_workers(value: int, what: str, strategy=None) -> None:
    """Raises ``ValueError`` unless every worker passes the same ``value``.

    A collective: every worker of a multi-worker strategy must call it (a
    no-op on one process). E.g. the step each worker restored from a backup:
    workers resuming from different steps would train apart silently, or
    wait forever for each other.
    """
    strategy = strategy or tf.distribute.get_strategy()
    if num_workers(strategy) < 2:
        return
    mine = tf.constant([int(value)], tf.int64)
    values = strategy.experimental_distribute_values_from_function(lambda _: mine)
    seen = strategy.gather(values, axis=0).numpy().tolist()
    if len(set(seen)) > 1:
        raise ValueError(f"the workers disagree on {what}: {seen} (one per replica)")


def first_local_batch(strategy, iterator):
    """The first batch of this worker's first replica (shapes for building).

    For ``HashModel._maybe_symbolic_build``: Keras 3 reduces the whole
    distributed ``(x, y)`` batch with one ``strategy.reduce`` call, which
    ``MultiWorkerMirroredStrategy`` refuses; only the shapes and dtypes of a
    batch are needed to build the model.
    """
    for _, _, batches in iterator:
        batch = next(batches)
        break
    else:
        return None

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    return tf.nest.map_structure(local, batch, expand_composites=False)


def logs_for_multi_worker(logs):
    """Scalar logs of a train/test step as ``[1]`` vectors under multi-worker.

    Keras 3 averages each log over the replicas with
    ``strategy.reduce("MEAN", value, axis=0)`` when there are several
    workers, which fails on the scalar losses and metrics a step returns; on
    ``[1]`` vectors it gives the scalar mean. Anything else is returned as
    it is.
    """
    if not isinstance(logs, dict) or tf.distribute.in_cross_replica_context():
        return logs
    if not is_multi_worker(tf.distribute.get_strategy()):
        return logs
    return {
        key: tf.reshape(value, [1])
        if tf.is_tensor(value) and value.shape.rank == 0
        else value
        for key, value in logs.items()
    }
