"""What a canvas folder says about itself: format, geometry, model and settings, read from its ``zarr.json``
with the json module alone.

The store validates its attributes here, and the reader decides whether a folder is a canvas and lays out its
mask window with it before zarr is imported: that import and the store's opening cost 0.3-0.4 s, which must not
add to the freeze napari causes as it adds the first layer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .grid import CanvasGrid

__all__ = ["ATTRS_KEY", "FORMAT", "FORMAT_VERSION", "CanvasHeader", "canvas_attrs", "read_header"]

FORMAT = "diffinfinite-canvas"
FORMAT_VERSION = 1
#: The group attribute that holds a canvas's own metadata.
ATTRS_KEY = "diffinfinite"


@dataclass(frozen=True)
class CanvasHeader:
    """A canvas's recorded metadata (the ``diffinfinite`` attributes of its zarr group)."""

    root: Path
    grid: CanvasGrid
    latent_channels: int
    model_name: str | None
    settings: dict = field(default_factory=dict)

    @property
    def pixel_size_um(self) -> float:
        return float(self.settings.get("pixel_size_um", 0.5))

    @property
    def num_classes(self) -> int:
        return int(self.settings.get("num_classes", 5))

    @property
    def view_centre_px(self) -> tuple[float, float] | None:
        """The centre of the view saved when the canvas was last closed in napari (level-0 px), if any."""
        centre = (self.settings.get("view") or {}).get("centre_px")
        return None if centre is None else (float(centre[0]), float(centre[1]))

    @property
    def view_zoom(self) -> float:
        """The zoom of that saved view (screen px per image px); 1:1 when none was saved."""
        return float((self.settings.get("view") or {}).get("zoom", 1.0))

    @classmethod
    def from_attrs(cls, root, meta: Mapping) -> CanvasHeader:
        """The header of the canvas at ``root`` from its attributes; ValueError names what is wrong."""
        if not isinstance(meta, Mapping) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, Mapping) else meta
            raise ValueError(f"{root} is not a DiffInfinite canvas (format {found!r})")
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(
                f"{root} was written by a newer napari-diffinfinite (canvas format {meta['format_version']}, "
                f"this version reads up to {FORMAT_VERSION}); upgrade the package"
            )
        geo = meta["geometry"]
        grid = CanvasGrid(*geo["shape_px"], tile=geo["tile_px"], downsampling=geo["downsampling"])
        return cls(Path(root), grid, int(geo["latent_channels"]), meta.get("model"), dict(meta["settings"]))


def canvas_attrs(folder) -> dict | None:
    """The canvas attributes of ``folder`` when it holds a DiffInfinite canvas (any format version), else None:
    no group metadata, unreadable metadata, or a zarr group that is not a canvas."""
    meta_file = Path(folder) / "zarr.json"
    if not meta_file.is_file():
        return None
    try:
        attrs = json.loads(meta_file.read_text()).get("attributes", {}).get(ATTRS_KEY)
    except (OSError, ValueError, AttributeError):
        return None
    return attrs if isinstance(attrs, dict) and attrs.get("format") == FORMAT else None


def read_header(folder) -> CanvasHeader:
    """The header of the canvas in ``folder``; FileNotFoundError or ValueError say why there is none."""
    attrs = canvas_attrs(folder)
    if attrs is None:
        raise FileNotFoundError(
            f"{folder} is not a DiffInfinite canvas folder (no canvas metadata in zarr.json)"
        )
    try:
        return CanvasHeader.from_attrs(folder, attrs)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"the canvas metadata of {folder} is damaged ({exc!r})") from exc
