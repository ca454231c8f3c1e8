"""Pyramidal OME-TIFF export, streamed tile by tile, and lazy reading of such files as a pyramid.

Layout (what QuPath, Bio-Formats, OMERO and tifffile expect of a pyramidal OME-TIFF):

- Image 0: the full resolution in the first IFD, 512 x 512 tiles; the 2x-reduced levels in its SubIFDs
  (``NewSubfileType`` = reduced image), down to the first level whose longer side is <= 1024 px. Each
  level's shape is ``ceil(previous / 2)``. Only level 0 is described in the OME-XML; readers find the others
  through the SubIFDs and scale the physical pixel size by the level's downsample.
- RGB: uint8, interleaved (YXS, 3 samples). Reduced levels are 2 x 2 means (rounded, edge pixels of odd sizes
  averaged over what exists). JPEG tiles are stored as YCbCr with 2 x 2 chroma subsampling, like Aperio SVS
  (``PhotometricInterpretation`` = YCbCr; readers return RGB); zlib or uncompressed tiles as plain RGB.
- Labels: the smallest of uint8 / uint16 that holds the largest id, lossless only (zlib or none), reduced by
  nearest neighbour (every second pixel), so every level holds true class ids.
- Image 1 (optional): a small thumbnail named "thumbnail", a single-resolution image of its own. QuPath's
  Bio-Formats server lists a single-resolution series named thumbnail / label / macro / overview as an
  associated image rather than as a second slide; Bio-Formats and tifffile show it as series 1.
- OME-XML: ``PhysicalSizeX/Y`` in µm, a Description, and a MapAnnotation (namespace
  :data:`SYNTHETIC_NAMESPACE`) with ``synthetic`` = ``true``, the generator and version, and the disclaimer.
  Generation settings, when given, go into a second MapAnnotation. The pixels are never marked.

Streaming: level 0 is read once, tile by tile, from the source (an array, or a callable that can be a zarr
store or a generator). Each level-0 tile is reduced on the spot into a quarter-tile block of level 1, which is
kept in memory when the whole level is small (<= 64 MiB) and otherwise in an anonymous scratch file next to
the target (deleted by the OS when closed or when the process dies). Level n+1 is built the same way while
level n is written from its store. Peak memory is a few tiles plus the level being read and the level being
built when they are small (<= 64 + 16 MiB); the source is never read twice (re-reading it per level would
regenerate tissue with a generator source, and reducing the decoded JPEG would compound its losses).
"""

from __future__ import annotations

import math
import numbers
import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import DISCLAIMER, __version__
from ._atomic import AtomicFile, ExportCancelled, ExportError, translate_oserror

#: Reduced levels are added until the longer side is at most this many pixels.
TOP_LEVEL_MAX = 1024
#: A reduced level whose blocks take more than this many bytes is kept in a scratch file, not in memory.
SPOOL_IN_MEMORY_BYTES = 64 << 20
#: Namespace of the MapAnnotation that marks the image as synthetic.
SYNTHETIC_NAMESPACE = "napari-diffinfinite/synthetic"
#: Namespace of the MapAnnotation that carries the generation settings (when given).
SETTINGS_NAMESPACE = "napari-diffinfinite/generation-settings"
GENERATOR = f"napari-diffinfinite {__version__}"

COMPRESSIONS = ("jpeg", "zlib", "none")
KINDS = ("rgb", "labels")

Reader = Callable[[int, int, int, int], Any]


@dataclass(frozen=True)
class PyramidInfo:
    """What :func:`write_pyramidal_ome_tiff` wrote."""

    path: Path
    shapes: tuple[tuple[int, int], ...]  # (height, width) per level, full resolution first
    dtype: str
    kind: str
    compression: str
    bigtiff: bool
    thumbnail_shape: tuple[int, int] | None
    nbytes: int


