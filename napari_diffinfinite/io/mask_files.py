"""Masks from files, at a canvas's label scale: label images (PNG / TIFF) and QuPath GeoJSON annotation exports.

- :func:`parse_qupath_geojson` reads a GeoJSON ``FeatureCollection`` (or a list of features, or one feature) as
  QuPath writes it (``File > Export objects as GeoJSON``): ``Polygon`` and ``MultiPolygon`` geometries (holes
  included; a ``GeometryCollection`` is searched for them), coordinates in image pixels ``(x, y)``, and the
  class in ``properties.classification.name``. Class names are matched to the model's class names ignoring
  case; a name that is not one of them is an error that lists the unknown names and the known ones. Features
  without a class, and points and lines, are skipped (and reported).
- :func:`rasterize_annotations` fills the polygons into a label array with Pillow's ``ImageDraw.polygon``, one
  label cell per ``cell_um`` micrometres: larger annotations first, so an annotation drawn inside another
  (necrosis inside a carcinoma region) stays on top; holes keep what is under them.
- :func:`read_mask_file` reads either kind (label images through
  :func:`~napari_diffinfinite.sampling.masks.load_label_image`, with its located errors) and brings it to the
  label scale by nearest sampling at each cell's centre.

Errors are :class:`~napari_diffinfinite.sampling.masks.MaskError` (a ``ValueError``) or ``FileNotFoundError``,
with messages fit for a notification. No Qt, no napari.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..sampling.masks import MaskError, load_label_image

__all__ = [
    "GEOJSON_SUFFIXES",
    "MAX_MASK_CELLS",
    "Annotation",
    "MaskRaster",
    "parse_qupath_geojson",
    "rasterize_annotations",
    "read_mask_file",
    "resample_labels",
]

GEOJSON_SUFFIXES = (".geojson", ".json")
#: Largest side, in label cells, of a mask read from a file (16,384 cells = 131,072 image px at 8 px a cell).
MAX_MASK_CELLS = 16384

Ring = np.ndarray  # (n, 2) float64, (x, y) in file coordinates


@dataclass
class Annotation:
    """One classified polygon: ``exterior`` and ``holes`` as ``(n, 2)`` arrays of ``(x, y)`` file coordinates."""

    label: int
    class_name: str
    exterior: Ring
    holes: list[Ring] = field(default_factory=list)

    @property
    def area(self) -> float:
        """Area of the exterior ring minus the holes (file units squared)."""
        return _ring_area(self.exterior) - sum(_ring_area(h) for h in self.holes)


@dataclass
class MaskRaster:
    """A mask read from a file at label scale: ``labels`` (h, w) uint8, ``origin`` the label cell of its
    top-left corner in the file's own coordinates (``(0, 0)`` for label images), ``skipped`` what was left out
    (one line each), ``counts`` the annotations per class name (GeoJSON)."""

    labels: np.ndarray
    origin: tuple[int, int] = (0, 0)
    skipped: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def _ring_area(ring: Ring) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _ring(coords: Any, where: str) -> Ring:
    try:
        arr = np.asarray(coords, dtype=np.float64)
    except (TypeError, ValueError):
        raise MaskError(f"{where}: a polygon ring must be a list of [x, y] positions") from None
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise MaskError(f"{where}: a polygon ring must be a list of [x, y] positions, got shape {arr.shape}")
    arr = arr[:, :2]
    if not np.isfinite(arr).all():
        raise MaskError(f"{where}: a polygon ring has non-finite coordinates")
    if len(arr) < 3:
        raise MaskError(f"{where}: a polygon ring needs at least 3 positions, got {len(arr)}")
    return arr


def _polygons(geometry: Any, where: str) -> tuple[list[list[Ring]], list[str]]:
    """The polygons (each [exterior, *holes]) of a geometry, and the types skipped."""
    if not isinstance(geometry, dict):
        return [], ["no geometry"]
    kind = geometry.get("type")
    if kind == "Polygon":
        rings = geometry.get("coordinates") or []
        return ([[_ring(r, where) for r in rings]] if rings else []), []
    if kind == "MultiPolygon":
        return [[_ring(r, where) for r in poly] for poly in (geometry.get("coordinates") or []) if poly], []
    if kind == "GeometryCollection":
        out, skipped = [], []
        for g in geometry.get("geometries") or []:
            p, s = _polygons(g, where)
            out += p
            skipped += s
        return out, skipped
    return [], [f"a {kind} geometry"]


def _class_name(properties: Any) -> str | None:
    if not isinstance(properties, dict):
        return None
    c = properties.get("classification")
    if isinstance(c, dict):
        c = c.get("name")
    if isinstance(c, str) and c.strip():
        return c.strip()
    return None


def _features(doc: Any, source: str) -> list[dict]:
    if isinstance(doc, list):
        feats = doc
    elif isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        feats = doc.get("features") or []
    elif isinstance(doc, dict) and doc.get("type") == "Feature":
        feats = [doc]
    else:
        raise MaskError(
            f"{source} is not a GeoJSON FeatureCollection, Feature or list of features "
            "(export the annotations from QuPath with File > Export objects as GeoJSON)"
        )
    if not all(isinstance(f, dict) for f in feats):
        raise MaskError(f"{source}: every feature must be a JSON object")
    return feats


def parse_qupath_geojson(
    source: str | os.PathLike | dict | list, class_names: Sequence[str]
) -> tuple[list[Annotation], list[str]]:
    """The classified polygons of a QuPath GeoJSON export (a path, or the parsed document), with each class
    name mapped to its index in ``class_names`` (ignoring case). Returns ``(annotations, skipped)``.

    Raises ``FileNotFoundError``, or :class:`MaskError` for invalid JSON, an unknown structure, bad rings, class
    names that are not the model's (all of them listed, with the known names), or no classified polygon."""
    if isinstance(source, (dict, list)):
        doc, name = source, "the GeoJSON"
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"mask file {str(path)!r} does not exist")
        name = path.name
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise MaskError(f"cannot read {name} as GeoJSON: {exc}") from None
    known = {n.lower(): i for i, n in enumerate(class_names)}
    annotations: list[Annotation] = []
    skipped: list[str] = []
    unknown: dict[str, int] = {}
    for k, feat in enumerate(_features(doc, name)):
        where = f"{name}, feature {k}"
        cls = _class_name(feat.get("properties"))
        polys, skipped_types = _polygons(feat.get("geometry"), where)
        skipped += [f"feature {k}: {s}" for s in skipped_types]
        if not polys:
            continue
        if cls is None:
            skipped.append(f"feature {k}: no classification")
            continue
        label = known.get(cls.lower())
        if label is None:
            unknown[cls] = unknown.get(cls, 0) + 1
            continue
        annotations += [Annotation(label, class_names[label], rings[0], rings[1:]) for rings in polys]
    if unknown:
        listed = ", ".join(f"{n!r} ({c} feature{'s' if c > 1 else ''})" for n, c in unknown.items())
        raise MaskError(
            f"{name} has class names this model does not know: {listed}. Its classes are "
            f"{', '.join(repr(n) for n in class_names)} (matched ignoring case); rename those classes "
            "in QuPath or choose a model with them"
        )
    if not annotations:
        why = f" ({'; '.join(skipped[:5])})" if skipped else ""
        raise MaskError(f"{name} has no classified Polygon or MultiPolygon annotation{why}")
    return annotations, skipped


