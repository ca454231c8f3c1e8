"""Training the embedded model's compact autoencoder: L1 + Fourier-magnitude loss on random crops.

With the encoder frozen, the decoder can also be trained adversarially against a patch discriminator (hinge
loss, as the Stable Diffusion autoencoder and TAESD are): pixel losses answer what a 1/24-size latent cannot
say exactly (where a nuclear edge lies) with blur, a discriminator asks for edges that look real instead.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..model.compact_autoencoder import CompactAutoencoder
from ..model_manifest import COMPACT_DOWNSAMPLING
from .dataset import Patch, PatchDataset, infinite_batches, stratified_holdout
from .loop import TrainConfig, Trainer


def fourier_l1(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 between spectrum magnitudes: penalises lost texture (blur) that pixel L1 forgives."""
    fy, fx = torch.fft.rfft2(y, norm="ortho"), torch.fft.rfft2(x, norm="ortho")
    return (fy.abs() - fx.abs()).abs().mean()


def local_texture_l1(y: torch.Tensor, x: torch.Tensor, window: int = 8) -> torch.Tensor:
    """L1 between local RMS Laplacians of luminance: asks for texture of the right strength where it belongs,
    without asking for its exact phase (which a 1/24-size latent cannot carry and pixel L1 answers with blur)."""
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], device=y.device)[None, None]

    def rms(img):
        lap = F.conv2d(img.mean(1, keepdim=True), kernel)
        return (F.avg_pool2d(lap**2, window) + 1e-6).sqrt()

    return (rms(y) - rms(x)).abs().mean()