@dataclass(frozen=True)
class PyramidOptions:
    """How pyramids are written, as one value: the CLI, the canvas, the distributed path and the napari writer
    build it once, and it travels unchanged to the tile writer (``dataclasses.replace`` derives variants).

    ``compression``: ``"jpeg"`` (default for RGB, at ``jpeg_quality``), ``"zlib"`` (default for labels) or
    ``"none"``; labels are always lossless. ``pixel_size_um``: level 0's µm per pixel (OME ``PhysicalSizeX/Y``).
    ``thumbnail``: a small associated image named "thumbnail" (half the smallest level, <= 512 px).
    ``bigtiff``: force BigTIFF on or off (default: only when the file could exceed 4 GiB). ``workers``: threads
    that compress tiles.
    """

    tile: int = 512
    compression: str | None = None
    jpeg_quality: int = 95
    pixel_size_um: float = 0.5
    thumbnail: bool = True
    bigtiff: bool | None = None
    workers: int = 1

    def __post_init__(self):
        size = self.pixel_size_um
        if not isinstance(size, numbers.Real) or not math.isfinite(size) or size <= 0:
            raise ValueError(f"pixel_size_um must be a positive number, got {size}")

    def for_mask(self) -> PyramidOptions:
        """The options of the mask beside an image: lossless (a JPEG image gets a zlib mask), no thumbnail."""
        lossless = None if self.compression in (None, "jpeg") else self.compression
        return replace(self, compression=lossless, thumbnail=False)


#: The defaults: 512-px tiles, JPEG RGB / zlib labels, 0.5 µm per pixel, a thumbnail.
DEFAULT_PYRAMID = PyramidOptions()


@dataclass(frozen=True)
class _Prepared:
    """A validated source, ready to write: everything checked before a file exists."""

    read: Reader
    hw: tuple[int, int]
    kind: str
    dtype: np.dtype
    comp: str
    tiff_comp: Any
    comp_args: Any


# --------------------------------------------------------------------------------------------- geometry


