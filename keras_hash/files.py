"""Atomic file writes: a reader sees the old file or the new one, never half."""

from __future__ import annotations

import os
import tempfile


def write_atomic(path, write) -> None:
    """Calls ``write(staging_path)``, then renames the staging file onto ``path``.

    The staging file sits in ``path``'s directory (created if needed) and
    ends with ``path``'s file name, so writers that check the extension
    (``model.save_weights`` wants ``.weights.h5``) accept it. If ``write``
    raises, the staging file is removed and ``path`` is left as it was.

    ```python
    write_atomic("run/model.weights.h5", model.save_weights)
    ```
    """
    path = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{name}", dir=directory)
    os.close(fd)
    try:
        write(staging)
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.remove(staging)


def write_text_atomic(path, text: str) -> None:
    """Writes ``text`` to ``path`` atomically (see :func:`write_atomic`)."""

    def write(staging):
        with open(staging, "w") as file:
            file.write(text)

    write_atomic(path, write)
