"""The persistent canvas: one zarr v3 group (a folder) with the latents, the class mask, the RGB tissue pyramid
and per-tile state. Nothing is allocated up front: every array has a fill value and only written chunks
exist on disk, so a 2**20 x 2**20 px canvas is a few kilobytes of metadata until tiles are generated.

Layout (``C`` latent channels, ``H x W`` px canvas, ``d`` = 8 px per latent, ``T`` = 512 px tiles, levels
``0 .. L - 1`` until the canvas fits one tile)::

    <folder>/zarr.json            group; attrs["diffinfinite"]: format, geometry, settings, status codes
    <folder>/latents              (C, H/d, W/d) float32, chunks (C, T/d, T/d) = one tile, fill 0
    <folder>/labels/zarr.json     group; attrs["ome"]: OME-Zarr 0.5 multiscales (axes y, x; d px per pixel)
    <folder>/labels/0 .. L-1      (H/d/2**k, W/d/2**k) uint8 class ids (0 = unlabelled), chunks (512, 512);
                                  level 0 is the mask the model is conditioned on (one label per latent), level
                                  k samples level k-1 every 2nd pixel (for placeholders at coarse zoom)
    <folder>/tissue/zarr.json     group; attrs["ome"]: OME-Zarr 0.5 multiscales + omero RGB rendering
    <folder>/tissue/0 .. L-1      (3, H/2**k, W/2**k) uint8 RGB, axes (c, y, x), chunks (3, T, T), fill 255;
                                  level k is the 2 x 2 mean of level k-1
    <folder>/status               (H/T, W/T) uint8 per tile: 0 empty, 1 latents written, 2 pixels written
    <folder>/version              (H/T, W/T) uint32 per tile: how many times its latents were written
    <folder>/seed                 (H/T, W/T) int64 per tile: -1 = the canvas seed, else a re-roll seed

Axes: OME-Zarr 0.4 and 0.5 require the channel axis before the spatial ones, so the tissue arrays are
``(c, y, x)``; napari wants RGB last. :meth:`CanvasStore.tissue_dask` therefore does not wrap the zarr
arrays: its chunks are produced by :meth:`CanvasStore.read_tissue` already as ``(y, x, 3)`` (one small copy
per chunk, which the compositing with placeholders needs anyway), so there is no dask ``transpose`` layer.

Crash safety: every key is written all-or-nothing (:class:`AtomicLocalStore`), a tile's chunks are written
before its status, and readers trust only tiles with status 2 (:meth:`read_tissue` shows the placeholder
elsewhere, at every level: a pyramid pixel shows tissue only if every tile under it has status 2). A tile
whose status is below 2 is regenerated; regeneration is deterministic, so a killed run resumes to the same
canvas.

Concurrency: any number of readers (other threads, other processes). Writers: one process at a time holds
``<folder>/.writer.lock`` (``flock``); inside it, the store's methods serialise their read-modify-writes.
Several writing processes (dask.distributed workers) must open with ``lock=False`` and write disjoint chunks:
latents and level-0 tiles only, while one coordinator writes status, the pyramid and the mask.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from .. import __version__
from .._json import plain_json
from ._atomic_store import (
    AtomicLocalStore,
    CanvasLockedError,
    WriterHandle,
    acquire_writer,
    release_writer,
    remove_stale_partials,
)
from .grid import DEFAULT_SIDE, CanvasGrid, Rect, TileKey, as_rect
from .header import ATTRS_KEY, FORMAT, FORMAT_VERSION, CanvasHeader

__all__ = [
    "DEFAULT_SETTINGS",
    "FORMAT",
    "FORMAT_VERSION",
    "STATUS_EMPTY",
    "STATUS_LATENTS",
    "STATUS_PIXELS",
    "CanvasLockedError",
    "CanvasStore",
    "placeholder_lut",
    "recorded_sampler",
]

NGFF_VERSION = "0.5"

STATUS_EMPTY = 0
STATUS_LATENTS = 1
STATUS_PIXELS = 2
STATUS_CODES = {STATUS_EMPTY: "empty", STATUS_LATENTS: "latents written", STATUS_PIXELS: "pixels written"}

#: Tiles per chunk side of the per-tile arrays (status, version, seed): 64 KiB of status per chunk.
TILE_ARRAY_CHUNK = 256
#: Chunk side of the label arrays (latent pixels): 8 x 8 tiles.
LABEL_CHUNK = 512
#: How long a read-only store trusts its in-memory copy of the status array (s).
STATUS_TTL = 1.0
#: Tissue fill value: white, like an empty slide, in viewers that do not know the status array.
TISSUE_FILL = 255


def recorded_sampler(settings: Mapping) -> str | None:
    """The image sampler a canvas's ``settings`` record: DDIM for canvases from before samplers were recorded,
    None for one made without a model (it takes the generating model's)."""
    return settings.get("sampler", "ddim")


DEFAULT_SETTINGS: dict[str, Any] = {
    "seed": 0,
    "omega": 3.0,
    "steps": 25,
    "context": None,
    "halo": 16,
    "lookahead": 8,  # sampling.blocks.LOOKAHEAD, recorded so that a canvas keeps sampling as it began
    "sampler": None,  # the image sampler (model.diffusion.SAMPLERS); None: the generating model's
    "mode": "batched",
    "pixel_size_um": 0.5,
    "num_classes": 5,
}

#: How strongly the placeholder shows a class colour over white (0: white, 1: the full colour).
PLACEHOLDER_ALPHA = 0.3
PLACEHOLDER_BACKGROUND = (246, 246, 246)


def placeholder_lut(num_classes: int) -> np.ndarray:
    """(256, 3) uint8: the placeholder colour of every label id - a faint tint of the class colour over a
    light grey (label 0 and ids outside the class set: the light grey itself)."""
    lut = np.tile(np.array(PLACEHOLDER_BACKGROUND, np.float64), (256, 1))
    try:
        from ..classes import class_set

        classes = class_set(num_classes)
    except ValueError:
        classes = ()
    for c in classes:
        r, g, b, a = c.color
        if c.id == 0 or a == 0:
            continue
        colour = np.array([r, g, b]) * 255
        lut[c.id] = lut[c.id] * (1 - PLACEHOLDER_ALPHA) + colour * PLACEHOLDER_ALPHA
    return np.round(lut).astype(np.uint8)


def _ngff_tissue(grid: CanvasGrid, pixel_size: float) -> dict:
    datasets = []
    for level in range(grid.levels):
        f = 1 << level
        datasets.append(
            {
                "path": str(level),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [1.0, pixel_size * f, pixel_size * f]},
                    # a 2 x 2 mean's pixel centre sits half a parent pixel in from its children's first centre
                    {
                        "type": "translation",
                        "translation": [0.0, pixel_size * (f - 1) / 2, pixel_size * (f - 1) / 2],
                    },
                ],
            }
        )

    def channel(label, colour):
        return {
            "label": label,
            "color": colour,
            "active": True,
            "coefficient": 1.0,
            "family": "linear",
            "inverted": False,
            "window": {"min": 0, "max": 255, "start": 0, "end": 255},
        }

    return {
        "version": NGFF_VERSION,
        "multiscales": [
            {
                "name": "tissue",
                "axes": [
                    {"name": "c", "type": "channel"},
                    {"name": "y", "type": "space", "unit": "micrometer"},
                    {"name": "x", "type": "space", "unit": "micrometer"},
                ],
                "datasets": datasets,
                "type": "mean",
                "metadata": {
                    "description": "2 x 2 mean of the level below (DiffInfinite canvas, synthetic H&E)"
                },
            }
        ],
        "omero": {
            "name": "tissue",
            "channels": [channel("R", "FF0000"), channel("G", "00FF00"), channel("B", "0000FF")],
            "rdefs": {"model": "color", "defaultT": 0, "defaultZ": 0},
        },
    }


