"""Random manifests against an independent oracle (property-based, bounded).

A manifest is valid exactly when its entries are ``codes-i-of-N`` for
``i = 0 .. N-1`` in order and ``count = sum(entry counts)``,
``listed = count + failed``; and a valid run's shards read back to the codes
that were written, whatever ``num_shards``.
"""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_hash import beam
from keras_hash.beam import shards

pytestmark = pytest.mark.numpy_only

BOUNDED = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def oracle_valid(manifest) -> bool:
    n = manifest["num_shards"]
    names = [entry["name"] for entry in manifest["shards"]]
    expected = [f"codes-{i:05d}-of-{n:05d}.npz" for i in range(n)]
    total = sum(entry["count"] for entry in manifest["shards"])
    return (
        n >= 1
        and names == expected
        and total == manifest["count"]
        and manifest["listed"] == total + manifest["failed"]
    )


@st.composite
def manifests(draw):
    n = draw(st.integers(1, 4))
    declared = draw(st.integers(0, 5))  # the num_shards written, maybe wrong
    indexes = draw(
        st.one_of(
            st.just(list(range(n))),
            st.lists(st.integers(0, 5), max_size=6),
        )
    )
    entries = [
        {
            "name": f"codes-{i:05d}-of-{n:05d}.npz",
            "count": draw(st.integers(0, 3)),
            "sha256": "0" * 64,
        }
        for i in indexes
    ]
    total = sum(entry["count"] for entry in entries)
    failed = draw(st.integers(0, 2))
    return {
        "bits": 32,
        "num_shards": draw(st.sampled_from([n, declared])),
        "shards": entries,
        "count": draw(st.sampled_from([total, total + 1, max(total - 1, 0)])),
        "failed": failed,
        "listed": draw(st.sampled_from([total + failed, total, total + failed + 1])),
    }


@BOUNDED
@given(manifests())
def test_check_manifest_accepts_exactly_the_valid_ones(manifest):
    if oracle_valid(manifest):
        shards.check_manifest(manifest, "m")
    else:
        with pytest.raises(ValueError, match="m: "):
            shards.check_manifest(manifest, "m")


@BOUNDED
@given(
    st.integers(1, 4),
    st.lists(st.integers(-(2**63), 2**63 - 1), unique=True, max_size=12),
    st.integers(0, 3),
)
def test_written_shards_read_back_exactly(tmp_path_factory, num_shards, ids, failed):
    folder = tmp_path_factory.mktemp("shards")
    ids = np.array(ids, np.int64)
    codes = np.random.default_rng(len(ids)).integers(0, 256, (len(ids), 4), np.uint8)
    entries = []
    for shard in range(num_shards):
        mine = ids % num_shards == shard
        path = str(folder / beam.shard_name(shard, num_shards))
        entries.append(beam.write_shard(path, codes[mine], ids[mine], 32))
    manifest = shards.make_manifest(entries, 32, num_shards, failed, len(ids) + failed)
    manifest_path = folder / shards.MANIFEST_NAME
    manifest_path.write_text(json.dumps(manifest))
    got_codes, got_ids = beam.read_code_shards(folder)
    order = np.argsort(ids)
    np.testing.assert_array_equal(got_ids, ids[order])
    np.testing.assert_array_equal(got_codes, codes[order].reshape(-1, 4))
    with pytest.raises(ValueError, match="were listed"):
        shards.make_manifest(entries, 32, num_shards, failed, len(ids) + failed + 1)
