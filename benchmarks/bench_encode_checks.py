"""Cost of the NaN/Inf check of ``HashModel.encode`` on encoding throughput.

``encode`` refuses images holding NaN or Inf (issue 24): each batch is read
once more (``np.isfinite`` for arrays, ``tf.math.is_finite`` for tensors and
``tf.data`` batches). This script times ``encode`` with the check and with
it switched off (``_check_images(..., finite=False)``), interleaved run by
run in the same process, and prints images/s and the ratio, for:

- ``tiny``: 8x8x1 images, two small convolutions (the digits models of the
  tests): the worst case, where the model costs least per pixel;
- ``cifar``: 32x32x3 images, a 4-block CNN of 32 to 128 channels.

It also times the check alone on one batch (``check us``), the figure
that end-to-end ratios blur on a busy machine, and its share of the time
``encode`` spends on a batch (``check share``).

```
python benchmarks/bench_encode_checks.py --images=8192 --repeats=7
```
"""

from __future__ import annotations

import os
import time
import timeit

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_hash  # noqa: E402
from keras_hash.models import HashModel  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("images", 8192, "Images per timed run.")
flags.DEFINE_integer("batch_size", 256, "Encoding batch size.")
flags.DEFINE_integer("repeats", 7, "Timed runs per variant; the median is kept.")


def tiny():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(128, activation="relu")(x))


def cifar():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    for filters in (32, 64, 128, 128):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, x)


class Unchecked:
    """Switches the finite check of ``HashModel._check_images`` off, inside."""

    original = HashModel._check_images

    def __enter__(self):
        def shape_only(model, images, finite=True, first=0):
            return Unchecked.original(model, images, finite=False, first=first)

        HashModel._check_images = shape_only

    def __exit__(self, *exc):
        HashModel._check_images = Unchecked.original


def seconds(model, inputs, unchecked: bool) -> float:
    start = time.perf_counter()
    if unchecked:
        with Unchecked():
            model.encode(inputs, batch_size=FLAGS.batch_size)
    else:
        model.encode(inputs, batch_size=FLAGS.batch_size)
    return time.perf_counter() - start


def main(_):
    rng = np.random.default_rng(0)
    print(
        f"{FLAGS.images} images, batch {FLAGS.batch_size}, median of "
        f"{FLAGS.repeats} interleaved runs; TF threads: "
        f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'}"
    )
    print(
        "| model | input | checked img/s | unchecked img/s | ratio | check us "
        "| check share |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, build in (("tiny", tiny), ("cifar", cifar)):
        keras.utils.set_random_seed(0)
        model = keras_hash.HashNet(build(), bits=64)
        shape = model.backbone.input_shape[1:]
        images = rng.uniform(0, 255, size=(FLAGS.images, *shape)).astype(np.float32)
        dataset = tf.data.Dataset.from_tensor_slices(images).batch(FLAGS.batch_size)
        for kind, inputs in (("numpy", images), ("tf.data", dataset)):
            codes = model.encode(inputs, batch_size=FLAGS.batch_size)  # trace
            with Unchecked():
                same = model.encode(inputs, batch_size=FLAGS.batch_size)
            assert np.array_equal(codes, same)
            times = {True: [], False: []}
            for repeat in range(FLAGS.repeats):
                for unchecked in (repeat % 2 == 0, repeat % 2 == 1):
                    times[unchecked].append(seconds(model, inputs, unchecked))
            checked = FLAGS.images / np.median(times[False])
            unchecked = FLAGS.images / np.median(times[True])
            batch = images[: FLAGS.batch_size]
            batch = tf.constant(batch) if kind == "tf.data" else batch
            check = min(
                timeit.repeat(
                    lambda m=model, b=batch: m._check_images(b), number=50, repeat=5
                )
            )
            check /= 50
            share = check / (FLAGS.batch_size / unchecked)
            print(
                f"| {name} | {kind} | {checked:,.0f} | {unchecked:,.0f} | "
                f"{checked / unchecked:.3f} | {check * 1e6:,.0f} | {share:.2%} |"
            )


if __name__ == "__main__":
    app.run(main)
