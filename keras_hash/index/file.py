"""The checked file format and id rules both index classes share.

An index file is an uncompressed ``.npz`` archive holding exactly three
stored members: ``header.npy`` (UTF-8 JSON as uint8), ``codes.npy`` (uint8
``[rows, bits // 8]``) and ``ids.npy`` (little-endian int64 ``[rows]``). The
header holds ``magic`` (which index wrote it), ``format_version``, ``bits``,
``count``, the writer's own integer fields and ``sha256`` of the codes bytes
followed by the ids bytes. :class:`keras_hash.HammingIndex` stores its codes
and ids (``rows = count``); :class:`keras_hash.index.ivf.IVFHammingIndex`
lays out its inverted lists in the same three members.

:func:`load_archive` treats the file as untrusted and reads it with memory
bounded by the file's size: it parses the zip directory and each member's
``.npy`` header itself (never ``pickle``), refuses compressed, encrypted,
unknown or missing members, other dtypes, Fortran order and any shape that
disagrees with the JSON header before allocating, and checks the sizes
declared in the zip against the file and the checksum against the data. Any
fault raises ``ValueError``. :func:`save_archive` writes through
:func:`keras_hash.files.write_atomic` (a staging file, then ``os.replace``).

Example:

```python
save_archive("a.khi", {"magic": "m", "format_version": 1, "bits": 8,
                       "count": 2}, codes, ids)
header, codes, ids = load_archive("a.khi", magic="m", format_version=1,
                                  kind="HammingIndex")
```
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zipfile

import numpy as np

from keras_hash.files import write_atomic

#: Largest code length (FAISS keeps dimensions in a C int).
MAX_BITS = 1 << 30
#: Range of ids: they are int64.
MIN_ID, MAX_ID = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)

# Members of an index file and their dtypes.
_MEMBERS = {"header": np.uint8, "codes": np.uint8, "ids": np.dtype("<i8")}
_MAX_HEADER_BYTES = 1 << 16
# What zipfile and numpy's .npy header parser raise on hostile bytes.
_READ_ERRORS = (
    ValueError,
    OSError,
    EOFError,
    zipfile.BadZipFile,
    KeyError,
    IndexError,
    struct.error,
    NotImplementedError,
    RuntimeError,
    OverflowError,
    SyntaxError,
)


def check_ids(ids, n: int | None, low: int = MIN_ID, why: str = "") -> np.ndarray:
    """Integer ids ``[n]`` in ``low .. 2**63 - 1`` as int64, never wrapped.

    Python ints beyond 64 bits and unsigned values past ``2**63 - 1`` are
    refused by value, not cast. ``n=None`` takes any length; ``why`` ends
    the out-of-range message (the reason for ``low``).

    Example:

    ```python
    check_ids([3, 1, 2], 3)          # array([3, 1, 2])
    check_ids([2**63], 1)            # ValueError: out of range
    ```
    """
    if isinstance(ids, (list, tuple)) and all(type(i) is int for i in ids):
        ids = np.array(ids, dtype=object)  # numpy would make 2**63 a float
    else:
        ids = np.asarray(ids)
    if ids.ndim != 1 or (n is not None and len(ids) != n):
        want = f"({n},)" if n is not None else "[n]"
        raise ValueError(f"ids must have shape {want}, got shape {ids.shape}")
    if not len(ids):
        return np.zeros(0, np.int64)
    if ids.dtype == object and all(type(i) is int for i in ids):
        lowest, highest = min(ids), max(ids)
    elif np.issubdtype(ids.dtype, np.integer):
        lowest, highest = ids.min(), ids.max()
    else:
        raise TypeError(f"ids must be integers, got dtype {ids.dtype}")
    if not (low <= lowest and highest <= MAX_ID):
        bounds = {MIN_ID: "-2**63", MIN_ID + 1: "-2**63 + 1"}.get(low, str(low))
        raise ValueError(
            f"ids must be in {bounds} .. 2**63 - 1{why}, got "
            f"{lowest if lowest < low else highest}"
        )
    return ids.astype(np.int64)


def new_ids(
    ids, n: int, existing: np.ndarray, low: int = MIN_ID, why: str = ""
) -> np.ndarray:
    """Checked ids for ``n`` new codes, unique against sorted ``existing``.

    ``ids=None`` gives ``max(existing) + 1`` onwards (``0, 1, ...`` when
    ``existing`` is empty); otherwise as :func:`check_ids`, and no id may
    repeat or be in ``existing``.

    Example:

    ```python
    new_ids(None, 2, np.array([4, 7]))     # array([8, 9])
    new_ids([7], 1, np.array([4, 7]))      # ValueError: repeated: [7]
    ```
    """
    if ids is None:
        start = int(existing[-1]) + 1 if len(existing) else 0
        if n and start + n - 1 > MAX_ID:
            raise ValueError(
                f"no {n} free default ids after the largest id {start - 1}: "
                "ids stop at 2**63 - 1; pass ids"
            )
        return np.arange(start, start + n, dtype=np.int64)
    ids = check_ids(ids, n, low, why)
    sorted_ids = np.sort(ids)
    clash = np.zeros(len(ids), bool)
    if len(existing):  # a binary search each: existing may hold millions
        at = np.minimum(np.searchsorted(existing, sorted_ids), len(existing) - 1)
        clash = existing[at] == sorted_ids
    twice = np.zeros(len(ids), bool)
    twice[1:] = sorted_ids[1:] == sorted_ids[:-1]
    if np.any(clash | twice):
        repeated = np.unique(sorted_ids[clash | twice])
        raise ValueError(f"ids must be unique; repeated: {repeated[:10]}")
    return ids


def save_archive(path, header: dict, codes: np.ndarray, ids: np.ndarray) -> None:
    """Writes ``header`` (plus ``sha256``), codes and ids atomically."""
    ids = ids.astype("<i8")
    digest = hashlib.sha256(codes.tobytes())
    digest.update(ids.tobytes())
    header = dict(header, sha256=digest.hexdigest())
    arrays = {
        "header": np.frombuffer(json.dumps(header).encode(), np.uint8),
        "codes": codes,
        "ids": ids,
    }
    write_atomic(path, lambda staging: _write_npz(staging, arrays))


def _write_npz(path: str, arrays: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())


def load_archive(
    path,
    *,
    magic: str,
    format_version: int,
    kind: str,
    fields: tuple[str, ...] = (),
    rows=lambda header: header["count"],
):
    """Reads and checks an index file; returns ``(header, codes, ids)``.

    Args:
        path: the file.
        magic: the header's required ``magic``.
        format_version: the one version this reader reads.
        kind: the class name used in error messages.
        fields: the writer's integer header fields besides bits and count.
        rows: the number of rows of ``codes`` and ``ids`` given the header.

    Raises:
        ValueError: any fault (module doc); FileNotFoundError passes through.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if not zipfile.is_zipfile(file):
                raise ValueError("not an .npz (zip) archive")
            file.seek(0)
            with zipfile.ZipFile(file) as archive:
                members = _check_members(archive, size)
                raw = _read_member(archive, members["header"], "header")
                try:
                    header = _parse_header(path, raw, magic, format_version, kind)
                    _check_fields(path, header, fields)
                    count = int(rows(header))
                except ValueError as e:
                    raise _HeaderError(str(e)) from e
                shapes = {"codes": (count, header["bits"] // 8), "ids": (count,)}
                # Each member's .npy shape must equal these before any read.
                codes = _read_member(archive, members["codes"], "codes", shapes)
                ids = _read_member(archive, members["ids"], "ids", shapes)
    except FileNotFoundError:
        raise
    except _HeaderError as e:
        raise ValueError(str(e)) from e
    except _READ_ERRORS as e:
        raise ValueError(f"{path!r} is not a readable {kind} file: {e}") from e
    digest = hashlib.sha256(codes.tobytes())
    digest.update(ids.tobytes())
    if digest.hexdigest() != header["sha256"]:
        raise ValueError(
            f"{path!r}: checksum mismatch (file {digest.hexdigest()}, header "
            f"{header['sha256']})"
        )
    return header, codes, ids


class _HeaderError(ValueError):
    """A well-formed archive whose JSON header is wrong (message has the path)."""


def _check_members(archive: zipfile.ZipFile, size: int) -> dict:
    """The three members, stored uncompressed, no others, sizes within the file."""
    infos = archive.infolist()
    names = [info.filename for info in infos]
    members = {
        name[: -len(".npy")]: info
        for name, info in zip(names, infos, strict=True)
        if name.endswith(".npy")
    }
    missing = set(_MEMBERS) - set(members)
    if missing:
        raise ValueError(f"missing arrays {sorted(missing)}")
    unknown = sorted(set(names) - {f"{name}.npy" for name in _MEMBERS})
    if unknown or len(names) != len(_MEMBERS):
        raise ValueError(f"unexpected members {unknown or names}")
    for name, info in members.items():
        if info.flag_bits & 0x1:
            raise ValueError(f"member {name!r} is encrypted")
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"member {name!r} is compressed (the writer stores)")
        if info.file_size != info.compress_size or info.file_size > size:
            raise ValueError(
                f"member {name!r} declares {info.file_size} bytes in a file of "
                f"{size} bytes"
            )
    return members


def _read_member(archive, info, name, shapes=None) -> np.ndarray:
    """One ``.npy`` member: header parsed here, data read only if it fits."""
    with archive.open(info) as stream:
        version = np.lib.format.read_magic(stream)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"member {name!r}: unsupported .npy version {version}")
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(stream, max_header_size=10_000)
        want = np.dtype(_MEMBERS[name])
        if dtype != want or dtype.hasobject or fortran:
            raise ValueError(
                f"member {name!r} is {dtype} (fortran order {fortran}), the "
                f"format says C-order {want}"
            )
        if len(shape) != (1 if name != "codes" else 2) or min(shape) < 0:
            raise ValueError(f"member {name!r} has shape {shape}")
        if shapes is not None and shape != shapes[name]:
            raise _HeaderError(
                f"{archive.filename!r}: {name} are {dtype} {shape}, header says "
                f"{'uint8' if name == 'codes' else 'int64'} {shapes[name]}"
            )
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if name == "header" and nbytes > _MAX_HEADER_BYTES:
            raise ValueError(f"header of {nbytes} bytes (at most {_MAX_HEADER_BYTES})")
        if stream.tell() + nbytes != info.file_size:
            raise ValueError(
                f"member {name!r}: shape {shape} needs {nbytes} bytes after its "
                f"header, the member has {info.file_size - stream.tell()}"
            )
        data = stream.read(nbytes)  # at most the member's size, in the file
        if len(data) != nbytes or stream.read(1):
            raise ValueError(f"member {name!r} is truncated")
    return np.frombuffer(data, dtype).reshape(shape)


