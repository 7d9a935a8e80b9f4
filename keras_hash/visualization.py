"""Pictures of retrieval results: the gallery of the hashing papers.

:func:`retrieval_gallery` draws a few queries (one per row) with their top
results, relevant results framed green and the others red, and writes a PNG;
:func:`search_gallery` first searches the codes itself. Relevance follows
:mod:`keras_hash.metrics`: a result is relevant when it shares at least one
label with the query (class ids ``[N]`` or multi-hot rows ``[N, C]``).

Needs matplotlib (``pip install keras-hash[examples]``), imported only when
a gallery is drawn. Import as ``from keras_hash import visualization``.
"""

from __future__ import annotations

import os

import numpy as np

from keras_hash import labels

# Frame colours: relevant, not relevant, the query.
RELEVANT_COLOR = "#00b000"
IRRELEVANT_COLOR = "#e00000"
QUERY_COLOR = "#404040"
# Share of a cell's side taken by the gap between the query and its results,
# and by the title above each image.
_GAP = 0.25
_TITLE = 0.25
# Blank space around each image, in cells.
_MARGIN = 0.06


def retrieval_gallery(
    query_images,
    database_images,
    neighbors,
    relevant,
    path,
    distances=None,
    top: int = 10,
    cell_size: float = 1.2,
    dpi: int = 100,
    frame_width: float = 4.0,
    query_titles=None,
) -> str:
    """Writes a PNG of queries (rows) and their top results, framed by relevance.

    Row ``i`` shows ``query_images[i]`` in a grey frame, then the first
    ``top`` results ``database_images[neighbors[i, j]]``, framed green where
    ``relevant[i, j]`` and red elsewhere, titled ``d=<distance>`` when
    ``distances`` is given. The picture is ``(top + 1 + 0.25) * cell_size``
    inches wide and ``len(query_images) * cell_size`` high (``* 1.25`` with
    titles), at ``dpi`` pixels per inch.

    ```python
    from keras_hash import visualization

    distances, neighbors = index.search(query_codes[:5], k=10)
    relevant = query_labels[:5, None] == database_labels[neighbors]
    visualization.retrieval_gallery(
        query_images[:5], database_images, neighbors, relevant,
        "gallery.png", distances=distances)
    ```

    Args:
        query_images: ``[Q, H, W, 3]`` (or ``[Q, H, W]`` grey) images,
            ``uint8`` 0-255 or floats in ``[0, 1]``; one row each.
        database_images: ``[N, H', W', 3]`` images, indexed by ``neighbors``.
        neighbors: int ``[Q, k]`` positions in ``database_images``, best
            first (``k >= top``; ``-1`` marks no result, left blank).
        relevant: bool ``[Q, k]``.
        path: the PNG file to write.
        distances: optional int ``[Q, k]`` Hamming distances, for titles.
        top: results shown per query.
        cell_size: side of one image's cell in inches.
        dpi: pixels per inch.
        frame_width: width of the frames in points.
        query_titles: optional ``Q`` strings above the queries (e.g. their
            class names); defaults to ``"query"`` when there are titles.

    Returns:
        ``path``.
    """
    queries = np.asarray(query_images)
    database = np.asarray(database_images)
    neighbors = np.asarray(neighbors)
    relevant = np.asarray(relevant)
    num_queries, top = len(queries), int(top)
    if num_queries < 1:
        raise ValueError("retrieval_gallery needs at least one query image")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    _check_images(queries, "query_images")
    _check_images(database, "database_images")
    if neighbors.ndim != 2 or len(neighbors) != num_queries:
        raise ValueError(
            f"neighbors must be [{num_queries}, k] (one row per query), got shape "
            f"{neighbors.shape}"
        )
    if neighbors.shape[1] < top:
        raise ValueError(
            f"neighbors has {neighbors.shape[1]} results per query, fewer than "
            f"top={top}"
        )
    if not np.issubdtype(neighbors.dtype, np.integer):
        raise ValueError(f"neighbors must be integer positions, got {neighbors.dtype}")
    if relevant.shape != neighbors.shape:
        raise ValueError(
            f"relevant has shape {relevant.shape}, neighbors {neighbors.shape}"
        )
    if distances is not None:
        distances = np.asarray(distances)
        if distances.shape != neighbors.shape:
            raise ValueError(
                f"distances has shape {distances.shape}, neighbors {neighbors.shape}"
            )
    shown = neighbors[:, :top]
    if (shown >= len(database)).any() or (shown < -1).any():
        raise ValueError(
            f"neighbors must be positions in the {len(database)} database images "
            f"(or -1), got values from {shown.min()} to {shown.max()}"
        )
    if query_titles is not None and len(query_titles) != num_queries:
        raise ValueError(
            f"query_titles has {len(query_titles)} titles for {num_queries} queries"
        )
    titled = distances is not None or query_titles is not None

    from matplotlib.figure import Figure

    row_height = 1 + _TITLE if titled else 1
    width, height = top + 1 + _GAP, num_queries * row_height  # in cells
    figure = Figure(figsize=(width * cell_size, height * cell_size), dpi=dpi)

    def cell(row, column):
        """Axes for an image: ``column`` 0 is the query, 1.. the results."""
        left = column + (_GAP if column else 0) + _MARGIN
        bottom = height - (row + 1) * row_height + _MARGIN
        side = 1 - 2 * _MARGIN
        return figure.add_axes(
            (left / width, bottom / height, side / width, side / height)
        )

    for row in range(num_queries):
        title = None
        if titled:
            title = "query" if query_titles is None else str(query_titles[row])
        _draw(cell(row, 0), queries[row], QUERY_COLOR, title, frame_width)
        for rank in range(top):
            axes = cell(row, rank + 1)
            position = int(shown[row, rank])
            if position < 0:
                axes.set_axis_off()
                continue
            color = RELEVANT_COLOR if relevant[row, rank] else IRRELEVANT_COLOR
            title = None if distances is None else f"d={distances[row, rank]}"
            _draw(axes, database[position], color, title, frame_width)
    path = os.fspath(path)
    figure.savefig(path, format="png", dpi=dpi)
    return path


