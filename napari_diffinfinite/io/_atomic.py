"""All-or-nothing file creation, shared by every writer in :mod:`napari_diffinfinite.io`.

A file is written to a hidden temporary next to its target (``.<name>.partial-<pid>-<random>``), flushed
and fsynced, then moved onto the target in one step (a hard link when the target must not be overwritten, so
that a file that appeared meanwhile is never clobbered; ``os.replace`` otherwise). A failure or a cancel
removes the temporary. A process killed outright (SIGKILL, power loss) cannot clean up: its temporary stays
behind under the ``.partial-`` name, never under the target's, and the next export to the same target removes
it (any partial of that target whose writing process is gone).

Errors are plain Python exceptions with messages meant for a person (the CLI prints them as they are).
"""

from __future__ import annotations

import errno
import io
import os
import secrets
from pathlib import Path

from .._atomic import PARTIAL_TAG, fsync_dir, pid_alive

#: errno values that mean "the disk (or the user's quota) is full".
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class ExportError(RuntimeError):
    """An export failed after it started; nothing was written (the message says why)."""


class ExportCancelled(ExportError):
    """The caller's ``cancel()`` returned True; nothing was written."""


def disk_full(target: Path, cause: OSError | None = None) -> OSError:
    """An ``OSError`` with ``errno`` ENOSPC and a message that names the target."""
    detail = f" ({cause.strerror or cause})" if cause is not None else ""
    err = OSError(f"disk full while writing {target}{detail}; nothing was written")
    err.errno = errno.ENOSPC
    return err


def translate_oserror(exc: OSError, target: Path) -> OSError:
    """A clearer ``OSError`` for the common failures of writing ``target`` (or ``exc`` itself)."""
    if exc.errno in _FULL:
        return disk_full(target, exc)
    if exc.errno == errno.EFBIG:
        err = OSError(
            f"file too large while writing {target} (a file-size limit of the file system or of this "
            "process); nothing was written"
        )
        err.errno = errno.EFBIG
        return err
    if isinstance(exc, PermissionError):
        return PermissionError(
            f"no permission to write {target} (in folder {target.parent}): {exc.strerror or exc}"
        )
    if exc.errno == errno.EROFS:
        err = OSError(f"cannot write {target}: the folder {target.parent} is on a read-only file system")
        err.errno = errno.EROFS
        return err
    return exc


def partial_prefix(target: Path) -> str:
    return f".{target.name}{PARTIAL_TAG}"


def clean_stale_partials(target: Path) -> list[Path]:
    """Remove the temporaries that killed exports of ``target`` left behind; returns what was removed.

    A partial belongs to the process whose id is in its name; it is removed only when that process no longer
    exists (and is not this one), so a concurrent export of the same target is never disturbed.
    """
    removed = []
    prefix = partial_prefix(target)
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    me = os.getpid()
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        pid_text = entry.name[len(prefix) :].split("-", 1)[0]
        try:
            pid = int(pid_text)
        except ValueError:
            continue
        if pid == me or pid_alive(pid):
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def check_target(target: str | os.PathLike, *, overwrite: bool) -> Path:
    """Validate a target path before anything is created; returns it as an absolute ``Path``."""
    target = Path(target).expanduser().absolute()
    folder = target.parent
    if not folder.exists():
        raise FileNotFoundError(
            f"cannot write {target}: the folder {folder} does not exist (create it first)"
        )
    if not folder.is_dir():
        raise NotADirectoryError(f"cannot write {target}: {folder} is not a folder")
    if target.is_dir():
        raise IsADirectoryError(f"cannot write {target}: it is a folder; give a file name")
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise FileExistsError(
            f"{target} already exists; pass overwrite=True (CLI: --overwrite) to replace it, "
            "or choose another name"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"no permission to write {target}: the folder {folder} is not writable")
    return target


