"""Tests for keras_hash.metrics (evaluator, functions, ranking) against brute force."""

import itertools

import numpy as np
import pytest

from keras_hash import metrics as evaluation
from keras_hash.metrics import evaluator as evaluator_module
from tests import reference

pytestmark = pytest.mark.numpy_only  # no Keras session to reset


# ---------------------------------------------------------------------------
# reference: tests/reference.py distances, a stable argsort and a loop per query


def _ref_relevance(query_labels, database_labels):
    if query_labels.ndim == 1:
        return query_labels[:, None] == database_labels[None, :]
    return (query_labels.astype(float) @ database_labels.astype(float).T) > 0


def _ref_ap(ranked_relevance, top_k):
    rel = ranked_relevance[:top_k]
    hits, total = 0, 0.0
    for position, r in enumerate(rel, start=1):
        if r:
            hits += 1
            total += hits / position
    return (total / hits if hits else 0.0), hits > 0


def _ref_rankings(
    query_codes, query_labels, database_codes, database_labels, order=None, **_
):
    """Per query: relevance in ranked order, ties broken by `order` rank."""
    dist = reference.hamming(query_codes, database_codes)
    rel = _ref_relevance(query_labels, database_labels)
    tie_order = np.arange(dist.shape[1]) if order is None else np.asarray(order)
    out = []
    for i in range(len(dist)):
        ranked = tie_order[np.argsort(dist[i][tie_order], kind="stable")]
        out.append((rel[i][ranked], dist[i][ranked]))
    return out


def _ref_map(data, top_k=None, empty="zero", order=None):
    aps = []
    for ranked_rel, _ in _ref_rankings(**data, order=order):
        ap, has = _ref_ap(ranked_rel, top_k or len(ranked_rel))
        if has or empty == "zero":
            aps.append(ap)
    return float(np.mean(aps)) if aps else 0.0


