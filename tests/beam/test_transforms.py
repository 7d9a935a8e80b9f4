"""keras_hash.beam.transforms: the Beam classes on their own."""

import importlib
import sys
import types

import numpy as np
import pytest

from keras_hash.beam import transforms
from tests.beam.helpers import BITS


@pytest.mark.numpy_only
def test_missing_beam_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "apache_beam", None)
    monkeypatch.delitem(sys.modules, "keras_hash.beam.transforms")
    with pytest.raises(ImportError, match=r"pip install keras-hash\[beam\]"):
        importlib.import_module("keras_hash.beam.transforms")


@pytest.mark.numpy_only
def test_milvus_writer_batches_rows(monkeypatch):
    """The Milvus DoFn, with a recording stand-in for keras_hash.index.milvus."""
    calls = []

    class FakeIndex:
        def __init__(self, uri, collection, bits):
            calls.append(("init", uri, collection, bits))

        def upsert(self, codes, ids):
            calls.append(("upsert", codes.copy(), ids.copy()))

    fake = types.ModuleType("keras_hash.index.milvus")
    fake.MilvusHammingIndex = FakeIndex
    monkeypatch.setitem(sys.modules, "keras_hash.index.milvus", fake)
    sink = transforms.WriteToMilvus("x.db", "c", BITS, batch_size=4)
    fn = sink._fn
    fn.setup()
    rows = [(i * 10, np.full(BITS // 8, i, np.uint8)) for i in range(10)]
    fn.start_bundle()
    for row in rows:
        fn.process(row)
    fn.finish_bundle()
    assert calls[0] == ("init", "x.db", "c", BITS)
    sizes = [len(call[2]) for call in calls[1:]]
    assert sizes == [4, 4, 2] and {call[0] for call in calls[1:]} == {"upsert"}
    ids = np.concatenate([call[2] for call in calls[1:]])
    codes = np.concatenate([call[1] for call in calls[1:]])
    assert ids.tolist() == [i * 10 for i in range(10)]
    np.testing.assert_array_equal(codes[:, 0], np.arange(10))
