"""File-system helpers: atomic writes (temp file in the same folder, fsync, rename), the
repair of append-only journals cut short by a crash, the lock that keeps an output to one run,
and paths as text (names that are not UTF-8, paths that must stay inside a folder)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

from autolabel.types import UsageError


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp makes 0600 files; give the result the usual permissions (umask applies)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def content_hash(data: bytes) -> str:
    """The short content hash that names a model version."""
    return hashlib.sha256(data).hexdigest()[:12]


def repair_journal(path: Path) -> bytes:
    """Cut a last line without its newline (a crash mid-append) off an append-only journal,
    so that the next append starts a line of its own. Returns the bytes cut (b"" if none)."""
    path = Path(path)
    if not path.is_file():
        return b""
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return b""
    keep = data.rfind(b"\n") + 1
    with open(path, "r+b") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return data[keep:]


def path_text(path: str | os.PathLike) -> str:
    """A path as text any UTF-8 file can hold. A name that is not valid UTF-8 (Python keeps its
    bytes as surrogate escapes) shows those bytes as `\\xNN`; keep `path_bytes` beside it."""
    return os.fspath(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def path_bytes(path: str | os.PathLike) -> bytes | None:
    """The raw bytes of a path whose name `path_text` had to escape; None for a UTF-8 name."""
    s = os.fspath(path)
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(s)
    return None


def is_inside(path: Path, folder: Path) -> bool:
    """Whether `path`, with `..` and symbolic links resolved, lies under `folder`."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def remove_stale_temps(folder: Path, name: str) -> None:
    """Delete the temporary files `atomic_path` left for `folder/name` when killed mid-write."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for e in entries:
        if e.startswith(f".{name}.") and e.endswith(".tmp"):
            (Path(folder) / e).unlink(missing_ok=True)


class OutputLock:
    """An exclusive lock on an output, held for a whole run so two runs never write one output.

    `fcntl.flock` on a small lock file that names its holder: the kernel drops the lock when the
    holder dies, so a `kill -9` leaves no stale lock; a second run is refused at once with a
    UsageError naming the holder. The holder deletes the file when it lets go.
    """

    def __init__(self, path: Path, what: str, hint: str = "wait for it to finish, or choose another --out", by: str = "run"):
        self.path = Path(path)
        self.what = what
        self.hint = hint
        self.by = by
        self.fd: int | None = None

    def acquire(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 500).decode("utf-8", "replace").strip() or "starting up"
                os.close(fd)
                raise UsageError(f"{self.what} is in use by another autolabel {self.by} ({holder}); {self.hint}") from None
            # the previous holder may have deleted the file while we opened it: lock the live one
            try:
                live = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                live = False
            if live:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)  # still locked: nobody can be holding this file
        os.close(self.fd)  # closing lets go of the lock
        self.fd = None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