def rasterize_annotations(
    annotations: Sequence[Annotation], scale: float, *, max_side: int = MAX_MASK_CELLS
) -> tuple[np.ndarray, tuple[int, int]]:
    """Fill ``annotations`` into a uint8 label array, ``scale`` label cells per file unit (e.g. file pixels at
    0.5 um and cells of 4 um: 0.125). A cell takes an annotation's label when its centre lies inside the
    annotation and outside its holes; Pillow's fill also takes cells that the outline passes through, so
    outlines are exact to one cell. Larger annotations are drawn first, so nested ones stay on top.
    Returns ``(labels, (y0, x0))``: the array covers the annotations' bounding box, whose top-left cell is
    ``(y0, x0)`` in scaled file coordinates."""
    from PIL import Image, ImageDraw

    if not annotations:
        raise MaskError("no annotations to rasterise")
    if not (scale > 0 and math.isfinite(scale)):
        raise MaskError(f"the scale must be a positive number, got {scale}")
    pts = np.concatenate([a.exterior for a in annotations]) * scale
    x0, y0 = (math.floor(v) for v in pts.min(0))
    x1, y1 = (math.ceil(v) for v in pts.max(0))
    h, w = max(1, y1 - y0), max(1, x1 - x0)
    if max(h, w) > max_side:
        raise MaskError(
            f"the annotations span {h} x {w} label cells ({h / scale:.0f} x {w / scale:.0f} px in the "
            f"file); at most {max_side} a side can be loaded at once: check the file's pixel size"
        )
    labels = np.zeros((h, w), np.uint8)
    for a in sorted(annotations, key=lambda a: -a.area):
        # PIL fills the pixels whose integer position (x, y) is inside: shift by half a cell so that position is
        # the cell's centre in file coordinates
        ext = a.exterior * scale - (x0 + 0.5, y0 + 0.5)
        bx0, by0 = (max(0, math.floor(v)) for v in ext.min(0))
        bx1, by1 = (min(lim, math.ceil(v) + 1) for v, lim in zip(ext.max(0), (w, h)))
        if bx1 <= bx0 or by1 <= by0:
            continue
        img = Image.new("L", (bx1 - bx0, by1 - by0), 0)
        draw = ImageDraw.Draw(img)
        draw.polygon([tuple(p) for p in ext - (bx0, by0)], fill=1)
        for hole in a.holes:
            draw.polygon([tuple(p) for p in hole * scale - (x0 + 0.5 + bx0, y0 + 0.5 + by0)], fill=0)
        inside = np.asarray(img, dtype=bool)
        labels[by0:by1, bx0:bx1][inside] = a.label
    return labels, (y0, x0)


