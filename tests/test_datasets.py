"""Tests for keras_hash.datasets: split protocols, image folders, pipelines."""

import os

import numpy as np
import pytest
from PIL import Image

from keras_hash import datasets

NUM_CLASSES = 10








def write_folder(root, classes, count, size=(8, 8), seed=0, ext="png"):
    """Writes random RGB images; returns {class: [arrays in file order]}."""
    rng = np.random.default_rng(seed)
    written = {}
    for name in classes:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        written[name] = []
        for i in range(count):
            pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(root, name, f"{i:03d}.{ext}"))
            written[name].append(pixels)
    return written


class TestImageFolder:
    def test_reads_pixels_labels_and_sorted_classes(self, tmp_path):
        written = write_folder(tmp_path, ["ship", "cat"], 3)
        folder = datasets.load_image_folder(str(tmp_path))
        assert folder.class_names == ("cat", "ship")
        assert folder.images.dtype == np.uint8
        assert folder.images.shape == (6, 8, 8, 3)
        np.testing.assert_array_equal(folder.labels, [0, 0, 0, 1, 1, 1])
        expected = np.stack(written["cat"] + written["ship"])
        np.testing.assert_array_equal(folder.images, expected)


    def test_missing_directory(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="nowhere"):
            datasets.load_image_folder(str(tmp_path / "nowhere"))

    def test_no_class_folders(self, tmp_path):
        with pytest.raises(ValueError, match="No class folders"):
            datasets.load_image_folder(str(tmp_path))

    def test_empty_class_folder_is_named(self, tmp_path):
        write_folder(tmp_path, ["cat"], 2)
        os.makedirs(tmp_path / "dog")
        with pytest.raises(ValueError, match="dog.*no images"):
            datasets.load_image_folder(str(tmp_path))

    def test_mismatched_sizes_are_reported(self, tmp_path):
        write_folder(tmp_path, ["cat"], 2, size=(8, 8))
        write_folder(tmp_path, ["dog"], 1, size=(8, 6), seed=1)
        with pytest.raises(ValueError, match=r"differ in size.*\(8, 6, 3\)"):
            datasets.load_image_folder(str(tmp_path))




def numpy_augmentations(image, padding=4, crop_size=None, mode="constant"):
    """Every pad-and-crop window and its mirror image (the reference)."""
    h, w, _ = image.shape
    h, w = (h, w) if crop_size is None else (crop_size, crop_size)
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)), mode)
    crops = [
        padded[y : y + h, x : x + w]
        for y in range(padded.shape[0] - h + 1)
        for x in range(padded.shape[1] - w + 1)
    ]
    return crops + [crop[:, ::-1] for crop in crops]


def batches(dataset):
    return [(x.numpy(), y.numpy()) for x, y in dataset]


