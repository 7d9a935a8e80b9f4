"""Timing helpers shared by the benchmarks.

- ``best_time(fn, repeat)``: the best wall time of ``repeat`` calls, and the
  last call's result (for searches whose output is then checked).
- ``median_step_seconds(models, x, y, steps)``: median train-step times of
  several models, their steps interleaved (each step runs every model once,
  in an order that alternates step by step, so machine noise hits all of
  them alike).

    seconds, (distances, ids) = best_time(lambda: index.search(q, 10), repeat=3)
    medians = median_step_seconds({"a": model_a, "b": model_b}, x, y, steps=20)
"""

import time

import numpy as np


def best_time(fn, repeat: int):
    """``(best seconds of repeat calls of fn(), the last call's result)``."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def median_step_seconds(models: dict, x, y, steps: int, warmup: int = 3) -> dict:
    """``{name: median seconds of one train_on_batch(x, y)}`` after ``warmup`` steps."""
    for model in models.values():  # trace and warm up
        for _ in range(warmup):
            model.train_on_batch(x, y)
    times = {name: [] for name in models}
    for step in range(steps):
        order = list(models) if step % 2 == 0 else list(models)[::-1]
        for name in order:
            start = time.perf_counter()
            models[name].train_on_batch(x, y)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(samples)) for name, samples in times.items()}
