"""Bulk encoding on Apache Beam: a SavedModel encodes an image folder to shards.

One tiny HashNet (16x16 RGB, 32 bits, untrained) is exported and one
pipeline run (the command line, DirectRunner, one worker) encodes a small
generated folder for the whole module. References are independent of the
pipeline: images decoded with Pillow by the training loader
(``datasets.load_image_files``), codes ``np.packbits(z >= 0)`` of the model's
own ``code_logits``, ids from ``hashlib`` by hand.
"""

import hashlib
import json
import os
import shutil
import sys
import types

import keras
import numpy as np
import pytest
from PIL import Image

import keras_hash
from keras_hash import bulk_encode, datasets, export

SIZE, BITS, SHARDS = 16, 32, 3
BAD = ("dogs/broken.png", "dogs/empty.jpg")


def backbone():
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, x)


def write_images(root):
    """20 good PNGs in two class folders (some grey, RGBA, other sizes), 2 bad."""
    rng = np.random.default_rng(0)
    good = []
    for c, name in enumerate(("cats", "dogs")):
        os.makedirs(root / name)
        for i in range(10):
            shape = (20, 24) if i % 4 == 1 else (SIZE, SIZE)
            pixels = rng.integers(0, 256, (*shape, 4), dtype=np.uint8)
            mode = ("RGB", "L", "RGBA")[(i + c) % 3]
            image = {
                "RGB": lambda p: Image.fromarray(p[..., :3]),
                "L": lambda p: Image.fromarray(p[..., 0]),
                "RGBA": lambda p: Image.fromarray(p, "RGBA"),
            }[mode](pixels)
            image.save(root / name / f"{i:03d}.png")
            good.append(f"{name}/{i:03d}.png")
    (root / BAD[0]).write_bytes(b"not an image at all" * 10)
    (root / BAD[1]).write_bytes(b"")
    return good


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("bulk")
    model = keras_hash.HashNet(backbone(), bits=BITS)
    model(np.zeros((1, SIZE, SIZE, 3), "float32"))  # builds the hash layer
    version = export.export_saved_model(model, root / "models", "tiny", version=1)
    good = write_images(root / "photos")
    out = root / "out"
    bulk_encode.main(
        [
            f"--saved_model={root / 'models' / 'tiny'}",  # model folder: latest
            f"--images={root / 'photos'}",
            f"--output={out}",
            "--batch_size=8",
            f"--num_shards={SHARDS}",
            "--runner=DirectRunner",
            "--direct_num_workers=1",
        ]
    )
    return {
        "model": model,
        "root": root,
        "photos": root / "photos",
        "good": good,
        "out": out,
        "version": version,
    }


def sha_id(relative):
    return int.from_bytes(hashlib.sha256(relative.encode()).digest()[:8], "big") >> 1


def reference(run):
    """``{id: code}`` from Pillow decoding and the model's own logits."""
    paths = [str(run["photos"] / r) for r in run["good"]]
    files = datasets.ImageFiles(paths, np.zeros(len(paths), np.int32), ())
    images = datasets.load_image_files(files, image_size=SIZE).images
    z = run["model"].code_logits(images.astype("float32")).numpy()
    codes = np.packbits(z >= 0, axis=-1)
    return {sha_id(r): code for r, code in zip(run["good"], codes, strict=True)}


# --- the pipeline run -----------------------------------------------------