def _random_problem(seed, nq=30, n=400, bits=8, classes=5, multi_hot=False):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, size=(nq + n, bits // 8), dtype=np.uint8)
    if multi_hot:
        labels = (rng.random((nq + n, classes)) < 0.25).astype(np.int32)
    else:
        labels = rng.integers(0, classes, size=nq + n)
        labels[:3] = classes + 10  # queries with no relevant item
    return {
        "query_codes": codes[:nq],
        "query_labels": labels[:nq],
        "database_codes": codes[nq:],
        "database_labels": labels[nq:],
        "bits": bits,
    }


def _pad_4_bits(rows):
    """'111-' strings -> packed 8-bit codes, the 4 extra bits all +1."""
    bits = [[1 if c == "1" else 0 for c in row] + [1, 1, 1, 1] for row in rows]
    return np.packbits(np.array(bits, np.uint8), axis=1)


@pytest.fixture
def worked_example():
    return {
        "query_codes": _pad_4_bits(["1111", "111-", "11--"]),
        "query_labels": np.array([0, 2, 3]),
        "database_codes": _pad_4_bits(["1111", "111-", "111-", "--11", "----", "1---"]),
        "database_labels": np.array([0, 1, 0, 2, 1, 2]),
        "bits": 8,
    }


# ---------------------------------------------------------------------------
# mean average precision


class TestWorkedExample:
    def test_ap_of_first_query(self, worked_example):
        ap, has = evaluation.average_precisions(**worked_example, top_k=3)
        assert ap[0] == pytest.approx(0.8333, abs=1e-4)
        assert ap[0] == pytest.approx(5 / 6)
        np.testing.assert_array_equal(has, [True, False, False])

    def test_map_skip(self, worked_example):
        got = evaluation.mean_average_precision(**worked_example, top_k=3, empty="skip")
        assert got == pytest.approx(0.8333, abs=1e-4)

    def test_map_zero(self, worked_example):
        got = evaluation.mean_average_precision(**worked_example, top_k=3)
        assert got == pytest.approx(0.2778, abs=1e-4)


class TestIndexTies:
    @pytest.mark.parametrize("bits", [8, 16, 64])
    @pytest.mark.parametrize("top_k", [None, 1, 25, 399, 400, 10_000])
    @pytest.mark.parametrize("empty", ["zero", "skip"])
    def test_single_label(self, bits, top_k, empty):
        data = _random_problem(bits, bits=bits)
        got = evaluation.mean_average_precision(**data, top_k=top_k, empty=empty)
        assert got == pytest.approx(_ref_map(data, top_k, empty), abs=1e-12)

    @pytest.mark.parametrize("top_k", [None, 40])
    def test_multi_hot(self, top_k):
        data = _random_problem(3, bits=16, multi_hot=True, classes=70)
        got = evaluation.mean_average_precision(**data, top_k=top_k)
        assert got == pytest.approx(_ref_map(data, top_k), abs=1e-12)

    def test_many_chunks(self, monkeypatch):
        monkeypatch.setattr(evaluator_module, "_CHUNK_PAIRS", 1000)
        data = _random_problem(4, nq=23, n=300)
        for top_k in (None, 50):
            got = evaluation.mean_average_precision(**data, top_k=top_k)
            assert got == pytest.approx(_ref_map(data, top_k), abs=1e-12)

    def test_tie_order_matters(self):
        # Everything tied: index order decides, relevant item last or first.
        data = {
            "query_codes": np.zeros((1, 1), np.uint8),
            "query_labels": np.array([1]),
            "database_codes": np.zeros((4, 1), np.uint8),
            "database_labels": np.array([0, 0, 0, 1]),
            "bits": 8,
        }
        assert evaluation.mean_average_precision(**data) == pytest.approx(0.25)
        data["database_labels"] = np.array([1, 0, 0, 0])
        assert evaluation.mean_average_precision(**data) == pytest.approx(1.0)

    def test_all_queries_empty_skip_gives_zero(self):
        data = _random_problem(5)
        data["query_labels"] = np.full(30, 99)
        assert evaluation.mean_average_precision(**data, empty="skip") == 0.0


class TestRandomTies:
    def test_is_index_ties_on_the_seeded_permutation(self):
        data = _random_problem(6)
        order = np.random.default_rng(123).permutation(400)
        for top_k in (None, 30):
            got = evaluation.mean_average_precision(
                **data, top_k=top_k, ties="random", seed=123
            )
            assert got == pytest.approx(_ref_map(data, top_k, order=order), abs=1e-12)

    def test_deterministic_for_a_seed(self):
        data = _random_problem(7)
        a = evaluation.mean_average_precision(**data, ties="random", seed=5)
        b = evaluation.mean_average_precision(**data, ties="random", seed=5)
        assert a == b


class TestExpectedTies:
    @staticmethod
    def _exhaustive(data, top_k, empty="zero"):
        """Mean over every database order of the index-tie metric."""
        n = len(data["database_labels"])
        values = [
            _ref_map(data, top_k, empty, order=np.array(perm))
            for perm in itertools.permutations(range(n))
        ]
        return float(np.mean(values))

    @pytest.mark.parametrize("top_k", [None, 1, 2, 3, 4, 6])
    def test_against_all_orderings(self, top_k):
        rng = np.random.default_rng(top_k or 0)
        # 6 items over 3 distinct codes: big tie groups, cut at every size.
        database_codes = rng.choice(np.array([0, 1, 3], np.uint8), size=(6, 1))
        data = {
            "query_codes": np.array([[0], [1], [3], [7]], np.uint8),
            "query_labels": np.array([0, 1, 0, 1]),
            "database_codes": database_codes,
            "database_labels": rng.integers(0, 2, size=6),
            "bits": 8,
        }
        got = evaluation.mean_average_precision(**data, top_k=top_k, ties="expected")
        assert got == pytest.approx(self._exhaustive(data, top_k), abs=1e-12)

    def test_per_query_against_all_orderings(self):
        data = {
            "query_codes": np.zeros((1, 1), np.uint8),
            "query_labels": np.array([1]),
            "database_codes": np.array([[0], [1], [1], [1], [1], [3], [3]], np.uint8),
            "database_labels": np.array([0, 1, 0, 1, 0, 1, 1]),
            "bits": 8,
        }
        for top_k in range(1, 8):
            got = evaluation.mean_average_precision(
                **data, top_k=top_k, ties="expected"
            )
            assert got == pytest.approx(self._exhaustive(data, top_k), abs=1e-12)

    def test_skip_leaves_out_only_hopeless_queries(self):
        data = {
            "query_codes": np.zeros((2, 1), np.uint8),
            "query_labels": np.array([1, 5]),
            "database_codes": np.zeros((4, 1), np.uint8),
            "database_labels": np.array([0, 0, 0, 1]),
            "bits": 8,
        }
        # Query 0: the relevant item is in the top 2 half the time, AP 1 or 1/2.
        ap, possible = evaluation.average_precisions(**data, top_k=2, ties="expected")
        np.testing.assert_allclose(ap, [0.25 * 1 + 0.25 * 0.5, 0.0])
        np.testing.assert_array_equal(possible, [True, False])
        skip = evaluation.mean_average_precision(
            **data, top_k=2, ties="expected", empty="skip"
        )
        assert skip == pytest.approx(0.375)

    @pytest.mark.parametrize("top_k", [None, 60])
    def test_mean_of_random_orders_converges(self, top_k):
        data = _random_problem(8, nq=10, n=200, bits=8)
        expected = evaluation.mean_average_precision(
            **data, top_k=top_k, ties="expected"
        )
        samples = [
            evaluation.mean_average_precision(
                **data, top_k=top_k, ties="random", seed=s
            )
            for s in range(300)
        ]
        stderr = np.std(samples) / np.sqrt(len(samples))
        assert abs(np.mean(samples) - expected) < 4 * stderr + 1e-12

    def test_without_ties_equals_index(self):
        # Database item i has i bits set: distances to 0 are all distinct.
        rng = np.random.default_rng(9)
        ones = rng.permutation(17)
        bits = (np.arange(16)[None, :] < ones[:, None]).astype(np.uint8)
        data = {
            "query_codes": np.zeros((1, 2), np.uint8),
            "query_labels": np.array([1]),
            "database_codes": np.packbits(bits, axis=1),
            "database_labels": rng.integers(0, 2, size=17),
            "bits": 16,
        }
        for top_k in (None, 7):
            a = evaluation.mean_average_precision(**data, top_k=top_k)
            b = evaluation.mean_average_precision(**data, top_k=top_k, ties="expected")
            assert a == pytest.approx(b, abs=1e-12)
            assert a == pytest.approx(_ref_map(data, top_k), abs=1e-12)

    def test_multi_hot_against_random_mean(self):
        data = _random_problem(10, nq=8, n=120, bits=8, multi_hot=True)
        expected = evaluation.mean_average_precision(**data, ties="expected")
        samples = [
            evaluation.mean_average_precision(**data, ties="random", seed=s)
            for s in range(300)
        ]
        stderr = np.std(samples) / np.sqrt(len(samples))
        assert abs(np.mean(samples) - expected) < 4 * stderr + 1e-12


# ---------------------------------------------------------------------------
# radius, curve and precision@n


def _ref_radius(data, radius):
    dist = reference.hamming(data["query_codes"], data["database_codes"])
    rel = _ref_relevance(data["query_labels"], data["database_labels"])
    precision, recall, empty = [], [], []
    for d, r in zip(dist, rel, strict=True):
        ball = d <= radius
        hits = (ball & r).sum()
        precision.append(hits / ball.sum() if ball.any() else 0.0)
        recall.append(hits / r.sum() if r.any() else 0.0)
        empty.append(not ball.any())
    return np.mean(precision), np.mean(recall), np.mean(empty)


class TestRadius:
    @pytest.mark.parametrize("radius", [0, 1, 2, 5, 16, 40])
    @pytest.mark.parametrize("multi_hot", [False, True])
    def test_matches_reference(self, radius, multi_hot):
        data = _random_problem(radius, bits=16, multi_hot=multi_hot)
        got = evaluation.precision_at_radius(**data, radius=radius)
        precision, recall, empty = _ref_radius(data, radius)
        assert got.precision == pytest.approx(precision, abs=1e-12)
        assert got.recall == pytest.approx(recall, abs=1e-12)
        assert got.empty_fraction == pytest.approx(empty, abs=1e-12)
        assert got.radius == radius

    def test_default_radius_is_2_and_empty_counts_as_zero(self, worked_example):
        got = evaluation.precision_at_radius(**worked_example)
        # q0 ball {0,1,2,3}: 2 relevant of 4; q1 ball {0,1,2,5}: 1 of 4; q2: 0.
        assert got.radius == 2
        assert got.precision == pytest.approx((2 / 4 + 1 / 4 + 0) / 3)
        assert got.empty_fraction == 0.0

    def test_curve_matches_reference_at_every_radius(self):
        data = _random_problem(11, bits=16)
        curve = evaluation.precision_recall_curve(**data)
        np.testing.assert_array_equal(curve.radii, np.arange(17))
        for r in range(17):
            precision, recall, empty = _ref_radius(data, r)
            assert curve.precision[r] == pytest.approx(precision, abs=1e-12)
            assert curve.recall[r] == pytest.approx(recall, abs=1e-12)
            assert curve.empty_fraction[r] == pytest.approx(empty, abs=1e-12)


class TestPrecisionAtN:
    @pytest.mark.parametrize("n", [1, 10, 77, 400])
    def test_index_ties(self, n):
        data = _random_problem(n, bits=8)
        want = np.mean([r[:n].mean() for r, _ in _ref_rankings(**data)])
        got = evaluation.precision_at_n(**data, n=n)
        assert got == pytest.approx(want, abs=1e-12)

    def test_random_ties(self):
        data = _random_problem(12, bits=8)
        order = np.random.default_rng(3).permutation(400)
        want = np.mean([r[:33].mean() for r, _ in _ref_rankings(**data, order=order)])
        got = evaluation.precision_at_n(**data, n=33, ties="random", seed=3)
        assert got == pytest.approx(want, abs=1e-12)

    def test_expected_ties_against_all_orderings(self):
        data = {
            "query_codes": np.array([[0], [1]], np.uint8),
            "query_labels": np.array([1, 0]),
            "database_codes": np.array([[0], [1], [1], [1], [3], [3]], np.uint8),
            "database_labels": np.array([0, 1, 0, 1, 1, 0]),
            "bits": 8,
            "assume_packed": True,  # every query byte is 0 or 1
        }
        for n in range(1, 7):
            values = [
                np.mean([r[:n].mean() for r, _ in _ref_rankings(**data, order=p)])
                for p in itertools.permutations(range(6))
            ]
            got = evaluation.precision_at_n(**data, n=n, ties="expected")
            assert got == pytest.approx(np.mean(values), abs=1e-12)


# ---------------------------------------------------------------------------
# bad input


class TestBadInput:
    @pytest.fixture
    def data(self):
        return _random_problem(13, nq=4, n=20, bits=16)

    def test_widths_disagree(self, data):
        data["database_codes"] = np.zeros((20, 4), np.uint8)
        with pytest.raises(ValueError, match="database_codes are 4 bytes wide but 16"):
            evaluation.mean_average_precision(**data)

    def test_unpacked_codes_are_refused(self, data):
        # An unpacked 0/1 [N, K] array passed as packed 8K-bit codes: before,
        # mAP looked plausible while precision within a radius was wrong.
        rng = np.random.default_rng(0)
        for name, n in (("query_codes", 4), ("database_codes", 20)):
            unpacked = dict(data, bits=128)
            for other, m in (("query_codes", 4), ("database_codes", 20)):
                unpacked[other] = rng.integers(0, 256, (m, 16), dtype=np.uint8)
            unpacked[name] = rng.integers(0, 2, size=(n, 16)).astype(np.uint8)
            with pytest.raises(
                ValueError, match=f"{name} is 0 or 1.*look like unpacked"
            ):
                evaluation.precision_at_radius(**unpacked)
            evaluation.precision_at_radius(**unpacked, assume_packed=True)

    def test_dtype(self, data):
        data["query_codes"] = data["query_codes"].astype(np.int32)
        with pytest.raises(TypeError, match="query_codes.*int32"):
            evaluation.mean_average_precision(**data)

    def test_empty_database(self, data):
        data["database_codes"] = data["database_codes"][:0]
        data["database_labels"] = data["database_labels"][:0]
        with pytest.raises(ValueError, match="database is empty"):
            evaluation.precision_at_radius(**data)

    def test_label_count(self, data):
        data["database_labels"] = data["database_labels"][:19]
        with pytest.raises(
            ValueError, match="database_labels has 19 rows but there are 20"
        ):
            evaluation.mean_average_precision(**data)

    def test_label_kinds_disagree(self, data):
        data["query_labels"] = np.eye(5, dtype=int)[data["query_labels"] % 5]
        with pytest.raises(ValueError, match=r"disagree: shapes \(4, 5\) and \(20,\)"):
            evaluation.mean_average_precision(**data)

    def test_float_class_ids(self, data):
        data["query_labels"] = data["query_labels"] + 0.5
        with pytest.raises(TypeError, match="float64"):
            evaluation.mean_average_precision(**data)

    @pytest.mark.parametrize(
        "bad, error", [(0, ValueError), (-3, ValueError), (2.0, TypeError)]
    )
    def test_top_k(self, data, bad, error):
        with pytest.raises(error, match="top_k"):
            evaluation.mean_average_precision(**data, top_k=bad)

    def test_ties(self, data):
        with pytest.raises(ValueError, match="'stable'"):
            evaluation.mean_average_precision(**data, ties="stable")

    def test_empty(self, data):
        with pytest.raises(ValueError, match="'drop'"):
            evaluation.mean_average_precision(**data, empty="drop")

    def test_negative_radius(self, data):
        with pytest.raises(ValueError, match="radius must be >= 0, got -2"):
            evaluation.precision_at_radius(**data, radius=-2)

    def test_n_too_large(self, data):
        with pytest.raises(ValueError, match="n=21 exceeds the database size 20"):
            evaluation.precision_at_n(**data, n=21)

    def test_keyword_only(self, data):
        with pytest.raises(TypeError):
            evaluation.mean_average_precision(*data.values())


# ---------------------------------------------------------------------------
# RetrievalEvaluator


def _ref_precision_at_n(data, n, order=None):
    return float(np.mean([r[:n].mean() for r, _ in _ref_rankings(**data, order=order)]))


def _evaluator(data):
    return evaluation.RetrievalEvaluator(**data)


class TestEvaluator:
    @pytest.mark.parametrize("multi_hot", [False, True])
    def test_all_metrics_equal_references(self, multi_hot):
        data = _random_problem(20, bits=16, multi_hot=multi_hot, classes=6)
        ev = _evaluator(data)
        assert ev.map() == pytest.approx(_ref_map(data), abs=1e-12)
        assert ev.map(top_k=50, empty="skip") == pytest.approx(
            _ref_map(data, 50, "skip"), abs=1e-12
        )
        for radius in (0, 3, 16):
            got = ev.precision_at_radius(radius)
            want = _ref_radius(data, radius)
            assert (got.precision, got.recall, got.empty_fraction) == pytest.approx(
                want, abs=1e-12
            )
        curve = ev.precision_recall_curve()
        for r in (0, 5, 9, 16):
            assert curve.precision[r] == pytest.approx(_ref_radius(data, r)[0])
        for n in (1, 37, 400):
            assert ev.precision_at_n(n) == pytest.approx(
                _ref_precision_at_n(data, n), abs=1e-12
            )

    def test_equals_the_functions_for_every_option(self):
        data = _random_problem(21, bits=8)
        ev = _evaluator(data)
        for ties in ("index", "random", "expected"):
            for top_k in (None, 1, 30, 400):
                for empty in ("zero", "skip"):
                    options = dict(top_k=top_k, ties=ties, empty=empty, seed=4)
                    assert ev.map(**options) == evaluation.mean_average_precision(
                        **data, **options
                    )
            for n in (1, 30, 400):
                assert ev.precision_at_n(n, ties=ties, seed=4) == (
                    evaluation.precision_at_n(**data, n=n, ties=ties, seed=4)
                )
        assert ev.precision_at_radius(1) == evaluation.precision_at_radius(
            **data, radius=1
        )
        curve, want = (
            ev.precision_recall_curve(),
            evaluation.precision_recall_curve(**data),
        )
        np.testing.assert_array_equal(curve.precision, want.precision)
        np.testing.assert_array_equal(curve.recall, want.recall)

    @pytest.mark.parametrize("order", ["curve_first", "map_first", "top_k_first"])
    def test_call_order_and_caches_do_not_change_values(self, order, monkeypatch):
        data = _random_problem(22, nq=40, n=300, bits=16)
        want = {
            "map": _ref_map(data),
            "map@20": _ref_map(data, 20),
            "p@10": _ref_precision_at_n(data, 10),
            "p@60": _ref_precision_at_n(data, 60),
            "r2": _ref_radius(data, 2)[0],
        }
        calls = {
            "map": lambda ev: ev.map(),
            "map@20": lambda ev: ev.map(top_k=20),
            "p@10": lambda ev: ev.precision_at_n(10),
            "p@60": lambda ev: ev.precision_at_n(60),
            "r2": lambda ev: ev.precision_at_radius().precision,
        }
        names = {
            "curve_first": ["r2", "p@10", "map@20", "p@60", "map"],
            "map_first": ["map", "p@60", "r2", "map@20", "p@10"],
            "top_k_first": ["map@20", "p@10", "p@60", "map", "r2"],
        }[order]
        for cache_bytes in (evaluator_module._CACHE_BYTES, 16):  # 16: nothing fits
            monkeypatch.setattr(evaluator_module, "_CACHE_BYTES", cache_bytes)
            monkeypatch.setattr(evaluator_module, "_CHUNK_PAIRS", 1000)  # many chunks
            ev = _evaluator(data)
            for name in names:
                assert calls[name](ev) == pytest.approx(want[name], abs=1e-12), name

    def test_distances_are_computed_once(self, monkeypatch):
        data = _random_problem(23, bits=16)
        passes = []
        original = evaluator_module.hamming_distances
        monkeypatch.setattr(
            evaluator_module,
            "hamming_distances",
            lambda *args: passes.append(1) or original(*args),
        )
        ev = _evaluator(data)
        ev.map()
        first = len(passes)
        ev.precision_at_radius(2)
        ev.precision_recall_curve()
        ev.precision_at_n(100)
        ev.map(top_k=100)
        ev.map(ties="expected")
        assert first >= 1 and len(passes) == first

    def test_precision_at_radius_does_not_build_the_curve(self, monkeypatch):
        data = _random_problem(24, bits=16)

        def forbidden(self):
            raise AssertionError("the whole curve was built")

        monkeypatch.setattr(
            evaluation.RetrievalEvaluator, "precision_recall_curve", forbidden
        )
        got = evaluation.precision_at_radius(**data, radius=3)
        assert got.precision == pytest.approx(_ref_radius(data, 3)[0], abs=1e-12)

    def test_worked_example(self, worked_example):
        ev = _evaluator(worked_example)
        assert ev.map(top_k=3, empty="skip") == pytest.approx(5 / 6)
        assert ev.map(top_k=3) == pytest.approx(0.2778, abs=1e-4)

    def test_exported_at_top_level(self):
        import keras_hash

        assert keras_hash.RetrievalEvaluator is evaluation.RetrievalEvaluator


class TestEvaluatorFromIndex:
    def _indexed(self, data, ids, backend="numpy"):
        from keras_hash import HammingIndex

        index = HammingIndex(data["bits"], backend=backend)
        half = len(ids) // 2
        index.add(data["database_codes"][:half], ids=ids[:half])
        index.add(data["database_codes"][half:], ids=ids[half:])
        return index

    def test_labels_looked_up_by_id_ties_by_id(self):
        data = _random_problem(25, bits=8)
        ids = np.random.default_rng(0).permutation(1000)[:400]  # shuffled ids
        index = self._indexed(data, ids)
        ev = evaluation.RetrievalEvaluator(
            query_codes=data["query_codes"],
            query_labels=data["query_labels"],
            database=index,
            database_labels=data["database_labels"],
            database_ids=ids,
        )
        # Reference: the database laid out by id, so index ties are id ties.
        by_id = np.argsort(ids)
        sorted_data = dict(
            data,
            database_codes=data["database_codes"][by_id],
            database_labels=data["database_labels"][by_id],
        )
        for top_k in (None, 25):
            assert ev.map(top_k=top_k) == pytest.approx(
                _ref_map(sorted_data, top_k), abs=1e-12
            )
        assert ev.precision_at_n(33) == pytest.approx(
            _ref_precision_at_n(sorted_data, 33), abs=1e-12
        )
        got = ev.precision_at_radius(2)
        assert got.recall == pytest.approx(_ref_radius(data, 2)[1], abs=1e-12)
        # the same evaluator from arrays with ids: the same values
        arrays = evaluation.RetrievalEvaluator(**data, database_ids=ids)
        assert arrays.map(top_k=25) == ev.map(top_k=25)

    def test_default_ids_equal_arrays(self):
        data = _random_problem(26, bits=16, multi_hot=True)
        index = self._indexed(data, np.arange(400))
        ev = evaluation.RetrievalEvaluator(
            query_codes=data["query_codes"],
            query_labels=data["query_labels"],
            database=index,
            database_labels=data["database_labels"],
        )
        arrays = _evaluator(data)
        for top_k in (None, 40):
            assert ev.map(top_k=top_k) == arrays.map(top_k=top_k)
        assert ev.precision_at_n(5) == arrays.precision_at_n(5)


class TestEvaluatorBadInput:
    @pytest.fixture
    def data(self):
        return _random_problem(27, nq=4, n=20, bits=16)

    def test_no_database(self, data):
        data.pop("database_codes")
        with pytest.raises(ValueError, match="give database_codes"):
            evaluation.RetrievalEvaluator(**data)

    def test_bits_required(self, data):
        data.pop("bits")
        with pytest.raises(TypeError, match="bits is required"):
            evaluation.RetrievalEvaluator(**data)
        with pytest.raises(TypeError, match="bits"):
            evaluation.mean_average_precision(**data)

    def test_database_not_an_index(self, data):
        with pytest.raises(TypeError, match="search contract.*got ndarray"):
            evaluation.RetrievalEvaluator(**data, database=data["database_codes"])

    def test_index_bits_and_size_must_agree(self, data):
        from keras_hash import HammingIndex

        index = HammingIndex(16)
        index.add(data["database_codes"][:19])
        with pytest.raises(ValueError, match="index holds 19 codes but database_codes"):
            evaluation.RetrievalEvaluator(**data, database=index)
        with pytest.raises(ValueError, match="bits=32 but the database index holds 16"):
            evaluation.RetrievalEvaluator(**dict(data, bits=32), database=index)

    def test_ids_of_labels_and_index_differ(self, data):
        from keras_hash import HammingIndex

        index = HammingIndex(16)
        index.add(data["database_codes"], ids=np.arange(20) + 100)
        common = dict(
            query_codes=data["query_codes"],
            query_labels=data["query_labels"],
            database_labels=data["database_labels"],
            database=index,
        )
        with pytest.raises(ValueError, match="database_ids differ from the index"):
            evaluation.RetrievalEvaluator(**common)
        ev = evaluation.RetrievalEvaluator(**common, database_ids=np.arange(20) + 100)
        assert ev.map() == pytest.approx(_ref_map(data), abs=1e-12)

    @pytest.mark.parametrize(
        "ids, error, match",
        [
            (np.zeros(20, np.int64), ValueError, "database_ids: .*0"),
            (np.arange(19), ValueError, r"database_ids: .*\(20,\), got shape \(19,\)"),
            (np.arange(20.0), TypeError, "database_ids: .*integers, got dtype float64"),
        ],
    )
    def test_bad_database_ids(self, data, ids, error, match):
        with pytest.raises(error, match=match):
            evaluation.RetrievalEvaluator(**data, database_ids=ids)

    def test_index_labels_and_widths(self, data):
        from keras_hash import HammingIndex

        index = HammingIndex(16)
        index.add(data["database_codes"])
        common = dict(query_codes=data["query_codes"], database=index)
        with pytest.raises(ValueError, match="has 19 rows but there are 20"):
            evaluation.RetrievalEvaluator(
                **common,
                query_labels=data["query_labels"],
                database_labels=data["database_labels"][:19],
            )
        wide = HammingIndex(32)
        wide.add(np.full((20, 4), 7, np.uint8))
        with pytest.raises(ValueError, match="query_codes are 2 bytes wide but 32-bit"):
            evaluation.RetrievalEvaluator(
                query_codes=data["query_codes"],
                query_labels=data["query_labels"],
                database=wide,
                database_labels=data["database_labels"],
            )
        with pytest.raises(ValueError, match="the database is empty"):
            evaluation.RetrievalEvaluator(
                query_codes=data["query_codes"],
                query_labels=data["query_labels"],
                database=HammingIndex(16),
                database_labels=data["database_labels"][:0],
            )

    def test_pm_one_multi_hot_labels(self, data):
        rng = np.random.default_rng(0)
        data["query_labels"] = rng.choice([-1, 1], size=(4, 3))
        data["database_labels"] = rng.choice([-1, 1], size=(20, 3))
        with pytest.raises(ValueError, match="query_labels must hold only 0 and 1"):
            evaluation.RetrievalEvaluator(**data)
        with pytest.raises(ValueError, match="Convert ±1 labels"):
            evaluation.mean_average_precision(**data)

    def test_label_shapes(self, data):
        data["database_labels"] = np.zeros((20, 2, 2), int)
        with pytest.raises(ValueError, match=r"database_labels must be .*\(20, 2, 2\)"):
            evaluation.RetrievalEvaluator(**data)

    def test_keyword_only(self, data):
        with pytest.raises(TypeError):
            evaluation.RetrievalEvaluator(*data.values())


class TestLabelColumns:
    def test_binary_column_labels_are_class_ids(self):
        # keras.datasets-style [N, 1] binary labels. Before, the metrics read
        # them as one-class multi-hot rows, so class-0 items were relevant to
        # nothing and mAP dropped silently below that of the same ids.
        data = _random_problem(32, classes=2, bits=16)
        data["query_labels"] = data["query_labels"] % 2
        data["database_labels"] = data["database_labels"] % 2
        want = _ref_map(data, 50)
        column = dict(
            data,
            query_labels=data["query_labels"][:, None],
            database_labels=data["database_labels"][:, None],
        )
        assert evaluation.mean_average_precision(**column, top_k=50) == pytest.approx(
            want, abs=1e-12
        )
        radius = evaluation.precision_at_radius(**column, radius=3)
        assert radius.precision == pytest.approx(_ref_radius(data, 3)[0], abs=1e-12)


class TestNoQueries:
    """Issue 24 row 5: a mean over zero queries is refused, never NaN."""

    @pytest.mark.parametrize(
        "metric, kwargs",
        [
            (evaluation.mean_average_precision, {}),
            (evaluation.mean_average_precision, {"top_k": 5, "ties": "expected"}),
            (evaluation.average_precisions, {}),
            (evaluation.precision_at_radius, {"radius": 2}),
            (evaluation.precision_recall_curve, {}),
            (evaluation.precision_at_n, {"n": 3}),
        ],
    )
    def test_zero_queries_raise_a_clear_error(self, metric, kwargs):
        data = _random_problem(31, nq=4, n=20, bits=16)
        data["query_codes"] = data["query_codes"][:0]
        data["query_labels"] = data["query_labels"][:0]
        with pytest.raises(ValueError, match="query_codes is empty"):
            metric(**data, **kwargs)

    def test_one_query_still_works(self):
        data = _random_problem(31, nq=1, n=20, bits=16)
        got = evaluation.precision_at_radius(**data, radius=16)
        assert got.precision == pytest.approx(
            _ref_relevance(data["query_labels"], data["database_labels"]).mean()
        )