def resample_labels(labels: np.ndarray, factor: float) -> np.ndarray:
    """Nearest sampling of a label image at cell centres, ``factor`` cells per image pixel (< 1 shrinks)."""
    arr = np.asarray(labels)
    if not (factor > 0 and math.isfinite(factor)):
        raise MaskError(f"the scale factor must be positive, got {factor}")
    if factor == 1:
        return arr
    h, w = arr.shape
    lh, lw = max(1, round(h * factor)), max(1, round(w * factor))
    ys = np.minimum(((np.arange(lh) + 0.5) / factor).astype(np.int64), h - 1)
    xs = np.minimum(((np.arange(lw) + 0.5) / factor).astype(np.int64), w - 1)
    return np.ascontiguousarray(arr[np.ix_(ys, xs)])


def read_mask_file(
    path: str | os.PathLike,
    class_names: Sequence[str],
    *,
    cell_um: float,
    file_um: float | None = None,
    image_um: float = 0.5,
    max_side: int = MAX_MASK_CELLS,
) -> MaskRaster:
    """A label image or a QuPath GeoJSON (by suffix: ``.geojson`` / ``.json``) as labels of ``cell_um`` um a
    cell. ``file_um`` is the size of the file's unit in um: a label image's pixel (default: ``cell_um``, one
    label per mask pixel) or a GeoJSON coordinate unit (default: ``image_um``, the canvas's image pixel)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file {str(path)!r} does not exist")
    if path.suffix.lower() in GEOJSON_SUFFIXES:
        annotations, skipped = parse_qupath_geojson(path, class_names)
        labels, origin = rasterize_annotations(
            annotations, (file_um or image_um) / cell_um, max_side=max_side
        )
        counts: dict[str, int] = {}
        for a in annotations:
            counts[a.class_name] = counts.get(a.class_name, 0) + 1
        return MaskRaster(labels, origin, skipped, counts)
    labels = load_label_image(path, len(class_names))
    factor = (file_um or cell_um) / cell_um
    h, w = labels.shape
    if max(h, w) * factor > max_side:
        raise MaskError(
            f"{path.name} is {h} x {w} px, {round(h * factor)} x {round(w * factor)} label cells at "
            f"{file_um or cell_um} um a pixel; at most {max_side} a side can be loaded at once"
        )
    return MaskRaster(resample_labels(labels, factor).astype(np.uint8))
