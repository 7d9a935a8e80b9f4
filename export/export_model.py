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

import hashlib
import json
import os

# TensorFlow's C++ INFO lines (set before TensorFlow is imported).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from keras_hash import export  # noqa: E402
from keras_hash.files import write_text_atomic  # noqa: E402

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
    "Pillow and resized to the model input, to calibrate int8 activations "
    "(a file that is not an image is an error naming it).",
)
flags.DEFINE_integer(
    "max_representative", 500, "Use at most this many representative images."
)
flags.DEFINE_bool(
    "overwrite",
    False,
    "Replace existing .tflite files (those exported from the same --model "
    "are kept without it: a re-run finishes what an interrupted run left).",
)
flags.mark_flag_as_required("model")


def model_sha256(path: str) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def record_path(output: str) -> str:
    """Where the record of an output's source goes (TF Serving ignores
    ``assets.extra``)."""
    if output.endswith(".tflite"):
        return output + ".source.json"
    return os.path.join(output, "assets.extra", "keras_hash_source.json")


def already_done(output: str, record: dict) -> bool:
    """True if ``output`` exists and was written from the same model file;
    an error if it exists from anything else."""
    if not os.path.exists(output):
        return False
    try:
        with open(record_path(output)) as file:
            if json.load(file) == record:
                return True
    except (OSError, ValueError):
        pass
    raise app.UsageError(
        f"{output} already exists and was not exported from {FLAGS.model} "
        "(no matching record): bump --version, pass --overwrite for .tflite "
        "files, or delete it"
    )


def write_record(output: str, record: dict) -> None:
    os.makedirs(os.path.dirname(record_path(output)), exist_ok=True)
    write_text_atomic(record_path(output), json.dumps(record) + "\n")


def write_saved_model(model, record: dict) -> str:
    target = os.path.join(FLAGS.base_dir, FLAGS.model_name, str(FLAGS.version))
    if already_done(target, record):
        return f"{target} (already exported from this model)"
    path = export.export_saved_model(
        model, FLAGS.base_dir, FLAGS.model_name, FLAGS.version
    )
    write_record(path, record)
    return path


def write_tflite(model, quantization: str, images, record: dict) -> str:
    folder = FLAGS.tflite_dir or FLAGS.base_dir or "."
    path = os.path.join(folder, f"{FLAGS.model_name}_{quantization}.tflite")
    record = {**record, "quantization": quantization}
    if not FLAGS.overwrite and already_done(path, record):
        return f"{path} (already exported from this model)"
    export.export_tflite(
        model,
        path,
        quantization=quantization,
        representative_images=images if quantization == "int8" else None,
        overwrite=FLAGS.overwrite,
    )
    write_record(path, record)
    return f"{path} ({os.path.getsize(path):,} bytes)"


def representative_images(model):
    if "int8" not in FLAGS.tflite:
        return None
    if not FLAGS.representative_dir:
        raise app.UsageError("--tflite=int8 needs --representative_dir")
    shape = export.image_spec(model).shape[1:]
    images, _ = export.read_images(FLAGS.representative_dir, shape)
    return images[: FLAGS.max_representative]


def main(argv):
    if not FLAGS["verbosity"].present:  # TensorFlow's Python INFO lines
        logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    unknown = set(FLAGS.tflite) - set(export.QUANTIZATIONS)
    if unknown:
        raise app.UsageError(f"--tflite: unknown {sorted(unknown)}")
    if not FLAGS.base_dir and not FLAGS.tflite:
        raise app.UsageError("nothing to do: give --base_dir and/or --tflite")
    model = export.load_hash_model(FLAGS.model)
    record = {
        "model": os.path.basename(FLAGS.model),
        "sha256": model_sha256(FLAGS.model),
    }
    images = representative_images(model)
    if FLAGS.base_dir:
        print(f"SavedModel: {write_saved_model(model, record)}")
    for quantization in FLAGS.tflite:
        done = write_tflite(model, quantization, images, record)
        print(f"TFLite ({quantization}): {done}")


if __name__ == "__main__":
    app.run(main)
