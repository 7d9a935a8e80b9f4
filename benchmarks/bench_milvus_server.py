"""Benchmark: MilvusHammingIndex on a Milvus server, BIN_FLAT vs BIN_IVF_FLAT.

Starts the embedded Milvus standalone server of the ``milvus`` package
(2.3.5, in the test extra) on 127.0.0.1, inserts ``--n`` 64-bit codes
(clustered: a random one of 1,000 centres per code, each bit flipped with
probability 10%, as in bench_approximate_index.py), and times k-NN (k = 10)
of ``--queries`` queries drawn the same way: BIN_FLAT, then BIN_IVF_FLAT
(``nlist``) at several ``nprobe``, with recall@10 against the exact
:class:`keras_hash.HammingIndex` on the same codes; then range search
(``--radius``), with the fraction of the exact results found. Best of
``--repeat``.

Usage::

    python benchmarks/bench_milvus_server.py                # 100,000 codes
    python benchmarks/bench_milvus_server.py --n 1000000 --nlist 4096
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402
from milvus import MilvusServer  # noqa: E402
from timing import best_time  # noqa: E402

from keras_hash import HammingIndex  # noqa: E402
from keras_hash.index import MilvusHammingIndex  # noqa: E402


def clustered_codes(rng, n, centres):
    bits = np.unpackbits(centres[rng.integers(0, len(centres), n)], axis=1)
    return np.packbits(bits ^ (rng.random(bits.shape) < 0.1), axis=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--radius", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.integers(0, 256, size=(1000, 8), dtype=np.uint8)
    codes = clustered_codes(rng, args.n, centres)
    queries = clustered_codes(rng, args.queries, centres)
    ids = np.arange(args.n, dtype=np.int64)
    exact = HammingIndex(64)
    exact.add(codes, ids)
    t_exact, (want_d, want_i) = best_time(lambda: exact.search(queries, 10), 3)
    t_range, want_r = best_time(lambda: exact.range_search(queries, args.radius), 3)
    print(f"{args.n:,} clustered 64-bit codes, {args.queries} queries, k = 10")
    print(
        f"HammingIndex (exact, in process): k-NN {args.queries / t_exact:,.0f} q/s, "
        f"range (radius {args.radius}, {len(want_r.ids):,} results) "
        f"{args.queries / t_range:,.0f} q/s"
    )

    server = MilvusServer()
    with tempfile.TemporaryDirectory() as folder:
        server.set_base_dir(folder)
        start = time.perf_counter()
        server.start()
        print(f"server started in {time.perf_counter() - start:.1f} s")
        uri = f"http://127.0.0.1:{server.listen_port}"
        try:
            print(
                "| index | nprobe | recall@10 | k-NN q/s | range found | range q/s "
                "| insert s | build s |"
            )
            print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
            for index_type in ("BIN_FLAT", "BIN_IVF_FLAT"):
                index = MilvusHammingIndex(
                    64,
                    uri,
                    collection=index_type.lower(),
                    index_type=index_type,
                    nlist=args.nlist,
                    timeout=120,
                )
                start = time.perf_counter()
                index.add(codes, ids, batch_size=50_000)
                insert = time.perf_counter() - start
                start = time.perf_counter()
                index.wait_for_index()
                build = time.perf_counter() - start
                probes = args.nprobe if index_type == "BIN_IVF_FLAT" else [None]
                for nprobe in probes:
                    if nprobe is not None:
                        index.nprobe = nprobe
                    seconds, (got_d, got_i) = best_time(
                        lambda index=index: index.search(queries, 10), args.repeat
                    )
                    recall = np.mean(
                        [
                            len(set(a) & set(b)) / 10
                            for a, b in zip(got_i, want_i, strict=True)
                        ]
                    )
                    r_seconds, got_r = best_time(
                        lambda index=index: index.range_search(queries, args.radius),
                        args.repeat,
                    )
                    found = len(got_r.ids) / max(1, len(want_r.ids))
                    if index_type == "BIN_FLAT" or nprobe >= args.nlist:
                        assert np.array_equal(got_d, want_d), "not exact"
                        assert np.array_equal(got_i, want_i), "ties"
                        for field in ("lims", "distances", "ids"):
                            assert np.array_equal(
                                getattr(got_r, field), getattr(want_r, field)
                            ), f"range {field}"
                    print(
                        f"| {index_type} | {nprobe or ''} | {recall:.3f} | "
                        f"{args.queries / seconds:,.0f} | {found:.3f} | "
                        f"{args.queries / r_seconds:,.0f} | {insert:.1f} | "
                        f"{build:.1f} |",
                        flush=True,
                    )
                index.drop()
                index.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
