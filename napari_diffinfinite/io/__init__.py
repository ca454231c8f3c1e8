"""Export of generated regions, and reading them back.

- :class:`PyramidOptions`: tile, compression, pixel size, thumbnail... of a pyramid, as one value.
- :func:`write_pyramidal_ome_tiff`: tiled, pyramidal (SubIFD) OME-TIFF for QuPath / Bio-Formats / OMERO,
  streamed tile by tile from an array or a ``read(y0, y1, x0, x1)`` callable, with bounded memory.
- :func:`write_png`: small regions (<= 8192 px a side), RGB or 8/16-bit labels.
- :func:`write_sidecar`: the generation settings as JSON.
- :func:`export_region`: image + mask + sidecar together, all or nothing.
- :func:`read_pyramid`, :func:`read_export_info`: reopen an export lazily (e.g. as a napari multiscale layer).
- :mod:`.canvas_export`: a region of a canvas store, streamed tile by tile (``diffinfinite export``, the
  viewer).

Every writer is atomic (temporary file next to the target, fsync, rename), refuses to overwrite unless asked,
and raises plain exceptions with messages fit for a command line. The metadata marks the files as synthetic;
the pixels are never marked.
"""

from ._atomic import ExportCancelled, ExportError, clean_stale_partials
from .ome_tiff import (
    SETTINGS_NAMESPACE,
    SYNTHETIC_NAMESPACE,
    TOP_LEVEL_MAX,
    PyramidInfo,
    PyramidOptions,
    pyramid_shapes,
    read_export_info,
    read_pyramid,
    write_pyramidal_ome_tiff,
)
from .png import PNG_MAX_SIDE, write_png
from .sidecar import export_paths, export_region, sidecar_document, write_sidecar

__all__ = [
    "PNG_MAX_SIDE",
    "SETTINGS_NAMESPACE",
    "SYNTHETIC_NAMESPACE",
    "TOP_LEVEL_MAX",
    "ExportCancelled",
    "ExportError",
    "PyramidInfo",
    "PyramidOptions",
    "clean_stale_partials",
    "export_paths",
    "export_region",
    "pyramid_shapes",
    "read_export_info",
    "read_pyramid",
    "sidecar_document",
    "write_png",
    "write_pyramidal_ome_tiff",
    "write_sidecar",
]
