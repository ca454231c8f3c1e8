"""napari reader: a DiffInfinite canvas folder (drag and drop, ``File > Open Folder``, ``viewer.open``), and the
pyramidal OME-TIFFs our exporter writes.

- A canvas folder becomes the multiscale tissue layer (everything generated shows at once, placeholders
  elsewhere; the store is only read, never a model) and the mask window around the saved view. In a running
  napari the mask window comes first and the tissue layer a moment later, and the canvas is then driven
  (paint, pan to generate) by :func:`~napari_diffinfinite.widgets.opening.schedule_attach`.
- ``<stem>.ome.tif`` (with ``<stem>_mask.ome.tif`` and ``<stem>.json`` beside it) becomes a multiscale RGB layer
  at its physical pixel size, plus the mask as a Labels layer. OME-TIFFs without our "synthetic" annotation are
  left to other readers.

**Which reader napari uses.** For a folder, napari (0.9) offers every reader that accepts directories - its
built-in one too - and npe2 has no priority between plugins: ``viewer.open(folder)`` raises
``MultipleReaderError`` and drag and drop asks which plugin to use, unless napari's reader preferences
(``napari.settings.get_settings().plugins.extension2reader``, fnmatch patterns -> plugin) name one. Its own
reader dialog records a folder choice there as the folder's path plus ``/``.
:func:`~napari_diffinfinite.widgets.reader_preferences.remember_reader` does the
same for every canvas this plugin creates or opens, and for every OME-TIFF the viewer exports, so those open with
this reader when dropped or passed to ``viewer.open`` without ``plugin=``; entries of ours whose path no longer
exists are dropped at the same time (temporary canvases do not pile up). A canvas never opened here (made by
a script, or copied from elsewhere) gets napari's dialog once: choose "DiffInfinite".
"""

from __future__ import annotations

import json
from pathlib import Path

from . import DISCLAIMER
from .widgets.reader_preferences import PLUGIN_NAME

__all__ = [
    "PLUGIN_NAME",
    "get_reader",
    "is_canvas_folder",
    "is_diffinfinite_export",
    "read_canvas",
    "read_export",
]

_OME_SUFFIXES = (".ome.tif", ".ome.tiff")


def _single(path):
    if isinstance(path, (list, tuple)):
        return path[0] if len(path) == 1 else None
    return path


def is_canvas_folder(path) -> bool:
    """Whether ``path`` is a DiffInfinite canvas folder (a zarr group with our format attributes; read without
    zarr)."""
    from .canvas.header import canvas_attrs

    return canvas_attrs(path) is not None


def is_diffinfinite_export(path) -> bool:
    """Whether ``path`` is an OME-TIFF written by our exporter (it carries the synthetic-image annotation)."""
    from .io import SYNTHETIC_NAMESPACE, read_export_info

    try:
        info = read_export_info(path)
    except Exception:  # noqa: BLE001 - not a TIFF we can read: someone else's file
        return False
    return info["annotations"].get(SYNTHETIC_NAMESPACE, {}).get("synthetic") == "true"


def get_reader(path):
    """npe2 ``get_reader``: a reader function for a canvas folder or one of our OME-TIFF exports, else None."""
    path = _single(path)
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        return read_canvas if is_canvas_folder(p) else None
    if p.name.lower().endswith(_OME_SUFFIXES) and p.is_file() and is_diffinfinite_export(p):
        return read_export
    return None


def read_canvas(path, *, attach: bool = True) -> list[tuple]:
    """LayerData of a canvas folder: the tissue pyramid and the mask window around the saved view.

    With ``attach`` in a running napari, only the mask window, empty, from the canvas's metadata (no zarr: napari
    freezes as it adds its first layer, and opening the store would add to it); in the next turns of the event
    loop the store opens, the tissue layer is added under the mask, the window is filled and the canvas is
    driven (:func:`~napari_diffinfinite.widgets.opening.schedule_attach`).
    """
    path = Path(_single(path))
    if attach and _qt_running():
        from .canvas.header import read_header
        from .widgets.canvas_layers import window_layer_data
        from .widgets.opening import schedule_attach

        header = read_header(path)
        centre = header.view_centre_px or header.grid.centre()
        window = window_layer_data(path, header.grid, header.pixel_size_um, header.num_classes, centre)
        schedule_attach(path, defer_load=True)  # torch's import beside napari's first paint would add to it
        return [window]
    from .canvas.store import CanvasStore
    from .widgets.canvas_layers import canvas_layer_data

    store = CanvasStore.open(path, mode="r")
    return canvas_layer_data(store, centre_px=store.header.view_centre_px)


def _qt_running() -> bool:
    import sys

    if "qtpy" not in sys.modules:  # no viewer without Qt; do not import it for a script
        return False
    from qtpy.QtWidgets import QApplication

    return QApplication.instance() is not None


def read_export(path) -> list[tuple]:
    """LayerData of an exported OME-TIFF: the image (multiscale when it has levels) and, when it is there, its
    ``_mask`` file as Labels; the sidecar's settings go into the metadata."""
    from .classes import class_set
    from .io import SYNTHETIC_NAMESPACE, export_paths, read_export_info, read_pyramid

    path = Path(_single(path))
    info = read_export_info(path)
    ps = info["pixel_size_um"] or 0.5
    kind = info["annotations"].get(SYNTHETIC_NAMESPACE, {}).get("content", "rgb")
    name = path.name[: -len(next(s for s in _OME_SUFFIXES if path.name.lower().endswith(s)))]
    stem = path.with_name(name.removesuffix("_mask") if kind == "labels" else name)
    paths = export_paths(stem)
    settings = {}
    if paths["sidecar"].is_file():
        try:
            settings = json.loads(paths["sidecar"].read_text())
        except (OSError, ValueError):
            settings = {}
    metadata = {"diffinfinite_export": {"path": str(path), "settings": settings}, "disclaimer": DISCLAIMER}
    num_classes = settings.get("num_classes") or (settings.get("canvas_settings") or {}).get("num_classes", 5)
    try:
        classes = class_set(int(num_classes))
    except ValueError:
        classes = class_set(5)

    def labels_layer(p: Path) -> tuple:
        levels = read_pyramid(p)
        kwargs = {
            "name": p.name.split(".")[0],
            "scale": (ps, ps),
            "units": ("um", "um"),
            "multiscale": len(levels) > 1,
            "colormap": classes.color_dict(),
            "features": classes.features(),
            "opacity": 0.45,
            "metadata": metadata,
        }
        return (levels if len(levels) > 1 else levels[0], kwargs, "labels")

    if kind == "labels":
        return [labels_layer(path)]
    levels = read_pyramid(path)
    out = [
        (
            levels if len(levels) > 1 else levels[0],
            {
                "name": name,
                "rgb": True,
                "multiscale": len(levels) > 1,
                "scale": (ps, ps),
                "units": ("um", "um"),
                "contrast_limits": (0, 255),
                "metadata": metadata,
            },
            "image",
        )
    ]
    if paths["mask"] is not None and paths["mask"].is_file():
        out.append(labels_layer(paths["mask"]))
    return out
