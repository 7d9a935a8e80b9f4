"""Training callbacks: a step-level backup for resuming, retrieval evaluation."""

from __future__ import annotations

import contextlib
import json
import os

import keras
import numpy as np

from keras_hash.arguments import check_int
from keras_hash.distribute import check_same_on_workers, is_chief
from keras_hash.files import write_atomic
from keras_hash.labels import check_labels

BACKUP_WEIGHTS = "backup.weights.h5"
BACKUP_INFO = "backup.json"


class StepBackup(keras.callbacks.Callback):
    """Backs up the whole training state every ``save_freq`` steps, atomically.

    Unlike ``keras.callbacks.BackupAndRestore``, which resumes at the start
    of the interrupted epoch, the backup records the exact step: model
    weights (including the hash layer's ``beta`` and step counter and
    BatchNorm statistics) and optimizer state (its ``iterations`` is the
    global step) go into one ``.weights.h5`` file, written to a temporary
    name and renamed, so a process killed while saving leaves the previous
    backup intact. :meth:`restore` loads it and returns the step to resume
    from; pair it with a data stream that can start at any step, such as
    :func:`keras_hash.datasets.train_dataset`. The small ``backup.json``
    records the step and the name and shape of every model and optimizer
    variable, so restoring into a model of another shape (other ``bits``,
    another backbone) is refused naming the variables that differ, and an
    unreadable backup is refused naming the file to delete.

    ```python
    backup = keras_hash.callbacks.StepBackup("run/backup", save_freq=100)
    model.build((None, 32, 32, 3))
    start = backup.restore(model)  # 0 on a fresh run
    ds = keras_hash.datasets.train_dataset(x, y, 128, epochs, start_step=start)
    ```

    Under a ``MultiWorkerMirroredStrategy`` of several workers only the
    chief writes, and every worker restores from ``backup_dir``: it must be
    a folder all workers see (a shared file system). :meth:`restore` raises
    ``ValueError`` on every worker when they would resume from different
    steps (see ``docs/multi_worker.md``).

    Args:
        backup_dir: directory of the backup (created if needed).
        save_freq: steps between backups. A backup is also written at the
            end of every epoch. Defaults to 100.
    """

    def __init__(self, backup_dir: str, save_freq: int = 100):
        super().__init__()
        self.save_freq = check_int(save_freq, "save_freq", minimum=1)
        self.backup_dir = os.fspath(backup_dir)
        self.weights_path = os.path.join(self.backup_dir, BACKUP_WEIGHTS)
        self.info_path = os.path.join(self.backup_dir, BACKUP_INFO)
        self._step = 0

    def on_train_begin(self, logs=None):
        self._step = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step % self.save_freq == 0:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        if self._step % self.save_freq:
            self.save()

    def save(self) -> None:
        """Writes the backup now (weights first, then the small info file).

        Does nothing on the non-chief workers of a multi-worker strategy.
        """
        if not is_chief(getattr(self.model, "distribute_strategy", None)):
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        write_atomic(self.weights_path, self.model.save_weights)
        step = int(self.model.optimizer.iterations.numpy())
        info = json.dumps({"step": step, "variables": _variables(self.model)})
        write_atomic(self.info_path, lambda p: _write_text(p, info))

    def restore(self, model: keras.Model) -> int:
        """Loads the backup into a built, compiled ``model``; returns its step.

        Returns 0 (and changes nothing) when there is no backup. Under a
        multi-worker strategy every worker must call it (the workers check
        that they restored the same step).
        """
        step = self._load(model)
        check_same_on_workers(
            step,
            f"the step restored from {self.backup_dir} (it must be a folder "
            "every worker sees, where the chief writes the backups)",
            getattr(model, "distribute_strategy", None),
        )
        return step

    def _load(self, model: keras.Model) -> int:
        if not os.path.exists(self.weights_path):
            return 0
        if not model.built:
            raise ValueError("Build the model before restoring a backup into it")
        if model.optimizer is None:
            raise ValueError("Compile the model before restoring a backup into it")
        if not model.optimizer.built:  # its variables in the model's strategy
            strategy = getattr(model, "distribute_strategy", None)
            with strategy.scope() if strategy is not None else contextlib.nullcontext():
                model.optimizer.build(model.trainable_variables)
        self._check_shapes(model)
        try:
            model.load_weights(self.weights_path)
        except Exception as error:  # h5py and Keras raise many kinds
            raise ValueError(
                f"Cannot restore the backup {self.weights_path} ({error}). If it "
                f"is truncated or corrupt, delete the folder {self.backup_dir} to "
                "restart this phase from step 0"
            ) from error
        return int(model.optimizer.iterations.numpy())

    def _check_shapes(self, model) -> None:
        """Refuses a backup whose variables differ from the model's, naming them."""
        fix = f"delete the folder {self.backup_dir} to restart this phase from step 0"
        if not os.path.exists(self.info_path):
            return  # killed between the first weights and info: Keras checks
        try:
            with open(self.info_path, encoding="utf-8") as file:
                saved = [
                    (str(n), list(shape)) for n, shape in json.load(file)["variables"]
                ]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
            raise ValueError(
                f"The backup's {self.info_path} is corrupt ({error!r}): {fix}"
            ) from None
        now = _variables(model)
        # Keras matches variables by position (names change with each
        # instance: hash_net_1/...), so compare the shapes in order.
        if [shape for _, shape in saved] == [shape for _, shape in now]:
            return
        differ = [
            f"{old[0]} {old[1]} in the backup, {new[0]} {new[1]} now"
            for old, new in zip(saved, now, strict=False)
            if old[1] != new[1]
        ]
        if len(saved) != len(now):
            differ.insert(0, f"{len(saved)} variables in the backup, {len(now)} now")
        shown = "; ".join(differ[:4])
        shown += f"; and {len(differ) - 4} more" * (len(differ) > 4)
        raise ValueError(
            f"The backup in {self.backup_dir} was written by a model of another "
            f"shape (other bits, backbone or optimizer?): {shown}. Rerun with "
            f"that model to resume, or {fix}"
        )

    def clear(self) -> None:
        """Deletes the backup files (call once training has finished)."""
        for path in (self.weights_path, self.info_path):
            if os.path.exists(path):
                os.remove(path)
        if os.path.isdir(self.backup_dir) and not os.listdir(self.backup_dir):
            os.rmdir(self.backup_dir)


