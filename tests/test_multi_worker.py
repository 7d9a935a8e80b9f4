"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 train like one device.

Each test starts two ``python tests/multi_worker_script.py`` processes
(``TF_CONFIG`` from :func:`keras_hash.distribute.worker_config`, free local
ports, RING collectives over gRPC), waits for them with a deadline, and
always kills them at the end. The single-device reference is computed in
this process, meanwhile.
"""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_hash import distribute
from tests import multi_worker_script as script

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).with_name("multi_worker_script.py")
DEADLINE = 120  # seconds for one job (imports, graph building, a few steps)


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Job:
    """Two workers of one cluster, started now; ``kill`` ends them for sure."""

    def __init__(self, spec, folder, name):
        self.folder = Path(folder)
        spec_path = self.folder / f"{name}.json"
        spec_path.write_text(json.dumps(spec))
        hosts = [f"127.0.0.1:{port}" for port in free_ports(2)]
        self.logs = [self.folder / f"{name}_{i}.log" for i in range(2)]
        self.procs = []
        for index, log in enumerate(self.logs):
            env = {
                **os.environ,
                "TF_CONFIG": distribute.worker_config(hosts, index),
                "TF_CPP_MIN_LOG_LEVEL": "3",
                "PYTHONPATH": str(ROOT),
            }
            with open(log, "w") as out:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, str(SCRIPT), str(spec_path)],
                        cwd=ROOT,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )

    def tail(self):
        return "\n".join(
            f"--- worker {i} (exit {p.poll()}):\n" + log.read_text()[-3000:]
            for i, (p, log) in enumerate(zip(self.procs, self.logs, strict=True))
        )

    def wait(self, timeout=DEADLINE):
        end = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(end - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pytest.fail(f"workers still running after {timeout} s\n{self.tail()}")
        if any(p.returncode for p in self.procs):
            pytest.fail(f"a worker failed\n{self.tail()}")

    def wait_for(self, path, timeout=DEADLINE):
        end = time.monotonic() + timeout
        while not Path(path).exists():
            if any(p.poll() is not None for p in self.procs):
                pytest.fail(f"a worker ended before {path}\n{self.tail()}")
            if time.monotonic() > end:
                pytest.fail(f"no {path} after {timeout} s\n{self.tail()}")
            time.sleep(0.05)

    def kill(self, index=None):
        for i, proc in enumerate(self.procs):
            if index in (None, i) and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)


def weights_of(values, prefix=""):
    """The weights ``w0, w1, ...`` of a worker's npz file or of a state dict."""
    keys = set(getattr(values, "files", values))
    count = sum(1 for key in keys if key.startswith(f"{prefix}w"))
    return [values[f"{prefix}w{i}"] for i in range(count)]


def save_weights(path, model):
    np.savez(path, *model.get_weights())


def test_one_step_on_two_workers_matches_one_device_on_the_global_batch(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, script.FEATURES)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    references = {kind: script.make_model(kind) for kind in ("HashNet", "DHN")}
    for kind, model in references.items():
        save_weights(tmp_path / f"init_{kind}.npz", model)
    spec = {
        "mode": "step",
        "data": str(tmp_path / "data.npz"),
        "init_HashNet": str(tmp_path / "init_HashNet.npz"),
        "init_DHN": str(tmp_path / "init_DHN.npz"),
        "shared_backup": str(tmp_path / "backup"),
        "out": str(tmp_path),
    }
    job = Job(spec, tmp_path, "step")
    try:
        # The single-device reference: one step on the global batch of 32.
        expected = {}
        for kind, model in references.items():
            before = model.get_weights()
            history = model.fit(x, y, batch_size=32, shuffle=False, verbose=0)
            after = model.get_weights()
            moved = max(np.abs(a - b).max() for a, b in zip(after, before, strict=True))
            assert moved > 1e-3  # the step really moved the weights
            expected[kind] = (history.history["loss"][0], after)
        job.wait()
    finally:
        job.kill()

    outputs = [np.load(tmp_path / f"step_{i}.npz") for i in range(2)]
    # Each worker fed its own half of the global batch, together all of it.
    halves = [out["local_x"] for out in outputs]
    assert [len(h) for h in halves] == [16, 16]
    fed = np.concatenate(halves)
    np.testing.assert_array_equal(fed[np.lexsort(fed.T)], x[np.lexsort(x.T)])
    for out in outputs:
        for kind, (loss, weights) in expected.items():
            got = weights_of(out, f"{kind}_")
            assert len(got) == len(weights)
            for a, b in zip(got, weights, strict=True):
                np.testing.assert_allclose(a, b, atol=1e-5)
            assert float(out[f"{kind}_loss"]) == pytest.approx(loss, abs=1e-5)
            assert int(out[f"{kind}_hash_step"]) == 1

    # Backups: only the chief (worker 0) wrote, both restored its step; from
    # per-worker folders (no shared file system) both refused to resume.
    assert (tmp_path / "backup" / "backup.weights.h5").exists()
    assert (tmp_path / "backup_0" / "backup.weights.h5").exists()
    assert not (tmp_path / "backup_1").exists()
    for out in outputs:
        assert int(out["shared_step"]) == 1
        assert "the workers disagree on the step restored" in str(out["own_error"])
        assert "[1, 0]" in str(out["own_error"])


