"""The checked file format of the in-memory index kinds, and ``load`` for any of them.

An index file is an uncompressed ``.npz`` archive holding exactly three
stored members: ``header.npy`` (UTF-8 JSON as uint8), ``codes.npy`` (uint8
``[rows, bits // 8]``) and ``ids.npy`` (little-endian int64 ``[rows]``). The
header holds ``magic`` (which index wrote it), ``format_version``, ``bits``,
``count``, the writer's own integer fields and ``sha256`` of the codes bytes
followed by the ids bytes. :class:`keras_hash.HammingIndex` stores its codes
and ids (``rows = count``); :class:`keras_hash.index.IVFHammingIndex`
lays out its inverted lists in the same three members. :func:`load` opens
either kind's file by its header's ``magic``.

:func:`load_archive` treats the file as untrusted and reads it with memory
bounded by the file's size: it parses the zip directory and each member's
``.npy`` header itself (never ``pickle``), refuses compressed, encrypted,
unknown or missing members, other dtypes, Fortran order and any shape that
disagrees with the JSON header before allocating, and checks the sizes
declared in the zip against the file and the checksum against the data. Any
fault raises ``ValueError``, and so does a path that is not a regular file
(a directory, a FIFO, a device: found by ``os.stat`` before any read, so a
FIFO never blocks). :func:`save_archive` writes through
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

import contextlib
import hashlib
import json
import os
import stat
import struct
import zipfile

import numpy as np

from keras_hash.files import write_atomic
from keras_hash.index.base import MAX_BITS

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
        with _archive(path, kind) as (archive, members):
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
    except (FileNotFoundError, _NotRegular):
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


@contextlib.contextmanager
def _archive(path: str, kind: str):
    """The zip archive of a regular file and its three checked members."""
    with open_regular(path, kind) as file:
        size = os.fstat(file.fileno()).st_size
        if not zipfile.is_zipfile(file):
            raise ValueError("not an .npz (zip) archive")
        file.seek(0)
        with zipfile.ZipFile(file) as archive:
            yield archive, _check_members(archive, size)


def open_regular(path: str, kind: str = "index"):
    """Opens ``path`` for reading if it is a regular file (symlinks followed).

    A directory, FIFO, socket or device raises ``ValueError`` naming it, at
    once: the type is read with ``os.stat`` before opening, and checked
    again on the open descriptor (opened non-blocking, so a FIFO swapped in
    between cannot block either).

    Example: ``with open_regular("codes.khi") as f: ...``.
    """
    _refuse_special(path, os.stat(path).st_mode, kind)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        _refuse_special(path, os.fstat(fd).st_mode, kind)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _refuse_special(path: str, mode: int, kind: str) -> None:
    if stat.S_ISREG(mode):
        return
    what = (
        "a directory"
        if stat.S_ISDIR(mode)
        else "a FIFO (named pipe)"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "not a regular file"
    )
    raise _NotRegular(f"{path!r} is {what}, not a {kind} file: give the file's path")


class _NotRegular(ValueError):
    """A path that is not a regular file (message has the path)."""


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
    from keras_hash.index.exact import HammingIndex  # they import this module
    from keras_hash.index.ivf import IVFHammingIndex

    path = os.fspath(path)
    kinds = {kind.MAGIC: kind for kind in (HammingIndex, IVFHammingIndex)}
    magic = read_magic(path)
    if magic not in kinds:
        raise ValueError(
            f"{path!r} is not a keras_hash index file (magic {magic!r:.80}; this "
            f"version reads {sorted(kinds)})"
        )
    return kinds[magic].load(path)


def read_magic(path: str) -> object:
    """The ``magic`` of an index file's JSON header (checked as a zip archive)."""
    try:
        with _archive(path, "index") as (archive, members):
            raw = _read_member(archive, members["header"], "header")
    except (FileNotFoundError, _NotRegular):
        raise
    except _READ_ERRORS as e:
        raise ValueError(f"{path!r} is not a readable index file: {e}") from e
    try:
        header = json.loads(raw.astype(np.uint8).tobytes().decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{path!r}: unreadable index header: {e}") from e
    return header.get("magic") if isinstance(header, dict) else None
