"""Export a region of a canvas as a pyramidal OME-TIFF (or PNG) with its mask and settings, streamed tile by tile.

One function for the CLI (``diffinfinite export``) and the viewer: it reads level-0 pixels and latent-scale labels
from the store as the writer asks for them, so memory stays bounded by a few tiles whatever the region's size.
Tiles not generated yet are either refused (the default, with a message saying how many and how to proceed) or
generated first by a :class:`~napari_diffinfinite.canvas.scheduler.TileScheduler`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..canvas.grid import Rect, TileKey
from ..canvas.store import STATUS_PIXELS, CanvasStore
from .ome_tiff import PyramidOptions
from .sidecar import export_region


class MissingTilesError(ValueError):
    """The region holds tiles that are not generated yet and the export was asked not to generate them."""


def missing_tiles(store: CanvasStore, rect_px) -> list[TileKey]:
    """Level-0 tiles under ``rect_px`` (image px) whose pixels are not generated (status < 2), row-major;
    one read of the status array, however many tiles."""
    r = store.grid.clip(rect_px)
    if r.empty:
        return []
    tr = store.grid.tile_range(r)
    status = store.read_status(tr)
    return [(tr.y0 + int(i), tr.x0 + int(j)) for i, j in np.argwhere(status < STATUS_PIXELS)]


def export_canvas(
    store: CanvasStore,
    rect,
    stem,
    *,
    fmt: str = "ome.tif",
    compression: str | None = None,
    overwrite: bool = False,
    scheduler=None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict:
    """Write ``<stem>.ome.tif`` + ``<stem>_mask.ome.tif`` + ``<stem>.json`` (or PNGs) for ``rect`` = (y0, y1, x0, x1)
    in canvas pixels. With a ``scheduler``, missing tiles are generated first; otherwise they are refused."""
    r = Rect(*(int(v) for v in rect)).intersect(store.grid.bounds(0))
    if r.empty:
        raise ValueError(f"region {tuple(rect)} is empty or outside the canvas {store.grid.bounds(0)}")
    missing = missing_tiles(store, r)
    if missing:
        if scheduler is None:
            raise MissingTilesError(
                f"{len(missing)} of {len(store.grid.tiles_in_rect(r, 0))} tiles in the region are not generated yet; "
                "generate them first (in the viewer, or with --generate-missing), or export a generated region"
            )
        scheduler.request_tiles(missing)
        scheduler.run_until_idle()
        still = missing_tiles(store, r)
        if still:
            raise MissingTilesError(f"{len(still)} tiles could not be generated; nothing was written")
    d = store.grid.downsampling

    def read_image(y0, y1, x0, x1):
        return store.read_tissue(0, r.y0 + y0, r.y0 + y1, r.x0 + x0, r.x0 + x1, placeholder=False)

    def read_mask(y0, y1, x0, x1):
        ay, ax = r.y0 + y0, r.x0 + x0
        lab = store.read_labels(Rect(ay // d, -(-(r.y0 + y1) // d), ax // d, -(-(r.x0 + x1) // d)))
        full = np.repeat(np.repeat(lab, d, axis=0), d, axis=1)
        oy, ox = ay - (ay // d) * d, ax - (ax // d) * d
        return full[oy : oy + (y1 - y0), ox : ox + (x1 - x0)]

    settings = {**store.settings, "canvas": str(store.root), "region_px": [r.y0, r.y1, r.x0, r.x1]}
    return export_region(
        Path(stem),
        read_image,
        read_mask,
        (r.height, r.width),
        settings,
        fmt=fmt,
        options=PyramidOptions(compression=compression, pixel_size_um=store.pixel_size_um),
        overwrite=overwrite,
        max_label=store.num_classes - 1,
        progress=progress,
        cancel=cancel,
    )
