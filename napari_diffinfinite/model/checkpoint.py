"""Loading DiffInfinite weights: released ``model-*.pt`` files, bare UNet state dicts, safetensors.

Nothing here unpickles arbitrary objects: ``.pt`` files go through ``torch.load(weights_only=True)``, which
refuses any pickle that would need code to run. What the tensor shapes determine (width, classes, levels,
blocks per level, channels) is read from the file; what no shape reveals (``resnet_block_groups``) comes from
the caller's config, defaulting to the released configs.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open

from .._atomic import atomic_save_tensors
from .unet import ImageUnet, MaskUnet

Kind = Literal["image", "mask"]

#: The released configs of the reference (image_gen{5,10}, mask_gen{5,10}).
RELEASED_CONFIGS: dict[str, dict] = {
    "image": {
        "dim": 256,
        "num_classes": 5,
        "dim_mults": (1, 2, 4),
        "channels": 4,
        "resnet_block_groups": 2,
        "block_per_layer": 2,
    },
    "mask": {
        "dim": 64,
        "num_classes": 2,
        "dim_mults": (1, 2, 4, 8),
        "channels": 4,
        "resnet_block_groups": 2,
        "block_per_layer": 2,
    },
}
_NETWORKS = {"image": ImageUnet, "mask": MaskUnet}
# Prefixes under which UNet weights sit in the reference's files, most specific first.
_PREFIXES = ("ema_model.model.", "online_model.model.", "model.")
_META_KIND = "diffinfinite.kind"
_META_CONFIG = "diffinfinite.config"


class CheckpointError(ValueError):
    """A weights file that cannot become the requested network; the message says what is wrong and what to do."""


def _kind_of(state: dict[str, torch.Tensor]) -> Kind | None:
    """Which network a UNet state dict belongs to, from keys only one of them has."""
    if "null_classes_emb" in state or any(k.endswith(".to_qkv.weight") for k in state):
        return "mask"
    if any(k.endswith(".to_kv.weight") for k in state):
        return "image"
    return None


def _read(path: Path) -> tuple[object, dict[str, str]]:
    """The file's content (a dict) and, for safetensors, its metadata."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise CheckpointError(f"{path} is empty, not a checkpoint")
    # safetensors first: an 8-byte little-endian header length, then a JSON header starting with '{'. (Its
    # first byte can be 0x80, which alone would look like a pickle.)
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
            return load_file(str(path)), metadata
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(
                f"{path} could not be read as safetensors; it is probably truncated or corrupted. Detail: {e}"
            ) from None
    if head[:2] == b"PK" or head[:1] == b"\x80":
        try:
            return torch.load(path, map_location="cpu", weights_only=True), {}
        except pickle.UnpicklingError as e:
            msg = str(e)
            if "Weights only load failed" in msg or "Unsupported global" in msg or "weights_only" in msg:
                raise CheckpointError(
                    f"refused to load {path}: it is a pickle that would run code or build objects other than "
                    "tensors and plain containers when loaded (torch.load(weights_only=True) stopped it). "
                    "Only load checkpoints you trust; convert a trusted one to safetensors first. "
                    f"Detail: {msg.splitlines()[0]}"
                ) from None
            raise CheckpointError(
                f"{path} is not a readable PyTorch checkpoint ({msg.splitlines()[0]})"
            ) from None
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
            raise CheckpointError(
                f"{path} could not be read as a PyTorch checkpoint; it is probably truncated or corrupted "
                f"(download or copy it again). Detail: {str(e).splitlines()[0]}"
            ) from None
    raise CheckpointError(
        f"{path} is not a checkpoint: expected a PyTorch .pt file (zip or pickle) or a .safetensors file"
    )


def _unet_state(content: object, path: Path) -> dict[str, torch.Tensor]:
    """The UNet weights inside a released checkpoint dict, an EMA dict or a (prefixed) state dict."""
    if not isinstance(content, dict):
        raise CheckpointError(f"{path} holds a {type(content).__name__}, not a dict of weights")
    if isinstance(content.get("ema"), dict):  # released training checkpoint: sample with the EMA weights
        content = content["ema"]
    elif isinstance(content.get("model"), dict):
        content = content["model"]
    tensors = {k: v for k, v in content.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} contains no tensors; it is not a DiffInfinite checkpoint")
    for prefix in _PREFIXES:
        inner = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if inner:
            return inner
    return tensors


