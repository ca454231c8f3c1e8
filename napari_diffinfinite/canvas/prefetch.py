"""A tissue pyramid level read ahead around the view, so that napari's slicing on the GUI thread is served from
memory. No Qt: the napari controller calls :meth:`PrefetchLevel.prefetch` on its I/O thread."""

from __future__ import annotations

import threading

import numpy as np

from .grid import Rect
from .store import RGBLevelArray

__all__ = ["PrefetchLevel"]


def _plain_rect(key, shape) -> Rect | None:
    """The rectangle of a ``[y0:y1, x0:x1(, :)]`` slicing with unit steps (napari's kind), else None."""
    key = key if isinstance(key, tuple) else (key,)
    if len(key) == 3 and key[2] == slice(None):
        key = key[:2]
    if len(key) != 2 or not all(isinstance(k, slice) and k.step in (None, 1) for k in key):
        return None
    (y0, y1, _), (x0, x1, _) = key[0].indices(shape[0]), key[1].indices(shape[1])
    return Rect(y0, y1, x0, x1) if y1 > y0 and x1 > x0 else None


class PrefetchLevel(RGBLevelArray):
    """A tissue pyramid level for napari (``(h, w, 3)`` uint8 array-like) with a copy of the region around the
    view read ahead on another thread.

    :meth:`prefetch` (any thread) reads napari's last requested rectangle grown by ``margin`` of its height and
    width on every side (at most ``max_side`` px a side: 1920 x 1080 -> 4800 x 2700 px, 39 MB); napari's slicings inside that region are then served from memory - a refresh after tiles
    land, and pans that stay within the margin - instead of reading the store on the GUI thread. Other
    slicings read :class:`~napari_diffinfinite.canvas.store.TissueLevel` directly. The region is read again
    whenever tiles land in it (the napari controller does), so it is never older than the
    last refresh.
    """

    def __init__(self, level, margin: float = 0.75, max_side: int = 6144):
        self.level = level
        self.store = level.store
        self.shape = level.shape
        self.margin = float(margin)
        self.max_side = int(max_side)
        self.last_rect: Rect | None = None
        self.hits = 0  # slicings served from the prefetched region
        self.misses = 0
        self._region: tuple[Rect, np.ndarray] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PrefetchLevel({self.level!r})"

    @property
    def region(self) -> Rect | None:
        """The level-pixel rectangle held in memory (None if none)."""
        held = self._region
        return None if held is None else held[0]

    def __getitem__(self, key):
        r = _plain_rect(key, self.shape)
        if r is None:
            return self.level[key]
        with self._lock:
            self.last_rect = r
            held = self._region
        if held is not None:
            hr, arr = held
            if hr.y0 <= r.y0 and r.y1 <= hr.y1 and hr.x0 <= r.x0 and r.x1 <= hr.x1:
                self.hits += 1
                return arr[r.y0 - hr.y0 : r.y1 - hr.y0, r.x0 - hr.x0 : r.x1 - hr.x0]
        self.misses += 1
        return self.level[r.y0 : r.y1, r.x0 : r.x1]

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.level, dtype=dtype)

    def prefetch(self) -> bool:
        """Read the region around napari's last requested rectangle now (any thread); False if none yet."""
        r = self.last_rect
        if r is None:
            return False
        gy = max(0, min(int(r.height * self.margin), (self.max_side - r.height) // 2))
        gx = max(0, min(int(r.width * self.margin), (self.max_side - r.width) // 2))
        grown = Rect(r.y0 - gy, r.y1 + gy, r.x0 - gx, r.x1 + gx).intersect(
            Rect(0, self.shape[0], 0, self.shape[1])
        )
        arr = np.ascontiguousarray(self.level[grown.y0 : grown.y1, grown.x0 : grown.x1])
        with self._lock:
            self._region = (grown, arr)
        return True

    def forget(self) -> None:
        with self._lock:
            self._region = None
