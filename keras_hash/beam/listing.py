"""Listing an image collection for bulk encoding, and its int64 ids.

Paths come from :mod:`keras_hash.datasets` (the one owner of folder and CSV
listing); this module adds the ids. ``ids="hash"`` (default): the first 8
bytes of ``sha256`` of the file's path relative to the collection root
(UTF-8, ``/`` separators), big-endian, shifted right by one bit: an int64 in
``0 .. 2**63 - 1`` that depends on nothing but that relative path, so it is
the same on every run and machine, and adding files changes no other id.
The root is the folder given, the CSV's folder, or the fixed part of a glob
(up to the first component with a wildcard); paths given as a list are
hashed as given. Two paths of one collection with the same id (odds about
``n**2 / 2**64``: 5e-8 for a million files) are an error at listing time.
``ids="index"``: the position in the sorted list of relative paths
(``0 .. n - 1``; adding a file shifts later ids). Your own ids: a CSV with
the header ``path,id``, or a sequence of ints aligned with the paths.

```python
from keras_hash.beam import listing

paths, ids = listing.list_images("photos/")
```
"""

from __future__ import annotations

import csv
import glob
import hashlib
import os
import re

import numpy as np

from keras_hash import datasets
from keras_hash.datasets.listing import select_image_paths

ID_RULES = ("hash", "index")
WILDCARD = re.compile(r"[*?\[]")


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
        if WILDCARD.search(part):
            break
        fixed.append(part)
    return "/".join(fixed) or "."


def list_glob(pattern: str) -> list[str]:
    """The files a pattern matches, sorted (shards, dead letters; any name)."""
    if "://" in pattern:
        from apache_beam.io.filesystems import FileSystems

        matches = FileSystems.match([pattern])[0].metadata_list
        return sorted(m.path for m in matches)
    return sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))


def list_image_glob(pattern: str) -> list[str]:
    """The images a glob matches, by :mod:`keras_hash.datasets`' listing rule.

    Hidden and system files are skipped with a warning counting them; any
    other match that is not an image file (``notes.txt``, a folder named
    ``x.jpg``) is a ``ValueError`` naming it, before the job starts.

    ```python
    paths = list_image_glob("photos/**/*")
    ```
    """
    if "://" in pattern:
        matches = list_glob(pattern)
    else:
        matches = glob.glob(pattern, recursive=True)
    return list(select_image_paths(matches, _glob_root(pattern), pattern))


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


def _has_rows(csv_path: str) -> bool:
    with open(csv_path, newline="", encoding="utf-8-sig") as file:
        rows = csv.reader(file, skipinitialspace=True)
        next(rows, None)
        return any(any(field.strip() for field in row) for row in rows)


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
            :func:`keras_hash.datasets.list_image_paths` lists it: a class
            tree or image files directly in it), a glob pattern (``**`` recurses;
            ``gs://`` and other Beam file systems too; the matches follow the
            folder's rule: hidden/system files skipped with a warning, any
            other non-image refused by name), a CSV (header
            ``path,id``: your ids; otherwise ``path,labels`` rows as
            :func:`keras_hash.datasets.read_image_csv` reads them, labels
            unused), or a list of paths.
        ids: ``"hash"``, ``"index"`` (module doc) or a sequence of ints,
            one per path (lists of paths only). Ignored for a ``path,id``
            CSV.

    Returns:
        ``(paths, ids)``: paths sorted by their relative path (a CSV keeps
        its row order), ids int64 ``[n]``, unique. A CSV of no rows lists
        nothing; a folder or glob with no image is an error.
    """
    root, is_csv = None, False
    if isinstance(images, (list, tuple)):
        paths = [os.fspath(p) for p in images]
    else:
        images = os.fspath(images)
        if images.lower().endswith(".csv") and os.path.isfile(images):
            is_csv = True
            root = os.path.dirname(os.path.abspath(images))
            if _csv_header(images) == ("path", "id"):
                paths, given = _read_id_csv(images)
                return _finish(paths, _check_ids(given, paths), "the CSV's ids")
            paths = []
            if _has_rows(images):  # a header alone: an empty job
                csv_files = datasets.read_image_csv(images, check_files=False)
                paths = list(csv_files.paths)
        elif os.path.isdir(images):
            root, paths = images, list(datasets.list_image_paths(images))
        elif WILDCARD.search(images):
            root, paths = _glob_root(images), list_image_glob(images)
        else:
            raise FileNotFoundError(
                f"images={images!r} is no folder, CSV file or glob pattern"
            )
    if not paths and not is_csv:  # a CSV of no rows: an empty job
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
