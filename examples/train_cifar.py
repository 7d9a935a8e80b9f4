r"""Train HashNet or DHN on CIFAR-10, evaluate retrieval, export for serving.

End to end: load CIFAR-10 (download, or an image-folder copy with
``--data_dir``), split it by a protocol of the literature, train with
``model.fit`` (resumable: rerun the same command after a crash and it picks up
at the last backed-up step), evaluate Hamming retrieval, write plots and
``metrics.json``, save the ``.keras`` model and export a SavedModel (TF
Serving layout) and a TFLite file, both taking raw ``uint8``-valued images
and returning packed codes.

``--pretrain_epochs`` trains the backbone as a softmax classifier first, the
from-scratch stand-in for the ImageNet pre-training the papers fine-tune
from; on ``cifar10-2`` at 64 bits, 5 classifier epochs and 2 hashing epochs
gave mAP@1000 0.778 where 7 hashing epochs gave 0.735, and
``--backbone=whitened_cnn`` pre-trained with airbench's recipe for 6 epochs,
then 1 hashing epoch, gave 0.868; the best so far is in the README.

mAP cut-offs: ``dhn`` and ``cifar10-1`` rank the whole database (mAP@54,000
and mAP@59,000; DHN's and HashNet's CIFAR-10 figures and DeepHash-pytorch's
``topK=-1``); ``cifar10-2`` uses mAP@1,000, the cut-off of the papers that
report that protocol (e.g. Bi-half, "CIFAR-10 (I)"). ``--map_top_k``
overrides it.

```shell
python examples/train_cifar.py --method=hashnet --bits=48 --protocol=dhn \
    --data_dir=/work/shared/data/cifar10 --output_dir=runs/hashnet48
python examples/train_cifar.py --quick --data_dir=/work/shared/data/cifar10
```

Outputs in ``--output_dir``: ``metrics.json``, ``pr_curve.png``,
``precision_at_n.png``, ``hamming_histogram.png``, ``model.keras``,
``database.index`` (a HammingIndex of the database codes),
``serving/<method>/1/`` (SavedModel), ``model.tflite``.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import keras_hash  # noqa: E402
from keras_hash import backbones, datasets  # noqa: E402
from keras_hash import metrics as evaluation  # noqa: E402
from keras_hash.callbacks import StepBackup  # noqa: E402
from keras_hash.files import write_atomic  # noqa: E402
from keras_hash.recipes import airbench, cifar, precision  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("method", "hashnet", ["hashnet", "dhn"], "Hashing method.")
flags.DEFINE_integer("bits", 48, "Code length K (a multiple of 8).")
flags.DEFINE_enum(
    "protocol",
    "dhn",
    list(cifar.PROTOCOLS),
    "Split protocol: dhn (1k query / 5k train / 54k database), cifar10-1 "
    "(train inside a 59k database), cifar10-2 (10k test query / 50k train = "
    "database).",
)
flags.DEFINE_integer(
    "epochs",
    100,
    "Training epochs. The default suits a ~30 min run of the dhn protocol with "
    "the default backbone on a 2-core CPU with AMX.",
)
flags.DEFINE_integer("batch_size", 128, "Training batch size (pairs are in-batch).")
flags.DEFINE_string(
    "backbone",
    "cifar_resnet",
    "'cifar_resnet' (a small ResNet for 32x32 images, trained from scratch), "
    "'whitened_cnn' (airbench's fast-converging CNN with a patch-whitening "
    "first layer; pre-trained with airbench's recipe) or a keras.applications "
    "name such as 'ResNet50'.",
)
flags.DEFINE_integer("width", 32, "Stem width of cifar_resnet (stages 2x/4x/8x).")
flags.DEFINE_string(
    "weights",
    None,
    "Weights for a keras.applications backbone: a file path or 'imagenet'.",
)
flags.DEFINE_string(
    "data_dir",
    None,
    "Image-folder copy of CIFAR-10 (train/<class>/*.jpg, test/<class>/*.jpg), "
    "e.g. /work/shared/data/cifar10. Default: download keras.datasets.cifar10.",
)
flags.DEFINE_string("output_dir", "runs/cifar", "Where outputs and backups go.")
flags.DEFINE_integer("seed", 0, "Seed of the split, data order, augmentation, init.")
flags.DEFINE_bool(
    "quick",
    False,
    "A smoke run of a few minutes on a CPU: 1 epoch, 10 query and 50 train "
    "images per class, 2,000 database images, width 16 (explicit flags win).",
)
flags.DEFINE_enum(
    "precision",
    "auto",
    ["auto", *precision.POLICIES],
    "Dtype policy of training. auto: precision.recommended_policy() "
    "(mixed_bfloat16 on CPUs with AMX and GPUs of compute capability 8.0+, "
    "mixed_float16 on 7.x GPUs, float32 elsewhere: without AMX, bfloat16 "
    "trained at 0.71x the float32 speed). The saved and exported model is "
    "float32 either way.",
)
flags.DEFINE_float(
    "inner_product_scale",
    None,
    "Scale of the code inner product in the pair likelihood: HashNet's alpha "
    "(default 10 / bits) or DHN's scale (default 0.5).",
)
flags.DEFINE_bool(
    "normalize_codes",
    True,
    "Batch-normalize the hash layer's pre-activation z before tanh(beta * z) "
    "(HashLayer(normalize=True)): keeps tanh out of saturation when training "
    "from scratch.",
)
flags.DEFINE_float("learning_rate", 0.05, "Peak learning rate (SGD, Nesterov).")
flags.DEFINE_integer(
    "pretrain_epochs",
    0,
    "Epochs of softmax classification on the training labels before hashing, "
    "a from-scratch stand-in for the ImageNet pre-training the papers start "
    "from (counted in train_seconds). cifar_resnet and keras.applications "
    "backbones use --batch_size, --learning_rate and --warmup_epochs; "
    "whitened_cnn uses airbench's recipe (batch 1024, label smoothing 0.2, "
    "triangular learning rate, L2 6.65e-4).",
)
flags.DEFINE_integer(
    "pretrain_low_res_epochs",
    0,
    "The first of the --pretrain_epochs train on random --low_res_size crops "
    "(progressive resizing): about half the cost of a full-size epoch at 24 "
    "of 32 pixels. The backbone must take any image size (whitened_cnn, "
    "cifar_resnet).",
)
flags.DEFINE_integer(
    "low_res_size", 24, "Side of the crops of --pretrain_low_res_epochs."
)
flags.DEFINE_float(
    "finetune_learning_rate",
    0.02,
    "Peak learning rate of the hashing phase after --pretrain_epochs (cosine "
    "decay, no warm-up).",
)
flags.DEFINE_bool(
    "finetune_backbone",
    True,
    "After --pretrain_epochs, train the backbone with the hash layer. With "
    "--nofinetune_backbone the pre-trained backbone is frozen (BatchNorm in "
    "inference mode) and only the hash layer trains, at a fraction of the "
    "cost per epoch.",
)
flags.DEFINE_bool(
    "cache_features",
    False,
    "With --nofinetune_backbone: encode the un-augmented training images once "
    "with the frozen backbone and train the hash layer on those features (a "
    "second or so per epoch instead of a backbone pass per step; no "
    "augmentation in this phase). A rerun after a kill repeats this phase "
    "(one backbone pass over the training images) instead of resuming it.",
)
flags.DEFINE_bool(
    "flip_average",
    False,
    "Encode each image from the mean of its features and its mirror image's "
    "(HashModel(flip_average=True)): test-time augmentation that doubles the "
    "cost of encoding and of the exported models.",
)
flags.DEFINE_bool(
    "translate_average",
    False,
    "Also average each image's features over one-pixel translations "
    "(HashModel(translate_average=True), airbench's test-time augmentation): "
    "triples the cost of encoding and of the exported models.",
)
flags.DEFINE_integer(
    "crop_padding",
    None,
    "Largest shift in pixels of the random pad-and-crop augmentation, in both "
    "phases. Default: 2 while pre-training whitened_cnn (airbench's), 4 "
    "otherwise.",
)
flags.DEFINE_integer(
    "cutout",
    0,
    "Side in pixels of a random square zeroed in each training image "
    "(cutout augmentation, both phases); 0: off.",
    lower_bound=0,
)
flags.DEFINE_float("weight_decay", 5e-4, "Decoupled weight decay.")
flags.DEFINE_float("warmup_epochs", 2.0, "Linear warm-up before cosine decay.")
flags.DEFINE_integer("query_per_class", None, "Override the protocol's query size.")
flags.DEFINE_integer("train_per_class", None, "Override the protocol's train size.")
flags.DEFINE_integer("database_size", None, "Keep a random subset of the database.")
flags.DEFINE_integer(
    "map_top_k",
    None,
    "mAP cut-off; default: the protocol's (all for dhn/cifar10-1, 1000 for "
    "cifar10-2); 0 means the whole database.",
)
flags.DEFINE_integer("save_freq", 50, "Steps between resumable backups.")
flags.DEFINE_integer(
    "eval_every",
    0,
    "Epochs between val_map evaluations on a 200-query / 2,000-image subset "
    "during training (0: off).",
)
flags.DEFINE_bool("export", True, "Export the SavedModel and the TFLite file.")
flags.DEFINE_enum(
    "tflite_quantization",
    "float32",
    ["float32", "float16", "dynamic", "int8"],
    "Quantization of the exported TFLite file.",
)

QUICK = {
    "epochs": 1,
    "query_per_class": 10,
    "train_per_class": 50,
    "database_size": 2000,
    "width": 16,
}
# The flags a backup was trained under; a rerun must match them to resume.
TRAINING_FLAGS = (
    "method",
    "bits",
    "protocol",
    "epochs",
    "batch_size",
    "backbone",
    "width",
    "weights",
    "seed",
    "query_per_class",
    "train_per_class",
    "database_size",
    "precision",
    "inner_product_scale",
    "normalize_codes",
    "learning_rate",
    "warmup_epochs",
    "weight_decay",
    "pretrain_epochs",
    "pretrain_low_res_epochs",
    "low_res_size",
    "finetune_learning_rate",
    "finetune_backbone",
    "cache_features",
    "crop_padding",
    "cutout",
)


def apply_quick(flag_values) -> None:
    """Sets the --quick sizes on flags the user did not give."""
    if not flag_values.quick:
        return
    for name, value in QUICK.items():
        if not flag_values[name].present:
            flag_values[name].value = value


def check_training_flags() -> None:
    """Refuses to resume backups made under other training flags.

    The flags of ``TRAINING_FLAGS`` are kept in
    ``<output_dir>/training_flags.json`` while backups exist; a rerun that
    finds backups under different values exits naming them, instead of
    loading weights of another shape or continuing another schedule.
    """
    path = training_flags_path()
    current = {name: FLAGS[name].value for name in TRAINING_FLAGS}
    backups = [pretrained_path()] + [
        os.path.join(FLAGS.output_dir, name) for name in ("pretrain", "backup")
    ]
    if os.path.exists(path) and any(os.path.exists(p) for p in backups):
        with open(path) as file:
            saved = json.load(file)
        changed = [
            f"--{name}={saved.get(name)} (now {current[name]})"
            for name in TRAINING_FLAGS
            if saved.get(name) != current[name]
        ]
        if changed:
            raise SystemExit(
                f"{FLAGS.output_dir} holds the backups of a run with other "
                f"training flags: {', '.join(changed)}. Rerun with those flags "
                "to resume it, or pick another --output_dir (or delete its "
                "backups) to start over."
            )
    write_atomic(path, lambda p: _write_json(p, current))


def _write_json(path, value) -> None:
    with open(path, "w") as file:
        json.dump(value, file, indent=2)


def check_cache_features_flags() -> None:
    """Exits naming the problem if --cache_features has no frozen backbone."""
    if FLAGS.cache_features and (FLAGS.finetune_backbone or not FLAGS.pretrain_epochs):
        raise SystemExit(
            "--cache_features trains the hash layer on a frozen pre-trained "
            "backbone: it needs --pretrain_epochs > 0 and --nofinetune_backbone"
        )


def check_low_res_flags() -> None:
    """Exits naming the problem if the --pretrain_low_res_epochs flags clash."""
    low_res_epochs = FLAGS.pretrain_low_res_epochs
    if not 0 <= low_res_epochs <= FLAGS.pretrain_epochs:
        raise SystemExit(
            f"--pretrain_low_res_epochs={low_res_epochs} must be between 0 and "
            f"--pretrain_epochs={FLAGS.pretrain_epochs}"
        )
    least = airbench.WHITENED_CNN_MIN_SIDE
    whitened = low_res_epochs and FLAGS.backbone == "whitened_cnn"
    if whitened and FLAGS.low_res_size < least:
        raise SystemExit(
            f"whitened_cnn needs --low_res_size >= {least}, got {FLAGS.low_res_size}"
        )


def load_split(seed: int):
    """Loads CIFAR-10 and splits it; returns ``(images, labels, split)``."""
    train, test = cifar.load_cifar10(FLAGS.data_dir)
    images, labels = cifar.pool(train, test)
    split = cifar.split_indices(
        train[1],
        test[1],
        FLAGS.protocol,
        seed=seed,
        query_per_class=FLAGS.query_per_class,
        train_per_class=FLAGS.train_per_class,
        database_size=FLAGS.database_size,
    )
    return images, labels, split


def build_backbone(image_shape, train_images):
    """The backbone named by --backbone, normalization inside.

    ``whitened_cnn`` fits its whitening layer to 5,000 ``train_images``.
    """
    if FLAGS.backbone == "cifar_resnet":
        return backbones.cifar_resnet(FLAGS.width, input_shape=image_shape)
    if FLAGS.backbone == "whitened_cnn":
        return airbench.whitened_cnn(train_images[:5000], input_shape=image_shape)
    return backbones.application(
        FLAGS.backbone, input_shape=image_shape, weights=FLAGS.weights
    )


def build_model(image_shape, steps_per_epoch: int, backbone, pretrained: bool):
    """Builds and compiles the hash model with SGD and warm-up + cosine decay.

    After pre-training, the schedule starts at --finetune_learning_rate
    without warm-up, and --nofinetune_backbone freezes the backbone.
    """
    if pretrained and not FLAGS.finetune_backbone:
        backbone.trainable = False
    model = _uncompiled_model(image_shape, backbone)
    total = FLAGS.epochs * steps_per_epoch
    if not pretrained:
        optimizer = make_optimizer(total, steps_per_epoch)
    else:
        optimizer = make_optimizer(
            total, steps_per_epoch, FLAGS.finetune_learning_rate, warmup_epochs=0
        )
    model.compile(optimizer=optimizer, loss=make_loss())
    return model


def pretrain_backbone(image_shape, train_images, train_labels):
    """Trains the backbone as a softmax classifier for --pretrain_epochs.

    Resumable like the hashing phase (backups in ``<output_dir>/pretrain``);
    the trained backbone's weights are kept in
    ``<output_dir>/pretrained_backbone.weights.h5`` until the hashing phase
    ends, and a rerun that finds them skips this phase. Returns
    ``(backbone, seconds)``, the backbone built for ``image_shape``.
    """
    backbone = build_backbone(image_shape, train_images)
    done = pretrained_path()
    if os.path.exists(done):
        backbone.load_weights(done)
        return backbone, 0.0
    low_res_epochs = FLAGS.pretrain_low_res_epochs
    fixed_size = backbone
    if low_res_epochs:  # the same weights, for images of any size
        backbone = build_backbone((None, None, image_shape[-1]), train_images)
    num_classes = int(np.max(train_labels)) + 1
    augmentation = {}
    if FLAGS.backbone == "whitened_cnn":
        batch_size = min(airbench.AIRBENCH_BATCH_SIZE, len(train_images))
        padding = crop_padding(airbench.AIRBENCH_CROP_PADDING)
        augmentation = airbench.AIRBENCH_AUGMENTATION
        spe = datasets.steps_per_epoch(len(train_images), batch_size)
        classifier = airbench.airbench_classifier(
            backbone, num_classes, FLAGS.pretrain_epochs * spe, batch_size
        )
    else:
        classifier = keras.Sequential(
            [backbone, keras.layers.Dense(num_classes, name="logits")],
            name="pretrain",
        )
        classifier.build((None, *image_shape))
        spe = datasets.steps_per_epoch(len(train_images), FLAGS.batch_size)
        classifier.compile(
            optimizer=make_optimizer(FLAGS.pretrain_epochs * spe, spe),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        batch_size, padding = FLAGS.batch_size, crop_padding()
    training = fit_resumable(
        classifier,
        train_images,
        train_labels,
        FLAGS.pretrain_epochs,
        os.path.join(FLAGS.output_dir, "pretrain"),
        callbacks=[],
        seed=FLAGS.seed + 1,
        batch_size=batch_size,
        padding=padding,
        low_res_steps=low_res_epochs * spe,
        **augmentation,
    )
    airbench.drop_regularizers(classifier)  # airbench's L2 is not for hashing
    fixed_size.set_weights(backbone.get_weights())
    write_atomic(done, fixed_size.save_weights)
    return fixed_size, training["train_seconds"]


def crop_padding(default=datasets.CROP_PADDING) -> int:
    """--crop_padding, else ``default``."""
    return default if FLAGS.crop_padding is None else FLAGS.crop_padding


def make_loss():
    """The method's loss, with --inner_product_scale when given."""
    scale = FLAGS.inner_product_scale
    if scale is None:
        return "auto"
    if FLAGS.method == "hashnet":
        return keras_hash.HashNetLoss(alpha=scale)
    return keras_hash.DHNLoss(scale=scale)


