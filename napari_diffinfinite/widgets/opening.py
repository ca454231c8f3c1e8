"""Opening a canvas in turns of napari's event loop, so that no step adds to another's freeze.

napari freezes for most of a second as it adds its first layer, whatever the layer. The reader and the demo
sample therefore return only the mask's Labels window (built from the canvas's geometry, without zarr), and
:func:`schedule_attach` does the rest in turns of its own, :data:`OPEN_STEP_MS` apart: open the store (zarr's
import and the open: 0.3-0.4 s), then add the tissue layer under the mask and drive the canvas
(:func:`~.canvas_controller.open_canvas`, which fills the window from the store). This module imports neither
zarr nor the controller, so napari's call into the reader stays short.
"""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["OPEN_STEP_MS", "find_canvas_layers", "schedule_attach"]

log = logging.getLogger(__name__)

#: Pause between the steps of opening a canvas (ms): long enough for napari to paint and take input between
#: them (a zero-delay timer would run in the same turn of the event loop, one freeze instead of several).
OPEN_STEP_MS = 40


def find_canvas_layers(viewer, folder) -> tuple:
    """``(tissue layer, labels layer)`` of the canvas in ``folder`` among ``viewer``'s layers (None where one
    is missing), found by their canvas metadata."""
    from .canvas_layers import canvas_meta

    folder = str(Path(folder).resolve())
    tissue = labels = None
    for layer in viewer.layers:
        meta = canvas_meta(layer)
        if meta is None or meta.get("canvas") != folder:
            continue
        if meta.get("role") == "tissue":
            tissue = layer
        elif meta.get("role") == "labels":
            labels = layer
    return tissue, labels


def schedule_attach(folder, *, store=None, **kwargs) -> None:
    """After napari has added a canvas's mask window (and perhaps its tissue layer), drive the canvas in the
    current viewer through :func:`~.canvas_controller.open_canvas` with ``kwargs``; without ``store``, the store
    is opened first, in a turn of its own. Does nothing without a Qt application."""
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    if QApplication.instance() is None:
        return

    def open_store():
        from .canvas_controller import notify, open_store

        try:
            opened = open_store(folder)
        except Exception as exc:  # shown, not raised into Qt
            log.exception("opening the canvas %s failed", folder)
            notify(f"DiffInfinite: the canvas {folder} cannot be opened: {exc}")
            return
        QTimer.singleShot(OPEN_STEP_MS, lambda: attach(opened))

    def attach(opened):
        attached = False
        try:
            import napari

            from .canvas_controller import controller_for, open_canvas

            viewer = napari.current_viewer()
            _tissue, labels = (None, None) if viewer is None else find_canvas_layers(viewer, folder)
            current = None if viewer is None else controller_for(viewer)
            if labels is None or (current is not None and current.labels_layer is labels):
                return
            open_canvas(viewer, store=opened, **kwargs)
            attached = True
        except Exception as exc:
            log.exception("attaching the canvas %s failed", folder)
            from .canvas_controller import notify

            notify(f"DiffInfinite: the canvas {folder} is shown but cannot be edited: {exc}", "warning")
        finally:
            if not attached and store is None:  # nobody drives the canvas: let others write it
                opened.close()

    if store is None:
        QTimer.singleShot(OPEN_STEP_MS, open_store)
    else:
        QTimer.singleShot(0, lambda: attach(store))
