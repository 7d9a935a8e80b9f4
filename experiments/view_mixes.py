"""Which mix of test-time views gives a trained hash model the best codes.

Encodes the queries and the database once per view (the image and its four
diagonal one-pixel shifts with reflected borders, each with its mirror: ten
backbone passes per image), then prints the protocol's mAP and precision@1
of the codes from several weightings of the views' features: the plain
image, the mirror average (``flip_average``), airbench's two shifts
(``translate_average``: down-right and up-left), and all four shifts, which
give an image and its mirror the same codes. Every mix is scored on the same
trained model, so differences are the views' alone. The features can be
cached (``--cache``, an ``.npz``), as the encoding takes about 15 minutes on
``cifar10-2`` on a 2-core CPU.

    python benchmarks/view_mixes.py --model=runs/cifar/model.keras \
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
flags.DEFINE_string("cache", None, "An .npz for the views' features (reused).")
flags.mark_flag_as_required("model")

# (rows down, columns right) of each view; each is also taken mirrored.
SHIFTS = ((0, 0), (1, 1), (-1, -1), (1, -1), (-1, 1))
# Weights of the views, in the order (shift 0, its mirror, shift 1, ...).
MIXES = {
    "plain image": [1, 0] + [0] * 8,
    "mirror average (flip_average)": [1 / 2] * 2 + [0] * 8,
    "airbench's two shifts (translate_average)": [1 / 4] * 2 + [1 / 8] * 4 + [0] * 4,
    "four shifts, image 1/2": [1 / 4] * 2 + [1 / 16] * 8,
    "four shifts, image 1/3": [1 / 6] * 2 + [1 / 12] * 8,
    "ten views, equal weights": [1 / 10] * 10,
}
TRANSLATE_AVERAGE = "airbench's two shifts (translate_average)"


def view_features(backbone):
    """A compiled function from images to features ``[N, views, D]``."""

    @tf.function(reduce_retracing=True)
    def views(images):
        images = tf.cast(images, tf.float32)
        padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        out = []
        for rows, cols in SHIFTS:
            view = padded[:, 1 - rows : 1 - rows + height, 1 - cols : 1 - cols + width]
            out.append(backbone(view, training=False))
            out.append(backbone(tf.reverse(view, axis=[2]), training=False))
        return tf.stack(out, axis=1)

    return views


def encode_views(views, images):
    return np.concatenate([views(b).numpy() for b in datasets.eval_dataset(images)])


def main(argv):
    del argv
    model = keras.saving.load_model(FLAGS.model, compile=False)
    train, test = cifar.load_cifar10(FLAGS.data_dir)
    images, labels = cifar.pool(train, test)
    split = cifar.split_indices(train[1], test[1], FLAGS.protocol, seed=FLAGS.seed)
    views = view_features(model.backbone)
    if FLAGS.cache and os.path.exists(FLAGS.cache):
        with np.load(FLAGS.cache) as cached:
            features = {name: cached[name] for name in ("query", "database")}
    else:
        features = {
            name: encode_views(views, images[getattr(split, name)])
            for name in ("query", "database")
        }
        if FLAGS.cache:
            np.savez(FLAGS.cache, **features)

    def codes(name, mix):
        weights = np.asarray(MIXES[mix], np.float32)[None, :, None]
        mixed = (features[name] * weights).sum(1)
        return keras_hash.pack_codes(model.hash_layer.logits(mixed).numpy(), "logits")

    problem = {
        "query_labels": labels[split.query],
        "database_labels": labels[split.database],
        "bits": model.bits,
    }
    top_k = cifar.MAP_TOP_K[FLAGS.protocol]
    for mix in MIXES:
        problem["query_codes"] = codes("query", mix)
        problem["database_codes"] = codes("database", mix)
        if mix == TRANSLATE_AVERAGE and model.flip_average and model.translate_average:
            # The airbench mix is the model's own translate_average encoding.
            sample = images[split.query[:256]]
            same = problem["query_codes"][:256] == model.encode(sample)
            print(f"bytes equal to model.encode on 256 queries: {same.mean():.4f}")
        value = evaluation.mean_average_precision(**problem, top_k=top_k)
        first = evaluation.precision_at_n(**problem, n=1)
        print(f"{mix}: mAP {value:.4f}, precision@1 {first:.4f}", flush=True)


if __name__ == "__main__":
    app.run(main)
