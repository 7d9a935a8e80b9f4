"""keras_hash.arguments and the sizes, counts and flags it guards (issue 30,
class 6): booleans, floats and strings are refused naming the argument."""

import numpy as np
import pytest

from keras_hash import callbacks, datasets
from keras_hash.arguments import check_bool, check_int

pytestmark = pytest.mark.numpy_only


def test_check_int_accepts_integers_only():
    assert check_int(3, "n") == 3 and type(check_int(np.int64(3), "n")) is int
    for bad in (True, np.bool_(False), 2.5, 2.0, "3", None, [3]):
        with pytest.raises(TypeError, match=r"^n must be an int, got"):
            check_int(bad, "n")
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        check_int(0, "n", minimum=1)
    with pytest.raises(ValueError, match="n must be <= 2, got 3"):
        check_int(3, "n", maximum=2)


def test_check_bool_accepts_booleans_only():
    assert check_bool(np.bool_(True), "f") is True
    assert check_bool(None, "f", optional=True) is None
    for bad in ("no", 0, 1, None, "False"):
        with pytest.raises(TypeError, match="f must be True or False"):
            check_bool(bad, "f")


IMAGES = np.zeros((8, 4, 4, 3), np.uint8)
LABELS = np.zeros(8, np.int32)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: datasets.train_dataset(IMAGES, LABELS, 2.9, 1), "batch_size"),
        (lambda: datasets.train_dataset(IMAGES, LABELS, True, 1), "batch_size"),
        (lambda: datasets.train_dataset(IMAGES, LABELS, 2, 1.5), "epochs"),
        (lambda: datasets.train_dataset(IMAGES, LABELS, 2, 1, seed=0.5), "seed"),
        (
            lambda: datasets.train_dataset(IMAGES, LABELS, 2, 1, augmentation="no"),
            "augmentation",
        ),
        (lambda: datasets.augment(IMAGES, [0, 1], cutout=1.5), "cutout"),
        (lambda: datasets.augment(IMAGES, [0, 1], padding=True), "padding"),
        (lambda: datasets.steps_per_epoch(8, 2.5), "batch_size"),
        (lambda: datasets.eval_dataset(IMAGES, 2.5), "batch_size"),
        (lambda: datasets.check_image_size(True), "image_size"),
        (lambda: datasets.check_image_size((4.5, 4)), "image_size"),
        (lambda: callbacks.StepBackup("x", save_freq=2.5), "save_freq"),
        (lambda: callbacks.StepBackup("x", save_freq=True), "save_freq"),
        (
            lambda: callbacks.RetrievalEvaluation(
                (IMAGES, LABELS), (IMAGES, LABELS), every=True
            ),
            "every",
        ),
        (
            lambda: callbacks.RetrievalEvaluation(
                (IMAGES, LABELS), (IMAGES, LABELS), batch_size=2.5
            ),
            "batch_size",
        ),
    ],
)
def test_silent_coercions_are_refused_naming_the_argument(call, name):
    # Before: each was quietly rounded or taken as true.
    with pytest.raises(TypeError, match=f"{name} must be"):
        call()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"batch_size": 2.9}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"shuffle": "no"}, "shuffle"),
        ({"drop_remainder": 1}, "drop_remainder"),
        ({"seed": 1.5}, "seed"),
        ({"image_size": True}, "image_size"),
    ],
)
def test_image_files_dataset_refuses_coercions(tmp_path, kwargs, name):
    files = datasets.ImageFiles(
        (str(tmp_path / "a.png"),), np.zeros(1, np.int32), ("a",)
    )
    arguments = {"image_size": 4, **kwargs}
    with pytest.raises(TypeError, match=f"{name} must be"):
        datasets.image_files_dataset(files, **arguments)