def parse_json_header(
    path: str, raw: bytes, magic: str, format_version: int, kind: str
) -> dict:
    """A JSON object whose ``magic`` and ``format_version`` are the ones given.

    Example:

    ```python
    parse_json_header("m.json", b'{"magic": "m", "format_version": 1}',
                      "m", 1, "manifest")     # the dict
    ```
    """
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # bad UTF-8, JSON, huge numbers
        raise ValueError(f"{path!r}: unreadable {kind} header: {e}") from e
    if not isinstance(header, dict) or header.get("magic") != magic:
        raise ValueError(f"{path!r} is not a {kind} file (magic {header!r:.80})")
    if header.get("format_version") != format_version:
        raise ValueError(
            f"{path!r}: unsupported format_version "
            f"{header.get('format_version')!r} (this version reads {format_version})"
        )
    return header


def _parse_header(
    path: str, raw: np.ndarray, magic: str, format_version: int, kind: str
) -> dict:
    header = parse_json_header(
        path, raw.astype(np.uint8).tobytes(), magic, format_version, kind
    )
    value = header.get("sha256")
    if not isinstance(value, str):
        raise ValueError(f"{path!r}: header field 'sha256' is {value!r:.80}")
    _check_fields(path, header, ("bits", "count"))
    bits, count = header["bits"], header["count"]
    if bits <= 0 or bits % 8 or bits > MAX_BITS or count < 0:
        raise ValueError(
            f"{path!r}: header says bits={bits}, count={count} (bits must be a "
            f"positive multiple of 8 up to {MAX_BITS}, count >= 0)"
        )
    return header


