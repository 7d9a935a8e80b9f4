"""Benchmark: IVFHammingIndex recall and speed against the exact HammingIndex.

For each database size (1M and 10M 64-bit codes by default) and each data
set (uniformly random codes; clustered codes: each code a random class
centre with every bit flipped at ``--flip`` = 10%, as a trained model's codes
scatter around their class, with 10 and 1,000 centres), it builds the exact
:class:`keras_hash.HammingIndex` (FAISS backend) and an
:class:`~keras_hash.index.IVFHammingIndex` with default ``nlist``
(``sqrt(n)`` as a power of two), then sweeps ``nprobe``. Reported: recall@10
and recall@100 (share of the exact top k, ties by id, that the approximate
top k holds), queries/s at k = 10 and the ratio to the exact index's
queries/s measured in the same run, bytes of the structure, build time
(train + add). Also the save and load times of the index, and, at sizes up
to ``--baseline-max`` (1M), raw FAISS ``IndexBinaryHNSW`` (M = 16, sweeping
efSearch) and ``IndexBinaryMultiHash`` (4 x 16 bits, sweeping nflip), the
methods not offered (their ids are FAISS's own; recall counted the same way).

Threads: FAISS's default (every core) for all indexes, OMP_WAIT_POLICY=passive.

Usage::

    python benchmarks/bench_approximate_index.py  # full: ~15 min on 2 cores
    python benchmarks/bench_approximate_index.py --sizes 100000 --queries 100
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402

from keras_hash import HammingIndex  # noqa: E402
from keras_hash.index import IVFHammingIndex  # noqa: E402


def make_codes(n, bits, centres, flip, seed, chunk=1 << 20):
    """Random codes, or codes around ``centres`` random centres (bit flips)."""
    rng = np.random.default_rng(seed)
    if centres == 0:
        return rng.integers(0, 256, size=(n, bits // 8), dtype=np.uint8)
    middle = np.random.default_rng(12345 + centres).integers(
        0, 256, size=(centres, bits // 8), dtype=np.uint8
    )
    out = np.empty((n, bits // 8), np.uint8)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        flips = np.packbits(rng.random((m, bits), dtype=np.float32) < flip, axis=1)
        out[start : start + m] = middle[rng.integers(0, centres, m)] ^ flips
    return out


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def best_qps(n_queries, repeat, fn, *args):
    best, out = float("inf"), None
    for _ in range(repeat):
        t, out = timed(fn, *args)
        best = min(best, t)
    return n_queries / best, out


def recall(got, want):
    k = want.shape[1]
    hits = [np.intersect1d(a, b).size for a, b in zip(got, want, strict=True)]
    return float(np.sum(hits)) / (k * len(want))


def row(name, knob, r10, r100, qps, exact_qps, nbytes, build):
    print(
        f"| {name} | {knob} | {r10:.3f} | {r100:.3f} | {qps:,.0f} | "
        f"{qps / exact_qps:.1f}x | {nbytes / 2**20:,.0f} MiB | {build:.1f} s |",
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument(
        "--centres", type=int, nargs="+", default=[0, 10, 1000], help="0 = random"
    )
    parser.add_argument("--flip", type=float, default=0.1)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument(
        "--nprobe", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64]
    )
    parser.add_argument("--baseline-max", type=int, default=1_000_000)
    args = parser.parse_args()
    import faiss

    print(
        f"FAISS {faiss.__version__}, {faiss.omp_get_max_threads()} threads, "
        f"{os.cpu_count()} CPUs, {args.bits}-bit codes, {args.queries} queries"
    )
    for n in args.sizes:
        for centres in args.centres:
            data = (
                "random"
                if centres == 0
                else f"{centres} centres, {args.flip:.0%} flips"
            )
            database = make_codes(n, args.bits, centres, args.flip, seed=1)
            queries = make_codes(args.queries, args.bits, centres, args.flip, seed=2)
            print(f"\n### {n:,} codes, {data}\n", flush=True)
            build, exact = timed(_exact, args.bits, database)
            exact_qps, _ = best_qps(len(queries), 2, exact.search, queries, 10)
            _, (_, want100) = timed(exact.search, queries, 100)
            want10 = want100[:, :10]
            print(
                "| index | knob | recall@10 | recall@100 | queries/s (k=10) | "
                "vs exact | memory | build |"
            )
            print("| --- | --- | --- | --- | --- | --- | --- | --- |")
            row(
                "exact HammingIndex",
                "",
                1,
                1,
                exact_qps,
                exact_qps,
                database.nbytes + 8 * n,
                build,
            )
            exact = None
            index = IVFHammingIndex(args.bits)
            t_train, _ = timed(index.train, database)
            t_add, _ = timed(index.add, database)
            for nprobe in [p for p in args.nprobe if p <= index.nlist]:
                index.nprobe = nprobe
                qps, (_, got10) = best_qps(len(queries), 2, index.search, queries, 10)
                _, (_, got100) = timed(index.search, queries, 100)
                row(
                    f"IVF nlist={index.nlist}",
                    f"nprobe={nprobe}",
                    recall(got10, want10),
                    recall(got100, want100),
                    qps,
                    exact_qps,
                    index.nbytes,
                    t_train + t_add,
                )
            print(f"\nIVF build: train {t_train:.1f} s, add {t_add:.1f} s", flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "index.khivf")
                t_save, _ = timed(index.save, path)
                t_load, loaded = timed(IVFHammingIndex.load, path)
                size = os.path.getsize(path)
            same = all(
                np.array_equal(a, b)
                for a, b in zip(
                    loaded.search(queries, 10), index.search(queries, 10), strict=True
                )
            )
            print(
                f"IVF save {t_save:.2f} s, load {t_load:.2f} s, file "
                f"{size / 2**20:,.0f} MiB, loaded index gives the same results: {same}"
            )
            index = loaded = None
            if n <= args.baseline_max:
                print(
                    "\n| index | knob | recall@10 | recall@100 | queries/s (k=10) | "
                    "vs exact | memory | build |"
                )
                print("| --- | --- | --- | --- | --- | --- | --- | --- |")
                _baselines(faiss, args, database, queries, want10, want100, exact_qps)


def _exact(bits, database):
    index = HammingIndex(bits)
    index.add(database)
    return index


def _baselines(faiss, args, database, queries, want10, want100, exact_qps):
    n = len(database)
    hnsw = faiss.IndexBinaryHNSW(args.bits, 16)
    build, _ = timed(hnsw.add, database)
    nbytes = database.nbytes + n * 16 * 2 * 4 * 1.1  # codes + level-0 links (approx.)
    for ef in (16, 64, 256):
        hnsw.hnsw.efSearch = max(ef, 100)
        _, (_, got100) = timed(hnsw.search, queries, 100)
        hnsw.hnsw.efSearch = ef
        qps, (_, got10) = best_qps(len(queries), 2, hnsw.search, queries, 10)
        row(
            "FAISS HNSW M=16 (not offered)",
            f"efSearch={ef}",
            recall(got10, want10),
            recall(got100, want100),
            qps,
            exact_qps,
            nbytes,
            build,
        )
    hnsw = None
    multi = faiss.IndexBinaryMultiHash(args.bits, 4, args.bits // 4)
    build, _ = timed(multi.add, database)
    for nflip in (0, 1, 2):
        multi.nflip = nflip
        qps, (_, got10) = best_qps(len(queries), 1, multi.search, queries, 10)
        _, (_, got100) = timed(multi.search, queries, 100)
        row(
            f"FAISS MultiHash 4x{args.bits // 4} (not offered)",
            f"nflip={nflip}",
            recall(got10, want10),
            recall(got100, want100),
            qps,
            exact_qps,
            database.nbytes + 4 * 8 * n,
            build,
        )  # codes + 4 tables of ids
        if qps < exact_qps:
            break


if __name__ == "__main__":
    main()
