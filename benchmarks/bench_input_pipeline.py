"""Speed of the input pipelines: decoding image files, and ``train_dataset``.

Decoding: ``image_files_dataset`` over JPEG files (the one decoder, Pillow
through ``tf.numpy_function``) against TensorFlow's own ``decode_image`` in
the same ``tf.data`` map (what the stream used before the decoders were
made one), interleaved rounds, images/s and their ratio.

Then ``train_dataset`` alone (gather, pad-and-crop, flip, batch; images/s it can
deliver, which bounds training on a fast GPU). Then training fed by it vs
fed a constant batch: the gap is what the pipeline costs the step when both
share the CPU cores. Rounds of the two feeds are interleaved in one run.

    python benchmarks/bench_input_pipeline.py --width 32 --batch_size 128
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

import keras_hash  # noqa: E402
from keras_hash import backbones, datasets  # noqa: E402


def tensorflow_decode(path, size):
    """The stream's decoding before one decoder: TensorFlow's, then resize."""
    image = tf.io.decode_image(tf.io.read_file(path), 3, expand_animations=False)
    image.set_shape((None, None, 3))
    return tf.ensure_shape(datasets.resize_image(image, size), (*size, 3))


def decoding(args):
    rng = np.random.default_rng(0)
    side, size = args.image_side, (args.image_size, args.image_size)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i in range(args.images):
            # Smooth pictures compress like photos (noise would not).
            base = rng.integers(0, 256, (side // 16, side // 16, 3), dtype=np.uint8)
            image = Image.fromarray(base).resize((side, side), Image.BILINEAR)
            paths.append(os.path.join(folder, f"{i:05d}.jpg"))
            image.save(paths[-1], quality=90)
        files = datasets.ImageFiles(paths, np.zeros(len(paths), np.int32), ("a",))
        feeds = {
            "one decoder (Pillow)": lambda: datasets.image_files_dataset(
                files, size, args.batch_size
            ),
            "TensorFlow decode_image": lambda: (
                tf.data.Dataset.from_tensor_slices(paths)
                .map(lambda p: tensorflow_decode(p, size), tf.data.AUTOTUNE)
                .batch(args.batch_size)
                .prefetch(tf.data.AUTOTUNE)
            ),
        }
        rates = {name: [] for name in feeds}
        for _ in range(args.rounds):
            for name, feed in feeds.items():
                start = time.perf_counter()
                count = sum(len(batch) for batch, *_ in feed())
                rates[name].append(count / (time.perf_counter() - start))
    print(
        f"decoding {args.images} JPEGs of {side}x{side} to {size}, "
        f"{os.cpu_count()} CPUs:"
    )
    for name, values in rates.items():
        print(f"{name:>24}: {np.median(values):6.0f} img/s (median of {args.rounds})")
    ratio = np.median(rates["one decoder (Pillow)"]) / np.median(
        rates["TensorFlow decode_image"]
    )
    print(f"one decoder / TensorFlow decode_image: {ratio:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--policy", default="float32")
    parser.add_argument("--images", type=int, default=512, help="JPEGs to decode")
    parser.add_argument("--image_side", type=int, default=256)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--skip_training", action="store_true")
    args = parser.parse_args()
    decoding(args)
    if args.skip_training:
        return

    keras.mixed_precision.set_global_policy(args.policy)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50 * args.batch_size, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, len(images))
    model = keras_hash.HashNet(backbones.cifar_resnet(args.width), 64, normalize=True)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True))
    constant = tf.data.Dataset.from_tensors(
        (tf.constant(images[: args.batch_size]), tf.constant(labels[: args.batch_size]))
    ).repeat()
    stream = datasets.train_dataset(images, labels, args.batch_size, epochs=100)
    alone = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        count = sum(len(batch) for batch, _ in stream.take(200))
        alone.append(count / (time.perf_counter() - start))
    print(f"pipeline alone: {np.median(alone):8.0f} img/s (median of {args.rounds})")
    feeds = {"constant batch": constant, "train_dataset": stream}
    model.fit(constant, steps_per_epoch=3, verbose=0)  # trace and warm up
    rates = {name: [] for name in feeds}
    for _ in range(args.rounds):
        for name, feed in feeds.items():
            start = time.perf_counter()
            model.fit(feed, steps_per_epoch=args.steps, verbose=0)
            rates[name].append(
                args.steps * args.batch_size / (time.perf_counter() - start)
            )
    for name, values in rates.items():
        print(f"{name:>15}: {np.median(values):6.0f} img/s (median of {args.rounds})")
    ratio = np.median(rates["train_dataset"]) / np.median(rates["constant batch"])
    print(f"train_dataset / constant batch: {ratio:.2f}")


if __name__ == "__main__":
    main()
