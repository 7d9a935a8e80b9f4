"""One worker of the two-worker jobs of tests/test_multi_worker.py.

Run as ``python tests/multi_worker_script.py SPEC.json`` with ``TF_CONFIG``
set; ``SPEC.json`` says what to do (``mode``) and where the files are:

- ``"step"``: one full-batch ``fit`` step of HashNet (batch-normalized
  codes) and of DHN from the weights in ``init``, on the global batch of
  ``data``; writes ``step_<task>.npz``: weights, loss and the rows this
  worker fed. Then a StepBackup into a shared folder and into a per-worker
  folder, restoring from both (the second must fail on every worker).
- ``"run"``: a resumable :class:`keras_hash.training.Run` of HashNet with a
  fast continuation schedule; writes ``restored_<task>.npz`` (the state
  right after restoring) and ``final_<task>.npz``. With ``hang_at``, the
  worker ``hang_task`` stops at that step, writes ``hang_<task>`` and waits
  to be killed.

The test imports :func:`make_model` and :func:`stream` for its single-device
reference.
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_hash  # noqa: E402
from keras_hash import distribute, training  # noqa: E402
from keras_hash.callbacks import StepBackup  # noqa: E402

FEATURES, BITS = 10, 16
# beta = sqrt(1 + 0.5 * t), t the step rounded down to even: it changes
# every 2 steps, so a resume at the wrong step shows in beta.
SCHEDULE = keras_hash.schedules.HashNetContinuation(gamma=0.5, step_size=2)


def make_model(kind, weights=None, learning_rate=0.5, momentum=0.0):
    """A tiny Dense-backbone model, built and compiled (in the current scope)."""
    keras.utils.set_random_seed(7)
    backbone = keras.Sequential(
        [keras.Input((FEATURES,)), keras.layers.Dense(12, activation="tanh")]
    )
    if kind == "HashNet":
        model = keras_hash.HashNet(backbone, bits=BITS, normalize=True)
    elif kind == "DHN":
        model = keras_hash.DHN(backbone, bits=BITS, normalize=False)
    else:  # "run": HashNet with the fast continuation
        model = keras_hash.HashNet(backbone, bits=BITS, beta_schedule=SCHEDULE)
    model.build((None, FEATURES))
    if weights is not None:
        model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=momentum))
    return model


def _shard_by_data(dataset):
    options = tf.data.Options()
    policy = tf.data.experimental.AutoShardPolicy.DATA
    options.experimental_distribute.auto_shard_policy = policy
    return dataset.with_options(options)


def stream(x, y, batch, epochs, start_step=0):
    """Global batches in a fixed order (a permutation per epoch), from a step on.

    Sharded by DATA: under a multi-worker strategy each worker keeps its
    share of every global batch.
    """
    order = np.concatenate(
        [np.random.default_rng(100 + e).permutation(len(x)) for e in range(epochs)]
    )[start_step * batch :]
    dataset = tf.data.Dataset.from_tensor_slices((x[order], y[order]))
    return _shard_by_data(dataset.batch(batch))


def state(model):
    """What a resumed run must match: all weights, step, hash step and beta."""
    return {
        **{f"w{i}": w for i, w in enumerate(model.get_weights())},
        "step": int(model.optimizer.iterations.numpy()),
        "hash_step": int(model.hash_layer.iterations.numpy()),
        "beta": float(model.hash_layer.beta.numpy()),
    }


class Probe(keras.callbacks.Callback):
    """Records the state at the first train begin; hangs at a step if told to."""

    def __init__(self, spec, task):
        super().__init__()
        self.spec, self.task, self.recorded = spec, task, False

    def on_train_begin(self, logs=None):
        if not self.recorded:
            self.recorded = True
            out = os.path.join(self.spec["out"], f"restored_{self.task}.npz")
            np.savez(out, **state(self.model))

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step == self.spec.get("hang_at") and self.task == self.spec["hang_task"]:
            with open(os.path.join(self.spec["out"], f"hang_{self.task}"), "w") as f:
                f.write(str(step))
            time.sleep(600)  # the test kills the process here


def run_step(spec, strategy, task):
    data = np.load(spec["data"])
    x, y = data["x"], data["y"]
    dataset = stream(x, y, len(x), epochs=1)
    # The rows this worker feeds (its share of the global batch).
    first = next(iter(strategy.experimental_distribute_dataset(dataset)))
    local_x = np.concatenate(
        [v.numpy() for v in strategy.experimental_local_results(first[0])]
    )
    out = {"local_x": local_x}
    for kind in ("HashNet", "DHN"):
        init = np.load(spec[f"init_{kind}"])
        weights = [init[f"arr_{i}"] for i in range(len(init.files))]
        with strategy.scope():
            model = make_model(kind, weights)
        history = model.fit(dataset, epochs=1, verbose=0)
        out[f"{kind}_loss"] = history.history["loss"][0]
        out[f"{kind}_hash_step"] = int(model.hash_layer.iterations.numpy())
        for i, w in enumerate(model.get_weights()):
            out[f"{kind}_w{i}"] = w
    # Backups: only the chief writes; restoring needs a folder all workers see.
    shared = StepBackup(spec["shared_backup"])
    own = StepBackup(f"{spec['shared_backup']}_{task}")
    for backup in (shared, own):
        backup.set_model(model)
        backup.save()
    # A collective as a barrier: the chief has written before anyone reads.
    distribute.check_same_on_workers(0, "a barrier", strategy)
    out["shared_step"] = shared.restore(model)
    try:
        own.restore(model)
        out["own_error"] = ""
    except ValueError as error:
        out["own_error"] = str(error)
    np.savez(os.path.join(spec["out"], f"step_{task}.npz"), **out)


def run_resumable(spec, strategy, task):
    data = np.load(spec["data"])
    x, y = data["x"], data["y"]
    init = np.load(spec["init_run"])
    weights = [init[f"arr_{i}"] for i in range(len(init.files))]
    with strategy.scope():
        model = make_model("run", weights, learning_rate=0.05, momentum=0.9)
    batch, epochs = spec["batch"], spec["epochs"]
    run = training.Run(spec["dir"], {"test": "multi_worker"}, spec["save_freq"])
    run.start()
    info = run.fit(
        model,
        lambda step: stream(x, y, batch, epochs, step),
        epochs=epochs,
        steps_per_epoch=len(x) // batch,
        callbacks=[Probe(spec, task)],
        verbose=0,
    )
    final = {**state(model), "resumed_from_step": info["resumed_from_step"]}
    np.savez(os.path.join(spec["out"], f"final_{task}.npz"), **final)
    run.finish({"steps": info["steps"]})


def main(spec_path):
    with open(spec_path) as file:
        spec = json.load(file)
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    task = strategy.cluster_resolver.task_id
    assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
    if spec["mode"] == "step":
        run_step(spec, strategy, task)
    else:
        run_resumable(spec, strategy, task)


if __name__ == "__main__":
    main(sys.argv[1])
