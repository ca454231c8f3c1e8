"""One open canvas without a viewer: its store, the model and the scheduler that generates with it, the
generation settings, label edits with exact invalidation, re-rolls and the "unpainted areas" policy.

The napari face (:mod:`napari_diffinfinite.widgets.canvas_controller`) adds layers, the camera and timers on top,
and connects to the session's events; scripts and tests drive a session directly. Events are psygnal signals:
``tile_landed``, ``tile_failed`` and ``progressed`` are emitted on the scheduler's worker thread (a GUI marshals
them to its own thread), ``changed`` on the thread that changed the state.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import numpy as np
from psygnal import Signal

from .grid import Rect, TileKey, as_rect
from .store import STATUS_EMPTY, STATUS_PIXELS, CanvasStore, recorded_sampler

if TYPE_CHECKING:
    from .scheduler import TileScheduler

__all__ = ["MAX_MASK_SIDE", "MAX_REROLL_TILES", "UNPAINTED_MODES", "CanvasSession"]

#: Largest side (px) of a region whose mask is generated in one go.
MAX_MASK_SIDE = 8192
#: Most tiles one re-roll may regenerate.
MAX_REROLL_TILES = 256
#: What requested tiles without painted labels get: label 0, or a mask from the mask model first.
UNPAINTED_MODES = ("unlabelled", "generated")


class CanvasSession:
    """The state and behaviour of one open canvas, Qt-free (see the module docstring).

    Args:
        store: the canvas (open ``"r+"`` to paint and generate; a read-only store is shown and refuses edits).
        scheduler_options: extra :class:`~napari_diffinfinite.canvas.TileScheduler` arguments.
    """

    #: a tile reached status 2 (worker thread)
    tile_landed = Signal(object)
    #: a tile failed, with the message (worker thread)
    tile_failed = Signal(object, str)
    #: the running tile advanced (worker thread, at most every 0.2 s)
    progressed = Signal()
    #: the model, the generating state or a setting changed
    changed = Signal()

    def __init__(self, store: CanvasStore, *, scheduler_options: dict | None = None):
        self.store = store
        self.grid = store.grid
        self.scheduler: TileScheduler | None = None
        self.model = None
        self.model_spec: Any = None
        self.scheduler_options = dict(scheduler_options or {})
        self.generating = False
        #: "unlabelled" or "generated" (see :meth:`set_unpainted`); a canvas setting
        self.unpainted = str(store.settings.get("unpainted", "unlabelled"))
        self.unpainted_context = store.settings.get("context", 0)
        #: tiles whose mask the "generated" setting asked for (each once a session, so a tile the mask model
        #: left all 0, or that the user erased whole afterwards, is not filled again)
        self.auto_masked: set[TileKey] = set()

    @property
    def read_only(self) -> bool:
        return self.store.read_only

    # ------------------------------------------------------------------ model and generation
    def set_model(self, model, spec=None) -> None:
        """Generate with ``model`` from now on (a new scheduler; the running tile of the old one is abandoned).
        Raises ``ValueError`` when the model cannot continue this canvas (other latent channels, fewer classes,
        another model while tiles exist) and ``PermissionError`` for a read-only canvas."""
        from .scheduler import TileScheduler

        if self.read_only:
            raise PermissionError(
                f"the canvas {self.store.root} is open read-only (another program is writing it)"
            )
        sched = TileScheduler(
            self.store,
            model,
            on_tile_done=self.tile_landed.emit,
            allow_other_model=self._may_change_model(model),
            **self.scheduler_options,
        )
        sched.add_error_callback(lambda key, exc: self.tile_failed.emit(key, str(exc)))
        sched.add_progress_callback(lambda _stats: self.progressed.emit())
        old, self.scheduler = self.scheduler, sched
        self.model, self.model_spec = model, spec
        if old is not None:
            old.stop(timeout=10)
        source = getattr(spec, "source", None)
        if source is not None and "model_source" not in self.store.settings:
            self.store.update_settings(model_source=source)
        if self.generating:
            self.start()
        self.changed.emit()

    def _may_change_model(self, model) -> bool:
        """Whether ``model`` may continue this canvas although another model's name is recorded: only while
        no tile has been generated. Counting the tiles reads the whole status array (0.13 s for the default
        canvas), so it is done only when the names differ; opening the demo with its own model skips it."""
        if self.store.model_name in (None, getattr(model, "name", None)):
            return True
        counts = self.store.status_counts()
        return counts[STATUS_EMPTY] == sum(counts.values())

    @property
    def sampler(self) -> str | None:
        """The image sampler this canvas generates with: its recorded one (DDIM for canvases from before samplers
        were recorded), else the model's; None while neither is known."""
        return recorded_sampler(self.store.settings) or (None if self.model is None else self.model.sampler)

    def apply_settings(
        self, *, omega: float | None = None, steps: int | None = None, sampler: str | None = None
    ) -> bool:
        """Record new guidance / steps / sampler for the tiles generated from now on (tiles already made keep
        theirs); the scheduler is rebuilt if they changed. Returns whether they changed."""
        changes = {}
        s = self.store.settings
        if omega is not None and float(omega) != float(s.get("omega", 3.0)):
            changes["omega"] = float(omega)
        if steps is not None and int(steps) != int(s.get("steps") or 0):
            changes["steps"] = int(steps)
        if sampler is not None and sampler != self.sampler:
            from ..model.diffusion import check_sampler

            changes["sampler"] = check_sampler(sampler)
        if not changes or self.read_only:
            return False
        self.store.update_settings(**changes)
        if self.model is not None:
            self.set_model(self.model, self.model_spec)
        return True

    def start(self) -> None:
        """Generate what is requested (and any re-rolled or repainted tiles) in the worker thread."""
        if self.scheduler is None:
            raise RuntimeError("no model is loaded for this canvas; choose one in the DiffInfinite widget")
        self.generating = True
        self.scheduler.resume()
        self.scheduler.start()
        self.changed.emit()

    def pause(self) -> None:
        if self.scheduler is not None:
            self.scheduler.pause()
        self.changed.emit()

    def resume(self) -> None:
        if self.scheduler is not None:
            self.scheduler.resume()
        self.changed.emit()

    def cancel(self) -> None:
        """Drop every request and abandon the running tile; views are not requested until :meth:`start`."""
        self.generating = False
        if self.scheduler is not None:
            self.scheduler.cancel()
            self.scheduler.clear_view()
        self.changed.emit()

    def request_tiles(self, tiles: list[TileKey]) -> None:
        """Generate exactly ``tiles`` now (an export's missing tiles, say), whether or not the session generates
        its views; emits no event."""
        if self.scheduler is None:
            raise RuntimeError("no model is loaded for this canvas; choose one in the DiffInfinite widget")
        self.scheduler.request_tiles(tiles)
        self.scheduler.resume()
        self.scheduler.start()

    @property
    def paused(self) -> bool:
        return self.scheduler is not None and self.scheduler.stats.state == "paused"

    # ------------------------------------------------------------------ views
    def request_view(self, level: int, rect_px: Rect) -> list[TileKey] | tuple[str, list[TileKey]]:
        """Ask for the tiles of a view (pyramid ``level``, level-0 px ``rect_px``), nearest the centre first.
        With unpainted areas "generated", a view with unpainted tiles returns ``("masks", tiles)`` and
        requests nothing: those tiles need masks first (then request the view again). May wait for the worker's
        store lock: call it off the GUI thread."""
        if self.scheduler is None or not self.generating:
            return []
        if self.wants_auto_masks():
            tiles = self.unpainted_tiles(level, rect_px)
            if tiles:
                self.scheduler.clear_view()
                return ("masks", tiles)
        return self.scheduler.request_view(level, rect_px)

    def wants_auto_masks(self) -> bool:
        return (
            self.unpainted == "generated"
            and self.model is not None
            and self.model.mask_unet is not None
            and not self.read_only
        )

    def unpainted_tiles(self, level: int, rect_px: Rect) -> list[TileKey]:
        """Tiles the view would request that have no label painted at all and no tissue yet: those the
        "generated" setting fills from the mask model. None when zoomed out beyond the scheduler's request level
        (nothing is requested there), and only within ``MAX_MASK_SIDE`` px of the view's centre (one mask)."""
        sched = self.scheduler
        if sched is None or rect_px.empty or level > sched.max_request_level:
            return []
        tiles = self.grid.view_tiles(rect_px, max_tiles=sched.max_view_tiles)
        if not tiles:
            return []
        tr = self.grid.tile_range(rect_px)
        status = self.store.read_status(tr)
        lt = self.grid.latent_tile
        labels = self.store.read_labels(Rect(tr.y0 * lt, tr.y1 * lt, tr.x0 * lt, tr.x1 * lt))
        cy, cx = rect_px.centre
        half = MAX_MASK_SIDE // 2 - self.grid.tile
        out = []
        for i, j in tiles:
            if status[i - tr.y0, j - tr.x0] >= STATUS_PIXELS or (i, j) in self.auto_masked:
                continue
            r = self.grid.tile_rect((i, j))
            if max(abs(r.centre[0] - cy), abs(r.centre[1] - cx)) > half:
                continue
            a, b = (i - tr.y0) * lt, (j - tr.x0) * lt
            if not labels[a : a + lt, b : b + lt].any():
                out.append((i, j))
        return out

    def set_unpainted(self, mode: str, context=None) -> bool:
        """What requested tiles without painted labels get: ``"unlabelled"`` (label 0, the model's "no
        condition") or ``"generated"`` (a mask from the mask model for ``context`` first; painted labels are
        never overwritten). Recorded in the canvas settings. Returns whether the mode changed."""
        if mode not in UNPAINTED_MODES:
            raise ValueError(f"unpainted areas are 'unlabelled' or 'generated', not {mode!r}")
        if context is not None:
            self.unpainted_context = context
        if mode == self.unpainted:
            return False
        if mode == "generated" and self.model is not None and self.model.mask_unet is None:
            raise ValueError(
                f"the model {self.model.name!r} has no mask network; unpainted areas stay unlabelled"
            )
        self.unpainted = mode
        if not self.read_only:
            self.store.update_settings(unpainted=mode)
        self.changed.emit()
        return True

    # ------------------------------------------------------------------ edits
    def write_labels(
        self, y0: int, x0: int, labels: np.ndarray, where: np.ndarray | None = None
    ) -> list[TileKey]:
        """Write class ids at latent pixel ``(y0, x0)`` (only where ``where``) and invalidate exactly the tiles
        whose labels changed (their latents and pixels; they regenerate with their neighbours as context).
        Returns those tiles. Any thread."""
        labels = np.asarray(labels)
        lr = Rect(y0, y0 + labels.shape[0], x0, x0 + labels.shape[1])
        lh, lw = self.grid.latent_shape
        if lr.intersect(Rect(0, lh, 0, lw)) != lr:
            raise ValueError(f"labels at {tuple(lr)} reach outside the canvas")
        if self.scheduler is not None:
            return self.scheduler.write_labels(y0, x0, labels, where=where)
        tiles = self.store.edit_labels(y0, x0, labels, where=where)
        if tiles:  # no model yet: the tiles show placeholders until it comes
            self.store.set_status(tiles, STATUS_EMPTY)
        return tiles

    def reroll(self, rect_px: Rect, seed: int | None = None) -> list[TileKey]:
        """Generate the tiles under ``rect_px`` again with a new seed (random if None), the mask and the
        neighbours kept as context. Returns the tiles."""
        if self.scheduler is None:
            raise RuntimeError("load a model first: re-rolling regenerates tissue")
        tiles = self.grid.tiles_in_rect(self.grid.clip(rect_px))
        if not tiles:
            raise ValueError("nothing to re-roll: the region lies outside the canvas")
        if len(tiles) > MAX_REROLL_TILES:
            raise ValueError(
                f"the region covers {len(tiles)} tiles; re-roll at most {MAX_REROLL_TILES} at once "
                "(zoom in or draw a smaller rectangle)"
            )
        seed = random.randrange(2**31) if seed is None else int(seed)
        keys = self.scheduler.reroll(tiles, new_seed=seed)
        self.scheduler.start()
        return keys

    # ------------------------------------------------------------------ masks
    def mask_request(self, rect_px: Rect, context, seed: int) -> tuple[Rect, int, int]:
        """Check a request for a generated mask over ``rect_px``: returns the region grown to whole latent
        cells, the context id and the region's seed (the same region and canvas seed give the same mask).
        Raises with the reason and the fix."""
        from ..sampling.blocks import block_seed

        if self.model is None:
            raise RuntimeError("load a model first: masks are generated by its mask network")
        if self.model.mask_unet is None:
            raise ValueError(f"the model {self.model.name!r} has no mask network; paint the mask instead")
        if self.read_only:
            raise PermissionError(f"the canvas {self.store.root} is open read-only")
        ctx = self.model.context_id(context)
        d = self.grid.downsampling
        rect = self.grid.clip(as_rect(rect_px).scaled_out(d).scaled_in(d))
        if rect.empty:
            raise ValueError("the region lies outside the canvas")
        if max(rect.height, rect.width) > MAX_MASK_SIDE:
            raise ValueError(
                f"the region is {rect.height} x {rect.width} px; generate masks for at most "
                f"{MAX_MASK_SIDE} px a side at once (zoom in or draw a smaller rectangle)"
            )
        return rect, ctx, block_seed(int(seed), rect.y0 // self.grid.tile, rect.x0 // self.grid.tile)

    def write_mask(
        self,
        rect_px: Rect,
        mask: np.ndarray,
        *,
        overwrite: bool = False,
        only_tiles: list[TileKey] | None = None,
    ) -> tuple[Rect, list[TileKey]]:
        """Write a class mask made for ``rect_px`` (image px, from :meth:`mask_request`) as labels: only where
        nothing is painted unless ``overwrite``, and only inside ``only_tiles`` if given. Returns the latent
        rectangle written and the tiles to regenerate."""
        from ..label_grid import labels_at_cell_centres

        d = self.grid.downsampling
        lab = labels_at_cell_centres(np.asarray(mask), d).astype(np.uint8)
        r = Rect(
            rect_px.y0 // d, rect_px.y0 // d + lab.shape[0], rect_px.x0 // d, rect_px.x0 // d + lab.shape[1]
        )
        where = None if overwrite else self.store.read_labels(r) == 0
        if only_tiles is not None:
            inside = np.zeros(lab.shape, bool)
            for key in only_tiles:
                t = (
                    self.grid.tile_latent_rect(key)
                    .offset(-r.y0, -r.x0)
                    .intersect(Rect(0, r.height, 0, r.width))
                )
                inside[t.slices] = True
            where = inside if where is None else where & inside
        return r, self.write_labels(r.y0, r.x0, lab, where)

    def placement(self, labels: np.ndarray, centre_px: tuple[float, float]) -> tuple[Rect, np.ndarray]:
        """Where class ids ``labels`` (latent scale) land with their centre at level-0 pixel ``centre_px``: the
        latent rectangle, clipped to the canvas, and the part of ``labels`` inside it (uint8). Raises for labels
        this canvas does not have, and for a placement outside the canvas."""
        if self.read_only:
            raise PermissionError(f"the canvas {self.store.root} is open read-only")
        labels = np.asarray(labels)
        if labels.ndim != 2 or not labels.size:
            raise ValueError(f"a mask is a 2-D array of class ids, got shape {labels.shape}")
        if labels.max(initial=0) >= self.store.num_classes:
            raise ValueError(
                f"the mask has labels up to {int(labels.max())}; this canvas has classes "
                f"0..{self.store.num_classes - 1}"
            )
        d = self.grid.downsampling
        h, w = labels.shape
        ly, lx = round(centre_px[0] / d - h / 2), round(centre_px[1] / d - w / 2)
        lh, lw = self.grid.latent_shape
        r = Rect(ly, ly + h, lx, lx + w).intersect(Rect(0, lh, 0, lw))
        if r.empty:
            raise ValueError("the mask would lie outside the canvas; pan into the canvas first")
        block = np.ascontiguousarray(labels[r.y0 - ly : r.y1 - ly, r.x0 - lx : r.x1 - lx].astype(np.uint8))
        return r, block

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        """Abandon the running tile and end the scheduler's worker thread (the session can be closed after)."""
        self.generating = False
        if self.scheduler is not None:
            self.scheduler.stop(timeout=10)

    def close(self) -> None:
        """Stop generating and release the store's writer lock."""
        self.stop()
        self.store.close()
        self.changed.emit()
