"""Export benchmark: encoding throughput, file size and code parity per format.

Trains a small HashNet on scikit-learn's digits (8x8 grayscale, 1,797 images,
no download; 1,000 train, 200 held-out queries, 597 held-out + 1,000 train
as database), exports a SavedModel and the four TFLite variants, and reports,
on the same images and machine:

- images/s of ``model.encode``, the SavedModel's ``serving_default`` and each
  TFLite file (LiteRT interpreter), and the ratio to ``model.encode``;
- file size, and its ratio to the float32 TFLite file;
- bit agreement with ``model.encode`` and the mAP change (full ranking,
  ties by index) of the queries against the database.

```
flock /tmp/heavy.lock python benchmarks/bench_export.py --images=8192
```
"""

from __future__ import annotations

import functools
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import keras_hash  # noqa: E402
from keras_hash import export  # noqa: E402
from keras_hash import metrics as evaluation  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("images", 8192, "Images per throughput run (digits tiled).")
flags.DEFINE_integer("epochs", 15, "Training epochs.")
flags.DEFINE_integer("batch_size", 256, "Encoding batch size, every format.")
flags.DEFINE_integer("repeats", 3, "Timed runs per format; the best is kept.")
flags.DEFINE_integer("threads", 2, "LiteRT interpreter threads.")


def digits():
    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.images))
    images = np.minimum(data.images[order].astype("float32")[..., None] * 16, 255)
    return images, data.target[order]


def train(images, labels):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    model = keras_hash.HashNet(keras.Model(inputs, x), bits=32)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(
        images[:1000], labels[:1000], batch_size=64, epochs=FLAGS.epochs, verbose=0
    )
    return model


def best_rate(encode, images) -> float:
    encode(images[: FLAGS.batch_size])
    times = []
    for _ in range(FLAGS.repeats):
        start = time.perf_counter()
        encode(images)
        times.append(time.perf_counter() - start)
    return len(images) / min(times)


def saved_model_encoder(path):
    serve = tf.saved_model.load(path).signatures["serving_default"]
    size = FLAGS.batch_size

    def encode(images):
        chunks = [
            serve(images=tf.constant(images[i : i + size]))["codes"].numpy()
            for i in range(0, len(images), size)
        ]
        return np.concatenate(chunks)

    return encode


def retrieval_map(codes, labels) -> float:
    queries = slice(1000, 1200)
    database = np.r_[0:1000, 1200 : len(codes)]
    return evaluation.mean_average_precision(
        query_codes=codes[queries],
        query_labels=labels[queries],
        database_codes=codes[database],
        database_labels=labels[database],
        bits=codes.shape[1] * 8,  # the exporters' packed output
    )


def directory_size(path) -> int:
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def measure(model, images, labels, root):
    many = np.resize(images, (FLAGS.images, *images.shape[1:]))
    reference = model.encode(images)
    rows = [("model.encode", best_rate(model.encode, many), None, reference)]
    saved = export.export_saved_model(model, root)
    encode = saved_model_encoder(saved)
    rows.append(
        ("SavedModel", best_rate(encode, many), directory_size(saved), encode(images))
    )
    for quantization in export.QUANTIZATIONS:
        path = export.export_tflite(
            model,
            os.path.join(root, f"{quantization}.tflite"),
            quantization,
            representative_images=images[:500] if quantization == "int8" else None,
        )
        encoder = export.TFLiteEncoder(path, num_threads=FLAGS.threads)
        rate = best_rate(
            functools.partial(encoder.encode, batch_size=FLAGS.batch_size), many
        )
        rows.append(
            (
                f"TFLite {quantization}",
                rate,
                os.path.getsize(path),
                encoder.encode(images),
            )
        )
    return rows, reference


def report(rows, reference, labels):
    base_rate = rows[0][1]
    base_map = retrieval_map(reference, labels)
    float_size = rows[2][2]
    print(f"reference mAP (model.encode): {base_map:.4f}")
    print(
        "| format | images/s | × encode | bytes | × float32 .tflite "
        "| bit agreement | exact | ΔmAP |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, rate, size, codes in rows:
        agree = np.mean(np.unpackbits(codes, -1) == np.unpackbits(reference, -1))
        delta = retrieval_map(codes, labels) - base_map
        size_text = "" if size is None else f"{size:,}"
        ratio = "" if size is None else f"{size / float_size:.3f}"
        exact = "yes" if np.array_equal(codes, reference) else "no"
        print(
            f"| {name} | {rate:,.0f} | {rate / base_rate:.2f} | {size_text} | {ratio} "
            f"| {agree:.5f} | {exact} | {delta:+.4f} |"
        )


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    images, labels = digits()
    model = train(images, labels)
    with tempfile.TemporaryDirectory() as root:
        rows, reference = measure(model, images, labels, root)
    report(rows, reference, labels)


if __name__ == "__main__":
    app.run(main)
