"""The one way outputs reach the disk: atomically, durably, with the permissions of the process umask.

`write_atomically(path, write)` has `write` produce the file under its final name inside a fresh staging
folder beside `path` (so a failed or interrupted write never leaves a partial file where readers look),
fsyncs it, renames it over `path` and fsyncs the folder, so the rename survives a power loss. Readers see
the old file or the new one, never a mixture. The file is created by plain `open()`, so its mode follows
the umask like every other file the user writes (tempfile.mkstemp would give 0600, unreadable for
colleagues on shared storage); the staging folder is removed whatever happens.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

# Staging folders are named by writer process and host, so a sweep removes only folders of dead writers
# on this host and never those of a live writer on another machine sharing the volume.
_HOST = hashlib.sha1(socket.gethostname().encode(), usedforsecurity=False).hexdigest()[:8]
_STAGING = re.compile(r"\.staging-(?P<pid>\d+)-(?P<host>[0-9a-f]{8})-[0-9a-f]+")


_FILE_DIGESTS: dict[Path, tuple[tuple[int, int, int], str]] = {}  # path -> ((size, mtime_ns, inode), sha256)


def file_sha256(path: str | Path) -> str:
    """sha256 of the file's bytes, recomputed only when its size, modification time or inode changed (an
    atomic replace gives a new inode even within the file system's mtime granularity)."""
    path = Path(path)
    stat = path.stat()
    key, version = path.resolve(), (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    cached = _FILE_DIGESTS.get(key)
    if cached is not None and cached[0] == version:
        return cached[1]
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    _FILE_DIGESTS[key] = (version, digest)
    return digest


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Write `path` through `write(staged)` (module docstring); returns `path`. The parent folder is created
    when missing; an exception from `write` leaves `path` as it was and propagates."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f".staging-{os.getpid()}-{_HOST}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        staged = staging / path.name
        write(staged)
        with open(staged, "rb") as written:
            os.fsync(written.fileno())
        os.replace(staged, path)
        fsync_folder(path.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def fsync_folder(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def sweep_dead_staging(directory: Path) -> None:
    """Remove staging folders left in `directory` by writers on this host that died before their rename."""
    for entry in directory.iterdir():
        match = _STAGING.fullmatch(entry.name)
        if match and match["host"] == _HOST and not _process_alive(int(match["pid"])):
            shutil.rmtree(entry, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True