def pretrained_path() -> str:
    return os.path.join(FLAGS.output_dir, "pretrained_backbone.weights.h5")


def training_flags_path() -> str:
    return os.path.join(FLAGS.output_dir, "training_flags.json")


def _uncompiled_model(image_shape, backbone):
    model_class = {"hashnet": keras_hash.HashNet, "dhn": keras_hash.DHN}[FLAGS.method]
    model = model_class(
        backbone,
        FLAGS.bits,
        normalize=FLAGS.normalize_codes,
        flip_average=FLAGS.flip_average,
        translate_average=FLAGS.translate_average,
        name=FLAGS.method,
    )
    model.build((None, *image_shape))
    return model


def float32_copy(model, image_shape, train_images):
    """The trained model rebuilt under the float32 policy, same weights.

    Mixed-precision graphs hold bfloat16 or float16 ops that TFLite cannot
    convert; the variables are float32 either way, so the copy is exact. The
    copy is compiled with the same loss and optimizer configuration (not its
    state), so the saved ``.keras`` file can be fine-tuned as trained.
    """
    if keras.mixed_precision.global_policy().name == "float32":
        return model
    keras.mixed_precision.set_global_policy("float32")
    backbone = build_backbone(image_shape, train_images)
    backbone.trainable = model.backbone.trainable
    copy = _uncompiled_model(image_shape, backbone)
    copy.set_weights(model.get_weights())
    optimizer = keras.optimizers.deserialize(
        keras.optimizers.serialize(model.optimizer)
    )
    copy.compile(optimizer=optimizer, loss=model.loss)
    copy.optimizer.build(copy.trainable_variables)
    return copy


