"""What a model folder says about its model, read without torch.

Importing torch and loading a model takes 2-3 s on a small CPU. The napari face creates a canvas for a model
from this (name, latent geometry, classes, sampling defaults) and loads the model itself in a worker thread,
so that opening the demo never freezes the viewer. ``generation.load_model`` takes its defaults from here.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

#: The image samplers, by the name ``model.json``, settings and ``--sampler`` use, with the name users read
#: (``model.diffusion`` implements them; torch-free here so that the command line and widgets list them
#: without importing torch).
SAMPLER_LABELS = {"ddim": "DDIM (reference)", "dpmpp-2m-sde": "DPM-Solver++(2M) SDE"}
#: Defaults of the optional ``model.json`` fields (one place for the loader and for the canvas).
MANIFEST_DEFAULTS = {
    "default_steps": 25,
    "default_omega": 3.0,
    "sampler": "ddim",
    "window": 64,
    "pixel_size_um": 0.5,
}
#: ``CompactAutoencoder``'s downsampling where its config does not name one (the 8x weights written before
#: 4x existed).
COMPACT_DOWNSAMPLING = 8


@dataclass(frozen=True)
class ModelManifest:
    """The attributes of a loaded model that a new canvas records (see ``CanvasStore.create_for_model``)."""

    name: str
    latent_channels: int
    downsampling: int
    num_classes: int
    default_steps: int
    default_omega: float
    sampler: str
    window: int
    pixel_size_um: float


def safetensors_metadata(path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, from its JSON header alone (no tensor is read)."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        if size > 100_000_000:
            raise ValueError(f"{path}: not a safetensors file (header of {size} bytes)")
        header = json.loads(f.read(size))
    return header.get("__metadata__") or {}


def compact_downsampling(path) -> int:
    """The downsampling of the compact autoencoder saved at ``path``, from its config (no tensor read)."""
    config = json.loads(safetensors_metadata(path)["diffinfinite.config"])
    return int(config.get("downsampling", COMPACT_DOWNSAMPLING))


def embedded_folder() -> Path:
    from ._resources import resource_path

    return resource_path("models") / "embedded"


def read_manifest(source: str | Path) -> ModelManifest | None:
    """The manifest of ``source`` (``"embedded"`` or a model folder), or None where it cannot be known
    without loading the model (the released checkpoints, a folder that is not a complete model, weights
    without our metadata): the caller then loads the model first, as before."""
    if str(source) == "diffinfinite":
        return None
    folder = embedded_folder() if str(source) == "embedded" else Path(source)
    try:
        meta = json.loads((folder / "model.json").read_text())
        if meta["autoencoder"].get("type") != "compact":
            return None
        config = json.loads(safetensors_metadata(folder / meta["image"]["file"])["diffinfinite.config"])
        channels, classes = int(config["channels"]), int(config["num_classes"])
        downsampling = compact_downsampling(folder / meta["autoencoder"]["file"])
    except (OSError, KeyError, TypeError, ValueError):
        return None
    image = meta["image"]
    return ModelManifest(
        name=meta.get("name", folder.name),
        latent_channels=channels,
        downsampling=downsampling,
        num_classes=classes,
        default_steps=meta.get("default_steps", MANIFEST_DEFAULTS["default_steps"]),
        default_omega=meta.get("default_omega", MANIFEST_DEFAULTS["default_omega"]),
        sampler=image.get("sampler", MANIFEST_DEFAULTS["sampler"]),
        window=image.get("window", MANIFEST_DEFAULTS["window"]),
        pixel_size_um=meta.get("pixel_size_um", MANIFEST_DEFAULTS["pixel_size_um"]),
    )
