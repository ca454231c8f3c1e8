"""napari LayerData for a canvas store: the multiscale tissue layer and the bounded Labels window. No Qt:
the reader and the demo sample return these; :class:`~.canvas_controller.CanvasController` adds and drives
them.

- Tissue: ``store.tissue_levels()`` (array-likes that read the store, placeholders where tiles are missing;
  never a model), ``rgb``, ``multiscale``, ``scale`` = um per px.
- Mask: a ``(window, window)`` uint8 numpy window of the canvas mask at latent scale (one label per 8 image
  px), ``scale`` = 8 x um per px and ``translate`` so that it overlays the tissue.
- :class:`PrefetchLevel`: a tissue level that the controller reads ahead around the view on an I/O thread, so
  that napari's slicing on the GUI thread is served from memory.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from .. import DISCLAIMER
from ..canvas.grid import Rect
from ..canvas.store import CanvasStore, RGBLevelArray
from ..classes import ClassSet, class_set
from .canvas_view import DEFAULT_WINDOW, labels_translate, window_anchor, window_rect

__all__ = [
    "LABELS_NAME",
    "META_KEY",
    "TISSUE_NAME",
    "PrefetchLevel",
    "canvas_class_set",
    "canvas_layer_data",
    "canvas_meta",
    "labels_layer_kwargs",
    "read_window",
    "tissue_layer_kwargs",
]

META_KEY = "diffinfinite_canvas"
TISSUE_NAME = "DiffInfinite tissue"
LABELS_NAME = "DiffInfinite mask"


def canvas_class_set(store: CanvasStore) -> ClassSet:
    try:
        return class_set(store.num_classes)
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
    ps, d = store.pixel_size_um, store.grid.downsampling
    classes = canvas_class_set(store)
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
                "canvas": str(Path(store.root).resolve()),
                "role": "labels",
                "anchor": [int(a) for a in anchor],
                "window": int(window),
                "class_set": classes.key,
            },
            "disclaimer": DISCLAIMER,
        },
    }


def canvas_layer_data(
    store: CanvasStore, *, centre_px: tuple[float, float] | None = None, window: int = DEFAULT_WINDOW
) -> list[tuple]:
    """LayerData ``[(tissue levels, kwargs, "image"), (mask window, kwargs, "labels")]`` for ``store``, the
    Labels window centred on ``centre_px`` (level-0 px; default: the canvas centre)."""
    if centre_px is None:
        centre_px = store.grid.centre()
    cy, cx = centre_px
    anchor = window_anchor(Rect(int(cy), int(cy) + 1, int(cx), int(cx) + 1), store.grid, window)
    return [
        (store.tissue_levels(), tissue_layer_kwargs(store), "image"),
        (read_window(store, anchor, window), labels_layer_kwargs(store, anchor, window), "labels"),
    ]


def _plain_rect(key, shape) -> Rect | None:
    """The rectangle of a ``[y0:y1, x0:x1(, :)]`` slicing with unit steps (napari's kind), else None."""
    key = key if isinstance(key, tuple) else (key,)
    if len(key) == 3 and key[2] == slice(None):
        key = key[:2]
    if len(key) != 2 or not all(isinstance(k, slice) and k.step in (None, 1) for k in key):
        return None
    (y0, y1, _), (x0, x1, _) = key[0].indices(shape[0]), key[1].indices(shape[1])
    return Rect(y0, y1, x0, x1) if y1 > y0 and x1 > x0 else None


class PrefetchLevel(RGBLevelArray):
    """A tissue pyramid level for napari (``(h, w, 3)`` uint8 array-like) with a copy of the region around the
    view read ahead on another thread.

    :meth:`prefetch` (any thread) reads napari's last requested rectangle grown by ``margin`` of its height and
    width on every side (at most ``max_side`` px a side: 1920 x 1080 -> 4800 x 2700 px, 39 MB); napari's slicings inside that region are then served from memory - a refresh after tiles
    land, and pans that stay within the margin - instead of reading the store on the GUI thread. Other
    slicings read :class:`~napari_diffinfinite.canvas.store.TissueLevel` directly. The region is read again
    whenever tiles land in it (:meth:`CanvasController._on_tile_landed`), so it is never older than the
    last refresh.
    """

    def __init__(self, level, margin: float = 0.75, max_side: int = 6144):
        self.level = level
        self.store = level.store
        self.shape = level.shape
        self.margin = float(margin)
        self.max_side = int(max_side)
        self.last_rect: Rect | None = None
        self.hits = 0  # slicings served from the prefetched region
        self.misses = 0
        self._region: tuple[Rect, np.ndarray] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PrefetchLevel({self.level!r})"

    @property
    def region(self) -> Rect | None:
        """The level-pixel rectangle held in memory (None if none)."""
        held = self._region
        return None if held is None else held[0]

    def __getitem__(self, key):
        r = _plain_rect(key, self.shape)
        if r is None:
            return self.level[key]
        with self._lock:
            self.last_rect = r
            held = self._region
        if held is not None:
            hr, arr = held
            if hr.y0 <= r.y0 and r.y1 <= hr.y1 and hr.x0 <= r.x0 and r.x1 <= hr.x1:
                self.hits += 1
                return arr[r.y0 - hr.y0 : r.y1 - hr.y0, r.x0 - hr.x0 : r.x1 - hr.x0]
        self.misses += 1
        return self.level[r.y0 : r.y1, r.x0 : r.x1]

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.level, dtype=dtype)

    def prefetch(self) -> bool:
        """Read the region around napari's last requested rectangle now (any thread); False if none yet."""
        r = self.last_rect
        if r is None:
            return False
        gy = max(0, min(int(r.height * self.margin), (self.max_side - r.height) // 2))
        gx = max(0, min(int(r.width * self.margin), (self.max_side - r.width) // 2))
        grown = Rect(r.y0 - gy, r.y1 + gy, r.x0 - gx, r.x1 + gx).intersect(
            Rect(0, self.shape[0], 0, self.shape[1])
        )
        arr = np.ascontiguousarray(self.level[grown.y0 : grown.y1, grown.x0 : grown.x1])
        with self._lock:
            self._region = (grown, arr)
        return True

    def forget(self) -> None:
        with self._lock:
            self._region = None
