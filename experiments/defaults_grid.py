"""Do the hash layer's defaults train an ordinary backbone? (issue 21, item 1)

Trains ``HashNet`` and ``DHN`` with the library's defaults from scratch on
scikit-learn's digits (8x8 grey images, pixels 0..16, 10 classes) for every
cell of the grid

    backbones  x  optimizers                                 x  methods
    conv_dense    adam1e-3 (Adam 1e-3), adam3e-3 (Adam 3e-3),   hashnet, dhn
    conv_gap      sgd (SGD 0.01, Nesterov off, momentum 0.9)
    efficientnetb0

and prints a markdown table of the mAP (32 bits, over the whole database) of
the old default (``normalize=False``) and the new one (no flag: the
library's default). The digits are shuffled (seed 0): the first 1,500 are
the training set and the database, the remaining 297 the queries. Batch 32,
20 epochs. Pixels are scaled the way a user would, by a ``Rescaling``
layer inside the backbone.

Backbones:

- ``conv_dense``: ``Rescaling(1/16)``, ``Conv2D(32, 3, relu)``,
  ``Conv2D(64, 3, relu)``, ``GlobalAveragePooling2D``, ``Dense(256, relu)``
  (the issue's backbone);
- ``conv_gap``: the same without the dense layer (features straight from
  ``GlobalAveragePooling2D``);
- ``efficientnetb0``: ``keras.applications.EfficientNetB0(include_top=False,
  pooling="avg", weights=None)`` on the digits resized to 32x32 and repeated
  to 3 channels inside the backbone, fed 0..255 (it rescales inside).

Other ``keras.applications`` backbones (``weights=None``, the same 32x32,
3-channel input, pixels rescaled to ``[-1, 1]``; ``--backbones=NAME``):
``mobilenet``, ``mobilenet_050`` and ``mobilenet_100`` (MobileNet, alpha
0.25, 0.5 and 1.0), ``mobilenetv2`` (MobileNetV2, alpha 0.35, BatchNorm
momentum 0.999), ``nasnetmobile``, ``densenet121``, ``resnet50``.
``experiments/defaults_diagnosis.py`` trains any of them as a plain softmax
classifier, to tell a weak backbone from a weak hash objective;
``experiments/bn_statistics.py`` scores one cell with BatchNorm's moving
averages and with precise statistics.

Results and the command are in ``docs/defaults.md``.

    python experiments/defaults_grid.py            # the full grid, ~45 min
    python experiments/defaults_grid.py --backbones=conv_dense --epochs=5
"""

import argparse
import itertools
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import keras_hash  # noqa: E402
from keras_hash import metrics as evaluation  # noqa: E402

BACKBONES = ("conv_dense", "conv_gap", "efficientnetb0")
# keras.applications backbones (weights=None) on the digits resized to 32x32,
# 3 channels: name -> (application, keyword arguments).
APPLICATIONS = {
    "mobilenet": ("MobileNet", {"alpha": 0.25}),
    "mobilenet_050": ("MobileNet", {"alpha": 0.5}),
    "mobilenet_100": ("MobileNet", {"alpha": 1.0}),
    "mobilenetv2": ("MobileNetV2", {"alpha": 0.35}),
    "efficientnetb0": ("EfficientNetB0", {}),
    "nasnetmobile": ("NASNetMobile", {}),
    "densenet121": ("DenseNet121", {}),
    "resnet50": ("ResNet50", {}),
}
OPTIMIZERS = ("adam1e-3", "adam3e-3", "sgd")
METHODS = ("hashnet", "dhn")
# old: the papers' plain hash layer; moving: normalized, BatchNorm moving
# averages (the default before precise_batch_norm); new: the library's.
VARIANTS = {
    "old": {"normalize": False, "precise_batch_norm": False},
    "moving": {"precise_batch_norm": False},
    "new": {},
}


