"""How much of what a trained hash model's features know its codes keep.

Fits a linear softmax probe on the training split (no augmentation) to three
representations of a saved model, and prints the probe's accuracy on the
queries for each: the backbone's features, the hash logits ``z``, and the
binary codes ``sign(z)``; then the nearest-class-mean accuracy of the binary
codes. Compare the first with the same backbone trained as a classifier
(``train_cifar.py --pretrain_epochs``) to see what the hash objective costs
the features, and the others with the first to see what the hash head drops.

    python benchmarks/feature_probe.py --model=runs/cifar/model.keras \
        --protocol=cifar10-2 --data_dir=../shared/data/cifar10
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_hash  # noqa: E402, F401 - registers the model classes
from keras_hash import datasets  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "A .keras file written by train_cifar.py.")
flags.DEFINE_enum("protocol", "dhn", list(datasets.PROTOCOLS), "Split protocol.")
flags.DEFINE_string("data_dir", None, "Image-folder copy of CIFAR-10.")
flags.DEFINE_integer("seed", 0, "Seed of the split (the training run's).")
flags.DEFINE_integer("probe_epochs", 30, "Epochs of the linear probe (Adam).")
flags.mark_flag_as_required("model")


def representations(model, images):
    """Backbone features and hash logits of ``images``, float32 numpy."""
    features = tf.function(lambda x: model.backbone(x, training=False))
    logits = tf.function(model.code_logits)
    out = {"features": [], "logits": []}
    for batch in datasets.eval_dataset(images):
        out["features"].append(features(batch).numpy())
        out["logits"].append(logits(batch).numpy())
    return {name: np.concatenate(parts) for name, parts in out.items()}


def probe_accuracy(train_x, train_y, query_x, query_y, epochs):
    """Query accuracy of a linear softmax classifier fitted on standardized inputs."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    num_classes = int(train_y.max()) + 1
    probe = keras.Sequential(
        [keras.Input((train_x.shape[1],)), keras.layers.Dense(num_classes)]
    )
    probe.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    probe.fit((train_x - mean) / std, train_y, batch_size=256, epochs=epochs, verbose=0)
    return probe.evaluate((query_x - mean) / std, query_y, verbose=0)[1]


def main(argv):
    del argv
    keras.utils.set_random_seed(FLAGS.seed)
    model = keras.saving.load_model(FLAGS.model, compile=False)
    train, test = datasets.load_cifar10(FLAGS.data_dir)
    images, labels = datasets.pool(train, test)
    split = datasets.split_indices(train[1], test[1], FLAGS.protocol, seed=FLAGS.seed)
    train_rep = representations(model, images[split.train])
    query_rep = representations(model, images[split.query])
    train_y, query_y = labels[split.train], labels[split.query]
    inputs = {
        "backbone features": (train_rep["features"], query_rep["features"]),
        "hash logits z": (train_rep["logits"], query_rep["logits"]),
        "binary codes sign(z)": (
            np.sign(train_rep["logits"]),
            np.sign(query_rep["logits"]),
        ),
    }
    for name, (train_x, query_x) in inputs.items():
        accuracy = probe_accuracy(
            train_x, train_y, query_x, query_y, FLAGS.probe_epochs
        )
        print(f"linear probe on {name}: query accuracy {accuracy:.4f}", flush=True)
    codes = np.sign(train_rep["logits"])
    centres = np.stack([codes[train_y == c].mean(0) for c in np.unique(train_y)])
    nearest = np.argmax(np.sign(query_rep["logits"]) @ centres.T, axis=1)
    print(
        f"nearest class mean of binary codes: query accuracy "
        f"{np.mean(nearest == query_y):.4f}",
        flush=True,
    )


if __name__ == "__main__":
    app.run(main)
