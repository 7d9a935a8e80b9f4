"""Which DHN setting trains the grid's failing cells? (issue 21, item 1)

``experiments/defaults_grid.py`` found DHN below mAP 0.90 with Adam on
``keras.applications`` backbones trained from scratch, where HashNet
passes. This script trains ``keras_hash.DHN`` with the library's hash layer
on one cell of that grid (same digits split, 32 bits, batch 32, 20 epochs,
seed 0) under variants of its loss, and prints one markdown row per variant:

- ``base``: ``DHNLoss()`` (scale 1/2, lambda 0.1: the paper's);
- ``scale10K``: ``DHNLoss(scale=10 / K)``, HashNet's inner-product scale;
- ``q0``: ``DHNLoss(quantization_weight=0)``;
- ``balanced``: the paper's loss with HashNet's pair weights
  (``|S| / |S1|`` for similar pairs, ``|S| / |S0|`` for dissimilar ones);
- ``balanced10K``: both of the above;
- ``continuation``: the paper's loss, with HashNet's continuation ``beta``
  (``HashNetContinuation()``) in the hash layer instead of a plain ``tanh``;
- ``continuation10K``: the continuation with ``scale=10 / K``.

    python experiments/defaults_dhn.py --backbone=mobilenet_100 \\
        --optimizer=adam1e-3 --variants=base,scale10K

Results in ``docs/defaults.md``.
"""

import argparse
import functools
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import defaults_grid as grid  # noqa: E402
import keras  # noqa: E402
from keras import ops  # noqa: E402

import keras_hash  # noqa: E402
from keras_hash import losses  # noqa: E402
from keras_hash import metrics as evaluation  # noqa: E402


def balanced_dhn_loss(
    labels,
    codes,
    ref_labels=None,
    ref_codes=None,
    *,
    scale=0.5,
    quantization_weight=0.1,
    row_offset=None,
    total=lambda count: count,
):
    """DHN's loss with HashNet's pair weights (an experiment, not the library's)."""
    pair_loss = functools.partial(losses._likelihood, scale=scale)
    rows, codes = losses._rows(
        labels, codes, ref_labels, ref_codes, row_offset, total, pair_loss, True
    )
    quantization = ops.sum(losses.stable_logcosh(ops.abs(codes) - 1.0), axis=-1)
    return rows + quantization_weight * quantization


class BalancedDHNLoss(losses.DHNLoss):
    function = staticmethod(balanced_dhn_loss)


def variant_loss(name: str, bits: int) -> keras.losses.Loss:
    variants = {
        "base": lambda: losses.DHNLoss(),
        "scale10K": lambda: losses.DHNLoss(scale=10 / bits),
        "q0": lambda: losses.DHNLoss(quantization_weight=0.0),
        "balanced": lambda: BalancedDHNLoss(),
        "balanced10K": lambda: BalancedDHNLoss(scale=10 / bits),
        "continuation": lambda: losses.DHNLoss(),
        "continuation10K": lambda: losses.DHNLoss(scale=10 / bits),
    }
    if name not in variants:
        raise ValueError(f"unknown variant {name!r}; choose from {list(variants)}")
    return variants[name]()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="mobilenet_100")
    parser.add_argument("--optimizer", default="adam1e-3")
    parser.add_argument("--variants", default="base,scale10K,q0,balanced")
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    (x_db, y_db), (x_q, y_q) = grid.digits_split(seed=args.seed)
    print("| backbone | optimizer | DHN loss | mAP | s |")
    print("| --- | --- | --- | --- | --- |")
    for name in args.variants.split(","):
        keras.utils.set_random_seed(args.seed)
        continuation = name.startswith("continuation")
        schedule = keras_hash.HashNetContinuation() if continuation else None
        model = keras_hash.DHN(
            grid.make_backbone(args.backbone), bits=args.bits, beta_schedule=schedule
        )
        model.compile(
            optimizer=grid.make_optimizer(args.optimizer),
            loss=variant_loss(name, args.bits),
        )
        start = time.perf_counter()
        model.fit(x_db, y_db, batch_size=32, epochs=args.epochs, verbose=0)
        value = evaluation.mean_average_precision(
            query_codes=model.encode(x_q),
            query_labels=y_q,
            database_codes=model.encode(x_db),
            database_labels=y_db,
            bits=model.bits,
        )
        seconds = time.perf_counter() - start
        print(
            f"| {args.backbone} | {args.optimizer} | {name} | {value:.3f} | "
            f"{seconds:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
