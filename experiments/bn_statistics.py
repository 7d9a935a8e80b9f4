"""Are failing grid cells a BatchNorm-statistics problem? (issue 21, item 1)

Trains one cell of ``experiments/defaults_grid.py`` (digits, 32 bits, batch
32, 20 epochs) and scores the codes three ways:

- ``moving``: ``model.encode`` (BatchNormalization's moving statistics, as
  shipped);
- ``precise``: after ``model.recompute_batch_norm(train_images)`` (PreciseBN,
  :mod:`keras_hash.batch_norm`: each BatchNormalization's moving statistics
  set to the mean of its batch statistics over the 46 training batches of
  32 under the final weights; the library's default at the end of ``fit``);
- and prints the training loss of the last epoch.

The model trains with ``precise_batch_norm=False``, so both scores come
from the same weights.

If ``precise`` passes where ``moving`` fails, the codes are good and only
the inference statistics lag.

    python experiments/bn_statistics.py --backbone=mobilenet_100 \\
        --optimizer=adam1e-3 --method=dhn --seed=0
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import defaults_grid as grid  # noqa: E402
import keras  # noqa: E402

import keras_hash  # noqa: E402
from keras_hash import metrics as evaluation  # noqa: E402


def score(model, data):
    (x_db, y_db), (x_q, y_q) = data
    return evaluation.mean_average_precision(
        query_codes=model.encode(x_q),
        query_labels=y_q,
        database_codes=model.encode(x_db),
        database_labels=y_db,
        bits=model.bits,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="mobilenet_100")
    parser.add_argument("--optimizer", default="adam1e-3")
    parser.add_argument("--method", default="dhn")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = grid.digits_split(seed=args.seed)
    (x_db, y_db), _ = data
    keras.utils.set_random_seed(args.seed)
    model_class = {"hashnet": keras_hash.HashNet, "dhn": keras_hash.DHN}[args.method]
    model = model_class(
        grid.make_backbone(args.backbone), bits=32, precise_batch_norm=False
    )
    model.compile(optimizer=grid.make_optimizer(args.optimizer))
    start = time.perf_counter()
    history = model.fit(x_db, y_db, batch_size=32, epochs=args.epochs, verbose=0)
    moving = score(model, data)
    count = model.recompute_batch_norm(x_db)
    precise = score(model, data)
    print(
        f"| {args.backbone} | {args.optimizer} | {args.method} | {args.seed} | "
        f"{moving:.3f} | {precise:.3f} | {history.history['loss'][-1]:.3f} | "
        f"{count} | {time.perf_counter() - start:.0f} |",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
