"""CIFAR-10 for hashing: loading and the split protocols of the literature.

Part of :mod:`keras_hash.recipes`, which ``import keras_hash`` does not
import. Images stay raw ``uint8`` (0-255): normalization belongs in the
backbone, so that an exported model takes the same raw images as training.

The three protocols, on the 60,000 images of CIFAR-10 pooled as
``[train (50,000); test (10,000)]``:

| protocol | query | train | database |
| --- | --- | --- | --- |
| ``dhn`` | 100 per class (1k) | 500 per class (5k) | the rest (54k) |
| ``cifar10-1`` | 100 per class (1k) | 500 per class (5k) | all but query (59k) |
| ``cifar10-2`` | test set (10k) | training set (50k) | training set (50k) |

Query and train images of ``dhn`` and ``cifar10-1`` are drawn per class from
the whole pool with a seeded generator. The database is returned shuffled
(seeded): retrieval metrics break Hamming-distance ties by database index,
and a database stored class by class would bias them (``docs/conventions.md``).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from keras_hash.datasets import load_image_folder

PROTOCOLS = ("dhn", "cifar10-1", "cifar10-2")
# Each protocol's mAP cut-off (mAP@K); None ranks the whole database.
MAP_TOP_K = {"dhn": None, "cifar10-1": None, "cifar10-2": 1000}
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_PER_CLASS = {"dhn": (100, 500), "cifar10-1": (100, 500)}


@dataclasses.dataclass(frozen=True)
class Split:
    """Indices of the query, train and database sets in a pooled image array.

    The pool is ``[train images; test images]`` as returned by
    :func:`load_cifar10` and :func:`pool`.
    """

    protocol: str
    query: np.ndarray
    train: np.ndarray
    database: np.ndarray

    def sizes(self) -> dict:
        """Sizes of the three sets, e.g. ``{"query": 1000, ...}``."""
        return {
            "query": len(self.query),
            "train": len(self.train),
            "database": len(self.database),
        }


def check_protocol(protocol: str) -> str:
    """Returns ``protocol`` if it is one of :data:`PROTOCOLS`, else raises."""
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"Unknown protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}"
        )
    return protocol


def split_indices(
    train_labels,
    test_labels,
    protocol: str = "dhn",
    seed: int = 0,
    query_per_class: int | None = None,
    train_per_class: int | None = None,
    database_size: int | None = None,
) -> Split:
    """Splits CIFAR-10 into query, train and database sets by a named protocol.

    Indices refer to the pool ``[train; test]`` (``len(train_labels)`` is the
    offset of the first test image). The same ``seed`` gives the same split.

    ```python
    (x_train, y_train), (x_test, y_test) = cifar.load_cifar10()
    split = cifar.split_indices(y_train, y_test, "dhn", seed=0)
    split.sizes()  # {'query': 1000, 'train': 5000, 'database': 54000}
    images, labels = cifar.pool((x_train, y_train), (x_test, y_test))
    query_images = images[split.query]
    ```

    Args:
        train_labels: class ids of the official training images ``[N_train]``.
        test_labels: class ids of the official test images ``[N_test]``.
        protocol: ``"dhn"``, ``"cifar10-1"`` or ``"cifar10-2"`` (see the module
            docstring).
        seed: seed of the sampling and of the database order.
        query_per_class: override the query images per class (for quick runs
            on a subset). For ``cifar10-2`` the query is then drawn per class
            from the test set. Defaults to the protocol's.
        train_per_class: override the training images per class, as above.
        database_size: keep a seeded random subset of at most this many
            database images. Defaults to the whole database.
    """
    check_protocol(protocol)
    train_labels = _check_labels(train_labels, "train_labels")
    test_labels = _check_labels(test_labels, "test_labels")
    rng = np.random.default_rng(seed)
    if protocol == "cifar10-2":
        split = _split_official(
            train_labels, test_labels, rng, query_per_class, train_per_class
        )
    else:
        split = _split_pooled(
            np.concatenate([train_labels, test_labels]),
            protocol,
            rng,
            query_per_class,
            train_per_class,
        )
    database = rng.permutation(split["database"])
    if database_size is not None:
        database = database[: _positive(database_size, "database_size")]
    return Split(protocol, split["query"], split["train"], database)


def _split_pooled(labels, protocol, rng, query_per_class, train_per_class):
    num_query, num_train = _PER_CLASS[protocol]
    num_query = _positive(query_per_class or num_query, "query_per_class")
    num_train = _positive(train_per_class or num_train, "train_per_class")
    query, train = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) < num_query + num_train:
            raise ValueError(
                f"Class {label} has {len(members)} images; protocol {protocol!r} "
                f"needs {num_query} query + {num_train} train per class"
            )
        query.append(members[:num_query])
        train.append(members[num_query : num_query + num_train])
    query, train = np.sort(np.concatenate(query)), np.sort(np.concatenate(train))
    excluded = query if protocol == "cifar10-1" else np.concatenate([query, train])
    database = np.setdiff1d(np.arange(len(labels)), excluded)
    return {"query": query, "train": train, "database": database}


def _split_official(train_labels, test_labels, rng, query_per_class, train_per_class):
    offset = len(train_labels)
    train = np.arange(offset)
    query = offset + np.arange(len(test_labels))
    if query_per_class is not None:
        query = offset + _per_class(test_labels, query_per_class, rng, "query")
    if train_per_class is not None:
        train = _per_class(train_labels, train_per_class, rng, "train")
    return {"query": query, "train": train, "database": np.arange(offset)}


def _per_class(labels, count, rng, what):
    count = _positive(count, f"{what}_per_class")
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < count:
            raise ValueError(
                f"Class {label} has {len(members)} images, fewer than "
                f"{what}_per_class={count}"
            )
        chosen.append(rng.choice(members, count, replace=False))
    return np.sort(np.concatenate(chosen))


def _check_labels(labels, name):
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{name} must be integer class ids [N] or [N, 1], got "
            f"{labels.dtype} array of shape {labels.shape}"
        )
    return labels


def _positive(value, name):
    if int(value) < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def pool(train, test) -> tuple[np.ndarray, np.ndarray]:
    """Concatenates ``(images, labels)`` of train and test into the split pool.

    Labels come back as a flat ``int32`` vector.
    """
    images = np.concatenate([train[0], test[0]])
    labels = np.concatenate(
        [_check_labels(train[1], "train labels"), _check_labels(test[1], "test labels")]
    )
    return images, labels.astype(np.int32)


def load_cifar10(data_dir: str | None = None, log=None):
    """Loads CIFAR-10 as ``uint8`` arrays: ``((x_train, y_train), (x_test, y_test))``.

    Without ``data_dir``, uses ``keras.datasets.cifar10`` (downloaded once
    into ``~/.keras/datasets``). With it, reads an image-folder copy:
    ``data_dir/train/<class>/*.jpg|png`` and ``data_dir/test/<class>/...``.
    Images are ``[N, 32, 32, 3]`` and labels ``int32 [N]``.

    ```python
    (x_train, y_train), (x_test, y_test) = cifar.load_cifar10(
        "data/cifar10"
    )
    ```

    Args:
        data_dir: a directory in image-folder layout, or ``None`` to download.
        log: called with a progress line between the two folders (optional).
    """
    if data_dir:
        train = load_image_folder(os.path.join(data_dir, "train"))
        if log is not None:
            log(f"  {len(train.labels)} training images read; reading the test images")
        test = load_image_folder(
            os.path.join(data_dir, "test"), class_names=train.class_names
        )
        return (train.images, train.labels), (test.images, test.labels)
    return _download_cifar10()


def _download_cifar10():
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as error:  # noqa: BLE001 - any download failure
        raise RuntimeError(
            f"Could not download CIFAR-10 ({type(error).__name__}: {error}). "
            "Point at a local copy in image-folder layout (train/<class>/*.jpg, "
            "test/<class>/*.jpg) with data_dir=... (--data_dir in "
            "examples/train_cifar.py), e.g. --data_dir=data/cifar10"
        ) from error
    return (
        (x_train, y_train.reshape(-1).astype(np.int32)),
        (x_test, y_test.reshape(-1).astype(np.int32)),
    )