def continuation_beta(steps):
    """beta after ``steps`` steps: the schedule at the last step, by hand."""
    t = (steps - 1) // 2 * 2
    return math.sqrt(1 + 0.5 * t)


def test_killed_job_resumes_from_the_chief_backup_like_an_uninterrupted_run(
    tmp_path,
):
    batch, epochs, save_freq, hang_at = 8, 3, 3, 7
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, script.FEATURES)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    reference = script.make_model("run", learning_rate=0.05, momentum=0.9)
    save_weights(tmp_path / "init_run.npz", reference)
    spec = {
        "mode": "run",
        "data": str(tmp_path / "data.npz"),
        "init_run": str(tmp_path / "init_run.npz"),
        "dir": str(tmp_path / "run"),
        "out": str(tmp_path),
        "batch": batch,
        "epochs": epochs,
        "save_freq": save_freq,
        "hang_at": hang_at,
        "hang_task": 0,
    }
    # Steps per epoch 4: backups at steps 3, 4 (epoch end) and 6; the chief
    # stops at step 7 and is killed there, then the other worker.
    job = Job(spec, tmp_path, "killed")
    try:
        job.wait_for(tmp_path / "hang_0")
        job.kill(0)
        job.kill()
    finally:
        job.kill()
    info = tmp_path / "run" / "state" / "train" / "backup.json"
    assert json.loads(info.read_text())["step"] == 6
    assert not (tmp_path / "run" / "metrics.json").exists()

    spec.update(hang_at=None)
    job = Job(spec, tmp_path, "resumed")
    try:
        # The uninterrupted single-device run, with its state at every step.
        states = {}

        class Record(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                state = script.state(self.model)
                states[state["step"]] = state

        reference.fit(
            script.stream(x, y, batch, epochs),
            epochs=epochs,
            steps_per_epoch=len(x) // batch,
            callbacks=[Record()],
            shuffle=False,
            verbose=0,
        )
        # fit ends with precise BatchNorm statistics, as Run.fit does.
        after_fit = script.state(reference)
        job.wait()
    finally:
        job.kill()

    total = epochs * len(x) // batch
    for task in range(2):
        restored = np.load(tmp_path / f"restored_{task}.npz")
        final = np.load(tmp_path / f"final_{task}.npz")
        assert int(final["resumed_from_step"]) == 6
        for got, steps, want in (
            (restored, 6, states[6]),
            (final, total, after_fit),
        ):
            assert int(got["step"]) == steps
            assert int(got["hash_step"]) == steps
            assert float(got["beta"]) == pytest.approx(continuation_beta(steps))
            assert want["beta"] == pytest.approx(continuation_beta(steps))
            w_got, w_want = weights_of(got), weights_of(want)
            assert len(w_got) == len(w_want) == len(reference.weights)
            for a, b in zip(w_got, w_want, strict=True):
                np.testing.assert_allclose(a, b, atol=1e-5)
    # The chief finished the run: metrics written, backups gone.
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 12
    assert not (tmp_path / "run" / "state").exists()


@pytest.mark.numpy_only
def test_worker_config_is_the_tf_config_of_one_worker():
    hosts = ["10.0.0.1:2222", "node-b:2223"]
    assert json.loads(distribute.worker_config(hosts, 1)) == {
        "cluster": {"worker": ["10.0.0.1:2222", "node-b:2223"]},
        "task": {"type": "worker", "index": 1},
    }


@pytest.mark.numpy_only
@pytest.mark.parametrize(
    "workers, index, error, message",
    [
        ("a:1", 0, TypeError, "list of 'host:port'"),
        ([], 0, ValueError, "at least one"),
        (["a:1", 2], 0, TypeError, "strings, got 2"),
        (["a"], 0, ValueError, "'a' is not 'host:port'"),
        (["a:0"], 0, ValueError, "'a:0' is not"),
        (["a:70000"], 0, ValueError, "'a:70000' is not"),
        (["a:1", "a:1"], 0, ValueError, "repeat"),
        (["a:1", "b:1"], 2, ValueError, r"\[0, 2\), got 2"),
        (["a:1", "b:1"], True, TypeError, "index must be an int"),
    ],
)
def test_bad_worker_config_is_named(workers, index, error, message):
    with pytest.raises(error, match=message):
        distribute.worker_config(workers, index)


def test_one_process_is_a_single_chief_worker():
    assert distribute.num_workers() == 1
    assert distribute.is_chief() and not distribute.is_multi_worker()
    distribute.check_same_on_workers(3, "anything")  # nothing to compare