class TestPipelines:
    def setup_method(self):
        rng = np.random.default_rng(0)
        # Pixel values 1..255 so that padding (0) is recognisable.
        self.images = rng.integers(1, 256, (24, 8, 8, 3), dtype=np.uint8)
        self.labels = (np.arange(24) % 5).astype(np.int32)

    def test_shapes_dtypes_and_number_of_batches(self):
        ds = datasets.train_dataset(self.images, self.labels, 5, epochs=2)
        out = batches(ds)
        assert len(out) == 2 * (24 // 5)
        for x, y in out:
            assert x.shape == (5, 8, 8, 3) and x.dtype == np.uint8
            assert y.shape == (5,) and y.dtype == np.int32

    def test_unaugmented_epochs_are_permutations_with_right_labels(self):
        ds = datasets.train_dataset(
            self.images, self.labels, 6, epochs=2, augmentation=False
        )
        flat = np.concatenate([x for x, _ in batches(ds)])
        labels = np.concatenate([y for _, y in batches(ds)])
        lookup = {img.tobytes(): i for i, img in enumerate(self.images)}
        sources = np.array([lookup[img.tobytes()] for img in flat])
        for epoch in (sources[:24], sources[24:]):
            np.testing.assert_array_equal(np.sort(epoch), np.arange(24))
        assert not np.array_equal(sources[:24], sources[24:])
        np.testing.assert_array_equal(labels, self.labels[sources])

    def test_augmentation_changes_images_keeps_labels(self):
        plain = batches(
            datasets.train_dataset(
                self.images, self.labels, 6, epochs=1, augmentation=False
            )
        )
        augmented = batches(datasets.train_dataset(self.images, self.labels, 6, 1))
        changed = 0
        for (x0, y0), (x1, y1) in zip(plain, augmented, strict=True):
            np.testing.assert_array_equal(y0, y1)
            for original, image in zip(x0, x1, strict=True):
                candidates = numpy_augmentations(original)
                assert any(np.array_equal(image, c) for c in candidates)
                changed += not np.array_equal(image, original)
        assert changed >= 18  # 1 in 162 windows is the identity

    def test_augment_draws_every_window_and_flip(self):
        image = self.images[0]
        out = datasets.augment(np.repeat(image[None], 2000, axis=0), seed=[3, 4])
        assert out.shape == (2000, 8, 8, 3) and out.dtype == np.uint8
        candidates = [c.tobytes() for c in numpy_augmentations(image)]
        seen = {x.tobytes() for x in out.numpy()}
        # Every output is a window (or its mirror), and all 162 of them occur.
        assert seen == set(candidates)
        again = datasets.augment(np.repeat(image[None], 2000, axis=0), seed=[3, 4])
        np.testing.assert_array_equal(out, again)

    def test_augment_to_a_smaller_crop_draws_every_window(self):
        image = self.images[0]
        out = datasets.augment(
            np.repeat(image[None], 3000, axis=0), [5, 6], padding=1, crop_size=5
        )
        assert out.shape == (3000, 5, 5, 3)
        # 10x10 padded: 6 x 6 offsets, each plain or mirrored.
        candidates = {c.tobytes() for c in numpy_augmentations(image, 1, 5)}
        assert len(candidates) == 72
        assert {x.tobytes() for x in out.numpy()} == candidates

    def test_reflect_padding_draws_every_mirrored_window(self):
        image = self.images[0]
        out = datasets.augment(
            np.repeat(image[None], 2000, axis=0), [5, 7], padding_mode="reflect"
        ).numpy()
        assert (out != 0).all()  # no zero padding: pixels are 1..255
        candidates = {c.tobytes() for c in numpy_augmentations(image, mode="reflect")}
        assert {x.tobytes() for x in out} == candidates

    def test_given_flips_replace_the_random_ones(self):
        flips = np.arange(24) % 3 == 0
        out = datasets.augment(self.images, [1, 1], padding=0, flips=flips).numpy()
        expected = np.where(
            flips[:, None, None, None], self.images[:, :, ::-1], self.images
        )
        np.testing.assert_array_equal(out, expected)

    def test_a_flip_callable_decides_each_images_flip(self):
        def rule(epoch, index, seed):  # a rule whose flips are known here
            return (index + epoch + seed) % 2

        ds = datasets.train_dataset(
            self.images, self.labels, 6, 2, seed=1, padding=0, flip=rule
        )
        lookup = {img.tobytes(): (i, 0) for i, img in enumerate(self.images)}
        lookup.update(
            {img[:, ::-1].tobytes(): (i, 1) for i, img in enumerate(self.images)}
        )
        for step, (x, _) in enumerate(batches(ds)):
            for image in x:
                index, mirrored = lookup[image.tobytes()]
                assert mirrored == (index + step // 4 + 1) % 2

    def test_bad_padding_mode_and_flip_are_named(self):
        with pytest.raises(ValueError, match="padding_mode must be one of"):
            datasets.augment(self.images, [0, 1], padding_mode="wrap")
        with pytest.raises(ValueError, match="smaller than the image sides"):
            datasets.augment(self.images, [0, 1], padding=8, padding_mode="reflect")
        with pytest.raises(ValueError, match="flip must be one of"):
            datasets.train_dataset(self.images, self.labels, 6, 1, flip="never")

    def test_cutout_zeroes_each_clipped_square(self):
        # No shift and no zero pixel: the zeroed pixels are cutout's alone.
        image = np.full((8, 8, 3), 7, np.uint8)
        out = datasets.augment(
            np.repeat(image[None], 3000, axis=0), [7, 8], padding=0, cutout=4
        ).numpy()
        seen = set()
        for x in out:
            zero = x[..., 0] == 0
            assert (x == 0).all(-1).tolist() == zero.tolist()  # every channel
            rows, cols = np.flatnonzero(zero.any(1)), np.flatnonzero(zero.any(0))
            box = (rows.min(), rows.max(), cols.min(), cols.max())
            assert zero.sum() == (box[1] - box[0] + 1) * (box[3] - box[2] + 1)
            seen.add(tuple(int(v) for v in box))
        # A 4x4 square from (centre - 2) on each of the 64 pixels, clipped.
        reference = {
            (max(r - 2, 0), min(r + 1, 7), max(c - 2, 0), min(c + 1, 7))
            for r in range(8)
            for c in range(8)
        }
        assert seen == reference

    def test_cutout_keeps_the_crops_and_flips(self):
        plain = datasets.augment(self.images, [1, 2], padding=2).numpy()
        cut = datasets.augment(self.images, [1, 2], padding=2, cutout=3).numpy()
        differ = (cut != plain).any(-1)
        assert differ.any()
        assert (cut[differ] == 0).all()
        assert differ.sum(axis=(1, 2)).max() <= 9

    def test_train_dataset_cuts_out_and_resumes(self):
        def stream(start_step=0, cutout=3):
            ds = datasets.train_dataset(
                self.images,
                self.labels,
                4,
                2,
                start_step=start_step,
                padding=0,  # no padded zeros: every zero is cutout's
                low_res_steps=2,
                low_res_size=6,
                cutout=cutout,
            )
            return batches(ds)

        cut, plain = stream(), stream(cutout=0)
        for (x, y), (x_ref, y_ref) in zip(cut, plain, strict=True):
            np.testing.assert_array_equal(y, y_ref)
            differ = (x != x_ref).any(-1)
            assert (x[differ] == 0).all()
            assert 1 <= differ.sum(axis=(1, 2)).min()  # images have no 0 pixel
            assert differ.sum(axis=(1, 2)).max() <= 9
        for (x0, _), (x1, _) in zip(cut[5:], stream(5), strict=True):
            np.testing.assert_array_equal(x0, x1)

    def test_bad_cutout_is_named(self):
        with pytest.raises(ValueError, match="cutout must be >= 0"):
            datasets.augment(self.images, [0, 1], cutout=-1)
        with pytest.raises(ValueError, match="cutout needs augmentation"):
            datasets.train_dataset(
                self.images, self.labels, 4, 1, augmentation=False, cutout=4
            )

    def test_crop_larger_than_padded_image_is_named(self):
        with pytest.raises(ValueError, match="crop_size=11 does not fit"):
            datasets.augment(self.images, [0, 1], padding=1, crop_size=11)

    def test_low_res_steps_come_first_and_resume(self):
        def stream(start_step=0):
            ds = datasets.train_dataset(
                self.images,
                self.labels,
                4,
                2,
                start_step=start_step,
                low_res_steps=7,
                low_res_size=6,
            )
            return batches(ds)

        full = stream()
        assert [x.shape[1] for x, _ in full] == [6] * 7 + [8] * 5
        same_order = batches(datasets.train_dataset(self.images, self.labels, 4, 2))
        for (x, y), (x_ref, y_ref) in zip(full, same_order, strict=True):
            np.testing.assert_array_equal(y, y_ref)
            if x.shape[1] == 8:  # the full-size steps are untouched
                np.testing.assert_array_equal(x, x_ref)
        for start in (3, 7, 9):
            for (x0, y0), (x1, y1) in zip(full[start:], stream(start), strict=True):
                np.testing.assert_array_equal(x0, x1)
                np.testing.assert_array_equal(y0, y1)

    def test_resuming_at_a_step_gives_the_same_batches(self):
        full = batches(datasets.train_dataset(self.images, self.labels, 4, epochs=3))
        resumed = batches(
            datasets.train_dataset(self.images, self.labels, 4, 3, start_step=8)
        )
        assert len(resumed) == len(full) - 8
        for (x0, y0), (x1, y1) in zip(full[8:], resumed, strict=True):
            np.testing.assert_array_equal(x0, x1)
            np.testing.assert_array_equal(y0, y1)

    def test_seed_changes_the_stream(self):
        a = batches(datasets.train_dataset(self.images, self.labels, 4, 1, seed=1))
        b = batches(datasets.train_dataset(self.images, self.labels, 4, 1, seed=2))
        assert not np.array_equal(a[0][0], b[0][0])

    def test_eval_dataset_is_ordered_and_unaugmented(self):
        out = [x.numpy() for x in datasets.eval_dataset(self.images, batch_size=5)]
        assert [len(x) for x in out] == [5, 5, 5, 5, 4]
        np.testing.assert_array_equal(np.concatenate(out), self.images)

    def test_batch_larger_than_data_is_reported(self):
        with pytest.raises(ValueError, match="batch_size=30.*24"):
            datasets.train_dataset(self.images, self.labels, 30, epochs=1)

    def test_start_step_outside_stream_is_reported(self):
        with pytest.raises(ValueError, match="start_step=99"):
            datasets.train_dataset(self.images, self.labels, 4, 1, start_step=99)


def test_train_dataset_without_padding_only_flips():
    images = np.random.default_rng(5).integers(0, 256, (16, 8, 8, 3), np.uint8)
    stream = datasets.train_dataset(images, np.arange(16), 4, 1, seed=3, padding=0)
    flips = 0
    for batch, index in stream:
        for image, i in zip(batch.numpy(), index.numpy(), strict=True):
            flipped = np.array_equal(image, images[i, :, ::-1])
            assert flipped or np.array_equal(image, images[i])
            flips += flipped
    assert 0 < flips < 16


def write_image(path, pixels):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def solid(value, size):
    """An image of one colour: resizing it must give the same colour."""
    return np.full((*size, 3), value, np.uint8)


class TestUsersImages:
    """Class-per-folder trees and ``path,labels`` CSVs, in memory and streamed."""

    def test_folder_of_mixed_sizes_is_resized(self, tmp_path):
        # Solid colours resize to themselves; the 4x4 random one is untouched.
        random = np.random.default_rng(1).integers(0, 256, (4, 4, 3), np.uint8)
        write_image(str(tmp_path / "b" / "0.png"), solid((10, 20, 30), (9, 5)))
        write_image(str(tmp_path / "b" / "1.png"), random)
        write_image(str(tmp_path / "a" / "0.jpg"), solid((200, 200, 200), (16, 12)))
        folder = datasets.load_image_folder(str(tmp_path), image_size=(4, 4))
        assert folder.images.shape == (3, 4, 4, 3)
        assert folder.class_names == ("a", "b")
        np.testing.assert_array_equal(folder.labels, [0, 1, 1])
        assert np.abs(folder.images[0].astype(int) - 200).max() <= 2  # JPEG
        np.testing.assert_array_equal(folder.images[1], solid((10, 20, 30), (4, 4)))
        np.testing.assert_array_equal(folder.images[2], random)
        assert folder.paths[2] == str(tmp_path / "b" / "1.png")
        square = datasets.load_image_folder(str(tmp_path), image_size=4)
        np.testing.assert_array_equal(square.images, folder.images)

    def test_mixed_sizes_error_names_the_file_and_the_fix(self, tmp_path):
        write_image(str(tmp_path / "a" / "0.png"), solid(1, (4, 4)))
        write_image(str(tmp_path / "a" / "1.png"), solid(1, (4, 6)))
        with pytest.raises(ValueError, match=r"1\.png.*image_size=\(height, width\)"):
            datasets.load_image_folder(str(tmp_path))

    def test_bad_image_size_is_named(self, tmp_path):
        write_image(str(tmp_path / "a" / "0.png"), solid(1, (4, 4)))
        for bad in ((4,), (0, 4), (4, 4, 3)):
            with pytest.raises(ValueError, match="image_size must be"):
                datasets.load_image_folder(str(tmp_path), image_size=bad)
        for bad in ("big", True, 2.5, (4, 4.0), (True, 4)):
            with pytest.raises(TypeError, match="image_size must be"):
                datasets.load_image_folder(str(tmp_path), image_size=bad)

    def test_unreadable_image_is_named(self, tmp_path):
        import tensorflow as tf

        write_image(str(tmp_path / "a" / "0.png"), solid(1, (4, 4)))
        (tmp_path / "a" / "1.png").write_text("not an image")
        with pytest.raises(ValueError, match=r"Cannot read image .*1\.png"):
            datasets.load_image_folder(str(tmp_path))
        files = datasets.list_image_folder(str(tmp_path))
        stream = datasets.image_files_dataset(files, (4, 4), batch_size=2)
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"Cannot.*1\.png"):
            list(stream)

    def write_csv(self, tmp_path, text, images=None):
        """Writes ``tmp_path/data.csv`` and the images it names (by name)."""
        images = images or {}
        for name, pixels in images.items():
            write_image(str(tmp_path / name), pixels)
        (tmp_path / "data.csv").write_text(text)
        return str(tmp_path / "data.csv")

    def images(self, tmp_path, count=3, size=(6, 6)):
        rng = np.random.default_rng(7)
        return {
            f"img/{i}.png": rng.integers(0, 256, (*size, 3), np.uint8)
            for i in range(count)
        }

    def test_multi_label_csv_with_and_without_header(self, tmp_path):
        images = self.images(tmp_path)
        outside = write_image(str(tmp_path / "abs" / "x.png"), solid(9, (6, 6)))
        rows = (
            "img/0.png,person;dog\n"
            "\n"
            " img/1.png , sky \n"
            f"{tmp_path / 'abs' / 'x.png'},dog;;dog;\n"
            '"img/2.png",person;sky\n'
        )
        for text in ("path,labels\n" + rows, "PATH,Label\n" + rows, rows):
            files = datasets.read_image_csv(self.write_csv(tmp_path, text, images))
            assert files.class_names == ("dog", "person", "sky")
            assert files.labels.dtype == np.uint8
            np.testing.assert_array_equal(
                files.labels, [[1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 1]]
            )
            assert files.paths == (
                str(tmp_path / "img" / "0.png"),
                str(tmp_path / "img" / "1.png"),
                str(tmp_path / "abs" / "x.png"),
                str(tmp_path / "img" / "2.png"),
            )
        data = datasets.load_image_csv(str(tmp_path / "data.csv"))
        expected = [images["img/0.png"], images["img/1.png"], outside]
        np.testing.assert_array_equal(data.images, [*expected, images["img/2.png"]])
        np.testing.assert_array_equal(data.labels, files.labels)

    def test_single_label_csv_gives_ids_unless_asked(self, tmp_path):
        path = self.write_csv(
            tmp_path,
            "img/0.png,ship\nimg/1.png,cat\nimg/2.png,ship\n",
            self.images(tmp_path),
        )
        files = datasets.read_image_csv(path)
        assert files.class_names == ("cat", "ship")
        assert files.labels.dtype == np.int32
        np.testing.assert_array_equal(files.labels, [1, 0, 1])
        hot = datasets.read_image_csv(path, multi_hot=True)
        np.testing.assert_array_equal(hot.labels, [[0, 1], [1, 0], [0, 1]])
        with_comma = self.write_csv(
            tmp_path, '"img/a,b.png",cat\n', {"img/a,b.png": solid(3, (2, 2))}
        )
        assert datasets.read_image_csv(with_comma).paths[0].endswith("a,b.png")

    def test_several_labels_with_multi_hot_false_names_the_line(self, tmp_path):
        path = self.write_csv(
            tmp_path, "path,labels\nimg/0.png,a\nimg/1.png,a;b\n", self.images(tmp_path)
        )
        with pytest.raises(ValueError, match=r"line 3: 2 labels.*multi_hot=False"):
            datasets.read_image_csv(path, multi_hot=False)

    def test_given_vocabulary_orders_columns_and_rejects_unknown(self, tmp_path):
        images = self.images(tmp_path)
        path = self.write_csv(tmp_path, "img/0.png,b;c\nimg/1.png,a\n", images)
        files = datasets.read_image_csv(path, class_names=["c", "b", "a", "z"])
        assert files.class_names == ("c", "b", "a", "z")
        np.testing.assert_array_equal(files.labels, [[1, 1, 0, 0], [0, 0, 1, 0]])
        path = self.write_csv(tmp_path, "img/0.png,a\nimg/1.png,a;dgo\n", images)
        with pytest.raises(ValueError, match=r"line 2: unknown class 'dgo'"):
            datasets.read_image_csv(path, class_names=["a", "dog"])
        with pytest.raises(ValueError, match=r"class_names repeats \['a'\]"):
            datasets.read_image_csv(path, class_names=["a", "dgo", "a"])

    def test_missing_file_is_named_with_its_line(self, tmp_path):
        path = self.write_csv(
            tmp_path,
            "path,labels\nimg/0.png,a\nimg/9.png,b\nimg/8.png,b\n",
            self.images(tmp_path),
        )
        with pytest.raises(FileNotFoundError, match=r"2 image .*line 3: 'img/9.png'"):
            datasets.read_image_csv(path)
        unchecked = datasets.read_image_csv(path, check_files=False)
        assert len(unchecked) == 3

    def test_empty_csv_is_reported(self, tmp_path):
        for text in ("", "\n\n", "path,labels\n"):
            path = self.write_csv(tmp_path, text)
            with pytest.raises(ValueError, match="lists no images"):
                datasets.read_image_csv(path)
        with pytest.raises(FileNotFoundError, match="No CSV file"):
            datasets.read_image_csv(str(tmp_path / "none.csv"))

    def test_bad_separators_are_named(self, tmp_path):
        images = self.images(tmp_path)
        cases = {
            "img/0.png,a\nimg/1.png;a\n": r"line 2: expected 2 fields.*got 1",
            "img/0.png\ta\n": r"line 1: expected 2 fields.*got 1",
            "img/0.png,a,b\n": r"line 1: .*got 3.*with ';', not ','",
            "img/0.png,a\nimg/1.png, ;\n": r"line 2: no label for 'img/1.png'",
            "img/0.png,a\n,b\n": r"line 2: empty path",
        }
        for text, message in cases.items():
            path = self.write_csv(tmp_path, text, images)
            with pytest.raises(ValueError, match=message):
                datasets.read_image_csv(path)

    def test_stream_matches_files_in_order(self, tmp_path):
        images = self.images(tmp_path, count=5)
        path = self.write_csv(
            tmp_path,
            "".join(f"img/{i}.png,{'ab'[i % 2]};c\n" for i in range(5)),
            images,
        )
        files = datasets.read_image_csv(path)
        out = batches(datasets.image_files_dataset(files, (6, 6), batch_size=2))
        assert [len(x) for x, _ in out] == [2, 2, 1]
        x = np.concatenate([x for x, _ in out])
        y = np.concatenate([y for _, y in out])
        assert x.dtype == np.uint8 and y.dtype == np.uint8
        np.testing.assert_array_equal(x, [images[f"img/{i}.png"] for i in range(5)])
        np.testing.assert_array_equal(y, [[1, 0, 1], [0, 1, 1]] * 2 + [[1, 0, 1]])
        dropped = datasets.image_files_dataset(files, 6, 2, drop_remainder=True)
        assert [len(x) for x, _ in batches(dropped)] == [2, 2]

    def test_stream_resizes_as_in_memory(self, tmp_path):
        rng = np.random.default_rng(3)
        write_image(str(tmp_path / "a" / "0.png"), solid((5, 6, 7), (3, 11)))
        for name, size in (("0.png", (9, 7, 3)), ("1.png", (4, 5, 3))):
            pixels = rng.integers(0, 256, size, np.uint8)
            write_image(str(tmp_path / "b" / name), pixels)
        files = datasets.list_image_folder(str(tmp_path))
        out = batches(datasets.image_files_dataset(files, (4, 5), batch_size=8))
        ((x, y),) = out
        memory = datasets.load_image_files(files, image_size=(4, 5))
        np.testing.assert_array_equal(x, memory.images)
        np.testing.assert_array_equal(x[0], solid((5, 6, 7), (4, 5)))
        np.testing.assert_array_equal(y, [0, 1, 1])
        assert y.dtype == np.int32

    def test_shuffled_stream_keeps_labels_with_images(self, tmp_path):
        # Image i is solid grey i * 10 with label i % 3: labels follow pixels.
        for i in range(12):
            path = tmp_path / str(i % 3) / f"{i:02d}.png"
            write_image(str(path), solid(i * 10, (2, 2)))
        files = datasets.list_image_folder(str(tmp_path))
        stream = datasets.image_files_dataset(
            files, (2, 2), batch_size=4, shuffle=True, seed=5
        )
        epochs = [batches(stream) for _ in range(2)]
        orders = []
        for epoch in epochs:
            grey = np.concatenate([x[:, 0, 0, 0] for x, _ in epoch]).astype(int)
            labels = np.concatenate([y for _, y in epoch])
            np.testing.assert_array_equal(np.sort(grey), np.arange(12) * 10)
            np.testing.assert_array_equal(labels, (grey // 10) % 3)
            orders.append(grey)
        assert not np.array_equal(orders[0], orders[1])  # reshuffled each epoch
        assert not np.array_equal(np.sort(orders[0]), orders[0])

    def test_stream_arguments_are_checked(self, tmp_path):
        write_image(str(tmp_path / "a" / "0.png"), solid(1, (4, 4)))
        files = datasets.list_image_folder(str(tmp_path))
        with pytest.raises(ValueError, match="image_size=.*needed"):
            datasets.image_files_dataset(files, None)
        with pytest.raises(ValueError, match="batch_size must be >= 1"):
            datasets.image_files_dataset(files, 4, batch_size=0)
        with pytest.raises(ValueError, match="labels must be class ids"):
            datasets.ImageFiles(("a.png", "b.png"), [0], ("a",))

    def test_hashnet_trains_on_a_multi_label_csv_stream(self, tmp_path):
        import keras

        import keras_hash

        rng = np.random.default_rng(0)
        classes = ["cat", "dog", "sky", "sea"]
        lines, images = ["path,labels"], {}
        for i in range(24):
            names = sorted({classes[i % 4], classes[(i * 7) % 4]})
            size = (16, 16) if i % 3 else (20, 12)  # some need resizing
            images[f"img/{i}.png"] = rng.integers(0, 256, (*size, 3), np.uint8)
            lines.append(f"img/{i}.png,{';'.join(names)}")
        path = self.write_csv(tmp_path, "\n".join(lines) + "\n", images)
        files = datasets.read_image_csv(path)
        assert files.labels.shape == (24, 4) and files.labels.sum(1).max() == 2
        train = datasets.image_files_dataset(
            files, (16, 16), batch_size=8, shuffle=True, seed=0, drop_remainder=True
        )
        backbone = keras.Sequential(
            [
                keras.Input((16, 16, 3)),
                keras.layers.Rescaling(1 / 255),
                keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
                keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
                keras.layers.GlobalAveragePooling2D(),
            ]
        )
        model = keras_hash.HashNet(backbone, bits=8)
        model.compile(optimizer="adam")
        history = model.fit(train, epochs=1, shuffle=False, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
        assert model.optimizer.iterations.numpy() == 3
        ordered = datasets.image_files_dataset(files, (16, 16), batch_size=5)
        codes = model.encode(ordered)
        assert codes.shape == (24, 1) and codes.dtype == np.uint8
        memory = datasets.load_image_files(files, image_size=(16, 16))
        np.testing.assert_array_equal(model.encode(memory.images), codes)
