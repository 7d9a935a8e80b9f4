"""What the search service reads: the index, and where each id's image lives.

Indexes (:func:`open_index`): a saved :class:`keras_hash.HammingIndex` or
:class:`keras_hash.index.IVFHammingIndex` file (:func:`keras_hash.index.load`
tells them apart by the header), the output folder (or ``manifest.json``) of
bulk encoding (its shards merged into one exact index), or a Milvus
collection (``milvus:`` plus a ``.db`` file or a server address).

Images (:class:`ImageCatalog`): an id -> file map, from

- a folder, a glob or a CSV, with the ids of bulk encoding (``ids="hash"``,
  sha256 of the relative path, or ``"index"``; a ``path,id`` CSV gives its
  own), so a collection encoded by ``python -m keras_hash.beam``
  opens with the same ids;
- bulk encoding's listing ``images.jsonl`` (``{"id", "path"}`` lines), or
  its output folder;
- a CIFAR-10 run folder of ``examples/train_cifar.py`` with the data folder
  it was trained on (:func:`run_catalog`).

Nothing here writes: the service only reads its inputs, so a kill at any
moment leaves nothing behind.
"""

from __future__ import annotations

import json
import os

import numpy as np

MILVUS_PREFIX = "milvus:"
RUN_INDEX = "database.index"
RUN_METRICS = "metrics.json"
RUN_SERVING = "serving"


