"""Globs in bulk encoding follow keras_hash.datasets' listing rule (issue 30,
class 2): non-images refused by name at listing time (before: listed, then
dead letters), hidden/system files skipped with a counted warning (before:
encoded or dead letters), folders named like images refused (before: dropped
without a word)."""

import warnings

import numpy as np
import pytest
from PIL import Image

from keras_hash import beam
from tests.beam.helpers import sha_id


def tree(root):
    """cats/0.png, cats/1.jpg, dogs/2.png: the images every glob below lists."""
    for folder, name in (("cats", "0.png"), ("cats", "1.jpg"), ("dogs", "2.png")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / folder / name)
    return ["cats/0.png", "cats/1.jpg", "dogs/2.png"]


@pytest.mark.numpy_only
def test_glob_lists_images_and_skips_system_files_with_a_count(tmp_path):
    images = tree(tmp_path)
    (tmp_path / "cats" / "Thumbs.db").write_bytes(b"\0")
    (tmp_path / "__MACOSX" / "cats").mkdir(parents=True)
    (tmp_path / "__MACOSX" / "cats" / "0.png").write_bytes(b"\0")
    with pytest.warns(UserWarning, match=r"Skipped 2 hidden or system file"):
        paths, ids = beam.list_images(str(tmp_path / "**" / "*"))
    assert paths == [str(tmp_path / r) for r in images]
    assert ids.tolist() == [sha_id(r) for r in images]
    # a plain listing of images warns nothing
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths, _ = beam.list_images(str(tmp_path / "*" / "*.png"))
    assert paths == [str(tmp_path / r) for r in images if r.endswith(".png")]


@pytest.mark.numpy_only
def test_glob_refuses_non_images_by_name_before_the_job(tmp_path):
    tree(tmp_path)
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"notes\.txt.*move them out"):
        beam.list_images(str(tmp_path / "*" / "*"))
    (tmp_path / "dogs" / "notes.txt").unlink()
    (tmp_path / "dogs" / "album.png").mkdir()  # a folder named like an image
    with pytest.raises(ValueError, match=r"album\.png"):
        beam.list_images(str(tmp_path / "*" / "*.png"))
