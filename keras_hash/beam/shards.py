"""The code-shard format of bulk encoding: shard files and their manifest.

``<output>/codes-SSSSS-of-NNNNN.npz``, each one a
:class:`keras_hash.HammingIndex` file (loads with ``HammingIndex.load``;
codes uint8 ``[n, bits // 8]``, ids int64, a sha256 inside); image ``id``
goes to shard ``id mod N``. ``<output>/manifest.json`` is written last and
is the proof that a run finished: ``num_shards`` and exactly the shards that
number names (``codes-00000-of-N`` .. ``codes-(N-1)-of-N``), each with its
count and sha256, ``bits``, ``count`` (their sum), ``failed`` (images in the
dead letters) and ``listed`` (``count + failed``). Failed images are JSON
lines ``{"id", "path", "stage", "error"}`` in
``<output>/errors-SSSSS-of-NNNNN.jsonl``. Nothing is ever unpickled: shards
are read by the index's checked reader.

```python
codes, ids = read_code_shards("codes/")
index = build_hamming_index("codes/")
```
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile

import numpy as np

from keras_hash.beam.listing import WILDCARD, list_glob
from keras_hash.index import HammingIndex
from keras_hash.index.file import parse_json_header

SHARD_PREFIX = "codes"
SHARD_SUFFIX = ".npz"
MANIFEST_NAME = "manifest.json"
MANIFEST_MAGIC = "keras_hash.CodeShards"
MANIFEST_VERSION = 1
ERRORS_PREFIX = "errors"
ERRORS_SUFFIX = ".jsonl"
SHARD_NAME = re.compile(r"^codes-(\d{5,})-of-(\d{5,})\.npz$")


def shard_name(shard: int, num_shards: int) -> str:
    """``codes-SSSSS-of-NNNNN.npz``."""
    return f"{SHARD_PREFIX}-{shard:05d}-of-{num_shards:05d}{SHARD_SUFFIX}"


def is_remote(path: str) -> bool:
    return "://" in path


def write_bytes(path: str, data: bytes) -> None:
    if is_remote(path):
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.create(path) as file:
            file.write(data)
        return
    from keras_hash.files import write_atomic

    def write(staging):
        with open(staging, "wb") as file:
            file.write(data)

    write_atomic(path, write)


def read_bytes(path: str) -> bytes:
    if is_remote(path):
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
    write_bytes(path, data)
    return {
        "name": os.path.basename(path),
        "count": len(ids),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def _load_shard(path: str, data: bytes | None = None) -> HammingIndex:
    if data is None and not is_remote(path):
        return HammingIndex.load(path, backend="numpy")
    data = read_bytes(path) if data is None else data
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
        path, read_bytes(path), MANIFEST_MAGIC, MANIFEST_VERSION, "code-shard manifest"
    )
    check_manifest(manifest, repr(path))
    return manifest


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_manifest(manifest: dict, where: str) -> None:
    """Refuses a manifest whose shards are not exactly ``codes-i-of-N``,
    ``i < num_shards``, or whose counts do not add up (``where`` names it)."""
    fields = ("bits", "count", "failed", "listed", "num_shards")
    if not all(_count(manifest.get(name)) for name in fields):
        raise ValueError(
            f"{where}: manifest fields {'/'.join(fields)} must be integers >= 0"
        )
    shards, n = manifest.get("shards"), manifest["num_shards"]
    if not isinstance(shards, list) or n < 1 or manifest["bits"] % 8:
        raise ValueError(
            f"{where}: manifest fields bits/num_shards/shards are malformed"
        )
    for entry in shards:
        name = entry.get("name") if isinstance(entry, dict) else None
        sha = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not SHARD_NAME.match(name):
            raise ValueError(f"{where}: bad shard entry {entry!r:.80}")
        if not _count(entry.get("count")) or not isinstance(sha, str):
            raise ValueError(f"{where}: bad shard entry {entry!r:.80}")
    names = [entry["name"] for entry in shards]
    expected = [shard_name(i, n) for i in range(n)]
    if names != expected:
        missing = sorted(set(expected) - set(names))[:3]
        extra = sorted(set(names) - set(expected))[:3]
        raise ValueError(
            f"{where}: num_shards={n} names {expected[0]} .. {expected[-1]} in "
            f"order, once each; missing {missing}, unexpected or repeated {extra}"
        )
    total = sum(entry["count"] for entry in shards)
    if total != manifest["count"] or manifest["listed"] != total + manifest["failed"]:
        raise ValueError(
            f"{where}: counts do not add up: shards hold {total}, count is "
            f"{manifest['count']}, failed {manifest['failed']}, listed "
            f"{manifest['listed']} (listed must equal count + failed)"
        )


def make_manifest(entries, bits: int, num_shards: int, failed: int, listed: int):
    """The manifest of a finished run; an error unless every listed image
    was encoded or failed (``count + failed == listed``)."""
    entries = sorted(entries, key=lambda entry: entry["name"])
    count = sum(entry["count"] for entry in entries)
    if count + int(failed) != int(listed):
        raise ValueError(
            f"{listed} images were listed but {count} encoded + {failed} failed "
            f"= {count + int(failed)}: the run lost or duplicated images; no "
            "manifest written"
        )
    manifest = {
        "magic": MANIFEST_MAGIC,
        "format_version": MANIFEST_VERSION,
        "bits": int(bits),
        "count": count,
        "failed": int(failed),
        "listed": int(listed),
        "num_shards": int(num_shards),
        "shards": entries,
    }
    check_manifest(manifest, "the manifest being written")
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
    elif not WILDCARD.search(pattern):
        manifest_path = pattern.rstrip("/") + "/" + MANIFEST_NAME
    if manifest_path is not None:
        if not is_remote(manifest_path) and not os.path.isfile(manifest_path):
            raise FileNotFoundError(
                f"no {MANIFEST_NAME} at {manifest_path!r} (an unfinished run "
                "leaves none; pass a glob of shard files to read them anyway)"
            )
        return _read_with_manifest(manifest_path)
    paths = list_glob(pattern)
    if not paths:
        raise FileNotFoundError(f"no shard files match {pattern!r}")
    return _merge([(p, _load_shard(p)) for p in paths], None)


def _read_with_manifest(manifest_path):
    manifest = _parse_manifest(manifest_path)
    folder = manifest_path[: -len(MANIFEST_NAME)]
    loaded = []
    for entry in manifest["shards"]:
        path = folder + entry["name"]
        if not is_remote(path) and not os.path.isfile(path):
            raise FileNotFoundError(f"shard {path!r} listed in the manifest is missing")
        data = read_bytes(path)
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise ValueError(f"{path!r}: sha256 differs from the manifest's")
        index = _load_shard(path, data)
        if index.ntotal != entry["count"]:
            raise ValueError(
                f"{path!r} holds {index.ntotal} codes, the manifest says "
                f"{entry['count']}"
            )
        shard = int(SHARD_NAME.match(entry["name"]).group(1))
        if np.any(index.ids % manifest["num_shards"] != shard):
            raise ValueError(
                f"{path!r} holds ids that belong to other shards (id mod "
                f"{manifest['num_shards']} != {shard})"
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


def join(folder: str, name: str) -> str:
    return folder.rstrip("/") + "/" + name


def read_dead_letters(output: str) -> list[dict]:
    """The failed images of a run: ``[{"id", "path", "stage", "error"}]``."""
    pattern = join(os.fspath(output), f"{ERRORS_PREFIX}-*{ERRORS_SUFFIX}")
    rows = []
    for path in list_glob(pattern):
        text = read_bytes(path).decode("utf-8")
        rows.extend(json.loads(line) for line in text.splitlines() if line.strip())
    return sorted(rows, key=lambda row: (str(row.get("path")), row.get("stage")))
