"""Median train-step times of several models, their steps interleaved.

Shared by the benchmarks that compare models: each step runs every model
once, in an order that alternates step by step, so machine noise hits all
of them alike.

    medians = median_step_seconds({"a": model_a, "b": model_b}, x, y, steps=20)
"""

import time

import numpy as np


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
