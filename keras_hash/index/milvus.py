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

``pymilvus`` is imported when an index is made, never by ``import
keras_hash``.
"""

from __future__ import annotations

import os
import pathlib
import re
import time

import numpy as np

from keras_hash.codes import check_bits, check_packed
from keras_hash.index.exact import RangeResult, check_k, check_radius, read_only
from keras_hash.index.file import check_ids

#: Milvus's largest ``topk`` (``limit``) and ``nq`` for one search.
MAX_TOPK = 16384
#: Largest BINARY_VECTOR dimension Milvus accepts.
MAX_BITS = 32768
#: Range of ids (``-2**63`` is refused: module doc).
MIN_ID, MAX_ID = -(2**63) + 1, 2**63 - 1
#: Id of padding in k-NN rows that ``BIN_IVF_FLAT`` could not fill.
PAD_ID = -(2**63)
INDEX_TYPES = ("BIN_FLAT", "BIN_IVF_FLAT")
INSTALL_HINT = "pip install keras-hash[milvus]"

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
# Milvus Lite's own rule for a database file name.
_LITE_FILE = re.compile(r"^[A-Za-z0-9.\-_]{1,36}$")
_SERVER_SCHEMES = ("http://", "https://", "tcp://", "unix:")


def _pymilvus():
    try:
        import pymilvus
    except ImportError as e:
        raise ImportError(f"MilvusHammingIndex needs pymilvus: {INSTALL_HINT}") from e
    return pymilvus


class MilvusHammingIndex:
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
        nprobe: int = 32,
        timeout: float = 10.0,
    ):
        self._bits = check_bits(bits)
        if self._bits > MAX_BITS:
            raise ValueError(
                f"bits must be at most {MAX_BITS} (Milvus's largest binary "
                f"vector), got {self._bits}"
            )
        if not isinstance(collection, str) or not _NAME.match(collection):
            raise ValueError(
                "collection must be a name of letters, digits and '_' not "
                f"starting with a digit (at most 255), got {collection!r}"
            )
        if index_type is not None and index_type not in INDEX_TYPES:
            raise ValueError(
                f"index_type must be one of {INDEX_TYPES}, got {index_type!r}"
            )
        self._nlist = _positive_int(nlist, "nlist", 65536)
        self._nprobe = _positive_int(nprobe, "nprobe", 65536)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be a number of seconds, got {timeout!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self._timeout = float(timeout)
        self._milvus = _pymilvus()
        self._uri, self._lite = _check_uri(uri)
        self._name = collection
        self._closed = self._dropped = False
        self._client = self._connect(token, db_name)
        try:
            self._max_id = MAX_ID if self._lite else self._server_max_id()
            if self._client.has_collection(collection, timeout=self._timeout):
                self._open_existing(index_type)
            else:
                self._create(index_type or "BIN_FLAT")
            self._client.load_collection(collection, timeout=self._timeout)
        except BaseException:
            self._client.close()
            raise

    # -- properties ----------------------------------------------------------

    bits = read_only("_bits", "Code length K in bits.")
    uri = read_only("_uri", "The ``.db`` file or server address.")
    collection = read_only("_name", "The collection name.")
    index_type = read_only("_index_type", '``"BIN_FLAT"`` or ``"BIN_IVF_FLAT"``.')

    @property
    def nprobe(self) -> int:
        """Lists probed per search on ``BIN_IVF_FLAT`` (settable)."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._nprobe = _positive_int(value, "nprobe", 65536)

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

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        state = " dropped" if self._dropped else " closed" if self._closed else ""
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

        A failure part-way (server lost) leaves the earlier batches stored.
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
        self._check_usable()
        present = self._existing(ids)
        for start in range(0, len(present), _IDS_PER_EXPR):
            chunk = present[start : start + _IDS_PER_EXPR]
            self._client.delete(self._name, ids=chunk.tolist(), timeout=self._timeout)
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
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be a number of seconds, got {timeout!r}")
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

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Finds the k nearest codes of each query.

        Args:
            queries: uint8 ``[q, bits // 8]`` packed codes.
            k: number of neighbours, ``1 <= k <= min(ntotal, 16384)``.

        Returns:
            ``(distances, ids)``: int32 and int64 arrays ``[q, k]``, each row
            by distance ascending, ties by id ascending.
        """
        queries = check_packed(queries, bits=self._bits, name="queries")
        ntotal = self._check_nonempty()
        k = check_k(k, ntotal)
        if k > MAX_TOPK:
            raise ValueError(
                f"k must be at most {MAX_TOPK}, Milvus's largest search (topk), got {k}"
            )
        out_d = np.full((len(queries), k), self._bits + 1, np.int32)
        out_i = np.full((len(queries), k), PAD_ID, np.int64)
        if len(queries) == 0:
            return out_d, out_i
        limit = min(max(2 * k, k + 16), MAX_TOPK, ntotal)
        hits = [(dist, ids) for dist, ids, _ in self._search(queries, limit)]
        # Queries whose k-th distance t may have more items than returned.
        open_ = {}
        for row, (dist, ids) in enumerate(hits):
            dist, ids = _sorted(dist, ids)
            hits[row] = dist, ids
            if len(dist) >= k and len(dist) < ntotal and dist[-1] == dist[k - 1]:
                open_.setdefault(int(dist[k - 1]), []).append(row)
        for t, rows in open_.items():
            need = [k - int(np.sum(hits[r][0] < t)) for r in rows]
            ties = self._collect(queries[rows], t, t, need)
            for r, (tie_d, tie_i) in zip(rows, ties, strict=True):
                dist = np.concatenate([hits[r][0], tie_d])
                ids = np.concatenate([hits[r][1], tie_i])
                ids, first = np.unique(ids, return_index=True)
                hits[r] = _sorted(dist[first], ids)
        for row, (dist, ids) in enumerate(hits):
            n = min(k, len(dist))
            out_d[row, :n], out_i[row, :n] = dist[:n], ids[:n]
        return out_d, out_i

    def range_search(self, queries: np.ndarray, radius: int) -> RangeResult:
        """Finds every code within a Hamming radius (inclusive) of each query.

        Args:
            queries: uint8 ``[q, bits // 8]`` packed codes.
            radius: the largest distance returned, an int ``>= 0``.

        Returns:
            A :class:`keras_hash.index.RangeResult` (CSR ``lims``,
            ``distances``, ``ids``), each query's neighbours by distance, then
            id. Complete beyond Milvus's 16,384 results per search (module
            doc).
        """
        queries = check_packed(queries, bits=self._bits, name="queries")
        radius = check_radius(radius, self._bits)
        self._check_nonempty()
        lims = np.zeros(len(queries) + 1, np.int64)
        if len(queries) == 0:
            return RangeResult(lims, np.zeros(0, np.int32), np.zeros(0, np.int64))
        hits = [_sorted(d, i) for d, i in self._collect(queries, 0, radius, None)]
        np.cumsum([len(d) for d, _ in hits], out=lims[1:])
        distances = np.concatenate([d for d, _ in hits]).astype(np.int32)
        ids = np.concatenate([i for _, i in hits]).astype(np.int64)
        return RangeResult(lims, distances, ids)

    # -- internals ---------------------------------------------------------------

    def _connect(self, token: str, db_name: str):
        milvus = self._milvus
        if self._lite:
            try:
                import milvus_lite  # noqa: F401
            except ImportError as e:
                raise ImportError(
                    f"a local .db uri needs Milvus Lite: {INSTALL_HINT} "
                    "(or give a server uri such as http://localhost:19530)"
                ) from e
        try:
            return milvus.MilvusClient(
                self._uri, token=token, db_name=db_name, timeout=self._timeout
            )
        except milvus.MilvusException as e:
            if self._lite:
                raise ConnectionError(
                    f"Milvus Lite could not open {self._uri!r} ({e.message}); a "
                    ".db file is served by one process at a time: is it open in "
                    "another process?"
                ) from e
            raise ConnectionError(
                f"cannot reach a Milvus server at {self._uri!r} within "
                f"{self._timeout:g} s: {e.message}"
            ) from e

    def _create(self, index_type: str) -> None:
        milvus, client = self._milvus, self._client
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", milvus.DataType.INT64, is_primary=True)
        schema.add_field("code", milvus.DataType.BINARY_VECTOR, dim=self._bits)
        client.create_collection(
            self._name, schema=schema, consistency_level="Strong", timeout=self._timeout
        )
        params = client.prepare_index_params()
        params.add_index(
            field_name="code",
            index_type=index_type,
            metric_type="HAMMING",
            params={"nlist": self._nlist} if index_type == "BIN_IVF_FLAT" else {},
        )
        try:
            client.create_index(self._name, params, timeout=self._timeout)
        except milvus.MilvusException as e:
            client.drop_collection(self._name, timeout=self._timeout)
            lite = " (Milvus Lite serves BIN_FLAT only)" if self._lite else ""
            raise ValueError(
                f"Milvus refused a {index_type} HAMMING index on {self._uri!r}"
                f"{lite}: {e.message}"
            ) from e
        self._id_field, self._code_field = "id", "code"
        self._index_type = index_type

    def _open_existing(self, index_type: str | None) -> None:
        """Adopts an existing collection after checking its schema and index."""
        milvus, client, name = self._milvus, self._client, self._name
        where = f"collection {name!r} at {self._uri!r}"
        desc = client.describe_collection(name, timeout=self._timeout)
        fields = [f for f in desc["fields"] if not f.get("is_dynamic")]
        kinds = {f["name"]: getattr(f["type"], "name", str(f["type"])) for f in fields}
        primary = [f for f in fields if f.get("is_primary")]
        vectors = [f for f in fields if "VECTOR" in kinds[f["name"]]]
        if len(vectors) != 1 or vectors[0]["type"] != milvus.DataType.BINARY_VECTOR:
            raise ValueError(
                f"{where} is not a collection of binary codes: its fields are "
                f"{kinds}; MilvusHammingIndex needs one BINARY_VECTOR field"
            )
        if (
            len(primary) != 1
            or primary[0]["type"] != milvus.DataType.INT64
            or primary[0].get("auto_id", desc.get("auto_id"))
            or len(fields) != 2
        ):
            raise ValueError(
                f"{where} has fields {kinds} (auto_id={desc.get('auto_id')}); "
                "MilvusHammingIndex needs exactly an INT64 primary key without "
                "auto_id and one BINARY_VECTOR field"
            )
        vector = vectors[0]
        dim = int(vector.get("params", {}).get("dim", -1))
        if dim != self._bits:
            raise ValueError(
                f"{where} holds {dim}-bit codes (BINARY_VECTOR dim {dim}), this "
                f"index was asked for bits={self._bits}"
            )
        described = None
        for index_name in client.list_indexes(name, timeout=self._timeout):
            info = client.describe_index(name, index_name, timeout=self._timeout)
            if info.get("field_name") == vector["name"]:
                described = info
        if described is None:
            raise ValueError(f"{where} has no index on its field {vector['name']!r}")
        metric = described.get("metric_type")
        kind = described.get("index_type")
        if metric != "HAMMING":
            raise ValueError(f"{where} is indexed for metric {metric}, not HAMMING")
        if kind not in INDEX_TYPES:
            raise ValueError(f"{where} has a {kind} index, not one of {INDEX_TYPES}")
        if index_type is not None and kind != index_type:
            raise ValueError(
                f"{where} has a {kind} index, index_type={index_type!r} was asked "
                "(pass index_type=None to keep it)"
            )
        self._id_field, self._code_field = primary[0]["name"], vector["name"]
        self._index_type = kind

    def _server_max_id(self) -> int:
        """Largest id this server can find again: ``2**63 - 2`` before 2.5.

        Milvus 2.3's queries never return the row whose primary key is
        ``2**63 - 1`` (measured on 2.3.5: ``id in [...]``, ``id >= 0`` and
        ``id != 0`` all miss it, and a search asked for its vector fails with
        "incomplete query result, missing id 9223372036854775807"), so
        :meth:`add` could not see it taken, nor :meth:`delete` or :meth:`get`
        find it. Refused on servers older than 2.5 (2.4 untested); Milvus
        Lite 2.5.1 finds it.
        """
        try:
            version = str(self._client.get_server_version(timeout=self._timeout))
        except Exception:  # a server without the call: assume a recent one
            return MAX_ID
        found = re.search(r"(\d+)\.(\d+)", version)
        old = found is not None and (int(found[1]), int(found[2])) < (2, 5)
        return MAX_ID - 1 if old else MAX_ID

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

    def _check_nonempty(self) -> int:
        ntotal = self.ntotal
        if ntotal == 0:
            raise ValueError("the index is empty: add codes before searching")
        return ntotal

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
        self._check_usable()
        if not replace:
            taken = self._existing(ids)
            if len(taken):
                raise ValueError(
                    f"ids already in collection {self._name!r}: {taken[:10].tolist()}"
                    f"{' ...' if len(taken) > 10 else ''} (use upsert to replace codes)"
                )
        call = self._client.upsert if replace else self._client.insert
        batch_size = _positive_int(batch_size, "batch_size", None)
        batch_size = min(batch_size, max(1, _BYTES_PER_INSERT // (self._bits // 8 + 8)))
        report = _progress(progress, len(codes))
        for start in range(0, len(codes), batch_size):
            stop = min(start + batch_size, len(codes))
            rows = [
                {self._id_field: int(i), self._code_field: code.tobytes()}
                for i, code in zip(ids[start:stop], codes[start:stop], strict=True)
            ]
            call(self._name, rows, timeout=self._timeout)
            report(stop)

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


def _check_uri(uri) -> tuple[str, bool]:
    """``(uri, is_lite)``; a ``.db`` path is checked against Milvus Lite's rules."""
    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str):
        raise TypeError(f"uri must be a str or path, got {uri!r}")
    if uri.startswith(_SERVER_SCHEMES):
        return uri, False
    if not uri.endswith(".db"):
        raise ValueError(
            "uri must be a local file ending in .db (Milvus Lite) or a server "
            f"address such as http://localhost:19530, got {uri!r}"
        )
    path = pathlib.Path(uri).expanduser().absolute()
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"folder of the Milvus Lite file {uri!r} does not exist"
        )
    if not _LITE_FILE.match(path.name):
        raise ValueError(
            f"Milvus Lite file names hold at most 36 letters, digits and .-_, "
            f"got {path.name!r}"
        )
    return str(path), True


def _positive_int(value, name: str, most: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1 or (most is not None and value > most):
        bound = f" and at most {most}" if most is not None else ""
        raise ValueError(f"{name} must be at least 1{bound}, got {value}")
    return int(value)


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
        values, counts = np.unique(ids, return_counts=True)
        if np.any(counts > 1):
            raise ValueError(f"ids must be unique; repeated: {values[counts > 1][:10]}")
    return ids


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


def _sorted(dist, ids):
    order = np.lexsort((ids, dist))
    return dist[order], ids[order]


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
