"""Training speed under each dtype policy, and what recommended_policy picks.

The same HashNet (``cifar_resnet`` backbone, 64 bits) is built once per
policy; their steps are interleaved in one run so that machine noise hits
all alike, and the ratio of median step times to float32 is printed.

    python benchmarks/bench_precision.py --width 32 --batch_size 128
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from timing import median_step_seconds  # noqa: E402

import keras_hash  # noqa: E402
from keras_hash import backbones  # noqa: E402
from keras_hash.recipes import precision  # noqa: E402


def build(policy, width, bits):
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    model = keras_hash.HashNet(backbones.cifar_resnet(width), bits, normalize=True)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True))
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--policies", nargs="+", default=["float32", "mixed_bfloat16"])
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.batch_size, 32, 32, 3)).astype(np.uint8)
    y = rng.integers(0, 10, args.batch_size)
    models = {policy: build(policy, args.width, args.bits) for policy in args.policies}
    medians = median_step_seconds(models, x, y, args.steps)
    base = medians.get("float32")
    for policy, median in medians.items():
        rate = args.batch_size / median
        ratio = f", {base / median:.2f}x float32 speed" if base else ""
        print(f"{policy:>15}: {median * 1e3:7.1f} ms/step, {rate:6.0f} img/s{ratio}")
    print(f"recommended_policy() here: {precision.recommended_policy()}")


if __name__ == "__main__":
    main()
