"""RetrievalEvaluator.score_search / score_range_search against brute force.

The reference (``expected_search``, ``expected_range``) applies the
definitions of keras_hash.metrics.lookups with loops, on distances from
tests/reference.py, to the very rows the index returned: mAP@k of the
returned lists, tie-aware recall (nearer than the exact k-th distance t,
plus at most the exact top k's places at t) and recall by id (the exact top
k, ties by id).
"""

import numpy as np
import pytest

import keras_hash
from keras_hash import HammingIndex
from tests import reference

pytestmark = pytest.mark.numpy_only


def clustered(n, bits, centres, rate, seed):
    """Tie-heavy codes: random centres with each bit flipped at ``rate``."""
    rng = np.random.default_rng(seed)
    middle = rng.integers(0, 2, size=(centres, bits), dtype=np.uint8)
    pick = rng.integers(0, centres, n)
    raw = middle[pick]
    return np.packbits(raw ^ (rng.random(raw.shape) < rate), axis=1), pick


def problem(seed=0, n=1500, nq=40, bits=32, centres=12):
    codes, labels = clustered(n + nq, bits, centres, 0.15, seed)
    labels = labels % 5  # classes shared by several centres
    ids = np.random.default_rng(seed).permutation(10 * n)[:n] * 3 - 7000
    return {
        "query_codes": codes[:nq],
        "query_labels": labels[:nq],
        "database_codes": codes[nq:],
        "database_labels": labels[nq:],
        "database_ids": ids.astype(np.int64),
        "bits": bits,
    }


def ap(relevant):
    hits, total = 0, 0.0
    for position, r in enumerate(relevant, start=1):
        if r:
            hits += 1
            total += hits / position
    return total / hits if hits else 0.0


def expected_search(data, distances, ids, k):
    """(map, tie-aware recall, recall by id) of a search result, by loops."""
    label_of = dict(zip(data["database_ids"], data["database_labels"], strict=True))
    code_of = dict(zip(data["database_ids"], data["database_codes"], strict=True))
    exact_d, exact_i = reference.knn(
        data["database_codes"], data["database_ids"], data["query_codes"], k
    )
    aps, tie_aware, by_id = [], [], []
    for q, query in enumerate(data["query_codes"]):
        got = [(int(d), int(i)) for d, i in zip(distances[q], ids[q], strict=True)]
        got = [(d, i) for d, i in got if d <= data["bits"]]  # padding
        for d, i in got:  # true distances, from the reference
            assert d == reference.hamming(query[None], code_of[i][None])[0, 0]
        aps.append(ap([label_of[i] == data["query_labels"][q] for _, i in got]))
        t = exact_d[q, -1]
        places_at_t = int(np.sum(exact_d[q] == t))
        nearer = sum(d < t for d, _ in got)
        at_t = sum(d == t for d, _ in got)
        tie_aware.append((nearer + min(at_t, places_at_t)) / k)
        by_id.append(len({i for _, i in got} & set(exact_i[q].tolist())) / k)
    return np.mean(aps), np.mean(tie_aware), np.mean(by_id)


def expected_range(data, result, radius):
    """(precision, recall, empty fraction, completeness) of a range result."""
    label_of = dict(zip(data["database_ids"], data["database_labels"], strict=True))
    lims, _, exact_ids = reference.range_search(
        data["database_codes"], data["database_ids"], data["query_codes"], radius
    )
    precision, recall, empty, complete = [], [], [], []
    for q, (_, found) in enumerate(result):
        label = data["query_labels"][q]
        hits = sum(label_of[int(i)] == label for i in found)
        relevant = int(np.sum(data["database_labels"] == label))
        ball = set(exact_ids[lims[q] : lims[q + 1]].tolist())
        assert set(found.tolist()) <= ball
        precision.append(hits / len(found) if len(found) else 0.0)
        recall.append(hits / relevant if relevant else 0.0)
        empty.append(len(found) == 0)
        complete.append(len(found) / len(ball) if ball else 1.0)
    return np.mean(precision), np.mean(recall), np.mean(empty), np.mean(complete)


def evaluator(data, index):
    return keras_hash.RetrievalEvaluator(**data, database=index)


def check_search(data, index, k):
    score = evaluator(data, index).score_search(k)
    distances, ids = index.search(data["query_codes"], k)
    want = expected_search(data, distances, ids, k)
    assert score.k == k
    assert score.map == pytest.approx(want[0], abs=1e-12)
    assert score.recall == pytest.approx(want[1], abs=1e-12)
    assert score.recall_by_id == pytest.approx(want[2], abs=1e-12)
    assert score.queries_per_second > 0
    return score


def check_range(data, index, radius):
    score = evaluator(data, index).score_range_search(radius)
    want = expected_range(data, index.range_search(data["query_codes"], radius), radius)
    got = (score.precision, score.recall, score.empty_fraction, score.completeness)
    np.testing.assert_allclose(got, want, atol=1e-12)
    return score


@pytest.fixture(scope="module")
def data():
    return problem()


@pytest.fixture(scope="module")
def exact(data):
    index = HammingIndex(data["bits"], backend="numpy")
    order = np.random.default_rng(1).permutation(len(data["database_ids"]))
    index.add(data["database_codes"][order], ids=data["database_ids"][order])
    return index


