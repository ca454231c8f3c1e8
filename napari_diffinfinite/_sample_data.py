"""napari sample data (``File > Open Sample > napari-diffinfinite``).

- "DiffInfinite demo canvas" (:func:`demo_canvas`): a new canvas in a temporary folder with the shipped demo
  mask painted in its middle, opened at 1:1 zoom centred on the mask; tissue starts generating at once.
- "DiffInfinite demo mask" (:func:`demo_mask`): the painted 5-class mask alone, as a Labels layer.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np

from . import DISCLAIMER
from ._resources import resource_path
from .classes import FIVE_CLASSES

DEMO_MASK_FILE = ("masks", "squamous_mask_example_5classes.png")
DEMO_CANVAS_NAME = "demo-canvas"
#: The demo mask's context prompt: squamous cell carcinoma, as the file name says.
DEMO_CONTEXT = 1
#: The geometry of a demo canvas made without a model (:func:`create_demo_canvas`'s), for its early mask window.
NO_MODEL_GEOMETRY = SimpleNamespace(downsampling=8, num_classes=len(FIVE_CLASSES), pixel_size_um=0.5)
#: Physical pixel size of the demo mask (it is at image resolution; the paper's data is 20x, ~0.5 um/px).
DEMO_MASK_UM_PER_PX = 0.5


def load_demo_mask() -> np.ndarray:
    """The demo mask as 5-class label ids (uint8, 2560 x 2560, values in 0..4).

    The shipped PNG stores labels scaled to 0..255 (0, 63, 191, 255); ``round(v / (255 / 4))`` undoes that,
    through a 256-entry table (arithmetic on the 6.5 Mpx image took 0.6 s of the GUI thread when the demo opens).
    """
    from PIL import Image

    with Image.open(resource_path(*DEMO_MASK_FILE)) as im:
        values = np.asarray(im.convert("L"))
    step = 255 / (len(FIVE_CLASSES) - 1)
    return np.rint(np.arange(256) / step).astype(np.uint8)[values]


def demo_mask() -> list[tuple]:
    """LayerData for napari: the demo mask as a Labels layer with the 5-class names and colours."""
    labels = load_demo_mask()
    kwargs = {
        "name": "DiffInfinite demo mask",
        "scale": (DEMO_MASK_UM_PER_PX, DEMO_MASK_UM_PER_PX),
        "units": ("um", "um"),
        "colormap": FIVE_CLASSES.color_dict(),
        "features": FIVE_CLASSES.features(),
        "opacity": 0.6,
        "metadata": {
            "diffinfinite": {
                "class_set": FIVE_CLASSES.key,
                "class_names": FIVE_CLASSES.names,
                "context_prompt": 1,  # squamous cell carcinoma, as the file name says
                "um_per_px": DEMO_MASK_UM_PER_PX,
                "source": "DiffInfinite reference sample data (MIT License, Copyright (c) 2023 diffinfinite)",
            },
            "disclaimer": DISCLAIMER,
        },
    }
    return [(labels, kwargs, "labels")]


def create_demo_canvas(folder, model=None, *, shape_px=None, settings: dict | None = None):
    """A new canvas in ``folder`` with the demo mask painted in its middle (at latent scale: the label at the
    centre of every 8 x 8 px cell). With ``model`` (loaded, or its ``ModelManifest``) the canvas is made for
    it (latent channels, steps, guidance, classes); without, with the default geometry (4 latent channels,
    5 classes) and no model name, so that any model with that geometry can generate it later. Returns
    ``(store, mask rectangle in level-0 px)``."""
    from .canvas.grid import DEFAULT_SIDE
    from .canvas.store import CanvasStore

    shape_px = shape_px or (DEFAULT_SIDE, DEFAULT_SIDE)
    extra = {"context": DEMO_CONTEXT, **(settings or {})}
    if model is not None:
        store = CanvasStore.create_for_model(folder, model, shape_px=shape_px, **extra)
    else:
        store = CanvasStore.create(
            folder,
            shape_px=shape_px,
            model_name=None,
            settings={"num_classes": len(FIVE_CLASSES), **extra},
            latent_channels=4,
        )
    labels, (ly, lx), rect = demo_labels(store.grid, store.num_classes)
    store.write_labels(ly, lx, labels)
    return store, rect


def demo_labels(grid, num_classes: int):
    """The demo mask at the latent scale of ``grid`` (labels the canvas's classes do not have become 0), the
    latent pixel of its top-left corner and its rectangle in level-0 px: the mask centred on the canvas."""
    from .canvas.grid import Rect
    from .label_grid import labels_at_cell_centres

    d = grid.downsampling
    labels = labels_at_cell_centres(load_demo_mask(), d)
    if num_classes < len(FIVE_CLASSES):
        labels = np.where(labels < num_classes, labels, 0).astype(np.uint8)
    cy, cx = grid.centre()
    lh, lw = labels.shape
    ly, lx = cy // d - lh // 2, cx // d - lw // 2
    return labels, (ly, lx), Rect(ly * d, (ly + lh) * d, lx * d, (lx + lw) * d)


def demo_mask_window(folder, manifest) -> tuple:
    """LayerData of the demo canvas's Labels window, computed from the model's manifest before the canvas
    exists (no zarr, no store): what the controller will read from the store once it is made, so it adopts
    this layer as it is."""
    from .canvas.grid import DEFAULT_SIDE, CanvasGrid
    from .widgets.canvas_layers import window_layer_data

    grid = CanvasGrid(DEFAULT_SIDE, DEFAULT_SIDE, downsampling=manifest.downsampling)
    labels, labels_at, rect = demo_labels(grid, manifest.num_classes)
    return window_layer_data(
        folder,
        grid,
        manifest.pixel_size_um,
        manifest.num_classes,
        rect.centre,
        labels=labels,
        labels_at=labels_at,
    )


def demo_model():
    """The demo's model: ``(model or None, spec, error message or None)`` for ``$DIFFINFINITE_MODEL`` or the
    embedded model. A missing or broken model must not stop the demo from opening, so it is reported, not
    raised."""
    from .widgets.canvas_models import ModelSpec, default_model_source, get_model, model_error_message

    spec = ModelSpec(default_model_source())
    try:
        return get_model(spec), spec, None
    except Exception as exc:  # noqa: BLE001
        return None, spec, model_error_message(exc, spec)


def demo_manifest():
    """``(spec, manifest)`` of the demo's model (as :func:`demo_model` picks it); ``manifest`` (a
    ``ModelManifest``) only while that model is not loaded and a Qt application can load it in a worker thread:
    the canvas is then made from it at once, without torch. Else None: load the model first."""
    from qtpy.QtWidgets import QApplication

    from .model_manifest import read_manifest
    from .widgets.canvas_models import ModelSpec, cached_model, default_model_source

    spec = ModelSpec(default_model_source())
    if QApplication.instance() is None or cached_model(spec) is not None:
        return spec, None
    return spec, read_manifest(spec.source)


def notify_no_model(error: str) -> None:
    """Tell the user the demo canvas shows only its mask, and how to get a model."""
    from .widgets.canvas_controller import notify

    notify(
        f"DiffInfinite: {error} The demo canvas shows its mask; choose a model in the DiffInfinite widget "
        "and press Generate.",
        "warning",
    )


def new_demo_canvas(model=None, spec=None, *, settings: dict | None = None):
    """A demo canvas in a new temporary folder (see :func:`create_demo_canvas`); ``settings`` (e.g. steps,
    omega) are recorded in it. Returns ``(store, the mask's rectangle in level-0 px, LayerData)``."""
    import tempfile
    from pathlib import Path

    from .widgets.canvas_layers import canvas_layer_data

    extra = dict(settings or {})
    if model is not None and spec is not None:
        extra.setdefault("model_source", spec.source)
    folder = Path(tempfile.mkdtemp(prefix="diffinfinite-demo-")) / DEMO_CANVAS_NAME
    store, rect = create_demo_canvas(folder, model, settings=extra or None)
    return store, rect, canvas_layer_data(store, centre_px=rect.centre)


def start_generating(store, model, rect, **scheduler_options):
    """Start generating the tiles around the centre of ``rect`` now, while napari builds the layers (seconds on
    a small CPU); the canvas controller adopts the scheduler. None without a model or a Qt application (then
    nobody would show or stop it)."""
    from qtpy.QtWidgets import QApplication

    if model is None or QApplication.instance() is None:
        return None
    from .canvas.scheduler import EarlyStart

    return EarlyStart(store, model, centre_px=rect.centre, **scheduler_options)


def schedule_demo_canvas(folder, manifest, spec) -> None:
    """On the next turns of the event loop: make the demo canvas in ``folder`` for the model of ``manifest``,
    then open it in the current viewer (the controller adds the tissue layer, adopts the Labels window and loads
    ``spec``)."""
    from qtpy.QtCore import QTimer

    from .widgets.opening import OPEN_STEP_MS

    def make():
        from .widgets.canvas_controller import notify

        try:
            store, rect = create_demo_canvas(folder, manifest, settings={"model_source": spec.source})
        except Exception as exc:  # noqa: BLE001 - a full disk, say: shown, not raised into Qt
            notify(f"DiffInfinite: the demo canvas could not be made in {folder}: {exc}")
            return
        # the model starts loading now, beside the tissue layer (the controller's load then finds it loaded, or
        # waits for it, and reports its errors)
        start_loading(spec)
        QTimer.singleShot(OPEN_STEP_MS, lambda: attach(store, rect))

    def attach(store, rect):
        import napari

        from .widgets.canvas_controller import notify, open_canvas

        viewer = napari.current_viewer()
        if viewer is None:
            store.close()
            return
        try:
            open_canvas(viewer, store=store, model_spec=spec, camera=(rect.centre, 1.0), start=True)
        except Exception as exc:  # noqa: BLE001
            notify(f"DiffInfinite: the demo canvas {folder} is shown but cannot be edited: {exc}", "warning")

    QTimer.singleShot(OPEN_STEP_MS, make)


def start_loading(spec) -> None:
    """Start loading the model of ``spec`` in a thread of its own; whoever asks for it next (the controller's
    worker) finds it loaded or waits for it, and reports its errors."""
    import threading

    from .widgets.canvas_models import get_model

    def load():
        try:
            get_model(spec)
        except Exception:
            logging.getLogger(__name__).debug("loading %s failed", spec, exc_info=True)

    threading.Thread(target=load, name="diffinfinite-demo-model", daemon=True).start()


def demo_canvas() -> list[tuple]:
    """LayerData of a new demo canvas: the tissue pyramid and the mask window, or, while the model is not loaded
    yet, the mask window alone (the tissue layer follows a moment later). In napari the canvas is then opened at
    1:1 zoom centred on the mask and generation starts (the model: ``$DIFFINFINITE_MODEL`` or the embedded
    one). Without a model the mask is shown and a notification says how to pick one."""

    spec, manifest = demo_manifest()
    if manifest is not None:
        # not loaded yet. Each step in its own turn of the event loop, so that none adds to another's freeze:
        # now only the mask's Labels window, from the model's manifest (napari's first layer costs it most of
        # a second whatever we do); next the canvas store (zarr); then the tissue layer and the controller;
        # the model (and torch) in a worker thread; generation starts when the model is in
        import tempfile
        from pathlib import Path

        folder = Path(tempfile.mkdtemp(prefix="diffinfinite-demo-")) / DEMO_CANVAS_NAME
        schedule_demo_canvas(folder, manifest, spec)
        return [demo_mask_window(folder, manifest)]
    from .widgets.opening import schedule_attach

    model, spec, error = demo_model()
    store, rect, layers = new_demo_canvas(model, spec)
    early = start_generating(store, model, rect)
    schedule_attach(
        store.root,
        store=store,
        model=model,
        model_spec=spec,
        camera=(rect.centre, 1.0),
        start=model is not None,
        load_model=False,
        early=early,
    )
    if error is not None:
        notify_no_model(error)
    return layers
