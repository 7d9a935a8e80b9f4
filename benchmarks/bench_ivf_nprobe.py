"""Benchmark: IVFHammingIndex recall, mAP and speed over nprobe, by the evaluator.

Every figure comes from :meth:`keras_hash.RetrievalEvaluator.score_search`
scoring the index's own lookups: tie-aware recall@k and recall@k by id
against exact search (definitions in ``docs/conventions.md``), mAP@k of the
returned lists, and queries/s of the index's ``search`` call (the best of
``--repeat`` scored calls, after a warm-up). The exact
:class:`keras_hash.HammingIndex` (FAISS backend) is scored the same way in
the same run, so the speed column is a ratio measured side by side.

Data: labelled clustered codes, a stand-in for a trained model's: ``--centres``
random centres, each code one of them with every bit flipped at ``--flip``,
class = centre mod ``--classes`` (several centres per class, as a class
spreads over several modes). Queries are drawn the same way.

``--codes run.npz`` scores learned codes instead: an ``.npz`` holding
``query_codes``, ``query_labels``, ``database_codes``, ``database_labels``
(packed codes, class ids) and ``bits``, e.g. a model's ``encode`` of CIFAR-10.

Usage::

    python benchmarks/bench_ivf_nprobe.py                  # ~5 min on 2 cores
    python benchmarks/bench_ivf_nprobe.py --n 20000 --queries 200
    python benchmarks/bench_ivf_nprobe.py --codes cifar10_codes.npz
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402

import keras_hash  # noqa: E402
from keras_hash.index import IVFHammingIndex  # noqa: E402

NPZ_ARRAYS = ("query_codes", "query_labels", "database_codes", "database_labels")


def labelled_codes(n, bits, centres, classes, flip, seed):
    """Codes around random centres (bits flipped at ``flip``) and class ids."""
    middle = np.random.default_rng(12345).integers(0, 2, (centres, bits), np.uint8)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, centres, n)
    flips = rng.random((n, bits), dtype=np.float32) < flip
    return np.packbits(middle[pick] ^ flips, axis=1), pick % classes


def best_score(evaluator, k, repeat):
    """The evaluator's score with the best queries/s of ``repeat`` calls."""
    scores = [evaluator.score_search(k) for _ in range(repeat)]
    return max(scores, key=lambda s: s.queries_per_second)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="database size")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--centres", type=int, default=100)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--flip", type=float, default=0.15)
    parser.add_argument("--nlist", type=int, default=None, help="default sqrt(n)")
    parser.add_argument("--nprobe", default="1,2,4,8,16,32,64")
    parser.add_argument("--k", default="10,100")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--codes", default=None, help=".npz of learned codes")
    args = parser.parse_args()
    ks = [int(k) for k in args.k.split(",")]
    if args.codes:
        with np.load(args.codes, allow_pickle=False) as stored:
            data = {name: stored[name] for name in NPZ_ARRAYS}
            args.bits = int(stored["bits"])
        args.n, args.queries = len(data["database_codes"]), len(data["query_codes"])
        what = f"learned by a model ({args.codes})"
    else:
        codes, labels = labelled_codes(
            args.n + args.queries, args.bits, args.centres, args.classes, args.flip, 0
        )
        data = dict(
            query_codes=codes[: args.queries],
            query_labels=labels[: args.queries],
            database_codes=codes[args.queries :],
            database_labels=labels[args.queries :],
        )
        what = (
            f"around {args.centres} centres ({args.flip:.0%} flips, "
            f"{args.classes} classes)"
        )
    start = time.perf_counter()
    ivf = IVFHammingIndex(args.bits, nlist=args.nlist)
    ivf.train(data["database_codes"])
    ivf.add(data["database_codes"])
    build = time.perf_counter() - start
    exact = keras_hash.HammingIndex(args.bits)
    exact.add(data["database_codes"])
    print(
        f"{args.n:,} database x {args.queries:,} queries, {args.bits}-bit codes "
        f"{what}; IVF nlist = {ivf.nlist}, built in {build:.1f} s; exact: "
        f"HammingIndex({exact.backend})"
    )
    scores = {}
    for index, name in [(exact, "exact")] + [
        (ivf, int(p)) for p in args.nprobe.split(",")
    ]:
        if name != "exact":
            ivf.nprobe = name
        index.search(data["query_codes"][:16], max(ks))  # warm-up
        evaluator = keras_hash.RetrievalEvaluator(
            **data, database=index, bits=args.bits
        )
        scores[name] = {k: best_score(evaluator, k, args.repeat) for k in ks}
    head = " | ".join(
        f"recall@{k} tie-aware | by id | mAP@{k} | missing | queries/s" for k in ks
    )
    print(f"\n| nprobe | {head} | speed vs exact (k={ks[-1]}) |")
    print("|" + " --- |" * (2 + 5 * len(ks)))
    exact_qps = scores["exact"][ks[-1]].queries_per_second
    for name, by_k in scores.items():
        cells = " | ".join(
            f"{s.recall:.3f} | {s.recall_by_id:.3f} | {s.map:.3f} | "
            f"{s.missing_fraction:.3f} | {s.queries_per_second:,.0f}"
            for s in by_k.values()
        )
        ratio = by_k[ks[-1]].queries_per_second / exact_qps
        print(f"| {name} | {cells} | {ratio:.1f}x |")


if __name__ == "__main__":
    main()
