"""Bulk encoding of image collections with Apache Beam: images in, code shards out.

A batch pipeline reads image files, decodes and resizes them exactly as
:func:`keras_hash.datasets.image_files_dataset` does for training, encodes
them in batches with an exported SavedModel
(:func:`keras_hash.export.export_saved_model`) through Beam's
``RunInference``, and writes the packed codes with their ids to sharded
files, to Milvus, or both. Files that cannot be read go to a dead-letter
output with their error instead of failing the pipeline.

The same pipeline runs on the ``DirectRunner`` (one machine) or on
Dataflow, Flink and Spark by changing the runner options
(``docs/bulk_encoding.md``).

```python
from keras_hash import bulk_encode

summary = bulk_encode.encode_images(
    "photos/", "/models/hashnet", "codes/", pipeline_args=["--runner=DirectRunner"]
)
codes, ids = bulk_encode.read_code_shards("codes/")
index = bulk_encode.build_hamming_index("codes/")
```

From the shell::

    python -m keras_hash.bulk_encode --saved_model=/models/hashnet \\
        --images=photos/ --output=codes/ --runner=DirectRunner

**Ids** (:func:`list_images`). ``ids="hash"`` (default): the first 8 bytes of
``sha256`` of the file's path relative to the collection root (UTF-8, ``/``
separators), big-endian, shifted right by one bit: an int64 in
``0 .. 2**63 - 1`` that depends on nothing but that relative path, so it is
the same on every run and machine, and adding files changes no other id.
The root is the folder given, the CSV's folder, or the fixed part of a glob
(up to the first component with a wildcard); paths given as a list are
hashed as given. Two paths of one collection with the same id (odds about
``n**2 / 2**64``: 5e-8 for a million files) are an error at listing time.
``ids="index"``: the position in the sorted list of relative paths
(``0 .. n - 1``; adding a file shifts later ids). Your own ids: a CSV with
the header ``path,id``, or a sequence of ints aligned with the paths.

**Shards** (:func:`read_code_shards`). ``<output>/codes-SSSSS-of-NNNNN.npz``,
each one a :class:`keras_hash.HammingIndex` file (loads with
``HammingIndex.load``; codes uint8 ``[n, bits // 8]``, ids int64, a sha256
inside); image ``id`` goes to shard ``id mod N``. ``<output>/manifest.json``
is written last: the shard names, their counts and sha256, bits, total count
and the number of failed images. Failed images are JSON lines
``{"id", "path", "stage", "error"}`` in ``<output>/errors-SSSSS-of-NNNNN.jsonl``.
Nothing is ever unpickled: shards are read by the index's checked reader.

Apache Beam is imported only when a pipeline is built; without it those
calls raise ``ImportError`` naming ``pip install keras-hash[beam]``. The
shard reader needs no Beam.
"""

from __future__ import annotations

import argparse
import csv
import functools
import glob
import hashlib
import json
import math
import os
import re
import sys
import tempfile

import numpy as np

from keras_hash import datasets
from keras_hash.index import HammingIndex
from keras_hash.index.file import parse_json_header

ID_RULES = ("hash", "index")
SHARD_PREFIX = "codes"
SHARD_SUFFIX = ".npz"
MANIFEST_NAME = "manifest.json"
MANIFEST_MAGIC = "keras_hash.CodeShards"
MANIFEST_VERSION = 1
LISTING_NAME = "images.jsonl"
ERRORS_PREFIX = "errors"
ERRORS_SUFFIX = ".jsonl"
#: Default rows per shard when ``num_shards`` is not given.
ROWS_PER_SHARD = 1_000_000
METRICS_NAMESPACE = "keras_hash.bulk_encode"
SIGNATURE = "serving_default"
_SHARD_NAME = re.compile(r"^codes-(\d{5,})-of-(\d{5,})\.npz$")
_WILDCARD = re.compile(r"[*?\[]")
_BEAM_HINT = "keras_hash.bulk_encode needs Apache Beam: pip install keras-hash[beam]"


# --- listing and ids ------------------------------------------------------