def make_optimizer(
    total_steps: int, steps_per_epoch: int, learning_rate=None, warmup_epochs=None
):
    """SGD with Nesterov momentum, linear warm-up then cosine decay to 0.

    ``learning_rate`` and ``warmup_epochs`` default to the flags'.
    """
    peak = FLAGS.learning_rate if learning_rate is None else learning_rate
    if warmup_epochs is None:
        warmup_epochs = FLAGS.warmup_epochs
    warmup = min(int(warmup_epochs * steps_per_epoch), total_steps // 2)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else peak,
        decay_steps=max(total_steps - warmup, 1),
        warmup_target=peak if warmup else None,
        warmup_steps=warmup,
    )
    return keras.optimizers.SGD(
        schedule, momentum=0.9, nesterov=True, weight_decay=FLAGS.weight_decay
    )


def fit_resumable(
    model,
    train_images,
    train_labels,
    epochs,
    backup_dir,
    callbacks,
    seed,
    batch_size=None,
    padding=datasets.CROP_PADDING,
    low_res_steps=0,
    **augmentation,
) -> dict:
    """Trains for ``epochs``, resuming from the backup in ``backup_dir`` if any.

    The data stream is a function of (seed, step), so a resumed run sees the
    same batches as an uninterrupted one. A run resumed mid-epoch first
    finishes that epoch, then runs the remaining full epochs. ``batch_size``
    defaults to --batch_size; ``padding`` and ``augmentation`` (more
    :func:`keras_hash.datasets.train_dataset` arguments, e.g. ``flip``) shape
    the augmentation; the first ``low_res_steps`` steps train on
    --low_res_size crops.
    """
    batch_size = batch_size or FLAGS.batch_size
    spe = datasets.steps_per_epoch(len(train_images), batch_size)
    total = epochs * spe
    backup = StepBackup(backup_dir, FLAGS.save_freq)
    start = backup.restore(model)
    if start:
        print(f"Resuming from the backup at step {start} / {total}", flush=True)
    started = time.perf_counter()
    step = start
    while step < total:
        epoch, offset = divmod(step, spe)
        stream = datasets.train_dataset(
            train_images,
            train_labels,
            batch_size,
            epochs,
            seed=seed,
            start_step=step,
            padding=padding,
            low_res_steps=low_res_steps,
            low_res_size=FLAGS.low_res_size,
            cutout=FLAGS.cutout,
            **augmentation,
        )
        model.fit(
            stream,
            initial_epoch=epoch,
            epochs=epoch + 1 if offset else epochs,
            steps_per_epoch=spe - offset if offset else spe,
            callbacks=[backup, *callbacks],
            shuffle=False,
            verbose=1 if sys.stdout.isatty() else 2,
        )
        step = int(model.optimizer.iterations)
    backup.clear()
    return {
        "train_seconds": time.perf_counter() - started,
        "resumed_from_step": start,
        "steps": total,
    }


