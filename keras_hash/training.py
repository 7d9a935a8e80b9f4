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
  point before that (training, evaluation, export) loses nothing.

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

import json
import os
import shutil
import sys
import time

import keras

from keras_hash.callbacks import StepBackup
from keras_hash.distribute import is_chief
from keras_hash.files import write_atomic, write_text_atomic

CONFIG_FILE = "run_config.json"
METRICS_FILE = "metrics.json"
STATE_DIR = "state"


class ConfigMismatchError(ValueError):
    """The run folder holds the state of a run with another configuration."""


class Run:
    """A training run's folder: config guard, resumable phases, final metrics.

    Args:
        directory: the run's folder (created if needed).
        config: the run's configuration, a JSON-serializable dict. Every key
            that changes what is trained belongs here: a rerun resumes only
            under the same values.
        save_freq: steps between backups in :meth:`fit`. Defaults to 100.
    """

    def __init__(self, directory, config: dict, save_freq: int = 100):
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        try:
            self._config_text = json.dumps(config, sort_keys=True, indent=2)
        except (TypeError, ValueError) as error:
            raise TypeError(f"config must be JSON-serializable: {error}") from None
        if isinstance(save_freq, bool) or int(save_freq) < 1:
            raise ValueError(f"save_freq must be an int >= 1, got {save_freq!r}")
        self.directory = os.fspath(directory)
        self.config = json.loads(self._config_text)
        self.save_freq = int(save_freq)
        self._chief = True  # False on a non-chief worker once fit has run

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
        """
        os.makedirs(self.directory, exist_ok=True)
        resuming = self.has_state()
        if resuming:
            self._check_saved_config()
        write_text_atomic(self.config_path, self._config_text)
        return resuming

    def _check_saved_config(self) -> None:
        if not os.path.exists(self.config_path):
            raise ConfigMismatchError(
                f"{self.directory} holds training state but no {CONFIG_FILE}: "
                "delete its state/ folder to start over"
            )
        with open(self.config_path) as file:
            saved = json.load(file)
        changed = [
            f"{key}={saved.get(key)!r} (now {self.config.get(key)!r})"
            for key in sorted(set(saved) | set(self.config))
            if saved.get(key) != self.config.get(key)
        ]
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
        backup = StepBackup(self.state_path(phase), self.save_freq)
        start = step = backup.restore(model)
        if start:
            print(f"Resuming {phase} at step {start} / {total}", flush=True)
        if verbose is None:
            verbose = 1 if sys.stdout.isatty() else 2
        started = time.perf_counter()
        # Precise BatchNorm statistics once, from the phase's first batches,
        # not at the end of each fit call (a resumed run makes two).
        precise = getattr(model, "precise_batch_norm", False)
        if precise:
            model.precise_batch_norm = False
        try:
            while step < total:
                epoch, offset = divmod(step, steps_per_epoch)
                model.fit(
                    dataset(step),
                    initial_epoch=epoch,
                    epochs=epoch + 1 if offset else epochs,
                    steps_per_epoch=steps_per_epoch - offset,
                    callbacks=[backup, *callbacks],
                    shuffle=False,
                    verbose=verbose,
                )
                done = int(model.optimizer.iterations.numpy())
                if done <= step:
                    raise RuntimeError(
                        f"{phase}: model.fit made no progress at step {step} (the "
                        "dataset ran out of batches?)"
                    )
                step = done
        finally:
            if precise:
                model.precise_batch_norm = True
        if precise:
            model.recompute_batch_norm(dataset(0))
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
        write_atomic(path, write)
        return path

    def finish(self, record: dict) -> str:
        """Writes ``metrics.json`` (config and ``record``), then deletes the state.

        Call it once every final artifact (model file, exports) is written.
        After :meth:`fit` under a multi-worker strategy, only the chief
        writes and deletes; the other workers just return the path.

        Returns:
            The path of ``metrics.json``.
        """
        if not isinstance(record, dict):
            raise TypeError(f"record must be a dict, got {type(record).__name__}")
        if not self._chief:
            return self.metrics_path
        text = json.dumps({"config": self.config, **record}, indent=2)
        write_text_atomic(self.metrics_path, text)
        shutil.rmtree(os.path.join(self.directory, STATE_DIR), ignore_errors=True)
        if os.path.exists(self.config_path):
            os.remove(self.config_path)
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
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)
