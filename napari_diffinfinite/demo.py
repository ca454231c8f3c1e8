"""Demo mode (issue 8): one call turns a napari viewer into a guided demo of DiffInfinite.

:func:`enter_demo_mode` opens a new demo canvas (the shipped painted mask, generating the view at 1:1), docks
the guided :class:`~napari_diffinfinite.widgets.demo_panel.DemoPanel` (paint, watch, zoom, export), marks the
canvas as synthetic (a text overlay plus a labelled outline around every generated area) and applies a
:class:`DemoPreset` chosen for the hardware, so the first impression is tissue filling the screen quickly.

The presets only set what the canvas already has: the steps and guidance recorded in the canvas settings, and
the scheduler's ``max_view_tiles`` (how many tiles of a view are requested at once) through the controller's
``scheduler_options``. Qt is imported only inside the functions that need it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import DISCLAIMER

__all__ = [
    "DEMO_PANEL_NAME",
    "OVERLAY_TEXT",
    "PRESETS",
    "SYNTHETIC_LAYER_NAME",
    "DemoPreset",
    "DemoSession",
    "choose_preset",
    "demo_mode_button_clicked",
    "enter_demo_mode",
]

log = logging.getLogger(__name__)

#: The canvas overlay shown for the whole demo: every screenshot of it says what the tissue is.
OVERLAY_TEXT = "SYNTHETIC - DiffInfinite, research/demo only, not for diagnosis"
SYNTHETIC_LAYER_NAME = "Synthetic (generated areas)"
PLUGIN = "napari-diffinfinite"
WIDGET = "DiffInfinite"
DEMO_PANEL_NAME = "DiffInfinite demo"
#: Width (px) of the right dock area in demo mode: the guided panel fits, the canvas keeps the rest.
PANEL_WIDTH = 380
#: The painted mask's opacity in demo mode: enough to see which class is where, light enough that the generated
#: tissue under it reads as tissue (the plugin's 0.45 suits painting, not showing).
DEMO_MASK_OPACITY = 0.2
LEFT_WIDTH = 240
#: Most separate generated areas outlined (beyond that, one outline around them all).
MAX_OUTLINES = 32


@dataclass(frozen=True)
class DemoPreset:
    """What the demo generates with. ``steps`` / ``omega`` None: the model's defaults; ``steps`` is also capped
    at the model's default (a preset never makes a model slower than its own choice). ``max_view_tiles``: the
    tiles of one view requested at once, nearest the centre first (the scheduler's budget)."""

    name: str
    steps: int | None = None
    omega: float | None = None
    max_view_tiles: int = 64
    description: str = ""

    def steps_for(self, model) -> int | None:
        default = getattr(model, "default_steps", None)
        if self.steps is None:
            return default
        return int(self.steps) if default is None else min(int(self.steps), int(default))

    def omega_for(self, model) -> float | None:
        return float(self.omega) if self.omega is not None else getattr(model, "default_omega", None)


PRESETS: dict[str, DemoPreset] = {
    # a 1:1 view of a laptop screen is ~12-20 tiles: on a CPU, fewer steps and only the central 12 tiles at once
    "cpu": DemoPreset(
        "cpu",
        steps=20,
        max_view_tiles=12,
        description="CPU: at most 20 steps, the 12 tiles nearest the centre of the view at once",
    ),
    "gpu": DemoPreset(
        "gpu",
        steps=None,
        max_view_tiles=96,
        description="GPU: the model's steps, up to 96 tiles of the view at once",
    ),
}


def choose_preset(preset: str | DemoPreset | None = None, device=None) -> DemoPreset:
    """The preset for ``preset`` (a :class:`DemoPreset`, ``"cpu"``, ``"gpu"``, or None / ``"auto"``: from the
    device the model runs on, ``device`` or :func:`~napari_diffinfinite.model.device.select_device`)."""
    if isinstance(preset, DemoPreset):
        return preset
    if preset not in (None, "auto"):
        try:
            return PRESETS[str(preset)]
        except KeyError:
            raise ValueError(f"unknown demo preset {preset!r}; choose auto, {', '.join(PRESETS)}") from None
    if device is None:
        from .model.device import select_device

        device = select_device()
    kind = getattr(device, "type", str(device).split(":")[0])
    return PRESETS["cpu" if kind == "cpu" else "gpu"]


def _camera(viewer):
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def _text_overlay(viewer):
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None)
    return overlays.text if overlays is not None else viewer.text_overlay  # napari < 0.9


