"""Geometry of the canvas: pixels, latents, tiles and pyramid levels. Pure Python (no numpy, no torch).

Conventions used everywhere in :mod:`napari_diffinfinite.canvas`:

- Coordinates are integers, ``y`` before ``x``; rectangles are :class:`Rect` ``(y0, y1, x0, x1)`` in *slice
  order*, end-exclusive, so ``array[r.y0:r.y1, r.x0:r.x1]`` is the rectangle.
- Image pixels ("px") are level-0 pixels of the canvas. A latent pixel covers ``downsampling`` (8) px a side.
- A *tile* is ``tile`` (512) px = ``tile // downsampling`` (64) latents a side. One tile is one generation
  block, one chunk of every array of the store, and one pixel tile of every pyramid level.
- A :data:`TileKey` ``(i, j)`` (row, column) names a level-0 tile; pyramid tiles are ``(level, i, j)``.
- Pyramid level ``L`` is the canvas downsampled ``2**L`` times (``ceil`` of the sizes). Levels go on until the
  whole canvas fits in one tile, so the coarsest level is one tile.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import numpy as np

TileKey = tuple[int, int]

#: Default canvas side: 2**20 = 1,048,576 px (0.5 m at 0.5 um / px).
DEFAULT_SIDE = 2**20
DEFAULT_TILE = 512
DEFAULT_DOWNSAMPLING = 8


class Rect(NamedTuple):
    """An end-exclusive rectangle in slice order: rows ``y0:y1``, columns ``x0:x1``."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def empty(self) -> bool:
        return self.y1 <= self.y0 or self.x1 <= self.x0

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def centre(self) -> tuple[float, float]:
        return (self.y0 + self.y1) / 2, (self.x0 + self.x1) / 2

    def intersect(self, other: Rect) -> Rect:
        r = Rect(
            max(self.y0, other.y0), min(self.y1, other.y1), max(self.x0, other.x0), min(self.x1, other.x1)
        )
        return r if not r.empty else Rect(r.y0, r.y0, r.x0, r.x0)

    def grow(self, by: int) -> Rect:
        return Rect(self.y0 - by, self.y1 + by, self.x0 - by, self.x1 + by)

    def union(self, other: Rect) -> Rect:
        if self.empty:
            return other
        if other.empty:
            return self
        return Rect(
            min(self.y0, other.y0), max(self.y1, other.y1), min(self.x0, other.x0), max(self.x1, other.x1)
        )

    def scaled_out(self, factor: int) -> Rect:
        """The rectangle at ``factor`` times coarser resolution that covers this one (floor / ceil)."""
        return Rect(self.y0 // factor, -(-self.y1 // factor), self.x0 // factor, -(-self.x1 // factor))

    def scaled_in(self, factor: int) -> Rect:
        """The same rectangle at ``factor`` times finer resolution."""
        return Rect(self.y0 * factor, self.y1 * factor, self.x0 * factor, self.x1 * factor)

    def offset(self, dy: int, dx: int) -> Rect:
        return Rect(self.y0 + dy, self.y1 + dy, self.x0 + dx, self.x1 + dx)


def as_rect(rect) -> Rect:
    """A :class:`Rect` from any 4-sequence in slice order ``(y0, y1, x0, x1)`` (numbers are floored / ceiled
    outwards, so a float view rectangle gives every pixel it touches)."""
    y0, y1, x0, x1 = rect
    return Rect(math.floor(y0), math.ceil(y1), math.floor(x0), math.ceil(x1))


@dataclass(frozen=True)
class CanvasGrid:
    """The tile grid and pyramid of a ``height`` x ``width`` px canvas.

    ``height`` and ``width`` must be multiples of ``tile``; ``tile`` a multiple of ``downsampling``.
    """

    height: int = DEFAULT_SIDE
    width: int = DEFAULT_SIDE
    tile: int = DEFAULT_TILE
    downsampling: int = DEFAULT_DOWNSAMPLING

    def __post_init__(self):
        for name in ("height", "width", "tile", "downsampling"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.tile % self.downsampling:
            raise ValueError(
                f"tile ({self.tile} px) must be a multiple of the downsampling ({self.downsampling})"
            )
        if self.height % self.tile or self.width % self.tile:
            raise ValueError(
                f"the canvas ({self.height} x {self.width} px) must be a whole number of {self.tile}-px tiles a side"
            )

    # ------------------------------------------------------------------ sizes
    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def latent_tile(self) -> int:
        """Latent pixels per tile side (64)."""
        return self.tile // self.downsampling

    @property
    def latent_shape(self) -> tuple[int, int]:
        return self.height // self.downsampling, self.width // self.downsampling

    @property
    def tiles_shape(self) -> tuple[int, int]:
        """(rows, cols) of level-0 tiles."""
        return self.height // self.tile, self.width // self.tile

    @property
    def levels(self) -> int:
        """Number of pyramid levels: 0 .. levels - 1, the last one a single tile."""
        n = 1
        while self.level_shape(n - 1)[0] > self.tile or self.level_shape(n - 1)[1] > self.tile:
            n += 1
        return n

    def level_shape(self, level: int) -> tuple[int, int]:
        """Pixels (h, w) of pyramid level ``level`` (``ceil`` of the canvas size / ``2**level``)."""
        f = 1 << level
        return -(-self.height // f), -(-self.width // f)

    def level_tiles_shape(self, level: int) -> tuple[int, int]:
        h, w = self.level_shape(level)
        return -(-h // self.tile), -(-w // self.tile)

    @property
    def level_shapes(self) -> list[tuple[int, int]]:
        return [self.level_shape(level) for level in range(self.levels)]

    def check_level(self, level: int) -> int:
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level < self.levels:
            raise ValueError(f"level must be an int in 0..{self.levels - 1}, got {level!r}")
        return level

    def check_tile(self, key) -> TileKey:
        i, j = (int(v) for v in key)
        rows, cols = self.tiles_shape
        if not (0 <= i < rows and 0 <= j < cols):
            raise ValueError(f"tile {key!r} is outside the canvas's {rows} x {cols} tiles")
        return i, j

    # ------------------------------------------------------------------ rectangles
    def bounds(self, level: int = 0) -> Rect:
        h, w = self.level_shape(level)
        return Rect(0, h, 0, w)

    def clip(self, rect, level: int = 0) -> Rect:
        return as_rect(rect).intersect(self.bounds(level))

    def tile_rect(self, key: TileKey, level: int = 0) -> Rect:
        """Pixels of tile ``key`` of ``level`` (clipped to the level's size)."""
        i, j = key
        t = self.tile
        return Rect(i * t, (i + 1) * t, j * t, (j + 1) * t).intersect(self.bounds(level))

    def tile_latent_rect(self, key: TileKey) -> Rect:
        """Latent pixels of level-0 tile ``key``."""
        i, j = key
        t = self.latent_tile
        return Rect(i * t, (i + 1) * t, j * t, (j + 1) * t)

    def tiles_in_rect(self, rect, level: int = 0) -> list[TileKey]:
        """Tiles of ``level`` intersecting ``rect`` (level-``level`` px), row-major. Rectangles partly or wholly
        outside the canvas are clipped first."""
        r = self.clip(rect, level)
        if r.empty:
            return []
        t = self.tile
        return [(i, j) for i in range(r.y0 // t, -(-r.y1 // t)) for j in range(r.x0 // t, -(-r.x1 // t))]

    def tiles_changed(self, rect_latent, changed: np.ndarray) -> list[TileKey]:
        """Tiles holding a True of ``changed`` (a bool array over the level-0 latent rectangle ``rect_latent``),
        row-major: exactly the tiles an edit touched, not every tile under its bounding box."""
        r = as_rect(rect_latent)
        return [
            k
            for k in self.tiles_in_rect(self.latent_to_px(r))
            if changed[self.tile_latent_rect(k).intersect(r).offset(-r.y0, -r.x0).slices].any()
        ]

    def tile_range(self, rect, level: int = 0) -> Rect:
        """The tiles intersecting ``rect`` as a rectangle of tile indices (empty if none)."""
        r = self.clip(rect, level)
        if r.empty:
            return Rect(0, 0, 0, 0)
        return r.scaled_out(self.tile)

    # ------------------------------------------------------------------ levels
    def level_rect(self, rect_px, level: int) -> Rect:
        """The level-``level`` pixels covering level-0 rectangle ``rect_px`` (clipped)."""
        return self.clip(as_rect(rect_px).scaled_out(1 << level), level)

    @staticmethod
    def parent(level: int, i: int, j: int) -> tuple[int, int, int]:
        """The level-``level + 1`` tile that level-``level`` tile ``(i, j)`` feeds (2 x 2 tiles per parent)."""
        return level + 1, i // 2, j // 2

    def children(self, level: int, i: int, j: int) -> list[tuple[int, int, int]]:
        """The level-``level - 1`` tiles that feed tile ``(i, j)`` of ``level`` (those inside the canvas)."""
        if level < 1:
            return []
        rows, cols = self.level_tiles_shape(level - 1)
        return [
            (level - 1, y, x) for y in (2 * i, 2 * i + 1) for x in (2 * j, 2 * j + 1) if y < rows and x < cols
        ]

    # ------------------------------------------------------------------ conversions
    def px_to_latent(self, rect_px) -> Rect:
        """The latent pixels covering an image-pixel rectangle (floor / ceil)."""
        return as_rect(rect_px).scaled_out(self.downsampling)

    def latent_to_px(self, rect_latent) -> Rect:
        return as_rect(rect_latent).scaled_in(self.downsampling)

    def px_to_tile(self, y: float, x: float, level: int = 0) -> TileKey:
        """The tile of ``level`` that contains pixel ``(y, x)`` of that level."""
        return int(y // self.tile), int(x // self.tile)

    def neighbours(self, key: TileKey, radius: int = 1) -> list[TileKey]:
        """The tiles within ``radius`` (Chebyshev) of ``key``, itself excluded, inside the canvas."""
        i, j = key
        rows, cols = self.tiles_shape
        return [
            (y, x)
            for y in range(max(0, i - radius), min(rows, i + radius + 1))
            for x in range(max(0, j - radius), min(cols, j + radius + 1))
            if (y, x) != (i, j)
        ]

    # ------------------------------------------------------------------ ordering
    def centre_first(self, tiles: Iterable[TileKey], rect, level: int = 0) -> list[TileKey]:
        """Level-``level`` ``tiles`` ordered by the distance of their centres from the centre of ``rect``
        (level-``level`` px), nearest first; ties broken by (row, column), so the order is reproducible."""
        cy, cx = as_rect(rect).centre
        t = self.tile

        def key(k: TileKey):
            dy, dx = (k[0] + 0.5) * t - cy, (k[1] + 0.5) * t - cx
            return dy * dy + dx * dx, k

        return sorted(tiles, key=key)

    def view_tiles(self, rect_px, *, max_tiles: int | None = None) -> list[TileKey]:
        """Level-0 tiles under the level-0 rectangle ``rect_px``, centre first, at most ``max_tiles``
        (the nearest to the centre)."""
        tiles = self.centre_first(self.tiles_in_rect(rect_px), rect_px)
        return tiles if max_tiles is None else tiles[:max_tiles]

    def centre(self) -> tuple[int, int]:
        """The canvas's centre pixel (where a new canvas starts)."""
        return self.height // 2, self.width // 2

    def as_dict(self) -> dict:
        return {
            "shape_px": [self.height, self.width],
            "tile_px": self.tile,
            "downsampling": self.downsampling,
            "latent_shape": list(self.latent_shape),
            "tiles": list(self.tiles_shape),
            "levels": self.levels,
            "level_shapes": [list(s) for s in self.level_shapes],
        }
