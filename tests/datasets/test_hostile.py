"""Property-based hostile inputs for users' data (issue 30, classes 1 and 2).

Random image files of every mode and format, some orientated by EXIF, some
truncated or with flipped bytes, go through both decoding paths (the
in-memory loader and the tf.data stream): the same pixels, or the same
refusal naming the file; lossless ones must equal a numpy model of the rule.
Random folder trees and CSVs go through the listings and are compared with
an independent model of what must be listed, skipped or refused.
Derandomized and bounded: a few dozen examples, seconds each.
"""

import io
import os
import warnings

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from keras_hash import datasets

pytestmark = pytest.mark.numpy_only


def bounded(examples):
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )


MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "CMYK"]
FORMATS = ["PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"]
# The EXIF orientation tag as numpy: what a viewer shows (Pillow's table).
ORIENT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1),
    8: lambda a: np.rot90(a, 1),
}


def make_image(mode, height, width, seed):
    """A Pillow image of ``mode`` and the RGB pixels the rule must give."""
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        values = rng.integers(0, 65536, (height, width), dtype=np.uint16)
        grey = (values >> 8).astype(np.uint8)
        return Image.fromarray(values), np.repeat(grey[..., None], 3, -1)
    if mode == "1":
        bits = rng.integers(0, 2, (height, width)).astype(bool)
        grey = np.where(bits, 255, 0).astype(np.uint8)
        return Image.fromarray(bits), np.repeat(grey[..., None], 3, -1)
    if mode == "P":
        palette = rng.integers(0, 256, (6, 3), dtype=np.uint8)
        index = rng.integers(0, 6, (height, width), dtype=np.uint8)
        image = Image.fromarray(index, "P")
        image.putpalette(palette.ravel().tolist())
        return image, palette[index]
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4}[mode]
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
    if mode in ("L", "LA"):
        return image, np.repeat(pixels[..., :1], 3, -1)
    if mode == "CMYK":
        return image, None  # no independent model: compared across paths
    return image, pixels[..., :3]


def encode(image, fmt, orientation):
    buffer = io.BytesIO()
    options = {"lossless": True, "exact": True} if fmt == "WEBP" else {}
    if orientation != 1:
        exif = image.getexif()
        exif[0x0112] = orientation
        options["exif"] = exif
    try:
        image.save(buffer, format=fmt, **options)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # Pillow cannot write this mode in this format
    return buffer.getvalue()


def both_paths(path):
    files = datasets.ImageFiles((path,), np.zeros(1, np.int32), ("a",))
    try:
        loaded = datasets.load_image_files(files).images[0]
    except ValueError as error:
        loaded = error
    size = (4, 4) if isinstance(loaded, Exception) else loaded.shape[:2]
    try:
        streamed = next(iter(datasets.image_files_dataset(files, size)))[0][0].numpy()
    except tf.errors.InvalidArgumentError as error:
        streamed = error
    return loaded, streamed


@bounded(40)
@given(
    mode=st.sampled_from(MODES),
    fmt=st.sampled_from(FORMATS),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    seed=st.integers(0, 2**16),
    orientation=st.sampled_from([1, 1, 1, 2, 3, 4, 5, 6, 7, 8]),
    damage=st.sampled_from(["none", "none", "truncate", "flip"]),
    where=st.floats(0, 1),
)
def test_random_image_files_decode_the_same_on_both_paths(
    tmp_path_factory, mode, fmt, height, width, seed, orientation, damage, where
):
    image, expected = make_image(mode, height, width, seed)
    data = encode(image, fmt, orientation)
    if data is None:
        return
    if damage == "truncate":
        data = data[: int(len(data) * where)]
    elif damage == "flip" and data:
        i = min(int(len(data) * where), len(data) - 1)
        data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
    path = str(tmp_path_factory.mktemp("img") / f"x.{fmt.lower()}")
    with open(path, "wb") as file:
        file.write(data)
    loaded, streamed = both_paths(path)
    if isinstance(loaded, Exception) or isinstance(streamed, Exception):
        assert isinstance(loaded, ValueError) and "x." in str(loaded), (
            loaded,
            streamed,
        )
        assert isinstance(streamed, tf.errors.InvalidArgumentError), (loaded, streamed)
        assert path in streamed.message
        return
    np.testing.assert_array_equal(loaded, streamed)
    assert fmt != "TIFF"  # not one of the formats: refused
    lossless = fmt in ("PNG", "BMP", "WEBP") or (
        fmt == "GIF" and mode in ("1", "L", "P")
    )
    if damage == "none" and lossless and expected is not None:
        if fmt == "GIF" and mode == "L":
            return  # GIF keeps at most 256 greys through a palette: lossless too
        # GIF and BMP hold no EXIF: the tag is kept only where the format can.
        with Image.open(io.BytesIO(data)) as written:
            kept = written.getexif().get(0x0112, 1)
        np.testing.assert_array_equal(loaded, ORIENT[kept](expected))


# --- listings ---------------------------------------------------------------

