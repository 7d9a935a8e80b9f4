"""Resumable training runs: one folder per run, its config guard, state and metrics.

Long jobs on shared machines get killed. A :class:`Run` makes the rerun of
the same command continue where the killed one stopped, and refuses to mix
the state of two different configurations:

- :meth:`Run.start` records the run's configuration (a JSON dict) in
  ``run_config.json``; if the folder already holds state from a run with
  another configuration it raises :class:`ConfigMismatchError` naming the
  keys that differ.
- :meth:`Run.fit` trains with ``model.fit`` from a data stream that can
  start at any step (e.g. :func:`keras_hash.datasets.train_dataset`),
  backing up the whole training state every ``save_freq`` steps
  (:class:`keras_hash.callbacks.StepBackup`); a rerun resumes at the backed
  up step and sees the same batches as an uninterrupted run.
- :meth:`Run.save_state` / :meth:`Run.state_path` keep other intermediate
  results (a pre-trained backbone, a finished phase's weights) under
  ``state/``.
- :meth:`Run.finish` writes ``metrics.json`` (the configuration and the
  results, atomically) and only then deletes the state: a run killed at any
  point before that (training, evaluation, export) loses nothing, and one
  killed during it leaves either its state or its ``metrics.json``.

One writer per folder: :meth:`Run.start` (or the first write) takes the
folder's lock, ``run.lock`` (an exclusive ``flock`` holding the owner's
host and PID), until :meth:`Run.finish` (which deletes it) or
:meth:`Run.close`. A second
``Run`` on the folder, in this process or another, gets
:class:`RunInUseError` naming the owner; the lock of a dead process is
released by the OS and taken over. A folder holding a finished run's
``metrics.json`` is refused, never trained over. Under a multi-worker
strategy only the chief (``TF_CONFIG``) takes the lock and writes.

```python
run = keras_hash.training.Run("runs/digits", config={"bits": 32, "epochs": 5})
run.start()
model = keras_hash.HashNet(backbone, bits=32)
model.build((None, 32, 32, 3))
model.compile(optimizer="adam")
stream = lambda step: keras_hash.datasets.train_dataset(x, y, 64, 5, start_step=step)
run.fit(model, stream, epochs=5, steps_per_epoch=len(x) // 64)
model.save("runs/digits/model.keras")
run.finish({"map": 0.9})
```

:func:`float32_copy` rebuilds a model trained under a mixed-precision policy
in float32 with the same weights, for saving and export.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
import socket
import sys
import threading
import time
import warnings

import keras

from keras_hash import batch_norm
from keras_hash.arguments import check_int
from keras_hash.callbacks import StepBackup
from keras_hash.distribute import is_chief
from keras_hash.files import staging_name, write_atomic, write_text_atomic

#: Seconds between the lines :class:`ClosingProgress` prints while it waits.
PROGRESS_SECONDS = 5.0

CONFIG_FILE = "run_config.json"
METRICS_FILE = "metrics.json"
STATE_DIR = "state"
LOCK_FILE = "run.lock"


class ConfigMismatchError(ValueError):
    """The run folder holds the state of a run with another configuration."""


class RunInUseError(RuntimeError):
    """Another live :class:`Run` (this process or another) holds the run folder."""


class Run:
    """A training run's folder: config guard, resumable phases, final metrics.

    Args:
        directory: the run's folder (created if needed).
        config: the run's configuration, a JSON-serializable dict. Every key
            that changes what is trained belongs here: a rerun resumes only
            under the same values.
        save_freq: steps between backups in :meth:`fit`. Defaults to 100.

    ``with Run(...) as run:`` releases the folder's lock on leaving (as
    :meth:`close` does); :meth:`finish` releases it too.
    """

    def __init__(self, directory, config: dict, save_freq: int = 100):
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        _check_finite(config, "config")
        try:
            self._config_text = json.dumps(config, sort_keys=True, indent=2)
        except (TypeError, ValueError) as error:
            raise TypeError(f"config must be JSON-serializable: {error}") from None
        self.save_freq = check_int(save_freq, "save_freq", minimum=1)
        self.directory = os.fspath(directory)
        self.config = json.loads(self._config_text)
        self._chief = _chief_by_tf_config()  # fit refines it from the strategy
        self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self) -> None:
        """Releases the folder's lock (the state stays, to resume later)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @property
    def lock_path(self) -> str:
        return os.path.join(self.directory, LOCK_FILE)

    def _hold_lock(self) -> None:
        """Takes the folder's lock unless held; RunInUseError when another has it."""
        if self._lock is None and self._chief:
            os.makedirs(self.directory, exist_ok=True)
            self._lock = _take_lock(self.lock_path)

    @property
    def config_path(self) -> str:
        return os.path.join(self.directory, CONFIG_FILE)

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.directory, METRICS_FILE)

    def state_path(self, name: str) -> str:
        """Path of an intermediate result kept until :meth:`finish`."""
        if not name or os.path.isabs(name) or ".." in name.split(os.sep):
            raise ValueError(f"state name must be a relative file name, got {name!r}")
        return os.path.join(self.directory, STATE_DIR, name)

    def has_state(self) -> bool:
        """Whether backups or intermediate results of a run are in the folder."""
        state = os.path.join(self.directory, STATE_DIR)
        return os.path.isdir(state) and any(os.scandir(state))

    def start(self) -> bool:
        """Checks the folder's state against this config, then records the config.

        Returns:
            True when there is state to resume from, False on a fresh start.

        Raises:
            ConfigMismatchError: the state was made under another config (or
                under an unknown one).
            RunInUseError: another live ``Run`` holds the folder.
            FileExistsError: the folder holds a finished run's
                ``metrics.json``.
        """
        os.makedirs(self.directory, exist_ok=True)
        self._hold_lock()
        try:
            return self._start()
        except BaseException:
            self.close()  # a refused run holds nothing
            raise

    def _start(self) -> bool:
        if os.path.exists(self.metrics_path):
            raise FileExistsError(
                f"{self.directory} holds a finished run: {self.metrics_path} "
                f"exists ({self._finished_config()}). Use another folder, or "
                f"delete {METRICS_FILE} (and any state/) to train again."
            )
        resuming = self.has_state()
        if resuming:
            self._check_saved_config()
        if self._chief:
            write_text_atomic(self.config_path, self._config_text)
        return resuming

    def _finished_config(self) -> str:
        """How the finished run's config differs from this one, in words."""
        left = "; its state/ is left from an interrupted finish" * self.has_state()
        try:
            with open(self.metrics_path, encoding="utf-8") as file:
                saved = json.load(file)["config"]
            changed = _differences(saved, self.config)
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            return f"its config is unreadable{left}"
        if not changed:
            return f"this configuration already finished{left}"
        return f"it finished with another configuration: {', '.join(changed)}{left}"

    def _check_saved_config(self) -> None:
        state = os.path.join(self.directory, STATE_DIR)
        if not os.path.exists(self.config_path):
            raise ConfigMismatchError(
                f"{self.directory} holds training state but no {CONFIG_FILE}: "
                f"delete {state} to start over"
            )
        try:
            with open(self.config_path, encoding="utf-8") as file:
                saved = json.load(file)
            if not isinstance(saved, dict):
                raise ValueError(f"a JSON {type(saved).__name__}, not an object")
        except (ValueError, UnicodeDecodeError) as error:
            raise ConfigMismatchError(
                f"{self.config_path} is corrupt ({error}), so the state in "
                f"{state} cannot be checked against this config: delete {state} "
                f"and {self.config_path} to start over"
            ) from None
        changed = _differences(saved, self.config)
        if changed:
            raise ConfigMismatchError(
                f"{self.directory} holds the state of a run with another "
                f"configuration: {', '.join(changed)}. Rerun with that "
                "configuration to resume it, or use another folder (or delete "
                "its state/ folder) to start over."
            )

    def fit(
        self,
        model: keras.Model,
        dataset,
        *,
        epochs: int,
        steps_per_epoch: int,
        phase: str = "train",
        callbacks=(),
        verbose=None,
    ) -> dict:
        """Trains ``model`` for ``epochs``, resuming from this phase's backup.

        ``model`` must be built and compiled. ``dataset(start_step)`` returns
        the training stream from global step ``start_step`` on (covering
        the remaining steps of all epochs), so a resumed run sees exactly
        the batches an uninterrupted one sees. A run resumed mid-epoch
        first finishes that epoch. The backup stays until :meth:`finish`.

        Args:
            model: the model, built and compiled; its optimizer's
                ``iterations`` is the global step.
            dataset: a callable ``start_step -> tf.data.Dataset``.
            epochs: total epochs of the phase.
            steps_per_epoch: steps in each epoch.
            phase: name of the phase (its backup folder under ``state/``).
            callbacks: more Keras callbacks.
            verbose: ``model.fit``'s verbosity; default 1 on a terminal, 2
                otherwise.

        Returns:
            ``{"train_seconds", "resumed_from_step", "steps"}``.
        """
        epochs, steps_per_epoch = (
            _positive(epochs, "epochs"),
            _positive(steps_per_epoch, "steps_per_epoch"),
        )
        if not callable(dataset):
            raise TypeError("dataset must be a callable start_step -> dataset")
        total = epochs * steps_per_epoch
        self._chief = is_chief(getattr(model, "distribute_strategy", None))
        self._hold_lock()
        backup = StepBackup(self.state_path(phase), self.save_freq)
        start = step = backup.restore(model)
        if start:
            print(f"Resuming {phase} at step {start} / {total}", flush=True)
        if verbose is None:
            verbose = 1 if sys.stdout.isatty() else 2
        started = time.perf_counter()
        # Precise BatchNorm statistics once, from the phase's first batches,
        # not at the end of each fit call (a resumed run makes two).
        with batch_norm.once_after(model, lambda: dataset(0)):
            while step < total:
                epoch, offset = divmod(step, steps_per_epoch)
                closing = ClosingProgress(phase, quiet=not verbose)
                try:
                    model.fit(
                        dataset(step),
                        initial_epoch=epoch,
                        epochs=epoch + 1 if offset else epochs,
                        steps_per_epoch=steps_per_epoch - offset,
                        callbacks=[backup, *callbacks, closing],
                        shuffle=False,
                        verbose=verbose,
                    )
                finally:
                    closing.stop()
                done = int(model.optimizer.iterations.numpy())
                if done <= step:
                    raise RuntimeError(
                        f"{phase}: model.fit made no progress at step {step} (the "
                        "dataset ran out of batches?)"
                    )
                step = done
        return {
            "train_seconds": time.perf_counter() - started,
            "resumed_from_step": start,
            "steps": total,
        }

    def save_state(self, name: str, write) -> str:
        """Writes an intermediate result atomically: ``write(path)``; returns the path.

        ```python
        run.save_state("backbone.weights.h5", backbone.save_weights)
        ```
        """
        path = self.state_path(name)
        self._hold_lock()
        write_atomic(path, write)
        return path

    def finish(self, record: dict) -> str:
        """Writes ``metrics.json`` (config and ``record``), then deletes the state.

        Call it once every final artifact (model file, exports) is written.
        After :meth:`fit` under a multi-worker strategy, only the chief
        writes and deletes; the other workers just return the path. A
        process killed during ``finish`` leaves the state (rerun to finish)
        or the whole ``metrics.json`` (the run is done), never neither. The
        folder's lock is released.

        Returns:
            The path of ``metrics.json``.
        """
        if not isinstance(record, dict):
            raise TypeError(f"record must be a dict, got {type(record).__name__}")
        if not self._chief:
            return self.metrics_path
        self._hold_lock()
        text = json.dumps({"config": self.config, **record}, indent=2)
        write_text_atomic(self.metrics_path, text)
        state = os.path.join(self.directory, STATE_DIR)
        if os.path.isdir(state):
            # One rename, then the slow delete: a kill leaves a staging
            # folder that the next atomic write in this folder removes.
            doomed = os.path.join(self.directory, staging_name())
            os.rename(state, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        if os.path.exists(self.config_path):
            os.remove(self.config_path)
        if self._lock is not None:
            os.remove(self.lock_path)  # safe: takers check the inode they lock
        self.close()
        return self.metrics_path


def float32_copy(model: keras.Model) -> keras.Model:
    """The model rebuilt with float32 layers, the same weights and compile config.

    Mixed-precision graphs hold bfloat16 or float16 ops that TFLite cannot
    convert; variables are float32 under either policy, so the copy computes
    what the model computes, in float32. The optimizer is rebuilt from its
    configuration (not its state). A float32 model is returned as it is.

    ```python
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    ...  # train
    model = keras_hash.training.float32_copy(model)
    model.save("model.keras")
    ```
    """
    config = keras.saving.serialize_keras_object(model)
    as_float32 = _float32_config(config)
    if as_float32 == config:
        return model
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        copy = keras.saving.deserialize_keras_object(as_float32)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    copy.set_weights(model.get_weights())
    return copy


def _float32_config(config):
    """A copy of a serialized object with every dtype policy set to float32."""
    if isinstance(config, dict):
        if config.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
            inner = dict(config.get("config", {}), name="float32")
            return {**config, "config": inner}
        return {key: _float32_config(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_config(value) for value in config]
    return config


def _positive(value, name: str) -> int:
    return check_int(value, name, minimum=1)


def _differences(saved: dict, config: dict) -> list:
    """``["key=saved (now new)", ...]`` for the keys whose values differ."""
    return [
        f"{key}={saved.get(key)!r} (now {config.get(key)!r})"
        for key in sorted(set(saved) | set(config))
        if saved.get(key) != config.get(key)
    ]


def _check_finite(value, where: str) -> None:
    """Refuses NaN and infinities anywhere in a config: NaN != NaN on resume."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(
            f"{where} is {value!r}: a run's config must equal itself to be "
            "checked on resume (NaN never does); use a finite number or a string"
        )
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_finite(item, f"{where}[{i}]")


def _chief_by_tf_config() -> bool:
    """Whether ``TF_CONFIG`` (if any) makes this process the cluster's chief."""
    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        cluster, task = config.get("cluster") or {}, config.get("task") or {}
    except (ValueError, AttributeError):
        return True  # distribute checks TF_CONFIG itself
    if not cluster or not task:
        return True
    if "chief" in cluster:
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


class _Lock:
    """An open, ``flock``-ed lock file; closing it releases the lock."""

    def __init__(self, fd: int):
        self.fd = fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the flock
            self.fd = None

    def __del__(self):
        self.close()


def _take_lock(path: str) -> _Lock:
    """Exclusive lock of ``path`` for this process, with its host and PID in it."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _lock_owner(fd)
            os.close(fd)
            raise RunInUseError(
                f"Run folder {os.path.dirname(path)} is in use by {owner} (lock "
                f"{path}): wait for that run to end, or use another folder. Two "
                "runs in one folder would overwrite each other's backups and "
                "metrics."
            ) from None
        except OSError as error:  # a file system without locks
            warnings.warn(
                f"Cannot lock {path} ({error}): a second run in this folder will "
                "not be detected",
                stacklevel=3,
            )
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # deleted or replaced while we locked it: lock the new one
            os.close(fd)
            continue
        owner = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": datetime.datetime.now(datetime.UTC).isoformat(),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode(), 0)
        return _Lock(fd)


def _lock_owner(fd: int) -> str:
    try:
        owner = json.loads(os.pread(fd, 4096, 0).decode())
        pid, host, since = owner["pid"], owner["host"], owner["since"]
        return f"process {pid} on host {host} (since {since})"
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return "another process"


class ClosingProgress(keras.callbacks.Callback):
    """Reports the wait between ``model.fit``'s last step and its return.

    After its last callback, ``model.fit`` can take a while to return while
    Keras and TensorFlow release the call's state (no backup or BatchNorm
    work runs there; the wait stays with Python's gc off): 0-20 s after 16
    steps on 2,048 images, 38-54 s after CIFAR pre-training, on a busy
    2-core CPU, without a word before. :meth:`on_train_end` says so, and a
    thread repeats it every ``every`` seconds until :meth:`stop` (called
    once ``fit`` returned).

    ```python
    closing = ClosingProgress("pre-training")
    try:
        model.fit(stream, callbacks=[closing])
    finally:
        closing.stop()
    ```
    """

    def __init__(self, phase: str, every: float | None = None, quiet: bool = False):
        super().__init__()
        self.every = PROGRESS_SECONDS if every is None else float(every)
        self.phase, self.quiet = phase, quiet
        self._done = threading.Event()
        self._thread = None

    def on_train_end(self, logs=None):
        if self.quiet:
            return
        self._started = time.perf_counter()
        step = int(self.model.optimizer.iterations.numpy())
        print(
            f"{self.phase}: step {step} done; waiting for model.fit to return "
            "(Keras releases its state: up to a minute on a busy CPU)",
            flush=True,
        )
        self._thread = threading.Thread(target=self._report, daemon=True)
        self._thread.start()

    def _report(self):
        while not self._done.wait(self.every):
            waited = time.perf_counter() - self._started
            print(
                f"{self.phase}: still waiting for model.fit to return ({waited:.0f} s)",
                flush=True,
            )

    def stop(self) -> None:
        """Ends the reports (``fit`` returned)."""
        self._done.set()
        if self._thread is not None:
            self._thread.join()
