"""The JSON sidecar of an export (generation settings), and :func:`export_region`, which writes an image, its
mask and its sidecar together, all or nothing."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .. import DISCLAIMER, __version__
from .._json import plain_json
from ._atomic import AtomicFile, ExportError, check_target, translate_oserror
from .ome_tiff import DEFAULT_PYRAMID, PyramidOptions, _prepare, _write_into, pyramid_shapes
from .png import PNG_MAX_SIDE, _png_image, _too_large, _write_png_into

FORMATS = ("ome.tif", "png")
_FORMAT_ALIASES = {
    "ome.tif": "ome.tif",
    "ome.tiff": "ome.tif",
    "tif": "ome.tif",
    "tiff": "ome.tif",
    "ome-tiff": "ome.tif",
    "png": "png",
}
_STEM_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png", ".json")


def sidecar_document(settings: Mapping[str, Any]) -> dict:
    """The sidecar's content: generator, project version and UTC timestamp, the settings (which win for any
    key they give, e.g. the version that generated the canvas), then the synthetic flag and the disclaimer."""
    doc = {
        "generator": f"napari-diffinfinite {__version__}",
        "project_version": __version__,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    doc.update(plain_json(dict(settings)))
    doc["synthetic"] = True
    doc["disclaimer"] = DISCLAIMER
    return doc


def _sidecar_bytes(settings: Mapping[str, Any]) -> bytes:
    return (json.dumps(sidecar_document(settings), indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _write_bytes_into(af: AtomicFile, data: bytes) -> None:
    fh = af.open()
    try:
        fh.write(data)
        fh.flush()
    except OSError as exc:
        raise translate_oserror(exc, af.target) from exc


def write_sidecar(path: str | os.PathLike, settings: Mapping[str, Any], *, overwrite: bool = False) -> Path:
    """Write the generation settings (model, seed, omega, steps, context, region...) as JSON, all or nothing.

    The document also records the project version, a UTC timestamp, ``"synthetic": true`` and the disclaimer
    (see :func:`sidecar_document`). Returns the path.
    """
    data = _sidecar_bytes(settings)  # TypeError / ValueError for unsavable settings, before any file exists
    with AtomicFile(path, overwrite=overwrite) as af:
        _write_bytes_into(af, data)
        return af.commit()


def export_paths(stem_path: str | os.PathLike, fmt: str = "ome.tif", *, mask: bool = True) -> dict[str, Path]:
    """The files :func:`export_region` writes for ``stem_path``: ``image``, ``mask`` (or None), ``sidecar``.

    A known extension on ``stem_path`` (``.ome.tif``, ``.png``, ``.json``, ...) is dropped first.
    """
    fmt = _format(fmt)
    stem = Path(stem_path).expanduser()
    name = stem.name
    for suffix in _STEM_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    if not name:
        raise ValueError(f"{stem_path!r} has no file name to derive the export's names from")
    ext = ".ome.tif" if fmt == "ome.tif" else ".png"
    return {
        "image": stem.with_name(name + ext),
        "mask": stem.with_name(name + "_mask" + ext) if mask else None,
        "sidecar": stem.with_name(name + ".json"),
    }


def _format(fmt: str) -> str:
    key = str(fmt).lower().lstrip(".")
    if key not in _FORMAT_ALIASES:
        raise ValueError(f"fmt must be 'ome.tif' or 'png', not {fmt!r}")
    return _FORMAT_ALIASES[key]


def _read_whole(source, shape):
    if hasattr(source, "shape") and hasattr(source, "__getitem__"):
        return np.asarray(source[: shape[0], : shape[1]])
    return np.asarray(source(0, shape[0], 0, shape[1]))


def export_region(
    stem_path: str | os.PathLike,
    image_source,
    mask_source,
    shape: tuple[int, int] | None,
    settings: Mapping[str, Any],
    *,
    fmt: str = "ome.tif",
    options: PyramidOptions = DEFAULT_PYRAMID,
    overwrite: bool = False,
    max_label: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict[str, Path | None]:
    """Export a region as ``<stem>.ome.tif`` + ``<stem>_mask.ome.tif`` + ``<stem>.json`` (or ``.png`` files).

    All or nothing: every target is checked before anything is written (existing files need ``overwrite``),
    each file is written to a hidden temporary, and only when all of them are complete are they moved into
    place; if one fails, the others are removed again. ``image_source`` / ``mask_source`` are arrays or
    ``read(y0, y1, x0, x1)`` callables as for :func:`write_pyramidal_ome_tiff`; ``mask_source=None`` writes no
    mask. ``settings`` (model, seed, omega, steps, context, region, ...) go into the JSON sidecar, with the
    export's own parameters under ``"export"``, and into an OME MapAnnotation of the image. ``options``: the
    image's :class:`PyramidOptions` (the mask gets :meth:`PyramidOptions.for_mask`; PNG uses the pixel size only).
    ``progress(done, total)`` counts the tiles of both files; ``cancel()`` is polled per tile.

    Returns ``{"image": Path, "mask": Path | None, "sidecar": Path}``.
    """
    fmt = _format(fmt)
    paths = export_paths(stem_path, fmt, mask=mask_source is not None)
    for p in paths.values():  # every target, before any work
        if p is not None:
            check_target(p, overwrite=overwrite)

    if fmt == "ome.tif":
        img = _prepare(image_source, shape, kind="rgb", options=options, max_label=None)
        hw = img.hw
        msk = None
        if mask_source is not None:
            msk = _prepare(mask_source, hw, kind="labels", options=options.for_mask(), max_label=max_label)
        export = {
            "format": fmt,
            "shape": list(hw),
            "pixel_size_um": options.pixel_size_um,
            "tile": int(options.tile),
            "compression": img.comp,
            "jpeg_quality": int(options.jpeg_quality) if img.comp == "jpeg" else None,
            "mask_compression": msk.comp if msk else None,
        }
    else:
        hw = tuple(int(s) for s in (shape if shape is not None else image_source.shape)[:2])
        if max(hw) > PNG_MAX_SIDE:
            raise ValueError(_too_large(hw))
        export = {"format": fmt, "shape": list(hw), "pixel_size_um": options.pixel_size_um}
    export.update(image=paths["image"].name, mask=paths["mask"].name if paths["mask"] else None)
    doc_settings = {**dict(settings), "export": export}
    sidecar = _sidecar_bytes(doc_settings)  # unsavable settings fail here, before any file exists

    afs: dict[str, AtomicFile] = {}
    try:
        for key, p in paths.items():
            if p is not None:
                afs[key] = AtomicFile(p, overwrite=overwrite)
        if fmt == "ome.tif":
            _export_ome(afs, img, msk, settings, options, progress=progress, cancel=cancel)
        else:
            _export_png(afs, image_source, mask_source, hw, cancel=cancel)
        _write_bytes_into(afs["sidecar"], sidecar)
        committed = []
        try:
            for key in ("image", "mask", "sidecar"):
                if key in afs:
                    afs[key].commit()
                    committed.append(afs[key])
        except BaseException:
            for af in committed:
                af.uncommit()
            raise
    finally:
        for af in afs.values():
            if not af.committed:
                af.discard()
    return {k: (afs[k].target if k in afs else None) for k in ("image", "mask", "sidecar")}


def _export_ome(afs, img, msk, settings, options: PyramidOptions, *, progress, cancel):
    tile = int(options.tile)

    def tiles(shape):
        return sum(-(-h // tile) * -(-w // tile) for h, w in pyramid_shapes(*shape))

    n_img = tiles(img.hw)
    total = n_img + (tiles(msk.hw) if msk is not None else 0)

    def shifted(offset):
        if progress is None:
            return None
        return lambda done, _total: progress(offset + done, total)

    annotations = plain_json(dict(settings))
    for key, prepared, opts, offset in (("image", img, options, 0), ("mask", msk, options.for_mask(), n_img)):
        if prepared is None:
            continue
        _write_into(
            afs[key],
            prepared,
            opts,
            description=None,
            synthetic_note=True,
            annotations=annotations,
            name=None,
            progress=shifted(offset),
            cancel=cancel,
        )


def _export_png(afs, image_source, mask_source, hw, *, cancel):
    from ._atomic import ExportCancelled

    for key, source in (("image", image_source), ("mask", mask_source)):
        if source is None:
            continue
        if cancel is not None and cancel():
            raise ExportCancelled(f"export to {afs[key].target} was cancelled; nothing was written")
        try:
            array = _read_whole(source, hw)
        except Exception as exc:
            raise ExportError(
                f"reading the region for {afs[key].target} failed: {exc}; nothing was written"
            ) from exc
        if key == "image" and array.shape[:2] != hw:
            raise ValueError(f"the image source returned shape {array.shape}, expected {hw}")
        if key == "mask" and array.shape != hw:
            raise ValueError(f"the mask source returned shape {array.shape}, expected {hw}")
        image, info = _png_image(array, synthetic_note=True)
        del array
        _write_png_into(afs[key], image, info)
