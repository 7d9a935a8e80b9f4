"""Benchmark: HammingIndex k-NN against raw faiss.IndexBinaryFlat.

1,000,000 random 64-bit codes, 1,000 queries, k = 100 by default; the numpy
and FAISS backends of :class:`keras_hash.HammingIndex` and a raw
``faiss.IndexBinaryFlat`` run in the same process, at 1 and 2 threads
(``faiss.omp_set_num_threads``; the numpy backend is single-threaded).
Every backend must return the same neighbours as raw FAISS up to tie order;
ours must equal each other exactly.

Usage::

    python benchmarks/bench_index.py                 # full size
    python benchmarks/bench_index.py --scale 0.1     # 100,000 codes, 100 queries
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402
from timing import best_time  # noqa: E402

from keras_hash import HammingIndex  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="shrink sizes")
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    import faiss

    n, n_queries = int(1_000_000 * args.scale), int(1_000 * args.scale)
    rng = np.random.default_rng(0)
    database = rng.integers(0, 256, size=(n, args.bits // 8), dtype=np.uint8)
    queries = rng.integers(0, 256, size=(n_queries, args.bits // 8), dtype=np.uint8)
    raw = faiss.IndexBinaryFlat(args.bits)
    raw.add(database)
    ours = {}
    for backend in ("faiss", "numpy"):
        ours[backend] = HammingIndex(args.bits, backend=backend)
        ours[backend].add(database)
    print(
        f"k-NN: {n:,} random {args.bits}-bit codes, {n_queries:,} queries, "
        f"k={args.k}, best of {args.repeat}"
    )
    for threads in args.threads:
        faiss.omp_set_num_threads(threads)
        t_raw, (raw_d, raw_i) = best_time(
            lambda: raw.search(queries, args.k), args.repeat
        )
        t_faiss, (f_d, f_i) = best_time(
            lambda: ours["faiss"].search(queries, args.k), args.repeat
        )
        t_numpy, (n_d, n_i) = best_time(
            lambda: ours["numpy"].search(queries, args.k), args.repeat
        )
        assert np.array_equal(f_d, raw_d) and np.array_equal(n_d, raw_d)
        assert np.array_equal(f_i, n_i), "backends disagree"
        qps = {
            name: n_queries / t
            for name, t in (("raw", t_raw), ("faiss", t_faiss), ("numpy", t_numpy))
        }
        print(
            f"  {threads} thread(s): raw FAISS {qps['raw']:8.0f} q/s | "
            f"HammingIndex faiss {qps['faiss']:8.0f} q/s "
            f"({qps['faiss'] / qps['raw']:.3f}x raw) | "
            f"HammingIndex numpy {qps['numpy']:8.0f} q/s "
            f"({qps['numpy'] / qps['raw']:.2f}x raw)"
        )
        print(f"    ties ordered like raw FAISS: {np.array_equal(f_i, raw_i)}")


if __name__ == "__main__":
    main()
