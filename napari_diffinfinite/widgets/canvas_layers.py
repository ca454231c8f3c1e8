"""napari LayerData for a canvas store: the multiscale tissue layer and the bounded Labels window. No Qt:
the reader and the demo sample return these; :class:`~.canvas_controller.CanvasController` adds and drives
them.

- Tissue: ``store.tissue_levels()`` (array-likes that read the store, placeholders where tiles are missing;
  never a model), ``rgb``, ``multiscale``, ``scale`` = um per px.
- Mask: a ``(window, window)`` uint8 numpy window of the canvas mask at latent scale (one label per 8 image
  px), ``scale`` = 8 x um per px and ``translate`` so that it overlays the tissue.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import DISCLAIMER
from ..canvas.grid import CanvasGrid
from ..classes import ClassSet, class_set
from .canvas_view import DEFAULT_WINDOW, labels_translate, window_anchor_at, window_rect

if TYPE_CHECKING:  # the store imports zarr; these functions only call its methods
    from ..canvas.store import CanvasStore

__all__ = [
    "LABELS_NAME",
    "META_KEY",
    "TISSUE_NAME",
    "canvas_class_set",
    "canvas_layer_data",
    "canvas_meta",
    "classes_for",
    "labels_layer_kwargs",
    "read_window",
    "tissue_layer_kwargs",
    "window_layer_data",
    "window_layer_kwargs",
]

META_KEY = "diffinfinite_canvas"
TISSUE_NAME = "DiffInfinite tissue"
LABELS_NAME = "DiffInfinite mask"


def canvas_class_set(store: CanvasStore) -> ClassSet:
    return classes_for(store.num_classes)


def classes_for(num_classes: int) -> ClassSet:
    """The class set with ``num_classes`` labels; the 5-class set's names and colours for a label count that
    has no set of its own."""
    try:
        return class_set(num_classes)
    except ValueError:
        return class_set(5)


def canvas_meta(layer) -> dict | None:
    """The canvas metadata of a napari layer (``{"canvas": folder, "role": "tissue" | "labels", ...}``), or
    None for a layer that is not part of a canvas."""
    meta = getattr(layer, "metadata", None) or {}
    value = meta.get(META_KEY)
    return value if isinstance(value, dict) and "canvas" in value else None


def tissue_layer_kwargs(store: CanvasStore, name: str = TISSUE_NAME) -> dict:
    ps = store.pixel_size_um
    return {
        "name": name,
        "rgb": True,
        "multiscale": True,
        "scale": (ps, ps),
        "units": ("um", "um"),
        "contrast_limits": (0, 255),
        "metadata": {
            META_KEY: {
                "canvas": str(Path(store.root).resolve()),
                "role": "tissue",
                "model": store.model_name,
            },
            "disclaimer": DISCLAIMER,
        },
    }


def read_window(store: CanvasStore, anchor: tuple[int, int], window: int = DEFAULT_WINDOW) -> np.ndarray:
    """The canvas mask (level 0, latent scale) in the window at ``anchor``, as a writable uint8 array."""
    r = window_rect(anchor, store.grid, window)
    return np.array(store.read_labels(r), dtype=np.uint8, copy=True)


def labels_layer_kwargs(
    store: CanvasStore, anchor: tuple[int, int], window: int = DEFAULT_WINDOW, name: str = LABELS_NAME
) -> dict:
    return window_layer_kwargs(
        store.root, store.grid, store.pixel_size_um, canvas_class_set(store), anchor, window, name
    )


def window_layer_kwargs(
    folder,
    grid: CanvasGrid,
    pixel_size_um: float,
    classes: ClassSet,
    anchor: tuple[int, int],
    window: int = DEFAULT_WINDOW,
    name: str = LABELS_NAME,
) -> dict:
    """The Labels window's kwargs from the canvas geometry alone: the demo shows its mask with these before
    its store exists (no zarr needed yet)."""
    ps, d = float(pixel_size_um), grid.downsampling
    return {
        "name": name,
        "scale": (d * ps, d * ps),
        "translate": labels_translate(anchor, d, ps),
        "units": ("um", "um"),
        "colormap": classes.color_dict(),
        "features": classes.features(),
        "opacity": 0.45,
        "metadata": {
            META_KEY: {
                "canvas": str(Path(folder).resolve()),
                "role": "labels",
                "anchor": [int(a) for a in anchor],
                "window": int(window),
                "class_set": classes.key,
            },
            "disclaimer": DISCLAIMER,
        },
    }


def window_layer_data(
    folder,
    grid: CanvasGrid,
    pixel_size_um: float,
    num_classes: int,
    centre_px: tuple[float, float],
    *,
    labels: np.ndarray | None = None,
    labels_at: tuple[int, int] = (0, 0),
    window: int = DEFAULT_WINDOW,
) -> tuple:
    """LayerData of a Labels window centred on ``centre_px`` from the canvas geometry alone (no store, no zarr):
    all 0 but for ``labels`` placed with their top-left corner at latent pixel ``labels_at``. The reader and the
    demo show it while the store opens; the controller that adopts it fills it from the store."""
    anchor = window_anchor_at(grid, centre_px, window)
    win = window_rect(anchor, grid, window)
    data = np.zeros((win.height, win.width), np.uint8)
    if labels is not None:
        y, x = labels_at[0] - win.y0, labels_at[1] - win.x0
        data[y : y + labels.shape[0], x : x + labels.shape[1]] = labels
    kwargs = window_layer_kwargs(folder, grid, pixel_size_um, classes_for(num_classes), anchor, window)
    return data, kwargs, "labels"


def canvas_layer_data(
    store: CanvasStore, *, centre_px: tuple[float, float] | None = None, window: int = DEFAULT_WINDOW
) -> list[tuple]:
    """LayerData ``[(tissue levels, kwargs, "image"), (mask window, kwargs, "labels")]`` for ``store``, the
    Labels window centred on ``centre_px`` (level-0 px; default: the canvas centre)."""
    anchor = window_anchor_at(store.grid, store.grid.centre() if centre_px is None else centre_px, window)
    return [
        (store.tissue_levels(), tissue_layer_kwargs(store), "image"),
        (read_window(store, anchor, window), labels_layer_kwargs(store, anchor, window), "labels"),
    ]