def _ngff_labels(grid: CanvasGrid, pixel_size: float) -> dict:
    d = grid.downsampling
    datasets = []
    for level in range(grid.levels):
        s = pixel_size * d * (1 << level)
        datasets.append(
            {
                "path": str(level),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [s, s]},
                    {"type": "translation", "translation": [pixel_size * (d - 1) / 2] * 2},
                ],
            }
        )
    return {
        "version": NGFF_VERSION,
        "multiscales": [
            {
                "name": "labels",
                "axes": [
                    {"name": "y", "type": "space", "unit": "micrometer"},
                    {"name": "x", "type": "space", "unit": "micrometer"},
                ],
                "datasets": datasets,
                "type": "subsample",
                "metadata": {
                    "description": "class ids, 0 = unlabelled; level k takes every 2nd pixel of level k-1"
                },
            }
        ],
    }


def _chunks_1d(size: int, chunk: int) -> tuple[int, ...]:
    n, rest = divmod(size, chunk)
    return (chunk,) * n + ((rest,) if rest else ())


class _StatusMirror:
    """The whole status array in memory (rows x cols bytes: 4 MiB for a 2**20 px canvas)."""

    def __init__(self, ttl: float | None):
        self.ttl = ttl
        self.array: np.ndarray | None = None
        self.loaded = 0.0

    def get(self, status: zarr.Array) -> np.ndarray:
        now = time.monotonic()
        if self.array is None or (self.ttl is not None and now - self.loaded > self.ttl):
            self.array = np.asarray(status[:])
            self.loaded = now
        return self.array