def fit_hash_layer_on_features(model, train_images, train_labels, seed) -> dict:
    """Trains the hash layer of ``model`` on its frozen backbone's features.

    The features of the un-augmented training images are computed once (the
    backbone at inference, one pass, no test-time averaging); the hash layer
    then trains on them for --epochs of --batch_size, shuffled by ``seed``
    (:meth:`keras_hash.HashModel.fit_hash_layer`).
    """
    started = time.perf_counter()
    features = model.backbone.predict(datasets.eval_dataset(train_images), verbose=0)
    model.fit_hash_layer(
        features,
        train_labels,
        batch_size=FLAGS.batch_size,
        epochs=FLAGS.epochs,
        seed=seed,
        verbose=2,
    )
    return {
        "train_seconds": time.perf_counter() - started,
        "resumed_from_step": 0,
        "steps": FLAGS.epochs
        * datasets.steps_per_epoch(len(train_images), FLAGS.batch_size),
    }


def evaluate(model, images, labels, split) -> dict:
    """Encodes query and database, computes the retrieval metrics."""
    codes = {
        name: model.encode(datasets.eval_dataset(images[index]))
        for name, index in (("query", split.query), ("database", split.database))
    }
    problem = {
        "query_codes": codes["query"],
        "query_labels": labels[split.query],
        "database_codes": codes["database"],
        "database_labels": labels[split.database],
    }
    top_k = map_top_k(len(split.database))
    radius = evaluation.precision_at_radius(**problem, radius=2)
    curve = evaluation.precision_recall_curve(**problem)
    ns = precision_ns(len(split.database))
    return {
        "problem": problem,
        "map": evaluation.mean_average_precision(**problem, top_k=top_k),
        "map_top_k": top_k or len(split.database),
        "precision_radius_2": radius.precision,
        "recall_radius_2": radius.recall,
        "empty_radius_2": radius.empty_fraction,
        "curve": curve,
        "precision_at_n": {n: evaluation.precision_at_n(**problem, n=n) for n in ns},
    }


