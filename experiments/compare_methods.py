"""HashNet, DHN, DCH, CSQ and DPSH on one backbone and recipe (issue 23).

Loads a model written by ``examples/train_cifar.py`` (the default recipe:
airbench's ``whitened_cnn`` pre-trained as a classifier, then frozen),
computes once the backbone's features of the un-augmented training images
(one pass, as the recipe's cached-feature hashing phase does) and of the
query and database images (``model.features``: the model's mirror and
translation averaging, as its codes are computed), then for every method
and code length trains a fresh hash layer of that method on the cached
training features with the hashing phase of the run's preset
(``--preset``; ``cifar10-2``: ``pipeline.build_model``, 3 epochs, batch
128, SGD with Nesterov momentum 0.9 from 0.02 with cosine decay, weight
decay 5e-4, each method's default loss) and prints a markdown table of mAP
(the preset's protocol: @1000 for ``cifar10-2``, the whole database for
``dhn``), precision within Hamming radius 2 and the share of queries whose
radius-2 ball is empty (``keras_hash.RetrievalEvaluator``). Every row uses
the same frozen backbone and features, so differences are the methods'.

    python experiments/compare_methods.py --model=runs/seed0/model.keras \\
        --data_dir=../shared/data/cifar10 --cache=runs/compare_features.npz
    python experiments/compare_methods.py --preset=dhn --bits=48 \\
        --model=runs/dhn_frozen/model.keras --data_dir=../shared/data/cifar10

Results in ``docs/methods.md``.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_hash  # noqa: E402
import keras_hash.recipes.airbench  # noqa: E402, F401  (registers its layers)
from keras_hash import datasets  # noqa: E402
from keras_hash.recipes import cifar, pipeline, presets  # noqa: E402

METHODS = ("hashnet", "dhn", "dch", "csq", "dpsh")
BITS = (16, 32, 64)


def encode(function, images):
    """``function`` (compiled) over batches of ``images``, as one array."""
    function = tf.function(function, reduce_retracing=True)
    return np.concatenate(
        [function(batch).numpy() for batch in datasets.eval_dataset(images)]
    )


def cached_features(model, images, split, cache):
    """Train (one plain pass), query and database (the model's averaging)."""
    if cache and os.path.exists(cache):
        with np.load(cache) as stored:
            return dict(stored)
    plain = lambda batch: model.backbone(batch, training=False)  # noqa: E731
    start = time.perf_counter()
    features = {
        "train": encode(plain, images[split.train]),
        "query": encode(model.features, images[split.query]),
        "database": encode(model.features, images[split.database]),
    }
    print(f"features in {time.perf_counter() - start:.0f} s", flush=True)
    if cache:
        np.savez(cache, **features)
    return features


def evaluate(hash_layer, features, labels, split, top_k):
    """mAP@top_k and radius-2 figures of the hash layer's codes of the features."""
    problem = {"bits": hash_layer.bits}
    for part, index in (("query", split.query), ("database", split.database)):
        logits = hash_layer.logits(features[part]).numpy()
        problem[f"{part}_codes"] = keras_hash.pack_codes(logits, "logits")
        problem[f"{part}_labels"] = labels[index]
    evaluator = keras_hash.RetrievalEvaluator(**problem)
    radius = evaluator.precision_at_radius(2)
    return {
        "map": float(evaluator.map(top_k=top_k)),
        "precision_radius_2": float(radius.precision),
        "empty_radius_2": float(radius.empty_fraction),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="model.keras of a run")
    parser.add_argument("--data_dir", default=None, help="CIFAR-10 image folders")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed")
    parser.add_argument(
        "--preset",
        default="cifar10-2",
        help="the run's preset: its protocol, and its hashing phase for every row",
    )
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--bits", default=",".join(map(str, BITS)))
    parser.add_argument("--cache", default=None, help=".npz of the features")
    parser.add_argument("--output", default=None, help="also write rows as JSON")
    args = parser.parse_args(argv)

    model = keras.saving.load_model(args.model, compile=False)
    train, test = cifar.load_cifar10(args.data_dir)
    images, labels = cifar.pool(train, test)
    protocol = presets.get(args.preset).protocol
    split = cifar.split_indices(train[1], test[1], protocol, seed=args.seed)
    top_k = cifar.MAP_TOP_K[protocol]
    features = cached_features(model, images, split, args.cache)
    train_labels = labels[split.train]
    num_classes = int(train_labels.max()) + 1

    rows = [
        {
            "method": f"{model.name} (the run's own hash layer)",
            "bits": model.bits,
            **evaluate(model.hash_layer, features, labels, split, top_k),
            "seconds": None,
        }
    ]
    print(rows[0], flush=True)
    for method in args.methods.split(","):
        for bits in map(int, args.bits.split(",")):
            recipe = presets.get(
                args.preset,
                method=method,
                bits=bits,
                seed=args.seed,
                finetune_backbone=False,
                cache_features=True,
            )
            keras.utils.set_random_seed(recipe.seed)
            fresh = pipeline.build_model(
                recipe, images.shape[1:], model.backbone, len(split.train), num_classes
            )
            start = time.perf_counter()
            fresh.fit_hash_layer(
                features["train"],
                train_labels,
                batch_size=recipe.batch_size,
                epochs=recipe.epochs,
                seed=recipe.seed,
                verbose=0,
            )
            seconds = time.perf_counter() - start
            result = evaluate(fresh.hash_layer, features, labels, split, top_k)
            rows.append({"method": method, "bits": bits, **result, "seconds": seconds})
            print(rows[-1], flush=True)

    depth = f"@{top_k}" if top_k else " (whole database)"
    print(f"\n| method | bits | mAP{depth} | precision r<=2 | empty r<=2 | fit s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        seconds = "" if row["seconds"] is None else f"{row['seconds']:.0f}"
        print(
            f"| {row['method']} | {row['bits']} | {row['map']:.4f} | "
            f"{row['precision_radius_2']:.4f} | {row['empty_radius_2']:.1%} | "
            f"{seconds} |"
        )
    if args.output:
        with open(args.output, "w") as stream:
            json.dump(rows, stream, indent=1)


if __name__ == "__main__":
    sys.exit(main())
