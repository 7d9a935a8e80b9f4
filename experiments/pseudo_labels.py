"""What pseudo-labelling the database adds to a classifier trained on few labels.

Semi-supervised and transductive: the database's images (never its labels)
join the training. Trains ``whitened_cnn`` as an airbench classifier
(:mod:`keras_hash.recipes.airbench`) for ``--epochs`` on the protocol's training
split, labels the database with its mirror-averaged predictions, keeps the
``--per_class`` most confident images of each predicted class, then trains
``--student_epochs`` on the labelled and pseudo-labelled images together:
the same network on a new airbench schedule (``--student=finetune``) or a
fresh one (``--student=fresh``). Prints the mirror-averaged query accuracy
of teacher and student, the seconds of each phase, and how many pseudo-
labels are right (read from the held-back database labels, for this
printout only). The seeds match ``train_cifar.py``'s pre-training.

    python benchmarks/pseudo_labels.py --data_dir=../shared/data/cifar10

The defaults (``dhn``: 5,000 labels, 54,000 database images) take about 25
minutes on a 2-core CPU.
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from keras_hash import backbones, datasets  # noqa: E402
from keras_hash.recipes import airbench, cifar  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum(
    "protocol",
    "dhn",
    ["dhn", "cifar10-1"],
    "Split protocol (one whose database is not the training set).",
)
flags.DEFINE_string("data_dir", None, "Image-folder copy of CIFAR-10.")
flags.DEFINE_integer("seed", 0, "Seed of the split, initialization and data order.")
flags.DEFINE_integer("epochs", 40, "Epochs of the teacher on the labelled images.")
flags.DEFINE_integer("per_class", 3000, "Pseudo-labels kept per predicted class.")
flags.DEFINE_integer("student_epochs", 4, "Epochs on labelled + pseudo-labelled.")
flags.DEFINE_enum("student", "finetune", ["finetune", "fresh"], "Student network.")

BATCH_SIZE = airbench.AIRBENCH_BATCH_SIZE
AUGMENTATION = {
    "padding": airbench.AIRBENCH_CROP_PADDING,
    **airbench.AIRBENCH_AUGMENTATION,
}


def classifier(whitening_images, total_steps):
    backbone = backbones.whitened_cnn(whitening_images[:5000])
    return airbench.airbench_classifier(backbone, 10, total_steps, BATCH_SIZE)


def train(model, images, labels, epochs, seed):
    """Seconds to train ``model`` for ``epochs`` of airbench's augmentation."""
    started = time.perf_counter()
    model.fit(
        datasets.train_dataset(
            images, labels, BATCH_SIZE, epochs, seed, **AUGMENTATION
        ),
        epochs=epochs,
        steps_per_epoch=datasets.steps_per_epoch(len(images), BATCH_SIZE),
        verbose=2,
    )
    return time.perf_counter() - started


def probabilities(model, images):
    """Softmax of the mirror-averaged logits (before airbench's 1/9 scale)."""

    @tf.function(reduce_retracing=True)
    def predict(batch):
        both = model(batch, training=False) + model(
            tf.reverse(batch, [2]), training=False
        )
        return tf.nn.softmax(both / 2 * 9)

    return np.concatenate(
        [predict(b).numpy() for b in datasets.eval_dataset(images, 1024)]
    )


def most_confident(probs, per_class):
    """Indices of the ``per_class`` most confident items of each predicted class."""
    predicted, confidence = probs.argmax(1), probs.max(1)
    keep = []
    for c in range(probs.shape[1]):
        members = np.flatnonzero(predicted == c)
        keep.append(
            members[np.argsort(-confidence[members], kind="stable")[:per_class]]
        )
    return np.concatenate(keep)


def accuracy(model, images, labels):
    return float(np.mean(probabilities(model, images).argmax(1) == labels))


def main(argv):
    del argv
    keras.utils.set_random_seed(FLAGS.seed)
    train_split, test_split = cifar.load_cifar10(FLAGS.data_dir)
    images, labels = cifar.pool(train_split, test_split)
    split = cifar.split_indices(
        train_split[1], test_split[1], FLAGS.protocol, seed=FLAGS.seed
    )
    x, y = images[split.train], labels[split.train]
    query_x, query_y = images[split.query], labels[split.query]
    steps = datasets.steps_per_epoch(len(x), BATCH_SIZE)
    teacher = classifier(x, FLAGS.epochs * steps)
    seconds = train(teacher, x, y, FLAGS.epochs, seed=FLAGS.seed + 1)
    print(
        f"teacher: {FLAGS.epochs} epochs on {len(x)} labels in {seconds:.0f} s, "
        f"query accuracy {accuracy(teacher, query_x, query_y):.4f}",
        flush=True,
    )
    started = time.perf_counter()
    probs = probabilities(teacher, images[split.database])
    seconds = time.perf_counter() - started
    keep = most_confident(probs, FLAGS.per_class)
    pseudo = probs.argmax(1)[keep]
    right = np.mean(pseudo == labels[split.database][keep])
    print(
        f"pseudo-labelled {len(split.database)} database images in {seconds:.0f} s; "
        f"kept {len(keep)}, {right:.4f} of them right",
        flush=True,
    )
    both_x = np.concatenate([x, images[split.database][keep]])
    both_y = np.concatenate([y, pseudo])
    total = FLAGS.student_epochs * datasets.steps_per_epoch(len(both_x), BATCH_SIZE)
    if FLAGS.student == "fresh":
        student = classifier(x, total)
    else:
        student = teacher
        airbench.compile_airbench(student, 10, total, BATCH_SIZE)
    seconds = train(student, both_x, both_y, FLAGS.student_epochs, seed=FLAGS.seed + 2)
    print(
        f"student ({FLAGS.student}): {FLAGS.student_epochs} epochs on {len(both_x)} "
        f"images in {seconds:.0f} s, query accuracy "
        f"{accuracy(student, query_x, query_y):.4f}",
        flush=True,
    )


if __name__ == "__main__":
    app.run(main)
