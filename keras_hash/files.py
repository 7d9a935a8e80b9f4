"""Atomic file writes: a reader sees the old file or the new one, never half.

Guarantees of :func:`write_atomic` and :func:`write_directory_atomic`:

- **Atomic**: the content is written to a staging file (or folder) in the
  target's directory and renamed onto the target, so a process killed at
  any moment leaves the old file (or no folder) intact.
- **Long names**: staging names are short,
  ``.tmp-<host>-<pid>-<random><extension>`` (about 30 characters plus the
  target's extension, at most 32 characters of it), so any target name the
  file system allows can be written. The extension is kept because writers
  check it (``model.save_weights`` wants ``.weights.h5``, ``model.save``
  ``.keras``).
- **Permissions**: a new file gets ``0o666 & ~umask`` and a new folder
  ``0o777 & ~umask``, what ``open`` and ``os.mkdir`` would give (a staging
  file from ``tempfile`` alone would be ``0600``, unreadable by a server
  running as another user). Writing over an existing file keeps that file's
  permission bits, as ``open(path, "w")`` would (its owner becomes the
  writer's).
- **Symlinks**: writing to a symlink writes through to the file it points to
  (staged in that file's directory); the link stays a link, as with
  ``open(path, "w")``.
- **Stale staging files**: a writer killed by ``SIGKILL`` (or a power cut)
  leaves its staging file behind. Every write first removes the staging
  files and folders in its directory that were left by a process of this
  host that is no longer running (name pattern above: the host tag and the
  PID say whose it is). Files of live processes, of other hosts, and any
  other file are never touched. (In separate PID namespaces sharing a folder
  under one host name, a live writer may look dead; its rename then fails
  with an error and the old file stays: never a half file.)
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import stat

#: Staging names: ``.tmp-<host tag>-<pid>-<random><extension>``.
STAGING_PREFIX = ".tmp-"
_MAX_EXTENSION = 32
_STAGING = re.compile(r"^\.tmp-([0-9a-f]{8})-([0-9]+)-[0-9a-f]{16}(\..*)?$")


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _extension(name: str) -> str:
    """The name's extensions (``.weights.h5``), or its last one if too long."""
    stem = name.lstrip(".")
    dot = stem.find(".")
    if dot < 0:
        return ""
    suffixes = stem[dot:]
    if len(suffixes) <= _MAX_EXTENSION:
        return suffixes
    last = stem[stem.rfind(".") :]
    return last if len(last) <= _MAX_EXTENSION else ""


def staging_name(name: str = "") -> str:
    """A fresh staging name for a target called ``name`` (its extension kept)."""
    return (
        f"{STAGING_PREFIX}{_host_tag()}-{os.getpid()}-{secrets.token_hex(8)}"
        f"{_extension(name)}"
    )


def umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no way to read it without setting it
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a PID we wrote: leave it alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def remove_stale_staging(directory) -> list[str]:
    """Removes staging files and folders of dead writers of this host.

    Returns the names removed. See the module doc for the rule.
    """
    removed = []
    host = _host_tag()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = _STAGING.match(entry.name)
        if not match or match.group(1) != host or _pid_alive(int(match.group(2))):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.remove(entry.path)
            removed.append(entry.name)
        except FileNotFoundError:
            pass  # another cleaner got there first
        except OSError:
            pass  # not ours to force; it stays
    return removed


def _resolve(path) -> str:
    """The file a write to ``path`` changes: symlinks are followed."""
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def write_atomic(path, write) -> None:
    """Calls ``write(staging_path)``, then renames the staging file onto ``path``.

    The staging file sits in ``path``'s directory (created if needed) under a
    short name that keeps ``path``'s extension, so writers that check it
    (``model.save_weights`` wants ``.weights.h5``) accept it. If ``write``
    raises, the staging file is removed and ``path`` is left as it was (an
    ``OSError`` with no file name, such as a full disk's, is raised again
    naming ``path``). Permissions, symlinks and the clean-up of staging
    files left by killed writers are as the module doc says.

    ```python
    write_atomic("run/model.weights.h5", model.save_weights)
    ```
    """
    path = _resolve(path)
    directory, name = os.path.split(path)
    if not name:
        raise IsADirectoryError(errno.EISDIR, "not a file path", path)
    os.makedirs(directory, exist_ok=True)
    remove_stale_staging(directory)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~umask()
    staging = os.path.join(directory, staging_name(name))
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        write(staging)
        os.chmod(staging, mode)
        os.replace(staging, path)
    except OSError as error:  # e.g. a full disk: name the file, not the staging one
        if error.errno is None or error.filename not in (None, staging):
            raise
        raise OSError(error.errno, f"{error.strerror} while writing", path) from error
    finally:
        if os.path.lexists(staging):
            os.remove(staging)


def write_directory_atomic(path, write) -> None:
    """Calls ``write(staging_dir)``, then renames the staging folder to ``path``.

    For folders such as a SavedModel version: ``path`` must not exist (a
    folder is never replaced). The staging folder (a short ``.tmp-`` name in
    the same parent) gets ``0o777 & ~umask``; if ``write`` raises or the
    process is killed, no folder appears at ``path``.
    """
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    remove_stale_staging(parent)
    staging = os.path.join(parent, staging_name())
    os.mkdir(staging, 0o700)
    try:
        write(staging)
        os.chmod(staging, 0o777 & ~umask())
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "already exists", path)
        os.rename(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_text_atomic(path, text: str) -> None:
    """Writes ``text`` to ``path`` atomically (see :func:`write_atomic`)."""

    def write(staging):
        with open(staging, "w") as file:
            file.write(text)

    write_atomic(path, write)
