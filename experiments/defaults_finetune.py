"""Does the new hash-layer default hurt fine-tuning a pre-trained backbone?

Companion of ``experiments/defaults_grid.py`` (issue 21, item 1). Pre-trains
``keras_hash.backbones.cifar_resnet(width=16)`` as a softmax classifier on
``--pretrain`` CIFAR-10 training images (Adam 2e-3, batch 64,
``--pretrain_epochs``, random horizontal flips), then, from copies of that
pre-trained backbone, fine-tunes ``HashNet`` and ``DHN`` (32 bits) with the
old default (``normalize=False``), the normalized hash layer with BatchNorm's
moving averages (``precise_batch_norm=False``) and the library's default
on ``--database`` *other* training images (the database) and evaluates on
``--queries`` test images (mAP over the whole database). Every variant
starts from the same weights and sees the same batches (same seed).

    python experiments/defaults_finetune.py --data_dir=/work/shared/data/cifar10

Results are in ``docs/defaults.md``.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_hash  # noqa: E402
from keras_hash import backbones  # noqa: E402
from keras_hash import metrics as evaluation  # noqa: E402
from keras_hash.recipes import cifar  # noqa: E402

# old: the papers' plain hash layer; moving: normalized, BatchNorm moving
# averages (the default before precise_batch_norm); new: the library's.
VARIANTS = {
    "old": {"normalize": False, "precise_batch_norm": False},
    "moving": {"precise_batch_norm": False},
    "new": {},
}


def split(data_dir, pretrain, database, queries, seed):
    (x_train, y_train), (x_test, y_test) = cifar.load_cifar10(data_dir)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x_train))
    a, b = order[:pretrain], order[pretrain : pretrain + database]
    q = rng.permutation(len(x_test))[:queries]
    as_float = lambda x: x.astype("float32")  # noqa: E731
    return (
        (as_float(x_train[a]), y_train[a]),
        (as_float(x_train[b]), y_train[b]),
        (as_float(x_test[q]), y_test[q]),
    )


def pretrain_backbone(x, y, epochs, seed):
    keras.utils.set_random_seed(seed)
    backbone = backbones.cifar_resnet(width=16)
    inputs = keras.Input(x.shape[1:])
    flipped = keras.layers.RandomFlip("horizontal")(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(backbone(flipped))
    classifier = keras.Model(inputs, outputs)
    classifier.compile(
        keras.optimizers.Adam(2e-3),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    classifier.fit(x, y, batch_size=64, epochs=epochs, verbose=2)
    return backbone, classifier


def fine_tune(weights, method, variant, data, *, epochs, learning_rate, seed):
    (x_db, y_db), (x_q, y_q) = data
    keras.utils.set_random_seed(seed)
    backbone = backbones.cifar_resnet(width=16)
    backbone.set_weights(weights)
    model_class = {"hashnet": keras_hash.HashNet, "dhn": keras_hash.DHN}[method]
    model = model_class(backbone, bits=32, **VARIANTS[variant])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    start = time.perf_counter()
    model.fit(x_db, y_db, batch_size=64, epochs=epochs, verbose=0)
    value = evaluation.mean_average_precision(
        query_codes=model.encode(x_q),
        query_labels=y_q,
        database_codes=model.encode(x_db),
        database_labels=y_db,
        bits=model.bits,
    )
    return float(value), time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default="/work/shared/data/cifar10")
    parser.add_argument("--pretrain", type=int, default=5000)
    parser.add_argument("--database", type=int, default=5000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--pretrain_epochs", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--methods", default="hashnet,dhn")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train, db, queries = split(
        args.data_dir, args.pretrain, args.database, args.queries, args.seed
    )
    start = time.perf_counter()
    backbone, classifier = pretrain_backbone(*train, args.pretrain_epochs, args.seed)
    accuracy = classifier.evaluate(*queries, verbose=0)[1]
    print(
        f"pre-trained classifier: accuracy {accuracy:.3f} on the queries, "
        f"{time.perf_counter() - start:.0f} s",
        flush=True,
    )
    weights = backbone.get_weights()
    header = [f"{what} {name}" for name in VARIANTS for what in ("mAP", "s")]
    print("\n| method | " + " | ".join(header) + " |")
    print("| --- " * (1 + len(header)) + "|")
    for method in args.methods.split(","):
        cells = []
        for variant in VARIANTS:
            value, seconds = fine_tune(
                weights,
                method,
                variant,
                (db, queries),
                epochs=args.epochs,
                learning_rate=args.learning_rate,
                seed=args.seed,
            )
            cells += [f"{value:.3f}", f"{seconds:.0f}"]
        print("| " + " | ".join([method, *cells]) + " |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
