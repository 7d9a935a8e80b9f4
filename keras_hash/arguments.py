"""Checks of sizes, counts, frequencies and flags passed to public functions.

Python quietly turns ``True`` into 1, ``2.9`` into 2 and ``"no"`` into a true
flag; these checks refuse them instead, with a ``TypeError`` that names the
argument, and a ``ValueError`` for an integer out of range.

```python
from keras_hash.arguments import check_int, check_bool
batch_size = check_int(batch_size, "batch_size", minimum=1)
shuffle = check_bool(shuffle, "shuffle")
```
"""

from __future__ import annotations

import numpy as np


def check_int(value, name: str, *, minimum: int | None = None, maximum=None) -> int:
    """``value`` as a Python int, if it is an integer in ``[minimum, maximum]``.

    Python and NumPy integers are accepted; booleans, floats (even ``2.0``),
    strings and anything else raise ``TypeError`` naming ``name``.

    ```python
    check_int(64, "batch_size", minimum=1)  # 64
    check_int(2.9, "batch_size")  # TypeError: batch_size must be an int ...
    ```
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"{name} must be an int, got {value!r} ({type(value).__name__})"
        )
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_bool(value, name: str, *, optional: bool = False) -> bool | None:
    """``value`` if it is ``True`` or ``False`` (or ``None`` when ``optional``).

    Strings such as ``"no"``, numbers and anything else raise ``TypeError``
    naming ``name``.
    """
    if value is None and optional:
        return None
    if not isinstance(value, (bool, np.bool_)):
        allowed = "True, False or None" if optional else "True or False"
        raise TypeError(
            f"{name} must be {allowed}, got {value!r} ({type(value).__name__})"
        )
    return bool(value)
