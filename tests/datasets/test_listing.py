"""Listings drop or invent nothing silently: each entry is listed, skipped
with a warning (hidden and system files), or refused by name."""

import os
import warnings

import numpy as np
import pytest
from PIL import Image

from keras_hash import datasets

pytestmark = pytest.mark.numpy_only


def image(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(path, format="PNG")
    return str(path)


def test_loose_images_beside_class_folders_are_refused_by_name(tmp_path):
    image(tmp_path / "cat" / "0.png")
    image(tmp_path / "stray.png")
    # Before: stray.png was dropped without a word.
    with pytest.raises(ValueError, match=r"loose files.*stray\.png"):
        datasets.list_image_folder(tmp_path)


def test_sub_folders_and_other_files_in_a_class_are_refused_by_name(tmp_path):
    image(tmp_path / "cat" / "0.png")
    image(tmp_path / "cat" / "kittens" / "1.png")
    with pytest.raises(ValueError, match=r"sub-folders.*kittens"):
        datasets.list_image_folder(tmp_path)
    os.rename(tmp_path / "cat" / "kittens", tmp_path / "kittens")
    image(tmp_path / "dog" / "0.png")
    (tmp_path / "dog" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"not images.*notes\.txt"):
        datasets.list_image_folder(tmp_path)


def test_a_folder_named_like_an_image_is_not_an_image(tmp_path):
    image(tmp_path / "cat" / "0.png")
    os.makedirs(tmp_path / "cat" / "album.jpg")
    # Before: album.jpg was listed as an image (and failed at decode time).
    with pytest.raises(ValueError, match=r"sub-folders.*album\.jpg"):
        datasets.list_image_folder(tmp_path)
    # At the top it is a class like any folder.
    os.rename(tmp_path / "cat" / "album.jpg", tmp_path / "album.jpg")
    image(tmp_path / "album.jpg" / "1.png")
    assert datasets.list_image_folder(tmp_path).class_names == ("album.jpg", "cat")


def test_hidden_and_system_files_are_skipped_with_a_count(tmp_path):
    kept = [image(tmp_path / "cat" / "0.png"), image(tmp_path / "cat" / "1.PNG")]
    image(tmp_path / "cat" / "._0.png")  # AppleDouble
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "cat" / "Thumbs.db").write_bytes(b"\0")
    os.makedirs(tmp_path / "__MACOSX" / "cat")
    os.makedirs(tmp_path / ".ipynb_checkpoints")
    with pytest.warns(UserWarning, match="Skipped 5 hidden or system"):
        files = datasets.list_image_folder(tmp_path)
    assert files.paths == tuple(kept)
    assert files.class_names == ("cat",)


def test_names_that_are_not_utf8_are_listed_and_read(tmp_path):
    folder = os.fsencode(tmp_path / "cat")
    os.makedirs(folder)
    name = os.path.join(folder, b"caf\xe9.png")  # Latin-1, not UTF-8
    Image.fromarray(np.full((2, 2, 3), 7, np.uint8)).save(
        open(name, "wb"), format="PNG"
    )
    files = datasets.list_image_folder(tmp_path)
    assert [os.fsencode(path) for path in files.paths] == [name]
    assert datasets.load_image_files(files).images[0, 0, 0, 0] == 7
    batch = next(iter(datasets.image_files_dataset(files, 2)))[0].numpy()
    # Before: the stream failed to encode the name.
    assert batch[0, 0, 0, 0] == 7


def test_a_flat_folder_lists_its_images(tmp_path):
    kept = [image(tmp_path / "b.png"), image(tmp_path / "a.jpg")]
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    with pytest.warns(UserWarning, match="Skipped 1"):
        assert datasets.list_image_paths(tmp_path) == tuple(sorted(kept))
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(ValueError, match=r"readme\.md"):
        datasets.list_image_paths(tmp_path)


def test_nothing_skipped_means_no_warning(tmp_path):
    image(tmp_path / "cat" / "0.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        datasets.list_image_folder(tmp_path)


def test_urls_in_a_csv_are_kept_as_written(tmp_path):
    image(tmp_path / "img" / "0.png")
    (tmp_path / "list.csv").write_text(
        "path,labels\nimg/0.png,cat\ngs://bucket/x/1.jpg,dog\ns3://b/2.png,cat\n"
    )
    files = datasets.read_image_csv(tmp_path / "list.csv")
    # Before: gs://bucket became <csv folder>/gs:/bucket (and check_files failed).
    assert files.paths == (
        str(tmp_path / "img" / "0.png"),
        "gs://bucket/x/1.jpg",
        "s3://b/2.png",
    )


def test_a_csv_that_is_not_utf8_is_named_with_its_line(tmp_path):
    image(tmp_path / "0.png")
    (tmp_path / "list.csv").write_bytes("0.png,cat\n0.png,caf\xe9\n".encode("latin-1"))
    # Before: a bare UnicodeDecodeError naming no file.
    with pytest.raises(ValueError, match=r"list\.csv', line 2: not UTF-8"):
        datasets.read_image_csv(tmp_path / "list.csv")


def test_a_csv_naming_a_folder_says_so(tmp_path):
    os.makedirs(tmp_path / "album.jpg")
    (tmp_path / "list.csv").write_text("album.jpg,cat\n")
    with pytest.raises(FileNotFoundError, match=r"line 1: 'album\.jpg' is not a file"):
        datasets.read_image_csv(tmp_path / "list.csv")


@pytest.mark.parametrize("multi_hot", ["no", 0, 1, "False"])
def test_multi_hot_must_be_a_bool(tmp_path, multi_hot):
    image(tmp_path / "0.png")
    (tmp_path / "list.csv").write_text("0.png,cat\n")
    # Before: "no" was true.
    with pytest.raises(TypeError, match="multi_hot must be True, False or None"):
        datasets.read_image_csv(tmp_path / "list.csv", multi_hot=multi_hot)