def digits_split(num_train: int = 1500, seed: int = 0):
    """Digits as float32 ``[N, 8, 8, 1]`` (pixels 0..16), shuffled and split."""
    digits = load_digits()
    images = digits.images.astype("float32")[..., None]
    labels = digits.target.astype("int32")
    order = np.random.default_rng(seed).permutation(len(images))
    images, labels = images[order], labels[order]
    return (images[:num_train], labels[:num_train]), (
        images[num_train:],
        labels[num_train:],
    )


def make_backbone(name: str) -> keras.Model:
    """One of the grid's backbones, from raw digits ``[N, 8, 8, 1]`` in 0..16."""
    inputs = keras.Input((8, 8, 1))
    if name in ("conv_dense", "conv_gap"):
        x = keras.layers.Rescaling(1 / 16)(inputs)
        x = keras.layers.Conv2D(32, 3, activation="relu")(x)
        x = keras.layers.Conv2D(64, 3, activation="relu")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        if name == "conv_dense":
            x = keras.layers.Dense(256, activation="relu")(x)
        return keras.Model(inputs, x, name=name)
    if name in APPLICATIONS:
        application, kwargs = APPLICATIONS[name]
        if application == "EfficientNetB0":
            # EfficientNet rescales and normalizes inside: feed it 0..255.
            x = keras.layers.Rescaling(255 / 16)(inputs)
        else:
            x = keras.layers.Rescaling(1 / 8, offset=-1)(inputs)  # to [-1, 1]
        x = keras.layers.Resizing(32, 32)(x)
        x = keras.layers.Concatenate()([x, x, x])
        net = getattr(keras.applications, application)(
            input_shape=(32, 32, 3),
            include_top=False,
            pooling="avg",
            weights=None,
            **kwargs,
        )
        return keras.Model(inputs, net(x), name=name)
    raise ValueError(
        f"unknown backbone {name!r}; choose from {(*BACKBONES, *APPLICATIONS)}"
    )


def make_optimizer(name: str) -> keras.optimizers.Optimizer:
    if name == "adam1e-3":
        return keras.optimizers.Adam(1e-3)
    if name == "adam3e-3":
        return keras.optimizers.Adam(3e-3)
    if name == "sgd":
        return keras.optimizers.SGD(0.01, momentum=0.9)
    raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")


def run_cell(
    backbone, optimizer, method, variant, data, *, bits, epochs, batch_size, seed
):
    """Trains one cell; returns ``(mAP, seconds)``."""
    (x_db, y_db), (x_q, y_q) = data
    keras.utils.set_random_seed(seed)
    model_class = {"hashnet": keras_hash.HashNet, "dhn": keras_hash.DHN}[method]
    model = model_class(make_backbone(backbone), bits=bits, **VARIANTS[variant])
    model.compile(optimizer=make_optimizer(optimizer))
    start = time.perf_counter()
    model.fit(x_db, y_db, batch_size=batch_size, epochs=epochs, verbose=0)
    value = evaluation.mean_average_precision(
        query_codes=model.encode(x_q),
        query_labels=y_q,
        database_codes=model.encode(x_db),
        database_labels=y_db,
        bits=model.bits,
    )
    return float(value), time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--variants", default="old,new")
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
    data = digits_split(seed=args.seed)
    header = "| backbone | optimizer | method | " + " | ".join(
        f"mAP {v} | s {v}" for v in variants
    )
    rows = []
    print(header + " |\n|" + " --- |" * (3 + 2 * len(variants)), flush=True)
    for cell in itertools.product(
        args.backbones.split(","), args.optimizers.split(","), args.methods.split(",")
    ):
        cells = []
        for variant in variants:
            value, seconds = run_cell(
                *cell,
                variant,
                data,
                bits=args.bits,
                epochs=args.epochs,
                batch_size=args.batch_size,
                seed=args.seed,
            )
            cells += [f"{value:.3f}", f"{seconds:.0f}"]
        rows.append("| " + " | ".join([*cell, *cells]) + " |")
        print(rows[-1], flush=True)
    print("\n" + header + " |\n|" + " --- |" * (3 + 2 * len(variants)))
    print("\n".join(rows))


if __name__ == "__main__":
    sys.exit(main())
