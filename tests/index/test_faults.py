"""Indexes under faults and misuse (issue 30, class 5): refused at once, by name.

- training an IVF index on no codes, ``nprobe`` outside ``[1, nlist]``;
- loading what is not a regular file (a FIFO must not hang the reader);
- a Milvus handle after a failed write refuses calls instead of reporting
  rows of the failed insert; two writer threads of one process cannot store
  an id twice;
- booleans and non-integral floats for sizes and counts: ``TypeError``.
"""

import os
import threading
import time

import numpy as np
import pytest

import keras_hash
from keras_hash.index import HammingIndex, RangeResult

pytestmark = pytest.mark.numpy_only  # no Keras session to reset


def _codes(n, bits=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, bits // 8), dtype=np.uint8)


# ---------------------------------------------------------------------------
# IVF


@pytest.fixture
def ivf_class():
    pytest.importorskip("faiss")
    return keras_hash.index.IVFHammingIndex


def test_ivf_train_on_no_codes(ivf_class):
    for nlist in (None, 4):
        index = ivf_class(16, nlist=nlist)
        with pytest.raises(ValueError, match="0 rows"):
            index.train(np.zeros((0, 2), np.uint8))
        assert not index.is_trained


def test_ivf_nprobe_beyond_the_nlist_train_picks(ivf_class):
    index = ivf_class(16, nprobe=100)  # nlist picked by train: 4 for 20 codes
    with pytest.raises(ValueError, match="nprobe=100 exceeds nlist=4"):
        index.train(_codes(20))
    assert not index.is_trained
    default = ivf_class(16)  # the default nprobe (16) follows a small nlist
    default.train(_codes(20))
    assert (default.nlist, default.nprobe) == (4, 4)


def test_ivf_nprobe_outside_one_to_nlist(ivf_class):
    with pytest.raises(ValueError, match="at most nlist=4"):
        ivf_class(16, nlist=4, nprobe=5)
    index = ivf_class(16, nlist=4, nprobe=2)
    index.train(_codes(20))
    for bad in (0, -1, 5):
        with pytest.raises(ValueError, match="nprobe"):
            index.nprobe = bad
    assert index.nprobe == 2


# ---------------------------------------------------------------------------
# files that are not regular files


def _unblock_later(fifo, seconds=5.0):
    """Feeds a reader stuck on ``fifo`` (the bug) so that the test ends."""

    def feed():
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no reader yet (ENXIO)
                time.sleep(0.1)
                continue
            os.write(fd, b"junk")
            os.close(fd)
            return

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


def _load_ivf(path):
    pytest.importorskip("faiss")
    return keras_hash.index.IVFHammingIndex.load(path)


@pytest.mark.parametrize(
    "load",
    [HammingIndex.load, keras_hash.index.load, _load_ivf],
    ids=["exact", "any", "ivf"],
)
def test_loading_a_fifo_fails_at_once(tmp_path, load):
    fifo = tmp_path / "index.khi"
    os.mkfifo(fifo)
    _unblock_later(fifo)
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"index\.khi' is a FIFO"):
        load(fifo)
    assert time.monotonic() - start < 2


@pytest.mark.parametrize("what", ["directory", "device"])
def test_loading_a_directory_or_device_names_it(tmp_path, what):
    path = tmp_path / "index.khi"
    if what == "directory":
        path.mkdir()
    else:
        path = "/dev/null"
    for load in (HammingIndex.load, keras_hash.index.load):
        with pytest.raises(ValueError, match=f"is a {what}"):
            load(path)


# ---------------------------------------------------------------------------
# Milvus


@pytest.fixture
def lite(tmp_path):
    pytest.importorskip("milvus_lite")
    return str(tmp_path / "faults.db")


def test_milvus_lite_uri_that_is_a_directory(tmp_path):
    pytest.importorskip("pymilvus")
    (tmp_path / "codes.db").mkdir()
    with pytest.raises(ValueError, match="not a regular file"):
        keras_hash.index.MilvusHammingIndex(16, str(tmp_path / "codes.db"))


