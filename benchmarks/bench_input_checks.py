"""Cost of the non-finite weight check (issue 32) against a training step.

:class:`keras_hash.input_checks.StopOnNonFinite` runs after every step of
``HashModel.fit``: one fused ``isfinite`` reduction over the model's float
weights, run after a step only if the checks so far stayed within its
``budget`` (1% of the time). This times one check against ``train_on_batch``
steps of the same model, interleaved (each round runs one step, then one
check), for the backbones of the CIFAR-10 recipes and a digits-sized model,
and derives how often the budget lets it run.

    cpujob .venv/bin/python benchmarks/bench_input_checks.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_hash  # noqa: E402
from keras_hash import backbones, input_checks  # noqa: E402

STEPS = 20


def case(name, backbone, shape, batch):
    model = keras_hash.HashNet(backbone, bits=64)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, *shape)).astype(np.float32)
    y = np.arange(batch) % 10
    check = input_checks.StopOnNonFinite()
    check.set_model(model)
    for _ in range(3):
        model.train_on_batch(x, y)
    check.on_train_begin()
    for _ in range(3):
        check.on_train_batch_end(0)
    steps, checks = [], []
    for _ in range(STEPS):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        steps.append(time.perf_counter() - start)
        start = time.perf_counter()
        check.on_train_batch_end(0)
        checks.append(time.perf_counter() - start)
    step, cost = float(np.median(steps)), float(np.median(checks))
    weights = sum(int(np.prod(w.shape)) for w in model.weights)
    every = max(1, int(np.ceil(cost / (check.budget * step))))
    print(
        f"{name:34s} {weights:>9,d} weights  step {step * 1e3:8.2f} ms  "
        f"check {cost * 1e3:6.3f} ms = {cost / step:6.2%} of a step: checked "
        f"every {every} step(s), {cost / (every * step):5.2%} of training",
        flush=True,
    )


def main():
    keras.utils.set_random_seed(0)
    images = np.random.default_rng(0).uniform(0, 255, (512, 32, 32, 3))
    case(
        "whitened_cnn, batch 256, 32x32",
        backbones.whitened_cnn(images.astype(np.float32), input_shape=(32, 32, 3)),
        (32, 32, 3),
        256,
    )
    case(
        "cifar_resnet(16), batch 128, 32x32",
        backbones.cifar_resnet(16, input_shape=(32, 32, 3)),
        (32, 32, 3),
        128,
    )
    tiny = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )
    case("digits-sized conv, batch 64, 8x8", tiny, (8, 8, 1), 64)


if __name__ == "__main__":
    main()
