"""Export a region of a canvas as a pyramidal OME-TIFF (or PNG) with its mask and settings, streamed tile by tile.

- :func:`export_canvas`: the CLI's (``diffinfinite export``). It reads level-0 pixels and latent-scale labels from
  the store as the writer asks for them, so memory stays bounded by a few tiles whatever the region's size. Tiles
  not generated yet are refused (with a message saying how many and how to proceed) or generated first by a
  :class:`~napari_diffinfinite.canvas.scheduler.TileScheduler`.
- :func:`export_canvas_region`: the viewer's and the napari writer's: a size limit, and an error that lists the
  missing tiles (:class:`MissingTilesError`).
- :class:`CanvasExportJob`: one export from a live :class:`~napari_diffinfinite.canvas.session.CanvasSession`,
  Qt-free: it waits for the missing tiles to be generated (optionally), then writes in a thread, with progress,
  cancel and events. The napari face shows it; scripts and tests wait for it.

An export never contains placeholders.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from psygnal import Signal

from ..canvas.grid import Rect, TileKey, as_rect
from ..canvas.store import STATUS_PIXELS, CanvasStore
from ._atomic import ExportCancelled
from .ome_tiff import PyramidOptions
from .sidecar import export_region

if TYPE_CHECKING:
    from ..canvas.session import CanvasSession

#: Refuse exports from the viewer over this many level-0 tiles (16,384 tiles = 64k x 64k px, a 12 GB RGB image).
MAX_EXPORT_TILES = 16384
#: Most missing tiles an export from the viewer generates before it starts.
MAX_GENERATE_BEFORE_EXPORT = 1024


class MissingTilesError(ValueError):
    """The region holds tiles that are not generated yet and the export was asked not to generate them;
    ``tiles`` lists them (row, column) where known."""

    def __init__(self, message: str, tiles: list[TileKey] | None = None):
        super().__init__(message)
        self.tiles = list(tiles or [])


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
    """Write the tissue and mask of level-0 rectangle ``rect_px`` of ``store`` (:func:`export_canvas`), for the
    viewer: raises :class:`MissingTilesError` (with the tiles) if a tile in the region is not generated,
    ``ValueError`` for an empty region or one over :data:`MAX_EXPORT_TILES`, and what the export raises
    (``FileExistsError``, ``ExportCancelled``, ``OSError``)."""
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
            "yet; generate them first (or tick 'generate missing tiles'): an export never contains placeholders",
            missing,
        )
    return export_canvas(
        store,
        (r.y0, r.y1, r.x0, r.x1),
        stem_path,
        fmt=fmt,
        compression=compression,
        overwrite=overwrite,
        progress=progress,
        cancel=cancel,
    )


class CanvasExportJob:
    """One export of a region of an open canvas, Qt-free: optionally wait for its missing tiles, then write.

    ``start()`` checks the region at once (raising :class:`MissingTilesError` or ``ValueError`` in the caller's
    thread). With ``generate_missing`` the session generates the missing tiles first (the job watches its
    ``tile_landed`` and ``changed`` events, and asks again if generation was cancelled meanwhile); the files are
    then written in a thread of the job's own. ``changed`` is emitted on whatever thread moved the job (the
    scheduler's worker, the writing thread, the caller): a GUI marshals it to its own thread.

    States: ``"waiting"`` (for tiles), ``"running"``, then ``"done"`` (:attr:`result` holds the paths),
    ``"error"`` (:attr:`error` says why) or ``"cancelled"``.
    """

    changed = Signal()

    def __init__(
        self,
        session: CanvasSession,
        path: str | os.PathLike,
        rect_px,
        *,
        fmt: str = "ome.tif",
        overwrite: bool = False,
        generate_missing: bool = False,
        compression: str | None = None,
    ):
        self.session = session
        self.path = Path(path)
        self.rect = session.grid.clip(as_rect(rect_px))
        self.fmt = fmt
        self.overwrite = overwrite
        self.generate_missing = generate_missing
        self.compression = compression  # None: the format's default (JPEG tissue, lossless mask)
        self.state = "idle"
        self.progress = (0, 0)  # (done, total): tiles generated while waiting, then tiles written
        self.result: dict | None = None
        self.error: str | None = None
        self._to_generate = 0
        self._cancelled = False
        self._lock = threading.Lock()
        self._finished = threading.Event()

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def start(self) -> CanvasExportJob:
        """Check the region, then wait for its tiles or start writing. Returns the job."""
        missing = missing_tiles(self.session.store, self.rect)
        if missing and not self.generate_missing:
            export_canvas_region(self.session.store, self.path, self.rect)  # raises with the message
        if missing:
            if self.session.scheduler is None:
                raise RuntimeError("load a model first: the region has tiles that are not generated")
            if len(missing) > MAX_GENERATE_BEFORE_EXPORT:
                raise MissingTilesError(
                    f"{len(missing)} tiles of the region are not generated; that is too many to generate "
                    f"before an export (at most {MAX_GENERATE_BEFORE_EXPORT}): zoom in or select less",
                    missing,
                )
            self._to_generate = len(missing)
            self.session.tile_landed.connect(self._check)
            self.session.changed.connect(self._check)
            self._set("waiting", (0, len(missing)))
            if self.state == "waiting":  # not cancelled by a listener
                self.session.request_tiles(missing)
                self._check()  # they may have landed meanwhile
        else:
            self._launch()
        return self

    def cancel(self) -> None:
        """Stop waiting, or stop writing (nothing is left behind: the writers write to temporary files)."""
        self._cancelled = True
        with self._lock:
            waiting = self.state == "waiting"
            if waiting:
                self._stop_watching()
                self.state = "cancelled"
        if waiting:
            self._finish("cancelled")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job is done, failed or cancelled; False on timeout."""
        return self._finished.wait(timeout)

    # ------------------------------------------------------------------ internals
    def _set(self, state: str | None = None, progress: tuple[int, int] | None = None) -> None:
        if state is not None:
            self.state = state
        if progress is not None:
            self.progress = progress
        self.changed.emit()

    def _stop_watching(self) -> None:
        self.session.tile_landed.disconnect(self._check, missing_ok=True)
        self.session.changed.disconnect(self._check, missing_ok=True)

    def _check(self, *_args) -> None:
        """While waiting: count the tiles still missing; write once none is, or ask again for them if the
        session stopped generating them."""
        with self._lock:
            if self.state != "waiting":
                return
            left = missing_tiles(self.session.store, self.rect)
            self.progress = (self._to_generate - len(left), self._to_generate)
            if not left:
                self._stop_watching()
                self.state = "running"  # under the lock: no second _check launches it again
        if not left:
            self._launch()
            return
        self.changed.emit()
        sched = self.session.scheduler
        if sched is not None and not sched.pending() and sched.stats.current is None:
            self.session.request_tiles(left)  # e.g. generation was cancelled meanwhile

    def _launch(self) -> None:
        self._set("running", (0, 0))
        threading.Thread(target=self._write, name="diffinfinite-export", daemon=True).start()

    def _write(self) -> None:
        try:
            self.result = export_canvas_region(
                self.session.store,
                self.path,
                self.rect,
                fmt=self.fmt,
                overwrite=self.overwrite,
                compression=self.compression,
                progress=lambda done, total: self._set(progress=(done, total)),
                cancel=lambda: self._cancelled,
            )
        except ExportCancelled:
            self._finish("cancelled")
        except Exception as exc:  # noqa: BLE001 - reported to the user through the job's state
            self.error = str(exc)
            self._finish("error")
        else:
            self._finish("done")

    def _finish(self, state: str) -> None:
        self.state = state
        self._finished.set()
        self.changed.emit()