def map_top_k(database_size: int):
    """The mAP cut-off: --map_top_k, else the protocol's; None ranks all."""
    top_k = FLAGS.map_top_k
    if top_k is None:
        top_k = cifar.MAP_TOP_K[FLAGS.protocol]
    if not top_k or top_k >= database_size:
        return None
    return top_k


def precision_ns(database_size: int) -> list[int]:
    """Cut-offs of the precision@N plot, up to the database size."""
    ns = [1, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
    return [n for n in ns if n <= database_size] or [database_size]


def hamming_distances(problem, bits: int, max_queries: int = 200, seed: int = 0):
    """Distances from sampled queries to the whole database, with relevance.

    Uses a :class:`keras_hash.HammingIndex` over the database (searching
    every item) and returns ``(index, distances, relevant)``, flat arrays.
    """
    index = keras_hash.HammingIndex(bits)
    index.add(problem["database_codes"])
    rng = np.random.default_rng(seed)
    count = min(max_queries, len(problem["query_codes"]))
    chosen = np.sort(rng.choice(len(problem["query_codes"]), count, replace=False))
    distances, ids = index.search(problem["query_codes"][chosen], k=len(index))
    query_labels = problem["query_labels"][chosen]
    relevant = problem["database_labels"][ids] == query_labels[:, None]
    return index, distances.ravel(), relevant.ravel()


def write_plots(results, distances, relevant, output_dir: str) -> list[str]:
    """Writes the precision-recall, precision@N and distance-histogram PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    curve = results["curve"]
    ns = sorted(results["precision_at_n"])
    plots = {
        "pr_curve.png": lambda ax: _plot_pr(ax, curve),
        "precision_at_n.png": lambda ax: _plot_pn(ax, ns, results),
        "hamming_histogram.png": lambda ax: _plot_hist(ax, distances, relevant),
    }
    for name, draw in plots.items():
        figure, ax = plt.subplots(figsize=(5, 4))
        draw(ax)
        ax.grid(alpha=0.3)
        figure.tight_layout()
        paths.append(os.path.join(output_dir, name))
        figure.savefig(paths[-1], dpi=100)
        plt.close(figure)
    return paths


def _plot_pr(ax, curve):
    ax.plot(curve.recall, curve.precision, marker=".")
    ax.set(xlabel="recall", ylabel="precision", title="Hamming-ball precision-recall")


def _plot_pn(ax, ns, results):
    ax.plot(ns, [results["precision_at_n"][n] for n in ns], marker="o")
    ax.set(xscale="log", xlabel="N", ylabel="precision@N", title="Precision@N")


def _plot_hist(ax, distances, relevant):
    bins = np.arange(distances.max() + 2) - 0.5
    for mask, label in ((relevant, "relevant"), (~relevant, "irrelevant")):
        ax.hist(distances[mask], bins=bins, alpha=0.6, density=True, label=label)
    ax.set(xlabel="Hamming distance", ylabel="density", title="Query-database pairs")
    ax.legend()


def export_all(model, output_dir: str, representative) -> dict:
    """Saves the .keras model, exports SavedModel and TFLite; returns paths."""
    from keras_hash import export

    paths = {"keras": os.path.join(output_dir, "model.keras")}
    model.save(paths["keras"])
    if not FLAGS.export:
        return paths
    serving = os.path.join(output_dir, "serving")
    version = _next_version(os.path.join(serving, FLAGS.method))
    paths["saved_model"] = export.export_saved_model(
        model, serving, model_name=FLAGS.method, version=version
    )
    paths["tflite"] = export.export_tflite(
        model,
        os.path.join(output_dir, "model.tflite"),
        quantization=FLAGS.tflite_quantization,
        representative_images=(
            representative if FLAGS.tflite_quantization == "int8" else None
        ),
        overwrite=True,
    )
    return paths


def _next_version(model_dir: str) -> int:
    if not os.path.isdir(model_dir):
        return 1
    versions = [int(name) for name in os.listdir(model_dir) if name.isdigit()]
    return max(versions, default=0) + 1


def metrics_record(results, training, exports) -> dict:
    """The JSON-serializable summary written to metrics.json."""
    return {
        "method": FLAGS.method,
        "protocol": FLAGS.protocol,
        "bits": FLAGS.bits,
        "map": results["map"],
        "map_top_k": results["map_top_k"],
        "precision_radius_2": results["precision_radius_2"],
        "recall_radius_2": results["recall_radius_2"],
        "empty_radius_2": results["empty_radius_2"],
        "precision_at_n": {str(n): p for n, p in results["precision_at_n"].items()},
        **training,
        "epochs": FLAGS.epochs,
        "batch_size": FLAGS.batch_size,
        "backbone": FLAGS.backbone,
        "width": FLAGS.width,
        "learning_rate": FLAGS.learning_rate,
        "pretrain_epochs": FLAGS.pretrain_epochs,
        "pretrain_low_res_epochs": FLAGS.pretrain_low_res_epochs,
        "low_res_size": (FLAGS.low_res_size if FLAGS.pretrain_low_res_epochs else None),
        "finetune_learning_rate": (
            FLAGS.finetune_learning_rate if FLAGS.pretrain_epochs else None
        ),
        "finetune_backbone": (
            FLAGS.finetune_backbone if FLAGS.pretrain_epochs else None
        ),
        "cache_features": FLAGS.cache_features,
        "flip_average": FLAGS.flip_average,
        "translate_average": FLAGS.translate_average,
        "crop_padding": FLAGS.crop_padding,
        "cutout": FLAGS.cutout,
        "weight_decay": FLAGS.weight_decay,
        "inner_product_scale": FLAGS.inner_product_scale,
        "normalize_codes": FLAGS.normalize_codes,
        "seed": FLAGS.seed,
        "outputs": exports,
    }


def validation_callbacks(images, labels, split) -> list:
    """A RetrievalEvaluation on a small subset when --eval_every > 0."""
    if not FLAGS.eval_every:
        return []
    from keras_hash.callbacks import RetrievalEvaluation

    query, database = split.query[:200], split.database[:2000]
    return [
        RetrievalEvaluation(
            (images[query], labels[query]),
            (images[database], labels[database]),
            every=FLAGS.eval_every,
            top_k=map_top_k(len(database)),
        )
    ]


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    apply_quick(FLAGS)
    keras_hash.codes.check_bits(FLAGS.bits)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    check_low_res_flags()
    check_cache_features_flags()
    check_training_flags()
    keras.utils.set_random_seed(FLAGS.seed)
    policy = FLAGS.precision
    if policy == "auto":
        policy = precision.recommended_policy()
    keras.mixed_precision.set_global_policy(policy)
    images, labels, split = load_split(FLAGS.seed)
    print(f"Protocol {FLAGS.protocol}: {split.sizes()}", flush=True)
    spe = datasets.steps_per_epoch(len(split.train), FLAGS.batch_size)
    pretrain_seconds = 0.0
    if FLAGS.pretrain_epochs:
        print(f"Pre-training the backbone for {FLAGS.pretrain_epochs} epochs")
        backbone, pretrain_seconds = pretrain_backbone(
            images.shape[1:], images[split.train], labels[split.train]
        )
    else:
        backbone = build_backbone(images.shape[1:], images[split.train])
    model = build_model(images.shape[1:], spe, backbone, FLAGS.pretrain_epochs > 0)
    if FLAGS.cache_features:
        training = fit_hash_layer_on_features(
            model, images[split.train], labels[split.train], seed=FLAGS.seed
        )
    else:
        training = fit_resumable(
            model,
            images[split.train],
            labels[split.train],
            FLAGS.epochs,
            os.path.join(FLAGS.output_dir, "backup"),
            validation_callbacks(images, labels, split),
            seed=FLAGS.seed,
            padding=crop_padding(),
        )
    training["pretrain_seconds"] = pretrain_seconds
    for path in (pretrained_path(), training_flags_path()):
        if os.path.exists(path):
            os.remove(path)  # the backups are gone, the weights in the model
    training["train_seconds"] += pretrain_seconds
    training["dtype_policy"] = policy
    training["beta"] = float(model.hash_layer.beta.numpy())
    training["hash_iterations"] = int(model.hash_layer.iterations.numpy())
    # Evaluate the float32 model that is saved and exported.
    model = float32_copy(model, images.shape[1:], images[split.train])
    results = evaluate(model, images, labels, split)
    index, distances, relevant = hamming_distances(
        results["problem"], FLAGS.bits, seed=FLAGS.seed
    )
    index.save(os.path.join(FLAGS.output_dir, "database.index"))
    plots = write_plots(results, distances, relevant, FLAGS.output_dir)
    exports = export_all(model, FLAGS.output_dir, images[split.train[:500]])
    record = metrics_record(results, training, {**exports, "plots": plots})
    write_atomic(
        os.path.join(FLAGS.output_dir, "metrics.json"),
        lambda p: _write_json(p, record),
    )
    print(
        f"mAP@{record['map_top_k']} = {record['map']:.4f}, precision@r2 = "
        f"{record['precision_radius_2']:.4f} ({record['train_seconds']:.0f} s "
        f"training); outputs in {FLAGS.output_dir}",
        flush=True,
    )


if __name__ == "__main__":
    app.run(main)
