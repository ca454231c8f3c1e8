"""The two DiffInfinite denoisers: the mask-conditioned image UNet and the class-conditioned mask UNet.

Both share one skeleton (lucidrains "denoising-diffusion-pytorch" family with ``block_per_layer`` ResNet
blocks per level); they differ only in how they are conditioned and which attention they use. Constructor
keywords match the reference's, and state-dict keys and shapes match the released checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import (
    Attention,
    LinearAttention,
    MaskCrossAttention,
    PointwiseConv2d,
    PreNorm,
    Residual,
    ResnetBlock,
    SinusoidalPosEmb,
    downsample,
    upsample,
)


class _UnetSkeleton(nn.Module):
    """Encoder/decoder with skips; subclasses provide the attention modules and the class embedding."""

    def __init__(
        self,
        dim: int,
        num_classes: int,
        dim_mults: Sequence[int],
        channels: int,
        resnet_block_groups: int,
        block_per_layer: int,
        dropout: float,
    ):
        super().__init__()
        self.config = {
            "dim": dim,
            "num_classes": num_classes,
            "dim_mults": tuple(dim_mults),
            "channels": channels,
            "resnet_block_groups": resnet_block_groups,
            "block_per_layer": block_per_layer,
        }
        self.channels = channels
        self.num_classes = num_classes
        self.init_conv = nn.Conv2d(channels, dim, 7, padding=3)

        dims = [dim, *(dim * m for m in dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))
        emb_dim = dim * 4
        self.time_mlp = nn.Sequential(
            SinusoidalPosEmb(dim), nn.Linear(dim, emb_dim), nn.GELU(), nn.Linear(emb_dim, emb_dim)
        )
        self.classes_emb = nn.Embedding(num_classes, dim)
        self.classes_mlp = nn.Sequential(nn.Linear(dim, emb_dim), nn.GELU(), nn.Linear(emb_dim, emb_dim))

        def resnet(d_in, d_out):
            return ResnetBlock(d_in, d_out, cond_dim=2 * emb_dim, groups=resnet_block_groups, dropout=dropout)

        self.downs = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(in_out):
            last = i == len(in_out) - 1
            level = [resnet(d_in, d_in) for _ in range(block_per_layer)]
            level.append(Residual(PreNorm(d_in, self._level_attention(d_in))))
            level.append(nn.Conv2d(d_in, d_out, 3, padding=1) if last else downsample(d_in, d_out))
            self.downs.append(nn.ModuleList(level))

        mid = dims[-1]
        self.mid_block1 = resnet(mid, mid)
        self.mid_attn = Residual(PreNorm(mid, self._mid_attention(mid)))
        self.mid_block2 = resnet(mid, mid)

        self.ups = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(reversed(in_out)):
            last = i == len(in_out) - 1
            level = [resnet(d_out + d_in, d_out) for _ in range(block_per_layer)]
            level.append(Residual(PreNorm(d_out, self._level_attention(d_out))))
            level.append(nn.Conv2d(d_out, d_in, 3, padding=1) if last else upsample(d_out, d_in))
            self.ups.append(nn.ModuleList(level))

        self.final_res_block = resnet(dim * 2, dim)
        self.final_conv = PointwiseConv2d(dim, channels)
        #: Spatial size of the input must be a multiple of this (one halving per level but the last).
        self.size_multiple = 2 ** (len(dim_mults) - 1)

    def _level_attention(self, dim: int) -> nn.Module:
        raise NotImplementedError

    def _mid_attention(self, dim: int) -> nn.Module:
        raise NotImplementedError

    def _run(self, x, time, class_emb, *attn_args):
        """The UNet pass given the class embedding; ``attn_args`` go to every attention block."""
        x = self.init_conv(x)
        first = x
        t = self.time_mlp(time)
        c = self.classes_mlp(class_emb)
        skips = []
        for *blocks, attn, down in self.downs:
            for i, block in enumerate(blocks):
                x = block(x, t, c)
                if i < len(blocks) - 1:
                    skips.append(x)
            x = attn(x, *attn_args)
            skips.append(x)
            x = down(x)
        x = self.mid_block1(x, t, c)
        x = self.mid_attn(x, *attn_args)
        x = self.mid_block2(x, t, c)
        for *blocks, attn, up in self.ups:
            for block in blocks:
                x = block(torch.cat((x, skips.pop()), dim=1), t, c)
            x = attn(x, *attn_args)
            x = up(x)
        x = self.final_res_block(torch.cat((x, first), dim=1), t, c)
        return self.final_conv(x)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected latents of shape (B, {self.channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-2] % self.size_multiple or x.shape[-1] % self.size_multiple:
            raise ValueError(
                f"latent height and width must be multiples of {self.size_multiple} for this network, "
                f"got {tuple(x.shape[-2:])}; pad or crop the window"
            )


def guide(cond: torch.Tensor, null: torch.Tensor, cond_scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``null + (cond - null) * s`` (user-facing omega maps to ``s = omega + 1``)."""
    return null + (cond - null) * cond_scale


def _per_sample(value, batch: int, device) -> torch.Tensor:
    """A scalar or per-sample tensor (times, context classes) as a tensor of shape (batch,)."""
    value = torch.as_tensor(value, device=device)
    return value.expand(batch) if value.ndim == 0 else value