def _check_fields(path: str, header: dict, fields) -> None:
    for key in fields:
        value = header.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{path!r}: header field {key!r} is {value!r:.80}")


def load(path: str | os.PathLike):
    """Opens a saved index of any in-memory kind, chosen by the file's header.

    Example: ``index = keras_hash.index.load("codes.khi")`` gives a
    :class:`~keras_hash.index.HammingIndex` or an
    :class:`~keras_hash.index.IVFHammingIndex`, as saved.

    Raises:
        ValueError: the file is not an index file of a known kind, or any
            fault :func:`load_archive` finds.
    """
    from keras_hash.index.exact import HammingIndex
    from keras_hash.index.ivf import IVFHammingIndex

    path = os.fspath(path)
    magic = read_magic(path)
    for kind in (HammingIndex, IVFHammingIndex):
        if kind.MAGIC == magic:
            return kind.load(path)
    raise ValueError(
        f"{path!r} is an index file of unknown kind {magic!r:.80} (this version "
        f"reads {HammingIndex.MAGIC!r} and {IVFHammingIndex.MAGIC!r})"
    )


def read_magic(path: str) -> object:
    """The ``magic`` of an index file's JSON header (checked as a zip archive)."""
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if not zipfile.is_zipfile(file):
                raise ValueError("not an .npz (zip) archive")
            file.seek(0)
            with zipfile.ZipFile(file) as archive:
                members = _check_members(archive, size)
                raw = _read_member(archive, members["header"], "header")
    except FileNotFoundError:
        raise
    except _READ_ERRORS as e:
        raise ValueError(f"{path!r} is not a readable index file: {e}") from e
    try:
        header = json.loads(raw.astype(np.uint8).tobytes().decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{path!r}: unreadable index header: {e}") from e
    return header.get("magic") if isinstance(header, dict) else None
