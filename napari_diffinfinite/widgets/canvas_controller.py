"""The napari face of a canvas: layers over a :class:`~napari_diffinfinite.canvas.CanvasStore`, camera and
paint events turned into requests and edits of its :class:`~napari_diffinfinite.canvas.session.CanvasSession`
(the Qt-free model, settings, edits and re-rolls), tiles landing turned into layer refreshes.

:class:`CanvasController` owns, for one viewer:

- the **tissue layer**: a multiscale RGB Image over ``store.tissue_levels()``, ``scale`` = um per px. It only
  reads the store (placeholders where tiles are missing); it is refreshed on the GUI thread when tiles that
  are in view land, at most every ``refresh_ms``.
- the **mask layer**: a bounded Labels window (``window`` latents a side, one label per 8 image px) backed by
  the store's mask and re-anchored as the user pans (the window is written back first). Any change of the
  window - paint, fill, erase, undo, redo, a script - is found by comparing it with a shadow copy of what the
  store holds; the changed labels are written to the store and exactly the tiles whose labels changed are
  invalidated (they regenerate with their neighbours as context).
- the **scheduler** (:class:`~napari_diffinfinite.canvas.TileScheduler`, one worker thread): camera changes are
  debounced (``debounce_ms``) and become ``request_view(level, rect)``; ``on_tile_done`` runs on the worker
  thread and is marshalled to the GUI thread with a queued Qt signal.

Masks: besides painting, :meth:`CanvasController.generate_masks` (the mask model over the selection or the view),
:meth:`CanvasController.load_mask_file` (a label image or a QuPath GeoJSON placed at the view's centre) and the
"unpainted areas" setting (:meth:`CanvasController.set_unpainted`: with ``"generated"``, view tiles with no label
painted get a mask from the mask model before they are requested; not at coarse zoom, where nothing is
requested and the layer shows the mask's placeholder colours) all write through the same label path as a paint
stroke, so exactly the tiles whose labels changed regenerate.

Nothing here runs a model on the GUI thread: sampling runs on the scheduler's thread, mask generation, model
loading and exports in superqt workers. Store I/O that follows the user's actions runs on one I/O thread too:
label writes (and the invalidations they cause), and the read of the visible region before a refresh - napari
then slices from that prefetched copy (the view plus a margin, so short pans are served from memory too), and a
refresh costs the GUI thread little more than the texture upload and never waits for the worker's store lock. Qt is reached through qtpy and superqt only.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal

from ..canvas.grid import Rect, TileKey, as_rect
from ..canvas.prefetch import PrefetchLevel
from ..canvas.session import CanvasSession
from ..canvas.store import CanvasLockedError, CanvasStore
from .activity import ActivityBar
from .canvas_layers import (
    META_KEY,
    canvas_meta,
    labels_layer_kwargs,
    read_window,
    tissue_layer_kwargs,
)
from .canvas_models import ModelSpec, get_model, model_error_message
from .canvas_view import (
    DEFAULT_WINDOW,
    CanvasView,
    camera_for_rect,
    changed_bbox,
    labels_translate,
    needs_reanchor,
    rect_from_vertices,
    view_from_camera,
    window_anchor,
    window_rect,
)
from .opening import find_canvas_layers
from .registry import (
    CanvasRegistry,
    canvas_registry,
    close_all_controllers,
    controller_for,
    disconnect,
    notify,
    register,
    unregister,
    unwrap_viewer,
)

if TYPE_CHECKING:
    import napari

__all__ = [
    "SELECTION_NAME",
    "CanvasController",
    "CanvasRegistry",
    "canvas_registry",
    "close_all_controllers",
    "controller_for",
    "disconnect",
    "load_model_in_thread",
    "notify",
    "open_canvas",
    "open_store",
]

log = logging.getLogger(__name__)
#: Delay (ms) of the activity dock behind the state it shows (see CanvasController._schedule_activity).
ACTIVITY_MS = 50
#: Delay (ms) of a deferred model load: after napari's first paint of new layers (importing torch holds the GIL
#: up to 0.2 s at a time, which would add to that paint's freeze).
LOAD_DELAY_MS = 300

SELECTION_NAME = "DiffInfinite selection"


def _camera(viewer):
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def load_model_in_thread(spec: ModelSpec | str | None, on_done: Callable, on_error: Callable):
    """Load (or take from the cache) a model in a superqt worker; ``on_done(model)`` / ``on_error(exc)`` run on
    the GUI thread. Returns the worker (already started)."""
    from superqt.utils import create_worker

    worker = create_worker(get_model, spec, _start_thread=False, _ignore_errors=True)
    worker.returned.connect(on_done)
    worker.errored.connect(on_error)
    worker.start()
    return worker


class CanvasController(QObject):
    """Layers, events and the scheduler of one canvas in one viewer (see the module docstring).

    Args:
        viewer: the napari viewer.
        store: the canvas (open ``"r+"`` to paint and generate; a read-only store shows it and refuses edits).
        model: a loaded model, or None (paint only; :meth:`set_model` later).
        tissue_layer, labels_layer: existing layers to drive (from the reader or the demo sample); added if None.
        window: Labels window side in latent pixels (default 2048 = 16,384 image px).
        debounce_ms: camera debounce. refresh_ms: at most one tissue refresh per this. sync_ms: label edits are
            written to the store this long after the last edit event.
        scheduler_options: extra :class:`TileScheduler` arguments (``max_view_tiles``, ``max_request_level``...).
    """

    #: a tile reached status 2 (emitted on the worker thread, delivered on the GUI thread)
    tile_landed = Signal(object)
    _tile_failed = Signal(object, str)
    _prefetched = Signal()
    _labels_written = Signal(object)
    _view_requested = Signal(object)
    _mask_placed = Signal(object, object)
    #: anything a widget shows changed: the model or its loading, the generating state, tile progress (at most
    #: every 0.2 s while a tile samples), export progress. Widgets refresh on it instead of polling.
    state_changed = Signal()
    _progressed = Signal()  # emitted on worker threads; re-emitted as state_changed on the GUI thread
    _export_changed = Signal()  # the export job moved (any thread)

    def __init__(
        self,
        viewer: napari.Viewer,
        store: CanvasStore,
        *,
        model=None,
        tissue_layer=None,
        labels_layer=None,
        window: int = DEFAULT_WINDOW,
        debounce_ms: int = 100,
        refresh_ms: int = 250,
        sync_ms: int = 60,
        scheduler_options: dict | None = None,
    ):
        super().__init__()
        viewer = unwrap_viewer(viewer)
        self.viewer = viewer
        self.store = store
        self.grid = store.grid
        self.pixel_size = store.pixel_size_um
        self.window = int(window)
        #: the Qt-free state and behaviour of the canvas; this object adds layers, camera and timers
        self.session = CanvasSession(store, scheduler_options=scheduler_options)
        self.loading_model = False  # a load_model() worker is on its way
        self._loading_spec: ModelSpec | None = None
        #: napari's activity dock: one bar per kind of work while it runs
        self.activity = {kind: ActivityBar("tile") for kind in ("model", "tiles", "mask", "export")}
        self._tiles_base = 0  # tiles_done when the current "generating tiles" bar opened
        self._activity_busy = self._activity_again = False
        self.closed = False
        #: level-0 tiles invalidated by the last label write; all tiles landed so far (GUI thread)
        self.last_invalidated: list[TileKey] = []
        self.landed: list[TileKey] = []
        self.refreshes = 0
        self.last_view: CanvasView | None = None
        self.last_requested: list[TileKey] = []
        self._ignore_labels = 0
        self._workers: list = []
        self._mask_state = "idle"
        self._auto_mask_warned = False
        #: the last mask read from a file and where it was placed (latent rect), after it was written
        self.loaded_mask = None
        self.loaded_mask_rect: Rect | None = None
        self.loaded_mask_tiles: list[TileKey] = []
        #: the last export (:class:`~napari_diffinfinite.io.canvas_export.CanvasExportJob`), None before the first
        self.export_job = None
        self._export_on_done: Callable | None = None
        self._reported_export = None
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diffinfinite-canvas-io")
        self._prefetching = False
        self._refresh_again = False

        # layers -------------------------------------------------------------------------------------------
        levels = [PrefetchLevel(level) for level in store.tissue_levels()]
        if tissue_layer is None:
            tissue_layer = viewer.add_image(levels, **tissue_layer_kwargs(store))
            if labels_layer is not None:  # shown first (the demo's mask window): the tissue goes under it
                layers = viewer.layers
                layers.move(layers.index(tissue_layer), layers.index(labels_layer))
                layers.selection.active = labels_layer  # the brush stays ready
        else:
            tissue_layer.data = levels  # read through this (writable) store: no status TTL
        self.tissue_layer = tissue_layer
        if labels_layer is None:
            anchor = window_anchor(self.current_view().rect, self.grid, self.window)
            labels_layer = viewer.add_labels(
                read_window(store, anchor, self.window), **labels_layer_kwargs(store, anchor, self.window)
            )
            labels_layer.selected_label = 1
        else:
            meta = canvas_meta(labels_layer) or {}
            anchor = tuple(
                meta.get("anchor", window_anchor(self.current_view().rect, self.grid, self.window))
            )
            win = window_rect(anchor, self.grid, self.window)
            if tuple(labels_layer.data.shape) != (win.height, win.width):
                raise ValueError("the mask layer does not match its canvas window; reopen the canvas")
            held = read_window(store, anchor, self.window)
            if not np.array_equal(held, labels_layer.data):  # a window shown before the store was open
                labels_layer.data = held
        self.labels_layer = labels_layer
        self.anchor: tuple[int, int] = (int(anchor[0]), int(anchor[1]))
        self._shadow = np.array(labels_layer.data, dtype=np.uint8, copy=True)
        if store.read_only:
            labels_layer.editable = False

        # timers (GUI thread) -----------------------------------------------------------------------------------
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(int(debounce_ms))
        self._debounce.timeout.connect(self._guarded(lambda: self.update_view(wait=False)))
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(int(refresh_ms))
        self._refresh_timer.timeout.connect(self._guarded(self._refresh_tissue))
        self._sync_timer = QTimer(self)
        self._sync_timer.setSingleShot(True)
        self._sync_timer.setInterval(int(sync_ms))
        self._sync_timer.timeout.connect(self._guarded(self.sync_labels))
        # the activity dock follows state_changed in a turn of its own: napari builds a bar's widget on the
        # spot (0.35 s for the first), which must not add to the freeze of whatever changed the state
        self._activity_timer = QTimer(self)
        self._activity_timer.setSingleShot(True)
        self._activity_timer.setInterval(ACTIVITY_MS)
        self._activity_timer.timeout.connect(self._guarded(self._show_activity))
        self.tile_landed.connect(self._on_tile_landed)
        self._tile_failed.connect(self._on_tile_failed)
        self._prefetched.connect(self._on_prefetched)
        self._labels_written.connect(self._on_labels_written)
        self._view_requested.connect(self._on_view_requested)
        self._progressed.connect(self.state_changed.emit)
        self._export_changed.connect(self._on_export_changed)
        self._mask_placed.connect(self._on_mask_placed)
        self.state_changed.connect(self._schedule_activity)
        # the session's worker-thread events cross to the GUI thread through queued Qt signals
        # (lambdas: psygnal keeps weak references to bound methods, and a bound Qt signal is a temporary)
        self.session.tile_landed.connect(lambda key: self.tile_landed.emit(key))
        self.session.tile_failed.connect(lambda key, message: self._tile_failed.emit(key, message))
        self.session.progressed.connect(lambda: self._progressed.emit())
        self.session.changed.connect(lambda: self.state_changed.emit())

        # napari events -------------------------------------------------------------------------------------
        cam = _camera(viewer)
        self._connections = [
            (cam.events.center, self._on_camera),
            (cam.events.zoom, self._on_camera),
            (viewer.canvas.events.size, self._on_camera),
            (labels_layer.events.paint, self._on_labels_event),
            (labels_layer.events.labels_update, self._on_labels_event),
            (labels_layer.events.set_data, self._on_labels_event),
            (viewer.layers.events.removed, self._on_layer_removed),
        ]
        for emitter, fn in self._connections:
            emitter.connect(fn)

        register(self)
        if model is not None:
            self.set_model(model)

    # ------------------------------------------------------------------ helpers
    def _guarded(self, fn):
        """``fn`` for a Qt slot or napari callback: an exception becomes a notification, not a traceback."""

        def call(*args, **kwargs):
            if self.closed:
                return None
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                log.exception("%s failed", getattr(fn, "__name__", fn))
                notify(f"DiffInfinite: {exc}")
                return None

        return call

    @contextlib.contextmanager
    def _labels_quiet(self):
        """Edits of the Labels window made here are not edits of the user."""
        self._ignore_labels += 1
        try:
            yield
        finally:
            self._ignore_labels -= 1

    @property
    def read_only(self) -> bool:
        return self.store.read_only

    @property
    def folder(self) -> Path:
        return Path(self.store.root)

    # ------------------------------------------------------------------ model / scheduler (the session's)
    scheduler = property(
        lambda self: self.session.scheduler, doc="the session's tile scheduler (None: no model)"
    )
    model = property(lambda self: self.session.model, doc="the model tiles are generated with")
    model_spec = property(lambda self: self.session.model_spec, doc="where the model came from")
    generating = property(lambda self: self.session.generating, doc="whether the view's tiles are requested")
    sampler = property(lambda self: self.session.sampler, doc=CanvasSession.sampler.__doc__)
    paused = property(lambda self: self.session.paused)
    unpainted = property(lambda self: self.session.unpainted, doc="'unlabelled' or 'generated'")
    auto_masked = property(lambda self: self.session.auto_masked)
    scheduler_options = property(lambda self: self.session.scheduler_options, doc="for the next scheduler")

    def set_model(self, model, spec: ModelSpec | None = None) -> None:
        """:meth:`CanvasSession.set_model`, and the view is requested if generating."""
        self.session.set_model(model, spec)
        if self.generating:
            self.update_view()

    def apply_settings(
        self, *, omega: float | None = None, steps: int | None = None, sampler: str | None = None
    ) -> bool:
        """:meth:`CanvasSession.apply_settings`."""
        changed = self.session.apply_settings(omega=omega, steps=steps, sampler=sampler)
        if changed and self.generating:
            self.update_view()
        return changed

    def start(self) -> None:
        """Generate the view (and any re-rolled or repainted tiles) in the worker thread."""
        self.session.start()
        self.update_view()

    def pause(self) -> None:
        self.session.pause()

    def resume(self) -> None:
        self.session.resume()

    def cancel(self) -> None:
        """Drop every request and abandon the running tile; panning no longer requests tiles until
        :meth:`start` again."""
        self.session.cancel()

    # ------------------------------------------------------------------ view
    def current_view(self) -> CanvasView:
        cam = _camera(self.viewer)
        return view_from_camera(cam.center, cam.zoom, self.viewer.canvas.size, self.pixel_size, self.grid)

    def set_camera(self, centre_px: tuple[float, float], zoom: float | None = None) -> None:
        """Centre the camera on level-0 pixel ``centre_px``; ``zoom`` in screen px per image px (1 = 1:1)."""
        cam = _camera(self.viewer)
        cy, cx = centre_px
        wy, wx = camera_for_rect((cy, cy + 1, cx, cx + 1), self.pixel_size)
        cam.center = (wy, wx)
        if zoom is not None:
            cam.zoom = float(zoom) / self.pixel_size
        self.update_view()

    def _on_camera(self, event=None) -> None:
        if not self.closed:
            self._debounce.start()

    def update_view(self, wait: bool = True) -> CanvasView:
        """Re-anchor the Labels window if the view left it, and request the view's tiles (when generating) on
        the I/O thread (the request reads the tiles' status, which may wait for the worker's store lock); with
        ``wait`` the requested tiles are in :attr:`last_requested` on return, else when they arrive."""
        view = self.current_view()
        self.last_view = view
        self._maybe_reanchor(view.rect)
        self._prefetch_view()
        if self.scheduler is not None and self.generating:
            future = self._io.submit(self.session.request_view, view.level, view.rect)
            if wait:
                self._handle_view_request(future.result())
            else:
                future.add_done_callback(self._view_requested.emit)
        return view

    def unpainted_tiles(self, view: CanvasView | None = None) -> list[TileKey]:
        """:meth:`CanvasSession.unpainted_tiles` of ``view`` (default: the current one)."""
        view = view or self.current_view()
        return self.session.unpainted_tiles(view.level, view.rect)

    def set_unpainted(self, mode: str, context=None) -> None:
        """:meth:`CanvasSession.set_unpainted`; the view is requested again."""
        if self.session.set_unpainted(mode, context):
            self._auto_mask_warned = False
            if self.generating:
                self.update_view(wait=False)

    def _handle_view_request(self, result) -> None:
        # GUI thread
        if isinstance(result, tuple) and result and result[0] == "masks":
            self.last_requested = []
            self._auto_masks(result[1])
        else:
            self.last_requested = result

    def _auto_masks(self, tiles: list[TileKey]) -> None:
        if self.mask_state == "running":
            return  # the running generation requests the view again when it is done
        t = self.grid.tile
        ys, xs = [k[0] for k in tiles], [k[1] for k in tiles]
        rect = self.grid.clip(Rect(min(ys) * t, (max(ys) + 1) * t, min(xs) * t, (max(xs) + 1) * t))

        def done(written):
            self.auto_masked.update(tiles)
            if self.generating and not self.closed:
                self.update_view(wait=False)

        try:
            self.generate_masks(
                rect,
                context=self.session.unpainted_context,
                seed=self.store.canvas_seed,
                only_tiles=tiles,
                on_done=done,
            )
        except Exception as exc:  # noqa: BLE001 - a notification, and the view goes on unlabelled
            if not self._auto_mask_warned:
                notify(
                    f"DiffInfinite: unpainted areas cannot get generated masks ({exc}); they stay unlabelled",
                    "warning",
                )
            self._auto_mask_warned = True
            self.session.unpainted = "unlabelled"
            self.update_view(wait=False)

    def _prefetch_view(self) -> None:
        """Read the region around the view ahead (I/O thread), so that short pans are served from memory."""
        data = self.tissue_layer.data_raw
        level = data[min(self.tissue_layer.data_level, len(data) - 1)]
        if not isinstance(level, PrefetchLevel) or level.last_rect is None or self._prefetching:
            return
        r, held = level.last_rect, level.region
        # read again when the view came within a quarter of its size of the held region's border
        want = r.grow(max(r.height, r.width) // 4).intersect(Rect(0, level.shape[0], 0, level.shape[1]))
        if held is None or want.intersect(held) != want:
            self._io.submit(level.prefetch)

    def _on_view_requested(self, future: Future) -> None:
        try:
            self._handle_view_request(future.result())
        except Exception as exc:
            log.exception("requesting the view failed")
            notify(f"DiffInfinite: {exc}", "warning")

    def _maybe_reanchor(self, rect_px) -> bool:
        if not needs_reanchor(rect_px, self.anchor, self.grid, self.window):
            return False
        self.reanchor(window_anchor(rect_px, self.grid, self.window))
        return True

    def reanchor(self, anchor: tuple[int, int]) -> None:
        """Move the Labels window to latent pixel ``anchor`` (edits are written back first; the layer's undo
        history is reset, since it refers to the old window)."""
        self.sync_labels(wait=True)
        anchor = (int(anchor[0]), int(anchor[1]))
        data = read_window(self.store, anchor, self.window)
        layer = self.labels_layer
        mode = layer.mode
        with self._labels_quiet():
            layer.translate = labels_translate(anchor, self.grid.downsampling, self.pixel_size)
            layer.data = data
            if not self.read_only:
                layer.editable = False  # resets the undo history (public API for it)
                layer.editable = True
                with contextlib.suppress(ValueError):
                    layer.mode = mode
            layer.metadata = {
                **layer.metadata,
                META_KEY: {**(canvas_meta(layer) or {}), "anchor": list(anchor)},
            }
        self._shadow = data.copy()
        self.anchor = anchor

    # ------------------------------------------------------------------ tiles landing
    def _on_tile_landed(self, key) -> None:
        if self.closed:
            return
        key = tuple(key)
        self.landed.append(key)
        view = self.last_view or self.current_view()
        sched = self.scheduler
        reach = sched.changed_rect(key) if sched is not None else self.grid.tile_rect(key)
        if not reach.intersect(view.rect).empty or self._held_overlaps(reach):
            self._schedule_refresh()

    def _held_overlaps(self, rect_px: Rect) -> bool:
        """Whether a prefetched region of any level holds pixels of level-0 rectangle ``rect_px``."""
        for k, level in enumerate(self.tissue_layer.data_raw):
            held = getattr(level, "region", None)
            if held is not None and not self.grid.level_rect(rect_px, k).intersect(held).empty:
                return True
        return False

    def _on_tile_failed(self, key, message: str) -> None:
        notify(f"DiffInfinite: generating tile {tuple(key)} failed: {message}", "warning")

    def _schedule_refresh(self) -> None:
        if not self._refresh_timer.isActive():
            self._refresh_timer.start()

    def _refresh_tissue(self) -> None:
        """Read the visible region ahead on the I/O thread, then re-slice the tissue layer from that copy."""
        if self._prefetching:
            self._refresh_again = True
            return
        data = self.tissue_layer.data_raw
        level = data[min(self.tissue_layer.data_level, len(data) - 1)]
        for other in data:  # regions of the levels not shown would be stale: read again when shown
            if other is not level and isinstance(other, PrefetchLevel):
                other.forget()
        if not isinstance(level, PrefetchLevel) or level.last_rect is None:
            self._on_prefetched()
            return
        self._prefetching = True

        def done(_future):
            self._prefetched.emit()

        self._io.submit(level.prefetch).add_done_callback(done)

    def _on_prefetched(self) -> None:
        self._prefetching = False
        if self.closed:
            return
        self.refreshes += 1
        try:
            self.tissue_layer.refresh(thumbnail=self.refreshes % 8 == 1, extent=False, highlight=False)
        except Exception as exc:
            log.exception("tissue refresh failed")
            notify(f"DiffInfinite: {exc}", "warning")
        if self._refresh_again:
            self._refresh_again = False
            self._schedule_refresh()

    # ------------------------------------------------------------------ labels
    def _on_labels_event(self, event=None) -> None:
        if not self._ignore_labels and not self.closed:
            self._sync_timer.start()

    def sync_labels(self, wait: bool = False) -> list[TileKey]:
        """Write the Labels window's edits (whatever made them) to the store and invalidate the tiles whose
        labels changed, on the I/O thread; the tiles arrive in :attr:`last_invalidated`. With ``wait`` this
        waits for the write and returns them (else ``[]``)."""
        if self.closed:
            return []
        data = self.labels_layer.data
        if not isinstance(data, np.ndarray) or data.shape != self._shadow.shape:
            notify(
                "DiffInfinite: the mask layer's data was replaced; it is reloaded from the canvas", "warning"
            )
            self.reanchor(self.anchor)
            return []
        found = changed_bbox(self._shadow, data)
        if found is None:
            return []
        r, where = found
        block = np.array(data[r.slices], copy=True)
        shadow = self._shadow[r.slices]
        if self.read_only:
            with self._labels_quiet():
                data[r.slices] = shadow
                self.labels_layer.refresh()
            notify("DiffInfinite: this canvas is open read-only; the edit was undone")
            return []
        bad = where & (block >= self.store.num_classes)
        if bad.any():
            values = sorted(set(block[bad].tolist()))
            block[bad] = shadow[bad]
            where = where & ~bad
            with self._labels_quiet():
                data[r.slices] = np.where(bad, shadow, data[r.slices])
                self.labels_layer.refresh()
            notify(
                f"DiffInfinite: label(s) {values} are not classes of this canvas (0..{self.store.num_classes - 1}); "
                "those pixels were left as they were",
                "warning",
            )
        shadow[where] = block[where]
        future = self._io.submit(
            self.session.write_labels, self.anchor[0] + r.y0, self.anchor[1] + r.x0, block, where
        )
        future.add_done_callback(self._labels_written.emit)
        return future.result() if wait else []

    def _on_labels_written(self, future: Future) -> None:
        try:
            tiles = future.result()
        except Exception as exc:
            log.exception("writing labels failed")
            notify(f"DiffInfinite: the mask edit could not be written to the canvas: {exc}")
            return
        self._invalidated(tiles)

    def _invalidated(self, tiles: list[TileKey]) -> None:
        """A label write invalidated ``tiles``: remember them, and show their placeholders (GUI thread)."""
        self.last_invalidated = tiles
        if tiles and not self.closed:
            self._schedule_refresh()

    def drain(self) -> None:
        """Wait until the I/O thread has written every edit so far (and finished its prefetch)."""
        self._io.submit(lambda: None).result()

    def write_labels(
        self, y0: int, x0: int, labels: np.ndarray, where: np.ndarray | None = None
    ) -> list[TileKey]:
        """Write class ids at latent pixel ``(y0, x0)`` of the canvas (only where ``where``) and invalidate
        exactly the tiles whose labels changed (their latents and pixels; they regenerate with their
        neighbours as context). Returns those tiles. The Labels window is not touched (see :meth:`sync_labels`
        and :meth:`reload_window`). GUI thread; waits for earlier edits first."""
        self.drain()
        tiles = self.session.write_labels(y0, x0, labels, where)
        self._invalidated(tiles)
        return tiles

    def reload_window(self, rect_latent=None) -> None:
        """Read the Labels window (or its part over ``rect_latent``) again from the store."""
        win = window_rect(self.anchor, self.grid, self.window)
        r = win if rect_latent is None else as_rect(rect_latent).intersect(win)
        if r.empty:
            return
        values = self.store.read_labels(r)
        local = r.offset(-self.anchor[0], -self.anchor[1])
        with self._labels_quiet():
            self.labels_layer.data[local.slices] = values
            self._shadow[local.slices] = values
            self.labels_layer.refresh()

    # ------------------------------------------------------------------ selections, re-roll, masks
    def selection_layer(self, create: bool = False):
        """The Shapes layer whose last rectangle is the selection (created, in rectangle mode, if asked)."""
        for layer in self.viewer.layers:
            if layer.name == SELECTION_NAME and layer.__class__.__name__ == "Shapes":
                return layer
        if not create:
            return None
        layer = self.viewer.add_shapes(
            name=SELECTION_NAME,
            scale=(self.pixel_size, self.pixel_size),
            edge_color="yellow",
            face_color="transparent",
            edge_width=4,
            opacity=0.9,
        )
        layer.mode = "add_rectangle"
        return layer

    def selection_rect(self) -> Rect | None:
        """The level-0 px rectangle of the selection layer's last shape (None without one)."""
        layer = self.selection_layer()
        if layer is None or not len(layer.data):
            return None
        verts = np.asarray(layer.data[-1], dtype=np.float64)
        world = np.array([layer.data_to_world(v) for v in verts])
        r = rect_from_vertices(world, self.pixel_size, self.grid)
        return None if r.empty else r

    def target_rect(self, rect_px=None) -> Rect:
        """``rect_px``, else the selection, else the current view (level-0 px, clipped)."""
        if rect_px is not None:
            return self.grid.clip(rect_px)
        sel = self.selection_rect()
        return sel if sel is not None else self.current_view().rect

    def reroll(self, rect_px=None, seed: int | None = None) -> list[TileKey]:
        """Generate the tiles under ``rect_px`` (default: the selection, else the view) again with a new seed,
        the mask and the neighbours kept as context."""
        keys = self.session.reroll(self.target_rect(rect_px), seed)
        self._schedule_refresh()
        return keys

    def generate_masks(
        self,
        rect_px=None,
        *,
        context=0,
        seed: int = 0,
        overwrite: bool = False,
        only_tiles: list[TileKey] | None = None,
        on_done: Callable | None = None,
    ):
        """Generate a class mask for ``rect_px`` (default: the selection, else the view) with the model's mask
        network and the ``context`` prompt, in a worker thread; painted labels are kept unless ``overwrite``,
        and with ``only_tiles`` only those tiles are written. Tissue generation pauses meanwhile. Returns the
        worker."""
        from superqt.utils import create_worker

        from ..generation import generate_mask

        rect, ctx, region_seed = self.session.mask_request(self.target_rect(rect_px), context, seed)
        was_paused = self.paused
        if self.scheduler is not None:
            self.scheduler.pause()
        self.mask_state = "running"
        self.state_changed.emit()
        worker = create_worker(
            generate_mask,
            self.model,
            (rect.height, rect.width),
            context=ctx,
            seed=region_seed,
            _start_thread=False,
            _ignore_errors=True,
        )

        def finish():
            if self.scheduler is not None and not was_paused:
                self.scheduler.resume()

        def done(mask):
            finish()
            if self.closed:
                return
            self.sync_labels(wait=True)  # edits made meanwhile are in the store before "painted" is decided
            self.drain()
            written, tiles = self.session.write_mask(rect, mask, overwrite=overwrite, only_tiles=only_tiles)
            self._invalidated(tiles)
            self.reload_window(written)
            self.mask_state = "done"
            self.state_changed.emit()
            if on_done is not None:
                on_done(tiles)

        def failed(exc):
            finish()
            self.mask_state = "error"
            self.state_changed.emit()
            notify(f"DiffInfinite: mask generation failed: {exc}")
            if only_tiles is not None:  # the "generated masks" setting: not again and again; the view goes on
                self.auto_masked.update(only_tiles)
                if self.generating and not self.closed:
                    self.update_view(wait=False)

        worker.returned.connect(self._guarded(done))
        worker.errored.connect(failed)
        self._keep(worker)
        worker.start()
        return worker

    # ------------------------------------------------------------------ masks from files
    def view_centre_px(self) -> tuple[float, float]:
        """The level-0 pixel at the centre of the screen."""
        cam = _camera(self.viewer)
        cy, cx = (float(v) / self.pixel_size for v in tuple(cam.center)[-2:])
        return cy, cx

    def load_mask_file(
        self,
        path: str | os.PathLike,
        *,
        centre_px=None,
        offset_px=(0, 0),
        file_um: float | None = None,
        on_done: Callable | None = None,
    ):
        """Read a label image (PNG / TIFF) or a QuPath GeoJSON export (in a worker thread, see
        :func:`~napari_diffinfinite.io.mask_files.read_mask_file`; ``file_um``: um per file pixel / coordinate
        unit, default one label per mask pixel / the canvas's pixel size) and place it with its centre at
        ``centre_px`` (default: the centre of the view) + ``offset_px``, through :meth:`place_labels`. A bad
        file becomes a notification. ``on_done(tiles)`` after the labels are written. Returns the worker."""
        from superqt.utils import create_worker

        from ..classes import class_set
        from ..io.mask_files import read_mask_file

        if self.read_only:
            raise PermissionError(f"the canvas {self.folder} is open read-only")
        n = self.store.num_classes
        try:
            names = class_set(n).names
        except ValueError:
            names = [f"class {i}" for i in range(n)]
        cell_um = self.pixel_size * self.grid.downsampling
        centre = self.view_centre_px() if centre_px is None else tuple(centre_px)
        centre = (centre[0] + offset_px[0], centre[1] + offset_px[1])
        worker = create_worker(
            read_mask_file,
            path,
            names,
            cell_um=cell_um,
            file_um=file_um,
            image_um=self.pixel_size,
            _start_thread=False,
            _ignore_errors=True,
        )
        self.mask_state = "running"

        def done(raster):
            self.loaded_mask = raster
            where = (
                f" (skipped: {'; '.join(raster.skipped[:3])}{'...' if len(raster.skipped) > 3 else ''})"
                if raster.skipped
                else ""
            )
            self.place_labels(
                raster.labels,
                centre_px=centre,
                on_done=on_done,
                message=f"DiffInfinite: mask {Path(path).name} loaded{where}",
            )

        def failed(exc):
            self.mask_state = "error"
            notify(f"DiffInfinite: cannot load the mask {Path(path).name}: {exc}")

        worker.returned.connect(self._guarded(done))
        worker.errored.connect(failed)
        self._keep(worker)
        worker.start()
        return worker

    def place_labels(
        self,
        labels: np.ndarray,
        *,
        centre_px=None,
        on_done: Callable | None = None,
        message: str | None = None,
    ) -> Future:
        """Write class ids ``labels`` (latent scale: one per ``downsampling`` px) into the canvas with their centre
        at level-0 pixel ``centre_px`` (default: the view's centre), where they are not 0 (a file's unlabelled
        area keeps what is painted), clipped to the canvas, on the I/O thread - the same path as painting: the
        tiles whose labels changed are invalidated and regenerate. Then the Labels window shows them and
        :attr:`loaded_mask_rect` / :attr:`loaded_mask_tiles` say where and what. Returns the write's future."""
        r, block = self.session.placement(labels, self.view_centre_px() if centre_px is None else centre_px)
        h, w = np.shape(labels)
        self.sync_labels()  # the user's edits first (the I/O thread runs in order)
        self.mask_state = "running"
        future = self._io.submit(self.session.write_labels, r.y0, r.x0, block, block > 0)
        future.add_done_callback(
            lambda f: self._mask_placed.emit(f, (r, on_done, message, (h, w) != (r.height, r.width)))
        )
        return future

    def _on_mask_placed(self, future: Future, extra) -> None:
        r, on_done, message, clipped = extra
        try:
            tiles = future.result()
        except Exception as exc:
            self.mask_state = "error"
            log.exception("writing a mask failed")
            notify(f"DiffInfinite: the mask could not be written to the canvas: {exc}")
            return
        if self.closed:
            return
        self.reload_window(r)
        self.loaded_mask_rect, self.loaded_mask_tiles = r, tiles
        self._invalidated(tiles)
        self.mask_state = "done"
        if self.generating:
            self.update_view(wait=False)
        if message:
            notify(
                message
                + (" - clipped at the canvas's edge" if clipped else "")
                + f"; {len(tiles)} tile(s) to regenerate",
                "info",
            )
        self.state_changed.emit()
        if on_done is not None:
            on_done(tiles)

    # ------------------------------------------------------------------ export
    def region_rect(self, region: str = "selection") -> Rect:
        """The level-0 rectangle of an export region: ``"view"`` (what is on screen), ``"selection"`` (the drawn
        rectangle; the view if none is drawn), ``"rectangle"`` (the drawn rectangle, required) or
        ``"generated"`` (the bounding box of every generated tile)."""
        from ..io.canvas_export import generated_bbox

        if region == "view":
            return self.current_view().rect
        if region == "selection":
            return self.target_rect()
        if region == "rectangle":
            sel = self.selection_rect()
            if sel is None:
                raise ValueError("draw a rectangle first (Draw selection), or export the view")
            return sel
        if region == "generated":
            box = generated_bbox(self.store)
            if box.empty:
                raise ValueError("nothing is generated on this canvas yet")
            return box
        raise ValueError(f"unknown export region {region!r}: 'view', 'rectangle', 'selection' or 'generated'")

    @property
    def mask_state(self) -> str:
        """ "idle", "running" (a mask is generated or a mask file read and placed), "done" or "error"."""
        return self._mask_state

    @mask_state.setter
    def mask_state(self, value: str) -> None:
        if value != self._mask_state:
            self._mask_state = value
            self.state_changed.emit()

    def _schedule_activity(self) -> None:
        if self.closed:
            self._activity_timer.stop()
            self._show_activity()  # closes every bar now
        elif not self._activity_timer.isActive():
            self._activity_timer.start()

    def _show_activity(self) -> None:
        """Open, advance or close the bars of napari's activity dock from the canvas's state (GUI thread).
        Opening or closing a bar lets napari's activity dock handle events, which may land here again: that call
        only asks for one more pass."""
        if self._activity_busy:
            self._activity_again = True
            return
        self._activity_busy = True
        try:
            self._activity_again = True
            while self._activity_again:
                self._activity_again = False
                self._update_activity()
        finally:
            self._activity_busy = False

    def _update_activity(self) -> None:
        bars = self.activity
        if self.closed:
            for bar in bars.values():
                bar.end()
            return
        if self.loading_model:
            name = getattr(self._loading_spec, "source", "")
            bars["model"].show(f"DiffInfinite: loading the model {Path(str(name)).name}")
        else:
            bars["model"].end()
        stats = self.scheduler.stats if self.scheduler is not None else None
        left = 0 if stats is None else stats.tiles_queued + (stats.current is not None)
        if left and stats.state in ("running", "paused"):
            if not bars["tiles"].active:
                self._tiles_base = stats.tiles_done
            done = stats.tiles_done - self._tiles_base
            paused = " (paused)" if stats.state == "paused" else ""
            bars["tiles"].show(f"DiffInfinite: generating tiles{paused}", done, done + left)
        else:
            bars["tiles"].end()
        if self.mask_state == "running":
            bars["mask"].show("DiffInfinite: generating / placing a mask")
        else:
            bars["mask"].end()
        job = self.export_job
        if job is not None and not job.finished and job.state in ("waiting", "running"):
            done, total = job.progress
            what = "generating its missing tiles" if job.state == "waiting" else "writing"
            bars["export"].show(f"DiffInfinite: export {job.path.name}: {what}", done, total)
        else:
            bars["export"].end()

    @property
    def export_state(self) -> str:
        """The last export's state: "idle" before the first, then the job's (waiting, running, done, ...)."""
        return "idle" if self.export_job is None else self.export_job.state

    @property
    def export_progress(self) -> tuple[int, int]:
        return (0, 0) if self.export_job is None else self.export_job.progress

    @property
    def export_result(self) -> dict | None:
        return None if self.export_job is None else self.export_job.result

    def export(
        self,
        path: str | os.PathLike,
        rect_px=None,
        *,
        fmt: str = "ome.tif",
        overwrite: bool = False,
        generate_missing: bool = False,
        on_done: Callable | None = None,
    ):
        """Export the tissue and mask of ``rect_px`` (default: the selection, else the view) as a
        :class:`~napari_diffinfinite.io.canvas_export.CanvasExportJob`: tiles that are not generated make it
        refuse at once, or, with ``generate_missing``, are generated first. Its progress shows in the widget;
        ``on_done(paths)`` runs on the GUI thread when the files are written. Returns the job."""
        from ..io.canvas_export import CanvasExportJob

        job = CanvasExportJob(
            self.session,
            path,
            self.target_rect(rect_px),
            fmt=fmt,
            overwrite=overwrite,
            generate_missing=generate_missing,
        )
        self._export_on_done = on_done
        # any thread -> a queued Qt signal -> the GUI thread (a lambda: psygnal keeps weak refs to methods)
        job.changed.connect(lambda: self._export_changed.emit())
        job.start()
        self.export_job = job
        if job.state == "waiting":
            total = job.progress[1]
            notify(
                f"DiffInfinite: generating the {total} missing tiles first; the export starts when they have landed",
                "info",
            )
        self.state_changed.emit()
        return job

    def _on_export_changed(self) -> None:
        """GUI thread: show the export's progress; report its end once."""
        job = self.export_job
        self.state_changed.emit()
        if job is None or not job.finished or job is self._reported_export:
            return
        self._reported_export = job
        if job.state == "done":
            if job.fmt == "ome.tif":
                from .reader_preferences import remember_reader

                remember_reader(job.result["image"])
            notify(f"DiffInfinite: exported {job.result['image']}", "info")
            if self._export_on_done is not None:
                self._export_on_done(job.result)
        elif job.state == "error":
            notify(f"DiffInfinite: export failed: {job.error}")

    def cancel_export(self) -> None:
        if self.export_job is not None:
            self.export_job.cancel()

    def load_model(
        self,
        spec: ModelSpec,
        *,
        start: bool = True,
        prepare: Callable | None = None,
        on_error: Callable[[str], None] | None = None,
        defer: bool = False,
    ) -> None:
        """Load ``spec`` in a worker thread, then generate with it (and ``start`` if asked); the viewer never
        waits. ``prepare(model)`` runs first on the GUI thread (e.g. settings that depend on the model's device).
        A model that cannot continue this canvas, or one that fails to load, is reported to ``on_error(message)``
        (default: a notification). ``defer``: start loading only once the event loop runs (a load beside
        napari building its window slows both: one GIL, few cores)."""

        def report(message: str, severity: str = "error") -> None:
            self.state_changed.emit()
            if on_error is not None:
                on_error(message)
            else:
                notify(f"DiffInfinite: {message}", severity)

        def loaded(model):
            self.loading_model = False
            if self.closed:
                return
            if prepare is not None:
                prepare(model)
            try:
                self.set_model(model, spec)
                if start:
                    self.start()
            except (ValueError, PermissionError) as exc:
                report(f"the model cannot continue this canvas: {exc}")

        def failed(exc):
            self.loading_model = False
            report(model_error_message(exc, spec), "warning")

        def go():
            if not self.closed:
                self._keep(load_model_in_thread(spec, loaded, failed))

        self.loading_model = True
        self._loading_spec = spec
        self.state_changed.emit()
        if defer:
            QTimer.singleShot(LOAD_DELAY_MS, go)
        else:
            go()

    def _keep(self, worker) -> None:
        self._workers.append(worker)
        worker.finished.connect(lambda: self._workers.remove(worker) if worker in self._workers else None)

    # ------------------------------------------------------------------ lifecycle
    def _on_layer_removed(self, event=None) -> None:
        layer = getattr(event, "value", None)
        if layer is self.tissue_layer or layer is self.labels_layer:
            self.close()

    def save_view(self) -> None:
        """Record the camera (centre px, zoom) in the canvas settings, so a reopened canvas starts there."""
        if self.read_only or self.closed:
            return
        cam = _camera(self.viewer)
        cy, cx = (float(v) / self.pixel_size for v in tuple(cam.center)[-2:])
        self.store.update_settings(
            view={"centre_px": [round(cy, 2), round(cx, 2)], "zoom": float(cam.zoom) * self.pixel_size}
        )

    def close(self) -> None:
        """Write the mask window back, stop generating, release the store's writer lock. The layers stay (they
        keep showing the store as it is)."""
        if self.closed:
            return
        for emitter, fn in self._connections:
            with contextlib.suppress(Exception):
                emitter.disconnect(fn)
        try:
            self.sync_labels(wait=True)
            self.drain()
        except Exception:
            log.exception("writing the mask window back failed")
        with contextlib.suppress(Exception):
            self.save_view()
        self.closed = True
        for timer in (self._debounce, self._refresh_timer, self._sync_timer):
            timer.stop()
        if self.export_job is not None:
            self.export_job.cancel()
            self.export_job.wait(timeout=10)
        self.session.stop()
        self._io.shutdown(wait=True)
        self.session.close()
        self.state_changed.emit()
        unregister(self)