class _WholeWriteFileIO(io.FileIO):
    """A raw file whose ``write`` writes everything or raises the system's error.

    A plain raw write may write part of the data and report the count (the disk just filled up); callers such
    as tifffile then fail with "N requested and M written" and no errno. Writing the rest at once makes the
    next system call report the real cause (ENOSPC, EDQUOT, EFBIG), which becomes a clear message.
    """

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        total = 0
        while view:
            n = super().write(view)
            if not n:
                raise OSError(errno.ENOSPC, "no space left on device")
            total += n
            view = view[n:]
        return total


class _TempFile(io.BufferedRandom):
    """Buffered, and without ``fileno()``: numpy's ``tofile`` (which tifffile uses for uncompressed data)
    would write to the descriptor directly and report a full disk without an errno; refused a descriptor,
    tifffile falls back to ``write``, which goes through :class:`_WholeWriteFileIO`."""

    def fileno(self) -> int:
        raise io.UnsupportedOperation("fileno")

    def os_fileno(self) -> int:
        return self.raw.fileno()


class AtomicFile:
    """A temporary file next to ``target`` that becomes ``target`` on :meth:`commit`, or vanishes.

    Use as a context manager; leaving the block without :meth:`commit` (an exception, a cancel) discards the
    temporary::

        with AtomicFile(path, overwrite=False) as af:
            write_into(af.open())
            af.commit()
    """

    def __init__(self, target: str | os.PathLike, *, overwrite: bool = False):
        self.target = check_target(target, overwrite=overwrite)
        self.overwrite = overwrite
        self.temp: Path | None = None
        self.file = None
        self.committed = False
        clean_stale_partials(self.target)

    def open(self):
        """Create the temporary and return it opened for binary read/write."""
        if self.file is not None:
            return self.file
        name = f"{partial_prefix(self.target)}{os.getpid()}-{secrets.token_hex(4)}"
        temp = self.target.parent / name
        try:
            # exclusive create; closed by commit / discard
            self.file = _TempFile(_WholeWriteFileIO(temp, "x+"), buffer_size=1 << 20)
        except OSError as exc:
            raise translate_oserror(exc, self.target) from exc
        self.temp = temp
        return self.file

    def commit(self) -> Path:
        """Flush, fsync and move the temporary onto the target; returns the target."""
        if self.committed:
            return self.target
        if self.file is None:
            raise RuntimeError("AtomicFile.commit() before open()")
        target = self.target
        try:
            self.file.flush()
            os.fsync(self.file.os_fileno())
            self.file.close()
            if self.overwrite:
                os.replace(self.temp, target)
            else:
                self._link_no_clobber()
        except OSError as exc:
            raise translate_oserror(exc, target) from exc
        self.committed = True
        self.temp = None
        fsync_dir(target.parent)
        return target

    def _link_no_clobber(self) -> None:
        try:
            os.link(self.temp, self.target)
        except FileExistsError:
            raise FileExistsError(
                f"{self.target} appeared while it was being written; it was left as it is and nothing was "
                "written (pass overwrite=True to replace it)"
            ) from None
        except OSError as exc:
            # hard links unsupported here (some network or FAT file systems): check, then rename
            if self.target.exists() or self.target.is_symlink():
                raise FileExistsError(
                    f"{self.target} appeared while it was being written; nothing was written"
                ) from exc
            os.replace(self.temp, self.target)
            return
        os.unlink(self.temp)

    def discard(self) -> None:
        """Close and remove the temporary (no error if it is already gone)."""
        if self.file is not None and not self.file.closed:
            try:
                self.file.close()
            except OSError:
                pass
        if self.temp is not None:
            try:
                os.unlink(self.temp)
            except FileNotFoundError:
                pass
            self.temp = None

    def uncommit(self) -> None:
        """Remove a committed target again (used when a later file of a group fails)."""
        if self.committed:
            try:
                os.unlink(self.target)
            except FileNotFoundError:
                pass
            self.committed = False

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            self.discard()