IMAGE_NAMES = ["a.jpg", "B.PNG", "c.jpeg", "d.gif", "e.bmp", "f.webp", b"caf\xe9.png"]
SYSTEM_NAMES = [".DS_Store", "._a.jpg", "Thumbs.db", "desktop.ini", ".hidden.png"]
# Mostly valid trees (images, system files), sometimes a bad entry.
ENTRY_NAMES = st.sampled_from(IMAGE_NAMES * 2 + SYSTEM_NAMES + ["notes.txt", "noext"])
LOOSE_NAMES = st.sampled_from(SYSTEM_NAMES * 3 + ["stray.jpg", "README"])


@st.composite
def trees(draw):
    """``{class name: [(entry name, kind)]}`` and loose root entries."""
    classes = draw(
        st.dictionaries(
            st.sampled_from(["cat", "dog", "x.jpg", "emu", ".git", "__MACOSX"]),
            st.lists(
                st.tuples(ENTRY_NAMES, st.sampled_from(["file"] * 8 + ["dir"])),
                max_size=4,
                unique_by=lambda e: e[0],
            ),
            max_size=3,
        )
    )
    loose = draw(st.lists(LOOSE_NAMES, max_size=2, unique=True))
    return classes, loose


SYSTEM = ("thumbs.db", "desktop.ini", "ehthumbs.db", "__macosx")


def fs(name):
    return os.fsdecode(name) if isinstance(name, bytes) else name


def expected_listing(root, classes, loose):
    """The rule, written independently: paths, skipped count, or None (refused)."""

    def system(n):
        return n.startswith(".") or n.lower() in SYSTEM

    images = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
    skipped = sum(system(fs(n)) for n in loose) + sum(system(c) for c in classes)
    if any(not system(fs(n)) for n in loose):
        return None
    kept = sorted(c for c in classes if not system(c))
    if not kept:
        return None
    paths = []
    for name in kept:
        entries = classes[name]
        skipped += sum(system(fs(n)) for n, _ in entries)
        real = [(fs(n), kind) for n, kind in entries if not system(fs(n))]
        if any(kind == "dir" or not n.lower().endswith(images) for n, kind in real):
            return None
        if not real:
            return None
        paths += sorted(os.path.join(root, name, n) for n, _ in real)
    return paths, kept, skipped


@bounded(150)
@given(tree=trees())
def test_random_folder_trees_are_listed_by_the_rule(tmp_path_factory, tree):
    classes, loose = tree
    root = str(tmp_path_factory.mktemp("tree"))
    for name in loose:
        open(os.path.join(os.fsencode(root), os.fsencode(name)), "wb").close()
    for name, entries in classes.items():
        folder = os.path.join(os.fsencode(root), os.fsencode(name))
        os.makedirs(folder)
        for entry, kind in entries:
            path = os.path.join(folder, os.fsencode(entry))
            os.makedirs(path) if kind == "dir" else open(path, "wb").close()
    expected = expected_listing(root, classes, loose)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            files = datasets.list_image_folder(root)
        except ValueError as error:
            assert expected is None, (error, expected)
            # The refusal names the folder or an entry in it.
            assert root in str(error)
            return
    assert expected is not None, files
    paths, kept, skipped = expected
    assert list(files.paths) == paths
    assert files.class_names == tuple(kept)
    counts = [w for w in caught if "Skipped" in str(w.message)]
    if skipped:
        assert f"Skipped {skipped} hidden" in str(counts[0].message)
    else:
        assert not counts


@bounded(60)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "img/a.png",
                    "./img/a.png",
                    "gs://b/x.jpg",
                    "s3://b/y.png",
                    "img/ü.png",
                    "ABS",
                ]
            ),
            st.lists(st.sampled_from(["cat", "dog", "ö"]), min_size=1, max_size=2),
        ),
        min_size=1,
        max_size=5,
    ),
    header=st.booleans(),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "latin-1"]),
)
def test_random_csvs_are_read_by_the_rule(tmp_path_factory, rows, header, encoding):
    folder = tmp_path_factory.mktemp("csv")
    os.makedirs(folder / "img")
    for name in ("a.png", "ü.png"):
        (folder / "img" / name).write_bytes(b"")
    absolute = str(folder / "img" / "a.png")
    lines = ["path,labels"] * header + [
        f"{absolute if p == 'ABS' else p},{';'.join(labels)}" for p, labels in rows
    ]
    text = "\n".join(lines) + "\n"
    (folder / "list.csv").write_bytes(text.encode(encoding))
    ascii_only = text.isascii()
    try:
        files = datasets.read_image_csv(folder / "list.csv")
    except ValueError as error:
        # Only a CSV that is not UTF-8 may be refused here, naming the line.
        assert encoding == "latin-1" and not ascii_only, error
        assert "not UTF-8" in str(error) and "list.csv" in str(error)
        return
    assert encoding != "latin-1" or ascii_only
    expected = []
    for p, _ in rows:
        if p.startswith(("gs://", "s3://")):
            expected.append(p)  # kept exactly as written
        elif p == "ABS":
            expected.append(absolute)
        else:
            expected.append(str(folder / "img" / p.rsplit("/", 1)[1]))
    assert list(files.paths) == expected
    names = sorted({name for _, labels in rows for name in labels})
    assert files.class_names == tuple(names)
