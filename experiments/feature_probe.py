"""How much of what a trained hash model's features know its codes keep.

Fits a linear softmax probe on the training split (no augmentation) to three
representations of a saved model, and prints the probe's accuracy on the
queries for each: the backbone's features, the hash logits ``z``, and the
binary codes ``sign(z)``; then the nearest-class-mean accuracy of the binary
codes. Compare the first with the same backbone trained as a classifier
(``train_cifar.py --pretrain_epochs``) to see what the hash objective costs
the features, and the others with the first to see what the hash head drops.
Features are averaged over flips and translations as the model's codes are
(``--flip_average``, ``--translate_average``).

With ``--ranking``, it also encodes the database and prints the protocol's
mAP of the binary codes (Hamming ranking) beside the mAP of real-valued
rankings of the same model: cosine similarity of ``z`` and of the features,
and ``p_q . p_d``, the probability under the probe that query and database
item share a class (the ranking a calibrated classifier would give). How far
these lie above the codes' mAP is what a better hash head could still win
from these features.

    python benchmarks/feature_probe.py --model=runs/cifar/model.keras \
        --protocol=cifar10-2 --data_dir=../shared/data/cifar10 [--ranking]
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_hash  # noqa: E402
from keras_hash import datasets  # noqa: E402
from keras_hash.recipes import cifar  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "A .keras file written by train_cifar.py.")
flags.DEFINE_enum("protocol", "dhn", list(cifar.PROTOCOLS), "Split protocol.")
flags.DEFINE_string("data_dir", None, "Image-folder copy of CIFAR-10.")
flags.DEFINE_integer("seed", 0, "Seed of the split (the training run's).")
flags.DEFINE_integer("probe_epochs", 30, "Epochs of the linear probe (Adam).")
flags.DEFINE_bool("ranking", False, "Also compare real-valued rankings' mAP.")
flags.mark_flag_as_required("model")


def representer(model):
    """A compiled function from images to (features, hash logits), averaged
    over flips and translations as the model encodes."""

    @tf.function(reduce_retracing=True)
    def both(batch):
        features = model.features(batch)
        return features, model.hash_layer.logits(features)

    return both


def representations(represent, images):
    """``represent``'s features and hash logits of ``images``, numpy."""
    out = {"features": [], "logits": []}
    for batch in datasets.eval_dataset(images):
        features, logits = represent(batch)
        out["features"].append(features.numpy())
        out["logits"].append(logits.numpy())
    return {name: np.concatenate(parts) for name, parts in out.items()}


def fit_probe(train_x, train_y, epochs):
    """A linear softmax classifier fitted on standardized inputs; returns
    a function from inputs to class probabilities."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    num_classes = int(train_y.max()) + 1
    probe = keras.Sequential(
        [keras.Input((train_x.shape[1],)), keras.layers.Dense(num_classes)]
    )
    probe.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    probe.fit((train_x - mean) / std, train_y, batch_size=256, epochs=epochs, verbose=0)

    def probabilities(x):
        logits = probe.predict((x - mean) / std, batch_size=1024, verbose=0)
        return tf.nn.softmax(logits).numpy()

    return probabilities


def probe_accuracy(train_x, train_y, query_x, query_y, epochs):
    """Query accuracy of :func:`fit_probe`'s classifier."""
    probabilities = fit_probe(train_x, train_y, epochs)
    return float(np.mean(probabilities(query_x).argmax(1) == query_y))


def ranked_map(query, database, query_y, database_y, top_k, chunk=256):
    """mAP of ranking the database by ``query @ database.T``, descending.

    AP@K as in :mod:`keras_hash.metrics` (normalized by the relevant
    items in the top K, ties by database index, empty queries score 0),
    written independently for real-valued scores.
    """
    k = len(database) if top_k is None else top_k
    total = 0.0
    for start in range(0, len(query), chunk):
        scores = query[start : start + chunk] @ database.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        rel = database_y[order] == query_y[start : start + chunk, None]
        hits = np.cumsum(rel, axis=1)
        precision = hits / np.arange(1, k + 1)
        found = np.maximum(hits[:, -1], 1)
        total += float(np.sum((precision * rel).sum(1) / found))
    return total / len(query)


def unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def compare_rankings(represent, images, labels, split, train_rep, query_rep):
    """Prints the codes' mAP and real-valued rankings' mAP (see --ranking)."""
    database_rep = representations(represent, images[split.database])
    query_y, database_y = labels[split.query], labels[split.database]
    top_k = cifar.MAP_TOP_K[FLAGS.protocol]
    codes = keras_hash.metrics.mean_average_precision(
        query_codes=keras_hash.pack_codes(query_rep["logits"], "logits"),
        query_labels=query_y,
        database_codes=keras_hash.pack_codes(database_rep["logits"], "logits"),
        database_labels=database_y,
        bits=query_rep["logits"].shape[1],
        top_k=top_k,
    )
    print(f"mAP of the binary codes (Hamming): {codes:.4f}", flush=True)
    for name in ("logits", "features"):
        value = ranked_map(
            unit(query_rep[name]),
            unit(database_rep[name]),
            query_y,
            database_y,
            top_k,
        )
        print(f"mAP of cosine similarity of the {name}: {value:.4f}", flush=True)
    probabilities = fit_probe(
        train_rep["features"], labels[split.train], FLAGS.probe_epochs
    )
    value = ranked_map(
        probabilities(query_rep["features"]),
        probabilities(database_rep["features"]),
        query_y,
        database_y,
        top_k,
    )
    print(f"mAP of p_q . p_d (linear probe on the features): {value:.4f}", flush=True)


def main(argv):
    del argv
    keras.utils.set_random_seed(FLAGS.seed)
    model = keras.saving.load_model(FLAGS.model, compile=False)
    train, test = cifar.load_cifar10(FLAGS.data_dir)
    images, labels = cifar.pool(train, test)
    split = cifar.split_indices(train[1], test[1], FLAGS.protocol, seed=FLAGS.seed)
    represent = representer(model)
    train_rep = representations(represent, images[split.train])
    query_rep = representations(represent, images[split.query])
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
    if FLAGS.ranking:
        compare_rankings(represent, images, labels, split, train_rep, query_rep)


if __name__ == "__main__":
    app.run(main)