class DemoSession:
    """One demo in one viewer: the canvas controller, the panel, the preset, and the actions the panel's
    buttons call (kept here so they can be scripted and tested without clicking)."""

    def __init__(
        self, viewer, controller, preset: DemoPreset, *, mask_rect=None, model_error: str | None = None
    ):
        self.viewer = viewer
        self.controller = controller
        self.preset = preset
        self.mask_rect = mask_rect
        self.model_error = model_error
        self.panel = None
        #: the controller and the panel are in place (:func:`enter_demo_mode` builds them over a few turns of
        #: the event loop)
        self.ready = False
        self.synthetic_layer = None
        self.exports: list[dict] = []
        self._outlined: tuple = ()

    # -- labelling ----------------------------------------------------------------------------------------
    def show_synthetic_overlay(self) -> None:
        overlay = _text_overlay(self.viewer)
        overlay.text = OVERLAY_TEXT
        overlay.visible = True
        overlay.position = "top_center"
        overlay.font_size = 10
        overlay.color = "#ffd400"
        if hasattr(overlay, "box"):
            overlay.box = True

    def _generated_areas(self) -> list[tuple[int, int, int, int]]:
        """Level-0 px rectangles ``(y0, y1, x0, x1)`` of the connected groups of tiles generated in this demo
        (from the controller's landed tiles: no store read on the GUI thread)."""
        from scipy import ndimage

        keys = np.array(sorted(set(self.controller.landed)), dtype=np.int64).reshape(-1, 2)
        if not len(keys):
            return []
        t = self.controller.grid.tile
        (i0, j0), (i1, j1) = keys.min(0), keys.max(0) + 1
        done = np.zeros((i1 - i0, j1 - j0), bool)
        done[keys[:, 0] - i0, keys[:, 1] - j0] = True
        groups, n = ndimage.label(done)
        boxes = (
            ndimage.find_objects(groups) if n <= MAX_OUTLINES else [(slice(0, i1 - i0), slice(0, j1 - j0))]
        )
        return [
            (
                int(i0 + b[0].start) * t,
                int(i0 + b[0].stop) * t,
                int(j0 + b[1].start) * t,
                int(j0 + b[1].stop) * t,
            )
            for b in boxes
            if b is not None
        ]

    def update_synthetic_outlines(self, *_args) -> None:
        """Outline every generated area with a "SYNTHETIC" label (a Shapes layer above the tissue). Runs when
        tiles land; cheap when nothing new was outlined."""
        ctrl = self.controller
        if ctrl is None or ctrl.closed:
            return
        areas = tuple(self._generated_areas())
        if areas == self._outlined:
            return
        self._outlined = areas
        px = ctrl.pixel_size
        rects = [np.array([[y0, x0], [y1, x1]], dtype=float) for y0, y1, x0, x1 in areas]
        layer = self.synthetic_layer
        if layer is None or layer not in self.viewer.layers:
            active = self.viewer.layers.selection.active
            layer = self.viewer.add_shapes(
                name=SYNTHETIC_LAYER_NAME,
                scale=(px, px),
                units=("um", "um"),
                edge_color="#ffd400",
                face_color="transparent",
                edge_width=10,
                opacity=0.9,
                text={
                    "string": {"constant": "SYNTHETIC - not for diagnosis"},
                    "color": "#ffd400",
                    "size": 10,
                    "anchor": "upper_left",
                    "translation": [-12, 0],
                },
                metadata={"disclaimer": DISCLAIMER},
            )
            self.synthetic_layer = layer
            if active is not None:  # painting stays on the mask layer
                self.viewer.layers.selection.active = active
        layer.data = rects
        layer.shape_type = ["rectangle"] * len(rects)
        layer.refresh()

    # -- the panel's actions --------------------------------------------------------------------------------
    def paint(self, label: int) -> None:
        """Step 1: select the mask layer, paint mode, and class ``label`` as the brush."""
        layer = self.controller.labels_layer
        self.viewer.layers.selection.active = layer
        layer.visible = True
        layer.mode = "paint"
        layer.selected_label = int(label)

    def progress(self) -> tuple[int, int, int]:
        """Step 2: (tiles done, tiles generating now, tiles queued) of this canvas's scheduler; zeros without a
        model."""
        sched = self.controller.scheduler
        if sched is None:
            return 0, 0, 0
        s = sched.stats
        return int(s.tiles_done), int(s.current is not None), int(s.tiles_queued)

    def zoom_overview(self) -> float:
        """Step 3: zoom out so that the painted mask and everything generated fit the window (the pyramid's
        coarser levels show). Returns the zoom (screen px per image px)."""
        ctrl = self.controller
        y0, y1, x0, x1 = self.mask_rect if self.mask_rect is not None else tuple(ctrl.current_view().rect)
        for a in self._generated_areas():
            y0, y1, x0, x1 = min(y0, a[0]), max(y1, a[1]), min(x0, a[2]), max(x1, a[3])
        h, w = (int(v) for v in self.viewer.canvas.size)
        zoom = float(np.clip(0.9 * min(h / max(1, y1 - y0), w / max(1, x1 - x0)), 1 / 64, 0.5))
        ctrl.set_camera(((y0 + y1) / 2, (x0 + x1) / 2), zoom)
        return zoom

    def zoom_1to1(self) -> None:
        """Step 3: back to one screen pixel per image pixel, where the view is centred now."""
        ctrl = self.controller
        cy, cx = (float(v) / ctrl.pixel_size for v in tuple(_camera(self.viewer).center)[-2:])
        ctrl.set_camera((cy, cx), 1.0)

    def export_path(self, fmt: str = "png") -> Path:
        """A new file next to the canvas folder (``demo-view-N.png``)."""
        folder = self.controller.folder.parent
        n = 1
        while any(folder.glob(f"demo-view-{n}.*")):
            n += 1
        return folder / f"demo-view-{n}.{fmt}"

    def export_view(self, fmt: str = "png", on_done=None) -> Path:
        """Step 4: export the current view (tissue + mask + settings) next to the canvas; tiles of the view not
        generated yet are generated first. Returns the path it will be written to."""
        path = self.export_path(fmt)

        def done(paths):
            self.exports.append(paths)
            if on_done is not None:
                on_done(paths)

        self.controller.export(
            path, self.controller.current_view().rect, fmt=fmt, generate_missing=True, on_done=done
        )
        return path

    def show_controls(self):
        """Dock the full DiffInfinite widget (model, seed, masks, re-roll, export options). Returns it."""
        _dock, widget = self.viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
        return widget

    def close(self) -> None:
        """Remove the panel (the canvas stays open)."""
        if self.panel is not None:
            try:
                self.viewer.window.remove_dock_widget(self.panel.native)
            except Exception:
                log.debug("removing the demo panel failed", exc_info=True)
            self.panel = None


