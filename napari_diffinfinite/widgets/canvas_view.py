"""Geometry between napari's camera and a canvas: the visible rectangle, the pyramid level, the Labels window
and selections. Plain functions over numbers (no Qt, no napari, no torch), so they are tested without a GUI.

World coordinates are napari's: micrometres, ``world = pixel * pixel_size`` for level-0 image pixels (the tissue
layer's ``scale``). The camera ``zoom`` is screen pixels per world unit, so one screen pixel per image pixel
(1:1) is ``zoom = 1 / pixel_size``. Rectangles are :class:`~napari_diffinfinite.canvas.grid.Rect` in slice
order ``(y0, y1, x0, x1)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..canvas.grid import CanvasGrid, Rect, as_rect

__all__ = [
    "DEFAULT_WINDOW",
    "WINDOW_ALIGN",
    "CanvasView",
    "camera_for_rect",
    "changed_bbox",
    "labels_translate",
    "level_for_zoom",
    "needs_reanchor",
    "rect_from_vertices",
    "view_from_camera",
    "window_anchor",
    "window_anchor_at",
]

#: Side of the Labels window in latent pixels (one label per 8 image px): 2048 labels = 16,384 image px.
DEFAULT_WINDOW = 2048
#: Window anchors sit on multiples of this many latent pixels (the label store's chunk side).
WINDOW_ALIGN = 512


@dataclass(frozen=True)
class CanvasView:
    """What the camera shows: ``rect`` in level-0 px (clipped to the canvas) and the pyramid ``level`` napari
    draws at that zoom (one data pixel or more per screen pixel)."""

    level: int
    rect: Rect
    px_per_screen_px: float


def level_for_zoom(px_per_screen_px: float, levels: int) -> int:
    """The pyramid level napari picks: the coarsest whose pixels are still no bigger than a screen pixel
    (``floor(log2(image px per screen px))``, clipped to ``0 .. levels - 1``)."""
    if not math.isfinite(px_per_screen_px) or px_per_screen_px <= 1:
        return 0
    # a hair of tolerance, so that exactly 2x, 4x... zoom-outs pick the coarser level as napari does
    return max(0, min(levels - 1, math.floor(math.log2(px_per_screen_px) + 1e-9)))


def view_from_camera(
    center: Sequence[float], zoom: float, canvas_size: Sequence[int], pixel_size: float, grid: CanvasGrid
) -> CanvasView:
    """The visible level-0 rectangle and level for a camera ``center`` (world ``(y, x)``; a 3-tuple's last
    two), ``zoom`` and ``canvas_size`` (screen ``(height, width)``)."""
    cy, cx = (float(v) for v in tuple(center)[-2:])
    h, w = (max(1, int(v)) for v in canvas_size)
    if zoom <= 0 or pixel_size <= 0:
        raise ValueError(f"zoom and pixel size must be positive, got {zoom} and {pixel_size}")
    half_h, half_w = h / 2 / zoom / pixel_size, w / 2 / zoom / pixel_size
    py, px = cy / pixel_size, cx / pixel_size
    # pixel i covers world [(i - 0.5) * s, (i + 0.5) * s): shift by half a pixel to pixel edges
    rect = grid.clip((py - half_h + 0.5, py + half_h + 0.5, px - half_w + 0.5, px + half_w + 0.5))
    ppsp = 1.0 / (zoom * pixel_size)
    return CanvasView(level_for_zoom(ppsp, grid.levels), rect, ppsp)


def camera_for_rect(rect_px, pixel_size: float) -> tuple[float, float]:
    """The camera centre (world ``(y, x)``) that puts the centre of level-0 rectangle ``rect_px`` mid-screen."""
    r = as_rect(rect_px)
    cy, cx = r.centre
    # pixel i's centre is world i * s; the centre of pixels y0..y1-1 is ((y0 + y1 - 1) / 2) * s
    return (cy - 0.5) * pixel_size, (cx - 0.5) * pixel_size


# ---------------------------------------------------------------------------------------------- labels window
def window_anchor(
    view_rect_px, grid: CanvasGrid, window: int = DEFAULT_WINDOW, align: int = WINDOW_ALIGN
) -> tuple[int, int]:
    """Top-left latent pixel of the Labels window for a view: the window (``window`` latents a side, or the
    whole latent canvas if smaller) centred on the view's centre, its corner on a multiple of ``align``, and
    inside the canvas."""
    lh, lw = grid.latent_shape
    wh, ww = min(window, lh), min(window, lw)
    cy, cx = as_rect(view_rect_px).centre
    d = grid.downsampling

    def one(c, side, size):
        a = round((c / d - side / 2) / align) * align
        return max(0, min(a, size - side))

    return one(cy, wh, lh), one(cx, ww, lw)


def window_anchor_at(
    grid: CanvasGrid, centre_px: tuple[float, float], window: int = DEFAULT_WINDOW
) -> tuple[int, int]:
    """:func:`window_anchor` for a view centred on level-0 pixel ``centre_px``."""
    cy, cx = (int(c) for c in centre_px)
    return window_anchor(Rect(cy, cy + 1, cx, cx + 1), grid, window)


def window_rect(anchor: tuple[int, int], grid: CanvasGrid, window: int = DEFAULT_WINDOW) -> Rect:
    """The latent rectangle of a window at ``anchor``."""
    lh, lw = grid.latent_shape
    y, x = anchor
    return Rect(y, min(y + window, lh), x, min(x + window, lw))


def needs_reanchor(
    view_rect_px,
    anchor: tuple[int, int],
    grid: CanvasGrid,
    window: int = DEFAULT_WINDOW,
    align: int = WINDOW_ALIGN,
    margin: int = 64,
) -> bool:
    """Whether the window at ``anchor`` should move for this view: the view (in latents, grown by ``margin``)
    is not inside the window while the window for the view would sit elsewhere."""
    view = grid.px_to_latent(view_rect_px).grow(margin)
    lh, lw = grid.latent_shape
    view = view.intersect(Rect(0, lh, 0, lw))
    win = window_rect(anchor, grid, window)
    inside = win.y0 <= view.y0 and view.y1 <= win.y1 and win.x0 <= view.x0 and view.x1 <= win.x1
    return not inside and window_anchor(view_rect_px, grid, window, align) != tuple(anchor)


def labels_translate(anchor: tuple[int, int], downsampling: int, pixel_size: float) -> tuple[float, float]:
    """World translation of a Labels layer whose pixel (0, 0) is latent pixel ``anchor`` (scale
    ``downsampling * pixel_size``): a label covers image pixels ``8k .. 8k + 7``, so its centre is image pixel
    ``8k + 3.5``."""
    off = (downsampling - 1) / 2
    return ((anchor[0] * downsampling + off) * pixel_size, (anchor[1] * downsampling + off) * pixel_size)


def changed_bbox(before: np.ndarray, after: np.ndarray) -> tuple[Rect, np.ndarray] | None:
    """The bounding box (array pixels) of where two same-shaped arrays differ, and the difference mask inside
    it; ``None`` where they are equal. Costs two reductions over the arrays (a few ms for 2048 x 2048)."""
    diff = before != after
    rows = np.flatnonzero(diff.any(axis=1))
    if not len(rows):
        return None
    cols = np.flatnonzero(diff.any(axis=0))
    r = Rect(int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    return r, diff[r.slices]


def rect_from_vertices(vertices_world: np.ndarray, pixel_size: float, grid: CanvasGrid | None = None) -> Rect:
    """The level-0 pixel rectangle covering shape vertices given in world coordinates (``(n, 2)``, y then x;
    extra leading columns are dropped), clipped to the canvas if ``grid`` is given."""
    v = np.asarray(vertices_world, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] == 0 or v.shape[1] < 2:
        raise ValueError(f"a selection needs vertices (n, 2); got shape {v.shape}")
    v = v[:, -2:] / pixel_size
    r = as_rect((v[:, 0].min() + 0.5, v[:, 0].max() + 0.5, v[:, 1].min() + 0.5, v[:, 1].max() + 0.5))
    return r if grid is None else grid.clip(r)
