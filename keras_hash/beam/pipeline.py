"""The bulk-encoding job: listing -> decode -> encode -> shards and/or Milvus.

Everything that can be checked is checked before Beam starts (the listing,
the SavedModel's signature, the output folder, the Milvus collection's bits
and name), and the job's counts are reconciled at its end: every listed
image is encoded or in the dead letters, or no manifest is written and the
job fails.

```python
summary = encode_images("photos/", "/models/hashnet", "codes/",
                        pipeline_args=["--direct_num_workers=1"])
summary["count"] + summary["failed"] == summary["listed"]
```
"""

from __future__ import annotations

import json
import math
import os
import shutil

from keras_hash.beam import shards
from keras_hash.beam.listing import list_images

LISTING_NAME = "images.jsonl"
#: Beam's WriteToText staging folders (``beam-temp-errors-<uuid>``).
BEAM_STAGING = "beam-temp-"
#: Default rows per shard when ``num_shards`` is not given.
ROWS_PER_SHARD = 1_000_000
_MILVUS_SINK_ARGS = ("batch_size", "upsert")


def _prepare_output(output: str, overwrite: bool) -> None:
    if shards.is_remote(output):
        return
    os.makedirs(output, exist_ok=True)
    old = [
        name
        for name in os.listdir(output)
        if name in (shards.MANIFEST_NAME, LISTING_NAME)
        or shards.SHARD_NAME.match(name)
        or (
            name.startswith(shards.ERRORS_PREFIX + "-")
            and name.endswith(shards.ERRORS_SUFFIX)
        )
        or name.startswith(BEAM_STAGING)  # a killed run's Beam staging folder
    ]
    if old and not overwrite:
        raise FileExistsError(
            f"{output!r} already holds the output of a run ({sorted(old)[0]}, ...); "
            "pass overwrite=True (--overwrite) or another folder"
        )
    for name in sorted(old, key=lambda n: n != shards.MANIFEST_NAME):  # manifest 1st
        path = os.path.join(output, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def _check_milvus(milvus: dict, bits: int) -> None:
    """Opens the collection once before the job: wrong bits, a bad name or
    an unreachable server fail here, not inside Beam's workers."""
    from keras_hash.beam.transforms import open_milvus

    if "bits" in milvus:
        raise ValueError("milvus: leave 'bits' out, the model's bits are used")
    if "uri" not in milvus:
        raise ValueError("milvus needs a 'uri' (a Lite .db file or a server)")
    index = open_milvus(
        bits=bits, **{k: v for k, v in milvus.items() if k not in _MILVUS_SINK_ARGS}
    )
    index.close()


def _empty_job(output: str, bits: int, num_shards: int) -> dict:
    entries = [
        shards.write_shard(
            shards.join(output, shards.shard_name(shard, num_shards)),
            *_no_rows(bits),
            bits,
        )
        for shard in range(num_shards)
    ]
    manifest = shards.make_manifest(entries, bits, num_shards, failed=0, listed=0)
    data = json.dumps(manifest, indent=1).encode()
    shards.write_bytes(shards.join(output, shards.MANIFEST_NAME), data)
    return manifest


def _no_rows(bits: int):
    import numpy as np

    return np.zeros((0, bits // 8), np.uint8), np.zeros(0, np.int64)


def encode_images(
    images,
    saved_model: str,
    output: str,
    ids="hash",
    batch_size: int = 256,
    num_shards: int | None = None,
    write_shards: bool = True,
    milvus: dict | None = None,
    overwrite: bool = False,
    pipeline_args=None,
) -> dict | None:
    """Encodes an image collection with a SavedModel on a Beam pipeline.

    ```python
    summary = encode_images("photos/", "/models/hashnet", "out/",
                            pipeline_args=["--direct_num_workers=1"])
    summary["count"], summary["failed"]
    ```

    Args:
        images: what :func:`keras_hash.beam.list_images` takes (listed on
            this machine). A CSV of no rows is an empty job.
        saved_model: a version folder of :func:`keras_hash.export.export_saved_model`
            or its model folder (the largest version is used).
        output: folder of the shards, ``manifest.json`` and the
            ``errors-*.jsonl`` dead letters (local or ``gs://...``).
        ids: ``"hash"``, ``"index"`` or a sequence of ints (:func:`list_images`).
        batch_size: images per ``RunInference`` batch.
        num_shards: shard files; default ``ceil(n / 1,000,000)``.
        write_shards: write shards and manifest (``False``: Milvus only).
        milvus: keyword arguments of :class:`~keras_hash.beam.transforms.WriteToMilvus`
            (``uri``, ``collection``; ``bits`` is the model's) to write there
            too; the collection is opened once before the job starts.
        overwrite: replace the output of an earlier run in ``output``.
        pipeline_args: Beam options, e.g. ``["--runner=DataflowRunner", ...]``.

    Returns:
        the manifest (``count``, ``failed``, ``listed``, shards) when the
        runner waits for the result and shards are written, else ``None``.

    Raises:
        ValueError: ``count + failed != listed`` at the end (no manifest is
            written), a model returning another number of codes than images.
    """
    from keras_hash.beam import transforms

    beam = transforms.beam
    from apache_beam.options.pipeline_options import PipelineOptions

    output = os.fspath(output)
    paths, image_ids = list_images(images, ids)
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_shards is None:
        num_shards = max(1, math.ceil(len(paths) / ROWS_PER_SHARD))
    if isinstance(num_shards, bool) or int(num_shards) < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    num_shards = int(num_shards)
    if not write_shards and not milvus:
        raise ValueError("nothing to write: write_shards=False and no milvus sink")
    encode = transforms.EncodeImages(saved_model, batch_size)
    bits = encode.handler.bits
    if milvus:
        _check_milvus(milvus, bits)
    _prepare_output(output, overwrite)
    if not paths:
        return _empty_job(output, bits, num_shards) if write_shards else None
    listing = shards.join(output, LISTING_NAME)  # read by the workers
    lines = (
        json.dumps({"id": int(i), "path": p})
        for i, p in zip(image_ids, paths, strict=True)
    )
    shards.write_bytes(listing, ("\n".join(lines) + "\n").encode())
    options = PipelineOptions(list(pipeline_args or []))
    pipeline = beam.Pipeline(options=options)
    result = (
        pipeline
        | "Listing" >> beam.io.ReadFromText(listing)
        | "Pairs" >> beam.Map(_listing_pair)
        | "Spread" >> beam.Reshuffle()
        | encode
    )
    failed = result["failed"]
    _ = (
        failed
        | "ToJson" >> beam.Map(json.dumps, sort_keys=True)
        | "DeadLetters"
        >> beam.io.WriteToText(
            shards.join(output, shards.ERRORS_PREFIX),
            file_name_suffix=shards.ERRORS_SUFFIX,
        )
    )
    if write_shards:
        count = failed | "CountFailed" >> beam.combiners.Count.Globally()
        _ = result["codes"] | "Shards" >> transforms.WriteCodeShards(
            output, bits, num_shards, listed=len(paths), failed=count
        )
    if milvus:
        _ = result["codes"] | "ToMilvus" >> transforms.WriteToMilvus(
            bits=bits, **milvus
        )
    run = pipeline.run()
    run.wait_until_finish()
    if not write_shards:
        _check_milvus_counts(run, len(paths))
        return None
    try:
        return json.loads(shards.read_bytes(shards.join(output, shards.MANIFEST_NAME)))
    except OSError:
        return None  # a runner that does not wait (e.g. a Dataflow template)


def _check_milvus_counts(run, listed: int) -> None:
    """Milvus only (no manifest): rows written + dead letters == listed."""
    from apache_beam.metrics.metric import MetricsFilter

    from keras_hash.beam.transforms import METRICS_NAMESPACE

    def committed(name):
        query = MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name(name)
        counters = run.metrics().query(query)["counters"]
        return sum(int(counter.committed or 0) for counter in counters)

    written, failed = committed("milvus_rows"), committed("dead_letters")
    if written + failed != listed:
        raise ValueError(
            f"{listed} images were listed but {written} written to Milvus + "
            f"{failed} failed = {written + failed}: the run lost or duplicated images"
        )


def _listing_pair(line: str) -> tuple[int, str]:
    row = json.loads(line)
    return int(row["id"]), row["path"]
