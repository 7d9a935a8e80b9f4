"""What a CIFAR-10 run writes besides its metrics: plots, gallery, database index.

```python
paths = reports.write_all(results, images, split, "runs/cifar", seed=0)
paths["plots"]  # ['runs/cifar/pr_curve.png', ...]
```
"""

from __future__ import annotations

import os

import numpy as np

import keras_hash
from keras_hash import labels as labels_lib
from keras_hash import visualization

#: Cut-offs of the precision@N plot (those up to the database size).
PRECISION_NS = (1, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
#: Queries sampled for the distance histogram.
HISTOGRAM_QUERIES = 200
#: Queries shown in the retrieval gallery, each with its top 10.
GALLERY_QUERIES = 6


def write_all(results: dict, images, split, output_dir: str, seed: int) -> dict:
    """Writes the database index, the three plots and the gallery; returns paths.

    Args:
        results: :func:`keras_hash.recipes.pipeline.evaluate`'s output.
        images: the pooled images that ``split`` indexes.
        split: the run's :class:`keras_hash.recipes.cifar.Split`.
        output_dir: where the files go.
        seed: seed of the sampled queries.
    """
    codes, labels = results["codes"], results["labels"]
    bits = codes["database"].shape[1] * 8
    index = keras_hash.HammingIndex(bits)
    index.add(codes["database"])
    paths = {"index": os.path.join(output_dir, "database.index")}
    index.save(paths["index"])
    rng = np.random.default_rng(seed)
    count = min(HISTOGRAM_QUERIES, len(split.query))
    chosen = np.sort(rng.choice(len(split.query), count, replace=False))
    distances = keras_hash.hamming_distance(codes["query"][chosen], codes["database"])
    relevance = labels_lib.Relevance(labels_lib.check_labels(labels[split.database]))
    relevant = relevance(labels_lib.check_labels(labels[split.query][chosen]))
    paths["plots"] = _plots(results, distances.ravel(), relevant.ravel(), output_dir)
    shown = _one_per_class(labels[split.query], rng)
    paths["gallery"] = visualization.search_gallery(
        query_images=images[split.query][shown],
        query_codes=codes["query"][shown],
        query_labels=labels[split.query][shown],
        database_images=images[split.database],
        database_labels=labels[split.database],
        path=os.path.join(output_dir, "gallery.png"),
        index=index,
    )
    return paths


def _one_per_class(query_labels, rng) -> np.ndarray:
    """Up to :data:`GALLERY_QUERIES` random queries, of distinct labels first."""
    order = rng.permutation(len(query_labels))
    keys = [np.asarray(query_labels[i]).tobytes() for i in order]
    _, first = np.unique(keys, return_index=True)
    distinct = order[np.sort(first)]
    rest = np.setdiff1d(order, distinct, assume_unique=True)
    return np.concatenate([distinct, rest])[:GALLERY_QUERIES]


def _plots(results, distances, relevant, output_dir: str) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve, at_n = results["curve"], results["metrics"]["precision_at_n"]
    plots = {
        "pr_curve.png": lambda ax: _plot_pr(ax, curve),
        "precision_at_n.png": lambda ax: _plot_pn(ax, at_n),
        "hamming_histogram.png": lambda ax: _plot_hist(ax, distances, relevant),
    }
    paths = []
    for name, draw in plots.items():
        figure, ax = plt.subplots(figsize=(5, 4))
        draw(ax)
        ax.grid(alpha=0.3)
        figure.tight_layout()
        paths.append(os.path.join(output_dir, name))
        figure.savefig(paths[-1], dpi=100)
        plt.close(figure)
    return paths


def _plot_pr(ax, curve):
    ax.plot(curve.recall, curve.precision, marker=".")
    ax.set(xlabel="recall", ylabel="precision", title="Hamming-ball precision-recall")


def _plot_pn(ax, at_n):
    ns = sorted(int(n) for n in at_n)
    ax.plot(ns, [at_n[str(n)] for n in ns], marker="o")
    ax.set(xscale="log", xlabel="N", ylabel="precision@N", title="Precision@N")


def _plot_hist(ax, distances, relevant):
    bins = np.arange(distances.max() + 2) - 0.5
    for mask, label in ((relevant, "relevant"), (~relevant, "irrelevant")):
        ax.hist(distances[mask], bins=bins, alpha=0.6, density=True, label=label)
    ax.set(xlabel="Hamming distance", ylabel="density", title="Query-database pairs")
    ax.legend()
