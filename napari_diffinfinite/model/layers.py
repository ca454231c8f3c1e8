"""Building blocks of the DiffInfinite UNets.

Module names and parameter shapes follow the released checkpoints exactly (see
``../shared/reference/diffinfinite/manifests``), so that their state dicts load with ``strict=True``.
The arithmetic follows the reference too (weight-standardised convs, channel LayerNorm with eps 1e-5 in
fp32 and 1e-3 otherwise, scale/shift conditioning), which the golden tests check to 1e-4.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _norm_eps(x: torch.Tensor) -> float:
    # The reference loosens eps for half precision to keep rsqrt finite.
    return 1e-5 if x.dtype == torch.float32 else 1e-3


class SinusoidalPosEmb(nn.Module):
    """Transformer-style embedding of the integer diffusion time."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, time: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=time.device) * -(math.log(10000) / (half - 1)))
        angles = time[:, None] * freqs[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class WeightStandardizedConv2d(nn.Conv2d):
    """Conv whose kernel is standardised per output channel (works well with GroupNorm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
        w = (w - mean) * (var + _norm_eps(x)).rsqrt()
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor, learned gain only (key ``g``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = torch.var(x, dim=1, unbiased=False, keepdim=True)
        mean = torch.mean(x, dim=1, keepdim=True)
        return (x - mean) * (var + _norm_eps(x)).rsqrt() * self.g


class PreNorm(nn.Module):
    """Normalise the features, then apply ``fn``; extra arguments (the mask) pass through unnormalised."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.fn = fn
        self.norm = ChannelLayerNorm(dim)

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        return self.fn(self.norm(x), *args)


class Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        return self.fn(x, *args) + x


class ConvBlock(nn.Module):
    """Weight-standardised 3x3 conv, GroupNorm, optional scale/shift, SiLU, dropout."""

    def __init__(self, dim: int, dim_out: int, groups: int, dropout: float):
        super().__init__()
        self.proj = WeightStandardizedConv2d(dim, dim_out, 3, padding=1)
        self.norm = nn.GroupNorm(groups, dim_out)
        self.act = nn.SiLU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, scale_shift=None) -> torch.Tensor:
        x = self.norm(self.proj(x))
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return self.dropout(self.act(x))


class ResnetBlock(nn.Module):
    """Two conv blocks with a residual; time and class embeddings set the first block's scale/shift."""

    def __init__(self, dim: int, dim_out: int, *, cond_dim: int, groups: int, dropout: float):
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, dim_out * 2))
        self.block1 = ConvBlock(dim, dim_out, groups, dropout)
        self.block2 = ConvBlock(dim_out, dim_out, groups, dropout)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
        cond = self.mlp(torch.cat((time_emb, class_emb), dim=-1))[:, :, None, None]
        h = self.block1(x, scale_shift=cond.chunk(2, dim=1))
        h = self.block2(h)
        return h + self.res_conv(x)


def downsample(dim: int, dim_out: int) -> nn.Module:
    return nn.Conv2d(dim, dim_out, 4, 2, 1)


def upsample(dim: int, dim_out: int) -> nn.Module:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(dim, dim_out, 3, padding=1))


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    b, c, h, w = t.shape
    return t.reshape(b, heads, c // heads, h * w)


class LinearAttention(nn.Module):
    """Linear-complexity self-attention (mask model, every level)."""

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32):
        super().__init__()
        self.scale = dim_head**-0.5
        self.heads = heads
        hidden = dim_head * heads
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(hidden, dim, 1), ChannelLayerNorm(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = (_split_heads(t, self.heads) for t in self.to_qkv(x).chunk(3, dim=1))
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        v = v / (h * w)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q)
        return self.to_out(out.reshape(b, -1, h, w))


class Attention(nn.Module):
    """Full softmax self-attention (mask model, middle)."""

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32):
        super().__init__()
        self.heads = heads
        self.scale = dim_head**-0.5
        hidden = dim_head * heads
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = (_split_heads(t, self.heads).transpose(-1, -2) for t in self.to_qkv(x).chunk(3, dim=1))
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # b, heads, n, d
        return self.to_out(out.transpose(-1, -2).reshape(b, -1, h, w))


class MaskCrossAttention(nn.Module):
    """Cross-attention whose queries come from the binary class mask (image model).

    The reference feeds ``(maxpool(mask) > 0)`` repeated to C channels into a bias-free 1x1 conv, so every
    query is either the zero vector (background) or the column sum of ``to_q`` (foreground). Attention
    therefore yields only two distinct outputs per sample and head: the mean of the values, and one
    softmax-weighted sum. Computing those two and selecting per pixel is exactly the reference's maths at
    O(HW) instead of O((HW)^2) cost, which is what makes the full network affordable on large windows.
    """

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32):
        super().__init__()
        self.heads = heads
        self.scale = dim_head**-0.5
        hidden = dim_head * heads
        self.to_kv = nn.Conv2d(dim, hidden * 2, 1, bias=False)
        self.to_q = nn.Conv2d(dim, hidden, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        ky, kx = mask.shape[-2] // h, mask.shape[-1] // w
        fg = F.max_pool2d(mask.float(), (ky, kx)) > 0  # b, 1, h, w
        k, v = (_split_heads(t, self.heads) for t in self.to_kv(x).chunk(2, dim=1))  # b, heads, d, n
        q_fg = self.to_q.weight.sum(dim=(1, 2, 3)).reshape(self.heads, -1) * self.scale  # heads, d
        attn = torch.einsum("hd,bhdn->bhn", q_fg, k).softmax(dim=-1)
        out_fg = torch.einsum("bhn,bhdn->bhd", attn, v).reshape(b, -1)
        out_bg = v.mean(dim=-1).reshape(b, -1)
        out_fg = F.linear(out_fg, self.to_out.weight[:, :, 0, 0], self.to_out.bias)
        out_bg = F.linear(out_bg, self.to_out.weight[:, :, 0, 0], self.to_out.bias)
        return torch.where(fg, out_fg[:, :, None, None], out_bg[:, :, None, None])
