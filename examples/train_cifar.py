r"""Train a hash model on CIFAR-10, evaluate retrieval, export for serving.

The default command runs the best known recipe (preset ``cifar10-2``:
HashNet, 64 bits, airbench's CNN pre-trained as a classifier, then the hash
layer on its frozen features; mAP@1000 0.904 in under 30 minutes on a
2-core CPU). ``--preset`` picks another measured recipe and every recipe
setting is a flag that overrides the preset (``--preset=dhn --bits=32``).
``--quick`` is a smoke run of about 5 minutes on a 2-core CPU that shows the
method working: a healthy run ends at mAP@1000 0.58-0.68 (chance is 0.1; the
last line says where the run falls). A finished run folder is never
overwritten: a rerun with other settings exits naming the differences, and
``--new_output_dir`` writes to the next free sibling folder instead.

```shell
python examples/train_cifar.py --data_dir=../shared/data/cifar10
python examples/train_cifar.py --preset=dhn --method=dhn --output_dir=runs/dhn
python examples/train_cifar.py --quick --data_dir=../shared/data/cifar10
```

Rerun the same command after a crash and it resumes where it stopped
(``keras_hash.training.Run``). Outputs in ``--output_dir``: ``metrics.json``,
``pr_curve.png``, ``precision_at_n.png``, ``hamming_histogram.png``,
``gallery.png``, ``model.keras``, ``database.index``,
``serving/<method>/<version>/`` (SavedModel) and ``model.tflite``.
"""

from __future__ import annotations

import os
import sys
import typing

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if __name__ == "__main__" and "--help" not in sys.argv:
    print("Loading TensorFlow and Keras ...", flush=True)

from absl import app, flags, logging  # noqa: E402

from keras_hash.recipes import pipeline, presets  # noqa: E402
from keras_hash.training import ConfigMismatchError  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum(
    "preset", "cifar10-2", list(presets.PRESETS), "The measured recipe to start from."
)
flags.DEFINE_bool(
    "quick",
    False,
    "A smoke run of about 5 minutes on a 2-core CPU (healthy: mAP@1000 "
    "0.58-0.68): "
    + ", ".join(f"{k}={v}" for k, v in presets.QUICK.items())
    + " (explicit flags win).",
)
flags.DEFINE_string(
    "data_dir",
    None,
    "Image-folder copy of CIFAR-10 (train/<class>/*.jpg, test/<class>/*.jpg). "
    "Default: download keras.datasets.cifar10.",
)
flags.DEFINE_string("output_dir", "runs/cifar", "Where outputs and backups go.")
flags.DEFINE_bool(
    "new_output_dir",
    False,
    "If --output_dir holds a finished run of another configuration, write to "
    "the first free sibling folder (<output_dir>-2, -3, ...) instead of "
    "refusing. Finished results are never overwritten.",
)
flags.DEFINE_integer(
    "map_top_k",
    None,
    "mAP cut-off; default: the protocol's (all for dhn/cifar10-1, 1000 for "
    "cifar10-2); 0 means the whole database.",
)
flags.DEFINE_integer("save_freq", 50, "Steps between resumable backups.", lower_bound=1)
flags.DEFINE_integer(
    "eval_every",
    0,
    "Epochs between val_map evaluations of the hashing phase on a small "
    "subset (0: off).",
    lower_bound=0,
)
flags.DEFINE_bool("export", True, "Export the SavedModel and the TFLite file.")
flags.DEFINE_enum(
    "tflite_quantization",
    "float32",
    ["float32", "float16", "dynamic", "int8"],
    "Quantization of the exported TFLite file.",
)


def define_recipe_flags() -> None:
    """One flag per recipe setting, default None: unset flags keep the preset's."""
    hints = typing.get_type_hints(presets.Recipe)
    definers = {
        int: flags.DEFINE_integer,
        float: flags.DEFINE_float,
        str: flags.DEFINE_string,
        bool: flags.DEFINE_bool,
    }
    for name in presets.field_names():
        kind = next(t for t in (bool, int, float, str) if t in _types(hints[name]))
        default = getattr(presets.PRESETS["cifar10-2"], name)
        definers[kind](
            name, None, f"{presets.field_help(name)} (cifar10-2 preset: {default})"
        )


def _types(hint) -> tuple:
    return typing.get_args(hint) or (hint,)


def recipe_from_flags() -> presets.Recipe:
    """The preset, with --quick and then every flag given on the command line."""
    given = {
        name: FLAGS[name].value for name in presets.field_names() if FLAGS[name].present
    }
    try:
        return presets.get(FLAGS.preset, quick=FLAGS.quick, **given)
    except (TypeError, ValueError) as error:
        raise SystemExit(f"Bad recipe: {error}") from None


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    recipe = recipe_from_flags()
    output_dir = FLAGS.output_dir
    if FLAGS.new_output_dir:
        output_dir = pipeline.next_free_dir(output_dir, recipe.to_dict())
    try:
        record = pipeline.run(
            recipe,
            output_dir=output_dir,
            data_dir=FLAGS.data_dir,
            map_top_k=FLAGS.map_top_k,
            save_freq=FLAGS.save_freq,
            eval_every=FLAGS.eval_every,
            export_models=FLAGS.export,
            tflite_quantization=FLAGS.tflite_quantization,
        )
    except ConfigMismatchError as error:
        raise SystemExit(str(error)) from None
    except FileExistsError as error:  # a finished run: never overwritten
        raise SystemExit(
            f"{error}\nRerun with --new_output_dir to write to the next free "
            f"folder ({pipeline.next_free_dir(output_dir, recipe.to_dict())})."
        ) from None
    print(
        f"mAP@{record['map_top_k']} = {record['map']:.4f}, precision@r2 = "
        f"{record['precision_radius_2']:.4f} ({record['train_seconds']:.0f} s "
        f"training); outputs in {output_dir}",
        flush=True,
    )


define_recipe_flags()

if __name__ == "__main__":
    app.run(main)
