"""Tests for keras_hash.training: resumable runs, the config guard, float32 copies."""

import json
import os
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_hash
from keras_hash import training
from tests.processes import kill_when_ready

X = np.random.default_rng(0).normal(size=(48, 6)).astype("float32")
Y = (np.arange(48) % 3).astype("int32")
BATCH, EPOCHS = 8, 3
SPE = len(X) // BATCH


def make_model(seed=0):
    keras.utils.set_random_seed(seed)
    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, "relu")])
    model = keras_hash.HashNet(backbone, bits=8)
    model.build((None, 6))
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    return model


def stream(start_step):
    """Batches of a fixed order, from global step ``start_step`` on."""
    order = np.concatenate(
        [np.random.default_rng(e).permutation(len(X)) for e in range(EPOCHS)]
    )[start_step * BATCH :]
    return tf.data.Dataset.from_tensor_slices((X[order], Y[order])).batch(BATCH)


class KillAt(keras.callbacks.Callback):
    """Raises at a given global step, as a killed process would stop."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == self.step:
            raise KeyboardInterrupt


def test_killed_fit_resumes_to_the_uninterrupted_weights(tmp_path):
    reference = make_model()
    run = training.Run(tmp_path / "a", {"lr": 0.05}, save_freq=4)
    run.start()
    info = run.fit(reference, stream, epochs=EPOCHS, steps_per_epoch=SPE, verbose=0)
    assert info["steps"] == EPOCHS * SPE and info["resumed_from_step"] == 0

    folder = tmp_path / "b"
    killed = make_model()
    run = training.Run(folder, {"lr": 0.05}, save_freq=4)
    assert run.start() is False
    with pytest.raises(KeyboardInterrupt):
        run.fit(
            killed,
            stream,
            epochs=EPOCHS,
            steps_per_epoch=SPE,
            callbacks=[KillAt(10)],
            verbose=0,
        )
    # A new process: a fresh model, the same folder and config.
    resumed = make_model(seed=1)
    run = training.Run(folder, {"lr": 0.05}, save_freq=4)
    assert run.start() is True
    info = run.fit(resumed, stream, epochs=EPOCHS, steps_per_epoch=SPE, verbose=0)
    assert info["resumed_from_step"] == 8  # the last backup before step 10
    assert int(resumed.optimizer.iterations) == EPOCHS * SPE
    for a, b in zip(reference.weights, resumed.weights, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_other_config_is_refused_naming_the_differences(tmp_path):
    run = training.Run(tmp_path, {"bits": 16, "lr": 0.05})
    run.start()
    run.save_state("backbone.weights.h5", lambda p: open(p, "w").close())
    run.close()  # the process ends
    other = training.Run(tmp_path, {"bits": 32, "lr": 0.05, "seed": 1})
    with pytest.raises(training.ConfigMismatchError, match=r"bits=16 \(now 32\)") as e:
        other.start()
    assert "seed=None (now 1)" in str(e.value)
    assert os.path.exists(run.state_path("backbone.weights.h5"))
    assert training.Run(tmp_path, {"lr": 0.05, "bits": 16}).start() is True


def test_state_without_a_config_is_refused(tmp_path):
    os.makedirs(tmp_path / "state")
    (tmp_path / "state" / "x").write_text("?")
    with pytest.raises(training.ConfigMismatchError, match="no run_config.json"):
        training.Run(tmp_path, {}).start()


def test_a_fresh_folder_accepts_any_config(tmp_path):
    training.Run(tmp_path, {"bits": 16}).start()
    assert training.Run(tmp_path, {"bits": 32}).start() is False


def test_finish_writes_metrics_with_config_then_clears_state(tmp_path):
    run = training.Run(tmp_path, {"bits": 16})
    run.start()
    kept = run.save_state("phase.weights.h5", lambda p: open(p, "w").close())
    assert os.path.exists(kept)
    path = run.finish({"map": 0.5})
    assert json.loads(open(path).read()) == {"config": {"bits": 16}, "map": 0.5}
    assert not os.path.exists(tmp_path / "state")
    assert not os.path.exists(tmp_path / "run_config.json")


def test_state_is_kept_when_the_run_dies_before_finish(tmp_path):
    run = training.Run(tmp_path, {"bits": 16}, save_freq=2)
    run.start()
    model = make_model()
    run.fit(model, stream, epochs=1, steps_per_epoch=SPE, verbose=0)
    # Training is over; the process dies before finish (e.g. while exporting).
    run.close()
    assert os.path.exists(tmp_path / "state" / "train" / "backup.weights.h5")
    again = make_model(seed=3)
    info = training.Run(tmp_path, {"bits": 16}).fit(
        again, stream, epochs=1, steps_per_epoch=SPE, verbose=0
    )
    assert info["resumed_from_step"] == SPE  # nothing trained twice
    for a, b in zip(model.weights, again.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"config": [1]}, TypeError, "config must be a dict"),
        ({"config": {"f": object()}}, TypeError, "JSON-serializable"),
        ({"config": {}, "save_freq": 0}, ValueError, "save_freq"),
    ],
)
def test_bad_run_arguments_are_named(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        training.Run(tmp_path, **kwargs)


def test_bad_fit_and_state_arguments_are_named(tmp_path):
    run = training.Run(tmp_path, {})
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        run.fit(make_model(), stream, epochs=0, steps_per_epoch=1)
    with pytest.raises(TypeError, match="callable"):
        run.fit(make_model(), stream(0), epochs=1, steps_per_epoch=1)
    with pytest.raises(ValueError, match="relative file name"):
        run.state_path("../elsewhere")


def test_float32_copy_computes_in_float32_with_the_same_weights():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = make_model()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert mixed.hash_layer.compute_dtype == "bfloat16"
    copy = training.float32_copy(mixed)
    assert copy is not mixed
    assert {layer.compute_dtype for layer in copy._flatten_layers()} == {"float32"}
    # Reference: the same architecture built in float32 from the weights.
    reference = make_model(seed=5)
    reference.set_weights(mixed.get_weights())
    np.testing.assert_allclose(
        copy.predict(X, verbose=0), reference.predict(X, verbose=0), atol=1e-6
    )
    assert isinstance(copy.loss, keras_hash.HashNetLoss)
    assert isinstance(copy.optimizer, keras.optimizers.SGD)


def test_float32_copy_of_a_float32_model_is_the_model():
    model = make_model()
    assert training.float32_copy(model) is model


# --- one writer per folder, damaged folders (issue 30, class 4) -------------

# A second process that holds a run folder until killed.
HOLDER = """
import sys, time, types
sys.modules["keras_hash"] = types.ModuleType("keras_hash")
sys.modules["keras_hash"].__path__ = [sys.argv[1]]
from keras_hash import training
run = training.Run(sys.argv[2], {"bits": 16})
run.start()
print("started", flush=True)
time.sleep(120)
"""


def start_holder(folder):
    import subprocess
    import sys

    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, os.path.dirname(training.__file__), str(folder)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "started"
    return child


def test_a_second_process_gets_in_use_and_a_dead_owner_is_taken_over(tmp_path):
    holder = start_holder(tmp_path)
    try:
        with pytest.raises(
            training.RunInUseError, match=f"process {holder.pid} on host"
        ):
            training.Run(tmp_path, {"bits": 16}).start()
        with pytest.raises(training.RunInUseError, match="in use"):
            training.Run(tmp_path, {"bits": 16}).finish({"map": 1.0})
        assert not os.path.exists(tmp_path / "metrics.json")
    finally:
        holder.kill()  # SIGKILL: the lock file stays, its flock goes
        holder.wait()
    assert os.path.exists(tmp_path / "run.lock")
    run = training.Run(tmp_path, {"bits": 16})
    assert run.start() is False
    assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()


def test_two_runs_in_one_process_and_release(tmp_path):
    first = training.Run(tmp_path, {"bits": 16})
    first.start()
    # Before: the second run trained into the same folder.
    with pytest.raises(training.RunInUseError, match=f"process {os.getpid()}"):
        training.Run(tmp_path, {"bits": 16}).start()
    first.close()
    with training.Run(tmp_path, {"bits": 16}) as second:
        second.start()
    training.Run(tmp_path, {"bits": 16}).start()


def test_a_finished_run_is_not_trained_over(tmp_path):
    run = training.Run(tmp_path, {"bits": 16})
    run.start()
    run.finish({"map": 0.5})
    assert not os.path.exists(tmp_path / "run.lock")
    # Before: a rerun trained again and overwrote metrics.json.
    with pytest.raises(
        FileExistsError, match="metrics.json.*this configuration already"
    ):
        training.Run(tmp_path, {"bits": 16}).start()
    with pytest.raises(
        FileExistsError, match=r"another configuration: bits=16 \(now 32\)"
    ):
        training.Run(tmp_path, {"bits": 32}).start()
    assert json.loads((tmp_path / "metrics.json").read_text())["map"] == 0.5


@pytest.mark.parametrize("value", [float("nan"), float("inf"), [1.0, float("-inf")]])
def test_a_config_that_cannot_equal_itself_is_refused(tmp_path, value):
    # Before: NaN was written, and every resume reported "lr=nan (now nan)".
    with pytest.raises(ValueError, match=r"config\['opt'\]\['lr'\].* equal itself"):
        training.Run(tmp_path, {"opt": {"lr": value}})


def test_a_corrupt_config_names_the_file_and_what_to_delete(tmp_path):
    run = training.Run(tmp_path, {"bits": 16})
    run.start()
    run.save_state("x.bin", lambda p: open(p, "w").close())
    run.close()
    (tmp_path / "run_config.json").write_text('{"bits": 1')  # truncated
    with pytest.raises(
        training.ConfigMismatchError, match=r"run_config.json is corrupt.*delete"
    ):
        training.Run(tmp_path, {"bits": 16}).start()


def test_resuming_with_another_model_shape_names_the_variables(tmp_path):
    run = training.Run(tmp_path, {"lr": 0.05}, save_freq=4)
    run.start()
    run.fit(make_model(), stream, epochs=1, steps_per_epoch=SPE, verbose=0)
    run.close()
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, "relu")])
    wider = keras_hash.HashNet(backbone, bits=16)  # bits not in the config
    wider.build((None, 6))
    wider.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    again = training.Run(tmp_path, {"lr": 0.05}, save_freq=4)
    again.start()
    with pytest.raises(
        ValueError,
        match=r"another shape.*\[8, 8\] in the backup.*\[8, 16\] now.*delete",
    ):
        again.fit(wider, stream, epochs=1, steps_per_epoch=SPE, verbose=0)


def test_a_truncated_backup_names_the_file_to_delete(tmp_path):
    run = training.Run(tmp_path, {"lr": 0.05}, save_freq=4)
    run.start()
    run.fit(make_model(), stream, epochs=1, steps_per_epoch=SPE, verbose=0)
    run.close()
    weights = tmp_path / "state" / "train" / "backup.weights.h5"
    weights.write_bytes(weights.read_bytes()[:500])
    again = training.Run(tmp_path, {"lr": 0.05})
    again.start()
    with pytest.raises(ValueError, match=r"backup.weights.h5.*delete the folder"):
        again.fit(make_model(), stream, epochs=1, steps_per_epoch=SPE, verbose=0)


@pytest.mark.parametrize("save_freq", [2.5, True, "3", 2.0])
def test_save_freq_must_be_an_int(tmp_path, save_freq):
    # Before: 2.5 became 2 and True became 1.
    with pytest.raises(TypeError, match="save_freq must be an int"):
        training.Run(tmp_path, {}, save_freq=save_freq)


# Finishes a run with a hook that stops at one point of finish (then waits
# to be killed).
FINISHER = """
import os, sys, time, types
sys.modules["keras_hash"] = types.ModuleType("keras_hash")
sys.modules["keras_hash"].__path__ = [sys.argv[1]]
from keras_hash import files, training
folder, point = sys.argv[2], sys.argv[3]
run = training.Run(folder, {"bits": 16})
run.start()
run.save_state("phase.weights.h5", lambda p: open(p, "w").write("weights"))

