"""Reaching a Milvus collection of binary codes: the uri, the client, the schema.

:class:`~keras_hash.index.MilvusHammingIndex` opens its collection here: a
``uri`` ending in ``.db`` is a Milvus Lite file (checked against Milvus
Lite's file-name rule; a path that exists must be a regular file), anything
with a server scheme is a server. An existing collection is adopted only if
its schema is exactly an INT64 primary key (no ``auto_id``) and one
``BINARY_VECTOR`` of the asked dimension, indexed ``BIN_FLAT`` or
``BIN_IVF_FLAT`` for the ``HAMMING`` metric; a missing one is created so.

Example:

```python
uri, lite = check_uri("./codes.db")
client = connect(pymilvus, uri, lite, token="", db_name="", timeout=10.0)
found = open_or_create(pymilvus, client, "codes", 64, uri, lite, None, 1024, 10.0)
found.id_field, found.code_field, found.index_type, found.nlist
```
"""

from __future__ import annotations

import os
import pathlib
import re
import stat
from typing import NamedTuple

from keras_hash.index.base import MAX_ID, MILVUS_HINT

INDEX_TYPES = ("BIN_FLAT", "BIN_IVF_FLAT")
_SERVER_SCHEMES = ("http://", "https://", "tcp://", "unix:")
# Milvus Lite's own rule for a database file name.
_LITE_FILE = re.compile(r"^[A-Za-z0-9.\-_]{1,36}$")


class Found(NamedTuple):
    """What an opened collection is: its field names and index."""

    id_field: str
    code_field: str
    index_type: str
    nlist: int | None  # lists of a BIN_IVF_FLAT index


def check_uri(uri) -> tuple[str, bool]:
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
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        raise ValueError(
            f"{uri!r} exists and is not a regular file (a directory, FIFO or "
            "device): Milvus Lite needs a .db file or a new path"
        )
    return str(path), True


def connect(milvus, uri: str, lite: bool, token: str, db_name: str, timeout: float):
    """A ``MilvusClient``, or ``ConnectionError`` naming the uri."""
    if lite:
        try:
            import milvus_lite  # noqa: F401
        except ImportError as e:
            raise ImportError(
                f"a local .db uri needs Milvus Lite: {MILVUS_HINT} "
                "(or give a server uri such as http://localhost:19530)"
            ) from e
    try:
        return milvus.MilvusClient(uri, token=token, db_name=db_name, timeout=timeout)
    except milvus.MilvusException as e:
        if lite:
            raise ConnectionError(
                f"Milvus Lite could not open {uri!r} ({e.message}); a .db file is "
                "served by one process at a time: is it open in another process?"
            ) from e
        raise ConnectionError(
            f"cannot reach a Milvus server at {uri!r} within {timeout:g} s: {e.message}"
        ) from e


def open_or_create(
    milvus, client, name, bits, uri, lite, index_type, nlist, timeout
) -> Found:
    """Adopts collection ``name`` after checking it, or creates it."""
    if client.has_collection(name, timeout=timeout):
        return _open_existing(milvus, client, name, bits, uri, index_type, timeout)
    index_type = index_type or "BIN_FLAT"
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", milvus.DataType.INT64, is_primary=True)
    schema.add_field("code", milvus.DataType.BINARY_VECTOR, dim=bits)
    client.create_collection(
        name, schema=schema, consistency_level="Strong", timeout=timeout
    )
    ivf = index_type == "BIN_IVF_FLAT"
    params = client.prepare_index_params()
    params.add_index(
        field_name="code",
        index_type=index_type,
        metric_type="HAMMING",
        params={"nlist": nlist} if ivf else {},
    )
    try:
        client.create_index(name, params, timeout=timeout)
    except milvus.MilvusException as e:
        client.drop_collection(name, timeout=timeout)
        only = " (Milvus Lite serves BIN_FLAT only)" if lite else ""
        raise ValueError(
            f"Milvus refused a {index_type} HAMMING index on {uri!r}{only}: {e.message}"
        ) from e
    return Found("id", "code", index_type, nlist if ivf else None)


def _open_existing(milvus, client, name, bits, uri, index_type, timeout) -> Found:
    """Checks an existing collection's schema and index."""
    where = f"collection {name!r} at {uri!r}"
    desc = client.describe_collection(name, timeout=timeout)
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
    if dim != bits:
        raise ValueError(
            f"{where} holds {dim}-bit codes (BINARY_VECTOR dim {dim}), this "
            f"index was asked for bits={bits}"
        )
    described = None
    for index_name in client.list_indexes(name, timeout=timeout):
        info = client.describe_index(name, index_name, timeout=timeout)
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
    nlist = described.get("nlist", described.get("params", {}).get("nlist"))
    nlist = int(nlist) if kind == "BIN_IVF_FLAT" and nlist is not None else None
    return Found(primary[0]["name"], vector["name"], kind, nlist)


def server_max_id(client, timeout: float) -> int:
    """Largest id this server can find again: ``2**63 - 2`` before 2.5.

    Milvus 2.3's queries never return the row whose primary key is
    ``2**63 - 1`` (measured on 2.3.5: ``id in [...]``, ``id >= 0`` and
    ``id != 0`` all miss it, and a search asked for its vector fails with
    "incomplete query result, missing id 9223372036854775807"), so ``add``
    could not see it taken, nor ``delete`` or ``get`` find it. Refused on
    servers older than 2.5 (2.4 untested); Milvus Lite 2.5.1 finds it.
    """
    try:
        version = str(client.get_server_version(timeout=timeout))
    except Exception:  # a server without the call: assume a recent one
        return MAX_ID
    found = re.search(r"(\d+)\.(\d+)", version)
    old = found is not None and (int(found[1]), int(found[2])) < (2, 5)
    return MAX_ID - 1 if old else MAX_ID
