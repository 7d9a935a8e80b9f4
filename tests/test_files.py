"""Tests of keras_hash.files.write_atomic."""

import os
import subprocess
import sys

import pytest

from keras_hash import files
from keras_hash.files import write_atomic, write_directory_atomic

pytestmark = pytest.mark.numpy_only  # no Keras session to reset


def _write(text):
    def write(path):
        with open(path, "w") as file:
            file.write(text)

    return write


def test_replaces_the_file_and_leaves_no_staging_file(tmp_path):
    target = tmp_path / "sub" / "model.weights.h5"
    seen = []
    write_atomic(target, lambda p: (seen.append(p), _write("new")(p)))
    assert target.read_text() == "new"
    name = os.path.basename(seen[0])
    assert name.startswith(".tmp-") and name.endswith(".weights.h5")
    assert os.path.dirname(seen[0]) == str(target.parent)
    assert os.listdir(target.parent) == ["model.weights.h5"]


def test_a_failing_writer_leaves_the_old_file(tmp_path):
    target = tmp_path / "index.khi"
    target.write_text("old")

    def failing(path):
        _write("half")(path)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, failing)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["index.khi"]


# ---------------------------------------------------------------------------
# issue 24: long names, permissions, symlinks, stale staging files


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize(
    "name, extension",
    [
        ("m" * 244 + ".weights.h5", ".weights.h5"),  # 255 characters
        ("x" * 255, ""),
        ("run.keras", ".keras"),
        (".hidden", ""),
        ("a." + "b" * 40 + ".keras", ".keras"),  # long extensions: the last
    ],
)
def test_long_names_and_extensions(tmp_path, name, extension):
    seen = []
    write_atomic(tmp_path / name, lambda p: (seen.append(p), _write("x")(p)))
    assert (tmp_path / name).read_text() == "x"
    staging = os.path.basename(seen[0])
    assert staging.startswith(".tmp-") and len(staging) <= 64
    assert staging.endswith(extension)
    assert "." not in staging[1 : len(staging) - len(extension)]
    assert os.listdir(tmp_path) == [name]


@pytest.mark.parametrize(
    "mask, mode, dir_mode",
    [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750), (0o077, 0o600, 0o700)],
)
def test_new_files_get_the_umask_mode(tmp_path, mask, mode, dir_mode):
    old = os.umask(mask)
    try:
        assert files.umask() == mask
        write_atomic(tmp_path / "f", _write("x"))
        write_directory_atomic(tmp_path / "d", lambda p: _write("y")(f"{p}/in"))
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == mode
    assert (tmp_path / "d").stat().st_mode & 0o777 == dir_mode


def test_overwriting_keeps_the_existing_mode(tmp_path):
    target = tmp_path / "f"
    target.write_text("old")
    target.chmod(0o604)
    old = os.umask(0o077)
    try:
        write_atomic(target, _write("new"))
    finally:
        os.umask(old)
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o604


def test_symlink_is_written_through(tmp_path):
    (tmp_path / "real").mkdir()
    real = tmp_path / "real" / "index.khi"
    real.write_text("old")
    link = tmp_path / "current.khi"
    link.symlink_to(real)
    write_atomic(link, _write("new"))
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new" and link.read_text() == "new"
    assert sorted(os.listdir(tmp_path / "real")) == ["index.khi"]


def test_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "target")
    write_atomic(link, _write("x"))
    assert (tmp_path / "target").read_text() == "x" and link.is_symlink()


def test_stale_staging_of_dead_writers_is_removed(tmp_path):
    host, me = files._host_tag(), os.getpid()
    dead = _dead_pid()
    stale_file = f".tmp-{host}-{dead}-{'0' * 16}.khi"
    stale_dir = f".tmp-{host}-{dead}-{'1' * 16}"
    kept = [
        f".tmp-{host}-{me}-{'2' * 16}.khi",  # a live writer: this process
        f".tmp-{'f' * 8 if host != 'f' * 8 else 'e' * 8}-{dead}-{'3' * 16}",  # host
        ".tmp-abc-index.khi",  # not our pattern
        "index.khi",
    ]
    for name in [stale_file, *kept]:
        (tmp_path / name).write_text("x")
    (tmp_path / stale_dir).mkdir()
    (tmp_path / stale_dir / "saved_model.pb").write_text("x")
    write_atomic(tmp_path / "other.khi", _write("y"))
    assert sorted(os.listdir(tmp_path)) == sorted([*kept, "other.khi"])


def test_directory_write_is_atomic(tmp_path):
    def failing(staging):
        _write("half")(os.path.join(staging, "saved_model.pb"))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_directory_atomic(tmp_path / "1", failing)
    assert os.listdir(tmp_path) == []
    write_directory_atomic(tmp_path / "1", lambda p: _write("x")(f"{p}/a"))
    assert (tmp_path / "1" / "a").read_text() == "x"
    with pytest.raises(FileExistsError):
        write_directory_atomic(tmp_path / "1", lambda p: None)
    assert os.listdir(tmp_path) == ["1"]
