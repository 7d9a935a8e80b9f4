"""Benchmark: what precise BatchNorm statistics add to ``fit``.

A ``HashNet`` on ``keras.applications.MobileNet`` (``weights=None``, 32x32x3,
``--alpha``) and ``--n`` random images: the median seconds of one training
epoch (batch 32, after a first epoch that traces) against the median of
``HashModel.recompute_batch_norm`` over the same images (``min(n / 32,
200)`` batches, eager forward passes in training mode), runs interleaved,
and their ratio.

    python benchmarks/bench_precise_batch_norm.py
    python benchmarks/bench_precise_batch_norm.py --n 6400 --alpha 0.5
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_hash  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1500)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (args.n, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, args.n)
    backbone = keras.applications.MobileNet(
        input_shape=(32, 32, 3),
        include_top=False,
        pooling="avg",
        weights=None,
        alpha=args.alpha,
    )
    model = keras_hash.HashNet(backbone, bits=32, precise_batch_norm=False)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)  # trace
    model.recompute_batch_norm(x)
    epochs, passes = [], []
    for _ in range(args.repeat):
        start = time.perf_counter()
        model.fit(x, y, batch_size=32, epochs=1, verbose=0)
        epochs.append(time.perf_counter() - start)
        start = time.perf_counter()
        batches = model.recompute_batch_norm(x)
        passes.append(time.perf_counter() - start)
    epoch, recompute = float(np.median(epochs)), float(np.median(passes))
    print(
        f"MobileNet(alpha={args.alpha}), {args.n} images, batch 32: one epoch "
        f"{epoch:.2f} s; precise statistics ({batches} batches) {recompute:.2f} s "
        f"= {recompute / epoch:.2f} of an epoch (median of {args.repeat})"
    )


if __name__ == "__main__":
    main()
