"""Hamming indexes over packed binary codes: one search contract, several kinds.

Every kind answers ``search(queries, k)`` and ``range_search(queries,
radius)`` the same way: by Hamming distance ascending, ties broken by id
ascending, rows short of ``k`` padded with :data:`PAD_ID` at distance
``bits + 1``.

- :class:`HammingIndex` (:mod:`~keras_hash.index.exact`): exact, in memory,
  numpy or FAISS (``pip install keras-hash[faiss]``);
- :class:`IVFHammingIndex` (:mod:`~keras_hash.index.ivf`): approximate, in
  memory, FAISS inverted lists;
- :class:`MilvusHammingIndex` (:mod:`~keras_hash.index.milvus`): a Milvus
  collection (``pip install keras-hash[milvus]``; ``pymilvus`` is imported
  when an index is made);
- :mod:`~keras_hash.index.file`: the checked file format of the in-memory
  kinds, and :func:`load`, which opens either kind's file by its header;
- :mod:`~keras_hash.index.base`: the contract (:class:`BinaryIndex`), its
  finishing step, the id policy and the argument checks.

Example:

```python
import keras_hash

index = keras_hash.index.load("codes.khi")   # a HammingIndex or IVFHammingIndex
distances, ids = index.search(queries, k=10)
```
"""

from keras_hash.index.base import MAX_ID, MIN_ID, PAD_ID, BinaryIndex, RangeResult
from keras_hash.index.exact import HammingIndex
from keras_hash.index.file import load
from keras_hash.index.ivf import IVFHammingIndex
from keras_hash.index.milvus import MilvusHammingIndex, MilvusWriteError

__all__ = [
    "MAX_ID",
    "MIN_ID",
    "PAD_ID",
    "BinaryIndex",
    "HammingIndex",
    "IVFHammingIndex",
    "MilvusHammingIndex",
    "MilvusWriteError",
    "RangeResult",
    "load",
]
