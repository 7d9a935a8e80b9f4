"""Bulk encoding's Apache Beam transforms, as plain module-level classes.

:class:`EncodeImages` turns ``(id, path)`` pairs into ``(id, code)`` pairs
and dead letters (decoding with :mod:`keras_hash.datasets`' one decoder,
encoding with ``RunInference`` and a :class:`SavedModelHandler`);
:class:`WriteCodeShards` writes them as shards and a manifest
(:mod:`keras_hash.beam.shards`); :class:`WriteToMilvus` writes them to a
Milvus collection. Importing this module needs Apache Beam
(``pip install keras-hash[beam]``).

```python
with beam.Pipeline() as pipeline:
    result = pairs | EncodeImages("/models/hashnet", batch_size=256)
    result["codes"] | WriteCodeShards("codes/", bits=64, num_shards=4, listed=n)
```
"""

from __future__ import annotations

import ast
import json
import re

import numpy as np

try:
    import apache_beam as beam
    from apache_beam.metrics import Metrics
    from apache_beam.ml.inference import base
except ImportError as error:  # the module edge: only Beam pipelines need it
    raise ImportError(
        "keras_hash.beam's pipelines need Apache Beam: pip install keras-hash[beam]"
    ) from error

from keras_hash import datasets
from keras_hash.beam import shards
from keras_hash.beam.saved_model import (
    SIGNATURE,
    resolve_saved_model,
    saved_model_spec,
)

METRICS_NAMESPACE = "keras_hash.beam"


class ModelOutputError(ValueError):
    """The model returned another number of codes than it was given images:
    a broken model, not a bad image, so it fails the job."""


