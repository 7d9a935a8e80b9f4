"""Tests for keras_hash.recipes.cifar: split protocols and loading CIFAR-10."""

import numpy as np
import pytest

from keras_hash.recipes import cifar
from tests.test_datasets import write_folder

NUM_CLASSES = 10


def cifar_sized_labels(seed=0):
    """Labels with CIFAR-10's sizes: 5,000 / 1,000 per class, shuffled."""
    rng = np.random.default_rng(seed)
    train = rng.permutation(np.repeat(np.arange(NUM_CLASSES), 5000)).astype(np.int32)
    test = rng.permutation(np.repeat(np.arange(NUM_CLASSES), 1000)).astype(np.int32)
    return train, test


def per_class(labels, indices):
    return np.bincount(labels[indices], minlength=NUM_CLASSES)


class TestSplitProtocols:
    def setup_method(self):
        self.train, self.test = cifar_sized_labels()
        self.pooled = np.concatenate([self.train, self.test])

    def test_dhn_sizes_and_per_class_counts(self):
        split = cifar.split_indices(self.train, self.test, "dhn", seed=0)
        assert split.sizes() == {"query": 1000, "train": 5000, "database": 54000}
        np.testing.assert_array_equal(per_class(self.pooled, split.query), [100] * 10)
        np.testing.assert_array_equal(per_class(self.pooled, split.train), [500] * 10)
        np.testing.assert_array_equal(
            per_class(self.pooled, split.database), [5400] * 10
        )

    def test_dhn_sets_are_disjoint_and_cover_the_pool(self):
        split = cifar.split_indices(self.train, self.test, "dhn", seed=3)
        everything = np.concatenate([split.query, split.train, split.database])
        assert len(np.unique(everything)) == 60000
        np.testing.assert_array_equal(np.sort(everything), np.arange(60000))

    def test_cifar10_1_puts_train_inside_the_database(self):
        split = cifar.split_indices(self.train, self.test, "cifar10-1", seed=0)
        assert split.sizes() == {"query": 1000, "train": 5000, "database": 59000}
        assert not set(split.query) & set(split.database)
        assert set(split.train) <= set(split.database)
        assert set(split.query) | set(split.database) == set(range(60000))

    def test_cifar10_2_is_the_official_split(self):
        split = cifar.split_indices(self.train, self.test, "cifar10-2", seed=0)
        assert split.sizes() == {"query": 10000, "train": 50000, "database": 50000}
        np.testing.assert_array_equal(np.sort(split.query), np.arange(50000, 60000))
        np.testing.assert_array_equal(np.sort(split.train), np.arange(50000))
        np.testing.assert_array_equal(np.sort(split.database), np.arange(50000))

    @pytest.mark.parametrize("protocol", cifar.PROTOCOLS)
    def test_same_seed_same_split(self, protocol):
        a = cifar.split_indices(self.train, self.test, protocol, seed=7)
        b = cifar.split_indices(self.train, self.test, protocol, seed=7)
        for name in ("query", "train", "database"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))

    @pytest.mark.parametrize("protocol", ["dhn", "cifar10-1"])
    def test_other_seed_other_split(self, protocol):
        a = cifar.split_indices(self.train, self.test, protocol, seed=1)
        b = cifar.split_indices(self.train, self.test, protocol, seed=2)
        assert not np.array_equal(a.query, b.query)
        assert not np.array_equal(a.train, b.train)

    def test_database_is_shuffled_not_class_sorted(self):
        # Class-sorted storage biases index tie-breaking (docs/conventions.md).
        labels = np.repeat(np.arange(NUM_CLASSES), 6000)
        train, test = labels[:50000], labels[50000:]
        split = cifar.split_indices(train, test, "dhn", seed=0)
        assert not np.all(np.diff(split.database) > 0)
        first = labels[split.database[:1000]]
        assert len(np.unique(first)) == NUM_CLASSES

    def test_overrides_and_database_cap(self):
        split = cifar.split_indices(
            self.train,
            self.test,
            "dhn",
            seed=0,
            query_per_class=3,
            train_per_class=7,
            database_size=100,
        )
        assert split.sizes() == {"query": 30, "train": 70, "database": 100}
        np.testing.assert_array_equal(per_class(self.pooled, split.query), [3] * 10)
        assert not set(split.database) & (set(split.query) | set(split.train))

    def test_cifar10_2_overrides_draw_query_from_test(self):
        split = cifar.split_indices(
            self.train, self.test, "cifar10-2", query_per_class=5, train_per_class=20
        )
        assert np.all(split.query >= 50000)
        assert np.all(split.train < 50000)
        np.testing.assert_array_equal(per_class(self.pooled, split.query), [5] * 10)
        np.testing.assert_array_equal(per_class(self.pooled, split.train), [20] * 10)

    def test_unknown_protocol_is_named(self):
        with pytest.raises(ValueError, match="'cifar10-3'.*dhn"):
            cifar.split_indices(self.train, self.test, "cifar10-3")

    def test_too_small_class_is_named(self):
        train = np.repeat(np.arange(3), 50)
        with pytest.raises(ValueError, match="Class 0 has 60 images.*100 query"):
            cifar.split_indices(train, np.repeat(np.arange(3), 10), "dhn")

    def test_bad_labels_are_reported(self):
        with pytest.raises(ValueError, match="train_labels.*float"):
            cifar.split_indices(np.zeros(10), np.zeros(2, int), "dhn")


class TestLoadCifar10:
    def test_load_cifar10_from_directory(self, tmp_path):
        write_folder(tmp_path / "train", ["a", "b"], 4, seed=1)
        write_folder(tmp_path / "test", ["a", "b"], 2, seed=2)
        (x_train, y_train), (x_test, y_test) = cifar.load_cifar10(str(tmp_path))
        assert x_train.shape == (8, 8, 8, 3) and x_test.shape == (4, 8, 8, 3)
        np.testing.assert_array_equal(y_test, [0, 0, 1, 1])

    def test_test_classes_must_match_train(self, tmp_path):
        write_folder(tmp_path / "train", ["a", "b"], 2)
        write_folder(tmp_path / "test", ["a", "c"], 2)
        with pytest.raises(ValueError, match=r"\['a', 'c'\].*\['a', 'b'\]"):
            cifar.load_cifar10(str(tmp_path))

    def test_download_failure_points_at_data_dir(self, monkeypatch):
        import keras

        def offline():
            raise OSError("network unreachable")

        monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
        with pytest.raises(RuntimeError, match="network unreachable.*--data_dir"):
            cifar.load_cifar10()
