"""Tests of keras_hash.files.write_atomic."""

import os

import pytest

from keras_hash.files import write_atomic


def _write(text):
    def write(path):
        with open(path, "w") as file:
            file.write(text)

    return write


def test_replaces_the_file_and_leaves_no_staging_file(tmp_path):
    target = tmp_path / "sub" / "model.weights.h5"
    seen = []
    write_atomic(target, lambda p: (seen.append(p), _write("new")(p)))
    assert target.read_text() == "new"
    assert seen[0].endswith("-model.weights.h5") and seen[0] != str(target)
    assert os.listdir(target.parent) == ["model.weights.h5"]


def test_a_failing_writer_leaves_the_old_file(tmp_path):
    target = tmp_path / "index.khi"
    target.write_text("old")

    def failing(path):
        _write("half")(path)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, failing)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["index.khi"]