class TestExactIndex:
    @pytest.mark.parametrize("k", [1, 10, 100])
    def test_search_is_complete_and_equals_whole_database_map(self, data, exact, k):
        score = check_search(data, exact, k)
        assert score.recall == 1.0 and score.recall_by_id == 1.0
        assert score.missing_fraction == 0.0
        # exact search, ties by id = the whole-database ranking, ties by id
        whole = evaluator(data, exact).map(top_k=k)
        assert score.map == pytest.approx(whole, abs=1e-12)

    @pytest.mark.parametrize("radius", [0, 2, 5])
    def test_range_search_equals_precision_at_radius(self, data, exact, radius):
        score = check_range(data, exact, radius)
        assert score.completeness == 1.0
        whole = evaluator(data, exact).precision_at_radius(radius)
        assert score.precision == pytest.approx(whole.precision, abs=1e-12)
        assert score.recall == pytest.approx(whole.recall, abs=1e-12)
        assert score.empty_fraction == pytest.approx(whole.empty_fraction, abs=1e-12)

    def test_codes_read_from_the_exact_index(self, data, exact):
        arrays = dict(data)
        arrays.pop("database_codes")
        score = keras_hash.RetrievalEvaluator(**arrays, database=exact).score_search(10)
        assert score.recall == 1.0


class TestIVFIndex:
    faiss = pytest.importorskip("faiss")

    @pytest.fixture(scope="class")
    def ivf(self, data):
        from keras_hash.index import IVFHammingIndex

        index = IVFHammingIndex(bits=data["bits"], nlist=16, nprobe=2, seed=0)
        index.train(data["database_codes"])
        index.add(data["database_codes"], ids=data["database_ids"])
        return index

    @pytest.mark.parametrize("k", [10, 100])
    def test_partial_probing_against_brute_force(self, data, ivf, k):
        ivf.nprobe = 1
        score = check_search(data, ivf, k)
        assert score.recall_by_id <= score.recall < 1.0  # something was lost
        check_range(data, ivf, 3)

    @pytest.mark.parametrize("k", [10, 100])
    def test_full_probing_is_exact(self, data, ivf, k):
        ivf.nprobe = 16
        score = check_search(data, ivf, k)
        assert score.recall == 1.0 and score.recall_by_id == 1.0
        assert check_range(data, ivf, 3).completeness == 1.0


class TestRecallDefinitions:
    """Hand-made lookups through a stub index (the contract's shape only)."""

    class Stub:
        def __init__(self, bits, distances, ids):
            self.bits, self.ntotal = bits, 4
            self.result = np.array(distances), np.array(ids)

        def search(self, queries, k):
            return self.result

        def range_search(self, queries, radius):
            raise NotImplementedError

    def score(self, distances, ids, k=2):
        # query 0x00; database ids 10..13 at distances 0, 1, 1, 1 (bits 8)
        stub = self.Stub(8, distances, ids)
        ev = keras_hash.RetrievalEvaluator(
            query_codes=np.array([[0]], np.uint8),
            query_labels=np.array([0]),
            database_codes=np.array([[0], [0x80], [0x40], [0x20]], np.uint8),
            database_labels=np.array([0, 1, 0, 0]),
            database_ids=np.array([10, 11, 12, 13]),
            database=stub,
            bits=8,
            assume_packed=True,
        )
        return ev.score_search(k)

    def test_another_item_at_the_kth_distance_loses_nothing(self):
        # exact top 2, ties by id: 10 (d 0), 11 (d 1); 13 is also at d 1
        score = self.score([[0, 1]], [[10, 13]])
        assert (score.recall, score.recall_by_id) == (1.0, 0.5)
        assert score.map == 1.0  # 10 and 13 are both class 0

    def test_a_farther_or_missing_item_is_lost(self):
        score = self.score([[1, 9]], [[11, -(2**63)]])  # padded second slot
        assert (score.recall, score.recall_by_id, score.missing_fraction) == (
            0.5,
            0.5,
            0.5,
        )

    def test_wrong_distance_or_unknown_id_is_refused(self):
        with pytest.raises(ValueError, match="reported distance 0 for id 11"):
            self.score([[0, 0]], [[10, 11]])
        with pytest.raises(ValueError, match="returned id 99, which is not"):
            self.score([[0, 1]], [[10, 99]])
        with pytest.raises(ValueError, match="an id twice"):
            self.score([[0, 0]], [[10, 10]])

    def test_k_beyond_the_database_is_refused(self):
        with pytest.raises(ValueError, match="k=5 exceeds the database size 4"):
            self.score([[0, 1]], [[10, 11]], k=5)

    def test_scoring_lookups_needs_an_index(self, data):
        ev = keras_hash.RetrievalEvaluator(**data)
        with pytest.raises(ValueError, match="pass database=<index>"):
            ev.score_search(5)

    def test_an_index_without_codes_needs_database_codes(self, data):
        stub = self.Stub(data["bits"], [], [])
        arrays = dict(data)
        arrays.pop("database_codes")
        with pytest.raises(ValueError, match="Stub does not hand its codes back"):
            keras_hash.RetrievalEvaluator(**arrays, database=stub)
