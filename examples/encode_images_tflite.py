"""Encode a folder of images to packed binary codes with a .tflite file (LiteRT).

The same thing an app does on a phone: load the exported file, feed raw pixels,
read ``codes`` (uint8, bits / 8 bytes per image). Optionally search the codes
of a second folder with a HammingIndex. ``--images`` and ``--queries`` are a
flat folder of images or a class-folder tree (``root/<class>/*.jpg``, the
layout of the training data), read by :func:`keras_hash.datasets.list_image_paths`
and decoded and resized by the library's one decoder. Needs the ``tflite``
extra (LiteRT).

```
python examples/encode_images_tflite.py --tflite=hashnet_int8.tflite \\
    --images=photos/ --output=codes.npy [--queries=queries/ --k=5]
```
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

from keras_hash import HammingIndex
from keras_hash.export import TFLiteEncoder, read_images

FLAGS = flags.FLAGS
flags.DEFINE_string("tflite", None, "A .tflite file from keras_hash.export.")
flags.DEFINE_string("images", None, "Folder of images to encode.")
flags.DEFINE_string("output", None, "Where to save the codes (.npy), optional.")
flags.DEFINE_string("queries", None, "Folder of query images to search, optional.")
flags.DEFINE_integer("k", 5, "Neighbours per query.")
flags.DEFINE_integer("num_threads", None, "LiteRT interpreter threads.")
flags.mark_flags_as_required(["tflite", "images"])


def main(argv):
    del argv
    encoder = TFLiteEncoder(FLAGS.tflite, num_threads=FLAGS.num_threads)
    images, names = read_images(FLAGS.images, encoder.image_shape)
    codes = encoder.encode(images)
    print(f"{len(codes)} images -> {encoder.bits}-bit codes ({codes.shape[1]} bytes)")
    if FLAGS.output:
        np.save(FLAGS.output, codes)
    if FLAGS.queries:
        queries, query_names = read_images(FLAGS.queries, encoder.image_shape)
        index = HammingIndex(encoder.bits)
        index.add(codes)
        distances, ids = index.search(encoder.encode(queries), FLAGS.k)
        for name, dist, row in zip(query_names, distances, ids, strict=True):
            hits = ", ".join(
                f"{names[i]} ({d})" for i, d in zip(row, dist, strict=True)
            )
            print(f"{name}: {hits}")


if __name__ == "__main__":
    app.run(main)
