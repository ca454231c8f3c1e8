"""The unbounded canvas: tile geometry, the persistent zarr store and the tile scheduler. No Qt, no napari.

- :mod:`.grid`: pixels, latents, tiles and pyramid levels (pure Python).
- :mod:`.store`: :class:`CanvasStore`, one zarr v3 folder with latents, mask, RGB pyramid (OME-Zarr 0.5
  multiscales) and per-tile status; crash-safe writes; readers that never run a model.
- :mod:`.scheduler`: :class:`TileScheduler`, centre-first tile requests, invalidation, re-rolls, and one
  worker thread that generates tiles into the store.
- :mod:`.session`: :class:`~.session.CanvasSession`, one open canvas without a viewer (model, settings, view
  requests, label edits, re-rolls, events); the napari controller is a face on top of it.
"""

from .grid import CanvasGrid, Rect, TileKey

__all__ = [
    "STATUS_EMPTY",
    "STATUS_LATENTS",
    "STATUS_PIXELS",
    "CanvasGrid",
    "CanvasLockedError",
    "CanvasStore",
    "Rect",
    "SchedulerStats",
    "TileKey",
    "TileScheduler",
]

_STORE_NAMES = ("STATUS_EMPTY", "STATUS_LATENTS", "STATUS_PIXELS", "CanvasLockedError", "CanvasStore")


def __getattr__(name):
    # imported on first use: the scheduler imports torch, the store zarr (0.16 s that opening the demo
    # spends before napari's first layer otherwise); the grid needs neither
    if name in ("TileScheduler", "SchedulerStats"):
        from . import scheduler

        return getattr(scheduler, name)
    if name in _STORE_NAMES:
        from . import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