def test_failed_insert_is_never_reported_as_rows(lite, monkeypatch):
    index = keras_hash.index.MilvusHammingIndex(16, lite, collection="failing")
    insert, calls = index._client.insert, []

    def lost_acknowledgement(*args, **kwargs):
        calls.append(len(args[1]))
        insert(*args, **kwargs)  # the server stores the batch ...
        if len(calls) == 2:
            raise TimeoutError("deadline exceeded")  # ... the reply is lost

    monkeypatch.setattr(index._client, "insert", lost_acknowledgement)
    with pytest.raises(
        keras_hash.index.MilvusWriteError,
        match=r"rows 0\.\.9 acknowledged, rows 10\.\.19 unknown, rows 20\.\.29 not",
    ):
        index.add(_codes(30), np.arange(30), batch_size=10)
    assert calls == [10, 10]
    for call in (
        lambda: index.ntotal,
        lambda: index.search(_codes(1), 1),
        lambda: index.range_search(_codes(1), 1),
        lambda: index.add(_codes(1), [99]),
        lambda: index.get([0]),
        lambda: index.delete([0]),
    ):
        with pytest.raises(ValueError, match="refuses further calls after a failed"):
            call()
    assert "failed" in repr(index)
    index.close()
    again = keras_hash.index.MilvusHammingIndex(16, lite, collection="failing")
    assert again.ntotal == 20  # what the server holds, seen only after reopening
    again.close()


def test_two_writer_threads_cannot_store_an_id_twice(lite, monkeypatch):
    first = keras_hash.index.MilvusHammingIndex(16, lite, collection="shared")
    second = keras_hash.index.MilvusHammingIndex(16, lite, collection="shared")
    # Both writers check the ids before either inserts (the race), unless the
    # second one is kept out until the first has written.
    barrier = threading.Barrier(2)
    existing = keras_hash.index.MilvusHammingIndex._existing

    def checked_together(self, ids):
        try:
            barrier.wait(timeout=2)
        except threading.BrokenBarrierError:
            pass
        return existing(self, ids)

    monkeypatch.setattr(
        keras_hash.index.MilvusHammingIndex, "_existing", checked_together
    )
    errors = []

    def write(index):
        try:
            index.add(_codes(50), np.arange(50))
        except ValueError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=write, args=(i,)) for i in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 1 and "already in collection" in errors[0]
    assert first.ntotal == second.ntotal == 50
    first.close()
    second.close()


# ---------------------------------------------------------------------------
# booleans and non-integral floats for sizes and counts


@pytest.mark.parametrize("bad", [True, 2.0, 2.5, np.float64(3)])
def test_sizes_and_counts_refuse_bools_and_floats(bad, tmp_path):
    pytest.importorskip("faiss")
    ivf = keras_hash.index.IVFHammingIndex
    for kwargs in (
        {"nlist": bad},
        {"nprobe": bad},
        {"niter": bad},
        {"max_train_per_list": bad},
        {"seed": bad},
    ):
        with pytest.raises(TypeError, match=next(iter(kwargs))):
            ivf(16, **kwargs)
    index = ivf(16, nlist=2, nprobe=1)
    with pytest.raises(TypeError, match="nprobe"):
        index.nprobe = bad
    exact = HammingIndex(16, backend="numpy")
    exact.add(_codes(3))
    with pytest.raises(TypeError, match="k must be an int"):
        exact.search(_codes(1), bad)
    with pytest.raises(TypeError, match="radius must be an int"):
        exact.range_search(_codes(1), bad)
    result = RangeResult(np.zeros(2, np.int64), np.zeros(0, np.int32), np.zeros(0))
    with pytest.raises(TypeError, match="query index"):
        result[bad]


@pytest.mark.parametrize("bad", [True, 2.5])
def test_milvus_sizes_refuse_bools_and_floats(bad, lite):
    milvus = keras_hash.index.MilvusHammingIndex
    for kwargs in ({"nlist": bad}, {"nprobe": bad}):
        with pytest.raises(TypeError, match=next(iter(kwargs))):
            milvus(16, lite, **kwargs)
    with pytest.raises(TypeError, match="timeout"):
        milvus(16, lite, timeout=True)
    index = milvus(16, lite, collection="sizes")
    with pytest.raises(TypeError, match="batch_size"):
        index.add(_codes(2), [1, 2], batch_size=bad)
    with pytest.raises(TypeError, match="nprobe"):
        index.nprobe = bad
    with pytest.raises(TypeError, match="timeout"):
        index.wait_for_index(timeout=True)
    assert index.ntotal == 0
    index.close()
