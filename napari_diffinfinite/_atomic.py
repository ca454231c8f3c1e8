"""All-or-nothing file writes, the one primitive under every writer of the package (weights, training state,
canvas store keys, exports, survey results).

A file is written to a hidden temporary in its target's folder (``.<name>.partial-<pid>-<random>``) and moved
onto the target in one step: ``os.replace``, or ``os.link`` when the target must not exist yet (so a file that
appeared meanwhile is never clobbered). A reader sees the old file or the new one, never a torn one; a process
killed midway leaves only a temporary whose name carries its pid, which :func:`pid_alive` lets cleaners judge.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

PARTIAL_TAG = ".partial-"


def partial_name(path: Path) -> Path:
    """A fresh temporary name next to ``path`` that says which process wrote it."""
    return path.with_name(f".{path.name}{PARTIAL_TAG}{os.getpid()}-{secrets.token_hex(6)}")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (so its temporaries may still be in use)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (no-op where folders cannot be opened or synced)."""
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


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def atomic_write_bytes(path: Path, data, *, exclusive: bool = False, fsync: bool = False) -> None:
    """Write ``data`` (any buffer) to ``path`` all-or-nothing; ``exclusive``: FileExistsError if it exists."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    if fsync:
        fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_tensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """safetensors file of ``tensors`` (moved to CPU, made contiguous) with string ``metadata``."""
    from safetensors.torch import save

    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    atomic_write_bytes(path, data)


def atomic_copy(src: Path, path: Path) -> None:
    path = Path(path)
    tmp = partial_name(path)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