def hang():
    print("hanging", flush=True)
    time.sleep(120)

if point == "metrics":
    def write_half(path, text):
        def write(staging):
            open(staging, "w").write(text[: len(text) // 2])
            hang()
        files.write_atomic(path, write)
    training.write_text_atomic = write_half
else:
    def slow_rmtree(path, **kwargs):
        os.remove(os.path.join(path, "phase.weights.h5"))
        hang()
    training.shutil.rmtree = slow_rmtree
run.finish({"map": 0.75})
"""


@pytest.mark.parametrize("point", ["metrics", "cleanup"])
def test_sigkill_during_finish_loses_nothing(tmp_path, point):
    import sys

    package = os.path.dirname(training.__file__)
    argv = [sys.executable, "-c", FINISHER, package, str(tmp_path), point]
    kill_when_ready(argv, "hanging")
    run = training.Run(tmp_path, {"bits": 16})
    if point == "metrics":
        # Killed before metrics.json was whole: no metrics, the state intact.
        assert not os.path.exists(tmp_path / "metrics.json")
        assert run.start() is True
        with open(run.state_path("phase.weights.h5")) as file:
            assert file.read() == "weights"
        assert json.loads(open(run.finish({"map": 0.75})).read())["map"] == 0.75
    else:
        # Killed while deleting the state: the whole metrics.json is there.
        assert json.loads((tmp_path / "metrics.json").read_text())["map"] == 0.75
        assert not os.path.exists(tmp_path / "state")
        with pytest.raises(FileExistsError, match="finished run"):
            run.start()
    # What the killed writer staged is removed as a dead writer's.
    from keras_hash import files

    files.remove_stale_staging(tmp_path)
    assert [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")] == []


class SlowToReturn(keras_hash.HashNet):
    """A model whose ``fit`` returns 0.5 s after its last callback, as Keras's
    did for up to 54 s after CIFAR pre-training."""

    def fit(self, *args, **kwargs):
        history = super().fit(*args, **kwargs)
        time.sleep(0.5)
        return history


def test_the_wait_for_fit_to_return_is_reported(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(training, "PROGRESS_SECONDS", 0.1)
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, "relu")])
    model = SlowToReturn(backbone, bits=8)
    model.build((None, 6))
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    with training.Run(tmp_path, {"lr": 0.05}) as run:
        run.start()
        run.fit(model, stream, epochs=1, steps_per_epoch=SPE, phase="warm", verbose=2)
    lines = capsys.readouterr().out.splitlines()
    done = [i for i, line in enumerate(lines) if line.startswith("warm: step 6 done")]
    assert len(done) == 1, lines
    waits = [x for x in lines[done[0] :] if "still waiting for model.fit" in x]
    assert 2 <= len(waits) <= 6, lines
