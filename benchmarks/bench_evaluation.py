"""Benchmark: keras_hash.metrics mAP against the research-code formulation.

The reference is how HashNet/DHN evaluation code computes mAP: float inner
products of ±1 codes per query, ``argsort`` of the Hamming distances (here
``kind="stable"``, so that ties go by database index like ours), then
precision at every relevant position. Queries without a relevant item in
their top K are skipped, as in the official HashNet code (``empty="skip"``).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_evaluation.py          # full size
    python benchmarks/bench_evaluation.py --scale 0.1                 # 10x smaller

Prints both values (they must agree to 1e-9) and the speed-up; then the
time of mAP alone against all four metrics (mAP, precision within radius 2,
the precision-recall curve, precision@100) from one
:class:`keras_hash.RetrievalEvaluator`, as a ratio (runs interleaved, best of
``--repeat``).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from keras_hash import metrics as evaluation  # noqa: E402


def clustered_codes(rng, n, bits, centers, flip):
    """Codes of ``len(centers)`` classes: class centre with bits flipped."""
    labels = rng.integers(0, len(centers), size=n)
    flips = rng.random((n, bits)) < flip
    return np.packbits(centers[labels] ^ flips, axis=1), labels


def reference_map(query_codes, query_labels, database_codes, database_labels, top_k):
    """Research-code mAP: float inner products and an argsort per query."""
    bits = query_codes.shape[1] * 8
    q_signs = np.unpackbits(query_codes, axis=1).astype(np.float32) * 2 - 1
    db_signs = np.unpackbits(database_codes, axis=1).astype(np.float32) * 2 - 1
    classes = max(query_labels.max(), database_labels.max()) + 1
    q_onehot = np.eye(classes, dtype=np.float32)[query_labels]
    db_onehot = np.eye(classes, dtype=np.float32)[database_labels]
    aps = []
    for i in range(len(query_codes)):
        relevant = (q_onehot[i] @ db_onehot.T > 0).astype(np.float32)
        hamming = 0.5 * (bits - q_signs[i] @ db_signs.T)
        order = np.argsort(hamming, kind="stable")
        relevant = relevant[order][:top_k]
        hits = int(relevant.sum())
        if hits == 0:
            continue
        count = np.linspace(1, hits, hits)
        positions = np.flatnonzero(relevant == 1) + 1.0
        aps.append(np.mean(count / positions))
    return float(np.mean(aps))


def all_four(data, top_k, repeat):
    """Best times of mAP alone (function, evaluator) and of all four metrics."""
    times = {"function": float("inf"), "map": float("inf"), "all": float("inf")}
    for _ in range(repeat):
        for what in times:
            start = time.perf_counter()
            if what == "function":
                evaluation.mean_average_precision(**data, top_k=top_k)
            else:
                evaluator = evaluation.RetrievalEvaluator(**data)
                evaluator.map(top_k=top_k)
            if what == "all":
                evaluator.precision_at_radius(2)
                evaluator.precision_recall_curve()
                evaluator.precision_at_n(100)
            times[what] = min(times[what], time.perf_counter() - start)
    return times


def run(name, n_queries, n_database, top_k, bits, seed, repeat):
    rng = np.random.default_rng(seed)
    centers = rng.integers(0, 2, size=(10, bits), dtype=np.uint8)
    query_codes, query_labels = clustered_codes(rng, n_queries, bits, centers, 0.2)
    database_codes, database_labels = clustered_codes(
        rng, n_database, bits, centers, 0.2
    )
    data = dict(
        query_codes=query_codes,
        query_labels=query_labels,
        database_codes=database_codes,
        database_labels=database_labels,
        bits=bits,
    )
    ours, fast = None, float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        ours = evaluation.mean_average_precision(**data, top_k=top_k, empty="skip")
        fast = min(fast, time.perf_counter() - start)
    start = time.perf_counter()
    ref = reference_map(
        query_codes, query_labels, database_codes, database_labels, top_k or n_database
    )
    slow = time.perf_counter() - start
    start = time.perf_counter()
    expected = evaluation.mean_average_precision(
        **data, top_k=top_k, empty="skip", ties="expected"
    )
    tie_aware = time.perf_counter() - start
    print(
        f"{name}: {n_queries:,} queries x {n_database:,} database, {bits} bits\n"
        f"  keras_hash  mAP = {ours:.12f}  {fast:8.3f} s\n"
        f"  reference   mAP = {ref:.12f}  {slow:8.3f} s\n"
        f"  |difference| = {abs(ours - ref):.1e}, speed-up {slow / fast:.1f}x\n"
        f"  tie-aware (ties='expected') mAP = {expected:.12f}  {tie_aware:8.3f} s"
    )
    assert abs(ours - ref) < 1e-9, "values disagree"
    t = all_four(data, top_k, repeat)
    print(
        f"  mAP alone: function {t['function']:.3f} s, evaluator {t['map']:.3f} s"
        f" | evaluator mAP + P@r=2 + PR curve + P@100 {t['all']:.3f} s"
        f" | ratio {t['all'] / t['map']:.2f}x evaluator,"
        f" {t['all'] / t['function']:.2f}x function"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="shrink sizes")
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    s = args.scale
    run(
        "mAP", int(10_000 * s), int(50_000 * s), None, args.bits, args.seed, args.repeat
    )
    run(
        "mAP@1000",
        int(5_000 * s),
        int(128_000 * s),
        1000,
        args.bits,
        args.seed,
        args.repeat,
    )


if __name__ == "__main__":
    main()
