"""The embedded model's autoencoder: small, 8x (or 4x) downsampling, and local.

The decoder has no normalisation layers and no attention, so every output pixel depends only on latents
within :attr:`CompactAutoencoder.decoder_margin` latent pixels. Decoding a crop of a large latent with that
margin around it therefore gives exactly the pixels of decoding the whole latent: tiles join without seams
by construction and memory stays bounded by the tile. Latents come out of a ``tanh``, so they lie in
(-1, 1) where the diffusion sampler clips its ``x_start`` predictions.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from .._atomic import atomic_save_tensors
from ..model_manifest import COMPACT_DOWNSAMPLING


class _ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class CompactAutoencoder(nn.Module):
    """Pixel-(un)shuffle at full resolution, convolutional residual stages at 1/2, 1/4 and 1/8.

    ``widths`` are the channels of the three stages. With ``downsampling=4`` the third stage stays at 1/4
    (its convolution has stride 1, the decoder skips one upsampling), so nuclei of 8-20 px span several
    latent pixels instead of one or two: latents that a small diffusion prior can model. The layers keep
    their positions either way, so the 8x weights load as before.

    ``encoder="pool"``: no learned encoder; the latents are the image averaged over ``downsampling`` x
    ``downsampling`` blocks (3 channels, mapped to [-1, 1]) and only the decoder learns, as a super-resolution
    network. Such latents are smooth (neighbour correlation 0.82 at 4x, against 0.35 for learned latents), so
    a small prior can model them; the decoder has to draw the detail that pooling removed.
    """

    def __init__(
        self,
        latent_channels: int = 4,
        widths=(32, 64, 96),
        blocks=(1, 1, 2),
        latent_mean=None,
        latent_std=None,
        latent_target=None,
        downsampling: int = COMPACT_DOWNSAMPLING,
        encoder: str = "learned",
    ):
        super().__init__()
        if downsampling not in (4, 8):
            raise ValueError(f"the compact autoencoder downsamples 4x or 8x, not {downsampling}x")
        if encoder not in ("learned", "pool"):
            raise ValueError(f"the compact autoencoder's encoder is 'learned' or 'pool', not {encoder!r}")
        if encoder == "pool" and latent_channels != 3:
            raise ValueError(
                f"a pooling encoder gives the 3 colour channels as latents, not {latent_channels}"
            )
        self.config = {"latent_channels": latent_channels, "widths": list(widths), "blocks": list(blocks)}
        if downsampling != COMPACT_DOWNSAMPLING:  # 8x configs stay as they were written
            self.config["downsampling"] = downsampling
        if encoder != "learned":
            self.config["encoder"] = encoder
        self.pooling_encoder = encoder == "pool"
        self.downsampling = downsampling
        self.latent_channels = latent_channels
        self.latent_scale = 1.0
        # Optional per-channel standardisation of the latents the diffusion model sees (mean 0, std
        # ``latent_target``). Raw latents have a std of ~0.1, so at most noise levels a small denoiser sees
        # almost pure noise and forms detail only in the last few steps; standardising moves that work back
        # into the schedule. The weights do not change; the statistics live in the config.
        self._norm = None
        if latent_target is not None:
            if (
                latent_mean is None
                or latent_std is None
                or len(latent_mean) != latent_channels
                or len(latent_std) != latent_channels
            ):
                raise ValueError(
                    "latent normalisation needs latent_mean and latent_std, one per latent channel"
                )
            self.config.update(
                latent_mean=[float(v) for v in latent_mean],
                latent_std=[float(v) for v in latent_std],
                latent_target=float(latent_target),
            )
            self._norm = (
                torch.tensor(latent_mean).view(1, -1, 1, 1),
                torch.tensor(latent_std).view(1, -1, 1, 1) / float(latent_target),
            )
        w1, w2, w3 = widths
        b1, b2, b3 = blocks
        last_stride = 2 if downsampling == 8 else 1
        self.encoder = (
            nn.AvgPool2d(downsampling)
            if self.pooling_encoder
            else nn.Sequential(
                nn.PixelUnshuffle(2),
                nn.Conv2d(12, w1, 3, padding=1),
                *[_ResBlock(w1) for _ in range(b1)],
                nn.Conv2d(w1, w2, 3, stride=2, padding=1),
                *[_ResBlock(w2) for _ in range(b2)],
                nn.Conv2d(w2, w3, 3, stride=last_stride, padding=1),
                *[_ResBlock(w3) for _ in range(b3)],
                nn.SiLU(),
                nn.Conv2d(w3, latent_channels, 3, padding=1),
            )
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, w3, 3, padding=1),
            *[_ResBlock(w3) for _ in range(b3)],
            nn.Upsample(scale_factor=2, mode="nearest") if last_stride == 2 else nn.Identity(),
            nn.Conv2d(w3, w2, 3, padding=1),
            *[_ResBlock(w2) for _ in range(b2)],
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(w2, w1, 3, padding=1),
            *[_ResBlock(w1) for _ in range(b1)],
            nn.SiLU(),
            nn.Conv2d(w1, 12, 3, padding=1),
            nn.PixelShuffle(2),
        )
        # receptive radius of the decoder in latent pixels (3x3 convs: 1 px each at their own scale)
        convs_at = [1 + 2 * b3, 1 + 2 * b2, 2 + 2 * b1]
        scales = [1, 1 / 2, 1 / 4] if downsampling == 8 else [1, 1, 1 / 2]
        self.decoder_margin = math.ceil(sum(c * s for c, s in zip(convs_at, scales)) + 1)

    # the Autoencoder protocol -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def encode_raw(self, images: torch.Tensor) -> torch.Tensor:
        """Latents with gradients (training)."""
        if self.pooling_encoder:
            return self.encoder(images) * 2 - 1
        return torch.tanh(self.encoder(images))

    def decode_raw(self, latents: torch.Tensor) -> torch.Tensor:
        """Unclipped images with gradients (training)."""
        return self.decoder(latents)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The diffusion model's latents (standardised when the config says so)."""
        z = self.encode_raw(images.to(self.device, self.dtype))
        if self._norm is not None:
            mean, scale = (t.to(z.device, z.dtype) for t in self._norm)
            z = (z - mean) / scale
        return z

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.to(self.device, self.dtype)
        if self._norm is not None:
            mean, scale = (t.to(z.device, z.dtype) for t in self._norm)
            z = z * scale + mean
        return self.decode_raw(z).clamp(0, 1)

    def standardised(self, latent_mean, latent_std, latent_target: float) -> CompactAutoencoder:
        """A copy (same weights) whose :meth:`encode` gives per-channel standardised latents."""
        statistics = ("latent_mean", "latent_std", "latent_target")
        base = {k: v for k, v in self.config.items() if k not in statistics}
        net = CompactAutoencoder(
            **base, latent_mean=latent_mean, latent_std=latent_std, latent_target=latent_target
        )
        net.load_state_dict(self.state_dict())
        return net.eval().to(self.device)

    # weights --------------------------------------------------------------------------------------------
    def save(self, path) -> None:
        """safetensors with the config in its metadata, written to a temp file and renamed."""
        metadata = {"diffinfinite.kind": "autoencoder", "diffinfinite.config": json.dumps(self.config)}
        atomic_save_tensors(Path(path), self.state_dict(), metadata)

    @classmethod
    def load(cls, path, device=None) -> CompactAutoencoder:
        from safetensors.torch import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("diffinfinite.kind") != "autoencoder":
            raise ValueError(f"{path} is not a compact autoencoder (kind {meta.get('diffinfinite.kind')!r})")
        net = cls(**json.loads(meta["diffinfinite.config"]))
        net.load_state_dict(load_file(str(path)), strict=True)
        return net.eval().to(device or "cpu")