def enter_demo_mode(
    viewer, *, preset: str | DemoPreset | None = None, fullscreen: bool = False
) -> DemoSession:
    """Open a new demo canvas in ``viewer`` generating at 1:1, dock the guided panel (alone, so the canvas keeps
    the room; its "All controls" button docks the full widget; if that widget is docked already the panel is
    tabbed with it), label the canvas synthetic and apply ``preset`` (see :func:`choose_preset`; default: from
    the device). ``fullscreen``: full screen, else maximised.

    Returns the :class:`DemoSession` at once; it is :attr:`~DemoSession.ready` (controller and panel in place) a
    few turns of the event loop later. Each step has a turn of its own, so that none adds to the freeze napari
    causes as it adds its first layer: now the mask's Labels window (from the model's manifest: no zarr, no
    torch) and the title; then the canvas store; then the tissue layer under the mask, the synthetic-image
    overlay and the controller (the model loads in a worker thread, or the loaded one starts generating); then
    the panel."""
    import tempfile

    from qtpy.QtCore import QTimer

    from ._sample_data import (
        DEMO_CANVAS_NAME,
        NO_MODEL_GEOMETRY,
        demo_mask_window,
        demo_source,
        notify_no_model,
        schedule_demo_canvas,
    )
    from .widgets.opening import OPEN_STEP_MS
    from .widgets.registry import unwrap_viewer

    viewer = unwrap_viewer(viewer)
    spec, made_for, model, error = demo_source()
    if model is None:  # "auto" is the CPU preset until the model's device is known (see _load_demo_model)
        chosen = choose_preset("cpu" if preset in (None, "auto") else preset)
    else:
        chosen = choose_preset(preset, device=model.device)
    settings = {}
    if made_for is not None:
        settings = {"steps": chosen.steps_for(made_for), "omega": chosen.omega_for(made_for)}
    session = DemoSession(viewer, None, chosen, model_error=error)
    folder = Path(tempfile.mkdtemp(prefix="diffinfinite-demo-")) / DEMO_CANVAS_NAME

    data, kwargs, _kind = demo_mask_window(folder, made_for or NO_MODEL_GEOMETRY)
    viewer.add_labels(data, **{**kwargs, "opacity": DEMO_MASK_OPACITY}).selected_label = 1
    viewer.title = "DiffInfinite demo - synthetic images, not for diagnosis"

    def opened(ctrl, rect):
        session.controller, session.mask_rect = ctrl, tuple(rect)
        session.show_synthetic_overlay()  # with the tissue (its first paint costs 0.1-0.3 s: not in the first turn)
        if made_for is not None and model is None:
            _load_demo_model(session, spec, auto=preset in (None, "auto"))
        ctrl.tile_landed.connect(session.update_synthetic_outlines)
        QTimer.singleShot(OPEN_STEP_MS, dock_panel)

    def dock_panel():
        from .widgets.demo_panel import DemoPanel

        old = viewer.window.dock_widgets.get(DEMO_PANEL_NAME)
        if old is not None:
            viewer.window.remove_dock_widget(getattr(old, "native", old))
        session.panel = DemoPanel(session)
        dock = viewer.window.add_dock_widget(session.panel, name=DEMO_PANEL_NAME, area="right", tabify=True)
        viewer.layers.selection.active = session.controller.labels_layer
        _fill_screen(dock, fullscreen)
        session.ready = True
        if error is not None:
            notify_no_model(error)

    schedule_demo_canvas(
        folder,
        made_for,
        spec,
        model=model,
        viewer=viewer,
        settings=settings,
        on_open=opened,
        load_model=False,  # _load_demo_model: with the preset of the model's device
        scheduler_options={"max_view_tiles": int(chosen.max_view_tiles)},
    )
    return session


