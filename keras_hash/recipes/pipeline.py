"""The CIFAR-10 hashing run: split, pre-train, hash, evaluate, export.

:func:`run` carries out a :class:`keras_hash.recipes.presets.Recipe` in a
:class:`keras_hash.training.Run` folder, so a killed run resumes when the
same command is run again (at the backed-up step of the phase it was in,
or straight at evaluation and export once training is done), and nothing
is deleted before ``metrics.json`` and the model files are written.

```python
from keras_hash.recipes import pipeline, presets

record = pipeline.run(presets.get("cifar10-2"), data_dir="data/cifar10",
                      output_dir="runs/cifar10-2")
record["map"]  # mAP@1000
```

Outputs in ``output_dir``: ``metrics.json``, ``pr_curve.png``,
``precision_at_n.png``, ``hamming_histogram.png``, ``gallery.png``,
``model.keras``, ``database.index``, ``serving/<method>/<version>/``
(SavedModel) and ``model.tflite``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time

import keras
import numpy as np

import keras_hash
from keras_hash import backbones, datasets, export, training
from keras_hash.files import write_atomic
from keras_hash.recipes import airbench, cifar, precision, reports
from keras_hash.recipes.presets import Recipe

# Intermediate results kept in the run's state/ folder until it finishes.
PRETRAINED = "pretrained_backbone.weights.h5"
HASHED = "hashed_model.weights.h5"
#: Seconds between progress lines of long phases (encoding, training steps).
PROGRESS_SECONDS = 5.0
#: What a healthy run of each preset reaches: ``(quick, full)`` mAP ranges
#: (measured in docs/results.md; below the low end, something is wrong).
HEALTHY_MAP = {
    "cifar10-2": ((0.58, 0.68), (0.89, 0.92)),
    "dhn": (None, (0.64, 0.67)),
    "scratch": (None, (0.53, 0.58)),
}
_STARTED = time.perf_counter()


def log(message: str) -> None:
    """Prints ``[  12 s] message`` (seconds since the import), flushed."""
    print(f"[{time.perf_counter() - _STARTED:5.0f} s] {message}", flush=True)


def next_free_dir(output_dir: str, config: dict) -> str:
    """``output_dir``, or ``output_dir-2``, ``-3``, ...: the first folder that
    holds no finished run (``metrics.json``) and no unfinished run of
    another configuration, so nothing there is overwritten or mixed."""
    candidate, number = output_dir, 1
    while True:
        finished = os.path.exists(os.path.join(candidate, training.METRICS_FILE))
        config_path = os.path.join(candidate, training.CONFIG_FILE)
        if not finished and not os.path.exists(config_path):
            return candidate
        if not finished:
            with open(config_path, encoding="utf-8") as file:
                if json.load(file) == config:
                    return candidate  # this configuration's unfinished run
        number += 1
        candidate = f"{output_dir.rstrip(os.sep)}-{number}"


def run(
    recipe: Recipe,
    *,
    output_dir: str,
    data_dir: str | None = None,
    map_top_k: int | None = None,
    save_freq: int = 50,
    eval_every: int = 0,
    export_models: bool = True,
    tflite_quantization: str = "float32",
) -> dict:
    """Trains, evaluates and exports ``recipe``; returns the metrics record.

    Args:
        recipe: what to train.
        output_dir: the run folder.
        data_dir: image-folder copy of CIFAR-10, or None to download it.
        map_top_k: mAP cut-off; default: the protocol's
            (:data:`keras_hash.recipes.cifar.MAP_TOP_K`); 0 ranks all.
        save_freq: steps between backups.
        eval_every: epochs between ``val_map`` evaluations of the hashing
            phase on a 200-query / 2,000-image subset (0: off).
        export_models: write the SavedModel and the TFLite file.
        tflite_quantization: ``float32``, ``float16``, ``dynamic`` or ``int8``.
    """
    keras_hash.codes.check_bits(recipe.bits)
    state = training.Run(output_dir, recipe.to_dict(), save_freq=save_freq)
    state.start()
    keras.utils.set_random_seed(recipe.seed)
    policy = recipe.precision
    if policy == "auto":
        policy = precision.recommended_policy()
    keras.mixed_precision.set_global_policy(policy)
    log(f"Reading CIFAR-10 from {data_dir or 'keras.datasets (download)'}")
    images, labels, split = load_split(recipe, data_dir)
    log(f"Protocol {recipe.protocol}: {split.sizes()}")
    train_images, train_labels = images[split.train], labels[split.train]
    validation = _validation(images, labels, split, eval_every, map_top_k)
    model, timing = train(recipe, state, train_images, train_labels, validation)
    timing["dtype_policy"] = policy
    model = training.float32_copy(model)
    results = evaluate(model, images, labels, split, _top_k(recipe, map_top_k, split))
    log("Writing the database index, plots and gallery")
    outputs = reports.write_all(results, images, split, output_dir, recipe.seed)
    outputs.update(
        _save_models(
            model, recipe, output_dir, train_images, export_models, tflite_quantization
        )
    )
    record = {**results["metrics"], **timing, "outputs": outputs}
    state.finish(record)
    log(f"Finished: {healthy_range(recipe, record)}")
    return record


def healthy_range(recipe: Recipe, record: dict) -> str:
    """A line saying where ``record["map"]`` falls against :data:`HEALTHY_MAP`."""
    from keras_hash.recipes import presets

    text = f"mAP@{record['map_top_k']} {record['map']:.3f}"
    name = next((n for n, r in presets.PRESETS.items() if _same_run(r, recipe)), None)
    quick = name is not None and recipe != presets.PRESETS[name]
    expected = HEALTHY_MAP.get(name, (None, None))[1 if not quick else 0]
    if expected is None:
        return f"{text} (no measured range for this recipe; chance is about 0.1)"
    low, high = expected
    verdict = "healthy" if record["map"] >= low else "BELOW the healthy range"
    return (
        f"{text}: {verdict} (a healthy {'--quick ' if quick else ''}run of "
        f"preset {name} reaches {low:.2f}-{high:.2f}; chance is about 0.1)"
    )


def _same_run(preset: Recipe, recipe: Recipe) -> bool:
    """Whether ``recipe`` is ``preset`` or its --quick version (seed aside)."""
    from keras_hash.recipes import presets

    for candidate in (preset, presets.quick_sizes(preset)):
        if candidate.replace(seed=recipe.seed) == recipe:
            return True
    return False


def load_split(recipe: Recipe, data_dir):
    """CIFAR-10 split by the recipe's protocol: ``(images, labels, split)``."""
    train, test = cifar.load_cifar10(data_dir, log=log)
    images, labels = cifar.pool(train, test)
    split = cifar.split_indices(
        train[1],
        test[1],
        recipe.protocol,
        seed=recipe.seed,
        query_per_class=recipe.query_per_class,
        train_per_class=recipe.train_per_class,
        database_size=recipe.database_size,
    )
    return images, labels, split


