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


def test_help_documents_every_recipe_setting():
    from keras_hash.recipes import presets

    # absl prints the usage and exits with status 1 after --help.
    text = run_script("--help").stdout
    assert "examples/train_cifar.py:" in text
    names = (*presets.field_names(), "preset", "quick", "data_dir", "output_dir")
    for flag in names:
        assert f"--{flag}:" in text or f"--[no]{flag}:" in text, flag


def test_quick_run_of_the_default_preset_writes_everything(data_dir, tmp_path):
    from keras_hash.recipes import presets

    out = tmp_path / "run"
    averaging = ["--flip_average", "--translate_average", "--database_size=30"]
    result = run_script(
        "--quick",
        f"--data_dir={data_dir}",
        f"--output_dir={out}",
        "--batch_size=12",
        *SMALL,
        *averaging,
    )
    check_ok(result)
    metrics = json.loads((out / "metrics.json").read_text())
    expected = presets.get("cifar10-2", quick=True).to_dict()
    expected.update(bits=16, batch_size=12, query_per_class=4, train_per_class=12)
    expected.update(flip_average=True, translate_average=True, database_size=30)
    assert metrics["config"] == expected
    assert 0.0 <= metrics["map"] <= 1.0
    assert 0.0 <= metrics["precision_radius_2"] <= 1.0
    assert 0 < metrics["pretrain_seconds"] < metrics["train_seconds"]
    # The quick preset's 5 hashing epochs: 36 cached features in batches of 12.
    assert metrics["hash_iterations"] == 15
    names = ("pr_curve.png", "precision_at_n.png", "hamming_histogram.png")
    for name in (*names, "gallery.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size[0] > 100
    assert (out / "model.keras").stat().st_size > 0
    assert (out / "database.index").stat().st_size > 0
    assert (out / "serving" / "hashnet" / "1" / "saved_model.pb").exists()
    assert (out / "model.tflite").stat().st_size > 0
    assert not (out / "state").exists() and not (out / "run_config.json").exists()
    check_quick_model(out)
    check_finished_run_is_kept(out, data_dir)


def check_finished_run_is_kept(out, data_dir):
    """A rerun with other settings leaves the finished run alone (issue 32).

    Before: --bits=32 overwrote metrics.json and model.keras and published
    serving version 2 with 4-byte codes beside version 1's 2-byte codes.
    """
    finished = {
        name: (out / name).read_bytes() for name in ("metrics.json", "model.keras")
    }
    flags = ["--quick", f"--data_dir={data_dir}", f"--output_dir={out}"]
    small = [f for f in SMALL if not f.startswith("--bits")] + ["--database_size=30"]
    other = run_script(*flags, "--batch_size=12", *small, "--bits=32")
    assert other.returncode != 0
    assert "holds a finished run" in other.stderr and str(out) in other.stderr
    assert (
        f"--new_output_dir to write to the next free folder ({out}-2)" in other.stderr
    )
    for name, content in finished.items():
        assert (out / name).read_bytes() == content, name
    assert sorted(os.listdir(out / "serving" / "hashnet")) == ["1"]
    new = run_script(*flags, "--batch_size=12", *small, "--bits=32", "--new_output_dir")
    check_ok(new)
    metrics = json.loads((out.parent / f"{out.name}-2" / "metrics.json").read_text())
    assert metrics["config"]["bits"] == 32
    assert "Finished: mAP@" in new.stdout and "chance is about 0.1" in new.stdout


LOAD_WITHOUT_RECIPES = """
import sys
import keras, keras_hash
model = keras.saving.load_model(sys.argv[1])
recipes = [m for m in sys.modules if m.startswith("keras_hash.recipes")]
print(type(model).__name__, recipes)
"""


def check_loads_without_recipes(path):
    """Issue 34: the saved model loads in a fresh process importing only keras_hash."""
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_RECIPES, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "HashNet []"


def check_quick_model(out):
    """The default preset's model: frozen whitened_cnn, averaged codes, exports."""
    import keras
    import tensorflow as tf

    import keras_hash

    check_loads_without_recipes(out / "model.keras")
    model = keras.saving.load_model(out / "model.keras")
    assert isinstance(model, keras_hash.HashNet) and not model.backbone.trainable
    assert model.flip_average and model.translate_average
    assert not model.losses  # the pre-training L2 is gone
    assert int(model.optimizer.iterations) == 15
    # Only the hash layer trained: its kernel and bias, the BatchNorm's scale
    # and offset. Pre-trained on any size, saved for the images' own size.
    assert len(model.trainable_weights) == 4
    assert model.backbone.input_shape == (None, 32, 32, 3)
    # The export averages flips and translations as the model does.
    serving = tf.saved_model.load(str(out / "serving" / "hashnet" / "1"))
    encode = serving.signatures["serving_default"]
    image = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("f4")
    for x in (image, image[:, :, ::-1].copy()):
        served = next(iter(encode(images=tf.constant(x)).values())).numpy()
        np.testing.assert_array_equal(served, model.encode(x))


def test_dhn_run_trains_with_the_given_inner_product_scale(data_dir, tmp_path):
    import keras

    import keras_hash

    out = tmp_path / "dhn"
    flags = [
        "--preset=scratch",
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
    assert metrics["config"]["method"] == "dhn"
    assert metrics["config"]["inner_product_scale"] == 0.25
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
    backup_info = out / "state" / "hashing" / "backup.json"
    killed_at = kill_after_first_backup([*flags, f"--output_dir={out}"], backup_info)
    assert not (out / "metrics.json").exists()
    assert 4 <= killed_at < 60

    resumed = run_script(*flags, f"--output_dir={out}")
    check_ok(resumed)
    start = json.loads((out / "metrics.json").read_text())["resumed_from_step"]
    assert killed_at <= start < 60 and (start % 4 == 0 or start % 6 == 0)
    assert f"Resuming hashing at step {start} / 60" in resumed.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["hash_iterations"] == 60
    assert metrics["beta"] == expected["beta"]
    # Same batches from the same state: the same model, up to float noise.
    np.testing.assert_allclose(metrics["map"], expected["map"], atol=0.05)
    assert_same_weights(tmp_path / "reference" / "model.keras", out / "model.keras")


def resumable_run_flags(data_dir, *extra):
    """A tiny float32 run in batches of 6 (36 images), backed up every 4 steps."""
    return [
        "--preset=scratch",
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
    kill_when_exists(command_flags, backup_info, timeout)
    return json.loads(backup_info.read_text())["step"]


def kill_when_exists(command_flags, path, timeout=120):
    """Starts the script and SIGKILLs it as soon as ``path`` exists."""
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
        while not path.exists():
            assert process.poll() is None, f"finished before writing {path.name}"
            assert time.monotonic() < deadline, f"{path.name} not written in time"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()


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
    assert expected["config"]["pretrain_epochs"] == 4
    assert expected["hash_iterations"] == 12
    assert 0 < expected["pretrain_seconds"] < expected["train_seconds"]
    assert not (tmp_path / "reference" / "state").exists()

    out = tmp_path / "killed"
    backup_info = out / "state" / "pretraining" / "backup.json"
    killed_at = kill_after_first_backup([*flags, f"--output_dir={out}"], backup_info)
    assert 4 <= killed_at < 24
    assert not (out / "state" / "pretrained_backbone.weights.h5").exists()

    resumed = run_script(*flags, f"--output_dir={out}")
    check_ok(resumed)
    assert "Resuming pretraining at step" in resumed.stdout
    assert not (out / "state").exists()
    assert_same_weights(tmp_path / "reference" / "model.keras", out / "model.keras")


def test_rerun_with_other_training_flags_refuses_to_resume(data_dir, tmp_path):
    out = tmp_path / "run"
    flags = resumable_run_flags(data_dir, "--epochs=10", f"--output_dir={out}")
    backup_info = out / "state" / "hashing" / "backup.json"
    kill_after_first_backup(flags, backup_info)
    other = run_script(*flags, "--bits=32", "--learning_rate=0.1")
    assert other.returncode != 0
    assert "bits=16 (now 32), learning_rate=0.05 (now 0.1)" in other.stderr
    assert backup_info.exists()  # left for the right rerun
    resumed = run_script(*flags)
    check_ok(resumed)
    assert "Resuming hashing at step" in resumed.stdout
    assert not (out / "run_config.json").exists()


def test_run_killed_after_training_evaluates_without_training_again(data_dir, tmp_path):
    # A kill during evaluation or export must not lose the trained model.
    flags = resumable_run_flags(data_dir, "--epochs=2")
    reference = run_script(*flags, f"--output_dir={tmp_path / 'reference'}")
    check_ok(reference)
    out = tmp_path / "killed"
    trained = out / "state" / "hashed_model.weights.h5"
    kill_when_exists([*flags, f"--output_dir={out}"], trained)
    assert trained.exists() and not (out / "metrics.json").exists()
    resumed = run_script(*flags, f"--output_dir={out}")
    check_ok(resumed)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["reused_trained_model"] is True
    assert "Epoch" not in resumed.stdout
    assert_same_weights(tmp_path / "reference" / "model.keras", out / "model.keras")
    assert not (out / "state").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--pretrain_low_res_epochs=3"], "between 0 and pretrain_epochs=2"),
        (["--bits=12"], "multiple of 8"),
        (["--method=dsh"], "method must be one of hashnet, dhn, dch, csq, dpsh"),
        (["--finetune_backbone"], "cache_features trains the hash layer"),
    ],
)
def test_bad_recipe_flags_are_named(data_dir, tmp_path, flags, message):
    result = run_script(
        f"--data_dir={data_dir}",
        f"--output_dir={tmp_path}",
        "--pretrain_epochs=2",
        *flags,
    )
    assert result.returncode != 0
    assert "Bad recipe" in result.stderr and message in result.stderr
    assert not os.listdir(tmp_path)
