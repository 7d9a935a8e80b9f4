"""Random sequences of index operations against a brute-force model (stateful).

Hypothesis drives each index kind through adds (given, default, repeated
and taken ids), resets or deletes, upserts, save/load round trips and
searches; after every step the index answers exactly as
:mod:`tests.reference` does over a plain ``{id: code}`` model, and refused
operations leave it unchanged. Bounded: derandomized, few short sequences.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import keras_hash
from tests import reference

pytestmark = pytest.mark.numpy_only  # no Keras session to reset

BITS = 8  # one byte: every distance ties many times
codes_of = st.lists(st.integers(0, 255), min_size=0, max_size=6).map(
    lambda values: np.array(values, np.uint8).reshape(-1, 1)
)
small_ids = st.integers(-4, 12)  # a narrow range: repeats and clashes happen
SETTINGS = settings(
    max_examples=12,
    stateful_step_count=10,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class IndexMachine(RuleBasedStateMachine):
    """The model is a dict id -> code; subclasses make the index."""

    defaults_ids = True  # add() without ids takes max(ids) + 1 onwards

    def make(self):
        raise NotImplementedError

    @initialize()
    def start(self):
        self.index = self.make()
        self.model = {}

    def _arrays(self):
        ids = np.array(sorted(self.model), np.int64)
        codes = np.array([self.model[i] for i in ids], np.uint8).reshape(-1, 1)
        return codes, ids

    @rule(codes=codes_of, data=st.data())
    def add(self, codes, data):
        n = len(codes)
        given = data.draw(st.booleans()) or not self.defaults_ids
        ids = data.draw(st.lists(small_ids, min_size=n, max_size=n)) if given else None
        if ids is None:
            start = max(self.model) + 1 if self.model else 0
            ids = list(range(start, start + n))
            self.index.add(codes, None)
        elif len(set(ids)) < n or set(ids) & set(self.model):
            with pytest.raises(ValueError, match="unique|already in collection"):
                self.index.add(codes, ids)
            return
        else:
            self.index.add(codes, ids)
        self.model.update(zip(ids, codes[:, 0].tolist(), strict=True))

    @rule(queries=codes_of, k=st.integers(0, 8))
    def search(self, queries, k):
        codes, ids = self._arrays()
        if not self.model:
            with pytest.raises(ValueError, match="empty"):
                self.index.search(queries, max(k, 1))
        elif not 1 <= k <= len(ids):
            with pytest.raises(ValueError, match="k must be between"):
                self.index.search(queries, k)
        else:
            got = self.index.search(queries, k)
            reference.assert_knn_equal(got, codes, ids, queries, k)

    @rule(queries=codes_of, radius=st.integers(0, BITS + 2))
    def range_search(self, queries, radius):
        if not self.model:
            return
        codes, ids = self._arrays()
        got = self.index.range_search(queries, radius)
        reference.assert_range_equal(got, codes, ids, queries, radius)

    @invariant()
    def same_size(self):
        if hasattr(self, "index"):
            assert self.index.ntotal == len(self.model)


class InMemoryMachine(IndexMachine):
    @rule()
    def reset(self):
        self.index.reset()
        self.model.clear()

    @rule()
    def save_and_load(self):
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            path = f"{folder}/index.khi"
            self.index.save(path)
            loaded = keras_hash.index.load(path)
        assert type(loaded) is type(self.index)
        self.index = loaded


class NumpyMachine(InMemoryMachine):
    def make(self):
        return keras_hash.HammingIndex(BITS, backend="numpy")


class FaissMachine(InMemoryMachine):
    def make(self):
        return keras_hash.HammingIndex(BITS, backend="faiss")


class IVFMachine(InMemoryMachine):
    def make(self):
        index = keras_hash.index.IVFHammingIndex(BITS, nlist=4, nprobe=4)
        index.train(np.arange(0, 256, 8, dtype=np.uint8).reshape(-1, 1))
        return index


class MilvusMachine(IndexMachine):
    """Milvus Lite: ids always given; delete and upsert instead of reset."""

    defaults_ids = False
    uri = None
    count = 0

    def make(self):
        MilvusMachine.count += 1
        return keras_hash.index.MilvusHammingIndex(
            BITS, self.uri, collection=f"stateful_{MilvusMachine.count}"
        )

    @rule(ids=st.lists(small_ids, max_size=4))
    def delete(self, ids):
        removed = self.index.delete(ids)
        assert removed == len(set(ids) & set(self.model))
        for i in ids:
            self.model.pop(i, None)

    @rule(codes=codes_of, data=st.data())
    def upsert(self, codes, data):
        n = len(codes)
        ids = data.draw(st.lists(small_ids, min_size=n, max_size=n, unique=True))
        self.index.upsert(codes, ids)
        self.model.update(zip(ids, codes[:, 0].tolist(), strict=True))

    def teardown(self):
        if hasattr(self, "index"):
            self.index.drop()
            self.index.close()


def _run(machine):
    state = machine.TestCase
    state.settings = SETTINGS
    state().runTest()


def test_numpy_hamming_index():
    _run(NumpyMachine)


def test_faiss_hamming_index():
    pytest.importorskip("faiss")
    _run(FaissMachine)


def test_ivf_index_probing_every_list():
    pytest.importorskip("faiss")
    _run(IVFMachine)


def test_milvus_lite_collection(tmp_path):
    pytest.importorskip("milvus_lite")
    MilvusMachine.uri = str(tmp_path / "stateful.db")
    _run(MilvusMachine)
