"""napari writer: an image layer as a pyramidal OME-TIFF (``File > Save Selected Layers...``, ``*.ome.tif``).

For the tissue layer of a DiffInfinite canvas it writes everything generated (the bounding box of the
generated tiles) with the mask and the JSON sidecar, through
:func:`~napari_diffinfinite.io.canvas_export.export_canvas_region`; it refuses a box with tiles that are not
generated (an export never holds placeholders: export a region from the widget instead). Any other RGB
image is written as it is with :func:`~napari_diffinfinite.io.write_pyramidal_ome_tiff`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_tissue"]


def write_tissue(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer for image layers; returns the paths written."""
    from .widgets.canvas_layers import META_KEY

    canvas = ((meta.get("metadata") or {}).get(META_KEY) or {}).get("canvas")
    if canvas:
        from .canvas.store import CanvasStore
        from .io.canvas_export import export_canvas_region, generated_bbox

        store = CanvasStore.open(canvas, mode="r")
        rect = generated_bbox(store)
        if rect.empty:
            raise ValueError(f"nothing is generated on the canvas {canvas} yet; there is no tissue to save")
        paths = export_canvas_region(store, path, rect, overwrite=True)
        return [str(p) for p in paths.values() if p is not None]
    from .io import PyramidOptions, write_pyramidal_ome_tiff

    level0 = data[0] if isinstance(data, (list, tuple)) else data
    shape = tuple(level0.shape)
    scale = meta.get("scale")
    pixel_size = float(scale[-1]) if scale is not None and len(scale) else 1.0
    if not (len(shape) == 3 and shape[-1] == 3 and np.dtype(level0.dtype) == np.uint8):
        raise ValueError(
            f"the DiffInfinite OME-TIFF writer takes RGB uint8 (H, W, 3) images, not {level0.dtype} {shape}"
        )
    info = write_pyramidal_ome_tiff(
        Path(path),
        level0,
        kind="rgb",
        options=PyramidOptions(pixel_size_um=pixel_size),
        overwrite=True,
        name=meta.get("name"),
    )
    return [str(info.path)]
