"""End-to-end tests of examples/train_cifar.py on small generated image folders."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "examples", "train_cifar.py")
CLASSES = ("cat", "dog", "ship")
# 3 classes x (4 query + 12 train) leave 3 x 10 database images.
SMALL = ["--query_per_class=4", "--train_per_class=12", "--bits=16"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A CIFAR-like image folder: 3 classes, 20 train + 6 test PNGs each."""
    root = tmp_path_factory.mktemp("cifar")
    rng = np.random.default_rng(0)
    for split, count in (("train", 20), ("test", 6)):
        for label, name in enumerate(CLASSES):
            os.makedirs(root / split / name)
            for i in range(count):
                # Class-dependent colour plus noise: learnable, not trivial.
                base = np.array([80, 140, 200])[np.roll(np.arange(3), label)]
                noise = rng.integers(-60, 60, (32, 32, 3))
                pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i:03d}.png")
    return str(root)


def run_script(*flags, timeout=120):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, SCRIPT, *flags],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO,
    )


def check_ok(result):
    assert result.returncode == 0, result.stderr[-3000:]


def test_help_documents_every_flag():
    # absl prints the usage and exits with status 1 after --help.
    text = run_script("--help").stdout
    assert "examples/train_cifar.py:" in text
    for flag in (
        "method",
        "bits",
        "protocol",
        "epochs",
        "batch_size",
        "backbone",
        "weights",
        "data_dir",
        "output_dir",
        "seed",
        "quick",
        "precision",
        "inner_product_scale",
        "pretrain_epochs",
        "finetune_learning_rate",
        "finetune_backbone",
        "cache_features",
        "flip_average",
        "translate_average",
        "crop_padding",
        "cutout",
    ):
        assert f"--{flag}:" in text or f"--[no]{flag}:" in text, flag


def test_quick_run_writes_metrics_plots_model_and_exports(data_dir, tmp_path):
    out = tmp_path / "run"
    started = time.perf_counter()
    result = run_script(
        "--quick",
        f"--data_dir={data_dir}",
        f"--output_dir={out}",
        "--batch_size=12",
        *SMALL,
    )
    check_ok(result)
    assert time.perf_counter() - started < 90
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("map", "precision_radius_2", "bits", "method", "protocol"):
        assert key in metrics
    assert (metrics["bits"], metrics["method"], metrics["protocol"]) == (
        16,
        "hashnet",
        "dhn",
    )
    assert 0.0 <= metrics["map"] <= 1.0
    assert 0.0 <= metrics["precision_radius_2"] <= 1.0
    assert metrics["train_seconds"] > 0
    assert metrics["hash_iterations"] == 3  # 1 epoch of 36 images / 12
    for name in ("pr_curve.png", "precision_at_n.png", "hamming_histogram.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size[0] > 100
    assert (out / "model.keras").stat().st_size > 0
    assert (out / "serving" / "hashnet" / "1" / "saved_model.pb").exists()
    assert (out / "model.tflite").stat().st_size > 0
    assert not (out / "backup").exists()


def test_dhn_run_trains_with_the_given_inner_product_scale(data_dir, tmp_path):
    import keras

    import keras_hash

    out = tmp_path / "dhn"
    flags = [
        "--method=dhn",
        "--inner_product_scale=0.25",
        "--noexport",
        "--batch_size=12",
    ]
    result = run_script(
        "--quick", f"--data_dir={data_dir}", f"--output_dir={out}", *SMALL, *flags
    )
    check_ok(result)
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["method"], metrics["inner_product_scale"]) == ("dhn", 0.25)
    model = keras.saving.load_model(out / "model.keras")
    assert isinstance(model, keras_hash.DHN)
    assert isinstance(model.loss, keras_hash.DHNLoss) and model.loss.scale == 0.25
    assert not (out / "serving").exists()