class ImageCatalog:
    """Which file holds the image of each id.

    ```python
    catalog = ImageCatalog.from_source("photos/")    # ids as bulk encoding's
    catalog.path(4179264930124911537)                 # 'photos/cat/0001.jpg'
    ```

    Args:
        ids: int64 ids, unique.
        paths: the file of each id.
        source: what the map was read from, for messages.
    """

    def __init__(self, ids, paths, source: str):
        ids = np.asarray(ids, np.int64)
        if len(ids) != len(paths):
            raise ValueError(f"{source}: {len(ids)} ids for {len(paths)} paths")
        self._paths = dict(
            zip(ids.tolist(), (os.fspath(p) for p in paths), strict=True)
        )
        if len(self._paths) != len(ids):
            raise ValueError(f"{source}: the same id is listed twice")
        self.source = source

    def __len__(self) -> int:
        return len(self._paths)

    @property
    def ids(self) -> np.ndarray:
        """The listed ids, ascending (int64)."""
        return np.asarray(sorted(self._paths), np.int64)

    def __contains__(self, image_id: int) -> bool:
        return image_id in self._paths

    def path(self, image_id: int) -> str:
        """The file of ``image_id``; ``KeyError`` for an id not listed."""
        try:
            return self._paths[image_id]
        except KeyError:
            raise KeyError(f"id {image_id} has no image in {self.source}") from None

    @classmethod
    def from_source(cls, images: str, ids: str = "hash") -> ImageCatalog:
        """A folder, glob or CSV (bulk encoding's listing and id rules), an
        ``images.jsonl`` listing, or a bulk-encoding output folder."""
        images = os.fspath(images)
        listing = os.path.join(images, "images.jsonl")
        if os.path.isdir(images) and os.path.isfile(listing):
            images = listing
        if images.endswith(".jsonl"):
            return cls._from_listing(images)
        from keras_hash.beam import list_images

        paths, found = list_images(images, ids)
        return cls(found, paths, repr(images))

    @classmethod
    def _from_listing(cls, path: str) -> ImageCatalog:
        ids, paths = [], []
        with open(path, encoding="utf-8") as file:
            for number, line in enumerate(file, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    ids.append(int(row["id"]))
                    paths.append(str(row["path"]))
                except (ValueError, KeyError, TypeError) as error:
                    raise ValueError(
                        f'{path!r}, line {number}: expected {{"id": int, '
                        f'"path": str}}, got {line.strip()[:80]!r} ({error})'
                    ) from None
        return cls(ids, paths, repr(path))


def open_index(source: str, *, bits: int | None = None, collection: str | None = None):
    """Opens an index of any kind for searching (module doc).

    Args:
        source: an index file, a bulk-encoding output folder or its
            ``manifest.json``, or ``milvus:<file.db or server address>``.
        bits: the code length, needed for Milvus (the encoder's).
        collection: the Milvus collection.
    """
    source = os.fspath(source)
    if source.startswith(MILVUS_PREFIX):
        if not collection or bits is None:
            raise ValueError(f"{source!r}: a Milvus index needs a collection and bits")
        from keras_hash.index.milvus import MilvusHammingIndex

        return MilvusHammingIndex(bits, source[len(MILVUS_PREFIX) :], collection)
    if os.path.isdir(source) or os.path.basename(source) == "manifest.json":
        from keras_hash.beam import build_hamming_index

        return build_hamming_index(source)
    if not os.path.isfile(source):
        raise FileNotFoundError(
            f"no index at {source!r}: expected an index file, a bulk-encoding "
            f"output folder or {MILVUS_PREFIX}<uri>"
        )
    from keras_hash.index import load

    return load(source)


def run_catalog(run_dir: str, data_dir: str) -> ImageCatalog:
    """The images of a CIFAR-10 run's ``database.index``, from its data folder.

    The run saves the database codes with ids ``0 .. n - 1`` in the order of
    its split's database (:func:`keras_hash.recipes.cifar.split_indices`, a
    seeded shuffle of the pool ``[train; test]``). The split is rebuilt from
    the settings in ``metrics.json`` and the labels of ``data_dir/train`` and
    ``data_dir/test`` (listed, not decoded), so id ``i`` maps to the file of
    pool image ``database[i]``. :func:`check_catalog` then re-encodes a
    sample to confirm the map.

    Args:
        run_dir: the run's output folder (``--output_dir``).
        data_dir: the image-folder copy of CIFAR-10 it trained on
            (``--data_dir``: ``train/<class>/*.jpg`` and ``test/...``).
    """
    from keras_hash.datasets import list_image_folder
    from keras_hash.recipes import cifar

    metrics = os.path.join(run_dir, RUN_METRICS)
    if not os.path.isfile(metrics):
        raise FileNotFoundError(
            f"no {RUN_METRICS} in {run_dir!r}: not a finished run of "
            "examples/train_cifar.py"
        )
    with open(metrics, encoding="utf-8") as file:
        config = json.load(file)["config"]
    train = list_image_folder(os.path.join(data_dir, "train"))
    test = list_image_folder(os.path.join(data_dir, "test"), train.class_names)
    split = cifar.split_indices(
        train.labels,
        test.labels,
        config["protocol"],
        seed=config["seed"],
        query_per_class=config.get("query_per_class"),
        train_per_class=config.get("train_per_class"),
        database_size=config.get("database_size"),
    )
    pool = train.paths + test.paths
    paths = [pool[i] for i in split.database]
    return ImageCatalog(
        np.arange(len(paths)), paths, f"run {run_dir!r} over {data_dir!r}"
    )


def run_saved_model(run_dir: str) -> str:
    """The SavedModel folder of a run: ``serving/<method>`` (latest version)."""
    serving = os.path.join(run_dir, RUN_SERVING)
    methods = sorted(os.listdir(serving)) if os.path.isdir(serving) else []
    if len(methods) != 1:
        raise FileNotFoundError(
            f"expected one model folder in {serving!r}, found {methods}: was the "
            "run exported (--export)?"
        )
    return os.path.join(serving, methods[0])


def check_catalog(catalog: ImageCatalog, codes_of, encode, image_shape, sample=32):
    """Re-encodes a sample of catalog images and compares with the index.

    Catches an id -> file map that does not match the index (another run,
    another data folder) before it gives silently wrong pictures.

    Args:
        catalog: the map to check.
        codes_of: ``ids -> uint8 [n, bytes]``, the index's stored codes.
        encode: ``uint8 images -> codes``.
        image_shape: the encoder's ``(H, W, C)``.
        sample: ids checked (evenly spread).

    Raises:
        ValueError: fewer than 90 % of the sampled images re-encode to
            within 1 bit of their stored code.
    """
    from keras_hash.serve.encoder import decode_upload

    ids = catalog.ids
    spread = np.linspace(0, len(ids) - 1, min(sample, len(ids))).astype(int)
    chosen, stored, images = [], [], []
    for image_id in ids[spread].tolist():
        try:  # listed images that failed to encode are not in the index
            stored.append(codes_of(np.asarray([image_id], np.int64))[0])
        except KeyError:
            continue
        chosen.append(image_id)
        with open(catalog.path(image_id), "rb") as file:
            images.append(decode_upload(file.read(), image_shape))
    if not chosen:
        raise ValueError(f"none of the sampled ids of {catalog.source} is in the index")
    fresh = encode(np.stack(images))
    stored = np.stack(stored)
    bits = np.unpackbits(fresh ^ stored, axis=1).sum(axis=1)
    if np.mean(bits <= 1) < 0.9:
        raise ValueError(
            f"the images of {catalog.source} do not match the index: re-encoded "
            f"codes of {len(chosen)} sampled ids differ from the stored ones by "
            f"{np.median(bits):.0f} bits (median); another run or data folder?"
        )