def stable_id(relative_path: str) -> int:
    """The ``ids="hash"`` id of a path: 63 bits of its sha256, an int64 >= 0.

    ```python
    stable_id("cat/0001.jpg")  # the same on every run and machine
    ```
    """
    digest = hashlib.sha256(relative_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _relative(path: str, root: str | None) -> str:
    if root is None:
        return path.replace(os.sep, "/")
    if "://" in path:
        return path[len(root) :].lstrip("/")
    return os.path.relpath(path, root).replace(os.sep, "/")


def _glob_root(pattern: str) -> str:
    parts = pattern.split("/")
    fixed = []
    for part in parts[:-1]:
        if _WILDCARD.search(part):
            break
        fixed.append(part)
    return "/".join(fixed) or "."


def _list_glob(pattern: str) -> list[str]:
    if "://" in pattern:
        from apache_beam.io.filesystems import FileSystems

        matches = FileSystems.match([pattern])[0].metadata_list
        return sorted(m.path for m in matches)
    return sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))


def _list_folder(directory: str) -> list[str]:
    has_classes = any(
        entry.is_dir() and not entry.name.startswith(".")
        for entry in os.scandir(directory)
    )
    if has_classes:
        return list(datasets.list_image_folder(directory).paths)
    return sorted(
        os.path.join(directory, name)
        for name in os.listdir(directory)
        if name.lower().endswith(datasets.IMAGE_EXTENSIONS)
    )


def _read_id_csv(csv_path: str) -> tuple[list[str], list[int]]:
    """Rows ``path,id`` of a CSV with that header; paths relative to its folder."""
    base = os.path.dirname(os.path.abspath(csv_path))
    paths, ids = [], []
    with open(csv_path, newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(file, skipinitialspace=True)
        next(reader)
        for fields in reader:
            fields = [field.strip() for field in fields]
            if not any(fields):
                continue
            if len(fields) != 2 or not fields[0]:
                raise ValueError(
                    f"{csv_path!r}, line {reader.line_num}: expected 'path,id', "
                    f"got {','.join(fields)!r}"
                )
            try:
                ids.append(int(fields[1]))
            except ValueError:
                raise ValueError(
                    f"{csv_path!r}, line {reader.line_num}: id {fields[1]!r} is "
                    "not an integer"
                ) from None
            paths.append(os.path.normpath(os.path.join(base, fields[0])))
    return paths, ids


def _csv_header(csv_path: str) -> tuple[str, ...]:
    with open(csv_path, newline="", encoding="utf-8-sig") as file:
        first = next(csv.reader(file, skipinitialspace=True), [])
    return tuple(field.strip().lower() for field in first)


def _check_ids(ids, paths) -> np.ndarray:
    if isinstance(ids, str) or len(ids) != len(paths):
        raise ValueError(
            f"ids must be one int per image ({len(paths)}), got {ids!r:.80}"
        )
    if any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) for i in ids):
        raise TypeError("ids must be integers")
    if any(not -(2**63) <= int(i) < 2**63 for i in ids):
        raise ValueError("ids must fit in int64 (-2**63 .. 2**63 - 1)")
    return np.asarray([int(i) for i in ids], np.int64)


def _check_unique(ids: np.ndarray, paths, rule: str) -> None:
    unique, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if np.all(counts == 1):
        return
    repeated = unique[counts > 1][0]
    clash = [p for p, i in zip(paths, ids, strict=True) if i == repeated][:2]
    raise ValueError(
        f"two images have the id {int(repeated)} ({rule}): {clash[0]!r} and "
        f"{clash[1]!r}; give your own ids (a 'path,id' CSV) or use ids='index'"
    )


