"""A zarr v3 :class:`~zarr.storage.LocalStore` whose every write is all-or-nothing, and a per-canvas writer lock.

zarr 3.1's own ``LocalStore`` already writes each key to a temporary file and renames it over the target;
zarr 3.0 wrote some keys in place. This subclass makes the guarantee explicit and independent of the zarr
version: a key (a chunk, or a ``zarr.json``) is written to a hidden temporary in the same folder
(``.<name>.partial-<pid>-<random>``), optionally fsynced, and moved onto its name with ``os.replace``
(``os.link`` when the key must not exist yet). A reader therefore sees a chunk either whole and old, or whole
and new, never torn, and a process killed at any moment leaves at most a stray temporary behind, never a
partial chunk. :func:`remove_stale_partials` deletes the strays of processes that are gone.

Without ``fsync`` this survives the writing process being killed (the kernel still holds the data); with
``fsync=True`` it also survives power loss, at the price of one disk flush per chunk.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from zarr.core.buffer import Buffer
from zarr.storage import LocalStore

from .._atomic import PARTIAL_TAG, atomic_write_bytes, pid_alive

__all__ = ["PARTIAL_TAG", "AtomicLocalStore", "atomic_write_bytes", "remove_stale_partials"]


def remove_stale_partials(root: Path, *, all_processes: bool = False) -> int:
    """Delete the temporaries (``*.partial-<pid>-*``, and zarr's own ``*.partial``) under ``root`` left by
    processes that are gone (or by every process, when the caller holds the writer lock: ``all_processes``).
    Returns how many were removed."""
    removed = 0
    me = os.getpid()
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            if PARTIAL_TAG in name:
                try:
                    pid = int(name.rsplit(PARTIAL_TAG, 1)[1].split("-", 1)[0])
                except ValueError:
                    pid = -1
                if pid == me or (not all_processes and pid > 0 and pid_alive(pid)):
                    continue
            elif not (all_processes and name.endswith(".partial")):
                continue
            try:
                os.unlink(os.path.join(dirpath, name))
                removed += 1
            except FileNotFoundError:
                pass
    return removed


class AtomicLocalStore(LocalStore):
    """``LocalStore`` with all-or-nothing key writes (temporary + rename), optionally fsynced."""

    def __init__(self, root: Path | str, *, read_only: bool = False, fsync: bool = False) -> None:
        super().__init__(root, read_only=read_only)
        self.fsync = bool(fsync)

    def with_read_only(self, read_only: bool = False):
        return type(self)(root=self.root, read_only=read_only, fsync=self.fsync)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LocalStore) and self.root == other.root

    __hash__ = None  # mutable settings; zarr never hashes stores

    def _put(self, key: str, value: Buffer, exclusive: bool = False) -> None:
        if not isinstance(value, Buffer):
            raise TypeError(f"AtomicLocalStore.set(): value must be a Buffer, got {type(value).__name__}")
        atomic_write_bytes(self.root / key, value.as_buffer_like(), exclusive=exclusive, fsync=self.fsync)

    async def set(self, key: str, value: Buffer) -> None:
        if not self._is_open:
            await self._open()
        self._check_writable()
        await asyncio.to_thread(self._put, key, value)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        if not self._is_open:
            await self._open()
        self._check_writable()
        try:
            await asyncio.to_thread(self._put, key, value, True)
        except FileExistsError:
            pass

    def set_sync(self, key: str, value: Buffer) -> None:
        if hasattr(self, "_ensure_open_sync"):
            self._ensure_open_sync()
        self._check_writable()
        self._put(key, value)


# ---------------------------------------------------------------------------------------------- writer lock
class CanvasLockedError(RuntimeError):
    """Another process has this canvas open for writing."""


@dataclass
class WriterHandle:
    """This process's hold on a canvas for writing, shared by every store object of the process open on it."""

    key: str  # real path of the canvas folder
    lock: threading.RLock  # serialises read-modify-writes of shared chunks within the process
    exclusive: bool  # holds the flock: no other process writes
    fd: int | None = None
    refcount: int = 0
    shared: dict = field(default_factory=dict)  # per-canvas state shared by the process's store objects


_LOCKS: dict[str, WriterHandle] = {}
_LOCKS_GUARD = threading.Lock()
LOCK_NAME = ".writer.lock"


def acquire_writer(root: Path, *, exclusive: bool = True) -> WriterHandle:
    """The process-wide write handle of canvas ``root``: one ``RLock`` shared by every store object of this
    process open on it (so their read-modify-writes of shared chunks are serialised), plus, when
    ``exclusive``, an ``flock`` on ``root/.writer.lock`` that keeps other processes from writing too. The
    ``flock`` dies with the process, so a killed writer never leaves the canvas locked."""
    key = os.path.realpath(root)
    with _LOCKS_GUARD:
        handle = _LOCKS.get(key)
        if handle is None:
            fd = None
            if exclusive:
                fd = os.open(os.path.join(key, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    os.close(fd)
                    if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        raise CanvasLockedError(
                            f"the canvas {root} is open for writing in another process; close it there, or "
                            "open it read-only (mode='r')"
                        ) from None
                    raise
            handle = _LOCKS[key] = WriterHandle(key, threading.RLock(), exclusive, fd)
        elif exclusive and not handle.exclusive:
            raise CanvasLockedError(
                f"the canvas {root} is already open in this process without the writer lock (lock=False)"
            )
        handle.refcount += 1
        return handle


def release_writer(handle: WriterHandle) -> None:
    with _LOCKS_GUARD:
        handle.refcount -= 1
        if handle.refcount <= 0 and _LOCKS.get(handle.key) is handle:
            del _LOCKS[handle.key]
            if handle.fd is not None:
                try:
                    fcntl.flock(handle.fd, fcntl.LOCK_UN)
                finally:
                    os.close(handle.fd)
