"""Training the context-conditioned mask UNet on simplex mask latents (no autoencoder).

A mask becomes a latent through :class:`~napari_diffinfinite.sampling.masks.SimplexMaskCodec`: each label is a
vertex of a regular simplex (``num_labels - 1`` channels), averaged over ``cells_per_latent`` square cells, so a
512-px mask with 16 cells per latent is a 4 x 32 x 32 latent whose decode is 512 px of labels again. Masks are
encoded in all 8 dihedral transforms and cached. ``MaskUnet`` learns to predict the noise given the context
prompt (0 adenocarcinoma, 1 squamous); with probability ``cond_drop`` the learned null embedding replaces the
context, which is what guided sampling uses for its null half.

The weights record the codec (``diffinfinite.mask_codec``) and the contexts they were trained on
(``diffinfinite.contexts``), so that a loader rebuilds the codec and refuses contexts the model never saw.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..classes import CONTEXT_PROMPTS
from ..model.diffusion import cosine_schedule, guided_scale, q_sample
from ..model.unet import MaskUnet
from ..sampling.masks import DEFAULT_MASK_OMEGA, SimplexMaskCodec
from .autoencoder import save_grid
from .dataset import DatasetError, Patch
from .image import (
    DIHEDRAL,
    dihedral,
    floor_to,
    noise_loss,
    random_crops,
    render_labels,
    step_generator,
)
from .loop import TrainConfig, Trainer

_CONTEXT_IN_NAME = re.compile(r"label(\d+)_")


def context_names(contexts: int) -> list[str]:
    """Names of the first ``contexts`` context prompts (what ``diffinfinite.contexts`` records)."""
    if contexts < 1:
        raise ValueError(f"contexts must be >= 1, got {contexts}")
    return [CONTEXT_PROMPTS.get(i, f"context {i}") for i in range(contexts)]


def patch_context(name: str, contexts: int) -> int:
    """The context id of a patch from its file name, as the reference names its data.

    ``sample_label<k>_NNNN`` (``label<k>_`` anywhere in the file name) is context ``k``; any other name is
    context 0 (adenocarcinoma). Raises :class:`DatasetError` for a context the model is not trained for.
    """
    m = _CONTEXT_IN_NAME.search(Path(name).name)
    k = int(m.group(1)) if m else 0
    if k >= contexts:
        raise DatasetError(
            f"{name}: its name marks context {k} ({CONTEXT_PROMPTS.get(k, '?')}), but the mask model is "
            f"trained for {contexts} context(s) ({', '.join(context_names(contexts))}); raise contexts"
        )
    return k


@dataclass
class MaskLatentCache:
    """Simplex latents ``latents[i][k]`` (C, h, w) of patch ``i`` in dihedral transform ``k``, and its context."""

    names: list[str]
    latents: list[tuple[torch.Tensor, ...]]
    contexts: torch.Tensor  # (N,) long

    def __len__(self) -> int:
        return len(self.latents)


def encode_masks(
    patches: Sequence[Patch], codec: SimplexMaskCodec, contexts: Sequence[int]
) -> MaskLatentCache:
    """Encode every mask in all 8 transforms; masks are cropped to a multiple of ``codec.cells_per_latent``."""
    f = codec.cells_per_latent
    names, latents = [], []
    for p in patches:
        h, w = floor_to(p.mask.shape[0], f), floor_to(p.mask.shape[1], f)
        if h == 0 or w == 0:
            raise DatasetError(
                f"{p.name}: {p.mask.shape[1]}x{p.mask.shape[0]} px is smaller than one latent ({f} px)"
            )
        if p.mask.max() >= codec.num_labels:
            raise DatasetError(
                f"{p.name}: label {int(p.mask.max())} is out of range 0..{codec.num_labels - 1}"
            )
        mask = torch.from_numpy(p.mask[:h, :w].copy()).long()
        latents.append(tuple(codec.encode(dihedral(mask, k)[None])[0] for k in range(DIHEDRAL)))
        names.append(p.name)
    return MaskLatentCache(names, latents, torch.as_tensor(list(contexts), dtype=torch.long))


@dataclass
class MaskBatch:
    latents: torch.Tensor  # (B, C, s, s)
    contexts: torch.Tensor  # (B,) context ids
    null: torch.Tensor  # (B,) bool: the null embedding replaces the context
    index: torch.Tensor
    transform: torch.Tensor


def mask_batch(
    cache: MaskLatentCache, batch: int, crop: int, cond_drop: float, generator: torch.Generator
) -> MaskBatch:
    """Random latent crops with their contexts; each sample's context is dropped with probability ``cond_drop``."""
    (latents,), idx, ks = random_crops((cache.latents,), batch, crop, generator)
    null = torch.rand(batch, generator=generator) < cond_drop
    return MaskBatch(latents, cache.contexts[idx], null, idx, ks)


