"""What a hash layer trained on cached features gives a trained model's backbone.

Loads a model written by ``examples/train_cifar.py``, encodes the training
images once with its backbone (un-augmented, one pass) and the queries and
the database with the model's own test-time averaging, then trains a fresh
hash layer on the cached training features for each of ``--epochs``
(``HashModel.fit_hash_layer``: SGD with Nesterov momentum 0.9, cosine decay
from ``--learning_rate``, weight decay 5e-4, batch 128, as
``train_cifar.py --cache_features``) and prints the protocol's mAP and
precision@1 of its codes beside the model's own hash layer. Every row uses
the same backbone, so differences are the hash layer's alone. The features
can be cached (``--cache``, an ``.npz``): with ``translate_average`` the
encoding takes about 10 minutes on ``cifar10-2`` on a 2-core CPU.

    python benchmarks/refit_hash_layer.py --model=runs/cifar/model.keras \
        --protocol=cifar10-2 --data_dir=../shared/data/cifar10
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_hash  # noqa: E402
from keras_hash import datasets  # noqa: E402
from keras_hash import metrics as evaluation  # noqa: E402
from keras_hash.recipes import cifar  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "A .keras file written by train_cifar.py.")
flags.DEFINE_enum("protocol", "cifar10-2", list(cifar.PROTOCOLS), "Split protocol.")
flags.DEFINE_string("data_dir", None, "Image-folder copy of CIFAR-10.")
flags.DEFINE_integer("seed", 0, "Seed of the split (the training run's).")
flags.DEFINE_list("epochs", ["1", "3", "10"], "Epochs of each re-fit.")
flags.DEFINE_float("learning_rate", 0.02, "Peak learning rate of the re-fits.")
flags.DEFINE_string("cache", None, "An .npz for the features (reused).")
flags.mark_flag_as_required("model")


def encode(function, images):
    """``function`` (compiled) over batches of ``images``, as one array."""
    function = tf.function(function, reduce_retracing=True)
    return np.concatenate(
        [function(batch).numpy() for batch in datasets.eval_dataset(images)]
    )


def fresh_copy(model, steps):
    """The model with a new hash layer, compiled as train_cifar's hashing phase."""
    copy = type(model)(
        model.backbone,
        model.bits,
        beta_schedule=model.hash_layer.beta_schedule,
        normalize=model.hash_layer.normalize,
    )
    copy.build(model.backbone.input_shape)
    schedule = keras.optimizers.schedules.CosineDecay(FLAGS.learning_rate, steps)
    copy.compile(
        optimizer=keras.optimizers.SGD(
            schedule, momentum=0.9, nesterov=True, weight_decay=5e-4
        )
    )
    return copy


def main(argv):
    del argv
    model = keras.saving.load_model(FLAGS.model, compile=False)
    train, test = cifar.load_cifar10(FLAGS.data_dir)
    images, labels = cifar.pool(train, test)
    split = cifar.split_indices(train[1], test[1], FLAGS.protocol, seed=FLAGS.seed)
    if FLAGS.cache and os.path.exists(FLAGS.cache):
        with np.load(FLAGS.cache) as cached:
            features = dict(cached)
    else:
        plain = lambda batch: model.backbone(batch, training=False)  # noqa: E731
        features = {
            "train": encode(plain, images[split.train]),
            "query": encode(model.features, images[split.query]),
            "database": encode(model.features, images[split.database]),
        }
        if FLAGS.cache:
            np.savez(FLAGS.cache, **features)
    problem = {
        "query_labels": labels[split.query],
        "database_labels": labels[split.database],
    }
    top_k = cifar.MAP_TOP_K[FLAGS.protocol]

    def report(name, hash_layer):
        for part in ("query", "database"):
            z = hash_layer.logits(features[part]).numpy()
            problem[f"{part}_codes"] = keras_hash.pack_codes(z, "logits")
            problem["bits"] = z.shape[1]
        value = evaluation.mean_average_precision(**problem, top_k=top_k)
        first = evaluation.precision_at_n(**problem, n=1)
        print(f"{name}: mAP {value:.4f}, precision@1 {first:.4f}", flush=True)

    report("the model's hash layer", model.hash_layer)
    batch_size = 128
    for epochs in map(int, FLAGS.epochs):
        steps = epochs * datasets.steps_per_epoch(len(features["train"]), batch_size)
        keras.utils.set_random_seed(FLAGS.seed)
        copy = fresh_copy(model, steps)
        copy.fit_hash_layer(
            features["train"],
            labels[split.train],
            batch_size=batch_size,
            epochs=epochs,
            seed=FLAGS.seed,
            verbose=0,
        )
        report(f"re-fit on cached training features, {epochs} epochs", copy.hash_layer)


if __name__ == "__main__":
    app.run(main)
