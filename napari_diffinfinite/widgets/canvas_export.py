"""Export of a canvas region from the viewer (the current view, a drawn rectangle, or everything generated)
through :func:`napari_diffinfinite.io.canvas_export.export_canvas` (the function ``diffinfinite export``
uses).
No Qt: the controller runs this in a worker thread and passes ``progress`` / ``cancel``.

What this adds for the viewer: a size limit, an error that names the missing tiles
(:class:`MissingTilesError`, a subclass of the io layer's, so the viewer can request exactly those), and the
bounding box of what is generated (for the napari writer). An export never contains placeholders.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from ..canvas.grid import Rect, TileKey, as_rect
from ..canvas.store import STATUS_PIXELS, CanvasStore
from ..io import canvas_export as _canvas_export

__all__ = [
    "MAX_EXPORT_TILES",
    "MissingTilesError",
    "export_canvas_region",
    "generated_bbox",
    "missing_tiles",
]

#: Refuse exports over this many level-0 tiles (16,384 tiles = 64k x 64k px, a 12 GB RGB image).
MAX_EXPORT_TILES = 16384


class MissingTilesError(_canvas_export.MissingTilesError):
    """The region holds tiles that are not generated; ``tiles`` lists them (row, column)."""

    def __init__(self, message: str, tiles: list[TileKey]):
        super().__init__(message)
        self.tiles = tiles


missing_tiles = _canvas_export.missing_tiles


def generated_bbox(store: CanvasStore) -> Rect:
    """The level-0 px bounding box of every generated tile (empty if none)."""
    done = np.argwhere(store.read_status() >= STATUS_PIXELS)
    if not len(done):
        return Rect(0, 0, 0, 0)
    (i0, j0), (i1, j1) = done.min(0), done.max(0) + 1
    t = store.grid.tile
    return store.grid.clip((int(i0) * t, int(i1) * t, int(j0) * t, int(j1) * t))


def export_canvas_region(
    store: CanvasStore,
    stem_path: str | os.PathLike,
    rect_px,
    *,
    fmt: str = "ome.tif",
    overwrite: bool = False,
    compression: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict:
    """Write the tissue and mask of level-0 rectangle ``rect_px`` of ``store``: ``<stem>.ome.tif`` +
    ``<stem>_mask.ome.tif`` + ``<stem>.json`` (or PNGs), via
    :func:`~napari_diffinfinite.io.canvas_export.export_canvas`.
    Raises :class:`MissingTilesError` (with the tiles) if a tile in the region is not generated, ``ValueError`` for
    an empty or too large region, and what the export raises (``FileExistsError``, ``ExportCancelled``,
    ``OSError``)."""
    r = store.grid.clip(as_rect(rect_px))
    if r.empty:
        raise ValueError("the region to export is empty (it lies outside the canvas)")
    n_tiles = len(store.grid.tiles_in_rect(r))
    if n_tiles > MAX_EXPORT_TILES:
        raise ValueError(
            f"the region covers {n_tiles} tiles; exports are limited to {MAX_EXPORT_TILES} "
            f"({r.height} x {r.width} px asked): zoom in or draw a smaller rectangle"
        )
    missing = missing_tiles(store, r)
    if missing:
        raise MissingTilesError(
            f"{len(missing)} of the {n_tiles} tiles in the region ({r.height} x {r.width} px) are not generated "
            "yet; generate them first (an export never contains placeholders)",
            missing,
        )
    return _canvas_export.export_canvas(
        store,
        (r.y0, r.y1, r.x0, r.x1),
        stem_path,
        fmt=fmt,
        compression=compression,
        overwrite=overwrite,
        progress=progress,
        cancel=cancel,
    )