def train_mask_model(
    train_patches: Sequence[Patch],
    out,
    config: TrainConfig,
    *,
    unet_config: dict,
    contexts: int = 1,
    patch_contexts: Sequence[int] | None = None,
    num_labels: int = 5,
    cells_per_latent: int = 16,
    batch: int = 8,
    crop_latents: int = 32,
    cond_drop: float = 0.2,
    loss: str = "l1",
    omega: float = DEFAULT_MASK_OMEGA,
    sample_steps: int = 20,
    sample_count: int = 4,
    device="cpu",
    progress: bool = True,
) -> MaskUnet:
    """Train (or resume) a :class:`MaskUnet` on simplex mask latents in ``out``; returns the EMA network.

    ``unet_config``: ``MaskUnet`` keywords (``dim``, ``dim_mults``, ``resnet_block_groups``,
    ``block_per_layer``, ``dropout``); ``channels`` comes from the codec (``num_labels - 1``) and
    ``num_classes`` is ``contexts``. ``patch_contexts`` gives each patch's context id (default: read from the
    file names by :func:`patch_context`). ``crop_latents`` 32 with 16 cells per latent trains on whole
    512-px masks. The run's ``ema.safetensors`` loads with ``load_diffinfinite_checkpoint(path, "mask")`` and
    records ``diffinfinite.mask_codec`` and ``diffinfinite.contexts``. The sample grid shows training masks,
    then ``sample_count`` generated masks per context (guidance ``omega``).
    """
    if not 0 <= cond_drop <= 1:
        raise ValueError(f"cond_drop must lie in [0, 1], got {cond_drop}")
    noise_loss(torch.zeros(1), torch.zeros(1), loss)
    device = torch.device(device)
    codec = SimplexMaskCodec(num_labels, cells_per_latent=cells_per_latent)
    unet_kwargs = dict(unet_config)
    channels = unet_kwargs.pop("channels", codec.latent_channels)
    if channels != codec.latent_channels:
        raise ValueError(
            f"unet channels={channels} but the {codec!r} makes {codec.latent_channels}-channel latents"
        )
    num_classes = unet_kwargs.pop("num_classes", contexts)
    if num_classes != contexts:
        raise ValueError(f"unet num_classes={num_classes} must equal the number of contexts ({contexts})")
    names = context_names(contexts)
    if patch_contexts is None:
        patch_contexts = [patch_context(p.name, contexts) for p in train_patches]
    if len(patch_contexts) != len(train_patches):
        raise ValueError(f"{len(patch_contexts)} contexts for {len(train_patches)} patches")
    bad = sorted({int(c) for c in patch_contexts} - set(range(contexts)))
    if bad:
        raise ValueError(f"patch contexts {bad} are out of range 0..{contexts - 1}")

    torch.manual_seed(config.seed)
    net = MaskUnet(channels=channels, num_classes=contexts, **unet_kwargs).to(device)
    metadata = {
        "diffinfinite.kind": "mask",
        "diffinfinite.config": json.dumps(net.config),
        "diffinfinite.mask_codec": json.dumps(
            {"type": "simplex", "num_labels": codec.num_labels, "cells_per_latent": codec.cells_per_latent}
        ),
        "diffinfinite.contexts": json.dumps(names),
    }
    config.extra = {
        **config.extra,
        "kind": "mask",
        "batch": batch,
        "crop_latents": crop_latents,
        "cond_drop": cond_drop,
        "loss": loss,
    }
    trainer = Trainer(net, Path(out), config, metadata)

    cache = encode_masks(train_patches, codec, patch_contexts)
    if not len(cache):
        raise DatasetError("no masks to train on")
    if crop_latents < 1 or crop_latents % net.size_multiple:
        raise ValueError(f"crop_latents={crop_latents} must be a positive multiple of {net.size_multiple}")
    for name, z in zip(cache.names, cache.latents):
        if min(z[0].shape[-2:]) < crop_latents:
            raise DatasetError(
                f"{name}: its mask latent is {min(z[0].shape[-2:])} wide, smaller than crop_latents={crop_latents} "
                f"({crop_latents * cells_per_latent} px); lower crop_latents"
            )
    schedule = cosine_schedule()
    schedule_dev = schedule.to(device)
    present = sorted(set(cache.contexts.tolist()))

    def loss_fn(model: MaskUnet):
        g = step_generator(config.seed, trainer.step)
        b = mask_batch(cache, batch, crop_latents, cond_drop, g)
        t = torch.randint(0, schedule.timesteps, (batch,), generator=g)
        noise = torch.randn(b.latents.shape, generator=g)
        x_t = q_sample(schedule, b.latents, t, noise)
        pred = model(x_t.to(device), t.to(device), b.contexts.to(device), null=b.null.to(device))
        return {"loss": noise_loss(pred, noise.to(device), loss), "null_frac": b.null.float().mean()}

    f = codec.cells_per_latent
    shown_px = 4  # render masks at 1/4 of their pixels: they are coarse, and the grid stays small
    real = [p.mask[: floor_to(p.mask.shape[0], f), : floor_to(p.mask.shape[1], f)] for p in train_patches]
    real = [torch.from_numpy(m[: crop_latents * f, : crop_latents * f].copy()) for m in real[:sample_count]]

    def sample_fn(ema: MaskUnet, path: Path):
        from ..sampling.random_patch import sample_region
        from ..sampling.steppers import MaskStepper

        if not real:
            return
        rows = [render_labels(torch.stack(real)[:, ::shown_px, ::shown_px], codec.num_labels)]
        for context in present:
            stepper = MaskStepper(ema, schedule_dev, context=context, cond_scale=guided_scale(omega))
            masks = []
            for j in range(len(real)):
                z = sample_region(
                    stepper,
                    (codec.latent_channels, crop_latents, crop_latents),
                    None,
                    schedule=schedule_dev,
                    steps=sample_steps,
                    generator=torch.Generator().manual_seed(config.seed + 1000 * context + j),
                    window=crop_latents,
                    device=device,
                )
                masks.append(codec.decode(z[None].float().cpu())[0])
            rows.append(render_labels(torch.stack(masks)[:, ::shown_px, ::shown_px], codec.num_labels))
        save_grid(rows, path)

    trainer.run(loss_fn, sample_fn, progress=progress)
    return trainer.ema