def _infer_config(state: dict[str, torch.Tensor], kind: Kind, path: Path) -> dict:
    """Constructor arguments that the tensor shapes determine."""
    try:
        dim, channels = state["init_conv.weight"].shape[:2]
        num_classes = state["classes_emb.weight"].shape[0]
        levels = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"downs\.(\d+)\.", k)))
        blocks = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"downs\.0\.(\d+)\.block1\.", k)))
        mults = []
        for i in range(levels):
            out = state[f"downs.{i}.{blocks + 1}.weight"].shape[0]
            mults.append(out // dim)
    except (KeyError, ValueError) as e:
        raise CheckpointError(
            f"{path} does not have the layout of a DiffInfinite {kind} UNet (missing {e}); "
            "see the manifests of the released checkpoints"
        ) from None
    config = {
        "dim": int(dim),
        "num_classes": int(num_classes),
        "dim_mults": tuple(mults),
        "channels": int(channels),
        "block_per_layer": int(blocks),
    }
    out_channels = state["final_conv.weight"].shape[0] if "final_conv.weight" in state else channels
    if kind == "image" and channels == out_channels + num_classes - 1:  # ImageUnet(mask_input=True)
        config.update(channels=int(out_channels), mask_input=True)
    return config


def _load_strict(net: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs network {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if state[k].shape != expected[k].shape
    ]
    problems = []
    for title, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", mismatched),
    ):
        if items:
            shown = "\n    ".join(items[:20]) + (
                f"\n    ... and {len(items) - 20} more" if len(items) > 20 else ""
            )
            problems.append(f"  {title} ({len(items)}):\n    {shown}")
    if problems:
        raise CheckpointError(
            f"{path} does not fit the network built from config {net.config}:\n" + "\n".join(problems)
        )
    net.load_state_dict(state, strict=True)


def load_diffinfinite_checkpoint(path, kind: Kind, **config) -> ImageUnet | MaskUnet:
    """Build the ``kind`` ("image" or "mask") UNet from a weights file and return it in eval mode.

    Accepts a released ``model-*.pt`` (its ``ema`` weights are used), a bare UNet state dict (``.pt``), or a
    safetensors file (as written by :func:`save_unet`, or with the reference's ``model.`` prefix). ``config``
    takes constructor arguments that shapes cannot reveal (``resnet_block_groups``) and must agree with
    those they can.
    """
    if kind not in _NETWORKS:
        raise ValueError(f"kind must be 'image' or 'mask', got {kind!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    content, metadata = _read(path)
    state = _unet_state(content, path)
    found = _kind_of(state)
    if found is not None and found != kind:
        raise CheckpointError(
            f"{path} holds a {found}-model UNet, but a {kind} model was asked for; load it with kind={found!r}"
        )
    if metadata.get(_META_KIND) not in (None, kind):
        raise CheckpointError(f"{path} is marked as a {metadata[_META_KIND]} model, not a {kind} model")
    inferred = _infer_config(state, kind, path)
    saved = json.loads(metadata.get(_META_CONFIG, "{}"))
    for key, value in config.items():
        if key in inferred and tuple(_as_tuple(value)) != tuple(_as_tuple(inferred[key])):
            raise CheckpointError(
                f"config {key}={value!r} contradicts {path}, whose tensors imply {key}={inferred[key]!r}"
            )
    full = {**RELEASED_CONFIGS[kind], **saved, **config, **inferred}
    full["dim_mults"] = tuple(full["dim_mults"])
    net = _NETWORKS[kind](**full)
    _load_strict(net, state, path)
    return net.eval()


def _as_tuple(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def save_unet(net: ImageUnet | MaskUnet, path) -> None:
    """Write a UNet as safetensors with its kind and config in the metadata (our own weights format)."""
    kind = "image" if isinstance(net, ImageUnet) else "mask"
    atomic_save_tensors(
        Path(path), net.state_dict(), {_META_KIND: kind, _META_CONFIG: json.dumps(net.config)}
    )