def _pool2(block: np.ndarray) -> np.ndarray:
    """2 x 2 mean (rounded) over the last two axes of a uint8 array; an odd last row / column is averaged
    with itself."""
    h, w = block.shape[-2:]
    if h % 2 or w % 2:
        pad = [(0, 0)] * (block.ndim - 2) + [(0, h % 2), (0, w % 2)]
        block = np.pad(block, pad, mode="edge")
    b = block.astype(np.uint16)
    s = b[..., 0::2, 0::2] + b[..., 1::2, 0::2] + b[..., 0::2, 1::2] + b[..., 1::2, 1::2]
    return ((s + 2) // 4).astype(np.uint8)


class CanvasStore:
    """A canvas folder. Make one with :meth:`create` (or :meth:`create_for_model`), reopen it with :meth:`open`.

    Reads never run a model. Writes are serialised within the process and kept to one process by a lock.
    """

    def __init__(self, root: Path, group: zarr.Group, *, read_only: bool, handle: WriterHandle | None):
        self.root = root
        self._group = group
        self.read_only = read_only
        self._handle = handle
        self._lock = handle.lock if handle is not None else threading.RLock()
        # the status array mirrored in memory: shared by this process's writers (kept current by set_status),
        # refreshed every STATUS_TTL s for a read-only store; none for a writer without the lock (lock=False)
        if handle is None:
            self._mirror: _StatusMirror | None = _StatusMirror(ttl=STATUS_TTL)
        elif handle.exclusive:
            self._mirror = handle.shared.setdefault("status", _StatusMirror(ttl=None))
        else:
            self._mirror = None
        #: the recorded format, geometry and settings (kept current by update_settings)
        self.header = CanvasHeader.from_attrs(root, group.attrs[ATTRS_KEY])
        self.grid = self.header.grid
        self.latent_channels = self.header.latent_channels
        self.model_name = self.header.model_name
        self.latents = group["latents"]
        self.status = group["status"]
        self.version = group["version"]
        self.seed = group["seed"]
        self.tissue = [group[f"tissue/{k}"] for k in range(self.grid.levels)]
        self.labels = [group[f"labels/{k}"] for k in range(self.grid.levels)]
        self._lut = placeholder_lut(self.num_classes)

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(
        cls,
        folder,
        *,
        shape_px=(DEFAULT_SIDE, DEFAULT_SIDE),
        model_name: str,
        settings: Mapping | None = None,
        latent_channels: int = 4,
        downsampling: int = 8,
        tile: int = 512,
        overwrite: bool = False,
        fsync: bool = False,
        lock: bool = True,
    ) -> CanvasStore:
        """A new, empty canvas in ``folder`` (created; it must not exist or be empty unless ``overwrite``).

        ``settings`` are recorded in the group attributes over :data:`DEFAULT_SETTINGS` (seed, omega, steps,
        context, halo, lookahead, sampler, mode, pixel_size_um, num_classes; any other JSON values are kept too).
        """
        root = Path(folder)
        if root.exists() and not root.is_dir():
            raise FileExistsError(f"{root} exists and is not a folder")
        if root.exists() and any(root.iterdir()) and not overwrite:
            raise FileExistsError(f"{root} is not empty; choose a new folder or pass overwrite=True")
        h, w = (int(v) for v in shape_px)
        grid = CanvasGrid(h, w, tile=int(tile), downsampling=int(downsampling))
        if isinstance(latent_channels, bool) or int(latent_channels) < 1:
            raise ValueError(f"latent_channels must be a positive int, got {latent_channels!r}")
        merged = dict(DEFAULT_SETTINGS)
        merged.update(settings or {})
        merged["package_version"] = __version__
        if int(merged["seed"]) < 0:
            raise ValueError(f"the canvas seed must be >= 0, got {merged['seed']}")
        pixel_size = float(merged["pixel_size_um"])
        root.mkdir(parents=True, exist_ok=True)
        handle = acquire_writer(root, exclusive=lock)
        try:
            store = AtomicLocalStore(root, fsync=fsync)
            attrs = {
                ATTRS_KEY: plain_json(
                    {
                        "format": FORMAT,
                        "format_version": FORMAT_VERSION,
                        "model": model_name,
                        "geometry": dict(
                            grid.as_dict(), latent_channels=int(latent_channels), pixel_size_um=pixel_size
                        ),
                        "settings": merged,
                        "status_codes": {str(k): v for k, v in STATUS_CODES.items()},
                        "synthetic": True,
                    }
                ),
            }
            group = zarr.open_group(store=store, mode="w", zarr_format=3, attributes=attrs)
            lh, lw = grid.latent_shape
            lt = grid.latent_tile
            cfg = {"write_empty_chunks": False}
            group.create_array(
                "latents",
                shape=(int(latent_channels), lh, lw),
                chunks=(int(latent_channels), lt, lt),
                dtype="float32",
                fill_value=0.0,
                dimension_names=("c", "y", "x"),
                config=cfg,
            )
            rows, cols = grid.tiles_shape
            tc = (min(TILE_ARRAY_CHUNK, rows), min(TILE_ARRAY_CHUNK, cols))
            for name, dtype, fill in (
                ("status", "uint8", 0),
                ("version", "uint32", 0),
                ("seed", "int64", -1),
            ):
                group.create_array(
                    name,
                    shape=(rows, cols),
                    chunks=tc,
                    dtype=dtype,
                    fill_value=fill,
                    dimension_names=("tile_y", "tile_x"),
                    config=cfg,
                )
            tissue = group.create_group("tissue", attributes={"ome": _ngff_tissue(grid, pixel_size)})
            labels = group.create_group("labels", attributes={"ome": _ngff_labels(grid, pixel_size)})
            for level in range(grid.levels):
                th, tw = grid.level_shape(level)
                tissue.create_array(
                    str(level),
                    shape=(3, th, tw),
                    chunks=(3, tile, tile),
                    dtype="uint8",
                    fill_value=TISSUE_FILL,
                    dimension_names=("c", "y", "x"),
                    config=cfg,
                    compressors=ZstdCodec(level=1),
                )
                lh_k, lw_k = -(-lh // (1 << level)), -(-lw // (1 << level))
                labels.create_array(
                    str(level),
                    shape=(lh_k, lw_k),
                    chunks=(min(LABEL_CHUNK, lh_k), min(LABEL_CHUNK, lw_k)),
                    dtype="uint8",
                    fill_value=0,
                    dimension_names=("y", "x"),
                    config=cfg,
                )
            handle.shared.pop("status", None)  # a new canvas where an old one was (overwrite)
            return cls(root, zarr.open_group(store=store, mode="r+"), read_only=False, handle=handle)
        except BaseException:
            release_writer(handle)
            raise

    @classmethod
    def create_for_model(
        cls,
        folder,
        model,
        *,
        shape_px=(DEFAULT_SIDE, DEFAULT_SIDE),
        tile: int = 512,
        overwrite: bool = False,
        **settings,
    ) -> CanvasStore:
        """:meth:`create` with the name, latent channels, downsampling, steps, guidance, sampler, classes and
        pixel size of ``model`` (a :class:`~napari_diffinfinite.generation.DiffInfiniteModel`, or the
        :class:`~napari_diffinfinite.model_manifest.ModelManifest` of one not loaded yet); ``settings``
        override."""
        merged = {
            "steps": model.default_steps,
            "omega": model.default_omega,
            "sampler": model.sampler,
            "num_classes": model.num_classes,
            "pixel_size_um": model.pixel_size_um,
            "window": model.window,
        }
        merged.update(settings)
        return cls.create(
            folder,
            shape_px=shape_px,
            model_name=model.name,
            settings=merged,
            latent_channels=int(model.latent_channels),
            downsampling=model.downsampling,
            tile=tile,
            overwrite=overwrite,
        )

    @classmethod
    def open(cls, folder, mode: str = "r+", *, fsync: bool = False, lock: bool = True) -> CanvasStore:
        """Reopen a canvas: ``mode="r+"`` to generate into it (takes the writer lock, removes temporaries that
        a killed writer left), ``"r"`` to only read it (any number of readers, alongside one writer)."""
        root = Path(folder)
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
        if not (root / "zarr.json").is_file():
            raise FileNotFoundError(f"{root} is not a canvas folder: it has no zarr.json")
        read_only = mode == "r"
        handle = None if read_only else acquire_writer(root, exclusive=lock)
        try:
            if handle is not None and lock and handle.refcount == 1:
                remove_stale_partials(root, all_processes=True)  # we hold the lock: no writer is alive
            group = zarr.open_group(store=AtomicLocalStore(root, read_only=read_only, fsync=fsync), mode=mode)
            if ATTRS_KEY not in group.attrs:
                raise ValueError(
                    f"{root} is a zarr group but not a DiffInfinite canvas (no {ATTRS_KEY!r} attributes)"
                )
            return cls(root, group, read_only=read_only, handle=handle)
        except BaseException:
            if handle is not None:
                release_writer(handle)
            raise

    def close(self) -> None:
        """Release the writer lock (readers need not close). The object must not write afterwards."""
        if self._handle is not None:
            release_writer(self._handle)
            self._handle = None
            self.read_only = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except (OSError, RuntimeError, TypeError):  # interpreter shutdown
            pass

    def __repr__(self) -> str:
        h, w = self.grid.shape
        return f"CanvasStore({str(self.root)!r}, {h} x {w} px, model {self.model_name!r})"

    # ------------------------------------------------------------------ metadata
    @property
    def settings(self) -> dict:
        return dict(self.header.settings)

    @property
    def attrs(self) -> dict:
        return dict(self._group.attrs[ATTRS_KEY])

    @property
    def canvas_seed(self) -> int:
        return int(self.header.settings["seed"])

    @property
    def pixel_size_um(self) -> float:
        return self.header.pixel_size_um

    @property
    def num_classes(self) -> int:
        return self.header.num_classes

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.latent_channels, *self.grid.latent_shape)

    @property
    def ngff_tissue(self) -> dict:
        return dict(self._group["tissue"].attrs["ome"])

    def update_settings(self, **changes) -> dict:
        """Change recorded settings (e.g. omega for tiles generated from now on); returns them all."""
        self._check_writable()
        with self._lock:
            meta = dict(self._group.attrs[ATTRS_KEY])
            settings = dict(meta["settings"])
            settings.update(changes)
            meta["settings"] = plain_json(settings)
            self._group.attrs[ATTRS_KEY] = meta
            self.header = replace(self.header, settings=dict(meta["settings"]))
            if "num_classes" in changes:
                self._lut = placeholder_lut(self.num_classes)
            return self.settings

    def _check_writable(self):
        if self.read_only:
            raise PermissionError(f"the canvas {self.root} is open read-only")

    # ------------------------------------------------------------------ per-tile state
    def _tile_index(self, key) -> TileKey:
        return self.grid.check_tile(key)

    def tile_status(self, key) -> int:
        i, j = self._tile_index(key)
        return int(self._status_view(Rect(i, i + 1, j, j + 1))[0, 0])

    def read_status(self, tiles: Rect | None = None) -> np.ndarray:
        """Status of the tiles in ``tiles`` (a rectangle of tile indices; default: all) as uint8 (rows, cols)."""
        return self._status_view(tiles).copy()

    def _status_view(self, tiles: Rect | None = None) -> np.ndarray:
        # from the in-memory mirror (a view: do not modify) or straight from zarr
        rows, cols = self.grid.tiles_shape
        r = Rect(0, rows, 0, cols) if tiles is None else as_rect(tiles).intersect(Rect(0, rows, 0, cols))
        if r.empty:
            return np.zeros((max(r.height, 0), max(r.width, 0)), np.uint8)
        if self._mirror is None:
            return np.asarray(self.status[r.slices])
        with self._lock:
            return self._mirror.get(self.status)[r.slices]

    def set_status(self, keys: Iterable[TileKey] | TileKey, value: int) -> None:
        """Set the status of one tile or of several (written in as few chunk writes as their bounding box)."""
        self._check_writable()
        if value not in STATUS_CODES:
            raise ValueError(f"status must be one of {sorted(STATUS_CODES)}, got {value!r}")
        keys = (
            [keys]
            if (isinstance(keys, tuple) and len(keys) == 2 and isinstance(keys[0], (int, np.integer)))
            else list(keys)
        )
        keys = [self._tile_index(k) for k in keys]
        if not keys:
            return
        with self._lock:
            if len(keys) == 1:
                self.status[keys[0]] = value
            else:
                ys, xs = zip(*keys)
                r = Rect(min(ys), max(ys) + 1, min(xs), max(xs) + 1)
                block = np.asarray(self.status[r.slices])
                for i, j in keys:
                    block[i - r.y0, j - r.x0] = value
                self.status[r.slices] = block
            if self._mirror is not None and self._mirror.array is not None and self._mirror.ttl is None:
                for k in keys:
                    self._mirror.array[k] = value

    def status_counts(self) -> dict[int, int]:
        """How many tiles have each status (reads the whole status array: rows x cols bytes)."""
        counts = np.bincount(self.read_status().ravel(), minlength=len(STATUS_CODES))
        return {k: int(counts[k]) for k in STATUS_CODES}

    def tiles_with_status(self, value: int) -> list[TileKey]:
        return [(int(i), int(j)) for i, j in np.argwhere(self.read_status() == value)]

    def tile_version(self, key) -> int:
        i, j = self._tile_index(key)
        return int(self.version[i, j])

    def bump_version(self, key) -> int:
        self._check_writable()
        i, j = self._tile_index(key)
        with self._lock:
            v = int(self.version[i, j]) + 1
            self.version[i, j] = v
            return v

    def tile_seed(self, key) -> int:
        """The seed tile ``key`` is sampled with: the canvas seed, or its re-roll seed."""
        i, j = self._tile_index(key)
        s = int(self.seed[i, j])
        return self.canvas_seed if s < 0 else s

    def set_tile_seed(self, key, seed: int | None) -> None:
        """Re-roll seed of a tile (``None``: back to the canvas seed)."""
        self._check_writable()
        i, j = self._tile_index(key)
        if seed is not None and int(seed) < 0:
            raise ValueError(f"seeds must be >= 0, got {seed}")
        with self._lock:
            self.seed[i, j] = -1 if seed is None else int(seed)

    # ------------------------------------------------------------------ latents
    def read_latents(self, rect) -> np.ndarray:
        """Latents (C, h, w) float32 of latent rectangle ``rect`` (inside the canvas). Tiles never written read
        as 0; callers check the status for which are valid."""
        r = as_rect(rect)
        lh, lw = self.grid.latent_shape
        if not (0 <= r.y0 < r.y1 <= lh and 0 <= r.x0 < r.x1 <= lw):
            raise ValueError(
                f"latent rectangle {tuple(r)} is empty or outside the canvas's {lh} x {lw} latents"
            )
        return np.asarray(self.latents[:, r.y0 : r.y1, r.x0 : r.x1])

    def write_latents(self, key, latents) -> None:
        """Write tile ``key``'s latents (C, T/d, T/d) as one chunk (all-or-nothing)."""
        self._check_writable()
        key = self._tile_index(key)
        r = self.grid.tile_latent_rect(key)
        arr = np.asarray(latents, dtype=np.float32)
        if arr.shape != (self.latent_channels, r.height, r.width):
            raise ValueError(
                f"tile latents must have shape {(self.latent_channels, r.height, r.width)}, got {arr.shape}"
            )
        if not np.isfinite(arr).all():
            raise ValueError(f"tile {key}: latents contain NaN or infinity; not written")
        with self._lock:
            self.latents[:, r.y0 : r.y1, r.x0 : r.x1] = arr

    # ------------------------------------------------------------------ labels
    def read_labels(self, rect, level: int = 0) -> np.ndarray:
        """Class ids (h, w) uint8 of rectangle ``rect`` of label level ``level`` (level 0: one per latent pixel),
        clipped to the canvas."""
        self.grid.check_level(level)
        arr = self.labels[level]
        r = as_rect(rect).intersect(Rect(0, arr.shape[0], 0, arr.shape[1]))
        if r.empty:
            return np.zeros((0, 0), np.uint8)
        return np.asarray(arr[r.slices])

    def write_labels(self, y0: int, x0: int, labels, *, where=None) -> Rect:
        """Paint class ids ``labels`` (h, w) into the level-0 mask at latent pixel ``(y0, x0)``; with ``where``
        (a bool (h, w)), only there. The coarser label levels follow. Returns the bounding box, in level-0
        *pixels*, of the labels that actually changed (empty if none): what to pass to
        :meth:`TileScheduler.invalidate`. Tissue is not touched."""
        changed, _ = self.edit_label_cells(y0, x0, labels, where=where)
        return Rect(0, 0, 0, 0) if changed.empty else self.grid.latent_to_px(changed)

    def edit_labels(self, y0: int, x0: int, labels, *, where=None) -> list[TileKey]:
        """:meth:`write_labels`, returning exactly the tiles whose labels changed (a stroke along a tile
        corner touches one or two tiles, not the four under its bounding box)."""
        changed, diff = self.edit_label_cells(y0, x0, labels, where=where)
        return [] if changed.empty else self.grid.tiles_changed(changed, diff)

    def edit_label_cells(self, y0: int, x0: int, labels, *, where=None) -> tuple[Rect, np.ndarray | None]:
        """:meth:`write_labels`, returning the latent cells whose labels changed: their bounding rectangle and a
        bool array over it (an empty rectangle and None when nothing changed)."""
        self._check_writable()
        arr = np.asarray(labels)
        if arr.ndim != 2 or arr.size == 0:
            raise ValueError(f"labels must be a non-empty 2-D array, got shape {arr.shape}")
        if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"labels must be integer class ids, got dtype {arr.dtype}")
        if arr.min() < 0 or arr.max() >= self.num_classes:
            bad = sorted(set(np.unique(arr[(arr < 0) | (arr >= self.num_classes)]).tolist()))
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1} for this canvas; got {bad}")
        lh, lw = self.grid.latent_shape
        r = Rect(int(y0), int(y0) + arr.shape[0], int(x0), int(x0) + arr.shape[1])
        clipped = r.intersect(Rect(0, lh, 0, lw))
        if clipped.empty:
            return Rect(0, 0, 0, 0), None
        sub = arr[clipped.y0 - r.y0 : clipped.y1 - r.y0, clipped.x0 - r.x0 : clipped.x1 - r.x0].astype(
            np.uint8
        )
        with self._lock:
            old = np.asarray(self.labels[0][clipped.slices])
            if where is not None:
                mask = np.asarray(where, bool)[
                    clipped.y0 - r.y0 : clipped.y1 - r.y0, clipped.x0 - r.x0 : clipped.x1 - r.x0
                ]
                sub = np.where(mask, sub, old)
            differs = sub != old
            diff = np.argwhere(differs)
            if not len(diff):
                return Rect(0, 0, 0, 0), None
            (dy0, dx0), (dy1, dx1) = diff.min(0), diff.max(0) + 1
            changed = Rect(
                clipped.y0 + int(dy0), clipped.y0 + int(dy1), clipped.x0 + int(dx0), clipped.x0 + int(dx1)
            )
            self.labels[0][changed.slices] = sub[dy0:dy1, dx0:dx1]
            self._update_label_levels(changed)
        return changed, differs[dy0:dy1, dx0:dx1]

    def _update_label_levels(self, rect: Rect) -> None:
        r = rect
        for level in range(1, self.grid.levels):
            src = self.labels[level - 1]
            dst = self.labels[level]
            n_h, n_w = src.shape
            # level pixel y samples level-1 pixel min(2y + 1, n - 1)
            r = Rect(
                max(0, (r.y0 - 1) // 2),
                min(dst.shape[0], r.y1 // 2 + 1),
                max(0, (r.x0 - 1) // 2),
                min(dst.shape[1], r.x1 // 2 + 1),
            )
            if r.empty:
                return
            ys = np.minimum(2 * np.arange(r.y0, r.y1) + 1, n_h - 1)
            xs = np.minimum(2 * np.arange(r.x0, r.x1) + 1, n_w - 1)
            block = np.asarray(src[int(ys[0]) : int(ys[-1]) + 1, int(xs[0]) : int(xs[-1]) + 1])
            dst[r.slices] = block[np.ix_(ys - ys[0], xs - xs[0])]

    # ------------------------------------------------------------------ tissue
    def write_tissue(self, rect_px, rgb) -> None:
        """Write level-0 pixels ``rgb`` (h, w, 3) uint8 at ``rect_px``. Only the level; call
        :meth:`update_pyramid` for the levels above, and set the tile status after both."""
        self._check_writable()
        r = as_rect(rect_px)
        arr = np.asarray(rgb)
        if arr.dtype != np.uint8 or arr.shape != (r.height, r.width, 3):
            raise ValueError(f"tissue must be uint8 ({r.height}, {r.width}, 3), got {arr.dtype} {arr.shape}")
        if r.intersect(self.grid.bounds()) != r:
            raise ValueError(f"rectangle {tuple(r)} is outside the canvas")
        with self._lock:
            self.tissue[0][:, r.y0 : r.y1, r.x0 : r.x1] = np.moveaxis(arr, -1, 0)

    def update_pyramid(self, rect_px) -> None:
        """Recompute levels 1 .. L-1 over level-0 rectangle ``rect_px`` (2 x 2 means, level by level)."""
        self._check_writable()
        r = self.grid.clip(rect_px)
        if r.empty:
            return
        with self._lock:
            for level in range(1, self.grid.levels):
                h, w = self.grid.level_shape(level)
                h0, w0 = self.grid.level_shape(level - 1)
                r = r.scaled_out(2).intersect(Rect(0, h, 0, w))
                src = np.asarray(
                    self.tissue[level - 1][:, 2 * r.y0 : min(2 * r.y1, h0), 2 * r.x0 : min(2 * r.x1, w0)]
                )
                self.tissue[level][:, r.y0 : r.y1, r.x0 : r.x1] = _pool2(src)

    def read_tissue_raw(self, level: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Stored pixels (h, w, 3) uint8 of a level, whatever the tiles' status (fill: white)."""
        self.grid.check_level(level)
        r = Rect(y0, y1, x0, x1).intersect(self.grid.bounds(level))
        # a (y, x, c) view of the (c, y, x) chunk: whoever assembles the chunks (dask, napari) copies anyway
        return np.moveaxis(np.asarray(self.tissue[level][:, r.y0 : r.y1, r.x0 : r.x1]), 0, -1)

    def coverage(self, level: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """bool (h, w): True where every level-0 tile under a level-``level`` pixel has status 2."""
        self.grid.check_level(level)
        r = Rect(y0, y1, x0, x1).intersect(self.grid.bounds(level))
        if r.empty:
            return np.zeros((max(r.height, 0), max(r.width, 0)), bool)
        f, t = 1 << level, self.grid.tile
        tiles = self.grid.tile_range(r.scaled_in(f))
        done = self._status_view(tiles) == STATUS_PIXELS
        if not done.any():  # the common cases first: nothing (or everything) generated underneath
            return np.zeros((r.height, r.width), bool)
        if done.all() and f <= t:
            return np.ones((r.height, r.width), bool)
        if f <= t:
            rep = t // f
            cov = done.repeat(rep, axis=0).repeat(rep, axis=1)
            oy, ox = r.y0 - tiles.y0 * rep, r.x0 - tiles.x0 * rep
            return cov[oy : oy + r.height, ox : ox + r.width]
        g = f // t  # tiles per pixel side; tiles past the canvas edge count as done
        cov = np.zeros((r.height, r.width), bool)
        ys, xs = np.nonzero(done.any(axis=1))[0], np.nonzero(done.any(axis=0))[0]
        py0, px0 = ys[0] // g, xs[0] // g  # only pixels over the done tiles' bounding box can be covered
        py1, px1 = min(r.height, ys[-1] // g + 1), min(r.width, xs[-1] // g + 1)
        full = np.ones(((py1 - py0) * g, (px1 - px0) * g), bool)
        sub = done[py0 * g : py1 * g, px0 * g : px1 * g]
        full[: sub.shape[0], : sub.shape[1]] = sub
        cov[py0:py1, px0:px1] = full.reshape(py1 - py0, g, px1 - px0, g).all(axis=(1, 3))
        return cov

    def placeholder(self, level: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """(h, w, 3) uint8: the faint mask rendering shown where tissue is not generated yet (one label per
        ``downsampling`` pixels of the level, read from label level ``level``)."""
        self.grid.check_level(level)
        r = Rect(y0, y1, x0, x1).intersect(self.grid.bounds(level))
        d = self.grid.downsampling
        lr = r.scaled_out(d)
        labels = self.read_labels(lr, level)
        if labels.size == 0:
            return np.zeros((max(r.height, 0), max(r.width, 0), 3), np.uint8)
        if not labels.any():  # the common case far from painted areas: one colour, no copy (read-only view)
            return np.broadcast_to(self._lut[0], (r.height, r.width, 3))
        rgb = self._lut[labels].repeat(d, axis=0).repeat(d, axis=1)
        oy, ox = r.y0 - lr.y0 * d, r.x0 - lr.x0 * d
        return np.ascontiguousarray(rgb[oy : oy + r.height, ox : ox + r.width])

    def read_tissue(
        self, level: int, y0: int, y1: int, x0: int, x1: int, *, placeholder: bool = True
    ) -> np.ndarray:
        """Pixels (h, w, 3) uint8 of rectangle ``[y0:y1, x0:x1]`` of pyramid level ``level`` (clipped to it).

        Where the tiles underneath are not all generated (status < 2), the :meth:`placeholder` is shown (or
        white, with ``placeholder=False``). Never runs a model: reads the status, tissue and label chunks.
        """
        self.grid.check_level(level)
        r = Rect(int(y0), int(y1), int(x0), int(x1)).intersect(self.grid.bounds(level))
        if r.empty:
            return np.zeros((max(r.height, 0), max(r.width, 0), 3), np.uint8)
        cov = self.coverage(level, *r)
        if cov.all():
            return self.read_tissue_raw(level, *r)
        back = (
            self.placeholder(level, *r)
            if placeholder
            else np.full((r.height, r.width, 3), TISSUE_FILL, np.uint8)
        )
        if not cov.any():
            return back
        raw = self.read_tissue_raw(level, *r)
        return np.where(cov[..., None], raw, back)

    def tissue_dask(self, level: int, *, name: str | None = None):
        """Level ``level`` as a dask array (h, w, 3) uint8 with one chunk per tile, each read by
        :meth:`read_tissue` (status + zarr + placeholder; never a model).

        Each call gets a new dask name unless ``name`` is given: dask (and napari's dask cache) key chunk
        results by name, so after tiles land take fresh arrays to see them.
        """
        import dask.array as da

        self.grid.check_level(level)
        h, w = self.grid.level_shape(level)
        t = self.grid.tile

        def block(block_id=None):
            i, j = block_id[0], block_id[1]
            return self.read_tissue(level, i * t, min((i + 1) * t, h), j * t, min((j + 1) * t, w))

        return da.map_blocks(
            block,
            dtype=np.uint8,
            chunks=(_chunks_1d(h, t), _chunks_1d(w, t), (3,)),
            meta=np.empty((0, 0, 0), np.uint8),
            name=name or f"diffinfinite-tissue-{level}-{uuid.uuid4().hex}",
        )

    def tissue_level(self, level: int) -> TissueLevel:
        """Level ``level`` as a lazy array-like (h, w, 3) uint8 whose every slicing is one :meth:`read_tissue`
        call: no per-chunk overhead and no dask cache, so it always shows the store as it is now."""
        return TissueLevel(self, self.grid.check_level(level))

    def tissue_levels(self) -> list[TissueLevel]:
        """Every level as :meth:`tissue_level`, finest first (napari multiscale data, like :meth:`tissue_pyramid`)."""
        return [self.tissue_level(level) for level in range(self.grid.levels)]

    def tissue_pyramid(self) -> list:
        """Every level as :meth:`tissue_dask`, finest first: napari's ``add_image(..., multiscale=True, rgb=True)``
        data; ``scale`` is ``(pixel_size_um, pixel_size_um)``."""
        return [self.tissue_dask(level) for level in range(self.grid.levels)]


class RGBLevelArray:
    """The array protocol napari's multiscale image layers read from a level: ``(h, w, 3)`` uint8 of ``shape``.

    Subclasses set ``shape`` and implement ``__getitem__``.
    """

    dtype = np.dtype(np.uint8)
    ndim = 3
    shape: tuple[int, int, int]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size

    def __len__(self) -> int:
        return self.shape[0]


class TissueLevel(RGBLevelArray):
    """One pyramid level of a :class:`CanvasStore` as a read-only array-like ``(h, w, 3)`` uint8.

    Indexing with ints and slices (any step) reads the bounding rectangle once with
    :meth:`CanvasStore.read_tissue` (placeholders where tiles are missing; never a model). napari takes a
    list of these as multiscale data; ``np.asarray(level)`` reads it whole (only sensible for coarse levels).
    """

    def __init__(self, store: CanvasStore, level: int):
        self.store = store
        self.level = level
        self.shape = (*store.grid.level_shape(level), 3)

    def __repr__(self) -> str:
        return f"TissueLevel(level={self.level}, shape={self.shape})"

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (3 - len(key) + 1) + key[i + 1 :]
        key = key + (slice(None),) * (3 - len(key))
        if len(key) != 3:
            raise IndexError(f"too many indices for a {self.ndim}-d array: {len(key)}")
        spans, picks = [], []
        for k, n in zip(key[:2], self.shape[:2]):
            if isinstance(k, (int, np.integer)):
                i = int(k) + n if k < 0 else int(k)
                if not 0 <= i < n:
                    raise IndexError(f"index {k} is out of bounds for size {n}")
                spans.append((i, i + 1))
                picks.append(0)
            elif isinstance(k, slice):
                start, stop, step = k.indices(n)
                idx = range(start, stop, step)
                if len(idx) == 0:
                    spans.append((0, 0))
                    picks.append(slice(0, 0))
                    continue
                lo, hi = min(idx[0], idx[-1]), max(idx[0], idx[-1]) + 1
                spans.append((lo, hi))
                end = idx[-1] - lo + (1 if step > 0 else -1)
                picks.append(slice(idx[0] - lo, end if end >= 0 else None, step))
            else:
                raise TypeError(f"TissueLevel takes ints and slices, not {type(k).__name__}")
        (y0, y1), (x0, x1) = spans
        if y1 <= y0 or x1 <= x0:
            region = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0), 3), np.uint8)
        else:
            region = self.store.read_tissue(self.level, y0, y1, x0, x1)
        return region[picks[0], picks[1], key[2]]

    def __array__(self, dtype=None, copy=None):
        out = np.ascontiguousarray(self[:, :, :])
        return out if dtype is None else out.astype(dtype)