def test_codes_and_ids_equal_model_encode(run):
    codes, ids = bulk_encode.read_code_shards(run["out"])
    expected = reference(run)
    assert codes.dtype == np.uint8 and codes.shape == (len(run["good"]), BITS // 8)
    assert ids.dtype == np.int64 and ids.tolist() == sorted(expected)
    np.testing.assert_array_equal(codes, np.stack([expected[i] for i in ids]))
    # the same images through model.encode (training's resize, in numpy order)
    paths = [str(run["photos"] / r) for r in run["good"]]
    files = datasets.ImageFiles(paths, np.zeros(len(paths), np.int32), ())
    images = datasets.load_image_files(files, image_size=SIZE).images
    encoded = run["model"].encode(images.astype("float32"))
    by_id = dict(zip(ids.tolist(), codes, strict=True))
    got = np.stack([by_id[sha_id(r)] for r in run["good"]])
    np.testing.assert_array_equal(got, encoded)


def test_bad_files_go_to_dead_letters(run):
    manifest = json.loads((run["out"] / "manifest.json").read_text())
    assert manifest["count"] == len(run["good"]) and manifest["failed"] == len(BAD)
    failed = bulk_encode.read_dead_letters(run["out"])
    assert [os.path.relpath(row["path"], run["photos"]) for row in failed] == sorted(
        BAD
    )
    assert {row["stage"] for row in failed} == {"decode"}
    assert [row["id"] for row in failed] == [sha_id(r) for r in sorted(BAD)]
    assert all(
        row["error"].startswith("InvalidArgumentError: ")
        and "Cannot read image file" in row["error"]
        for row in failed
    )


def test_shards_are_hamming_index_files(run):
    names = sorted(os.listdir(run["out"]))
    shards = [n for n in names if n.startswith("codes-")]
    assert shards == [f"codes-{k:05d}-of-{SHARDS:05d}.npz" for k in range(SHARDS)]
    manifest = json.loads((run["out"] / "manifest.json").read_text())
    total = 0
    for k, name in enumerate(shards):
        index = keras_hash.HammingIndex.load(run["out"] / name)
        assert index.bits == BITS
        assert all(i % SHARDS == k for i in index.ids.tolist())
        entry = manifest["shards"][k]
        digest = hashlib.sha256((run["out"] / name).read_bytes()).hexdigest()
        assert entry == {"name": name, "count": index.ntotal, "sha256": digest}
        total += index.ntotal
    assert total == len(run["good"])
    listing = [
        json.loads(line)
        for line in (run["out"] / "images.jsonl").read_text().splitlines()
    ]
    assert len(listing) == len(run["good"]) + len(BAD)


def test_build_hamming_index_finds_each_code(run):
    index = bulk_encode.build_hamming_index(run["out"], backend="numpy")
    expected = reference(run)
    assert index.ntotal == len(expected)
    queries = np.stack([expected[i] for i in sorted(expected)])
    distances, _ = index.search(queries, k=1)
    assert distances.max() == 0


def test_output_of_a_run_is_not_overwritten(run):
    with pytest.raises(FileExistsError, match="overwrite"):
        bulk_encode.encode_images(run["photos"], run["version"], run["out"])


# --- the shard reader -----------------------------------------------------


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
        bulk_encode.read_code_shards(copy)
    with pytest.raises(ValueError):  # no manifest: the index file's own checks
        bulk_encode.read_code_shards(str(copy / "codes-*.npz"))


@pytest.mark.numpy_only
def test_reader_refuses_a_missing_or_truncated_shard(copy):
    shard = copy / f"codes-00002-of-{SHARDS:05d}.npz"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(ValueError):
        bulk_encode.read_code_shards(str(copy / "codes-*.npz"))
    shard.unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        bulk_encode.read_code_shards(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="manifest"):
        bulk_encode.read_code_shards(copy)


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
            bulk_encode.read_code_shards(copy)
    manifest_path.write_bytes(b"\xff\xfe not json")
    with pytest.raises(ValueError, match="manifest"):
        bulk_encode.read_code_shards(manifest_path)


@pytest.mark.numpy_only
def test_reader_refuses_repeated_ids_and_mixed_bits(tmp_path):
    codes = np.arange(8, dtype=np.uint8).reshape(2, 4)
    bulk_encode.write_shard(str(tmp_path / "a.npz"), codes, np.array([1, 2]), 32)
    bulk_encode.write_shard(str(tmp_path / "b.npz"), codes, np.array([2, 3]), 32)
    with pytest.raises(ValueError, match=r"\[2\].*more than one shard"):
        bulk_encode.read_code_shards(str(tmp_path / "*.npz"))
    (tmp_path / "b.npz").unlink()
    wide = np.zeros((1, 8), np.uint8)
    bulk_encode.write_shard(str(tmp_path / "c.npz"), wide, np.array([9]), 64)
    with pytest.raises(ValueError, match="64-bit"):
        bulk_encode.read_code_shards(str(tmp_path / "*.npz"))
    (tmp_path / "c.npz").unlink()
    got_codes, got_ids = bulk_encode.read_code_shards(str(tmp_path / "*.npz"))
    np.testing.assert_array_equal(got_codes, codes)
    assert got_ids.tolist() == [1, 2]


# --- listing and ids ------------------------------------------------------


@pytest.mark.numpy_only
def test_list_images_id_rules(run, tmp_path):
    relative = sorted(run["good"] + list(BAD))
    paths, ids = bulk_encode.list_images(run["photos"])
    assert [os.path.relpath(p, run["photos"]) for p in paths] == relative
    assert ids.tolist() == [sha_id(r) for r in relative]
    _, ids = bulk_encode.list_images(run["photos"], ids="index")
    assert ids.tolist() == list(range(len(relative)))
    # a glob: ids from paths relative to the glob's fixed part, the same here
    paths, ids = bulk_encode.list_images(str(run["photos"] / "*" / "*.png"))
    assert ids.tolist() == [sha_id(r) for r in relative if r.endswith(".png")]
    # the user's ids from a 'path,id' CSV, paths relative to the CSV
    (tmp_path / "ids.csv").write_text(
        f"path,id\n{run['photos'] / 'cats/001.png'},-5\n"
        f"{os.path.relpath(run['photos'] / 'dogs/002.png', tmp_path)},77\n"
    )
    paths, ids = bulk_encode.list_images(tmp_path / "ids.csv")
    assert paths == [
        str(run["photos"] / "cats/001.png"),
        str(run["photos"] / "dogs/002.png"),
    ]
    assert ids.tolist() == [-5, 77]


@pytest.mark.numpy_only
def test_list_images_refuses_collisions_and_bad_ids(run, tmp_path, monkeypatch):
    monkeypatch.setattr(bulk_encode, "stable_id", lambda relative: len(relative))
    with pytest.raises(ValueError, match="two images have the id"):
        bulk_encode.list_images(run["photos"])
    monkeypatch.undo()
    with pytest.raises(ValueError, match="unique|two images"):
        bulk_encode.list_images(["a.png", "b.png"], ids=[3, 3])
    with pytest.raises(ValueError, match="one int per image"):
        bulk_encode.list_images(["a.png", "b.png"], ids=[3])
    with pytest.raises(ValueError, match="ids must be one of"):
        bulk_encode.list_images(run["photos"], ids="random")
    (tmp_path / "bad.csv").write_text("path,id\na.png,seven\n")
    with pytest.raises(ValueError, match="line 2.*not an integer"):
        bulk_encode.list_images(tmp_path / "bad.csv")
    with pytest.raises(FileNotFoundError):
        bulk_encode.list_images(tmp_path / "nowhere")


# --- the SavedModel, decoding, sinks --------------------------------------


def test_saved_model_spec_and_refusals(run, tmp_path):
    assert bulk_encode.resolve_saved_model(run["root"] / "models" / "tiny") == str(
        run["version"]
    )
    spec = bulk_encode.saved_model_spec(run["version"])
    assert spec == ((SIZE, SIZE, 3), "float32", BITS)
    with pytest.raises(FileNotFoundError, match="no SavedModel"):
        bulk_encode.saved_model_spec(tmp_path)
    # a SavedModel of another contract (float output) is refused
    import tensorflow as tf

    module = tf.Module()
    module.f = tf.function(
        lambda images: {"codes": tf.reduce_sum(images, [1, 2])},
        input_signature=[tf.TensorSpec([None, 4, 4, 3], tf.float32)],
    )
    tf.saved_model.save(module, str(tmp_path / "other"), {"serving_default": module.f})
    with pytest.raises(ValueError, match="not a keras_hash SavedModel"):
        bulk_encode.saved_model_spec(tmp_path / "other")


def test_decode_grey_model_input(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (SIZE, SIZE), np.uint8)
    Image.fromarray(pixels).save(tmp_path / "g.png")
    image = bulk_encode.decode_image(str(tmp_path / "g.png"), (SIZE, SIZE, 1))
    np.testing.assert_array_equal(image.numpy()[..., 0], pixels)


@pytest.mark.numpy_only
def test_missing_beam_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "apache_beam", None)
    with pytest.raises(ImportError, match=r"pip install keras-hash\[beam\]"):
        bulk_encode._import_beam()


