"""A full disk (issue 30): atomic writes and HammingIndex.save on a 1 MiB tmpfs
leave the old file intact, no staging file behind, and an error naming the
file. Needs permission to mount a tmpfs (root); skipped with the reason
otherwise."""

import errno
import os
import subprocess

import numpy as np
import pytest

import keras_hash
from keras_hash import files


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a 1 MiB tmpfs here: {mount.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def fill(disk, leave):
    """Fills the tmpfs but for about ``leave`` bytes."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(b"\0" * max(0, free - leave))


@pytest.mark.numpy_only
def test_atomic_write_on_a_full_disk_keeps_the_old_file(small_disk):
    path = small_disk / "notes.txt"
    files.write_text_atomic(path, "old")
    fill(small_disk, 8192)
    with pytest.raises(OSError, match="notes.txt") as raised:
        files.write_text_atomic(path, "new" * 100_000)
    assert raised.value.errno == errno.ENOSPC
    assert path.read_text() == "old"
    assert sorted(os.listdir(small_disk)) == ["filler", "notes.txt"]


@pytest.mark.numpy_only
def test_hamming_index_save_on_a_full_disk_keeps_the_old_file(small_disk):
    rng = np.random.default_rng(0)
    path = small_disk / "codes.index"
    old = rng.integers(0, 256, (10, 8), dtype=np.uint8)
    index = keras_hash.HammingIndex(64, backend="numpy")
    index.add(old)
    index.save(path)
    fill(small_disk, 8192)
    index.add(rng.integers(0, 256, (50_000, 8), dtype=np.uint8))  # ~800 KB
    with pytest.raises(OSError, match="codes.index") as raised:
        index.save(path)
    assert raised.value.errno == errno.ENOSPC
    loaded = keras_hash.HammingIndex.load(path)
    np.testing.assert_array_equal(loaded.codes, old)
    assert sorted(os.listdir(small_disk)) == ["codes.index", "filler"]
