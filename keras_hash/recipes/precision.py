"""Which Keras dtype policy trains fastest on this machine (a recipe helper).

Mixed precision is not always a speed-up. On a 2-core CPU with AVX512-BF16
but no AMX, a ``cifar_resnet`` training step under ``mixed_bfloat16`` runs
at 0.71x the float32 speed (``benchmarks/bench_precision.py``), while the
machine this project trained on before ran it 1.9x faster than float32.
GPUs from Volta on have float16 (and from Ampere on bfloat16) matrix units.
:func:`recommended_policy` encodes this.
"""

from __future__ import annotations

import tensorflow as tf

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The feature flags of the first CPU in ``path`` (empty if unreadable)."""
    try:
        with open(path) as file:
            for line in file:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return set(value.split())
    except OSError:
        pass
    return set()


def recommended_policy(gpu_compute_capabilities=None, flags=None) -> str:
    """The dtype policy to train with: fast where it helps, float32 elsewhere.

    - a GPU of compute capability 8.0 or more (A100, H100): ``mixed_bfloat16``;
    - a GPU of compute capability 7.x (V100, T4): ``mixed_float16`` (Keras
      adds loss scaling in ``compile``);
    - a CPU with AMX (``amx_bf16`` flag): ``mixed_bfloat16``;
    - anything else, older GPUs included: ``float32``.

    ```python
    keras.mixed_precision.set_global_policy(
        keras_hash.recipes.precision.recommended_policy()
    )
    ```

    Args:
        gpu_compute_capabilities: ``(major, minor)`` pairs of the GPUs;
            defaults to those TensorFlow sees.
        flags: CPU feature flags; defaults to :func:`cpu_flags`.
    """
    if gpu_compute_capabilities is None:
        gpu_compute_capabilities = [
            tf.config.experimental.get_device_details(gpu).get(
                "compute_capability", (0, 0)
            )
            for gpu in tf.config.list_physical_devices("GPU")
        ]
    if gpu_compute_capabilities:
        oldest = min(tuple(capability) for capability in gpu_compute_capabilities)
        if oldest >= (8, 0):
            return "mixed_bfloat16"
        if oldest >= (7, 0):
            return "mixed_float16"
        return "float32"
    flags = cpu_flags() if flags is None else set(flags)
    return "mixed_bfloat16" if "amx_bf16" in flags else "float32"
