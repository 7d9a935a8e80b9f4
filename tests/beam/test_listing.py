"""keras_hash.beam.listing: paths and ids."""

import os

import pytest

from keras_hash import beam
from keras_hash.beam import listing
from tests.beam.helpers import BAD, sha_id


@pytest.mark.numpy_only
def test_list_images_id_rules(run, tmp_path):
    relative = sorted(run["good"] + list(BAD))
    paths, ids = beam.list_images(run["photos"])
    assert [os.path.relpath(p, run["photos"]) for p in paths] == relative
    assert ids.tolist() == [sha_id(r) for r in relative]
    _, ids = beam.list_images(run["photos"], ids="index")
    assert ids.tolist() == list(range(len(relative)))
    # a glob: ids from paths relative to the glob's fixed part, the same here
    paths, ids = beam.list_images(str(run["photos"] / "*" / "*.png"))
    assert ids.tolist() == [sha_id(r) for r in relative if r.endswith(".png")]
    # the user's ids from a 'path,id' CSV, paths relative to the CSV
    (tmp_path / "ids.csv").write_text(
        f"path,id\n{run['photos'] / 'cats/001.png'},-5\n"
        f"{os.path.relpath(run['photos'] / 'dogs/002.png', tmp_path)},77\n"
    )
    paths, ids = beam.list_images(tmp_path / "ids.csv")
    assert paths == [
        str(run["photos"] / "cats/001.png"),
        str(run["photos"] / "dogs/002.png"),
    ]
    assert ids.tolist() == [-5, 77]


@pytest.mark.numpy_only
def test_list_images_refuses_collisions_and_bad_ids(run, tmp_path, monkeypatch):
    monkeypatch.setattr(listing, "stable_id", lambda relative: len(relative))
    with pytest.raises(ValueError, match="two images have the id"):
        beam.list_images(run["photos"])
    monkeypatch.undo()
    with pytest.raises(ValueError, match="unique|two images"):
        beam.list_images(["a.png", "b.png"], ids=[3, 3])
    with pytest.raises(ValueError, match="one int per image"):
        beam.list_images(["a.png", "b.png"], ids=[3])
    with pytest.raises(ValueError, match="ids must be one of"):
        beam.list_images(run["photos"], ids="random")
    (tmp_path / "bad.csv").write_text("path,id\na.png,seven\n")
    with pytest.raises(ValueError, match="line 2.*not an integer"):
        beam.list_images(tmp_path / "bad.csv")
    with pytest.raises(FileNotFoundError):
        beam.list_images(tmp_path / "nowhere")
