"""Assemble a model folder (``model.json`` + safetensors) from training runs, as ``load_model`` reads it.

The EMA weights of each run are copied as they are (they carry their kind and config in the safetensors
metadata); ``model.json`` records how to use them and where they came from.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from safetensors import safe_open

from .._atomic import atomic_copy, atomic_write_text
from ..model.diffusion import check_sampler
from ..model_manifest import compact_downsampling


def _weights(run_or_file: Path) -> Path:
    path = Path(run_or_file)
    path = path / "ema.safetensors" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; train the network first (diffinfinite train ...)")
    return path


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def _provenance(path: Path) -> dict:
    state = path.parent / "state.json"
    info = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    if state.is_file():
        s = json.loads(state.read_text())
        info.update(steps=s.get("step"), train_seconds=s.get("elapsed_s"))
    return info


def bundle_model(
    out,
    *,
    autoencoder,
    image=None,
    mask=None,
    name="embedded",
    default_steps=25,
    default_omega=3.0,
    mask_omega=3.0,
    sampler="ddim",
    image_window=None,
    mask_window=32,
    pixel_size_um=0.5,
) -> Path:
    """Write ``out``/{autoencoder,image,mask}.safetensors and ``model.json``; returns the folder.

    ``default_omega`` is the image model's default guidance, ``mask_omega`` the mask model's; ``sampler`` the
    image model's default sampler (``model.diffusion.SAMPLERS``). ``image_window`` (latents; default: the
    512 px the image models train and sample at, 64 latents at 8x downsampling, 128 at 4x)."""
    check_sampler(sampler)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {
        "name": name,
        "default_steps": default_steps,
        "default_omega": default_omega,
        "pixel_size_um": pixel_size_um,
        "provenance": {},
    }
    parts = {"autoencoder": autoencoder, "image": image, "mask": mask}
    expected = {"autoencoder": "autoencoder", "image": "image", "mask": "mask"}
    for part, source in parts.items():
        if source is None:
            continue
        src = _weights(source)
        kind = _metadata(src).get("diffinfinite.kind")
        if kind != expected[part]:
            raise ValueError(f"{src} holds a {kind!r} network, not the {part} this bundle needs")
        target = out / f"{part}.safetensors"
        if src.resolve() != target.resolve():
            atomic_copy(src, target)
        manifest["provenance"][part] = _provenance(src)
    manifest["autoencoder"] = {"type": "compact", "file": "autoencoder.safetensors"}
    if image is not None:
        if image_window is None:
            image_window = 512 // compact_downsampling(out / "autoencoder.safetensors")
        manifest["image"] = {"file": "image.safetensors", "window": image_window, "sampler": sampler}
    if mask is not None:
        meta = _metadata(out / "mask.safetensors")
        manifest["contexts"] = json.loads(meta.get("diffinfinite.contexts", '["adenocarcinoma"]'))
        manifest["mask"] = {
            "file": "mask.safetensors",
            "window": mask_window,
            "mask_px": 1,
            "omega": mask_omega,
            "codec": json.loads(meta["diffinfinite.mask_codec"]),
        }
    atomic_write_text(out / "model.json", json.dumps(manifest, indent=1) + "\n")
    return out
