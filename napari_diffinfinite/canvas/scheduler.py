"""Tile requests and the worker that turns them into latents and pixels in a :class:`CanvasStore`. No Qt.

:class:`TileScheduler` keeps a request set and generates one tile at a time, highest priority first:

1. explicit requests (:meth:`~TileScheduler.request_tiles`, re-rolls), in the order they came;
2. the tiles of the current view (:meth:`~TileScheduler.request_view`), nearest the view's centre first.
   A new view replaces the old one: tiles that left the view before they started are dropped.

**Coarse zoom.** A view is requested only at pyramid levels ``<= max_request_level`` (default 1: up to a 2x
zoom-out), and at most ``max_view_tiles`` tiles (default 64, nearest the centre). At coarser zoom nothing is
requested: the layer shows what exists plus the mask placeholder; zooming in requests tiles again. So a
whole-canvas overview never queues millions of full-resolution tiles.

**Generating tile (i, j)** (:meth:`~TileScheduler.run_next`):

1. *Latents* (skipped if the tile already has status 1): read the tile's latents plus a ``halo`` (16
   latents) on every side, the labels there, and which neighbours have latents (status >= 1); sample the
   tile with :func:`~napari_diffinfinite.sampling.blocks.generate_block`, the generated neighbours being fixed
   context, in one window that covers the tile and its halo; the seed is ``block_seed(tile seed, i, j)`` with
   tile seed = the canvas seed or its re-roll seed.
   Write the latents chunk, bump the tile's version, status 1.
2. *Pixels*: decode the tile with :func:`~napari_diffinfinite.sampling.decode.decode_region` from latents read
   from the store around it (``decoder_margin`` latents for a local decoder, half a tile for the Hann decode).
   A neighbour without latents contributes nothing: its area is filled by replicating the tile's own edge.
   Then the strips of already-finished neighbours (status 2) within that reach of the new tile are decoded
   again, now with the new latents, so a border decoded before its neighbour existed is made whole. Write
   level 0, update the pyramid parents (2 x 2 means) over everything that changed, status 2.

A tile invalidated meanwhile (the mask under it was repainted) is abandoned at the next sampling step and its
status stays 0, so a stale tile is never marked done. Everything is deterministic given the order: the same
canvas generated in the same order is bit-identical, and a killed run resumes to the same canvas.

Threading: :meth:`~TileScheduler.start` runs a single worker thread; the request methods may be called from
any thread (the GUI thread) and return at once; ``on_tile_done(key)`` callbacks run on the worker thread.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from ..sampling.blocks import Block, block_seed, generate_block
from ..sampling.decode import decode_region, decode_strategy
from ..sampling.options import SamplingOptions
from ..sampling.random_patch import Cancelled, sample_region
from .grid import Rect, TileKey
from .store import STATUS_EMPTY, STATUS_LATENTS, STATUS_PIXELS, CanvasStore, recorded_sampler

__all__ = ["SchedulerStats", "TileScheduler"]

log = logging.getLogger(__name__)

#: Latents around an edit's changed cells that are sampled again with them (a local repaint); every other
#: latent of the canvas stays as fixed context. Chosen with benchmarks/repaint_seams.py.
REPAINT_MARGIN = 2
#: Fixed context read around a repainted region, in latents.
REPAINT_HALO = 8
#: An edit that would repaint more than this share of a tile's latents regenerates the tile whole instead.
REPAINT_MAX_SHARE = 0.25


@dataclass(frozen=True)
class SchedulerStats:
    """A snapshot of the scheduler for a progress display."""

    state: str = "idle"  # "idle", "running", "paused", "stopped"
    tiles_done: int = 0  # tiles finished by this scheduler
    repaints_done: int = 0  # local repaints of edited tissue finished
    repainted_latents: int = 0  # latents sampled again by them (the area they regenerated, in latents)
    tiles_queued: int = 0  # requests waiting (the running tile not included)
    current: TileKey | None = None
    current_fraction: float = 0.0  # sampling progress of the running tile, 0..1
    tiles_per_second: float = 0.0  # finished tiles / seconds spent generating
    last_tile_seconds: float = 0.0
    borders_redecoded: int = 0  # neighbour strips decoded again after a neighbour landed
    errors: int = 0


@dataclass(frozen=True)
class _Repainted:
    """What one local repaint changed in one tile: its cells, their labels and latents before and after. An
    edit that puts the labels back (undo) while the latents are still the repaint's gets the old latents back
    (the same tissue), not a new sample; the inverse record makes redo do the same."""

    cells: np.ndarray  # bool, tile-sized
    labels_before: np.ndarray  # (n,) at the cells
    labels_after: np.ndarray
    latents_before: np.ndarray  # (C, n)
    latents_after: np.ndarray

    def inverse(self) -> _Repainted:
        return _Repainted(
            self.cells, self.labels_after, self.labels_before, self.latents_after, self.latents_before
        )


#: Repaint records kept per tile for undo / redo.
REPAINT_HISTORY = 16


class TileScheduler:
    """Requests, priorities and one worker for a canvas store and a loaded model.

    Args:
        store: a writable :class:`CanvasStore`.
        model: a :class:`~napari_diffinfinite.generation.DiffInfiniteModel` matching the store (latent channels,
            downsampling; the model name is checked unless ``allow_other_model``).
        device: where to sample; must be the model's device (default).
        progress: ``progress(stats)`` with a :class:`SchedulerStats`, on the worker thread, at tile starts and
            ends and at most every 0.2 s while sampling.
        on_tile_done: ``on_tile_done(key)`` after a tile reached status 2 (its neighbours' borders within the
            decoder's reach may have changed too: see :meth:`changed_rect`).
        max_request_level, max_view_tiles: the coarse-zoom rule (module docstring).
        max_batch: UNet rows per forward pass.
        local_repaint, repaint_margin, repaint_halo: small edits of tissue repaint locally (see
            :meth:`write_labels`, :data:`REPAINT_MARGIN`, :data:`REPAINT_HALO`).
    """

    def __init__(
        self,
        store: CanvasStore,
        model,
        *,
        device=None,
        progress: Callable | None = None,
        on_tile_done: Callable[[TileKey], None] | None = None,
        max_request_level: int = 1,
        max_view_tiles: int = 64,
        max_batch: int = 64,
        allow_other_model: bool = False,
        local_repaint: bool = True,
        repaint_margin: int = REPAINT_MARGIN,
        repaint_halo: int = REPAINT_HALO,
    ):
        if store.read_only:
            raise PermissionError(
                f"the canvas {store.root} is open read-only; open it with mode='r+' to generate"
            )
        channels = int(model.image_unet.channels)
        if channels != store.latent_channels or model.downsampling != store.grid.downsampling:
            raise ValueError(
                f"model {model.name!r} makes {channels}-channel latents at 1/{model.downsampling}, but the canvas holds "
                f"{store.latent_channels}-channel latents at 1/{store.grid.downsampling}: use the canvas's model "
                f"({store.model_name!r}) or a new canvas"
            )
        if store.model_name is not None and model.name != store.model_name and not allow_other_model:
            raise ValueError(
                f"the canvas was generated with model {store.model_name!r}, not {model.name!r}; load that model, or "
                "pass allow_other_model=True to continue it with this one"
            )
        if int(model.num_classes) < store.num_classes:
            raise ValueError(
                f"the canvas has {store.num_classes} classes but model {model.name!r} knows {model.num_classes}"
            )
        model_device = torch.device(model.device)
        if device is not None and torch.device(device) != model_device:
            raise ValueError(f"the model is on {model_device}, not {device}; load it on the device to use")
        self.store = store
        self.model = model
        self.device = model_device
        self.grid = store.grid
        settings = store.settings
        halo = int(settings.get("halo", 16))
        #: the canvas's recorded settings, the model's defaults where it records none
        self.options = SamplingOptions.for_model(
            model,
            steps=settings.get("steps") or None,
            omega=settings.get("omega"),
            halo=halo,
            # new canvases record the sampler's lookahead; one made before it existed keeps sampling as it began
            lookahead=settings.get("lookahead", 0),
            sampler=recorded_sampler(settings),
            mode=settings.get("mode"),
            max_batch=max_batch,
            # One window over the tile and its context halo: one (tile + 2 halo)^2 forward per step instead of up
            # to 2 x 2 windows of the model's size (1.5x faster per tile with context), and the context steers the
            # whole tile at every step. Measured seams across joins are as good or better
            # (benchmarks/context_seams.py).
            window=max(int(model.window), self.grid.latent_tile) + 2 * halo,
        )
        self.stepper = self.options.stepper(model.image_unet)
        self.strategy = decode_strategy(model.autoencoder)
        lt = self.grid.latent_tile
        #: latents around a tile that its decode reads
        self.decode_reach = int(model.autoencoder.decoder_margin) if self.strategy == "margin" else lt // 2
        self.max_request_level = int(max_request_level)
        self.max_view_tiles = int(max_view_tiles)
        self.local_repaint = bool(local_repaint)
        self.repaint_margin, self.repaint_halo = int(repaint_margin), int(repaint_halo)
        #: edited tiles waiting for a local repaint: the latent cells to sample again (bool, tile-sized)
        self._repaints: dict[TileKey, np.ndarray] = {}
        #: the labels of queued repaints' cells before their edits (tile-sized), for the repaint records
        self._labels_before: dict[TileKey, np.ndarray] = {}
        #: repaint records per tile, oldest first; and edits that put the labels back, waiting to be restored
        self._history: dict[TileKey, list[_Repainted]] = {}
        self._restores: dict[TileKey, _Repainted] = {}
        self._progress_callbacks: list[Callable[[SchedulerStats], None]] = (
            [] if progress is None else [progress]
        )
        self._tile_done_callbacks: list[Callable[[TileKey], None]] = (
            [] if on_tile_done is None else [on_tile_done]
        )
        self._error_callbacks: list[Callable[[TileKey, BaseException], None]] = []

        self._cv = threading.Condition(threading.RLock())
        self._gen_lock = threading.Lock()  # one tile at a time, whoever calls run_next
        self._view: Rect | None = None
        self._view_level = 0
        self._view_queue: list[TileKey] = []
        self._explicit: dict[TileKey, None] = {}
        self._running: TileKey | None = None
        self._repainting: set[TileKey] = set()  # the tiles of the running repaint
        self._epoch: dict[TileKey, int] = {}
        self._cancel_gen = 0
        self._paused = False
        self._stop = False
        self._thread: threading.Thread | None = None
        self._stats = SchedulerStats()
        self._busy_seconds = 0.0
        self._last_progress = 0.0

    # ------------------------------------------------------------------ callbacks
    def add_progress_callback(self, fn: Callable[[SchedulerStats], None]) -> None:
        """Also call ``fn(stats)`` where ``progress`` is called (worker thread; see the class docstring)."""
        self._progress_callbacks.append(fn)

    def add_tile_done_callback(self, fn: Callable[[TileKey], None]) -> None:
        self._tile_done_callbacks.append(fn)

    def add_error_callback(self, fn: Callable[[TileKey, BaseException], None]) -> None:
        """``fn(key, exc)`` when generating a tile failed (the tile is dropped from the requests)."""
        self._error_callbacks.append(fn)

    def changed_rect(self, key: TileKey) -> Rect:
        """Level-0 pixels that finishing tile ``key`` may have changed: the tile and its neighbours' borders."""
        return (
            self.grid.tile_rect(key)
            .grow(self.decode_reach * self.grid.downsampling)
            .intersect(self.grid.bounds())
        )

    # ------------------------------------------------------------------ requests
    def request_view(self, level: int, rect_px) -> list[TileKey]:
        """Make the tiles of a view the view requests: ``rect_px`` is the visible rectangle in level-0 px
        ``(y0, y1, x0, x1)``, ``level`` the pyramid level shown. Replaces the previous view's requests (those
        not started are dropped). Returns the tiles now requested for the view, in order."""
        rect = self.grid.clip(rect_px)
        with self._cv:
            self._view, self._view_level = rect, int(level)
            self._refresh_view()
            self._cv.notify_all()
            return list(self._view_queue)

    def clear_view(self) -> None:
        with self._cv:
            self._view = None
            self._view_queue = []

    def _refresh_view(self) -> None:
        rect = self._view
        if rect is None or rect.empty or self._view_level > self.max_request_level:
            self._view_queue = []
            return
        tiles = self.grid.view_tiles(rect, max_tiles=self.max_view_tiles)
        tr = self.grid.tile_range(rect)
        status = self.store.read_status(tr)
        self._view_queue = [
            t
            for t in tiles
            if status[t[0] - tr.y0, t[1] - tr.x0] < STATUS_PIXELS
            and t != self._running
            and t not in self._explicit
        ]
        self._update_stats()

    def request_tiles(self, keys: Iterable[TileKey]) -> None:
        """Request tiles explicitly (before the view's), in this order; finished tiles are skipped."""
        keys = [self.grid.check_tile(k) for k in keys]
        with self._cv:
            for k in keys:
                if k != self._running and self.store.tile_status(k) < STATUS_PIXELS:
                    self._explicit[k] = None
            self._view_queue = [t for t in self._view_queue if t not in self._explicit]
            self._update_stats()
            self._cv.notify_all()

    def write_labels(self, y0: int, x0: int, labels, *, where=None) -> list[TileKey]:
        """Paint class ids into the canvas mask (latent pixels, see :meth:`CanvasStore.write_labels`). Returns
        the tiles whose labels changed.

        Where those tiles show tissue, the edit is repainted locally (``local_repaint``): only the changed
        latents and :data:`REPAINT_MARGIN` around them are sampled again, with the rest of the canvas as fixed
        context, before any tile request; the old tissue stays until the new lands (no placeholder), and
        edits that come before it coalesce. An edit that puts a repaint's labels back (napari's undo, and
        then redo) gets that repaint's old latents back instead of a new sample (:class:`_Repainted`). Tiles
        without tissue yet, and edits of more than :data:`REPAINT_MAX_SHARE` of a tile, invalidate the tile
        whole."""
        shape = np.shape(labels)
        around = Rect(int(y0), int(y0) + shape[0], int(x0), int(x0) + shape[1]).grow(self.repaint_margin)
        around = around.intersect(self._latent_bounds())
        old = self.store.read_labels(around) if self.local_repaint and not around.empty else None
        changed, diff = self.store.edit_label_cells(y0, x0, labels, where=where)
        if changed.empty:
            return []
        tiles = self.grid.tiles_changed(changed, diff)
        if not self.local_repaint:
            self.invalidate_tiles(tiles)
            return tiles
        local, whole = self._repaint_areas(changed, diff, tiles)
        self.invalidate_tiles(whole)
        if local:
            with self._cv:
                for key, cells in local.items():
                    record = self._undone(key, cells)
                    if record is not None:  # the labels are back as they were: the tissue too
                        self._restores[key] = record
                        continue
                    queued = self._repaints.get(key)
                    tile = self.grid.tile_latent_rect(key)
                    before = self._labels_before.setdefault(
                        key, np.zeros((tile.height, tile.width), np.uint8)
                    )
                    fresh = cells if queued is None else cells & ~queued
                    part = tile.intersect(around)
                    at_tile, at_old = part.offset(-tile.y0, -tile.x0), part.offset(-around.y0, -around.x0)
                    before[at_tile.slices] = np.where(
                        fresh[at_tile.slices], old[at_old.slices], before[at_tile.slices]
                    )
                    self._repaints[key] = cells if queued is None else queued | cells
                    # a repaint of this tile is running: restart it with both edits
                    if key in self._repainting:
                        self._epoch[key] = self._epoch.get(key, 0) + 1
                self._update_stats()
                self._cv.notify_all()
        return tiles

    def _undone(self, key: TileKey, cells: np.ndarray) -> _Repainted | None:
        """The repaint record of ``key`` that this edit undoes: the same cells, the labels back to the record's
        before, the latents still the record's after (nothing repainted there since). Caller holds the lock."""
        if (
            key in self._repaints
            or key in self._repainting
            or key in self._restores
            or not self._history.get(key)
        ):
            return None
        tile = self.grid.tile_latent_rect(key)
        labels = self.store.read_labels(tile)[cells]
        latents = self.store.read_latents(tile)[:, cells]
        for record in reversed(self._history[key]):
            if (
                np.array_equal(record.cells, cells)
                and np.array_equal(record.labels_before, labels)
                and np.array_equal(record.latents_after, latents)
            ):
                return record
        return None

    def _remember(self, key: TileKey, record: _Repainted) -> None:
        # caller holds the lock
        records = self._history.setdefault(key, [])
        records.append(record)
        del records[:-REPAINT_HISTORY]

    def _forget(self, key: TileKey) -> None:
        """Drop the repaint state of a tile that is regenerated whole. Caller holds the lock."""
        for table in (self._repaints, self._labels_before, self._history, self._restores):
            table.pop(key, None)

    def _repaint_areas(self, changed: Rect, diff: np.ndarray, tiles: list[TileKey]):
        """Split an edit into tiles to regenerate whole (not generated yet, or edited over more than
        :data:`REPAINT_MAX_SHARE`) and local repaints ``{tile: cells}``: the other changed cells grown by
        :data:`REPAINT_MARGIN`, per tile with tissue (the margin may reach into a neighbour)."""
        from scipy.ndimage import binary_dilation

        m = self.repaint_margin
        region = changed.grow(m).intersect(self._latent_bounds())
        at = changed.offset(-region.y0, -region.x0)

        def grown(cells: np.ndarray) -> np.ndarray:
            out = np.zeros((region.height, region.width), bool)
            out[at.slices] = cells
            return binary_dilation(out, np.ones((2 * m + 1, 2 * m + 1), bool))

        def in_tile(area: np.ndarray, key: TileKey) -> np.ndarray:
            tr = self.grid.tile_latent_rect(key)
            part = tr.intersect(region)
            cells = np.zeros((tr.height, tr.width), bool)
            if not part.empty:
                cells[part.offset(-tr.y0, -tr.x0).slices] = area[part.offset(-region.y0, -region.x0).slices]
            return cells

        dirty = grown(diff)
        whole = []
        for t in tiles:
            queued = self._repaints.get(t)
            cells = in_tile(dirty, t) | (False if queued is None else queued)
            if self.store.tile_status(t) < STATUS_PIXELS or cells.mean() > REPAINT_MAX_SHARE:
                whole.append(t)
        if whole:  # their changed cells are regenerated with them: no margin from there into the neighbours
            keep = diff.copy()
            for t in whole:
                tr = self.grid.tile_latent_rect(t).intersect(changed).offset(-changed.y0, -changed.x0)
                keep[tr.slices] = False
            dirty = grown(keep)
        local = {}
        for t in self.grid.tiles_in_rect(self.grid.latent_to_px(region)):
            if t in whole or self.store.tile_status(t) < STATUS_PIXELS:
                continue  # a tile not generated yet reads the new labels when it is
            cells = in_tile(dirty, t)
            if cells.any():
                local[t] = cells
        return local, whole

    def pending(self) -> list[TileKey]:
        """The waiting requests in the order they will run (tiles waiting for a local repaint first)."""
        with self._cv:
            return (
                list(self._repaints)
                + list(self._explicit)
                + [t for t in self._view_queue if t not in self._explicit]
            )

    def invalidate(self, rect_px) -> list[TileKey]:
        """The mask changed over ``rect_px`` (level-0 px): the tiles under it lose their latents and pixels
        (status 0; placeholders show there), a running one of them is abandoned, and those in the current
        view are requested again. Their neighbours keep their latents; their borders are decoded again when
        the regenerated tiles land. Returns the invalidated tiles."""
        return self.invalidate_tiles(self.grid.tiles_in_rect(rect_px), around=rect_px)

    def invalidate_tiles(self, tiles: list[TileKey], *, around=None) -> list[TileKey]:
        """:meth:`invalidate` for these tiles (e.g. exactly those an edit changed). With no view, they are
        requested nearest the centre of ``around`` (level-0 px; default: of the tiles) first."""
        tiles = [self.grid.check_tile(t) for t in tiles]
        if not tiles:
            return []
        with self._cv:
            for t in tiles:
                self._epoch[t] = self._epoch.get(t, 0) + 1
                self._forget(t)  # regenerated whole
            self.store.set_status(tiles, STATUS_EMPTY)
            if self._view is None:  # nothing on screen: request them (a bounded number, centre first)
                if around is None:
                    around = functools.reduce(Rect.union, map(self.grid.tile_rect, tiles))
                for k in self.grid.centre_first(tiles, around)[: self.max_view_tiles]:
                    self._explicit[k] = None
            self._refresh_view()
            self._cv.notify_all()
        return tiles

    def reroll(self, tiles, new_seed: int | None = None) -> list[TileKey]:
        """Generate tile(s) again with a new seed (``None``: the tile's current seed + 1), keeping the mask
        and the neighbours as context. ``tiles``: a key or an iterable of keys. They are requested first."""
        keys = (
            [tiles]
            if (isinstance(tiles, tuple) and len(tiles) == 2 and not isinstance(tiles[0], tuple))
            else list(tiles)
        )
        keys = [self.grid.check_tile(k) for k in keys]
        with self._cv:
            for k in keys:
                seed = self.store.tile_seed(k) + 1 if new_seed is None else int(new_seed)
                self.store.set_tile_seed(k, seed)
                self._epoch[k] = self._epoch.get(k, 0) + 1
                self._forget(k)
            self.store.set_status(keys, STATUS_EMPTY)
            for k in keys:
                self._explicit.pop(k, None)
                self._explicit[k] = None
            self._view_queue = [t for t in self._view_queue if t not in self._explicit]
            self._update_stats()
            self._cv.notify_all()
        return keys

    def _pop(self) -> tuple[TileKey, dict | None, _Repainted | None] | None:
        """The next job: ``(tile, {tile: cells}, record)`` to put a repaint's old latents back (undo / redo);
        ``(tile, {tile: cells, neighbour: cells...}, None)`` for a local repaint (small edits go first; an edit
        across tile borders is repainted in one window); ``(tile, None, None)`` for a tile to generate."""
        with self._cv:
            if self._restores:
                k = next(iter(self._restores))
                return k, {k: self._restores[k].cells}, self._restores.pop(k)
            if self._repaints:
                k = next(iter(self._repaints))
                group = {k: self._repaints.pop(k)}
                box = self._cells_box(k, group[k])
                for n in self.grid.neighbours(k):
                    if (
                        n in self._repaints
                    ):  # the same edit across a tile border: one window, if it stays small
                        joined = box.union(self._cells_box(n, self._repaints[n]))
                        if max(joined.height, joined.width) <= self.grid.latent_tile:
                            group[n], box = self._repaints.pop(n), joined
                return k, group, None
            if self._explicit:
                k = next(iter(self._explicit))
                del self._explicit[k]
                return k, None, None
            if self._view_queue:
                return self._view_queue.pop(0), None, None
            return None

    def _cells_box(self, key: TileKey, cells: np.ndarray) -> Rect:
        """The latent bounding rectangle of tile ``key``'s ``cells``."""
        tile = self.grid.tile_latent_rect(key)
        ys, xs = np.nonzero(cells)
        return Rect(
            tile.y0 + int(ys.min()),
            tile.y0 + int(ys.max()) + 1,
            tile.x0 + int(xs.min()),
            tile.x0 + int(xs.max()) + 1,
        )

    def _has_work(self) -> bool:
        # caller holds self._cv
        return bool(self._restores or self._repaints or self._explicit or self._view_queue)

    # ------------------------------------------------------------------ running
    def run_next(self) -> TileKey | None:
        """Generate the top-priority requested tile now, on this thread. Returns its key, or ``None`` when
        nothing is requested or the tile was abandoned (invalidated, cancelled)."""
        with self._gen_lock:
            with self._cv:
                job = self._pop()
                if job is None:
                    return None
                key, group, record = job
                self._running = key
                self._repainting = set(group or ())
                epoch = self._epoch.get(key, 0)
                epochs = {k: self._epoch.get(k, 0) for k in group or ()}
                cancel_gen = self._cancel_gen
                self._update_stats(current=key, current_fraction=0.0)
            self._emit_progress(force=True)
            t0 = time.perf_counter()
            finished = False
            try:
                if group is None:
                    self._generate(key, epoch, cancel_gen)
                elif record is not None:
                    self._restore(key, record, epoch, cancel_gen)
                else:
                    self._repaint(group, epochs, cancel_gen)
                finished = True
            except Cancelled:
                log.debug("tile %s abandoned", key)
                with self._cv:
                    for k, cells in (group or {}).items():
                        # a repaint interrupted by another edit, a cancel or a stop: its cells are repainted later
                        # (unless the tile is regenerated whole meanwhile)
                        if self.store.tile_status(k) == STATUS_PIXELS:
                            queued = self._repaints.get(k)
                            self._repaints[k] = cells if queued is None else queued | cells
                    regenerate = group is None or self.store.tile_status(key) < STATUS_PIXELS
                    if (
                        regenerate
                        and self._epoch.get(key, 0) != epoch
                        and self._cancel_gen == cancel_gen
                        and not self._stop
                    ):
                        # invalidated while running: it is wanted again, with the new mask
                        self._running = None
                        if self._view is None or key not in self.grid.tiles_in_rect(self._view):
                            self._explicit.setdefault(key, None)
                        self._refresh_view()
            except Exception as exc:  # a failing tile must not kill the worker
                log.exception("generating tile %s failed", key)
                with self._cv:
                    self._stats = replace(self._stats, errors=self._stats.errors + 1)
                for fn in list(self._error_callbacks):
                    try:
                        fn(key, exc)
                    except Exception:
                        log.exception("error callback failed")
            finally:
                seconds = time.perf_counter() - t0
                with self._cv:
                    self._running = None
                    self._repainting = set()
                    self._busy_seconds += seconds
                    if finished and group is not None:
                        self._stats = replace(
                            self._stats,
                            repaints_done=self._stats.repaints_done + 1,
                            repainted_latents=self._stats.repainted_latents
                            + sum(int(c.sum()) for c in group.values()),
                        )
                    elif finished:
                        done = self._stats.tiles_done + 1
                        self._stats = replace(
                            self._stats,
                            tiles_done=done,
                            last_tile_seconds=seconds,
                            tiles_per_second=done / max(self._busy_seconds, 1e-9),
                        )
                    self._update_stats(current=None, current_fraction=0.0)
                    self._cv.notify_all()
            if finished:
                for k in group or [key]:
                    for fn in list(self._tile_done_callbacks):
                        try:
                            fn(k)
                        except Exception:
                            log.exception("on_tile_done callback failed")
            self._emit_progress(force=True)
            return key if finished else None

    def run_until_idle(self, max_tiles: int | None = None) -> list[TileKey]:
        """Run requests on this thread until none is left (or ``max_tiles`` ran); returns the finished tiles."""
        done: list[TileKey] = []
        while max_tiles is None or len(done) < max_tiles:
            with self._cv:
                if not self._has_work():
                    break
            key = self.run_next()
            if key is not None:
                done.append(key)
        return done

    def _should_abort(self, key: TileKey, epoch: int, cancel_gen: int) -> bool:
        with self._cv:
            while self._paused and not self._stop and self._cancel_gen == cancel_gen:
                self._update_stats()
                self._cv.wait(0.5)
            return self._stop or self._cancel_gen != cancel_gen or self._epoch.get(key, 0) != epoch

    def _commit_status(self, key: TileKey, epoch: int, cancel_gen: int, status: int, write=None) -> None:
        """Run ``write()`` then set the status, unless the tile was invalidated or cancelled meanwhile."""
        with self._cv:
            if self._epoch.get(key, 0) != epoch or self._cancel_gen != cancel_gen:
                raise Cancelled()
            if write is not None:
                write()
            self.store.set_status(key, status)

    # ------------------------------------------------------------------ one tile
    def _neighbour_status(self, key: TileKey) -> tuple[Rect, np.ndarray]:
        i, j = key
        rows, cols = self.grid.tiles_shape
        tr = Rect(max(0, i - 1), min(rows, i + 2), max(0, j - 1), min(cols, j + 2))
        return tr, self.store.read_status(tr)

    def _present_mask(
        self,
        window: Rect,
        tr: Rect,
        status: np.ndarray,
        centre: TileKey | None,
        minimum: int = STATUS_LATENTS,
    ) -> torch.Tensor:
        """bool (h, w) over latent ``window``: latents of tiles with status >= ``minimum`` (and ``centre``)."""
        mask = torch.zeros(window.height, window.width, dtype=torch.bool)
        for a in range(tr.y0, tr.y1):
            for b in range(tr.x0, tr.x1):
                if (a, b) == centre or status[a - tr.y0, b - tr.x0] >= minimum:
                    r = self.grid.tile_latent_rect((a, b)).intersect(window)
                    if not r.empty:
                        mask[r.y0 - window.y0 : r.y1 - window.y0, r.x0 - window.x0 : r.x1 - window.x0] = True
        return mask

    def _latent_bounds(self) -> Rect:
        lh, lw = self.grid.latent_shape
        return Rect(0, lh, 0, lw)

    def _sample(self, key: TileKey, epoch: int, cancel_gen: int) -> None:
        tile = self.grid.tile_latent_rect(key)
        window = tile.grow(self.options.halo).intersect(self._latent_bounds())
        tr, status = self._neighbour_status(key)
        latents = torch.from_numpy(self.store.read_latents(window))
        done = self._present_mask(window, tr, status, centre=None)
        done[tile.y0 - window.y0 : tile.y1 - window.y0, tile.x0 - window.x0 : tile.x1 - window.x0] = False
        labels = torch.from_numpy(self.store.read_labels(window).astype(np.int64))
        block = Block(
            key[0], key[1], tile.y0 - window.y0, tile.x0 - window.x0, tile.y1 - window.y0, tile.x1 - window.x0
        )

        generate_block(
            self.stepper,
            latents,
            done,
            labels if labels.any() else None,
            block,
            seed=self.store.tile_seed(key),
            options=self.options,
            progress=self._running_progress,
            cancel=lambda: self._should_abort(key, epoch, cancel_gen),
            device=self.device,
        )
        out = latents[:, block.y0 : block.y1, block.x0 : block.x1].numpy()

        def write():
            self.store.write_latents(key, out)
            self.store.bump_version(key)

        self._commit_status(key, epoch, cancel_gen, STATUS_LATENTS, write)

    def _repaint(self, group: dict[TileKey, np.ndarray], epochs: dict[TileKey, int], cancel_gen: int) -> None:
        """Sample the latents at the ``group``'s cells (neighbouring tiles, one window) again, every other latent
        within :data:`REPAINT_HALO` being fixed context; decode the pixels those latents reach and update the
        pyramid above them. The seed follows the first tile's seed and version, so the same edits on the same
        canvas give the same tissue."""
        key = next(iter(group))
        with torch.no_grad():
            dirty = functools.reduce(Rect.union, (self._cells_box(k, cells) for k, cells in group.items()))
            window = dirty.grow(self.repaint_halo).intersect(self._latent_bounds())
            tr = self.grid.tile_range(self.grid.latent_to_px(window))
            present = self._present_mask(window, tr, self.store.read_status(tr), centre=key)
            redo = torch.zeros_like(present)
            for k, cells in group.items():
                part = self.grid.tile_latent_rect(k).intersect(window)
                tile = self.grid.tile_latent_rect(k)
                redo[part.offset(-window.y0, -window.x0).slices] |= torch.from_numpy(
                    cells[part.offset(-tile.y0, -tile.x0).slices]
                )
            latents = torch.from_numpy(self.store.read_latents(window))
            labels = torch.from_numpy(self.store.read_labels(window).astype(np.int64))
            seed = block_seed(self.store.tile_seed(key), key[0], key[1], self.store.tile_version(key))

            def cancel():
                return self._should_abort(key, epochs[key], cancel_gen) or any(
                    self._epoch.get(k, 0) != e for k, e in epochs.items()
                )

            out = (
                sample_region(
                    self.stepper,
                    tuple(latents.shape),
                    labels,
                    schedule=self.stepper.schedule,
                    steps=self.options.steps,
                    generator=torch.Generator().manual_seed(seed),
                    mode=self.options.mode,
                    window=self.options.window,
                    known=latents,
                    known_mask=present & ~redo,
                    progress=self._running_progress,
                    cancel=cancel,
                    device=self.device,
                )
                .cpu()
                .numpy()
            )
            with self._cv:  # all the group's latents, or none
                if self._cancel_gen != cancel_gen or any(
                    self._epoch.get(k, 0) != e for k, e in epochs.items()
                ):
                    raise Cancelled()
                for k, cells in group.items():
                    tile = self.grid.tile_latent_rect(k)
                    tile_latents = self.store.read_latents(tile)
                    latents_before = tile_latents[:, cells]
                    part = tile.intersect(window)
                    in_tile, in_window = part.offset(-tile.y0, -tile.x0), part.offset(-window.y0, -window.x0)
                    where = cells[in_tile.slices]
                    tile_latents[:, in_tile.y0 : in_tile.y1, in_tile.x0 : in_tile.x1][:, where] = out[
                        :, in_window.y0 : in_window.y1, in_window.x0 : in_window.x1
                    ][:, where]
                    self.store.write_latents(k, tile_latents)
                    self.store.bump_version(k)
                    before = self._labels_before.pop(k, None)
                    if before is not None:
                        labels_after = self.store.read_labels(tile)[cells]
                        self._remember(
                            k,
                            _Repainted(
                                cells, before[cells], labels_after, latents_before, tile_latents[:, cells]
                            ),
                        )
            # not abandoned from here on: the latents are written, so the pixels must follow them
            self._decode_around(dirty)

    def _restore(self, key: TileKey, record: _Repainted, epoch: int, cancel_gen: int) -> None:
        """Put the latents from before ``record``'s repaint back at its cells (an undo, or a redo) and decode
        what they reach; the inverse record is kept for the next undo or redo."""
        with torch.no_grad():
            tile = self.grid.tile_latent_rect(key)
            with self._cv:
                if self._epoch.get(key, 0) != epoch or self._cancel_gen != cancel_gen:
                    # another edit came first: repaint these cells instead
                    queued = self._repaints.get(key)
                    self._repaints[key] = record.cells if queued is None else queued | record.cells
                    raise Cancelled()
                tile_latents = self.store.read_latents(tile)
                tile_latents[:, record.cells] = record.latents_before
                self.store.write_latents(key, tile_latents)
                self.store.bump_version(key)
                self._remember(key, record.inverse())
            self._decode_around(self._cells_box(key, record.cells))

    def _running_progress(self, done: int, total: int) -> None:
        """The sampling progress of the running job (worker thread)."""
        with self._cv:
            self._update_stats(current_fraction=done / max(total, 1))
        self._emit_progress()

    def _decode_around(self, dirty: Rect, also: TileKey | None = None) -> int:
        """Decode the pixels that latents in ``dirty`` reach, in every tile with tissue and in ``also`` (a tile
        whose tissue this makes), and update the pyramid above them. Returns how many tiles other than ``also``
        were decoded again."""
        reach = dirty.grow(self.decode_reach).intersect(self._latent_bounds())
        redecoded = 0
        for k in self.grid.tiles_in_rect(self.grid.latent_to_px(reach)):
            if k == also or self.store.tile_status(k) == STATUS_PIXELS:
                part = self.grid.tile_latent_rect(k).intersect(reach)
                self.store.write_tissue(self.grid.latent_to_px(part), self._decode(k, part))
                redecoded += k != also
        self.store.update_pyramid(self.grid.latent_to_px(reach).intersect(self.grid.bounds()))
        return redecoded

    def _decode_window(self, key: TileKey) -> tuple[Rect, torch.Tensor]:
        """Latents around tile ``key`` (its decode reach), with the area of neighbours that have no latents
        filled by replicating the tile's own edge."""
        tile = self.grid.tile_latent_rect(key)
        window = tile.grow(self.decode_reach).intersect(self._latent_bounds())
        raw = torch.from_numpy(self.store.read_latents(window))
        tr, status = self._neighbour_status(key)
        present = self._present_mask(window, tr, status, centre=key)
        if not bool(present.all()):
            centre = raw[
                :, tile.y0 - window.y0 : tile.y1 - window.y0, tile.x0 - window.x0 : tile.x1 - window.x0
            ]
            pad = (tile.x0 - window.x0, window.x1 - tile.x1, tile.y0 - window.y0, window.y1 - tile.y1)
            filled = F.pad(centre[None], pad, mode="replicate")[0]
            raw = torch.where(present[None], raw, filled)
        return window, raw

    def _decode(self, key: TileKey, region: Rect) -> np.ndarray:
        """Pixels (h, w, 3) uint8 of latent ``region`` (inside tile ``key``), decoded around ``key``."""
        window, latents = self._decode_window(key)
        lat = latents[None].to(self.device)

        def read(ys: slice, xs: slice) -> torch.Tensor:
            if ys.start < window.y0 or ys.stop > window.y1 or xs.start < window.x0 or xs.stop > window.x1:
                raise AssertionError(f"decode read {ys}, {xs} outside the window {tuple(window)}")
            return lat[
                ..., ys.start - window.y0 : ys.stop - window.y0, xs.start - window.x0 : xs.stop - window.x0
            ]

        px = decode_region(
            self.model.autoencoder,
            read,
            region.y0,
            region.x0,
            region.y1,
            region.x1,
            self.store.latent_shape,
            tile=self.grid.latent_tile,
            out_device="cpu",
        )[0]
        return (px.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()

    def _generate(self, key: TileKey, epoch: int, cancel_gen: int) -> None:
        with torch.no_grad():
            if self.store.tile_status(key) < STATUS_LATENTS:
                self._sample(key, epoch, cancel_gen)
            if self._should_abort(key, epoch, cancel_gen):
                raise Cancelled()
            # the tile, and the borders of finished neighbours that were decoded without its (current) latents
            strips = self._decode_around(self.grid.tile_latent_rect(key), also=key)
            with self._cv:
                self._stats = replace(self._stats, borders_redecoded=self._stats.borders_redecoded + strips)
            self._commit_status(key, epoch, cancel_gen, STATUS_PIXELS)

    # ------------------------------------------------------------------ worker thread
    def start(self) -> None:
        """Start the worker thread (idempotent). It runs requests as they come until :meth:`stop`."""
        with self._cv:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = False
            self._thread = threading.Thread(target=self._loop, name="diffinfinite-canvas-tiles", daemon=True)
            self._thread.start()
            self._update_stats()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stop and (self._paused or not self._has_work()):
                    self._update_stats()
                    self._cv.wait()
                if self._stop:
                    self._update_stats()
                    return
            self.run_next()

    def pause(self) -> None:
        """Hold generation (within one sampling step of the running tile) until :meth:`resume`."""
        with self._cv:
            self._paused = True
            self._update_stats()
            self._cv.notify_all()
        self._emit_progress(force=True)

    def resume(self) -> None:
        with self._cv:
            self._paused = False
            self._update_stats()
            self._cv.notify_all()
        self._emit_progress(force=True)

    def cancel(self) -> None:
        """Drop every request and abandon the running tile (it stays not generated). The worker keeps running
        and takes new requests. Local repaints of edited tissue are kept: tissue must follow its mask."""
        with self._cv:
            self._cancel_gen += 1
            self._explicit.clear()
            self._view_queue = []
            self._update_stats()
            self._cv.notify_all()
        self._emit_progress(force=True)

    def stop(self, timeout: float | None = 30.0) -> None:
        """Abandon the running tile and end the worker thread (waits up to ``timeout`` s for it). Tiles still
        waiting for a local repaint lose their tissue (status 0), so that whoever generates the canvas next
        regenerates them whole instead of keeping tissue that no longer follows the mask."""
        with self._cv:
            self._stop = True
            self._cancel_gen += 1
            self._cv.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._cv:
            stale = list(self._repaints) + list(self._restores)
            if stale and not self.store.read_only:
                self.store.set_status(stale, STATUS_EMPTY)
                for key in stale:
                    self._forget(key)
            self._update_stats()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is requested or running (or ``timeout`` s passed); True if idle."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while self._has_work() or self._running is not None:
                no_worker = self._paused or self._stop or self._thread is None or not self._thread.is_alive()
                if no_worker and self._running is None:
                    return False  # nobody will run the requests
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cv.wait(remaining if remaining is not None else 0.5)
            return True

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ stats
    @property
    def stats(self) -> SchedulerStats:
        with self._cv:
            self._update_stats()
            return self._stats

    def _update_stats(self, **changes) -> None:
        # caller holds self._cv
        alive = self._thread is not None and self._thread.is_alive() and not self._stop
        state = (
            "stopped"
            if self._stop
            else "paused"
            if self._paused
            else (
                "running"
                if (alive and (self._running is not None or self._explicit or self._view_queue))
                or self._running is not None
                else "idle"
            )
        )
        queued = (
            len(self._restores)
            + len(self._repaints)
            + len(self._explicit)
            + sum(1 for t in self._view_queue if t not in self._explicit)
        )
        self._stats = replace(self._stats, state=state, tiles_queued=queued, **changes)

    def _emit_progress(self, force: bool = False) -> None:
        if not self._progress_callbacks:
            return
        now = time.monotonic()
        if not force and now - self._last_progress < 0.2:
            return
        self._last_progress = now
        stats = self.stats
        for fn in list(self._progress_callbacks):
            try:
                fn(stats)
            except Exception:
                log.exception("progress callback failed")
