"""keras_hash.beam.pipeline: the whole job, checked against independent references."""

import hashlib
import json
import os

import numpy as np
import pytest

import keras_hash
from keras_hash import beam, datasets
from keras_hash.beam import transforms
from tests.beam.helpers import BAD, BITS, SHARDS, SIZE, reference, sha_id


def test_codes_and_ids_equal_model_encode(run):
    codes, ids = beam.read_code_shards(run["out"])
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
    failed = beam.read_dead_letters(run["out"])
    assert [os.path.relpath(row["path"], run["photos"]) for row in failed] == sorted(
        BAD
    )
    assert {row["stage"] for row in failed} == {"decode"}
    assert [row["id"] for row in failed] == [sha_id(r) for r in sorted(BAD)]
    assert all(
        "Cannot read image" in row["error"] and row["path"] in row["error"]
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
    index = beam.build_hamming_index(run["out"], backend="numpy")
    expected = reference(run)
    assert index.ntotal == len(expected)
    queries = np.stack([expected[i] for i in sorted(expected)])
    distances, _ = index.search(queries, k=1)
    assert distances.max() == 0


def test_output_of_a_run_is_not_overwritten(run):
    with pytest.raises(FileExistsError, match="overwrite"):
        beam.encode_images(run["photos"], run["version"], run["out"])


def test_failed_batches_go_to_dead_letters(run, tmp_path, monkeypatch):
    """An inference error sends its batch to the dead letters; shards stay empty."""

    def fail(self, batch, model, inference_args=None):
        raise RuntimeError(f"no inference for {len(batch)} images")

    monkeypatch.setattr(transforms.SavedModelHandler, "run_inference", fail)
    paths = [str(run["photos"] / r) for r in run["good"][:3]]
    summary = beam.encode_images(
        paths,
        run["version"],
        tmp_path / "out",
        ids=[7, 8, 9],
        num_shards=2,
        pipeline_args=["--direct_num_workers=1"],
    )
    assert summary["count"] == 0 and summary["failed"] == 3
    failed = beam.read_dead_letters(tmp_path / "out")
    assert sorted(row["id"] for row in failed) == [7, 8, 9]
    assert {row["stage"] for row in failed} == {"inference"}
    # the error as the model raised it, not Beam's (type, repr, traceback) tuple
    assert {row["error"] for row in failed} == {
        "RuntimeError: no inference for 3 images"
    }
    codes, ids = beam.read_code_shards(tmp_path / "out")
    assert codes.shape == (0, BITS // 8) and ids.shape == (0,)


def test_pipeline_writes_to_milvus_lite(run, tmp_path):
    """The Milvus sink on a Milvus Lite file: the stored codes are the reference."""
    from keras_hash.index.milvus import MilvusHammingIndex

    uri = str(tmp_path / "codes.db")
    summary = beam.encode_images(
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
    assert len(beam.read_dead_letters(tmp_path / "out")) == len(BAD)


# --- issue 30: counts reconciled, empty jobs, sinks checked up front --------


def test_a_lost_image_fails_the_job_and_writes_no_manifest(run, tmp_path, monkeypatch):
    """encoded + failed must equal listed: a transform that loses a row is caught."""
    lost = sha_id(run["good"][0])

    def lose_one(element, num_shards):
        image_id, code = element
        if int(image_id) != lost:
            yield int(image_id) % num_shards, (int(image_id), code)

    monkeypatch.setattr(transforms, "shard_rows", lose_one)
    with pytest.raises(Exception, match=r"22 images were listed but 19 encoded \+ 2"):
        beam.encode_images(
            run["photos"],
            run["version"],
            tmp_path / "out",
            num_shards=2,
            pipeline_args=["--direct_num_workers=1"],
        )
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_model_returning_other_row_counts_is_an_error(run, tmp_path, monkeypatch):
    load = transforms.SavedModelHandler.load_model

    def short_model(self):
        signature = load(self)
        return lambda images: {"codes": signature(images=images)["codes"][:-1]}

    monkeypatch.setattr(transforms.SavedModelHandler, "load_model", short_model)
    paths = [str(run["photos"] / r) for r in run["good"][:3]]
    with pytest.raises(Exception, match=r"returned codes of shape \(2, 4\) for 3"):
        beam.encode_images(
            paths,
            run["version"],
            tmp_path / "out",
            ids=[1, 2, 3],
            batch_size=3,
            pipeline_args=["--direct_num_workers=1"],
        )
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.parametrize("header", ["path,id", "path,labels"])
def test_a_header_only_csv_is_an_empty_job(run, tmp_path, header):
    (tmp_path / "images.csv").write_text(f"{header}\n\n")
    out = tmp_path / "out"
    summary = beam.encode_images(tmp_path / "images.csv", run["version"], out)
    assert (summary["count"], summary["failed"], summary["listed"]) == (0, 0, 0)
    codes, ids = beam.read_code_shards(out)
    assert codes.shape == (0, BITS // 8) and ids.shape == (0,)


def test_a_wrong_milvus_sink_fails_before_beam_starts(run, tmp_path, monkeypatch):
    from keras_hash.index.milvus import MilvusHammingIndex

    uri = str(tmp_path / "codes.db")
    with MilvusHammingIndex(2 * BITS, uri=uri, collection="wide"):
        pass

    def no_pipeline(*args, **kwargs):
        raise AssertionError("the Beam job started")

    monkeypatch.setattr(transforms.beam, "Pipeline", no_pipeline)
    for collection, message in (("wide", "dim|bits"), ("bad-name", "collection")):
        with pytest.raises(ValueError, match=message):
            beam.encode_images(
                run["photos"],
                run["version"],
                tmp_path / collection,
                milvus={"uri": uri, "collection": collection},
            )


def test_milvus_only_runs_reconcile_their_counts(run, tmp_path, monkeypatch):
    """Without shards there is no manifest: the job checks rows written to
    Milvus + dead letters == listed from Beam's counters instead."""
    process = transforms.MilvusWriter.process
    lost = sha_id(run["good"][0])

    def lose_one(self, element):
        if int(element[0]) != lost:
            process(self, element)

    monkeypatch.setattr(transforms.MilvusWriter, "process", lose_one)
    with pytest.raises(ValueError, match=r"22 images were listed but 19 written"):
        beam.encode_images(
            run["photos"],
            run["version"],
            tmp_path / "out",
            write_shards=False,
            milvus={"uri": str(tmp_path / "codes.db"), "collection": "lossy"},
            pipeline_args=["--direct_num_workers=1"],
        )
