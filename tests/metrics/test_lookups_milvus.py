"""RetrievalEvaluator scoring a Milvus Lite collection against brute force.

Its own module: Milvus Lite starts a server process (a few seconds).
"""

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from keras_hash.index import MilvusHammingIndex  # noqa: E402
from tests.metrics.test_lookups import check_range, check_search, problem  # noqa: E402

pytestmark = pytest.mark.numpy_only


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    data = problem(seed=3, n=600, nq=20)
    uri = str(tmp_path_factory.mktemp("milvus") / "codes.db")
    index = MilvusHammingIndex(data["bits"], uri, collection="lookups")
    index.add(data["database_codes"], data["database_ids"])
    index.flush()
    yield data, index
    index.close()


@pytest.mark.parametrize("k", [1, 25])
def test_search_scored_against_brute_force(collection, k):
    data, index = collection
    score = check_search(data, index, k)
    assert score.recall == 1.0 and score.recall_by_id == 1.0  # BIN_FLAT: exact


def test_range_search_scored_against_brute_force(collection):
    data, index = collection
    assert check_range(data, index, 4).completeness == 1.0
    assert np.isfinite(check_range(data, index, 0).precision)