def train(recipe, state, images, labels, callbacks=()) -> tuple:
    """Pre-training (if any) and hashing; returns ``(model, timing)``.

    A model whose hashing phase finished is kept in the run's state, so a
    rerun after a kill during evaluation or export does not train again.
    """
    image_shape = images.shape[1:]
    started = time.perf_counter()
    if recipe.pretrain_epochs:
        log(
            f"Pre-training the {recipe.backbone} backbone as a classifier: "
            f"{recipe.pretrain_epochs} epochs on {len(images)} images"
        )
        backbone = pretrain_backbone(recipe, state, images, labels)
    else:
        backbone = build_backbone(recipe, image_shape, images)
    pretrain_seconds = time.perf_counter() - started
    log(f"Building the {recipe.method} model ({recipe.bits} bits)")
    num_classes = int(np.max(labels)) + 1
    model = build_model(recipe, image_shape, backbone, len(images), num_classes)
    reused = os.path.exists(state.state_path(HASHED))
    resumed_from = 0
    if reused:  # trained before a kill during evaluation or export
        model.optimizer.build(model.trainable_variables)
        model.load_weights(state.state_path(HASHED))
    elif recipe.cache_features:
        if recipe.hash_train_size and recipe.hash_train_size < len(images):
            rng = np.random.default_rng(recipe.seed + 2)
            chosen = np.sort(rng.choice(len(images), recipe.hash_train_size, False))
            images, labels = images[chosen], labels[chosen]
        _fit_on_features(recipe, model, images, labels)
        state.save_state(HASHED, model.save_weights)
    else:
        log(f"Hashing: {recipe.epochs} epochs of {recipe.method} on images")
        spe = datasets.steps_per_epoch(len(images), recipe.batch_size)
        resumed_from = state.fit(
            model,
            _stream(recipe, images, labels, recipe.batch_size, crop_padding(recipe)),
            epochs=recipe.epochs,
            steps_per_epoch=spe,
            phase="hashing",
            callbacks=[*callbacks, StepProgress("hashing")],
        )["resumed_from_step"]
        state.save_state(HASHED, model.save_weights)
    return model, {
        "train_seconds": time.perf_counter() - started,
        "pretrain_seconds": pretrain_seconds,
        "beta": float(model.hash_layer.beta.numpy()),
        "hash_iterations": int(model.hash_layer.iterations.numpy()),
        "reused_trained_model": reused,
        "resumed_from_step": resumed_from,
    }