class ImageUnet(_UnetSkeleton):
    """Mask-conditioned latent denoiser (predicts noise).

    ``forward(x, time, mask)``: ``mask`` is a label map at latent resolution, shape (B, 1, H, W). The class
    embedding uses ``int(max(mask))`` per sample; cross-attention queries use the binary mask ``mask > 0``.
    The null condition (for guidance) is the same call with an all-zero mask.

    ``mask_input`` (not in the reference; its checkpoints have none): the label map also enters the first
    convolution as one-hot channels for labels 1..num_classes-1, so every latent pixel sees its own label
    directly instead of through a per-sample embedding and an attention query.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        dim_mults: Sequence[int] = (1, 2, 4),
        channels: int = 4,
        resnet_block_groups: int = 2,
        block_per_layer: int = 2,
        dropout: float = 0.05,
        mask_input: bool = False,
    ):
        super().__init__(dim, num_classes, dim_mults, channels, resnet_block_groups, block_per_layer, dropout)
        self.mask_input = bool(mask_input)
        if self.mask_input:
            self.config["mask_input"] = True
            self.init_conv = nn.Conv2d(channels + num_classes - 1, dim, 7, padding=3)

    def _level_attention(self, dim):
        return MaskCrossAttention(dim)

    def _mid_attention(self, dim):
        return MaskCrossAttention(dim)

    def forward(self, x: torch.Tensor, time, mask: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if mask.ndim == 3:
            mask = mask[:, None]
        if mask.shape[0] != x.shape[0] or mask.shape[1] != 1:
            raise ValueError(f"expected a mask of shape ({x.shape[0]}, 1, H, W), got {tuple(mask.shape)}")
        classes = mask.reshape(mask.shape[0], -1).amax(dim=-1).long()
        if classes.min() < 0 or classes.max() >= self.num_classes:
            raise ValueError(f"mask labels must lie in 0..{self.num_classes - 1}, got max {classes.tolist()}")
        if self.mask_input:
            ids = torch.arange(1, self.num_classes, device=x.device).view(1, -1, 1, 1)
            x = torch.cat((x, (mask.long() == ids).to(x.dtype)), dim=1)
        return self._run(x, _per_sample(time, x.shape[0], x.device), self.classes_emb(classes), mask)

    def forward_with_cond_scale(self, x, time, mask, cond_scale: float) -> torch.Tensor:
        """Guided noise prediction; conditional and null halves run as one batch."""
        if cond_scale == 1:
            return self.forward(x, time, mask)
        b = x.shape[0]
        time = _per_sample(time, b, x.device)
        if mask.ndim == 3:
            mask = mask[:, None]
        out = self.forward(
            torch.cat((x, x)), torch.cat((time, time)), torch.cat((mask, torch.zeros_like(mask)))
        )
        return guide(out[:b], out[b:], cond_scale)


class MaskUnet(_UnetSkeleton):
    """Context-conditioned denoiser of mask latents (predicts noise).

    ``forward(x, time, classes, cond_drop_prob=0.0)``: ``classes`` holds context ids (0 adenocarcinoma,
    1 squamous); ``cond_drop_prob`` 1.0 uses the learned null embedding for every sample, values in (0, 1)
    drop at random (training only). ``null`` may instead give a per-sample boolean choice.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        dim_mults: Sequence[int] = (1, 2, 4, 8),
        channels: int = 4,
        resnet_block_groups: int = 2,
        block_per_layer: int = 2,
        dropout: float = 0.05,
    ):
        super().__init__(dim, num_classes, dim_mults, channels, resnet_block_groups, block_per_layer, dropout)
        self.null_classes_emb = nn.Parameter(torch.randn(dim))

    def _level_attention(self, dim):
        return LinearAttention(dim)

    def _mid_attention(self, dim):
        return Attention(dim)

    def forward(self, x, time, classes, cond_drop_prob: float = 0.0, null: torch.Tensor | None = None):
        self._check_input(x)
        b = x.shape[0]
        classes = _per_sample(classes, b, x.device).long()
        if classes.min() < 0 or classes.max() >= self.num_classes:
            raise ValueError(f"context classes must lie in 0..{self.num_classes - 1}, got {classes.tolist()}")
        emb = self.classes_emb(classes)
        if null is None:
            if cond_drop_prob >= 1:
                null = torch.ones(b, dtype=torch.bool, device=x.device)
            elif cond_drop_prob > 0:
                null = torch.rand(b, device=x.device) < cond_drop_prob
        if null is not None:
            emb = torch.where(null[:, None], self.null_classes_emb.expand(b, -1), emb)
        return self._run(x, _per_sample(time, b, x.device), emb)

    def forward_with_cond_scale(self, x, time, classes, cond_scale: float) -> torch.Tensor:
        """Guided noise prediction; conditional and null halves run as one batch."""
        if cond_scale == 1:
            return self.forward(x, time, classes)
        b = x.shape[0]
        time = _per_sample(time, b, x.device)
        classes = _per_sample(classes, b, x.device).long()
        null = torch.arange(2 * b, device=x.device) >= b
        out = self.forward(
            torch.cat((x, x)), torch.cat((time, time)), torch.cat((classes, classes)), null=null
        )
        return guide(out[:b], out[b:], cond_scale)
