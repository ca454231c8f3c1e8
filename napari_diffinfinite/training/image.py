"""Training the mask-conditioned image UNet in the latent space of the compact autoencoder.

Every training image is encoded once, in all 8 dihedral transforms (tissue has no orientation, and the
autoencoder is not exactly equivariant, so each transform is encoded rather than its latent rotated), and the
latents stay in memory with their masks at latent resolution. A step draws random latent crops, noises them
to a random time and trains ``ImageUnet(x_t, t, mask)`` to predict the noise (L1 as in the reference, or MSE).

Classifier-free guidance needs the null condition: with probability ``cond_drop`` a sample's mask is zeroed
(class 0 and an empty query mask, exactly what guided sampling feeds the null half), and unlabelled patches
(all-zero masks) always train it.

The helpers here (dihedral transforms, random crops, per-step generators, label colours) are shared with the
mask trainer.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..classes import CLASS_SETS, class_set
from ..label_grid import labels_at_cell_centres
from ..model.compact_autoencoder import CompactAutoencoder
from ..model.diffusion import cosine_schedule, guided_scale, q_sample
from ..model.unet import ImageUnet
from .autoencoder import save_grid
from .dataset import DatasetError, Patch
from .loop import TrainConfig, Trainer

#: Number of dihedral transforms of a square (4 rotations, each optionally mirrored).
DIHEDRAL = 8

AUTOENCODER_HINT = "diffinfinite train autoencoder --data DATA --out RUN (then use RUN/ema.safetensors)"


class AutoencoderFileError(FileNotFoundError):
    """The autoencoder an image model needs is missing or is not a compact autoencoder."""


# ======================================================================================= shared helpers
def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Transform ``k`` (0..7) of the last two axes: ``k % 4`` quarter turns, then a left-right mirror if ``k >= 4``."""
    out = torch.rot90(x, k % 4, dims=(-2, -1))
    return out.flip(-1) if k >= 4 else out


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of one training step: a resumed run draws the same batches as an uninterrupted one."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))


