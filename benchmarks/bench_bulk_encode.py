"""Bulk encoding benchmark: Beam DirectRunner against plain loops, same files.

Writes ``--images`` random JPEG files (``--stored`` pixels square, two class
folders), exports a small untrained HashNet (``--size`` RGB input, 64 bits,
two strided convolutions) as a SavedModel and encodes the files, in one
process, with:

- ``loop``: a plain Python loop over batches of files: Pillow decoding and
  the training resize (``datasets.load_image_files``), then ``model.encode``;
- ``tf.data``: ``model.encode(datasets.image_files_dataset(...))``
  (parallel decoding in ``tf.data``);
- ``beam``: :func:`keras_hash.beam.encode_images` on the
  DirectRunner with ``--direct_num_workers`` 1 and 2, whole job (start,
  listing, decoding, ``RunInference``, shards and manifest), and once more
  on 16 files to show the fixed start cost.

Prints images/s and the ratio to ``loop``, and checks that every route
gives the same codes (JPEG decoding of Pillow and TensorFlow may differ in
rare pixels, so the check is on the bits: agreement is printed).

```
flock /tmp/kh_heavy.lock python benchmarks/bench_bulk_encode.py --images=4096
```
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from PIL import Image  # noqa: E402

import keras_hash  # noqa: E402
from keras_hash import beam, datasets, export  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("images", 4096, "Image files to encode.")
flags.DEFINE_integer("stored", 96, "Side of the stored JPEG files, pixels.")
flags.DEFINE_integer("size", 64, "Side of the model's input, pixels.")
flags.DEFINE_integer("batch_size", 256, "Encoding batch size, every route.")


def write_images(root, count, side):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    for i in range(count):
        folder = os.path.join(root, f"class{i % 2}")
        os.makedirs(folder, exist_ok=True)
        # smooth images (upsampled noise): JPEG sizes like photos, not like noise
        small = np.clip(base + rng.integers(-40, 40, (8, 8, 3)), 0, 255)
        image = Image.fromarray(small.astype(np.uint8)).resize((side, side))
        image.save(os.path.join(folder, f"{i:06d}.jpg"), quality=90)


def model_for(size):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(32, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(64, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras_hash.HashNet(keras.Model(inputs, x), bits=64)
    model(np.zeros((1, size, size, 3), "float32"))
    return model


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def loop(model, files, size, batch_size):
    chunks = []
    for i in range(0, len(files), batch_size):
        part = datasets.ImageFiles(
            files.paths[i : i + batch_size], files.labels[i : i + batch_size], ()
        )
        images = datasets.load_image_files(part, image_size=size).images
        chunks.append(model.encode(images.astype("float32"), batch_size=batch_size))
    return np.concatenate(chunks)


def beam_run(photos, version, out, workers, batch_size):
    shutil.rmtree(out, ignore_errors=True)
    beam.encode_images(
        photos,
        version,
        out,
        ids="index",
        batch_size=batch_size,
        pipeline_args=[
            f"--direct_num_workers={workers}",
            "--direct_running_mode="
            + ("in_memory" if workers == 1 else "multi_threading"),
        ],
    )
    return beam.read_code_shards(out)


def agreement(a, b):
    return float(np.mean(np.unpackbits(a, axis=-1) == np.unpackbits(b, axis=-1)))


def main(_):
    logging.set_verbosity(logging.WARNING)
    root = tempfile.mkdtemp(prefix="bench_bulk_")
    try:
        photos = os.path.join(root, "photos")
        write_images(photos, FLAGS.images, FLAGS.stored)
        model = model_for(FLAGS.size)
        version = export.export_saved_model(model, os.path.join(root, "models"))
        paths, ids = beam.list_images(photos, ids="index")
        files = datasets.ImageFiles(paths, np.zeros(len(paths), np.int32), ())
        n, size, batch = len(paths), FLAGS.size, FLAGS.batch_size
        loop(
            model,
            datasets.ImageFiles(paths[:batch], files.labels[:batch], ()),
            size,
            batch,
        )  # warm-up: graph tracing
        rows = []
        seconds, reference = timed(lambda: loop(model, files, size, batch))
        rows.append(("loop (Pillow + model.encode)", seconds, 1.0, None))
        dataset = datasets.image_files_dataset(files, size, batch_size=batch)
        seconds, via_data = timed(lambda: model.encode(dataset))
        rows.append(
            ("tf.data + model.encode", seconds, agreement(via_data, reference), 1.0)
        )
        for workers in (1, 2):
            out = os.path.join(root, f"out{workers}")
            seconds, (codes, got_ids) = timed(
                lambda out=out, w=workers: beam_run(photos, version, out, w, batch)
            )
            assert np.array_equal(got_ids, ids)
            rows.append(
                (
                    f"Beam DirectRunner, {workers} worker(s)"
                    + (", threads" if workers > 1 else ""),
                    seconds,
                    agreement(codes, reference),
                    agreement(codes, via_data),
                )
            )
        small = os.path.join(root, "small")
        os.makedirs(small)
        for path in paths[:16]:
            shutil.copy(path, os.path.join(small, os.path.basename(path)))
        start_cost, _ = timed(
            lambda: beam_run(small, version, os.path.join(root, "o16"), 1, batch)
        )
        loop_rate = n / rows[0][1]
        print(
            f"{n} JPEG files {FLAGS.stored}x{FLAGS.stored} -> {size}x{size} RGB, "
            f"64 bits, batch {batch}, {os.cpu_count()} CPUs"
        )
        print(
            f"{'route':40s} {'seconds':>8s} {'images/s':>9s} {'x loop':>7s} "
            f"{'bits = loop':>11s} {'bits = tf.data':>13s}"
        )
        for name, seconds, agree, same_decoder in rows:
            rate = n / seconds
            print(
                f"{name:40s} {seconds:8.2f} {rate:9.0f} {rate / loop_rate:7.2f} "
                f"{agree:11.6f} {'' if same_decoder is None else same_decoder:>13}"
            )
        print(f"Beam job on 16 files (fixed start cost): {start_cost:.2f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
