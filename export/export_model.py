"""Export a trained keras_hash model for TF Serving and for phones.

Writes a SavedModel in TF Serving's layout, ``<base_dir>/<model_name>/<version>/``
(signature ``serving_default``: float32 ``images`` ``[N, H, W, C]`` raw pixels ->
uint8 ``codes`` ``[N, bits // 8]``; ``code_logits``: -> float32 ``logits``), and
TFLite files ``<tflite_dir>/<model_name>_<quantization>.tflite`` that return the
same packed codes, using TFLite builtin ops only.

```
python export/export_model.py --model=hashnet.keras --base_dir=/models \\
    --model_name=hashnet --version=1 \\
    --tflite=float32,int8 --representative_dir=calibration_images/
```
"""

from __future__ import annotations

import os

from absl import app, flags

from keras_hash import export
from keras_hash.recipes import airbench  # noqa: F401 - registers whitened_cnn's layers

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Trained model file (.keras) saved by model.save.")
flags.DEFINE_string(
    "base_dir",
    None,
    "TF Serving model base path; the SavedModel goes to "
    "<base_dir>/<model_name>/<version>/. Leave empty to skip the SavedModel.",
)
flags.DEFINE_string("model_name", "keras_hash", "Model name (folder and file prefix).")
flags.DEFINE_integer(
    "version", 1, "SavedModel version (>= 1); an existing version is an error."
)
flags.DEFINE_list(
    "tflite",
    [],
    "Comma-separated TFLite variants to write: float32 (codes equal "
    "model.encode), float16, dynamic (int8 weights), int8 (int8 weights and "
    "activations; needs --representative_dir).",
)
flags.DEFINE_string(
    "tflite_dir", None, "Folder for the .tflite files (default: --base_dir or '.')."
)
flags.DEFINE_string(
    "representative_dir",
    None,
    "Folder of images like those to be encoded (a few hundred), read with "
    "Pillow and resized to the model input, to calibrate int8 activations.",
)
flags.DEFINE_integer(
    "max_representative", 500, "Use at most this many representative images."
)
flags.DEFINE_bool("overwrite", False, "Replace existing .tflite files.")
flags.mark_flag_as_required("model")


def write_tflite(model, quantization: str, images) -> str:
    folder = FLAGS.tflite_dir or FLAGS.base_dir or "."
    path = os.path.join(folder, f"{FLAGS.model_name}_{quantization}.tflite")
    return export.export_tflite(
        model,
        path,
        quantization=quantization,
        representative_images=images if quantization == "int8" else None,
        overwrite=FLAGS.overwrite,
    )


def representative_images(model):
    if "int8" not in FLAGS.tflite:
        return None
    if not FLAGS.representative_dir:
        raise app.UsageError("--tflite=int8 needs --representative_dir")
    shape = export.image_spec(model).shape[1:]
    images, _ = export.read_images(FLAGS.representative_dir, shape)
    return images[: FLAGS.max_representative]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    unknown = set(FLAGS.tflite) - set(export.QUANTIZATIONS)
    if unknown:
        raise app.UsageError(f"--tflite: unknown {sorted(unknown)}")
    if not FLAGS.base_dir and not FLAGS.tflite:
        raise app.UsageError("nothing to do: give --base_dir and/or --tflite")
    model = export.load_hash_model(FLAGS.model)
    images = representative_images(model)
    if FLAGS.base_dir:
        path = export.export_saved_model(
            model, FLAGS.base_dir, FLAGS.model_name, FLAGS.version
        )
        print(f"SavedModel: {path}")
    for quantization in FLAGS.tflite:
        path = write_tflite(model, quantization, images)
        print(f"TFLite ({quantization}): {path} ({os.path.getsize(path):,} bytes)")


if __name__ == "__main__":
    app.run(main)