def test_killed_run_resumes_at_the_backed_up_step(data_dir, tmp_path):
    # 36 training images in batches of 6: 6 steps per epoch, 60 steps in all.
    flags = resumable_run_flags(data_dir, "--epochs=10")
    reference = run_script(*flags, f"--output_dir={tmp_path / 'reference'}")
    check_ok(reference)
    expected = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    assert expected["hash_iterations"] == 60

    out = tmp_path / "killed"
    backup_info = out / "backup" / "backup.json"
    killed_at = kill_after_first_backup([*flags, f"--output_dir={out}"], backup_info)
    assert not (out / "metrics.json").exists()
    assert 4 <= killed_at < 60

    resumed = run_script(*flags, f"--output_dir={out}")
    check_ok(resumed)
    start = json.loads((out / "metrics.json").read_text())["resumed_from_step"]
    assert killed_at <= start < 60 and (start % 4 == 0 or start % 6 == 0)
    assert f"Resuming from the backup at step {start} / 60" in resumed.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["hash_iterations"] == 60
    assert metrics["beta"] == expected["beta"]
    # Same batches from the same state: the same model, up to float noise.
    np.testing.assert_allclose(metrics["map"], expected["map"], atol=0.05)
    assert_same_weights(tmp_path / "reference" / "model.keras", out / "model.keras")


def resumable_run_flags(data_dir, *extra):
    """A tiny float32 run in batches of 6 (36 images), backed up every 4 steps."""
    return [
        f"--data_dir={data_dir}",
        *SMALL,
        "--batch_size=6",
        *extra,
        "--width=8",
        "--save_freq=4",
        "--precision=float32",
        "--noexport",
    ]