def search_gallery(
    query_images,
    query_codes,
    query_labels,
    database_images,
    database_labels,
    path,
    database_codes=None,
    index=None,
    top: int = 10,
    **gallery_kwargs,
) -> str:
    """Searches the database for each query and draws :func:`retrieval_gallery`.

    Give the database as packed codes (``database_codes``, searched with a
    :class:`keras_hash.HammingIndex`) or as an ``index`` whose ids are the
    positions in ``database_images``. Results come by Hamming distance, ties
    by position; a result is relevant when it shares a label with its query.

    ```python
    from keras_hash import visualization

    visualization.search_gallery(
        test_images[:5], model.encode(test_images[:5]), test_labels[:5],
        db_images, db_labels, "gallery.png", database_codes=db_codes)
    ```

    Args:
        query_images: ``[Q, H, W, 3]`` images, one row each.
        query_codes: packed codes ``uint8 [Q, bits // 8]``.
        query_labels: class ids ``[Q]`` or multi-hot ``[Q, C]``.
        database_images: ``[N, H, W, 3]`` images.
        database_labels: labels of the same kind, ``[N]`` or ``[N, C]``.
        path: the PNG file to write.
        database_codes: packed codes ``uint8 [N, bits // 8]``, or ``None``
            when ``index`` is given.
        index: a :class:`keras_hash.HammingIndex` of the database.
        top: results shown per query.
        **gallery_kwargs: more :func:`retrieval_gallery` arguments
            (``cell_size``, ``dpi``, ``query_titles``, ...).

    Returns:
        ``path``.
    """
    from keras_hash.index import HammingIndex

    if (database_codes is None) == (index is None):
        raise ValueError("give exactly one of database_codes and index")
    query_codes = np.asarray(query_codes)
    if index is None:
        database_codes = np.asarray(database_codes)
        if database_codes.ndim != 2:
            raise ValueError(
                "database_codes must be packed codes [N, bits // 8], got shape "
                f"{database_codes.shape}"
            )
        index = HammingIndex(bits=database_codes.shape[1] * 8, backend="numpy")
        index.add(database_codes)
    query_labels = labels.check_labels(query_labels, name="query_labels")
    database_labels = labels.check_labels(database_labels, name="database_labels")
    labels.check_label_pair(
        query_labels, database_labels, ("query_labels", "database_labels")
    )
    if len(database_labels) != len(database_images):
        raise ValueError(
            f"{len(database_labels)} database_labels for {len(database_images)} "
            "database_images"
        )
    distances, neighbors = index.search(query_codes, k=min(int(top), index.ntotal))
    if len(neighbors) and (neighbors.max(initial=-1) >= len(database_images)):
        raise ValueError(
            f"the index holds ids up to {neighbors.max()}, beyond the "
            f"{len(database_images)} database_images (ids must be positions)"
        )
    found = np.where(neighbors < 0, 0, neighbors)
    relevant = labels.Relevance(database_labels).pairs(query_labels, found)
    relevant &= neighbors >= 0
    return retrieval_gallery(
        query_images,
        database_images,
        neighbors,
        relevant,
        path,
        distances=distances,
        top=neighbors.shape[1],
        **gallery_kwargs,
    )


def _check_images(images, name):
    if images.ndim not in (3, 4) or (
        images.ndim == 4 and images.shape[-1] not in (1, 3, 4)
    ):
        raise ValueError(
            f"{name} must be [N, height, width, 3] (or grey [N, height, width]), "
            f"got shape {images.shape}"
        )


def _draw(axes, image, color, title, frame_width):
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        top = 255 if np.issubdtype(image.dtype, np.integer) else 1
        axes.imshow(image, cmap="gray", vmin=0, vmax=top, interpolation="nearest")
    else:
        axes.imshow(image, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(frame_width)
    if title is not None:
        axes.set_title(title, fontsize=8, pad=frame_width + 1)