def pixel_phase_l1(y: torch.Tensor, x: torch.Tensor, window: int = 16) -> torch.Tensor:
    """L1 between the local even-minus-odd difference of luminance gradients, along x and y.

    The decoder's last step is a pixel shuffle (2 x 2 sub-pixels from 4 channels); when the sub-pixels differ
    systematically it paints a 2-px pattern, which the texture loss even rewards. Real images have none, and
    a seam metric with boundaries on even columns reads it as seams everywhere."""

    def phase(img):
        lum = img.mean(1, keepdim=True)
        h, w = lum.shape[-2:]
        gx = (lum[..., 1:] - lum[..., :-1]).abs()[..., : 2 * ((w - 1) // 2)]
        gy = (lum[..., 1:, :] - lum[..., :-1, :]).abs()[..., : 2 * ((h - 1) // 2), :]
        dx = F.avg_pool2d(gx[..., 0::2] - gx[..., 1::2], (window, window // 2))
        dy = F.avg_pool2d(gy[..., 0::2, :] - gy[..., 1::2, :], (window // 2, window))
        return dx, dy

    (yx, yy), (xx, xy) = phase(y), phase(x)
    return (yx - xx).abs().mean() + (yy - xy).abs().mean()


class PatchDiscriminator(nn.Module):
    """Real-or-decoded score per ~70-px patch (strided 4x4 convolutions, GroupNorm, LeakyReLU).

    Its patches are the size of a few nuclei, so it judges nuclear edges and chromatin, not layout.
    """

    def __init__(self, width: int = 64, layers: int = 3):
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(3, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        ch = width
        for i in range(1, layers + 1):
            out = width * min(2**i, 8)
            stride = 2 if i < layers else 1
            conv = nn.Conv2d(ch, out, 4, stride=stride, padding=1)
            blocks += [conv, nn.GroupNorm(8, out), nn.LeakyReLU(0.2)]
            ch = out
        blocks.append(nn.Conv2d(ch, 1, 4, padding=1))
        self.net = nn.Sequential(*blocks)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images * 2 - 1)


def hinge_discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean())


def adaptive_adversarial_weight(
    rec_loss: torch.Tensor, gen_loss: torch.Tensor, last: torch.Tensor
) -> torch.Tensor:
    """Scale that gives the adversarial gradient at the decoder's last layer the norm of the reconstruction
    gradient there (as in the LDM autoencoder recipe): the GAN term neither drowns nor vanishes, whatever the
    two losses' scales."""
    g_rec = torch.autograd.grad(rec_loss, last, retain_graph=True)[0]
    g_gen = torch.autograd.grad(gen_loss, last, retain_graph=True)[0]
    return (g_rec.norm() / (g_gen.norm() + 1e-4)).clamp(0, 1e4).detach()


def scale_equivariance_l1(decoder, z: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """L1 between the decoding of the 2x-pooled latents and the 2x-pooled image.

    Why: the latents of an unregularised autoencoder are nearly white (neighbouring latents correlate 0.35
    where the image correlates 0.51), so a small diffusion prior cannot tell their fine detail from noise and
    samples coloured grain. Asking that a coarser latent decode to the coarser image moves the image's coarse
    content into the latents' low frequencies, where a prior can model it (the scale-equivariance regulariser
    of Skorokhodov et al. 2025, "Improving the diffusability of autoencoders")."""
    return (decoder(F.avg_pool2d(z, 2)) - F.avg_pool2d(images, 2)).abs().mean()


def noised_latents(z: torch.Tensor, sigma: float) -> torch.Tensor:
    """``z`` plus Gaussian noise of std ``sigma``: what the decoder sees when trained with latent noise.

    Why: a diffusion sampler's last steps cannot resolve latent detail below the noise it leaves (a small
    prior removes 5 % of the noise at t = 20 in the shipped latents), and a decoder that never saw noisy
    latents turns that residue into coloured grain. A decoder trained on noised latents ignores detail below
    ``sigma``, so the encoder must carry the image in larger, more predictable structure (as a KL
    autoencoder's does)."""
    return z + sigma * torch.randn_like(z) if sigma else z


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1]."""
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def split_holdout(
    patches: list[Patch], holdout_file: Path, n: int, labels
) -> tuple[list[Patch], list[Patch]]:
    """(train, held out); the held-out names are read from ``holdout_file`` or chosen and written there."""
    if holdout_file.exists():
        names = set(json.loads(holdout_file.read_text())["held_out"])
    else:
        names = set(stratified_holdout(patches, n, labels))
        holdout_file.parent.mkdir(parents=True, exist_ok=True)
        holdout_file.write_text(json.dumps({"held_out": sorted(names)}, indent=1) + "\n")
    unknown = names - {p.name for p in patches}
    if unknown:
        raise ValueError(f"{holdout_file} names patches that are not in the dataset: {sorted(unknown)[:5]}")
    return [p for p in patches if p.name not in names], [p for p in patches if p.name in names]


def save_grid(rows: list[torch.Tensor], path: Path) -> None:
    """Rows of (N, 3, H, W) images in [0, 1] as one PNG."""
    grid = torch.cat([torch.cat(list(r.clamp(0, 1)), dim=2) for r in rows], dim=1)
    Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)


def train_autoencoder(
    train: list[Patch],
    held_out: list[Patch],
    out: Path,
    config: TrainConfig,
    batch: int = 8,
    crop: int = 256,
    latent_channels: int = 4,
    widths=(32, 64, 96),
    downsampling: int = COMPACT_DOWNSAMPLING,
    encoder: str = "learned",
    fourier_weight: float = 0.1,
    latent_weight: float = 1e-2,
    texture_weight: float = 0.0,
    phase_weight: float = 0.0,
    latent_std: float | None = None,
    init_from: Path | None = None,
    freeze_encoder: bool = False,
    adversarial_weight: float = 0.0,
    adversarial_start: int = 0,
    scale_equivariance: float = 0.0,
    latent_noise: float = 0.0,
    device="cpu",
    progress: bool = True,
) -> CompactAutoencoder:
    """Train (or resume) the autoencoder in ``out``.

    ``init_from`` starts from trained weights (their config wins over ``latent_channels``/``widths``/
    ``downsampling``/``encoder``); ``encoder="pool"``: latents are the block-averaged image and only the
    decoder learns (see :class:`CompactAutoencoder`);
    with ``freeze_encoder`` only the decoder learns, so the latents - and any image model trained on
    them - stay valid while the decoder is sharpened (``texture_weight``, :func:`local_texture_l1`) or rid of
    its 2-px pattern (``phase_weight``, :func:`pixel_phase_l1`).
    ``latent_std``: when training is done, also write ``standardised.safetensors``: the EMA network whose
    latents have per-channel mean 0 and this std on the training patches (what image models train on).
    ``adversarial_weight`` (needs ``freeze_encoder``): from step ``adversarial_start`` on, add a hinge GAN
    loss against a :class:`PatchDiscriminator`, scaled by :func:`adaptive_adversarial_weight` times this
    weight.
    ``scale_equivariance``: weight of :func:`scale_equivariance_l1` (smoother latents for the prior).
    ``latent_noise``: std of the noise added to the (tanh-bounded, raw) latents before decoding
    (:func:`noised_latents`); the sample grids decode clean latents.
    """
    device = torch.device(device)
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    if init_from is not None:
        net = CompactAutoencoder.load(init_from).train()
    else:
        net = CompactAutoencoder(
            latent_channels=latent_channels, widths=widths, downsampling=downsampling, encoder=encoder
        )
    fixed_encoder = freeze_encoder or net.pooling_encoder
    if adversarial_weight and not fixed_encoder:
        raise ValueError(
            "the adversarial loss trains the decoder alone: use it with --freeze-encoder, so "
            "that the latents (and image models trained on them) stay valid"
        )
    if freeze_encoder:
        if init_from is None:
            raise ValueError("freezing the encoder needs trained weights to start from (--init-from)")
        net.encoder.requires_grad_(False)
    net = net.to(device)
    metadata = {"diffinfinite.kind": "autoencoder", "diffinfinite.config": json.dumps(net.config)}
    companions = {}
    if adversarial_weight:
        disc = PatchDiscriminator().to(device)
        disc_opt = torch.optim.Adam(disc.parameters(), lr=config.lr, betas=(0.5, 0.9))
        companions["discriminator"] = (disc, disc_opt)
        config.extra = {
            **config.extra,
            "adversarial_weight": adversarial_weight,
            "adversarial_start": adversarial_start,
        }
    if latent_noise:
        config.extra = {**config.extra, "latent_noise": latent_noise}
    trainer = Trainer(net, out, config, metadata, companions)
    batches = infinite_batches(PatchDataset(train, crop=crop), batch)
    last_layer = net.decoder[-2].weight  # the conv before the pixel shuffle

    def adversarial_terms(recon: torch.Tensor, images: torch.Tensor, rec_loss: torch.Tensor) -> dict:
        """Update the discriminator on this batch; the decoder's adversarial loss with its adaptive scale."""
        disc, disc_opt = companions["discriminator"]
        disc.requires_grad_(True)
        d_loss = hinge_discriminator_loss(disc(images), disc(recon.detach()))
        disc_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        disc_opt.step()
        disc.requires_grad_(False)
        g_loss = -disc(recon).mean()
        scale = adaptive_adversarial_weight(rec_loss, g_loss, last_layer) * adversarial_weight
        return {"gan": scale * g_loss, "d_loss": d_loss.detach(), "gan_scale": scale}

    def loss_fn(model: CompactAutoencoder):
        images, _ = next(batches)
        images = images.to(device, non_blocking=True)
        if fixed_encoder:
            with torch.no_grad():
                z = model.encode_raw(images)
        else:
            z = model.encode_raw(images)
        recon = model.decode_raw(noised_latents(z, latent_noise))
        l1 = (recon - images).abs().mean()
        ff = fourier_l1(recon, images)
        reg = (z**2).mean()
        loss = l1 + fourier_weight * ff + latent_weight * reg
        logs = {"l1": l1, "fft": ff, "z2": reg}
        if texture_weight:
            logs["texture"] = local_texture_l1(recon, images)
            loss = loss + texture_weight * logs["texture"]
        if phase_weight:
            logs["phase"] = pixel_phase_l1(recon, images)
            loss = loss + phase_weight * logs["phase"]
        if scale_equivariance:
            logs["scale_eq"] = scale_equivariance_l1(model.decode_raw, z, images)
            loss = loss + scale_equivariance * logs["scale_eq"]
        if adversarial_weight and trainer.step >= adversarial_start:
            adv = adversarial_terms(recon, images, loss)
            loss = loss + adv.pop("gan")
            logs.update(adv)
        elif adversarial_weight:  # the log's columns are fixed at its first row
            logs.update(d_loss=torch.zeros(()), gan_scale=torch.zeros(()))
        return {"loss": loss, **logs}

    view = torch.stack(
        [torch.from_numpy(p.image[:256, :256].copy()).permute(2, 0, 1).float() / 255 for p in held_out[:4]]
    )

    def sample_fn(ema: CompactAutoencoder, path: Path):
        recon = ema.decode(ema.encode(view)).cpu()
        save_grid([view, recon], path)

    trainer.run(loss_fn, sample_fn, progress=progress)
    if latent_std is None:
        return trainer.ema
    mean, std = latent_statistics(trainer.ema, train)
    net = trainer.ema.standardised(mean, std, latent_std)
    net.save(Path(out) / "standardised.safetensors")
    return net


@torch.no_grad()
def latent_statistics(ae: CompactAutoencoder, patches: list[Patch]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the raw latents of whole ``patches``."""
    total = total_sq = None
    count = 0
    for p in patches:
        image = torch.from_numpy(p.image.copy()).permute(2, 0, 1).float()[None] / 255
        z = ae.encode_raw(image.to(ae.device, ae.dtype)).double()
        s, sq = z.sum((0, 2, 3)), (z**2).sum((0, 2, 3))
        total, total_sq = (s, sq) if total is None else (total + s, total_sq + sq)
        count += z.shape[0] * z.shape[2] * z.shape[3]
    mean = total / count
    std = (total_sq / count - mean**2).clamp(min=1e-12).sqrt()
    return mean.tolist(), std.tolist()
