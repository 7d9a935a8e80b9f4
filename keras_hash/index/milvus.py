"""MilvusHammingIndex: the HammingIndex API over a Milvus collection.

Packed binary codes live in a Milvus collection with two fields: an INT64
primary key (the caller's ids) and a ``BINARY_VECTOR`` of dimension ``bits``,
indexed for the ``HAMMING`` metric: ``BIN_FLAT`` (exact, the default) or
``BIN_IVF_FLAT`` (inverted lists: ``nlist`` at build, ``nprobe`` at search;
a Milvus server only, Milvus Lite 2.5.1 refuses it).

Where it runs: a ``uri`` ending in ``.db`` is a local file served by Milvus
Lite (``pip install keras-hash[milvus]``; pinned to ``milvus-lite==2.5.1``,
the 3.x line refuses ``BINARY_VECTOR`` fields); ``http://host:19530`` (with a
``token``) is a Milvus server. See ``docs/milvus.md``.

Results match :class:`keras_hash.HammingIndex` on ``BIN_FLAT``: the same
int32 distances, and ties by id ascending. Milvus orders ties its own way
and stops a search at 16,384 results (its ``topk`` limit), so the client
settles the order itself:

- k-NN asks Milvus for a few more than ``k`` (``max(2k, k + 16)``, at most
  16,384) and sorts them by (distance, id). When the last one returned lies
  beyond the k-th distance ``t``, every item within ``t`` is there and the
  top k are exact. Otherwise items at distance ``t`` may be missing: a range
  search for exactly ``t`` fetches them (see below) and the client keeps the
  smallest ids.
- Range search (radius inclusive; Milvus keeps ``range_filter <= d <
  radius``, so the client passes ``radius + 1``) asks for up to 16,384
  results per query. A query that gets 16,384 may have been cut: its search
  is repeated over halves of the id range (a ``filter`` on the primary key),
  lower half first, splitting again until no part is cut. So results are
  complete at any size, at the cost of more searches where more than
  16,384 items lie within the radius. For k-NN ties the splitting stops as
  soon as enough small ids at distance ``t`` are in hand.

Hence ``k`` is at most 16,384 (Milvus's limit, a ``ValueError`` beyond). On
``BIN_IVF_FLAT`` Milvus probes only ``nprobe`` lists: results are
approximate (ties still by id among the items found), and a row with fewer
than ``k`` items found is padded with id ``PAD_ID`` (``-2**63``) at distance
``bits + 1``; with ``nprobe = nlist`` they are exact. There, range search
runs as k-NN searches filtered on the client: the server's own IVF range
search leaves codes out (measured on Milvus 2.3.5, docs/milvus.md).

Ids are int64 from ``-2**63 + 1`` to ``2**63 - 1``: Milvus 2.5's expression
parser reads the literal ``-9223372036854775808`` as ``-2**63 + 1``
(measured: ``delete(ids=[-2**63])`` deleted id ``-2**63 + 1``), so ``-2**63``
is refused. On a server older than 2.5, ``2**63 - 1`` is refused too:
Milvus 2.3's queries never return that row (measured on 2.3.5), so a
duplicate could not be seen nor the code deleted or read back. Milvus does
not enforce unique primary keys (a second insert of an id stores a
duplicate), so :meth:`MilvusHammingIndex.add` checks the ids against the
collection first; :meth:`~MilvusHammingIndex.upsert` replaces.

Writers (``add``, ``upsert``, ``delete``) of one collection in one process
take one lock per collection (uri, database, name), so the check and the
insert of ``add`` are one step for every thread of the process; other
processes are not locked out (``docs/guarantees.md``). A write Milvus does
not acknowledge raises :class:`MilvusWriteError` naming the rows
acknowledged, and the handle then refuses every call until the collection is
opened again: it never reports rows of a failed insert as known.

``pymilvus`` is imported when an index is made, never by ``import
keras_hash``.
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

#: Milvus's largest ``topk`` (``limit``) and ``nq`` for one search.
MAX_TOPK = 16384
#: Largest BINARY_VECTOR dimension Milvus accepts.
MAX_BITS = 32768

# Results fetched per search call (queries x limit): bounds message sizes, and
# Milvus Lite answered fastest near this size (measured).
_HITS_PER_CALL = 1 << 18
# Limit of the first range search of each query (faster than MAX_TOPK).
_FIRST_LIMIT = 1024
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

    def get(self, ids) -> np.ndarray:
        """The stored codes of ``ids``, in their order (uint8 ``[n, bits // 8]``).

        Raises:
            KeyError: some ids are not in the collection.
        """
        ids = self._check_ids(ids, None, unique=False)
        self._check_usable()
        found = {}
        for chunk in _chunks(np.unique(ids), _IDS_PER_EXPR):
            rows = self._client.query(
                self._name,
                filter=_in_expr(self._id_field, chunk),
                output_fields=[self._id_field, self._code_field],
                timeout=self._timeout,
                consistency_level="Strong",
            )
            for row in rows:
                code = row[self._code_field]
                code = code[0] if isinstance(code, list) else code
                found[int(row[self._id_field])] = bytes(code)
        missing = [int(i) for i in ids if int(i) not in found]
        if missing:
            raise KeyError(f"ids not in collection {self._name!r}: {missing[:10]}")
        out = np.frombuffer(b"".join(found[int(i)] for i in ids), np.uint8)
        return out.reshape(len(ids), self._bits // 8).copy()

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
        return MAX_TOPK

    def _searchable(self) -> int:
        self._check_usable()
        return super()._searchable()

    def _knn_candidates(self, queries: np.ndarray, k: int):
        """A few more than k per query, as dense rows (padded past what came)."""
        limit = min(max(2 * k, k + 16), MAX_TOPK)
        dist = np.full((len(queries), limit), self._bits + 1, np.int64)
        ids = np.full((len(queries), limit), PAD_ID, np.int64)
        for row, (d, i, _) in enumerate(self._search(queries, limit)):
            dist[row, : len(d)], ids[row, : len(i)] = d, i
        return dist, ids

    def _range_candidates(self, queries: np.ndarray, lo: int, hi: int, need=None):
        return csr_from_rows(self._collect(queries, lo, hi, need))

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

    def _search(self, queries, limit, lo=None, hi=None, id_range=None):
        """One Milvus search per block of queries; per query (distances, ids, cut).

        ``lo``/``hi``: keep distances in ``[lo, hi]`` (a range search);
        ``id_range``: keep ids in ``[a, b]``. ``cut``: the search may have
        left out items in range (it stopped at ``limit``).

        On ``BIN_IVF_FLAT`` a range search is a k-NN search of ``limit``
        items filtered here: Milvus 2.3's IVF range search leaves out items
        within the radius even with ``nprobe = nlist`` (measured on 2.3.5:
        1,079 of 1,587 found), while its k-NN search over the same lists
        finds them all.
        """
        ivf = self._index_type == "BIN_IVF_FLAT"
        params = {"nprobe": self._nprobe} if ivf else {}
        if hi is not None and not ivf:
            # Milvus keeps range_filter <= d < radius for HAMMING (measured).
            params["radius"] = int(hi) + 1
            params["range_filter"] = int(lo)
        expr = "" if id_range is None else _range_expr(self._id_field, *id_range)
        block = max(1, min(MAX_TOPK, _HITS_PER_CALL // limit))
        out = []
        for start in range(0, len(queries), block):
            result = self._client.search(
                self._name,
                data=[q.tobytes() for q in queries[start : start + block]],
                filter=expr,
                limit=int(limit),
                output_fields=[],
                search_params={"metric_type": "HAMMING", "params": params},
                anns_field=self._code_field,
                timeout=self._timeout,
                consistency_level="Strong",
            )
            for hits in result:
                dist, ids = _hit_arrays(hits)
                cut = len(dist) >= limit
                if hi is not None and ivf:
                    cut = cut and bool(dist.max() <= hi)
                    keep = (dist >= lo) & (dist <= hi)
                    dist, ids = dist[keep], ids[keep]
                out.append((dist, ids, cut))
        return out

    def _collect(self, queries, lo, hi, need):
        """Every item at distance ``lo..hi`` of each query, past Milvus's limit.

        A first search keeps up to ``_FIRST_LIMIT`` items per query (Milvus
        works faster with a small limit); queries that fill it are searched
        again with ``MAX_TOPK``. A query cut at ``MAX_TOPK`` results is
        searched again over halves of the id range, lower half
        first, halving until no part is cut. With ``need`` (one count per
        query), a query stops once it holds that many items from a prefix of
        the id range: the smallest ids at those distances are then all in hand.
        """
        hits = self._search(queries, min(_FIRST_LIMIT, MAX_TOPK), lo, hi)
        full = [row for row, hit in enumerate(hits) if hit[2]]
        if full and _FIRST_LIMIT < MAX_TOPK:
            again = self._search(queries[full], MAX_TOPK, lo, hi)
            for row, found in zip(full, again, strict=True):
                hits[row] = found
        return [
            self._split(queries[row], lo, hi, None if need is None else need[row])
            if cut  # at MAX_TOPK: cut where Milvus stopped
            else (dist, ids)
            for row, (dist, ids, cut) in enumerate(hits)
        ]

    def _split(self, query, lo, hi, need):
        """``_collect`` for one query whose search over all ids was cut."""
        mid = MIN_ID + (MAX_ID - MIN_ID) // 2
        stack = [(mid + 1, MAX_ID), (MIN_ID, mid)]  # the top is searched next
        dists, idss = [np.zeros(0, np.int32)], [np.zeros(0, np.int64)]
        held = 0
        while stack:
            a, b = stack.pop()
            dist, ids, cut = self._search(query[None], MAX_TOPK, lo, hi, (a, b))[0]
            if cut and a < b:  # cut again: halve
                mid = a + (b - a) // 2
                stack += [(mid + 1, b), (a, mid)]
                continue
            dists.append(dist)
            idss.append(ids)
            held += len(dist)
            if need is not None and held >= need:
                break
        return np.concatenate(dists), np.concatenate(idss)


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


def _range_expr(field: str, a: int, b: int) -> str:
    terms = []
    if a > MIN_ID:
        terms.append(f"{field} >= {a}")
    if b < MAX_ID:
        terms.append(f"{field} <= {b}")
    return " and ".join(terms)


def _hit_arrays(hits) -> tuple[np.ndarray, np.ndarray]:
    """(int32 distances, int64 ids) of one query's hits."""
    ids, dist = getattr(hits, "ids", None), getattr(hits, "distances", None)
    if ids is None or dist is None:  # pymilvus 2.5: a list of dicts
        ids = [hit["id"] for hit in hits]
        dist = [hit["distance"] for hit in hits]
    ids = np.asarray(ids, np.int64).reshape(-1)
    dist = np.rint(np.asarray(dist, np.float64)).astype(np.int32).reshape(-1)
    return dist, ids


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