def random_crops(
    fields: Sequence[Sequence[Sequence[torch.Tensor]]], batch: int, crop: int, generator: torch.Generator
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """``batch`` random ``crop x crop`` crops of random transforms of random items, the same window in every field.

    ``fields[f][i][k]`` is item ``i`` of field ``f`` (e.g. latents, masks) in dihedral transform ``k``, a tensor
    ``(..., h_i, w_i)`` whose last two axes agree across fields. Returns the stacked crops of each field, and
    the item and transform index of each sample. Every draw comes from ``generator``.
    """
    first = fields[0]
    idx = torch.randint(len(first), (batch,), generator=generator)
    ks = torch.randint(DIHEDRAL, (batch,), generator=generator)
    out: list[list[torch.Tensor]] = [[] for _ in fields]
    for i, k in zip(idx.tolist(), ks.tolist()):
        h, w = first[i][k].shape[-2:]
        y = int(torch.randint(h - crop + 1, (1,), generator=generator))
        x = int(torch.randint(w - crop + 1, (1,), generator=generator))
        for crops, field in zip(out, fields):
            crops.append(field[i][k][..., y : y + crop, x : x + crop])
    return [torch.stack(c) for c in out], idx, ks


def render_labels(labels: torch.Tensor, num_classes: int, background=(0.85, 0.85, 0.85)) -> torch.Tensor:
    """Label maps ``(N, H, W)`` as RGB ``(N, 3, H, W)`` in [0, 1] with the class colours (label 0 grey)."""
    if num_classes in CLASS_SETS:
        colours = torch.tensor([c.color[:3] if c.id else background for c in class_set(num_classes)])
    else:  # a label set without a palette: evenly spaced hues
        import colorsys

        colours = torch.tensor(
            [background]
            + [colorsys.hsv_to_rgb(i / (num_classes - 1), 0.8, 0.8) for i in range(num_classes - 1)]
        )
    return colours[labels.long().clamp(0, num_classes - 1)].permute(0, 3, 1, 2)


def floor_to(n: int, multiple: int) -> int:
    return n - n % multiple


# ======================================================================================= the latent cache
@dataclass
class LatentCache:
    """Latents of every patch in every dihedral transform, with its masks at latent resolution.

    ``latents[i][k]``: float32 ``(C, h, w)``; ``masks[i][k]``: int64 ``(h, w)``; transform ``k`` (0..7) of both
    is :func:`dihedral` ``(·, k)`` of patch ``i`` (for a non-square patch ``h`` and ``w`` swap with odd ``k``).
    """

    names: list[str]
    latents: list[tuple[torch.Tensor, ...]]
    masks: list[tuple[torch.Tensor, ...]]

    def __len__(self) -> int:
        return len(self.latents)

    @functools.cached_property
    def label_holders(self) -> dict[int, list[tuple[int, int]]]:
        """For each label > 0, the (patch, transform) pairs whose latent mask holds it. Per transform: the latent
        grid samples each transform's mask at other pixels, so a small region can be in one and not another."""
        holders: dict[int, list[tuple[int, int]]] = {}
        for i, masks in enumerate(self.masks):
            for k, mask in enumerate(masks):
                for label in torch.unique(mask).tolist():
                    if label > 0:
                        holders.setdefault(int(label), []).append((i, k))
        return holders

    @property
    def labelled(self) -> torch.Tensor:
        """Whether each patch has any label > 0 (unlabelled patches train the null condition only)."""
        return torch.tensor([bool(m[0].any()) for m in self.masks])


@torch.no_grad()
def encode_patches(
    patches: Sequence[Patch], autoencoder: CompactAutoencoder, *, num_classes: int, progress: bool = False
) -> LatentCache:
    """Encode every patch in all 8 transforms (one autoencoder batch per patch) and cache the results.

    Patches are cropped to a multiple of the autoencoder's downsampling; labels must lie below ``num_classes``.
    """
    from tqdm import tqdm

    f = autoencoder.downsampling
    names, latents, masks = [], [], []
    for p in tqdm(patches, desc="encoding patches (8 transforms)", disable=not progress, dynamic_ncols=True):
        h, w = floor_to(p.mask.shape[0], f), floor_to(p.mask.shape[1], f)
        if h == 0 or w == 0:
            raise DatasetError(
                f"{p.name}: {p.mask.shape[1]}x{p.mask.shape[0]} px is smaller than one latent ({f} px)"
            )
        if p.mask.max() >= num_classes:
            raise DatasetError(f"{p.name}: label {int(p.mask.max())} is out of range 0..{num_classes - 1}")
        image = torch.from_numpy(np.array(p.image[:h, :w])).permute(2, 0, 1).float() / 255.0
        mask = torch.from_numpy(np.array(p.mask[:h, :w])).long()
        images = [dihedral(image, k) for k in range(DIHEDRAL)]
        z: list[torch.Tensor] = [torch.empty(0)] * DIHEDRAL
        for shape in {im.shape for im in images}:  # one batch per orientation (two for a non-square patch)
            ks = [k for k in range(DIHEDRAL) if images[k].shape == shape]
            encoded = autoencoder.encode(torch.stack([images[k] for k in ks]).to(autoencoder.device))
            for k, e in zip(ks, encoded.float().cpu()):
                z[k] = e
        names.append(p.name)
        latents.append(tuple(z))
        masks.append(
            tuple(labels_at_cell_centres(dihedral(mask, k), f).contiguous() for k in range(DIHEDRAL))
        )
    return LatentCache(names, latents, masks)


# ======================================================================================= batches and loss
@dataclass
class ImageBatch:
    latents: torch.Tensor  # (B, C, s, s) clean latents
    masks: torch.Tensor  # (B, 1, s, s) label maps at latent resolution; zero where the condition is dropped
    dropped: torch.Tensor  # (B,) bool: condition dropped at random this step
    index: torch.Tensor  # (B,) patch index
    transform: torch.Tensor  # (B,) dihedral transform


def image_batch(
    cache: LatentCache,
    batch: int,
    crop: int,
    cond_drop: float,
    generator: torch.Generator,
    per_label: bool = False,
    balance_labels: bool = False,
) -> ImageBatch:
    """Random latent crops with their masks; each sample's mask is zeroed with probability ``cond_drop``.

    ``per_label``: keep one label per sample, drawn uniformly from the labels > 0 in its crop, as
    ``(mask == label) * label``. That is exactly the row the multi-label sampler feeds the network for that
    label; the reference's mixed masks (class = the largest label present) teach a small network "largest label
    in the neighbourhood" rather than "this pixel's class".

    ``balance_labels`` (with ``per_label``): draw the label first, uniformly over the labels > 0 of the
    dataset, then a crop that holds it (see :func:`label_balanced_crops`), so that a label found in a few
    patches (necrosis: 13 of 100 samples) is taught as often as the common ones.
    """
    if balance_labels and not per_label:
        raise ValueError(
            "balance_labels needs per_label: the drawn label is the one each sample is conditioned on"
        )
    if balance_labels:
        latents, masks, idx, ks, chosen = label_balanced_crops(cache, batch, crop, generator)
    else:
        (latents, masks), idx, ks = random_crops((cache.latents, cache.masks), batch, crop, generator)
    masks = masks[:, None]
    dropped = torch.rand(batch, generator=generator) < cond_drop
    if balance_labels:
        masks = (masks == chosen[:, None, None, None]) * chosen[:, None, None, None]
    elif per_label:
        masks = torch.stack([_one_label(m, generator) for m in masks])
    masks = torch.where(dropped[:, None, None, None], torch.zeros_like(masks), masks)
    return ImageBatch(latents, masks, dropped, idx, ks)


def label_balanced_crops(
    cache: LatentCache, batch: int, crop: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``batch`` crops, each drawn for a label: label uniform over the labels > 0 in ``cache``, then a
    (patch, transform) whose latent mask holds it, then a crop around one of its latents drawn uniformly.

    Returns latents ``(B, C, crop, crop)``, masks ``(B, crop, crop)``, patch and transform indices, and the
    label of each sample (present in its crop by construction).
    """
    holders = cache.label_holders
    if not holders:
        raise DatasetError("balanced labels need labelled patches; every mask is empty")
    labels = sorted(holders)
    latents, masks, idx, ks, chosen = [], [], [], [], []
    for _ in range(batch):
        label = labels[int(torch.randint(len(labels), (1,), generator=generator))]
        owners = holders[label]
        i, k = owners[int(torch.randint(len(owners), (1,), generator=generator))]
        mask = cache.masks[i][k]
        h, w = mask.shape
        ys, xs = torch.nonzero(mask == label, as_tuple=True)
        j = int(torch.randint(len(ys), (1,), generator=generator))
        # a window of side `crop` holding latent (ys[j], xs[j]), uniform over the windows that fit
        y_lo, y_hi = max(0, int(ys[j]) - crop + 1), min(int(ys[j]), h - crop)
        x_lo, x_hi = max(0, int(xs[j]) - crop + 1), min(int(xs[j]), w - crop)
        y = y_lo + int(torch.randint(y_hi - y_lo + 1, (1,), generator=generator))
        x = x_lo + int(torch.randint(x_hi - x_lo + 1, (1,), generator=generator))
        latents.append(cache.latents[i][k][..., y : y + crop, x : x + crop])
        masks.append(mask[y : y + crop, x : x + crop])
        idx.append(i)
        ks.append(k)
        chosen.append(label)
    return (
        torch.stack(latents),
        torch.stack(masks),
        torch.tensor(idx),
        torch.tensor(ks),
        torch.tensor(chosen),
    )


def _one_label(mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``mask`` reduced to one of its labels > 0, drawn uniformly (an all-zero mask stays as it is)."""
    labels = torch.unique(mask)
    labels = labels[labels > 0]
    if not len(labels):
        return mask
    label = labels[torch.randint(len(labels), (1,), generator=generator)]
    return (mask == label) * label


def _check_crop(cache: LatentCache, crop: int, multiple: int, what: str = "crop_latents") -> None:
    if crop < 1 or crop % multiple:
        raise ValueError(f"{what}={crop} must be a positive multiple of {multiple} for this network")
    for name, z in zip(cache.names, cache.latents):
        sides = [min(t.shape[-2:]) for t in z]
        if min(sides) < crop:
            raise DatasetError(
                f"{name}: its latent is {min(sides)} wide, smaller than {what}={crop}; lower {what} "
                "or leave small patches out"
            )


def noise_loss(
    pred: torch.Tensor, target: torch.Tensor, loss: str, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """The noise-prediction loss, optionally weighted per sample (``weights`` of shape (B,)).

    ``"mse"`` learns the mean of the noise given the noisy sample, which is what every sampler needs. ``"l1"``
    (the reference's) learns its per-pixel median: where the data hold a rare mode (a nucleus at a given
    pixel), the median follows the common one and samples under-draw the rare mode
    (``benchmarks/loss_minority_mode.py``).
    """
    if loss == "l1":
        err = (pred - target).abs()
    elif loss == "mse":
        err = (pred - target) ** 2
    else:
        raise ValueError(f"loss must be 'l1' or 'mse', got {loss!r}")
    if weights is None:
        return err.mean()
    return (err.flatten(1).mean(1) * weights.to(err)).mean()


def min_snr_weights(schedule, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weights of a noise-prediction loss: ``min(SNR, gamma) / SNR`` per sample (Hang et al.
    2023). Low-noise steps, where the noise is nearly unpredictable and the loss largest, weigh less, so
    the network's capacity goes to the noise levels that decide structure. ``gamma <= 0``: all ones."""
    a = schedule.alphas_cumprod[t]
    snr = a / (1 - a)
    if gamma <= 0:
        return torch.ones_like(snr)
    return snr.clamp(max=gamma) / snr


def v_weights(schedule, t: torch.Tensor, clip: float) -> torch.Tensor:
    """Weights that turn a noise-prediction loss into the loss of the v-prediction (``1 / alpha_bar``, at most
    ``clip``). With plain noise weights the nearly pure-noise steps, where the class condition and the layout
    are decided, add almost nothing to the loss (their noise is easy to predict: MSE ~0.002 at t = 900
    against ~0.4 at t = 100), and a small network learns to ignore its condition; here they weigh as much as
    the rest. ``clip`` bounds the last steps (``alpha_bar`` reaches 2e-9). ``clip <= 0``: all ones."""
    a = schedule.alphas_cumprod[t]
    if clip <= 0:
        return torch.ones_like(a)
    return (1 / a).clamp(max=clip)


# ======================================================================================= the trainer
def load_training_autoencoder(path) -> tuple[CompactAutoencoder, Path, str]:
    """The autoencoder (its EMA weights: a run's ``ema.safetensors``, or a run folder), its path and sha256."""
    path = Path(path)
    if path.is_dir():
        path = path / "ema.safetensors"
    if not path.is_file():
        raise AutoencoderFileError(
            f"autoencoder {path} does not exist; an image model is trained in the latent space of a trained "
            f"autoencoder. Train one first: {AUTOENCODER_HINT}"
        )
    try:
        ae = CompactAutoencoder.load(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise AutoencoderFileError(
            f"{path} is not a compact autoencoder ({e}); pass the ema.safetensors of a run of: {AUTOENCODER_HINT}"
        ) from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return ae.requires_grad_(False), path, digest


def _safetensors_metadata(path) -> dict[str, str]:
    """The metadata of a safetensors file ({} for other formats)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception:  # noqa: BLE001 - a .pt checkpoint, say: nothing to compare
        return {}


def _check_resume(out: Path, metadata: dict[str, str], key: str, what: str) -> None:
    """A clearer message than the trainer's when one specific setting changed between sessions."""
    state_file = Path(out) / "state.json"
    if not state_file.exists():
        return
    saved = json.loads(state_file.read_text()).get("metadata", {})
    if key in saved and saved[key] != metadata.get(key):
        raise ValueError(
            f"{out} was trained with another {what} ({saved[key]}); now {metadata.get(key)}. Resume with the "
            f"same {what}, or train into a new run folder"
        )


def train_image_model(
    train_patches: Sequence[Patch],
    held_out: Sequence[Patch],
    out,
    config: TrainConfig,
    *,
    autoencoder_path,
    unet_config: dict,
    batch: int = 8,
    crop_latents: int = 32,
    cond_drop: float = 0.2,
    loss: str = "mse",
    snr_gamma: float = 0.0,
    v_weighting: float = 0.0,
    per_label: bool = False,
    balance_labels: bool = False,
    init_from=None,
    omega: float = 3.0,
    sample_steps: int = 20,
    sample_count: int = 4,
    device="cpu",
    progress: bool = True,
) -> ImageUnet:
    """Train (or resume) a mask-conditioned :class:`ImageUnet` in ``out``; returns the EMA network.

    ``unet_config``: ``ImageUnet`` keywords (``dim``, ``num_classes``, ``dim_mults``, ``resnet_block_groups``,
    ``block_per_layer``, ``dropout``); ``channels`` is taken from the autoencoder. The run's
    ``ema.safetensors`` loads with ``load_diffinfinite_checkpoint(path, "image")``; its metadata also records
    the autoencoder (config and sha256), and a run refuses to resume on another autoencoder.
    ``per_label``: condition each sample on one of its labels; ``balance_labels``: draw that label evenly
    over the dataset's labels (see :func:`image_batch`). ``init_from``: start a new run from these image-UNet
    weights (a run's ``ema.safetensors``, or a bundle's ``image.safetensors``; their config must match).
    The sample grid shows, for up to ``sample_count`` held-out patches: real | mask | generated (guidance
    ``omega``, ``sample_steps`` DDIM steps, on the held-out mask).
    """
    if not 0 <= cond_drop <= 1:
        raise ValueError(f"cond_drop must lie in [0, 1], got {cond_drop}")
    noise_loss(torch.zeros(1), torch.zeros(1), loss)  # validates the name before any work
    device = torch.device(device)
    ae, ae_path, ae_digest = load_training_autoencoder(autoencoder_path)
    ae = ae.to(device)
    unet_kwargs = dict(unet_config)
    channels = unet_kwargs.pop("channels", ae.latent_channels)
    if channels != ae.latent_channels:
        raise ValueError(
            f"unet channels={channels} but the autoencoder makes {ae.latent_channels}-channel latents"
        )
    unet_kwargs.setdefault("num_classes", 5)

    torch.manual_seed(config.seed)  # initial weights
    net = ImageUnet(channels=channels, **unet_kwargs).to(device)
    if init_from is not None and not (Path(out) / "state.json").exists():
        from ..model.checkpoint import load_diffinfinite_checkpoint

        start = load_diffinfinite_checkpoint(init_from, "image")
        if start.config != net.config:
            raise ValueError(
                f"--init-from {init_from} is a {start.config} network, not the {net.config} asked for"
            )
        trained_on = _safetensors_metadata(init_from).get("diffinfinite.autoencoder")
        if trained_on and json.loads(trained_on).get("config") != ae.config:
            raise ValueError(
                f"--init-from {init_from} was trained in the latent space of another autoencoder "
                f"({json.loads(trained_on).get('config')}); start from weights trained on {ae_path}"
            )
        net.load_state_dict(start.state_dict())
    metadata = {
        "diffinfinite.kind": "image",
        "diffinfinite.config": json.dumps(net.config),
        "diffinfinite.autoencoder": json.dumps({"config": ae.config, "sha256": ae_digest}),
    }
    _check_resume(out, metadata, "diffinfinite.autoencoder", "autoencoder")
    config.extra = {
        **config.extra,
        "kind": "image",
        "autoencoder": str(ae_path),
        "batch": batch,
        "crop_latents": crop_latents,
        "cond_drop": cond_drop,
        "loss": loss,
        "snr_gamma": snr_gamma,
        "v_weighting": v_weighting,
        "per_label": per_label,
        "balance_labels": balance_labels,
        "init_from": None if init_from is None else str(init_from),
    }
    trainer = Trainer(net, Path(out), config, metadata)

    num_classes = net.num_classes
    cache = encode_patches(train_patches, ae, num_classes=num_classes, progress=progress)
    if not len(cache):
        raise DatasetError("no patches to train on")
    _check_crop(cache, crop_latents, net.size_multiple)
    schedule = cosine_schedule()
    schedule_dev = schedule.to(device)

    def loss_fn(model: ImageUnet):
        g = step_generator(config.seed, trainer.step)
        b = image_batch(cache, batch, crop_latents, cond_drop, g, per_label, balance_labels)
        t = torch.randint(0, schedule.timesteps, (batch,), generator=g)
        noise = torch.randn(b.latents.shape, generator=g)
        x_t = q_sample(schedule, b.latents, t, noise)
        pred = model(x_t.to(device), t.to(device), b.masks.to(device))
        null = (b.masks.flatten(1).amax(1) == 0).float().mean()
        weights = None
        if snr_gamma > 0:
            weights = min_snr_weights(schedule, t, snr_gamma)
        if v_weighting > 0:
            v = v_weights(schedule, t, v_weighting)
            weights = v if weights is None else weights * v
        return {"loss": noise_loss(pred, noise.to(device), loss, weights), "null_frac": null}

    view = list(held_out[:sample_count]) or list(train_patches[:sample_count])

    def sample_fn(ema: ImageUnet, path: Path):
        from ..sampling.random_patch import sample_region
        from ..sampling.steppers import ImageStepper

        f = ae.downsampling
        multiple = f * ema.size_multiple
        reals, shown, generated = [], [], []
        stepper = ImageStepper(ema, schedule_dev, cond_scale=guided_scale(omega))
        for j, p in enumerate(view):
            h, w = floor_to(p.mask.shape[0], multiple), floor_to(p.mask.shape[1], multiple)
            if h == 0 or w == 0:
                continue
            mask = torch.from_numpy(p.mask[:h, :w].copy()).long()
            cond = labels_at_cell_centres(mask, f)
            z = sample_region(
                stepper,
                (ae.latent_channels, h // f, w // f),
                cond,
                schedule=schedule_dev,
                steps=sample_steps,
                generator=torch.Generator().manual_seed(config.seed + j),
                device=device,
            )
            reals.append(torch.from_numpy(p.image[:h, :w].copy()).permute(2, 0, 1).float() / 255)
            shown.append(render_labels(mask[None], num_classes)[0])
            generated.append(ae.decode(z[None]).float().cpu()[0])
        if reals:
            side = min(min(r.shape[-2:]) for r in reals)  # one size per row for the grid
            rows = [torch.stack([r[:, :side, :side] for r in row]) for row in (reals, shown, generated)]
            save_grid(rows, path)

    trainer.run(loss_fn, sample_fn, progress=progress)
    return trainer.ema
