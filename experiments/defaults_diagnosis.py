"""Is the backbone or the hash objective the limit? (issue 21, item 1)

Trains a grid backbone (``experiments/defaults_grid.py``) as a plain softmax
classifier on the same digits split, optimizer, batch size and epochs as the
grid, and prints its accuracy on the training set (the database) and on the
297 queries, both at inference (BatchNormalization's moving statistics). If
the classifier is itself weak, no hash-layer default can make the codes
good; if it is strong, the hash objective's signal to the backbone is the
limit. Results are in ``docs/defaults.md``.

    python experiments/defaults_diagnosis.py --backbones=mobilenet
"""

import argparse
import importlib.util
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

_GRID = pathlib.Path(__file__).with_name("defaults_grid.py")
_spec = importlib.util.spec_from_file_location("defaults_grid", _GRID)
defaults_grid = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(defaults_grid)


def run_classifier(backbone, optimizer, data, *, epochs, batch_size, seed):
    """Returns ``(train accuracy, query accuracy, seconds)``."""
    (x_db, y_db), (x_q, y_q) = data
    keras.utils.set_random_seed(seed)
    net = defaults_grid.make_backbone(backbone)
    model = keras.Sequential([net, keras.layers.Dense(10, activation="softmax")])
    model.compile(
        optimizer=defaults_grid.make_optimizer(optimizer),
        loss="sparse_categorical_crossentropy",
    )
    start = time.perf_counter()
    model.fit(x_db, y_db, batch_size=batch_size, epochs=epochs, verbose=0)

    def accuracy(x, y):
        return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))

    return accuracy(x_db, y_db), accuracy(x_q, y_q), time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", default="mobilenet")
    parser.add_argument("--optimizers", default="adam1e-3")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = defaults_grid.digits_split(seed=args.seed)
    print("| backbone | optimizer | epochs | train acc | query acc | s |")
    print("| --- | --- | --- | --- | --- | --- |", flush=True)
    for backbone in args.backbones.split(","):
        for optimizer in args.optimizers.split(","):
            keras.backend.clear_session()
            train, query, seconds = run_classifier(
                backbone,
                optimizer,
                data,
                epochs=args.epochs,
                batch_size=args.batch_size,
                seed=args.seed,
            )
            print(
                f"| {backbone} | {optimizer} | {args.epochs} | {train:.3f} | "
                f"{query:.3f} | {seconds:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    sys.exit(main())
