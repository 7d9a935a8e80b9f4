"""Benchmark: MilvusHammingIndex (Milvus Lite, BIN_FLAT) against HammingIndex.

100,000 random 64-bit codes, 100 queries, k = 10 by default, in one process:
the insert time, then k-NN and range search of :class:`MilvusHammingIndex`
(exact ties by id), a raw ``MilvusClient.search`` (Milvus's own tie order),
and :class:`keras_hash.HammingIndex` (numpy and FAISS backends). Best of
``--repeat`` runs. The Milvus results must equal HammingIndex's exactly.

Usage::

    python benchmarks/bench_milvus.py                  # writes to a temp folder
    python benchmarks/bench_milvus.py --n 1000000 --queries 1000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from timing import best_time  # noqa: E402

from keras_hash import HammingIndex  # noqa: E402
from keras_hash.index import MilvusHammingIndex  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--radius", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    database = rng.integers(0, 256, size=(args.n, args.bits // 8), dtype=np.uint8)
    queries = rng.integers(0, 256, size=(args.queries, args.bits // 8), dtype=np.uint8)
    ids = np.arange(args.n, dtype=np.int64)
    print(
        f"{args.n:,} random {args.bits}-bit codes, {args.queries} queries, "
        f"k = {args.k}, radius = {args.radius}, best of {args.repeat}"
    )

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        milvus = MilvusHammingIndex(args.bits, os.path.join(folder, "bench.db"))
        print(f"Milvus Lite start + collection: {time.perf_counter() - start:.2f} s")
        start = time.perf_counter()
        milvus.add(database, ids, batch_size=10_000)
        print(f"Milvus add (10,000 per batch): {time.perf_counter() - start:.2f} s")
        rows = {}
        references = {}
        for backend in ("numpy", "faiss"):
            try:
                index = HammingIndex(args.bits, backend=backend)
            except ImportError:
                continue
            index.add(database, ids)
            rows[f"HammingIndex {backend}"] = (
                best_time(lambda i=index: i.search(queries, args.k), args.repeat),
                best_time(
                    lambda i=index: i.range_search(queries, args.radius), args.repeat
                ),
            )
            references[backend] = rows[f"HammingIndex {backend}"]
        rows["MilvusHammingIndex"] = (
            best_time(lambda: milvus.search(queries, args.k), args.repeat),
            best_time(lambda: milvus.range_search(queries, args.radius), args.repeat),
        )
        client, data = milvus._client, [q.tobytes() for q in queries]

        def raw_knn():
            return client.search(
                milvus.collection,
                data=data,
                limit=args.k,
                search_params={"metric_type": "HAMMING"},
            )

        raw, _ = best_time(raw_knn, args.repeat)

        (_, (want_d, want_i)), (_, want_r) = references["numpy"]
        (_, (got_d, got_i)), (_, got_r) = rows["MilvusHammingIndex"]
        same_knn = np.array_equal(want_d, got_d) and np.array_equal(want_i, got_i)
        same_range = all(
            np.array_equal(getattr(want_r, f), getattr(got_r, f))
            for f in ("lims", "distances", "ids")
        )
        milvus.close()

    print(f"\n| index | k-NN (k = {args.k}) | range (r = {args.radius}) |")
    print("| --- | --- | --- |")
    for name, ((knn, _), (rng_time, _)) in rows.items():
        print(
            f"| {name} | {knn * 1e3:.1f} ms ({args.queries / knn:,.0f} q/s) | "
            f"{rng_time * 1e3:.1f} ms |"
        )
    print(f"| raw MilvusClient.search | {raw * 1e3:.1f} ms | |")
    found = int(want_r.lims[-1])
    print(f"\nrange results: {found:,} in all ({found / args.queries:.1f} per query)")
    print(f"Milvus k-NN == HammingIndex numpy (distances, ids): {same_knn}")
    print(f"Milvus range == HammingIndex numpy (lims, distances, ids): {same_range}")


if __name__ == "__main__":
    main()