@pytest.mark.numpy_only
def test_milvus_writer_batches_rows(monkeypatch):
    """The Milvus DoFn, with a recording stand-in for keras_hash.index.milvus."""
    calls = []

    class FakeIndex:
        def __init__(self, uri, collection, bits):
            calls.append(("init", uri, collection, bits))

        def upsert(self, codes, ids):
            calls.append(("upsert", codes.copy(), ids.copy()))

    fake = types.ModuleType("keras_hash.index.milvus")
    fake.MilvusHammingIndex = FakeIndex
    monkeypatch.setitem(sys.modules, "keras_hash.index.milvus", fake)
    sink = bulk_encode.WriteToMilvus("x.db", "c", BITS, batch_size=4)
    fn = sink._fn
    fn.setup()
    rows = [(i * 10, np.full(BITS // 8, i, np.uint8)) for i in range(10)]
    fn.start_bundle()
    for row in rows:
        fn.process(row)
    fn.finish_bundle()
    assert calls[0] == ("init", "x.db", "c", BITS)
    sizes = [len(call[2]) for call in calls[1:]]
    assert sizes == [4, 4, 2] and {call[0] for call in calls[1:]} == {"upsert"}
    ids = np.concatenate([call[2] for call in calls[1:]])
    codes = np.concatenate([call[1] for call in calls[1:]])
    assert ids.tolist() == [i * 10 for i in range(10)]
    np.testing.assert_array_equal(codes[:, 0], np.arange(10))


def test_failed_batches_go_to_dead_letters(run, tmp_path, monkeypatch):
    """An inference error sends its batch to the dead letters; shards stay empty."""

    def fail(self, batch, model, inference_args=None):
        raise RuntimeError(f"no inference for {len(batch)} images")

    monkeypatch.setattr(bulk_encode.SavedModelHandler, "run_inference", fail)
    paths = [str(run["photos"] / r) for r in run["good"][:3]]
    summary = bulk_encode.encode_images(
        paths,
        run["version"],
        tmp_path / "out",
        ids=[7, 8, 9],
        num_shards=2,
        pipeline_args=["--direct_num_workers=1"],
    )
    assert summary["count"] == 0 and summary["failed"] == 3
    failed = bulk_encode.read_dead_letters(tmp_path / "out")
    assert sorted(row["id"] for row in failed) == [7, 8, 9]
    assert {row["stage"] for row in failed} == {"inference"}
    assert all("no inference for" in row["error"] for row in failed)
    codes, ids = bulk_encode.read_code_shards(tmp_path / "out")
    assert codes.shape == (0, BITS // 8) and ids.shape == (0,)


def test_pipeline_writes_to_milvus_lite(run, tmp_path):
    """The Milvus sink on a Milvus Lite file: the stored codes are the reference."""
    from keras_hash.index.milvus import MilvusHammingIndex

    uri = str(tmp_path / "codes.db")
    summary = bulk_encode.encode_images(
        run["photos"],
        run["version"],
        tmp_path / "out",
        write_shards=False,
        milvus={"uri": uri, "collection": "bulk", "batch_size": 7},
        pipeline_args=["--direct_num_workers=1"],
    )
    assert summary is None
    expected = reference(run)
    ids = np.array(sorted(expected), np.int64)
    with MilvusHammingIndex(BITS, uri=uri, collection="bulk") as index:
        assert index.ntotal == len(expected)
        np.testing.assert_array_equal(
            index.get(ids), np.stack([expected[i] for i in ids])
        )
    assert len(bulk_encode.read_dead_letters(tmp_path / "out")) == len(BAD)
