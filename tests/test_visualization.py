"""Tests for keras_hash.visualization: the retrieval gallery PNG."""

import numpy as np
import pytest
from PIL import Image

from keras_hash import HammingIndex, pack_codes, visualization

pytest.importorskip("matplotlib")

pytestmark = pytest.mark.numpy_only

CELL, DPI, TOP = 0.5, 80, 10
CELL_PX = CELL * DPI  # 40 pixels per cell


def grey_images(count, size=(12, 12), seed=0):
    """Grey images (R = G = B): any pure green or red pixel is a frame's."""
    rng = np.random.default_rng(seed)
    grey = rng.integers(0, 256, (count, *size, 1), np.uint8)
    return np.repeat(grey, 3, axis=-1)


def read_png(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def frame_pixels(png):
    """Boolean masks of pure-ish green and red pixels."""
    r, g, b = png[..., 0], png[..., 1], png[..., 2]
    green = (g >= 150) & (r <= 60) & (b <= 60)
    red = (r >= 150) & (g <= 60) & (b <= 60)
    return green, red


def columns(mask, row, rows):
    """Result columns (0..TOP-1) holding pixels of ``mask`` in query row ``row``."""
    height = mask.shape[0] / rows
    ys, xs = np.nonzero(mask[int(row * height) : int((row + 1) * height)])
    # The query takes one cell, then a gap of a quarter cell.
    found = np.floor(xs / CELL_PX - 1.25).astype(int)
    return set(found.tolist())


def gallery(tmp_path, relevant, name="g.png", **kwargs):
    rows = len(relevant)
    neighbors = np.arange(rows * TOP).reshape(rows, TOP)
    return visualization.retrieval_gallery(
        grey_images(rows),
        grey_images(rows * TOP, size=(12, 16), seed=1),
        neighbors,
        np.asarray(relevant, bool),
        str(tmp_path / name),
        cell_size=CELL,
        dpi=DPI,
        **kwargs,
    )


def test_frames_are_green_where_relevant_and_red_elsewhere(tmp_path):
    relevant = [
        [1, 0, 1, 1, 0, 0, 0, 1, 0, 1],
        [0] * TOP,
        [1] * 5 + [0] * 5,
    ]
    png = read_png(gallery(tmp_path, relevant))
    assert png.shape == (3 * CELL_PX, (TOP + 1.25) * CELL_PX, 3)
    green, red = frame_pixels(png)
    for row, flags in enumerate(relevant):
        assert columns(green, row, 3) == {j for j in range(TOP) if flags[j]}
        assert columns(red, row, 3) == {j for j in range(TOP) if not flags[j]}
    # The query column (the first cell) has a neutral frame.
    assert not green[:, : int(CELL_PX)].any() and not red[:, : int(CELL_PX)].any()
    # Each result frame is a ring of solid colour, not a few stray pixels.
    assert green.sum() > 5 * 4 * 10 and red.sum() > 6 * 4 * 10


def test_all_relevant_results_have_no_red_frame(tmp_path):
    png = read_png(gallery(tmp_path, [[1] * TOP, [1] * TOP]))
    green, red = frame_pixels(png)
    assert not red.any()
    assert columns(green, 0, 2) == columns(green, 1, 2) == set(range(TOP))


def test_titles_make_rows_taller(tmp_path):
    distances = np.tile(np.arange(TOP), (2, 1))
    path = gallery(
        tmp_path, [[0] * TOP, [1] * TOP], distances=distances, query_titles=["a", "b"]
    )
    png = read_png(path)
    assert png.shape == (2 * 1.25 * CELL_PX, (TOP + 1.25) * CELL_PX, 3)
    green, red = frame_pixels(png)
    assert columns(red, 0, 2) == columns(green, 1, 2) == set(range(TOP))
    assert not green[: png.shape[0] // 2].any() and not red[png.shape[0] // 2 :].any()


def test_fewer_shown_results_and_blank_ones(tmp_path):
    neighbors = np.array([[3, -1, 0, 1]])
    path = visualization.retrieval_gallery(
        grey_images(1),
        grey_images(4, seed=2),
        neighbors,
        np.array([[1, 0, 0, 1]], bool),
        str(tmp_path / "few.png"),
        top=3,
        cell_size=CELL,
        dpi=DPI,
    )
    png = read_png(path)
    assert png.shape == (CELL_PX, (3 + 1.25) * CELL_PX, 3)
    green, red = frame_pixels(png)
    assert columns(green, 0, 1) == {0} and columns(red, 0, 1) == {2}


def test_bad_arguments_are_named(tmp_path):
    images = grey_images(3)
    neighbors = np.zeros((2, TOP), int)
    relevant = np.zeros((2, TOP), bool)
    path = str(tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"neighbors must be \[3, k\]"):
        visualization.retrieval_gallery(images, images, neighbors, relevant, path)
    with pytest.raises(ValueError, match="fewer than top=10"):
        visualization.retrieval_gallery(
            images[:2], images, neighbors[:, :4], relevant[:, :4], path
        )
    with pytest.raises(ValueError, match="positions in the 3 database images"):
        visualization.retrieval_gallery(
            images[:2], images, neighbors + 3, relevant, path
        )
    with pytest.raises(ValueError, match="relevant has shape"):
        visualization.retrieval_gallery(
            images[:2], images, neighbors, relevant[:1], path
        )


def search_problem(multi_hot):
    """One query; database item at position p is at Hamming distance d[p]."""
    bits = 16
    distance = np.random.default_rng(4).permutation(12)  # shuffled positions
    database = np.zeros((12, bits), np.uint8)
    for position, d in enumerate(distance):
        database[position, :d] = 1
    # The 5 nearest share the query's label, the others do not.
    labels = (distance < 5).astype(np.int32)
    query_labels = np.array([1])
    if multi_hot:  # class 0 is in every row but the query's
        labels = np.stack([np.ones(12, np.int32), labels, labels], 1)
        query_labels = np.array([[0, 1, 0]])
    return (
        pack_codes(np.zeros((1, bits), np.uint8), "bits"),
        query_labels,
        pack_codes(database, "bits"),
        labels,
    )


@pytest.mark.parametrize("multi_hot", [False, True])
def test_search_gallery_ranks_by_distance_and_shared_labels(tmp_path, multi_hot):
    query_codes, query_labels, codes, labels = search_problem(multi_hot)
    path = visualization.search_gallery(
        grey_images(1),
        query_codes,
        query_labels,
        grey_images(12, seed=3),
        labels,
        str(tmp_path / "s.png"),
        database_codes=codes,
        cell_size=CELL,
        dpi=DPI,
    )
    png = read_png(path)
    assert png.shape == (1.25 * CELL_PX, (TOP + 1.25) * CELL_PX, 3)
    green, red = frame_pixels(png)
    assert columns(green, 0, 1) == set(range(5))
    assert columns(red, 0, 1) == set(range(5, TOP))


def test_search_gallery_takes_an_index(tmp_path):
    query_codes, query_labels, codes, labels = search_problem(False)
    index = HammingIndex(16, backend="numpy")
    index.add(codes)
    path = visualization.search_gallery(
        grey_images(1),
        query_codes,
        query_labels,
        grey_images(12, seed=3),
        labels,
        str(tmp_path / "i.png"),
        index=index,
        top=7,
        cell_size=CELL,
        dpi=DPI,
    )
    green, red = frame_pixels(read_png(path))
    assert columns(green, 0, 1) == set(range(5)) and columns(red, 0, 1) == {5, 6}
    with pytest.raises(ValueError, match="exactly one of database_codes and index"):
        visualization.search_gallery(
            grey_images(1),
            query_codes,
            query_labels,
            grey_images(12),
            labels,
            str(tmp_path / "j.png"),
            database_codes=codes,
            index=index,
        )