def _load_demo_model(session: DemoSession, spec, *, auto: bool) -> None:
    """Load the demo's model in a worker thread, started once the event loop runs (a load beside napari
    building its window slows both: one GIL, few cores); then apply the preset of its device (``auto``) and
    start generating. A failure is a notification; the canvas keeps showing its mask."""
    from ._sample_data import notify_no_model

    ctrl = session.controller

    def prepare(model):
        chosen = choose_preset(None, device=model.device) if auto else session.preset
        session.preset = chosen
        ctrl.scheduler_options["max_view_tiles"] = int(chosen.max_view_tiles)
        ctrl.apply_settings(steps=chosen.steps_for(model), omega=chosen.omega_for(model))
        if session.panel is not None:
            session.panel.show_preset()

    def failed(message):
        session.model_error = message
        notify_no_model(message)

    ctrl.load_model(spec, start=True, prepare=prepare, on_error=failed, defer=True)


def _fill_screen(dock, fullscreen: bool) -> None:
    """Full screen or maximised, the docks kept narrow so the canvas gets the room (napari's layer controls are
    hidden). Without a window manager (Xvfb) maximising does nothing, so the window gets the screen's geometry."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QDockWidget, QMainWindow

    window = dock.window()
    if not isinstance(window, QMainWindow):
        return
    if fullscreen:
        window.showFullScreen()
    else:
        window.showMaximized()
        screen = window.screen() if hasattr(window, "screen") else None
        if screen is not None and not window.isFullScreen():
            window.setGeometry(screen.availableGeometry())
    window.resizeDocks([dock], [PANEL_WIDTH], Qt.Orientation.Horizontal)
    left = [
        d
        for d in window.findChildren(QDockWidget)
        if window.dockWidgetArea(d) == Qt.DockWidgetArea.LeftDockWidgetArea and not d.isHidden()
    ]
    for d in (
        left
    ):  # napari's layer controls need 400 px; the panel has the brush size (Window menu brings it back)
        if d.windowTitle() == "layer controls":
            d.hide()
    left = [d for d in left if not d.isHidden()]
    if left:
        window.resizeDocks(left, [LEFT_WIDTH] * len(left), Qt.Orientation.Horizontal)


def demo_mode_button_clicked(viewer) -> DemoSession | None:
    """For a "Demo mode" button: :func:`enter_demo_mode` with failures as a notification, not a traceback."""
    try:
        return enter_demo_mode(viewer)
    except Exception as exc:
        log.exception("entering demo mode failed")
        from .widgets.canvas_controller import notify

        notify(f"DiffInfinite: the demo could not start: {exc}")
        return None
