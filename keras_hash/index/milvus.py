"""MilvusHammingIndex: the search contract over a Milvus collection.

Packed codes live in a collection with an INT64 primary key (the caller's
ids) and a ``BINARY_VECTOR`` of ``bits`` dimensions, indexed for ``HAMMING``:
``BIN_FLAT`` (exact, the default) or ``BIN_IVF_FLAT`` (a server only;
``nlist`` lists, ``nprobe`` probed; exact at ``nprobe = nlist``). A ``uri``
ending in ``.db`` is a Milvus Lite file (``pip install keras-hash[milvus]``,
``milvus-lite==2.5.1``), ``http://host:19530`` a server
(:mod:`~keras_hash.index.milvus_collection`). ``pymilvus`` is imported when
an index is made. Measurements and the reasons below: ``docs/milvus.md``.

Milvus orders ties its own way and stops a search at 16,384 results (its
``topk``), so results are made exact here and by the contract's finishing
step (:mod:`keras_hash.index.base`), equal to :class:`~keras_hash.HammingIndex`
on ``BIN_FLAT``:

- k-NN asks for ``max(2k, k + 16)`` items; where the last one ties with the
  k-th, the items at that distance are fetched by a range search and the
  smallest ids kept. ``k`` is at most 16,384.
- Range search (inclusive: Milvus keeps ``range_filter <= d < radius``, so
  ``radius + 1`` is passed) asks for 1,024 items per query, then 16,384; a
  query that gets 16,384 is searched again over halves of the id range (a
  ``filter`` on the key), lower half first, until no part is cut; for k-NN
  ties it stops once enough small ids are in hand. On ``BIN_IVF_FLAT`` it
  runs as k-NN searches filtered here (Milvus 2.3.5's IVF range search
  leaves codes out).

Ids run from ``-2**63 + 1`` to ``2**63 - 1`` (Milvus reads the literal
``-2**63`` as ``-2**63 + 1``; before 2.5 a server never returns the row of
``2**63 - 1``, refused there). Milvus does not enforce unique keys, so
``add`` checks the ids first; ``upsert`` replaces. Writers (``add``,
``upsert``, ``delete``) of one collection in one process take one lock per
collection, so the check and the insert are one step for every thread;
other processes are not locked out (``docs/guarantees.md``). A write Milvus
does not acknowledge raises :class:`MilvusWriteError` naming the rows
acknowledged, and the handle then refuses every call until the collection is
opened again: it never reports rows of a failed insert as known.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time

import numpy as np

from keras_hash.arguments import check_int
from keras_hash.codes import check_packed
from keras_hash.index import milvus_search
from keras_hash.index.base import (
    MAX_ID,
    MILVUS_HINT,
    MIN_ID,
    PAD_ID,
    BinaryIndex,
    check_ids,
    check_nprobe,
    check_seconds,
    check_unique,
    csr_from_rows,
    read_only,
)
from keras_hash.index.milvus_collection import (
    INDEX_TYPES,
    check_uri,
    connect,
    open_or_create,
    server_max_id,
)

#: Largest BINARY_VECTOR dimension Milvus accepts.
MAX_BITS = 32768
# Ids per "id in [...]" expression.
_IDS_PER_EXPR = 8192
# Bytes per insert call (gRPC messages are capped at 64 MiB by default).
_BYTES_PER_INSERT = 16 << 20
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
# One lock per collection for the writers of this process (module doc).
_WRITERS: dict[tuple, threading.Lock] = {}
_WRITERS_GUARD = threading.Lock()


def _pymilvus():
    try:
        import pymilvus
    except ImportError as e:
        raise ImportError(f"MilvusHammingIndex needs pymilvus: {MILVUS_HINT}") from e
    return pymilvus


class MilvusWriteError(RuntimeError):
    """A write Milvus did not acknowledge; the message says which rows were."""


class MilvusHammingIndex(BinaryIndex):
    """Hamming-distance index over packed binary codes stored in Milvus.

    The API of :class:`keras_hash.HammingIndex` (``add``, ``search``,
    ``range_search``, ``ntotal``), plus ``delete``, ``upsert``, ``get``,
    ``flush`` and ``drop``. On ``BIN_FLAT`` (the default) results equal
    HammingIndex's: distance ascending, ties by id ascending (module doc for
    how, and for the 16,384 limit on ``k``).

    Example:

    ```python
    import numpy as np
    from keras_hash.index.milvus import MilvusHammingIndex

    rng = np.random.default_rng(0)
    database = rng.integers(0, 256, size=(10_000, 8), dtype=np.uint8)
    index = MilvusHammingIndex(64, "./codes.db", collection="codes")
    index.add(database, ids=np.arange(10_000), progress=True)
    distances, ids = index.search(database[:5], k=10)   # [5, 10] each
    within = index.range_search(database[:5], radius=2)
    index.delete([3, 4])
    index.close()
    ```

    Args:
        bits: code length K, a positive multiple of 8, at most 32768.
        uri: a local file ending in ``.db`` (Milvus Lite, started in this
            process; the file name may hold letters, digits, ``.-_`` and at
            most 36 characters) or a server address such as
            ``"http://localhost:19530"``. Defaults to ``"./codes.db"``.
        collection: collection name (letters, digits, ``_``). An existing
            collection is opened and its schema checked; a missing one is
            created.
        token: server credentials (``"user:password"`` or an API key).
        db_name: server database; ``""`` for the default one.
        index_type: ``"BIN_FLAT"`` (exact) or ``"BIN_IVF_FLAT"``; ``None``
            keeps an existing collection's and makes new ones ``BIN_FLAT``.
        nlist: inverted lists of a new ``BIN_IVF_FLAT`` index (about
            ``4 * sqrt(n)``).
        nprobe: lists probed per ``BIN_IVF_FLAT`` search (more: slower,
            better recall).
        timeout: seconds to wait for the server on each call (connecting
            included).

    Raises:
        ConnectionError: the server cannot be reached, or Milvus Lite cannot
            open the file (another process serving it).
        ValueError: an existing collection of another schema (other dim,
            another vector type, another metric or index, other fields) or
            an index type the server refuses.
    """

    def __init__(
        self,
        bits: int,
        uri: str | os.PathLike = "./codes.db",
        collection: str = "keras_hash_codes",
        *,
        token: str = "",
        db_name: str = "",
        index_type: str | None = None,
        nlist: int = 1024,
        nprobe: int | None = None,
        timeout: float = 10.0,
    ):
        super().__init__(bits, MAX_BITS)
        if not isinstance(collection, str) or not _NAME.match(collection):
            raise ValueError(
                "collection must be a name of letters, digits and '_' not "
                f"starting with a digit (at most 255), got {collection!r}"
            )
        if index_type is not None and index_type not in INDEX_TYPES:
            raise ValueError(
                f"index_type must be one of {INDEX_TYPES}, got {index_type!r}"
            )
        self._nlist = check_int(nlist, "nlist", minimum=1, maximum=65536)
        self._nprobe = (
            32
            if nprobe is None
            else check_int(nprobe, "nprobe", minimum=1, maximum=65536)
        )
        self._timeout = check_seconds(timeout)
        self._milvus = _pymilvus()
        self._uri, self._lite = check_uri(uri)
        self._name = collection
        self._closed = self._dropped = False
        self._failed = None  # what a failed write left unknown
        self._client = connect(
            self._milvus, self._uri, self._lite, token, db_name, self._timeout
        )
        self._writers = _writer_lock(self._uri, db_name, collection)
        try:
            self._max_id = (
                MAX_ID if self._lite else server_max_id(self._client, self._timeout)
            )
            found = open_or_create(
                self._milvus,
                self._client,
                collection,
                self._bits,
                self._uri,
                self._lite,
                index_type,
                self._nlist,
                self._timeout,
            )
            self._id_field, self._code_field, self._index_type, nlist = found
            self._lists = nlist  # None on BIN_FLAT
            if nlist is not None and nprobe is None:
                self._nprobe = min(self._nprobe, nlist)
            self._nprobe = check_nprobe(self._nprobe, nlist)
            self._client.load_collection(collection, timeout=self._timeout)
        except BaseException:
            self._client.close()
            raise

    # -- properties ----------------------------------------------------------

    uri = read_only("_uri", "The ``.db`` file or server address.")
    collection = read_only("_name", "The collection name.")
    index_type = read_only("_index_type", '``"BIN_FLAT"`` or ``"BIN_IVF_FLAT"``.')

    @property
    def nprobe(self) -> int:
        """Lists probed per search on ``BIN_IVF_FLAT`` (settable)."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._nprobe = check_nprobe(
            check_int(value, "nprobe", minimum=1, maximum=65536), self._lists
        )

    @property
    def ntotal(self) -> int:
        """Number of codes in the collection (deleted ones not counted)."""
        self._check_usable()
        rows = self._client.query(
            self._name,
            filter="",
            output_fields=["count(*)"],
            timeout=self._timeout,
            consistency_level="Strong",
        )
        return int(rows[0]["count(*)"])

    def __repr__(self) -> str:
        state = (
            " dropped"
            if self._dropped
            else " closed"
            if self._closed
            else " failed"
            if self._failed
            else ""
        )
        return (
            f"MilvusHammingIndex(bits={self._bits}, uri={self._uri!r}, "
            f"collection={self._name!r}, index_type={self._index_type!r}{state})"
        )

    def __enter__(self) -> MilvusHammingIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------

    def add(self, codes, ids, *, batch_size=10_000, progress=None) -> None:
        """Inserts packed codes under new ids, in batches.

        Args:
            codes: uint8 ``[n, bits // 8]`` packed codes.
            ids: integer ``[n]`` ids, unique and not yet in the collection
                (checked before anything is written; ``ValueError``
                otherwise), in ``-2**63 + 1 .. 2**63 - 1``.
            batch_size: rows per insert call (fewer for very long codes, to
                keep each message under 16 MiB).
            progress: ``True`` for a Keras progress bar, or a callable
                ``progress(done, total)`` called after each batch.

        Raises:
            MilvusWriteError: a batch was not acknowledged (server lost,
                timeout). The message says which rows were acknowledged; the
                failed batch may or may not be stored, so this index refuses
                further calls until the collection is opened again.
        """
        self._write(codes, ids, batch_size, progress, replace=False)

    def upsert(self, codes, ids, *, batch_size=10_000, progress=None) -> None:
        """Inserts codes, replacing the codes of ids already present.

        Args as in :meth:`add`; ids must be unique within the call.
        """
        self._write(codes, ids, batch_size, progress, replace=True)

    def delete(self, ids) -> int:
        """Removes the codes of ``ids``; ids not present are ignored.

        Returns:
            The number of codes removed.
        """
        ids = np.unique(self._check_ids(ids, None, unique=False))
        with self._writers:
            self._check_usable()
            present = self._existing(ids)
            for start in range(0, len(present), _IDS_PER_EXPR):
                chunk = present[start : start + _IDS_PER_EXPR]
                with self._latch(
                    f"delete of {len(present)} ids: {start} acknowledged, "
                    f"{len(chunk)} unknown, {len(present) - start - len(chunk)} "
                    "not sent"
                ):
                    self._client.delete(
                        self._name, ids=chunk.tolist(), timeout=self._timeout
                    )
        return len(present)

    def _get(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Queries the unique ``ids`` by chunks of ``_IDS_PER_EXPR``."""
        self._check_usable()
        width = self._bits // 8
        codes, found = np.zeros((len(ids), width), np.uint8), np.zeros(len(ids), bool)
        # Ids Milvus cannot store (-2**63; past _max_id) are never asked.
        storable = np.flatnonzero((ids >= MIN_ID) & (ids <= self._max_id))
        for chunk in _chunks(storable, _IDS_PER_EXPR):
            rows = self._client.query(
                self._name,
                filter=_in_expr(self._id_field, ids[chunk]),
                output_fields=[self._id_field, self._code_field],
                timeout=self._timeout,
                consistency_level="Strong",
            )
            for row in rows:
                code = row[self._code_field]
                code = code[0] if isinstance(code, list) else code
                at = int(np.searchsorted(ids, int(row[self._id_field])))
                codes[at] = np.frombuffer(bytes(code), np.uint8, width)
                found[at] = True
        return codes, found

    def _holder(self) -> str:
        return f"collection {self._name!r}"

    def flush(self) -> None:
        """Seals pending inserts into segments (Milvus persists them anyway)."""
        self._check_usable()
        self._client.flush(self._name, timeout=self._timeout)

    def wait_for_index(self, timeout: float = 600.0) -> None:
        """Flushes, waits until the server has indexed every code, then reloads.

        A server searches fresh inserts by brute force until their segments
        are sealed and indexed (results are the same, speed is not): call
        this after a bulk load so that searches run on the built
        ``BIN_IVF_FLAT`` lists. Milvus Lite has no background build; there
        it only flushes.

        Example: ``index.add(codes, ids); index.wait_for_index()``.

        Raises:
            TimeoutError: the server has not indexed every code within
                ``timeout`` seconds.
        """
        timeout = check_seconds(timeout)
        self.flush()
        if self._lite:
            return
        deadline = time.monotonic() + timeout
        rows = self.ntotal
        index_name = self._client.list_indexes(self._name, timeout=self._timeout)[0]
        while True:
            info = self._client.describe_index(
                self._name, index_name, timeout=self._timeout
            )
            if int(info.get("indexed_rows", 0)) >= rows:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Milvus indexed {info.get('indexed_rows')} of {rows} codes of "
                    f"collection {self._name!r} in {timeout} s"
                )
            time.sleep(0.2)
        self._client.release_collection(self._name, timeout=self._timeout)
        self._client.load_collection(self._name, timeout=self._timeout)

    def drop(self) -> None:
        """Deletes the collection and every code in it; the index is unusable after."""
        self._check_usable()
        self._client.drop_collection(self._name, timeout=self._timeout)
        self._dropped = True

    def close(self) -> None:
        """Closes the connection. Milvus Lite keeps serving the file until exit."""
        if not self._closed:
            self._closed = True
            self._client.close()

    # -- searching -------------------------------------------------------------

    @property
    def max_k(self) -> int:
        """Milvus's largest search (``topk``): 16,384."""
        return milvus_search.MAX_TOPK

    def _searchable(self) -> int:
        self._check_usable()
        return super()._searchable()

    def _knn_candidates(self, queries: np.ndarray, k: int):
        """A few more than k per query, as dense rows (padded past what came)."""
        limit = min(max(2 * k, k + 16), milvus_search.MAX_TOPK)
        dist = np.full((len(queries), limit), self._bits + 1, np.int64)
        ids = np.full((len(queries), limit), PAD_ID, np.int64)
        for row, (d, i, _) in enumerate(milvus_search.search(self, queries, limit)):
            dist[row, : len(d)], ids[row, : len(i)] = d, i
        return dist, ids

    def _range_candidates(self, queries: np.ndarray, lo: int, hi: int, need=None):
        return csr_from_rows(milvus_search.collect(self, queries, lo, hi, need))

    # -- internals ---------------------------------------------------------------

    def _check_ids(self, ids, n: int | None, unique: bool = True) -> np.ndarray:
        ids = _check_ids(ids, n, unique)
        if self._max_id < MAX_ID and len(ids) and ids.max() > self._max_id:
            raise ValueError(
                f"id {MAX_ID} (2**63 - 1) cannot be used on this Milvus server "
                "(before 2.5 its queries never return that row); ids must be "
                f"at most {self._max_id}"
            )
        return ids

    def _check_usable(self) -> None:
        if self._dropped:
            raise ValueError(f"collection {self._name!r} was dropped")
        if self._closed:
            raise ValueError(f"this index on collection {self._name!r} is closed")
        if self._failed is not None:
            raise ValueError(
                f"this index on collection {self._name!r} refuses further calls "
                f"after a failed write ({self._failed}): close it and open the "
                "collection again to see what it holds"
            )

    def _existing(self, ids: np.ndarray) -> np.ndarray:
        """Which of ``ids`` (unique) the collection holds, ascending."""
        found = []
        for chunk in _chunks(ids, _IDS_PER_EXPR):
            rows = self._client.query(
                self._name,
                filter=_in_expr(self._id_field, chunk),
                output_fields=[self._id_field],
                timeout=self._timeout,
                consistency_level="Strong",
            )
            found.extend(int(row[self._id_field]) for row in rows)
        return np.unique(np.array(found, np.int64))

    def _write(self, codes, ids, batch_size, progress, *, replace: bool) -> None:
        """Checks, then inserts (or upserts, ``replace``) in batches."""
        codes = check_packed(codes, bits=self._bits)
        ids = self._check_ids(ids, len(codes))
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        batch_size = min(batch_size, max(1, _BYTES_PER_INSERT // (self._bits // 8 + 8)))
        report = _progress(progress, len(codes))
        with self._writers:  # no other writer of this process between check and write
            self._check_usable()
            if not replace:
                taken = self._existing(ids)
                if len(taken):
                    raise ValueError(
                        f"ids already in collection {self._name!r}: "
                        f"{taken[:10].tolist()}{' ...' if len(taken) > 10 else ''} "
                        "(use upsert to replace codes)"
                    )
            call = self._client.upsert if replace else self._client.insert
            for start in range(0, len(codes), batch_size):
                stop = min(start + batch_size, len(codes))
                rows = [
                    {self._id_field: int(i), self._code_field: code.tobytes()}
                    for i, code in zip(ids[start:stop], codes[start:stop], strict=True)
                ]
                with self._latch(
                    f"{'upsert' if replace else 'add'} of {len(codes)} codes: rows "
                    f"0..{start - 1} acknowledged, rows {start}..{stop - 1} unknown, "
                    f"rows {stop}..{len(codes) - 1} not sent"
                ):
                    call(self._name, rows, timeout=self._timeout)
                report(stop)

    @contextlib.contextmanager
    def _latch(self, what: str):
        """A write whose failure leaves this index refusing calls (module doc)."""
        try:
            yield
        except BaseException as e:
            self._failed = f"{what}; {type(e).__name__}: {e}"
            raise MilvusWriteError(
                f"collection {self._name!r}: {self._failed}. This index now "
                "refuses further calls: close it and open the collection again"
            ) from e


# ---------------------------------------------------------------------------
# helpers


def _check_ids(ids, n: int | None, unique: bool = True) -> np.ndarray:
    """Ids as int64 ``[n]`` within ``MIN_ID .. MAX_ID``; unique if asked."""
    if ids is None:
        raise TypeError("ids are required: MilvusHammingIndex stores the caller's ids")
    if isinstance(ids, (int, np.integer)) and not isinstance(ids, bool):
        ids = [ids]
    ids = check_ids(
        ids, n, MIN_ID, " (int64 but -2**63, which Milvus expressions cannot match)"
    )
    if unique:
        check_unique(ids)
    return ids


def _writer_lock(uri: str, db_name: str, collection: str) -> threading.Lock:
    """The one lock of this process's writers of a collection."""
    with _WRITERS_GUARD:
        return _WRITERS.setdefault((uri, db_name, collection), threading.Lock())


def _chunks(array: np.ndarray, size: int):
    return (array[i : i + size] for i in range(0, len(array), size))


def _in_expr(field: str, ids: np.ndarray) -> str:
    return f"{field} in [{', '.join(str(int(i)) for i in ids)}]"


def _progress(progress, total: int):
    if progress is None or progress is False:
        return lambda done: None
    if progress is True:
        import keras

        bar = keras.utils.Progbar(total, unit_name="code")
        return lambda done: bar.update(done)
    if callable(progress):
        return lambda done: progress(done, total)
    raise TypeError(
        f"progress must be True, False, None or a callable, got {progress!r}"
    )
