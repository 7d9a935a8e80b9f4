"""keras_hash.beam.shards: the shard reader refuses what it cannot trust."""

import json
import shutil

import numpy as np
import pytest

import keras_hash
from keras_hash import beam
from tests.beam.helpers import BITS, SHARDS


@pytest.fixture
def copy(run, tmp_path):
    target = tmp_path / "out"
    shutil.copytree(run["out"], target)
    return target


@pytest.mark.numpy_only
def test_reader_refuses_a_corrupt_shard(copy):
    shard = copy / f"codes-00001-of-{SHARDS:05d}.npz"
    data = bytearray(shard.read_bytes())
    data[-200] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        beam.read_code_shards(copy)
    with pytest.raises(ValueError):  # no manifest: the index file's own checks
        beam.read_code_shards(str(copy / "codes-*.npz"))


@pytest.mark.numpy_only
def test_reader_refuses_a_missing_or_truncated_shard(copy):
    shard = copy / f"codes-00002-of-{SHARDS:05d}.npz"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(ValueError):
        beam.read_code_shards(str(copy / "codes-*.npz"))
    shard.unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        beam.read_code_shards(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="manifest"):
        beam.read_code_shards(copy)


@pytest.mark.numpy_only
def test_reader_refuses_hostile_manifests(copy):
    manifest_path = copy / "manifest.json"
    good = json.loads(manifest_path.read_text())
    for change in (
        {"magic": "something else"},
        {"format_version": 2},
        {"shards": [{"name": "../../etc/passwd", "count": 1, "sha256": "x"}]},
        {"count": good["count"] + 1},
        {"bits": 64},
    ):
        manifest_path.write_text(json.dumps({**good, **change}))
        with pytest.raises(ValueError):
            beam.read_code_shards(copy)
    manifest_path.write_bytes(b"\xff\xfe not json")
    with pytest.raises(ValueError, match="manifest"):
        beam.read_code_shards(manifest_path)


@pytest.mark.numpy_only
def test_reader_refuses_repeated_ids_and_mixed_bits(tmp_path):
    codes = np.arange(8, dtype=np.uint8).reshape(2, 4)
    beam.write_shard(str(tmp_path / "a.npz"), codes, np.array([1, 2]), 32)
    beam.write_shard(str(tmp_path / "b.npz"), codes, np.array([2, 3]), 32)
    with pytest.raises(ValueError, match=r"\[2\].*more than one shard"):
        beam.read_code_shards(str(tmp_path / "*.npz"))
    (tmp_path / "b.npz").unlink()
    wide = np.zeros((1, 8), np.uint8)
    beam.write_shard(str(tmp_path / "c.npz"), wide, np.array([9]), 64)
    with pytest.raises(ValueError, match="64-bit"):
        beam.read_code_shards(str(tmp_path / "*.npz"))
    (tmp_path / "c.npz").unlink()
    got_codes, got_ids = beam.read_code_shards(str(tmp_path / "*.npz"))
    np.testing.assert_array_equal(got_codes, codes)
    assert got_ids.tolist() == [1, 2]


@pytest.mark.numpy_only
def test_manifest_must_name_exactly_its_shards_and_add_up(copy):
    """A manifest that leaves a shard out (and lowers its count to match)
    would silently read a subset: it is refused, as is any other mismatch."""
    manifest_path = copy / "manifest.json"
    good = json.loads(manifest_path.read_text())
    first, rest = good["shards"][0], good["shards"][1:]
    less = good["count"] - first["count"]
    for change in (
        {"shards": rest, "count": less, "listed": less + good["failed"]},
        {"shards": [first, *good["shards"]], "count": good["count"] + first["count"]},
        {"shards": good["shards"][::-1]},
        {"num_shards": SHARDS + 1},
        {"listed": good["listed"] + 1},
        {"failed": good["failed"] + 1},
        {"num_shards": 0, "shards": []},
    ):
        manifest_path.write_text(json.dumps({**good, **change}))
        with pytest.raises(ValueError, match="num_shards|add up|malformed"):
            beam.read_code_shards(copy)
    manifest_path.write_text(json.dumps(good))
    assert len(beam.read_code_shards(copy)[1]) == good["count"]


@pytest.mark.numpy_only
def test_a_shard_holding_ids_of_another_shard_is_refused(copy):
    manifest_path = copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    index = keras_hash.HammingIndex.load(copy / manifest["shards"][0]["name"])
    moved = np.zeros((1, BITS // 8), np.uint8), np.array([SHARDS * 1000 + 1])
    index.add(*moved)  # id mod SHARDS == 1, in shard 0
    name = manifest["shards"][0]["name"]
    entry = beam.write_shard(str(copy / name), index.codes, index.ids, BITS)
    manifest["shards"][0] = entry
    manifest["count"] += 1
    manifest["listed"] += 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="ids that belong to other shards"):
        beam.read_code_shards(copy)