def kill_after_first_backup(command_flags, backup_info, timeout=120):
    """Starts the script, SIGKILLs it once a backup exists; returns its step."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(
        [sys.executable, SCRIPT, *command_flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=REPO,
    )
    deadline = time.monotonic() + timeout
    try:
        while not backup_info.exists():
            assert process.poll() is None, "finished before the first backup"
            assert time.monotonic() < deadline, "no backup written in time"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    return json.loads(backup_info.read_text())["step"]


def assert_same_weights(path_a, path_b):
    import keras

    import keras_hash  # noqa: F401 - registers the model classes

    a = keras.saving.load_model(path_a, compile=False)
    b = keras.saving.load_model(path_b, compile=False)
    for wa, wb in zip(a.weights, b.weights, strict=True):
        np.testing.assert_allclose(
            np.asarray(wa), np.asarray(wb), rtol=1e-3, atol=1e-4, err_msg=wa.path
        )


def test_run_killed_while_pretraining_resumes_there(data_dir, tmp_path):
    # 36 training images in batches of 6: 4 pre-training epochs (24 steps)
    # as a classifier, then 2 hashing epochs (12 steps).
    flags = resumable_run_flags(data_dir, "--pretrain_epochs=4", "--epochs=2")
    reference = run_script(*flags, f"--output_dir={tmp_path / 'reference'}")
    check_ok(reference)
    expected = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    assert expected["pretrain_epochs"] == 4 and expected["hash_iterations"] == 12
    assert 0 < expected["pretrain_seconds"] < expected["train_seconds"]
    assert not (tmp_path / "reference" / "pretrained_backbone.weights.h5").exists()

    out = tmp_path / "killed"
    backup_info = out / "pretrain" / "backup.json"
    killed_at = kill_after_first_backup([*flags, f"--output_dir={out}"], backup_info)
    assert 4 <= killed_at < 24
    assert not (out / "pretrained_backbone.weights.h5").exists()

    resumed = run_script(*flags, f"--output_dir={out}")
    check_ok(resumed)
    assert "Resuming from the backup at step" in resumed.stdout
    assert not (out / "pretrain").exists() and not (out / "backup").exists()
    assert_same_weights(tmp_path / "reference" / "model.keras", out / "model.keras")


def test_rerun_with_other_training_flags_refuses_to_resume(data_dir, tmp_path):
    out = tmp_path / "run"
    flags = resumable_run_flags(data_dir, "--epochs=10", f"--output_dir={out}")
    kill_after_first_backup(flags, out / "backup" / "backup.json")
    other = run_script(*flags, "--bits=32", "--learning_rate=0.1")
    assert other.returncode != 0
    assert "--bits=16 (now 32), --learning_rate=0.05 (now 0.1)" in other.stderr
    assert (out / "backup" / "backup.json").exists()  # left for the right rerun
    resumed = run_script(*flags)
    check_ok(resumed)
    assert "Resuming from the backup at step" in resumed.stdout
    assert not (out / "training_flags.json").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--pretrain_low_res_epochs=3"], "between 0 and --pretrain_epochs=2"),
        (["--low_res_size=16", "--backbone=whitened_cnn"], "--low_res_size >= 24"),
    ],
)
def test_bad_low_res_flags_are_named(data_dir, tmp_path, flags, message):
    result = run_script(
        f"--data_dir={data_dir}",
        f"--output_dir={tmp_path}",
        *SMALL,
        "--pretrain_epochs=2",
        "--pretrain_low_res_epochs=1",
        *flags,
    )
    assert result.returncode != 0 and message in result.stderr


@pytest.mark.parametrize("flags", [["--pretrain_epochs=1"], ["--nofinetune_backbone"]])
def test_cache_features_without_a_frozen_pretrained_backbone_is_refused(
    data_dir, tmp_path, flags
):
    result = run_script(
        f"--data_dir={data_dir}",
        f"--output_dir={tmp_path}",
        *SMALL,
        "--cache_features",
        *flags,
    )
    assert result.returncode != 0
    assert "needs --pretrain_epochs > 0 and --nofinetune_backbone" in result.stderr


def test_cache_features_trains_the_hash_layer_on_frozen_features(data_dir, tmp_path):
    import keras

    import keras_hash

    out = tmp_path / "cached"
    flags = [
        "--backbone=whitened_cnn",
        "--pretrain_epochs=1",
        "--precision=float32",
        "--batch_size=12",
        "--nofinetune_backbone",
        "--cache_features",
        "--epochs=4",
        "--noexport",
    ]
    result = run_script(
        "--quick", f"--data_dir={data_dir}", f"--output_dir={out}", *SMALL, *flags
    )
    check_ok(result)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cache_features"] is True
    # 4 epochs of 36 training features in batches of 12.
    assert metrics["hash_iterations"] == metrics["steps"] == 12
    assert metrics["beta"] == 1.0  # HashNet's beta first grows at step 200
    assert 0 < metrics["pretrain_seconds"] < metrics["train_seconds"]
    model = keras.saving.load_model(out / "model.keras")
    assert isinstance(model, keras_hash.HashNet) and not model.backbone.trainable
    assert int(model.optimizer.iterations) == 12
    # Only the hash layer trained: its kernel and bias, the BatchNorm's scale
    # and offset.
    assert len(model.trainable_weights) == 4
    assert not (out / "backup").exists() and not (out / "pretrain").exists()


def test_whitened_cnn_run_pretrains_with_airbench_recipe_and_exports(
    data_dir, tmp_path
):
    import keras
    import tensorflow as tf

    import keras_hash

    out = tmp_path / "whitened"
    flags = [
        "--backbone=whitened_cnn",
        "--pretrain_epochs=2",
        "--pretrain_low_res_epochs=1",
        "--precision=float32",
        "--batch_size=12",
        "--nofinetune_backbone",
        "--flip_average",
        "--translate_average",
        "--cutout=8",
    ]
    result = run_script(
        "--quick", f"--data_dir={data_dir}", f"--output_dir={out}", *SMALL, *flags
    )
    check_ok(result)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backbone"] == "whitened_cnn" and metrics["pretrain_epochs"] == 2
    assert (metrics["pretrain_low_res_epochs"], metrics["low_res_size"]) == (1, 24)
    assert metrics["cutout"] == 8
    assert 0 < metrics["pretrain_seconds"] < metrics["train_seconds"]
    model = keras.saving.load_model(out / "model.keras")
    assert isinstance(model, keras_hash.HashNet)
    assert not model.losses  # the pre-training L2 is gone
    assert not model.backbone.get_layer("whiten").trainable_weights
    # Pre-trained on any size, saved and exported for the images' own size.
    assert model.backbone.input_shape == (None, 32, 32, 3)
    assert metrics["finetune_backbone"] is False and metrics["flip_average"] is True
    assert not model.backbone.trainable and model.flip_average
    assert metrics["translate_average"] is True and model.translate_average
    # The export averages flips and translations as the model does.
    serving = tf.saved_model.load(str(out / "serving" / "hashnet" / "1"))
    encode = serving.signatures["serving_default"]
    image = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("f4")
    for x in (image, image[:, :, ::-1].copy()):
        served = next(iter(encode(images=tf.constant(x)).values())).numpy()
        np.testing.assert_array_equal(served, model.encode(x))
    assert (out / "model.tflite").stat().st_size > 0
