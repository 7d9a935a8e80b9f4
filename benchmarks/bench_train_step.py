"""Cost of the hash head and pairwise loss: HashNet vs a softmax classifier.

Both models share the same backbone architecture, batch and optimizer; the
only difference is the head (HashLayer + HashNetLoss vs Dense + softmax
cross-entropy). Steps of the two are interleaved in one run so that machine
noise hits both alike, and the ratio of median step times is printed.

    python benchmarks/bench_train_step.py --bits 64 --batch_size 128
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from timing import median_step_seconds  # noqa: E402

import keras_hash  # noqa: E402


def backbone():
    """A small VGG-style CNN for 32x32 images (~40 MFLOP per image)."""
    layers = [keras.Input((32, 32, 3))]
    for filters in (32, 64, 128):
        layers += [
            keras.layers.Conv2D(filters, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(filters, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
        ]
    layers += [keras.layers.GlobalAveragePooling2D()]
    return keras.Sequential(layers)


def models(bits, classes):
    keras.utils.set_random_seed(0)
    hashnet = keras_hash.HashNet(backbone(), bits=bits)
    hashnet.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    keras.utils.set_random_seed(0)
    classifier = keras.Sequential([backbone(), keras.layers.Dense(classes)])
    classifier.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return {"hashnet": hashnet, "classifier": classifier}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (args.batch_size, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, args.classes, args.batch_size)
    candidates = models(args.bits, args.classes)
    medians = median_step_seconds(candidates, x, y, args.steps)
    for name, median in medians.items():
        print(f"{name:>10}: {median * 1e3:8.2f} ms/step (median of {args.steps})")
    ratio = medians["hashnet"] / medians["classifier"]
    print(f"hashnet / classifier step time: {ratio:.3f} (goal <= 1.05)")


if __name__ == "__main__":
    main()
