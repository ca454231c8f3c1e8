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

log = logging.getLogger(__name__)

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
    """LayerData of the demo canvas's Labels window, computed before the canvas exists (no zarr, no store) from
    what the canvas is made for: a model's manifest, a loaded model or :data:`NO_MODEL_GEOMETRY` (anything with
    ``downsampling``, ``num_classes`` and ``pixel_size_um``). It is what the controller reads from the store
    once it is made."""
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


def demo_source():
    """What the demo canvas is made for: ``(spec, the loaded model or its manifest or None, the loaded model or
    None, an error message or None)``. The model is loaded here only when it is cached already or has no
    manifest (the released checkpoints); a missing or broken model is reported, not raised."""
    spec, manifest = demo_manifest()
    if manifest is not None:
        return spec, manifest, None, None
    model, spec, error = demo_model()
    return spec, model, model, error


def schedule_demo_canvas(
    folder, made_for, spec, *, model=None, viewer=None, settings=None, on_open=None, **open_options
) -> None:
    """On the next turns of the event loop, each in its own (napari has just added the mask window, its first
    layer's freeze): make the demo canvas in ``folder`` for ``made_for`` (a loaded model, its manifest, or None
    for the default geometry), the model starting to load in a thread if only its manifest is known; then open
    it in ``viewer`` (default: the current one) at 1:1 on the mask: the controller adds the tissue layer under
    the mask window and generates with ``model``, or loads ``spec`` (unless ``load_model=False`` in
    ``open_options``, which go to :func:`~.widgets.canvas_controller.open_canvas`). ``on_open(controller, rect)``
    after."""
    from qtpy.QtCore import QTimer

    from .widgets.opening import OPEN_STEP_MS

    load_model = open_options.pop("load_model", made_for is not None and model is None)

    def make():
        from .widgets.canvas_controller import notify

        extra = dict(settings or {})
        if made_for is not None:
            extra.setdefault("model_source", spec.source)
        try:
            store, rect = create_demo_canvas(folder, made_for, settings=extra or None)
        except Exception as exc:  # noqa: BLE001 - a full disk, say: shown, not raised into Qt
            notify(f"DiffInfinite: the demo canvas could not be made in {folder}: {exc}")
            return
        if made_for is not None and model is None:
            # the model starts loading now (the controller's load finds it, or waits): the first tile 0.8 s
            # sooner than loading after the layers, for up to 0.25 s more of the longest freeze (the load holds
            # the GIL beside the next turns)
            start_loading(spec)
        QTimer.singleShot(OPEN_STEP_MS, lambda: attach(store, rect))

    def attach(store, rect):
        import napari

        from .widgets.canvas_controller import notify, open_canvas

        target = viewer if viewer is not None else napari.current_viewer()
        if target is None:
            store.close()
            return
        try:
            ctrl = open_canvas(
                target,
                store=store,
                model=model,
                model_spec=spec,
                camera=(rect.centre, 1.0),
                start=made_for is not None,
                load_model=load_model,
                **open_options,
            )
            if on_open is not None:
                on_open(ctrl, rect)
        except Exception as exc:
            log.exception("opening the demo canvas %s failed", folder)
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
            log.debug("loading %s failed", spec, exc_info=True)

    threading.Thread(target=load, name="diffinfinite-demo-model", daemon=True).start()


def demo_canvas() -> list[tuple]:
    """LayerData of a new demo canvas: the mask window now, from the model's manifest (or the loaded model);
    in napari's next turns the canvas store, the tissue layer under the mask and generation at 1:1 on the mask
    (the model: ``$DIFFINFINITE_MODEL`` or the embedded one, loaded in a worker thread). Without a model the
    mask is shown and a notification says how to pick one. Without a Qt application (a script), the tissue
    layer and the window of a new canvas, nothing generating."""
    import tempfile
    from pathlib import Path

    from qtpy.QtWidgets import QApplication

    spec, made_for, model, error = demo_source()
    folder = Path(tempfile.mkdtemp(prefix="diffinfinite-demo-")) / DEMO_CANVAS_NAME
    if QApplication.instance() is None:
        from .widgets.canvas_layers import canvas_layer_data

        store, rect = create_demo_canvas(folder, made_for)
        return canvas_layer_data(store, centre_px=rect.centre)
    schedule_demo_canvas(folder, made_for, spec, model=model)
    if error is not None:
        notify_no_model(error)
    return [demo_mask_window(folder, made_for or NO_MODEL_GEOMETRY)]