def list_images(images, ids="hash") -> tuple[list[str], np.ndarray]:
    """Lists an image collection and gives each image its int64 id.

    ```python
    paths, ids = list_images("photos/")                # class-per-folder tree
    paths, ids = list_images("photos/**/*.jpg", ids="index")
    paths, ids = list_images("ids.csv")                # header 'path,id'
    ```

    Args:
        images: a folder (``folder/<class>/*.jpg|png`` as
            :func:`keras_hash.datasets.list_image_folder` lists it, or
            image files directly in it), a glob pattern (``**`` recurses;
            ``gs://`` and other Beam file systems too), a CSV (header
            ``path,id``: your ids; otherwise ``path,labels`` rows as
            :func:`keras_hash.datasets.read_image_csv` reads them, labels
            unused), or a list of paths.
        ids: ``"hash"``, ``"index"`` (module doc) or a sequence of ints,
            one per path (lists of paths only). Ignored for a ``path,id``
            CSV.

    Returns:
        ``(paths, ids)``: paths sorted by their relative path (a CSV keeps
        its row order), ids int64 ``[n]``, unique.
    """
    root = None
    if isinstance(images, (list, tuple)):
        paths = [os.fspath(p) for p in images]
    else:
        images = os.fspath(images)
        if images.lower().endswith(".csv") and os.path.isfile(images):
            root = os.path.dirname(os.path.abspath(images))
            if _csv_header(images) == ("path", "id"):
                paths, given = _read_id_csv(images)
                return _finish(paths, _check_ids(given, paths), "the CSV's ids")
            paths = list(datasets.read_image_csv(images, check_files=False).paths)
        elif os.path.isdir(images):
            root, paths = images, _list_folder(images)
        elif _WILDCARD.search(images):
            root, paths = _glob_root(images), _list_glob(images)
        else:
            raise FileNotFoundError(
                f"images={images!r} is no folder, CSV file or glob pattern"
            )
    if not paths:
        raise ValueError(f"no image files in {images!r}")
    relative = [_relative(p, root) for p in paths]
    if not isinstance(ids, str):
        return _finish(paths, _check_ids(ids, paths), "the ids given")
    if ids not in ID_RULES:
        raise ValueError(f"ids must be one of {ID_RULES} or a sequence, got {ids!r}")
    if root is not None:  # sorted by relative path, on every machine
        order = sorted(range(len(paths)), key=relative.__getitem__)
        paths, relative = [paths[i] for i in order], [relative[i] for i in order]
    if ids == "index":
        return paths, np.arange(len(paths), dtype=np.int64)
    hashed = np.asarray([stable_id(r) for r in relative], np.int64)
    return _finish(paths, hashed, "sha256 of the relative paths")


def _finish(paths, ids, rule):
    if len(set(paths)) != len(paths):
        raise ValueError("the same image path is listed twice")
    _check_unique(ids, paths, rule)
    return paths, ids


# --- the SavedModel -------------------------------------------------------


def resolve_saved_model(path: str) -> str:
    """The version folder to load: ``path`` itself, or its largest numeric sub-folder.

    ``path`` may be a version folder (holding ``saved_model.pb``) or a
    model folder ``<base>/<name>`` of TF Serving's layout.
    """
    import tensorflow as tf

    path = os.fspath(path)
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return path
    if tf.io.gfile.isdir(path):
        versions = [
            int(name.rstrip("/"))
            for name in tf.io.gfile.listdir(path)
            if name.rstrip("/").isdigit()
        ]
        if versions:
            return resolve_saved_model(os.path.join(path, str(max(versions))))
    raise FileNotFoundError(
        f"no SavedModel at {path!r}: expected a version folder holding "
        "saved_model.pb or a model folder of numeric versions (export_saved_model)"
    )


def saved_model_spec(path: str) -> tuple[tuple[int, ...], str, int]:
    """``(image_shape, dtype, bits)`` of a keras_hash SavedModel, read from its graph.

    Reads ``saved_model.pb`` only (no variables, no graph load) and checks
    that ``serving_default`` maps ``images [-1, H, W, C]`` to uint8 ``codes``.
    """
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    path = resolve_saved_model(path)
    proto = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(path, "saved_model.pb"), "rb") as file:
        proto.ParseFromString(file.read())
    for meta_graph in proto.meta_graphs:
        signature = meta_graph.signature_def.get(SIGNATURE)
        if signature is None or set(signature.outputs) != {"codes"}:
            continue
        if set(signature.inputs) != {"images"}:
            continue
        image, codes = signature.inputs["images"], signature.outputs["codes"]
        shape = [d.size for d in image.tensor_shape.dim]
        code_shape = [d.size for d in codes.tensor_shape.dim]
        if (
            len(shape) != 4
            or min(shape[1:]) < 1
            or tf.as_dtype(codes.dtype) != tf.uint8
            or len(code_shape) != 2
            or code_shape[1] < 1
        ):
            break
        if shape[3] not in (1, 3):
            raise ValueError(
                f"{path!r} takes {shape[3]}-channel images; bulk encoding reads "
                "grey (1) or RGB (3) images"
            )
        return tuple(shape[1:]), tf.as_dtype(image.dtype).name, code_shape[1] * 8
    raise ValueError(
        f"{path!r} is not a keras_hash SavedModel: expected the signature "
        f"{SIGNATURE!r} from images [-1, H, W, C] to uint8 codes [-1, bits // 8] "
        "(keras_hash.export.export_saved_model)"
    )