# ---------------------------------------------------------------------------------------------- opening
def open_store(folder) -> CanvasStore:
    """The canvas in ``folder`` opened for writing; if another program holds it, read-only (a notification
    says so)."""
    try:
        return CanvasStore.open(folder, mode="r+")
    except CanvasLockedError as exc:
        notify(f"DiffInfinite: {exc}; the canvas is shown read-only", "warning")
        return CanvasStore.open(folder, mode="r")


def open_canvas(
    viewer,
    folder=None,
    *,
    store: CanvasStore | None = None,
    model=None,
    model_spec=None,
    camera: tuple[tuple[float, float], float] | None = None,
    start: bool = False,
    load_model: bool = True,
    defer_load: bool = False,
    **options,
) -> CanvasController:
    """Show a canvas folder in ``viewer`` and drive it (layers found by their metadata are reused, else added).

    The store is opened for writing; if another program holds it, read-only (a notification says so). The
    camera goes to ``camera`` (``(centre_px, zoom)``, zoom in screen px per image px), else to the saved view,
    else to the centre at 1:1. The model is ``model``, else ``model_spec`` (or the canvas's recorded source,
    or the default) loaded in a worker thread; with ``start`` generation starts as soon as it is loaded.
    ``defer_load``: start loading the model only after napari's first paint of the new layers.
    """
    viewer = unwrap_viewer(viewer)
    if store is None:
        store = open_store(folder)
    folder = Path(store.root)
    from .reader_preferences import remember_reader

    remember_reader(folder)
    tissue, labels = find_canvas_layers(viewer, folder)
    ctrl = CanvasController(viewer, store, tissue_layer=tissue, labels_layer=labels, **options)
    if camera is None:
        centre = store.header.view_centre_px or store.grid.centre()  # where the reader put the window
        camera = (centre, store.header.view_zoom)
    ctrl.set_camera(camera[0], camera[1])
    if store.read_only:
        return ctrl
    if model is not None:
        ctrl.set_model(model, model_spec)
        if start:
            ctrl.start()
    elif load_model:
        spec = model_spec or ModelSpec(
            store.settings.get("model_source") or os.environ.get("DIFFINFINITE_MODEL") or "embedded"
        )
        ctrl.load_model(spec, start=start, defer=defer_load)
    return ctrl