def build_backbone(recipe: Recipe, image_shape, train_images):
    """The recipe's backbone (normalization inside); whitened_cnn fits its
    whitening layer to the first 5,000 training images."""
    if recipe.backbone == "cifar_resnet":
        return backbones.cifar_resnet(recipe.width, input_shape=image_shape)
    if recipe.backbone == "whitened_cnn":
        return backbones.whitened_cnn(train_images[:5000], input_shape=image_shape)
    return backbones.application(
        recipe.backbone, input_shape=image_shape, weights=recipe.weights
    )


def pretrain_backbone(recipe: Recipe, state, images, labels):
    """Trains the backbone as a softmax classifier; resumable, kept in state.

    whitened_cnn trains with airbench's recipe
    (:func:`keras_hash.recipes.airbench.airbench_classifier`), other
    backbones with the hashing SGD recipe and a linear head. The first
    ``pretrain_low_res_epochs`` train on ``low_res_size`` crops.
    """
    image_shape = images.shape[1:]
    backbone = build_backbone(recipe, image_shape, images)
    if os.path.exists(state.state_path(PRETRAINED)):
        backbone.load_weights(state.state_path(PRETRAINED))
        return backbone
    fixed_size = backbone
    if recipe.pretrain_low_res_epochs:  # the same weights, any image size
        backbone = build_backbone(recipe, (None, None, image_shape[-1]), images)
    num_classes = int(np.max(labels)) + 1
    if recipe.backbone == "whitened_cnn":
        batch_size = recipe.pretrain_batch_size or airbench.AIRBENCH_BATCH_SIZE
        batch_size = min(batch_size, len(images))
        padding = crop_padding(recipe, airbench.AIRBENCH_CROP_PADDING)
        augmentation = airbench.AIRBENCH_AUGMENTATION
        spe = datasets.steps_per_epoch(len(images), batch_size)
        classifier = airbench.airbench_classifier(
            backbone, num_classes, recipe.pretrain_epochs * spe, batch_size
        )
    else:
        batch_size = recipe.pretrain_batch_size or recipe.batch_size
        padding, augmentation = crop_padding(recipe), {}
        spe = datasets.steps_per_epoch(len(images), batch_size)
        classifier = keras.Sequential(
            [backbone, keras.layers.Dense(num_classes, name="logits")], name="pretrain"
        )
        classifier.build((None, *image_shape))
        classifier.compile(
            optimizer=sgd(recipe, recipe.pretrain_epochs * spe, spe),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    stream = _stream(
        recipe,
        images,
        labels,
        batch_size,
        padding,
        epochs=recipe.pretrain_epochs,
        seed=recipe.seed + 1,
        low_res_steps=recipe.pretrain_low_res_epochs * spe,
        **augmentation,
    )
    state.fit(
        classifier,
        stream,
        epochs=recipe.pretrain_epochs,
        steps_per_epoch=spe,
        phase="pretraining",
        callbacks=[StepProgress("pre-training")],
    )
    log("Pre-training done; keeping the backbone")
    airbench.drop_regularizers(classifier)  # airbench's L2 is not for hashing
    fixed_size.set_weights(backbone.get_weights())
    state.save_state(PRETRAINED, fixed_size.save_weights)
    return fixed_size


def build_model(
    recipe: Recipe, image_shape, backbone, num_train: int, num_classes=None
):
    """The hash model, built and compiled with SGD (warm-up + cosine decay).

    After pre-training the schedule starts at ``finetune_learning_rate``
    without warm-up, and the backbone is frozen unless ``finetune_backbone``.
    ``num_classes`` (those of the training labels) is needed by ``csq``.
    """
    pretrained = recipe.pretrain_epochs > 0
    if pretrained and not recipe.finetune_backbone:
        backbone.trainable = False
    model_class = {
        "hashnet": keras_hash.HashNet,
        "dhn": keras_hash.DHN,
        "dch": keras_hash.DCH,
        "dpsh": keras_hash.DPSH,
        "csq": functools.partial(keras_hash.CSQ, num_classes=num_classes),
    }[recipe.method]
    if recipe.method == "csq" and num_classes is None:
        raise ValueError("csq needs num_classes, the number of training classes")
    model = model_class(
        backbone,
        recipe.bits,
        normalize=recipe.normalize_codes,
        flip_average=recipe.flip_average,
        translate_average=recipe.translate_average,
        name=recipe.method,
    )
    model.build((None, *image_shape))
    spe = datasets.steps_per_epoch(num_train, recipe.batch_size)
    total = recipe.epochs * spe
    if pretrained:
        optimizer = sgd(recipe, total, spe, recipe.finetune_learning_rate, 0)
    else:
        optimizer = sgd(recipe, total, spe)
    model.compile(optimizer=optimizer, loss=_loss(recipe))
    return model


def sgd(recipe, total_steps, steps_per_epoch, learning_rate=None, warmup_epochs=None):
    """SGD with Nesterov momentum 0.9, linear warm-up, cosine decay to 0."""
    peak = recipe.learning_rate if learning_rate is None else learning_rate
    if warmup_epochs is None:
        warmup_epochs = recipe.warmup_epochs
    warmup = min(int(warmup_epochs * steps_per_epoch), total_steps // 2)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else peak,
        decay_steps=max(total_steps - warmup, 1),
        warmup_target=peak if warmup else None,
        warmup_steps=warmup,
    )
    return keras.optimizers.SGD(
        schedule, momentum=0.9, nesterov=True, weight_decay=recipe.weight_decay
    )


def crop_padding(recipe: Recipe, default: int = datasets.CROP_PADDING) -> int:
    """The recipe's crop shift, else ``default``."""
    return default if recipe.crop_padding is None else recipe.crop_padding


def evaluate(model, images, labels, split, top_k) -> dict:
    """Encodes query and database; the retrieval metrics, computed once."""
    codes = {
        name: encode_with_progress(model.encode, images[index], f"{name} images")
        for name, index in (("query", split.query), ("database", split.database))
    }
    log(f"Computing retrieval metrics ({len(split.query)} x {len(split.database)})")
    evaluator = keras_hash.RetrievalEvaluator(
        query_codes=codes["query"],
        query_labels=labels[split.query],
        database_codes=codes["database"],
        database_labels=labels[split.database],
        bits=model.bits,
    )
    radius = evaluator.precision_at_radius(2)
    ns = [n for n in reports.PRECISION_NS if n <= len(split.database)]
    metrics = {
        "map": evaluator.map(top_k=top_k),
        "map_top_k": top_k or len(split.database),
        "precision_radius_2": radius.precision,
        "recall_radius_2": radius.recall,
        "empty_radius_2": radius.empty_fraction,
        "precision_at_n": {str(n): evaluator.precision_at_n(n) for n in ns},
    }
    return {
        "metrics": metrics,
        "codes": codes,
        "labels": labels,
        "curve": evaluator.precision_recall_curve(),
    }


def _top_k(recipe: Recipe, map_top_k, split):
    top_k = cifar.MAP_TOP_K[recipe.protocol] if map_top_k is None else map_top_k
    if not top_k or top_k >= len(split.database):
        return None
    return top_k


def _loss(recipe: Recipe):
    scale = recipe.inner_product_scale
    if scale is None:
        return "auto"
    if recipe.method == "hashnet":
        return keras_hash.HashNetLoss(alpha=scale)
    if recipe.method == "dhn":
        return keras_hash.DHNLoss(scale=scale)
    raise ValueError(
        f"inner_product_scale is for hashnet and dhn; {recipe.method} has none "
        "(DPSH's scale is the paper's 1/2, DCH and CSQ use no inner product)"
    )


def _stream(
    recipe, images, labels, batch_size, padding, epochs=None, seed=None, **augmentation
):
    """``start_step -> tf.data stream`` of augmented training batches."""
    epochs = recipe.epochs if epochs is None else epochs
    seed = recipe.seed if seed is None else seed

    def stream(start_step):
        return datasets.train_dataset(
            images,
            labels,
            batch_size,
            epochs,
            seed=seed,
            start_step=start_step,
            padding=padding,
            low_res_size=recipe.low_res_size,
            cutout=recipe.cutout,
            **augmentation,
        )

    return stream


def _fit_on_features(recipe, model, images, labels) -> None:
    """Trains the hash layer on the frozen backbone's features of ``images``."""

    def features_of(chunk):
        return model.backbone.predict(datasets.eval_dataset(chunk), verbose=0)

    features = encode_with_progress(
        features_of, images, "training images (cached backbone features)"
    )
    log(f"Hashing: {recipe.epochs} epochs of the hash layer on cached features")
    model.fit_hash_layer(
        features,
        labels,
        batch_size=recipe.batch_size,
        epochs=recipe.epochs,
        seed=recipe.seed,
        verbose=2,
    )


def _validation(images, labels, split, eval_every, map_top_k) -> list:
    if not eval_every:
        return []
    query, database = split.query[:200], split.database[:2000]
    top_k = map_top_k if map_top_k and map_top_k < len(database) else None
    return [
        keras_hash.callbacks.RetrievalEvaluation(
            (images[query], labels[query]),
            (images[database], labels[database]),
            every=eval_every,
            top_k=top_k,
        )
    ]


def _save_models(
    model, recipe, output_dir, train_images, export_models, quantization
) -> dict:
    """Saves the .keras model, exports SavedModel and TFLite; returns paths."""
    paths = {"keras": os.path.join(output_dir, "model.keras")}
    log(f"Saving {paths['keras']}")
    write_atomic(paths["keras"], model.save)
    if not export_models:
        return paths
    serving = os.path.join(output_dir, "serving")
    log(f"Exporting the SavedModel to {serving}/{recipe.method}/")
    paths["saved_model"] = export.export_saved_model(
        model,
        serving,
        model_name=recipe.method,
        version=export.next_version(os.path.join(serving, recipe.method)),
    )
    log(f"Exporting {quantization} TFLite to {output_dir}/model.tflite")
    paths["tflite"] = export.export_tflite(
        model,
        os.path.join(output_dir, "model.tflite"),
        quantization=quantization,
        representative_images=train_images[:500] if quantization == "int8" else None,
        overwrite=True,
    )
    return paths


def encode_with_progress(encode, images, what: str, chunk: int = 1024):
    """``encode(images)`` chunk by chunk, logging progress every few seconds."""
    log(f"Encoding {len(images)} {what}")
    outputs, last = [], time.perf_counter()
    for start in range(0, len(images), chunk):
        outputs.append(np.asarray(encode(images[start : start + chunk])))
        if time.perf_counter() - last > PROGRESS_SECONDS:
            log(f"  {start + len(outputs[-1])} / {len(images)} {what}")
            last = time.perf_counter()
    return np.concatenate(outputs) if outputs else encode(images[:0])


class StepProgress(keras.callbacks.Callback):
    """Logs the step and loss every :data:`PROGRESS_SECONDS` when the output
    is not a terminal (where Keras's progress bar does it)."""

    def __init__(self, phase: str):
        super().__init__()
        self.phase = phase
        self._last = time.perf_counter()
        self._quiet = sys.stdout.isatty()

    def on_train_batch_end(self, batch, logs=None):
        if self._quiet or time.perf_counter() - self._last < PROGRESS_SECONDS:
            return
        self._last = time.perf_counter()
        step = int(self.model.optimizer.iterations.numpy())
        loss = (logs or {}).get("loss")
        loss = "" if loss is None else f", loss {float(loss):.4f}"
        log(f"  {self.phase} step {step}{loss}")