class SavedModelHandler(base.ModelHandler):
    """Runs a keras_hash SavedModel's ``serving_default`` on image batches.

    Beam's stock TensorFlow handler loads with ``tf.keras.models.load_model``
    (and imports ``tensorflow_hub``), which Keras 3 refuses for SavedModels;
    this one loads with ``tf.saved_model.load`` and calls the signature.
    Examples are uint8 ``[H, W, C]`` images; predictions are packed codes
    uint8 ``[bits // 8]``, one per image (another count is a
    :class:`ModelOutputError`).
    """

    def __init__(self, saved_model: str, batch_size: int = 256):
        self.path = resolve_saved_model(saved_model)
        self.image_shape, self._dtype, self.bits = saved_model_spec(self.path)
        self._batching_kwargs = {
            "min_batch_size": int(batch_size),
            "max_batch_size": int(batch_size),
        }

    def load_model(self):
        import tensorflow as tf

        return tf.saved_model.load(self.path).signatures[SIGNATURE]

    def run_inference(self, batch, model, inference_args=None):
        import tensorflow as tf

        images = tf.cast(tf.constant(np.stack(batch)), self._dtype)
        codes = np.asarray(model(images=images)["codes"])
        if codes.shape != (len(batch), self.bits // 8):
            raise ModelOutputError(
                f"{self.path!r} returned codes of shape {codes.shape} for "
                f"{len(batch)} images; expected ({len(batch)}, {self.bits // 8})"
            )
        return list(codes)

    def get_num_bytes(self, batch) -> int:
        return sum(image.nbytes for image in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE


class DecodeImages(beam.DoFn):
    """``(id, path)`` -> ``((id, path), image)``; failures to output ``failed``."""

    def __init__(self, image_shape):
        self._shape = tuple(image_shape)
        self._failed = Metrics.counter(METRICS_NAMESPACE, "failed_images")

    def setup(self):
        import tensorflow as tf

        height, width, channels = self._shape
        self._decode = tf.function(
            lambda path: datasets.decode_file_tensor(path, (height, width), channels),
            input_signature=[tf.TensorSpec([], tf.string)],
        )

    def process(self, element):
        import tensorflow as tf

        image_id, path = element
        try:
            image = self._decode(tf.constant(path)).numpy()
        except (tf.errors.OpError, ValueError, OSError) as error:
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(
                "failed",
                {
                    "id": image_id,
                    "path": path,
                    "stage": "decode",
                    "error": error_text(error),
                },
            )
            return
        yield (image_id, path), image


def _exception(error) -> tuple[type, str]:
    """``(type, message)`` of what ``with_exception_handling`` reports: an
    exception, or Beam's ``(type, repr, traceback)`` tuple."""
    if isinstance(error, tuple) and len(error) == 3 and isinstance(error[0], type):
        kind, text = error[0], str(error[1])
        match = re.fullmatch(rf"{kind.__name__}\((.*)\)", text, re.DOTALL)
        if match:
            try:
                text = str(ast.literal_eval(match.group(1)))
            except (ValueError, SyntaxError):
                text = match.group(1)
        return kind, text
    return type(error), getattr(error, "message", None) or str(error)


def error_text(error) -> str:
    """``"Type: first line"`` of an exception, TensorFlow's wrapping removed."""
    kind, message = _exception(error)
    # TensorFlow wraps its messages: "{{function_node ...}} text\n\t [[node ...]]"
    message = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", message.strip())
    message = message.splitlines()[0] if message else repr(error)
    return f"{kind.__name__}: {message[:500]}"


def failed_batch(element):
    """Dead letters for a batch ``RunInference`` could not encode; a
    :class:`ModelOutputError` fails the job instead."""
    batch, error = element
    kind, message = _exception(error)
    if issubclass(kind, ModelOutputError):
        raise ModelOutputError(message)
    for (image_id, path), _ in batch:
        yield {
            "id": image_id,
            "path": path,
            "stage": "inference",
            "error": error_text(error),
        }


def count_dead_letter(row, counter):
    counter.inc()
    return row


def drop_path(element):
    (image_id, _), code = element
    return image_id, code


class EncodeImages(beam.PTransform):
    """``(id, path)`` pairs -> ``{"codes": (id, code), "failed": dicts}``.

    Decodes (:class:`DecodeImages`) and encodes with ``RunInference`` and a
    :class:`SavedModelHandler` in batches of ``batch_size``.
    """

    def __init__(self, saved_model: str, batch_size: int = 256):
        super().__init__()
        self.handler = SavedModelHandler(saved_model, batch_size)

    def expand(self, pairs):
        decoded = pairs | "Decode" >> beam.ParDo(
            DecodeImages(self.handler.image_shape)
        ).with_outputs("failed", main="images")
        inference = base.RunInference(
            base.KeyedModelHandler(self.handler)
        ).with_exception_handling()
        encoded, dead = decoded.images | "Encode" >> inference
        failed_inference = dead.failed_inferences | "FailedBatches" >> (
            beam.FlatMap(failed_batch)
        )
        dead_letters = Metrics.counter(METRICS_NAMESPACE, "dead_letters")
        failed = (
            (decoded.failed, failed_inference)
            | "Failed" >> beam.Flatten()
            | "CountFailed" >> beam.Map(count_dead_letter, dead_letters)
        )
        codes = encoded | "Ids" >> beam.Map(drop_path)
        return {"codes": codes, "failed": failed}


def shard_rows(element, num_shards):
    image_id, code = element
    yield int(image_id) % num_shards, (int(image_id), code)


def write_rows(element, output, num_shards, bits, counter):
    """Writes one shard's rows; returns its manifest entry."""
    shard, rows = element
    rows = [row for row in rows if row is not None]
    counter.inc(len(rows))
    ids = np.asarray([i for i, _ in rows], np.int64)
    codes = np.asarray([c for _, c in rows], np.uint8).reshape(len(rows), bits // 8)
    path = shards.join(output, shards.shard_name(shard, num_shards))
    return shards.write_shard(path, codes, ids, bits)


def write_manifest(entries, failed, output, bits, num_shards, listed):
    manifest = shards.make_manifest(entries, bits, num_shards, failed, listed)
    data = json.dumps(manifest, indent=1).encode()
    shards.write_bytes(shards.join(output, shards.MANIFEST_NAME), data)
    return manifest


class WriteCodeShards(beam.PTransform):
    """Writes ``(id, code)`` pairs to ``num_shards`` shards and a manifest.

    Every shard file is written (empty ones too); ``manifest.json`` comes
    last, and only if the ``listed`` images are all accounted for: encoded
    here, or counted in ``failed`` (a one-element PCollection; default 0).
    """

    def __init__(
        self, output: str, bits: int, num_shards: int, listed: int, failed=None
    ):
        super().__init__()
        self.output, self.bits, self.num_shards = output, bits, int(num_shards)
        self.listed, self.failed = int(listed), failed

    def expand(self, codes):
        n = self.num_shards
        keyed = codes | "Key" >> beam.FlatMap(shard_rows, n)
        every = codes.pipeline | "AllShards" >> beam.Create(
            [(shard, None) for shard in range(n)]
        )
        counter = Metrics.counter(METRICS_NAMESPACE, "encoded_images")
        entries = (
            (keyed, every)
            | "Together" >> beam.Flatten()
            | "Group" >> beam.GroupByKey()
            | "Write" >> beam.Map(write_rows, self.output, n, self.bits, counter)
        )
        failed = self.failed
        if failed is None:
            failed = codes.pipeline | "NoFailures" >> beam.Create([0])
        return (
            entries
            | "Entries" >> beam.combiners.ToList()
            | "Manifest"
            >> beam.Map(
                write_manifest,
                beam.pvalue.AsSingleton(failed),
                self.output,
                self.bits,
                n,
                self.listed,
            )
        )


def open_milvus(uri, collection, bits, **kwargs):
    """A ``MilvusHammingIndex``; errors name the extra to install."""
    try:
        from keras_hash.index.milvus import MilvusHammingIndex
    except ImportError as error:
        raise ImportError(
            "the Milvus sink needs keras_hash.index.milvus and pymilvus: "
            "pip install keras-hash[milvus]"
        ) from error
    return MilvusHammingIndex(uri=uri, collection=collection, bits=bits, **kwargs)


class MilvusWriter(beam.DoFn):
    """Writes ``(id, code)`` rows to Milvus in batches of ``batch_size``."""

    def __init__(self, uri, collection, bits, batch_size, upsert, kwargs):
        self._args = (uri, collection, bits, batch_size, upsert, kwargs)
        self._written = Metrics.counter(METRICS_NAMESPACE, "milvus_rows")

    def setup(self):
        uri, collection, bits, _, _, kwargs = self._args
        self._index = open_milvus(uri, collection, bits, **kwargs)

    def start_bundle(self):
        self._rows = []

    def process(self, element):
        self._rows.append(element)
        if len(self._rows) >= self._args[3]:
            self._flush()

    def finish_bundle(self):
        self._flush()

    def _flush(self):
        if not self._rows:
            return
        ids = np.asarray([int(i) for i, _ in self._rows], np.int64)
        codes = np.stack([np.asarray(c, np.uint8) for _, c in self._rows])
        write = self._index.upsert if self._args[4] else self._index.add
        write(codes, ids)
        self._written.inc(len(ids))
        self._rows = []

    def teardown(self):
        close = getattr(getattr(self, "_index", None), "close", None)
        if callable(close):
            close()


class WriteToMilvus(beam.PTransform):
    """Writes ``(id, code)`` pairs to Milvus via ``keras_hash.index.milvus``.

    Rows go in batches of ``batch_size`` with ``upsert`` (default: a
    retried bundle writes the same rows again, so inserting could
    duplicate them). Extra keyword arguments go to ``MilvusHammingIndex``.
    """

    def __init__(self, uri, collection, bits, batch_size=1000, upsert=True, **kwargs):
        super().__init__()
        self._fn = MilvusWriter(
            uri, collection, bits, int(batch_size), bool(upsert), kwargs
        )

    def expand(self, codes):
        return codes | "Milvus" >> beam.ParDo(self._fn)