def decode_image(path, image_shape):
    """Reads and decodes one image file to uint8 ``image_shape``, as training does.

    RGB models get :func:`keras_hash.datasets.image_files_dataset`'s decoding
    (JPEG, PNG, GIF or BMP; grey and RGBA become RGB; another size is
    resized bilinear, antialiased, rounded); grey models the same with one
    channel. Raises ``tf.errors.OpError`` for a missing or unreadable file.
    """
    import tensorflow as tf

    height, width, channels = image_shape
    if channels == 3:
        return datasets._decode_file(path, (height, width))
    contents = tf.io.read_file(path)
    image = tf.io.decode_image(contents, channels=1, expand_animations=False)
    image.set_shape((None, None, 1))
    same = tf.reduce_all(tf.equal(tf.shape(image)[:2], (height, width)))
    image = tf.cond(
        same, lambda: image, lambda: datasets._resize(image, (height, width))
    )
    return tf.ensure_shape(image, (height, width, 1))


# --- shard files ----------------------------------------------------------


def shard_name(shard: int, num_shards: int) -> str:
    """``codes-SSSSS-of-NNNNN.npz``."""
    return f"{SHARD_PREFIX}-{shard:05d}-of-{num_shards:05d}{SHARD_SUFFIX}"


def _is_remote(path: str) -> bool:
    return "://" in path


def _write_bytes(path: str, data: bytes) -> None:
    if _is_remote(path):
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.create(path) as file:
            file.write(data)
        return
    from keras_hash.files import write_atomic

    def write(staging):
        with open(staging, "wb") as file:
            file.write(data)

    write_atomic(path, write)


def _read_bytes(path: str) -> bytes:
    if _is_remote(path):
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path) as file:
            return file.read()
    with open(path, "rb") as file:
        return file.read()