def pyramid_shapes(height: int, width: int, *, top_max: int = TOP_LEVEL_MAX) -> list[tuple[int, int]]:
    """(height, width) of every level: halved (rounding up) until the longer side is <= ``top_max``."""
    shapes = [(int(height), int(width))]
    while max(shapes[-1]) > top_max:
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def reduce_rgb(tile: np.ndarray) -> np.ndarray:
    """2 x 2 mean of a (h, w, c) uint8 tile, rounded; an odd last row / column is averaged with itself."""
    h, w = tile.shape[:2]
    if h % 2 or w % 2:
        tile = np.pad(tile, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    s = tile.astype(np.uint16)
    s = s[0::2, 0::2] + s[1::2, 0::2] + s[0::2, 1::2] + s[1::2, 1::2]
    return ((s + 2) >> 2).astype(np.uint8)


def reduce_labels(tile: np.ndarray) -> np.ndarray:
    """Nearest-neighbour 2x reduction: every second pixel, starting with the first."""
    return tile[0::2, 0::2]


# --------------------------------------------------------------------------------------------- level stores


class _LevelStore:
    """One reduced level, filled block by block while the level above is written, read back in any region.

    Block ``(by, bx)`` is the reduction of tile ``(by, bx)`` of the level above, so it covers rows
    ``by * block ... by * block + block`` of this level. Blocks are kept padded to the full block shape.
    """

    def __init__(self, shape: tuple[int, int], channels: int, dtype, block: int, scratch_dir: Path):
        self.h, self.w = shape
        self.block = block
        self.dtype = np.dtype(dtype)
        self.nby = -(-self.h // block)
        self.nbx = -(-self.w // block)
        self.blockshape = (block, block, channels) if channels else (block, block)
        self.blockbytes = int(np.prod(self.blockshape)) * self.dtype.itemsize
        total = self.nby * self.nbx * self.blockbytes
        self._mem = None
        self._file = None
        if total <= SPOOL_IN_MEMORY_BYTES:
            self._mem = np.zeros((self.nby, self.nbx, *self.blockshape), self.dtype)
        else:
            # anonymous where the OS allows it: no name to leave behind, even after SIGKILL
            self._file = tempfile.TemporaryFile(dir=scratch_dir, prefix=".napari-diffinfinite-spool-")
            self._fd = self._file.fileno()

    def put(self, by: int, bx: int, data: np.ndarray) -> None:
        bh, bw = data.shape[:2]
        if self._mem is not None:
            self._mem[by, bx, :bh, :bw] = data
            return
        full = np.zeros(self.blockshape, self.dtype)
        full[:bh, :bw] = data
        offset = (by * self.nbx + bx) * self.blockbytes
        buf = memoryview(full).cast("B")
        while buf:
            n = os.pwrite(self._fd, buf, offset)
            buf, offset = buf[n:], offset + n

    def _block(self, by: int, bx: int) -> np.ndarray:
        if self._mem is not None:
            return self._mem[by, bx]
        offset = (by * self.nbx + bx) * self.blockbytes
        raw = os.pread(self._fd, self.blockbytes, offset)
        if len(raw) != self.blockbytes:
            raise ExportError("scratch file of the pyramid came back short (was it removed or truncated?)")
        return np.frombuffer(raw, self.dtype).reshape(self.blockshape)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        out = np.empty((y1 - y0, x1 - x0, *self.blockshape[2:]), self.dtype)
        b = self.block
        for by in range(y0 // b, (y1 - 1) // b + 1):
            for bx in range(x0 // b, (x1 - 1) // b + 1):
                blk = self._block(by, bx)
                ya, yb = max(y0, by * b), min(y1, (by + 1) * b)
                xa, xb = max(x0, bx * b), min(x1, (bx + 1) * b)
                out[ya - y0 : yb - y0, xa - x0 : xb - x0] = blk[
                    ya - by * b : yb - by * b, xa - bx * b : xb - bx * b
                ]
        return out

    def close(self) -> None:
        self._mem = None
        if self._file is not None:
            self._file.close()
            self._file = None


# --------------------------------------------------------------------------------------------- sources


def _as_reader(source, kind: str, shape) -> tuple[Reader, tuple[int, int]]:
    """A ``read(y0, y1, x0, x1)`` callable and the (height, width) of the source."""
    is_array = hasattr(source, "shape") and hasattr(source, "__getitem__")
    if is_array:
        arr_shape = tuple(int(s) for s in source.shape)
        if shape is not None and tuple(int(s) for s in shape)[:2] != arr_shape[:2]:
            raise ValueError(f"shape {tuple(shape)} does not match the array's shape {arr_shape}")
        shape = arr_shape

        def read(y0, y1, x0, x1, _a=source):
            return _a[y0:y1, x0:x1]

    elif callable(source):
        if shape is None:
            raise ValueError("shape=(height, width) is required when the source is a callable")
        read = source
    else:
        raise TypeError(
            "source must be an array or a callable read(y0, y1, x0, x1) -> array, "
            f"not {type(source).__name__}"
        )
    shape = tuple(int(s) for s in shape)
    if kind == "rgb":
        if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] != 3) or (is_array and len(shape) != 3):
            raise ValueError(f"an RGB image must have shape (height, width, 3), got {shape}")
    elif len(shape) != 2:
        raise ValueError(f"a label image must have shape (height, width), got {shape}")
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"cannot export an empty image of shape {shape}")
    return read, (shape[0], shape[1])


def _label_dtype(max_label: int) -> np.dtype:
    if max_label < 0:
        raise ValueError(f"label ids must be >= 0, got {max_label}")
    if max_label <= 0xFF:
        return np.dtype(np.uint8)
    if max_label <= 0xFFFF:
        return np.dtype(np.uint16)
    raise ValueError(f"label id {max_label} does not fit 16 bits; at most 65535 classes can be exported")


def _checked_reader(read: Reader, kind: str, dtype: np.dtype) -> Reader:
    limit = np.iinfo(dtype).max

    def checked(y0, y1, x0, x1):
        where = f"rows {y0}:{y1}, columns {x0}:{x1}"
        a = np.asarray(read(y0, y1, x0, x1))
        expected = (y1 - y0, x1 - x0, 3) if kind == "rgb" else (y1 - y0, x1 - x0)
        if a.shape != expected:
            raise ValueError(
                f"the source returned an array of shape {a.shape} for {where}; expected {expected}"
            )
        if kind == "rgb":
            if a.dtype != np.uint8:
                raise TypeError(f"an RGB source must return uint8 pixels, got {a.dtype} for {where}")
            return a
        if a.dtype == np.bool_:
            return a.astype(dtype)
        if a.dtype.kind not in "iu":
            raise TypeError(f"a label source must return integer ids, got {a.dtype} for {where}")
        if a.size:
            lo, hi = int(a.min()), int(a.max())
            if lo < 0 or hi > limit:
                raise ValueError(
                    f"label id {lo if lo < 0 else hi} at {where} does not fit the file's {dtype} "
                    f"(pass max_label= the largest id the labels can hold)"
                )
        return a.astype(dtype, copy=False)

    return checked


# --------------------------------------------------------------------------------------------- metadata


def _metadata(
    *,
    kind: str,
    name: str,
    pixel_size_um: float,
    description: str | None,
    synthetic_note: bool,
    annotations: Mapping[str, Any] | None,
) -> dict:
    what = (
        "synthetic H&E-like histology" if kind == "rgb" else "tissue-class label ids of synthetic histology"
    )
    desc = (
        description if description is not None else f"{what[0].upper()}{what[1:]}, generated by {GENERATOR}."
    )
    maps = []
    if synthetic_note:
        desc = f"{desc} {DISCLAIMER}".strip()
        maps.append(
            {
                "Namespace": SYNTHETIC_NAMESPACE,
                "synthetic": "true",
                "generator": GENERATOR,
                "content": kind,
                "disclaimer": DISCLAIMER,
            }
        )
    if annotations:
        values = {str(k): v if isinstance(v, str) else _to_text(v) for k, v in annotations.items()}
        maps.append({"Namespace": SETTINGS_NAMESPACE, **values})
    meta: dict[str, Any] = {
        "axes": "YXS" if kind == "rgb" else "YX",
        "Name": name,
        "Creator": GENERATOR,
        "Description": desc,
        "PhysicalSizeX": float(pixel_size_um),
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": float(pixel_size_um),
        "PhysicalSizeYUnit": "µm",
    }
    if kind == "labels":
        meta["Channel"] = {"Name": ["tissue class"]}
    if maps:
        meta["MapAnnotation"] = maps
    return meta


def _to_text(value) -> str:
    import json

    try:
        return json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    except (TypeError, ValueError):
        return str(value)


# --------------------------------------------------------------------------------------------- writing


def _needs_bigtiff(shapes, tile: int, channels: int, itemsize: int) -> bool:
    """True when the file could pass 4 GiB: raw bytes of all padded tiles, +10 % and 16 MiB of slack.

    JPEG and zlib tiles are smaller than raw tiles for any real image; the slack covers incompressible ones.
    """
    raw = sum(-(-h // tile) * -(-w // tile) * tile * tile * max(channels, 1) * itemsize for h, w in shapes)
    return raw * 1.1 + (16 << 20) >= 2**32


def _tiff_compression(compression: str | None, kind: str, jpeg_quality: int):
    comp = ("jpeg" if kind == "rgb" else "zlib") if compression is None else str(compression).lower()
    comp = {"deflate": "zlib", "uncompressed": "none", "raw": "none", "jpg": "jpeg"}.get(comp, comp)
    if comp not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}, not {compression!r}")
    if comp == "jpeg":
        if kind == "labels":
            raise ValueError("labels must be stored losslessly: use compression='zlib' or 'none', not 'jpeg'")
        if not 1 <= int(jpeg_quality) <= 100:
            raise ValueError(f"jpeg_quality must be within 1..100, got {jpeg_quality}")
        try:
            import imagecodecs  # noqa: F401  (tifffile's JPEG codec)
        except ImportError:
            raise ImportError(
                "JPEG compression needs the 'imagecodecs' package (pip install imagecodecs); "
                "or export with compression='zlib'"
            ) from None
        return comp, "jpeg", {"level": int(jpeg_quality)}
    if comp == "zlib":
        return comp, "zlib", {"level": 6}
    return comp, None, None


def _level_tiles(
    read: Reader,
    shape: tuple[int, int],
    tile: int,
    reduce,
    next_store: _LevelStore | None,
    pad_edges: bool,
    tick: Callable[[], None],
) -> Iterator[np.ndarray]:
    h, w = shape
    for ty, y0 in enumerate(range(0, h, tile)):
        y1 = min(y0 + tile, h)
        for tx, x0 in enumerate(range(0, w, tile)):
            x1 = min(x0 + tile, w)
            tick()  # cancel point
            data = read(y0, y1, x0, x1)
            if next_store is not None:
                next_store.put(ty, tx, reduce(data))
            if pad_edges and data.shape[:2] != (tile, tile):
                # replicate the edge instead of tifffile's zero padding: no dark border for JPEG to smear
                pad = ((0, tile - data.shape[0]), (0, tile - data.shape[1])) + ((0, 0),) * (data.ndim - 2)
                data = np.pad(data, pad, mode="edge")
            yield data
            del data


def _write_pyramid(
    fh,
    *,
    read: Reader,
    shape: tuple[int, int],
    kind: str,
    dtype: np.dtype,
    tile: int,
    tiff_compression,
    compressionargs,
    pixel_size_um: float,
    metadata: dict,
    thumbnail: bool,
    bigtiff: bool,
    workers: int,
    scratch_dir: Path,
    progress,
    cancel,
    target: Path,
) -> tuple[list[tuple[int, int]], tuple[int, int] | None]:
    import tifffile

    shapes = pyramid_shapes(*shape)
    channels = 3 if kind == "rgb" else 0
    reduce = reduce_rgb if kind == "rgb" else reduce_labels
    tilebytes = tile * tile * max(channels, 1) * dtype.itemsize
    total = sum(-(-h // tile) * -(-w // tile) for h, w in shapes)
    done = 0

    def tick():
        nonlocal done
        if cancel is not None and cancel():
            raise ExportCancelled(f"export to {target} was cancelled; nothing was written")
        if progress is not None and done:
            progress(done, total)
        done += 1

    options = {
        "dtype": dtype,
        "tile": (tile, tile),
        "photometric": "rgb" if kind == "rgb" else "minisblack",
        "planarconfig": "contig" if kind == "rgb" else None,
        "compression": tiff_compression,
        "compressionargs": compressionargs,
        "resolutionunit": "CENTIMETER",
        "software": GENERATOR,
        "maxworkers": max(1, int(workers)),
        "buffersize": 2 * max(1, int(workers)) * tilebytes,
    }
    stores: list[_LevelStore] = []
    thumb_shape = None
    try:
        with tifffile.TiffWriter(fh, bigtiff=bigtiff, ome=True) as tif:
            level_read = read
            for level, (h, w) in enumerate(shapes):
                last = level == len(shapes) - 1
                next_store = None
                if not last or thumbnail:
                    nh, nw = (h + 1) // 2, (w + 1) // 2
                    next_store = _LevelStore((nh, nw), channels, dtype, tile // 2, scratch_dir)
                    stores.append(next_store)
                px = pixel_size_um * 2**level
                kwargs = dict(options, resolution=(1e4 / px, 1e4 / px))
                if level == 0:
                    kwargs.update(subifds=len(shapes) - 1, metadata=metadata)
                else:
                    kwargs.update(subfiletype=1, metadata=None)
                tiles = _level_tiles(level_read, (h, w), tile, reduce, next_store, kind == "rgb", tick)
                tif.write(data=tiles, shape=(h, w, 3) if channels else (h, w), **kwargs)
                if level > 0:
                    stores[level - 1].close()  # this level's own store is no longer needed
                if next_store is not None and not last:
                    level_read = next_store.read
            if thumbnail:
                store = stores[-1]
                thumb = store.read(0, store.h, 0, store.w)
                thumb_shape = thumb.shape[:2]
                tif.write(
                    thumb,
                    photometric="rgb" if kind == "rgb" else "minisblack",
                    compression="zlib",
                    software=GENERATOR,
                    metadata={"Name": "thumbnail", "axes": "YXS" if channels else "YX"},
                )
        if progress is not None:
            progress(total, total)
    finally:
        for s in stores:
            s.close()
    return shapes, thumb_shape


def _prepare(source, shape, *, kind: str, options: PyramidOptions, max_label: int | None) -> _Prepared:
    """Validate everything that can be validated before a file exists; returns the pieces for writing."""
    if kind not in KINDS:
        raise ValueError(f"kind must be 'rgb' or 'labels', not {kind!r}")
    tile = int(options.tile)
    if tile < 16 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16 (TIFF requires it), got {tile}")
    comp, tiff_comp, comp_args = _tiff_compression(options.compression, kind, options.jpeg_quality)
    read, hw = _as_reader(source, kind, shape)
    if kind == "rgb":
        dtype = np.dtype(np.uint8)
        if hasattr(source, "dtype") and np.dtype(source.dtype) != np.uint8:
            raise TypeError(f"an RGB image must be uint8, got {source.dtype}")
    else:
        if max_label is None and isinstance(source, np.ndarray):
            if source.dtype.kind not in "iub":
                raise TypeError(f"a label image must hold integer ids, got {source.dtype}")
            if source.size and source.dtype.kind == "i" and int(source.min()) < 0:
                raise ValueError(f"label ids must be >= 0, found {int(source.min())}")
            max_label = int(source.max()) if source.size else 0
        elif max_label is None and hasattr(source, "dtype") and np.dtype(source.dtype).itemsize == 1:
            max_label = 255
        # a callable (or a lazy array) with no max_label: uint8, the common case; a larger id fails clearly
        dtype = _label_dtype(255 if max_label is None else int(max_label))
    return _Prepared(read, hw, kind, dtype, comp, tiff_comp, comp_args)


def write_pyramidal_ome_tiff(
    path: str | os.PathLike,
    source,
    shape: tuple[int, ...] | None = None,
    *,
    kind: str = "rgb",
    options: PyramidOptions = DEFAULT_PYRAMID,
    description: str | None = None,
    synthetic_note: bool = True,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    max_label: int | None = None,
    annotations: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> PyramidInfo:
    """Write ``source`` as a tiled, pyramidal OME-TIFF at ``path``, all or nothing.

    Parameters
    ----------
    source
        An array (``(H, W, 3)`` uint8 for ``kind="rgb"``, ``(H, W)`` integer ids for ``kind="labels"``; numpy,
        zarr or dask), or a callable ``read(y0, y1, x0, x1) -> array`` returning any region (rows ``y0:y1``,
        columns ``x0:x1``). Level 0 is read once, in tiles, row by row.
    shape
        ``(H, W)`` (or ``(H, W, 3)``); required for a callable, checked against an array.
    options
        Tile size, compression, pixel size, thumbnail, BigTIFF and compression threads: :class:`PyramidOptions`.
    description, synthetic_note
        The OME Image Description (a default one says what the image is); with ``synthetic_note`` (default)
        the disclaimer is appended and a MapAnnotation marks the file as synthetic.
    overwrite
        Replace an existing file; otherwise ``FileExistsError``.
    progress, cancel
        ``progress(done, total)`` is called as tiles are written (all levels); ``cancel()`` is polled before
        each tile and, when it returns True, the export stops with :class:`ExportCancelled`, leaving nothing.
    max_label
        Largest label id the source can hold (chooses uint8 / uint16 for a callable source; computed for a
        numpy array). A callable without it is written as uint8 and fails clearly on an id above 255.
    annotations
        Extra key/value pairs (e.g. generation settings) for a second OME MapAnnotation.
    name
        The OME Image Name (default: the file name without ``.ome.tif``).

    Raises ``FileExistsError``, ``FileNotFoundError`` (missing folder), ``PermissionError``, ``OSError`` with
    errno ENOSPC ("disk full while writing ...; nothing was written"), :class:`ExportCancelled`, and
    :class:`ExportError` for a failure while reading the source; ``ValueError`` / ``TypeError`` for bad
    arguments, raised before any file is created.
    """
    prepared = _prepare(source, shape, kind=kind, options=options, max_label=max_label)
    with AtomicFile(path, overwrite=overwrite) as af:
        info = _write_into(
            af,
            prepared,
            options,
            description=description,
            synthetic_note=synthetic_note,
            annotations=annotations,
            name=name,
            progress=progress,
            cancel=cancel,
        )
        af.commit()
    return info


def _image_name(target: Path) -> str:
    name = target.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _write_into(
    af: AtomicFile,
    prepared: _Prepared,
    options: PyramidOptions,
    *,
    description,
    synthetic_note,
    annotations,
    name,
    progress,
    cancel,
) -> PyramidInfo:
    """Write the pyramid into ``af``'s temporary (not committed); errors come out translated."""
    target = af.target
    kind, dtype, hw, tile = prepared.kind, prepared.dtype, prepared.hw, int(options.tile)
    pixel_size_um, bigtiff = options.pixel_size_um, options.bigtiff
    shapes = pyramid_shapes(*hw)
    channels = 3 if kind == "rgb" else 0
    if bigtiff is None:
        bigtiff = _needs_bigtiff(shapes, tile, channels, dtype.itemsize)
    metadata = _metadata(
        kind=kind,
        name=name or _image_name(target),
        pixel_size_um=pixel_size_um,
        description=description,
        synthetic_note=synthetic_note,
        annotations=annotations,
    )
    checked = _checked_reader(prepared.read, kind, dtype)
    fh = af.open()
    try:
        shapes, thumb_shape = _write_pyramid(
            fh,
            read=checked,
            shape=hw,
            kind=kind,
            dtype=dtype,
            tile=tile,
            tiff_compression=prepared.tiff_comp,
            compressionargs=prepared.comp_args,
            pixel_size_um=pixel_size_um,
            metadata=metadata,
            thumbnail=options.thumbnail,
            bigtiff=bool(bigtiff),
            workers=options.workers,
            scratch_dir=target.parent,
            progress=progress,
            cancel=cancel,
            target=target,
        )
        fh.flush()
        nbytes = fh.seek(0, os.SEEK_END)
    except (ExportError, KeyboardInterrupt):
        raise
    except OSError as exc:
        raise translate_oserror(exc, target) from exc
    except Exception as exc:  # the source failed, or a tile was bad: say where, keep the cause
        raise ExportError(f"writing {target} failed: {exc}; nothing was written") from exc
    return PyramidInfo(
        path=target,
        shapes=tuple(shapes),
        dtype=dtype.name,
        kind=kind,
        compression=prepared.comp,
        bigtiff=bool(bigtiff),
        thumbnail_shape=thumb_shape,
        nbytes=nbytes,
    )


# --------------------------------------------------------------------------------------------- reading


def read_pyramid(path: str | os.PathLike, *, series: int = 0) -> list:
    """The levels of a pyramidal (OME-)TIFF as lazy zarr arrays, full resolution first.

    Nothing is decoded until sliced; napari takes the list as a multiscale layer
    (``viewer.add_image(levels, multiscale=True, rgb=True)`` or ``add_labels(levels, multiscale=True)``).
    The file stays open as long as the arrays are referenced.
    """
    import tifffile
    import zarr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    store = tifffile.imread(path, aszarr=True, series=series)
    node = zarr.open(store, mode="r")
    if isinstance(node, zarr.Array):
        return [node]
    keys = sorted(node.array_keys(), key=lambda k: int(k))
    return [node[k] for k in keys]


def read_export_info(path: str | os.PathLike) -> dict:
    """Metadata of an exported OME-TIFF: level shapes, dtype, pixel size (µm), image name, annotations.

    ``annotations`` maps each MapAnnotation namespace to its key/value pairs, e.g.
    ``info["annotations"][SYNTHETIC_NAMESPACE]["synthetic"] == "true"``.
    """
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        shapes = [tuple(level.shape) for level in series.levels]
        dtype = str(series.dtype)
        xml = tif.ome_metadata
        associated = [s.name for s in tif.series[1:]]
    info: dict[str, Any] = {
        "shapes": shapes,
        "dtype": dtype,
        "pixel_size_um": None,
        "name": None,
        "annotations": {},
        "description": None,
        "associated": associated,
        "is_ome": xml is not None,
    }
    if not xml:
        return info
    ns = {"ome": "http://www.openmicroscopy.org/Schemas/OME/2016-06"}
    root = ET.fromstring(xml)
    image = root.find("ome:Image", ns)
    if image is not None:
        info["name"] = image.get("Name")
        desc = image.find("ome:Description", ns)
        info["description"] = desc.text if desc is not None else None
        pixels = image.find("ome:Pixels", ns)
        if pixels is not None and pixels.get("PhysicalSizeX"):
            size = float(pixels.get("PhysicalSizeX"))
            unit = pixels.get("PhysicalSizeXUnit", "µm")
            info["pixel_size_um"] = size * {"nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}.get(unit, 1.0)
    for ann in root.iterfind("ome:StructuredAnnotations/ome:MapAnnotation", ns):
        pairs = {m.get("K"): (m.text or "") for m in ann.iterfind("ome:Value/ome:M", ns)}
        info["annotations"][ann.get("Namespace", "")] = pairs
    return info