def _variables(model) -> list:
    """``[[path, shape], ...]`` of the model's and its optimizer's variables."""
    variables = list(model.weights)
    if model.optimizer is not None:
        variables += list(model.optimizer.variables)
    return [[getattr(v, "path", v.name), [int(d) for d in v.shape]] for v in variables]


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as file:
        file.write(text)


class RetrievalEvaluation(keras.callbacks.Callback):
    """Computes retrieval mAP on held-out data every few epochs; logs ``val_map``.

    Query and database images are encoded with ``model.encode`` and ranked
    by Hamming distance (:func:`keras_hash.metrics.mean_average_precision`,
    ties by database index). The value goes into the epoch logs, so
    ``History``, ``ModelCheckpoint(monitor="val_map", mode="max")`` and
    progress bars see it. Keep the sets small (a few hundred queries, a few
    thousand database images): encoding runs on every evaluation.

    ```python
    callback = keras_hash.callbacks.RetrievalEvaluation(
        (x_query, y_query), (x_db, y_db), every=5, top_k=1000
    )
    model.fit(ds, epochs=50, callbacks=[callback])
    ```

    Args:
        query: ``(images, labels)`` of the queries.
        database: ``(images, labels)`` of the database.
        every: evaluate every this many epochs (and after the last one).
            Defaults to 1.
        top_k: cut-off of mAP; ``None`` ranks the whole database.
        batch_size: encoding batch size. Defaults to 256.
    """

    def __init__(
        self,
        query,
        database,
        every: int = 1,
        top_k: int | None = None,
        batch_size: int = 256,
    ):
        super().__init__()
        self.every = check_int(every, "every", minimum=1)
        self.top_k = None if top_k is None else check_int(top_k, "top_k", minimum=1)
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        # Labels follow keras_hash.labels: [N, 1] (keras.datasets) are class ids.
        self.query = (np.asarray(query[0]), check_labels(query[1], name="query labels"))
        self.database = (
            np.asarray(database[0]),
            check_labels(database[1], name="database labels"),
        )
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        last = self.params.get("epochs") == epoch + 1
        if (epoch + 1) % self.every and not last:
            return
        value = self.evaluate()
        self.history.append((epoch, value))
        if logs is not None:
            logs["val_map"] = value

    def evaluate(self) -> float:
        """Encodes both sets with the current weights and returns mAP."""
        from keras_hash.metrics import mean_average_precision

        return mean_average_precision(
            query_codes=self.model.encode(self.query[0], self.batch_size),
            query_labels=self.query[1],
            database_codes=self.model.encode(self.database[0], self.batch_size),
            database_labels=self.database[1],
            bits=self.model.bits,
            top_k=self.top_k,
        )