def write_shard(path: str, codes: np.ndarray, ids: np.ndarray, bits: int) -> dict:
    """Writes one shard (a HammingIndex file) and returns its manifest entry."""
    index = HammingIndex(bits, backend="numpy")
    index.add(codes, ids)
    with tempfile.TemporaryDirectory() as folder:
        local = os.path.join(folder, "shard.npz")
        index.save(local)
        with open(local, "rb") as file:
            data = file.read()
    _write_bytes(path, data)
    return {
        "name": os.path.basename(path),
        "count": len(ids),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def _load_shard(path: str, data: bytes | None = None) -> HammingIndex:
    if data is None and not _is_remote(path):
        return HammingIndex.load(path, backend="numpy")
    data = _read_bytes(path) if data is None else data
    with tempfile.TemporaryDirectory() as folder:
        local = os.path.join(folder, "shard.npz")
        with open(local, "wb") as file:
            file.write(data)
        try:
            return HammingIndex.load(local, backend="numpy")
        except ValueError as error:
            raise ValueError(str(error).replace(repr(local), repr(path))) from None


def _parse_manifest(path: str) -> dict:
    manifest = parse_json_header(
        path, _read_bytes(path), MANIFEST_MAGIC, MANIFEST_VERSION, "code-shard manifest"
    )
    shards = manifest.get("shards")
    ints = [manifest.get("bits"), manifest.get("count")]
    if not isinstance(shards, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints
    ):
        raise ValueError(f"{path!r}: manifest fields bits/count/shards are malformed")
    for entry in shards:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not _SHARD_NAME.match(name):
            raise ValueError(f"{path!r}: bad shard entry {entry!r:.80}")
        if not isinstance(entry.get("count"), int) or not isinstance(
            entry.get("sha256"), str
        ):
            raise ValueError(f"{path!r}: bad shard entry {entry!r:.80}")
    return manifest


def read_code_shards(pattern) -> tuple[np.ndarray, np.ndarray]:
    """Reads, checks and merges code shards: ``(codes, ids)`` sorted by id.

    ```python
    codes, ids = read_code_shards("codes/")               # via manifest.json
    codes, ids = read_code_shards("codes/codes-*.npz")    # the shards matched
    ```

    Args:
        pattern: an output folder or its ``manifest.json`` (every listed
            shard must be there with the recorded size, sha256 and count),
            or a glob of shard files (each read as it is).

    Returns:
        codes uint8 ``[n, bits // 8]`` and ids int64 ``[n]``, ascending.

    Raises:
        ValueError: a shard that is not a valid HammingIndex file (corrupt,
            truncated, foreign), shards of different bits, an id in two
            shards, or a shard that disagrees with the manifest.
        FileNotFoundError: no manifest or shard matches, a listed shard
            is missing.
    """
    pattern = os.fspath(pattern)
    manifest_path = None
    if pattern.endswith(MANIFEST_NAME):
        manifest_path = pattern
    elif not _WILDCARD.search(pattern):
        manifest_path = pattern.rstrip("/") + "/" + MANIFEST_NAME
    if manifest_path is not None:
        if not _is_remote(manifest_path) and not os.path.isfile(manifest_path):
            raise FileNotFoundError(
                f"no {MANIFEST_NAME} at {manifest_path!r} (an unfinished run "
                "leaves none; pass a glob of shard files to read them anyway)"
            )
        return _read_with_manifest(manifest_path)
    paths = _list_glob(pattern)
    if not paths:
        raise FileNotFoundError(f"no shard files match {pattern!r}")
    return _merge([(p, _load_shard(p)) for p in paths], None)


def _read_with_manifest(manifest_path):
    manifest = _parse_manifest(manifest_path)
    folder = manifest_path[: -len(MANIFEST_NAME)]
    loaded = []
    for entry in manifest["shards"]:
        path = folder + entry["name"]
        if not _is_remote(path) and not os.path.isfile(path):
            raise FileNotFoundError(f"shard {path!r} listed in the manifest is missing")
        data = _read_bytes(path)
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise ValueError(f"{path!r}: sha256 differs from the manifest's")
        index = _load_shard(path, data)
        if index.ntotal != entry["count"]:
            raise ValueError(
                f"{path!r} holds {index.ntotal} codes, the manifest says "
                f"{entry['count']}"
            )
        loaded.append((path, index))
    codes, ids = _merge(loaded, manifest["bits"])
    if len(ids) != manifest["count"]:
        raise ValueError(
            f"{manifest_path!r}: shards hold {len(ids)} codes, the manifest says "
            f"{manifest['count']}"
        )
    return codes, ids


def _merge(loaded, bits):
    bits = loaded[0][1].bits if bits is None and loaded else bits
    for path, index in loaded:
        if index.bits != bits:
            raise ValueError(f"{path!r} holds {index.bits}-bit codes, not {bits}")
    if not loaded:
        return np.zeros((0, bits // 8), np.uint8), np.zeros(0, np.int64)
    codes = np.concatenate([index.codes for _, index in loaded])
    ids = np.concatenate([index.ids for _, index in loaded])
    order = np.argsort(ids, kind="stable")
    codes, ids = codes[order], ids[order]
    if len(ids) > 1 and np.any(ids[1:] == ids[:-1]):
        repeated = ids[1:][ids[1:] == ids[:-1]][:5]
        raise ValueError(f"ids {repeated.tolist()} appear in more than one shard")
    return np.ascontiguousarray(codes), ids


def build_hamming_index(pattern, backend: str = "auto") -> HammingIndex:
    """A :class:`keras_hash.HammingIndex` of every code in the shards.

    ```python
    index = build_hamming_index("codes/")
    distances, ids = index.search(model.encode(queries), k=10)
    ```
    """
    codes, ids = read_code_shards(pattern)
    index = HammingIndex(codes.shape[1] * 8, backend=backend)
    index.add(codes, ids)
    return index


# --- Beam transforms (built on first use) ---------------------------------

# The importable name, also under ``python -m`` (where __name__ is __main__).
_MODULE = "keras_hash.bulk_encode"
_LAZY = ("SavedModelHandler", "EncodeImages", "WriteCodeShards", "WriteToMilvus")


def __getattr__(name):
    if name in _LAZY:
        return _beam_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _import_beam():
    try:
        import apache_beam as beam
    except ImportError as error:
        raise ImportError(_BEAM_HINT) from error
    return beam


def _error_text(error) -> str:
    message = getattr(error, "message", None) or str(error)
    # TensorFlow wraps its messages: "{{function_node ...}} text\n\t [[node ...]]"
    message = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", message.strip())
    message = message.splitlines()[0] if message else repr(error)
    return f"{type(error).__name__}: {message[:500]}"


@functools.cache
def _beam_classes() -> dict:
    beam = _import_beam()
    from apache_beam.metrics import Metrics
    from apache_beam.ml.inference import base

    class SavedModelHandler(base.ModelHandler):
        """Runs a keras_hash SavedModel's ``serving_default`` on image batches.

        Beam's stock TensorFlow handler loads with ``tf.keras.models.load_model``
        (and imports ``tensorflow_hub``), which Keras 3 refuses for SavedModels;
        this one loads with ``tf.saved_model.load`` and calls the signature.
        Examples are uint8 ``[H, W, C]`` images; predictions are packed codes
        uint8 ``[bits // 8]``.
        """

        def __init__(self, saved_model: str, batch_size: int = 256):
            self._path = resolve_saved_model(saved_model)
            self._shape, self._dtype, self.bits = saved_model_spec(self._path)
            self._batching_kwargs = {
                "min_batch_size": int(batch_size),
                "max_batch_size": int(batch_size),
            }

        def load_model(self):
            import tensorflow as tf

            return tf.saved_model.load(self._path).signatures[SIGNATURE]

        def run_inference(self, batch, model, inference_args=None):
            import tensorflow as tf

            images = tf.cast(tf.constant(np.stack(batch)), self._dtype)
            codes = model(images=images)["codes"].numpy()
            return list(codes)

        def get_num_bytes(self, batch) -> int:
            return sum(image.nbytes for image in batch)

        def get_metrics_namespace(self) -> str:
            return METRICS_NAMESPACE

    class _Decode(beam.DoFn):
        """``(id, path)`` -> ``(id, image)``; failures to the ``failed`` output."""

        def __init__(self, image_shape):
            self._shape = tuple(image_shape)
            self._failed = Metrics.counter(METRICS_NAMESPACE, "failed_images")

        def setup(self):
            import tensorflow as tf

            self._decode = tf.function(
                lambda path: decode_image(path, self._shape),
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
                        "error": _error_text(error),
                    },
                )
                return
            yield (image_id, path), image

    def _failed_batch(element):
        batch, error = element
        for (image_id, path), _ in batch:
            yield {
                "id": image_id,
                "path": path,
                "stage": "inference",
                "error": _error_text(error),
            }

    def _drop_path(element):
        (image_id, _), code = element
        return image_id, code

    class EncodeImages(beam.PTransform):
        """``(id, path)`` pairs -> ``{"codes": (id, code), "failed": dicts}``.

        Decodes (:func:`decode_image`) and encodes with ``RunInference`` and
        a :class:`SavedModelHandler` in batches of ``batch_size``.
        """

        def __init__(self, saved_model: str, batch_size: int = 256):
            super().__init__()
            self.handler = SavedModelHandler(saved_model, batch_size)

        def expand(self, pairs):
            decoded = pairs | "Decode" >> beam.ParDo(
                _Decode(self.handler._shape)
            ).with_outputs("failed", main="images")
            inference = base.RunInference(
                base.KeyedModelHandler(self.handler)
            ).with_exception_handling()
            encoded, dead = decoded.images | "Encode" >> inference
            failed_inference = dead.failed_inferences | "FailedBatches" >> (
                beam.FlatMap(_failed_batch)
            )
            failed = (decoded.failed, failed_inference) | "Failed" >> beam.Flatten()
            codes = encoded | "Ids" >> beam.Map(_drop_path)
            return {"codes": codes, "failed": failed}

    def _shard_rows(element, num_shards):
        image_id, code = element
        yield int(image_id) % num_shards, (int(image_id), code)

    def _write(element, output, num_shards, bits, counter):
        shard, rows = element
        rows = [row for row in rows if row is not None]
        counter.inc(len(rows))
        ids = np.asarray([i for i, _ in rows], np.int64)
        codes = np.asarray([c for _, c in rows], np.uint8).reshape(len(rows), bits // 8)
        return write_shard(
            _join(output, shard_name(shard, num_shards)), codes, ids, bits
        )

    def _write_manifest(entries, failed, output, bits, num_shards):
        entries = sorted(entries, key=lambda entry: entry["name"])
        manifest = {
            "magic": MANIFEST_MAGIC,
            "format_version": MANIFEST_VERSION,
            "bits": bits,
            "count": sum(entry["count"] for entry in entries),
            "failed": int(failed),
            "num_shards": num_shards,
            "shards": entries,
        }
        _write_bytes(
            _join(output, MANIFEST_NAME), json.dumps(manifest, indent=1).encode()
        )
        return manifest

    class WriteCodeShards(beam.PTransform):
        """Writes ``(id, code)`` pairs to ``num_shards`` shards and a manifest.

        Every shard file is written (empty ones too); ``manifest.json`` comes
        last, with ``failed``: the size of the side input ``failed_count``.
        """

        def __init__(self, output: str, bits: int, num_shards: int, failed=None):
            super().__init__()
            self.output, self.bits, self.num_shards = output, bits, int(num_shards)
            self.failed = failed

        def expand(self, codes):
            n = self.num_shards
            keyed = codes | "Key" >> beam.FlatMap(_shard_rows, n)
            every = codes.pipeline | "AllShards" >> beam.Create(
                [(shard, None) for shard in range(n)]
            )
            counter = Metrics.counter(METRICS_NAMESPACE, "encoded_images")
            entries = (
                (keyed, every)
                | "Together" >> beam.Flatten()
                | "Group" >> beam.GroupByKey()
                | "Write" >> beam.Map(_write, self.output, n, self.bits, counter)
            )
            failed = self.failed
            if failed is None:
                failed = codes.pipeline | "NoFailures" >> beam.Create([0])
            return (
                entries
                | "Entries" >> beam.combiners.ToList()
                | "Manifest"
                >> beam.Map(
                    _write_manifest,
                    beam.pvalue.AsSingleton(failed),
                    self.output,
                    self.bits,
                    n,
                )
            )

    class _MilvusWriter(beam.DoFn):
        def __init__(self, uri, collection, bits, batch_size, upsert, kwargs):
            self._args = (uri, collection, bits, batch_size, upsert, kwargs)

        def setup(self):
            try:
                from keras_hash.index.milvus import MilvusHammingIndex
            except ImportError as error:
                raise ImportError(
                    "the Milvus sink needs keras_hash.index.milvus and pymilvus: "
                    "pip install keras-hash[milvus]"
                ) from error
            uri, collection, bits, _, _, kwargs = self._args
            self._index = MilvusHammingIndex(
                uri=uri, collection=collection, bits=bits, **kwargs
            )

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
            self._rows = []

        def teardown(self):
            close = getattr(getattr(self, "_index", None), "close", None)
            if callable(close):
                close()

    class WriteToMilvus(beam.PTransform):
        """Writes ``(id, code)`` pairs to Milvus via ``keras_hash.index.milvus``.

        Rows go in batches of ``batch_size`` with ``upsert`` (default: a
        retried bundle writes the same rows again, so inserting could
        duplicate them). Extra keyword arguments go to
        ``MilvusHammingIndex``.
        """

        def __init__(
            self, uri, collection, bits, batch_size=1000, upsert=True, **kwargs
        ):
            super().__init__()
            self._fn = _MilvusWriter(
                uri, collection, bits, int(batch_size), bool(upsert), kwargs
            )

        def expand(self, codes):
            return codes | "Milvus" >> beam.ParDo(self._fn)

    classes = {
        "SavedModelHandler": SavedModelHandler,
        "EncodeImages": EncodeImages,
        "WriteCodeShards": WriteCodeShards,
        "WriteToMilvus": WriteToMilvus,
    }
    for name, cls in classes.items():  # pickled by reference (module __getattr__)
        cls.__module__, cls.__qualname__ = _MODULE, name
    return classes


def _join(folder: str, name: str) -> str:
    return folder.rstrip("/") + "/" + name


# --- the whole job --------------------------------------------------------


def _prepare_output(output: str, overwrite: bool) -> None:
    if _is_remote(output):
        return
    os.makedirs(output, exist_ok=True)
    old = [
        name
        for name in os.listdir(output)
        if name in (MANIFEST_NAME, LISTING_NAME)
        or _SHARD_NAME.match(name)
        or (name.startswith(ERRORS_PREFIX + "-") and name.endswith(ERRORS_SUFFIX))
    ]
    if old and not overwrite:
        raise FileExistsError(
            f"{output!r} already holds the output of a run ({sorted(old)[0]}, ...); "
            "pass overwrite=True (--overwrite) or another folder"
        )
    for name in sorted(old, key=lambda n: n != MANIFEST_NAME):  # manifest first
        os.remove(os.path.join(output, name))


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
        images: what :func:`list_images` takes (listed on this machine).
        saved_model: a version folder of :func:`keras_hash.export.export_saved_model`
            or its model folder (the largest version is used).
        output: folder of the shards, ``manifest.json`` and the
            ``errors-*.jsonl`` dead letters (local or ``gs://...``).
        ids: ``"hash"``, ``"index"`` or a sequence of ints (:func:`list_images`).
        batch_size: images per ``RunInference`` batch.
        num_shards: shard files; default ``ceil(n / 1,000,000)``.
        write_shards: write shards and manifest (``False``: Milvus only).
        milvus: keyword arguments of :class:`WriteToMilvus` (``uri``,
            ``collection``; ``bits`` is the model's) to write there too.
        overwrite: replace the output of an earlier run in ``output``.
        pipeline_args: Beam options, e.g. ``["--runner=DataflowRunner", ...]``.

    Returns:
        the manifest (``count``, ``failed``, shards) when the runner waits
        for the result and shards are written, else ``None``.
    """
    beam = _import_beam()
    from apache_beam.options.pipeline_options import PipelineOptions

    output = os.fspath(output)
    paths, image_ids = list_images(images, ids)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_shards is None:
        num_shards = max(1, math.ceil(len(paths) / ROWS_PER_SHARD))
    if int(num_shards) < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if not write_shards and not milvus:
        raise ValueError("nothing to write: write_shards=False and no milvus sink")
    classes = _beam_classes()
    encode = classes["EncodeImages"](saved_model, batch_size)
    _prepare_output(output, overwrite)
    options = PipelineOptions(list(pipeline_args or []))
    listing = _join(output, LISTING_NAME)  # read by the workers, not in the graph
    lines = (
        json.dumps({"id": int(i), "path": p})
        for i, p in zip(image_ids, paths, strict=True)
    )
    _write_bytes(listing, ("\n".join(lines) + "\n").encode())
    with beam.Pipeline(options=options) as pipeline:
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
                _join(output, ERRORS_PREFIX), file_name_suffix=ERRORS_SUFFIX
            )
        )
        if write_shards:
            count = failed | "CountFailed" >> beam.combiners.Count.Globally()
            _ = result["codes"] | "Shards" >> classes["WriteCodeShards"](
                output, encode.handler.bits, num_shards, failed=count
            )
        if milvus:
            _ = result["codes"] | "ToMilvus" >> classes["WriteToMilvus"](
                bits=encode.handler.bits, **milvus
            )
    if not write_shards:
        return None
    try:
        return json.loads(_read_bytes(_join(output, MANIFEST_NAME)))
    except OSError:
        return None  # a runner that does not wait (e.g. a Dataflow template)


def _listing_pair(line: str) -> tuple[int, str]:
    row = json.loads(line)
    return int(row["id"]), row["path"]


def read_dead_letters(output: str) -> list[dict]:
    """The failed images of a run: ``[{"id", "path", "stage", "error"}]``."""
    pattern = _join(os.fspath(output), f"{ERRORS_PREFIX}-*{ERRORS_SUFFIX}")
    rows = []
    for path in _list_glob(pattern):
        text = _read_bytes(path).decode("utf-8")
        rows.extend(json.loads(line) for line in text.splitlines() if line.strip())
    return sorted(rows, key=lambda row: (str(row.get("path")), row.get("stage")))


# --- command line ---------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m keras_hash.bulk_encode",
        description="Encode an image collection to packed binary codes with an "
        "exported keras_hash SavedModel, on Apache Beam. Unknown options go to "
        "Beam (--runner, --project, --direct_num_workers, ...).",
    )
    parser.add_argument(
        "--saved_model",
        required=True,
        help="version folder or model folder of export_saved_model",
    )
    parser.add_argument(
        "--images",
        required=True,
        help="folder, glob pattern, or CSV ('path,id' or 'path,labels')",
    )
    parser.add_argument(
        "--output",
        required=True,
        help="folder for codes-*.npz, manifest.json, errors-*.jsonl",
    )
    parser.add_argument(
        "--ids",
        default="hash",
        choices=ID_RULES,
        help="id rule when the input gives none (default: hash)",
    )
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--num_shards", type=int, default=None)
    parser.add_argument(
        "--no_shards",
        action="store_true",
        help="write no shard files (with --milvus_uri)",
    )
    parser.add_argument(
        "--milvus_uri",
        default=None,
        help="also write to Milvus (a server URI or a Lite .db file)",
    )
    parser.add_argument("--milvus_collection", default="keras_hash")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the output of an earlier run"
    )
    return parser


def main(argv=None) -> int:
    """Command line entry: ``python -m keras_hash.bulk_encode --help``."""
    args, beam_args = _parser().parse_known_args(argv)
    milvus = None
    if args.milvus_uri:
        milvus = {"uri": args.milvus_uri, "collection": args.milvus_collection}
    summary = encode_images(
        args.images,
        args.saved_model,
        args.output,
        ids=args.ids,
        batch_size=args.batch_size,
        num_shards=args.num_shards,
        write_shards=not args.no_shards,
        milvus=milvus,
        overwrite=args.overwrite,
        pipeline_args=beam_args,
    )
    if summary is not None:
        print(
            f"encoded {summary['count']} images to {len(summary['shards'])} shards "
            f"in {args.output} ({summary['bits']} bits); {summary['failed']} failed "
            f"(see {args.output}/{ERRORS_PREFIX}-*{ERRORS_SUFFIX})"
        )
    return 0


if __name__ == "__main__":
    from keras_hash import bulk_encode  # classes pickle by this module's name

    sys.exit(bulk_encode.main())
