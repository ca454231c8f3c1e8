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
    """Conv whose kernel is standardised per output channel (works well with GroupNorm).

    Outside training the standardised kernel is cached until the weights change (it cost ~13% of a CPU
    forward pass to recompute it every call).
    """

    _cache: tuple | None = None

    def _standardized(self, eps: float) -> torch.Tensor:
        w = self.weight
        key = (w._version, w.data_ptr(), w.dtype, w.device, eps)
        if not torch.is_grad_enabled() or not self.training:
            if self._cache is not None and self._cache[0] == key:
                return self._cache[1]
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
        out = (w - mean) * (var + eps).rsqrt()
        if not torch.is_grad_enabled():
            self._cache = (key, out)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self._standardized(_norm_eps(x))
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class PointwiseConv2d(nn.Conv2d):
    """A 1x1 convolution computed as a matrix product (PyTorch's CPU conv takes a slow path for 1x1)."""

    def __init__(self, dim: int, dim_out: int, bias: bool = True):
        super().__init__(dim, dim_out, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        out = torch.matmul(self.weight[:, :, 0, 0], x.reshape(b, c, h * w))
        if self.bias is not None:
            out = out + self.bias[:, None]
        return out.reshape(b, -1, h, w)


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
        self.res_conv = PointwiseConv2d(dim, dim_out) if dim != dim_out else nn.Identity()

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
        self.to_qkv = PointwiseConv2d(dim, hidden * 3, bias=False)
        self.to_out = nn.Sequential(PointwiseConv2d(hidden, dim), ChannelLayerNorm(dim))

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
        self.to_qkv = PointwiseConv2d(dim, hidden * 3, bias=False)
        self.to_out = PointwiseConv2d(hidden, dim)

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
    softmax-weighted sum. Computing those two and selecting per pixel is exactly the reference's maths.
    Keys and values are linear in the features, so they are never formed per pixel either: the logits are
    ``(Wk^T q) . x_n`` and the weighted value is ``Wv (sum_n a_n x_n)``. Cost O(C HW) instead of
    O(hidden (HW)^2), which is what makes the full network affordable on large windows.
    """

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32):
        super().__init__()
        self.heads = heads
        self.scale = dim_head**-0.5
        hidden = dim_head * heads
        self.to_kv = PointwiseConv2d(dim, hidden * 2, bias=False)
        self.to_q = PointwiseConv2d(dim, hidden, bias=False)
        self.to_out = PointwiseConv2d(hidden, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        ky, kx = mask.shape[-2] // h, mask.shape[-1] // w
        fg = F.max_pool2d(mask.to(x.dtype), (ky, kx)) > 0  # b, 1, h, w
        feats = x.reshape(b, c, h * w)
        wk, wv = self.to_kv.weight[:, :, 0, 0].chunk(2, dim=0)  # (hidden, C) each; head-major rows
        wk, wv = wk.reshape(self.heads, -1, c), wv.reshape(self.heads, -1, c)
        q_fg = self.to_q.weight[:, :, 0, 0].sum(dim=1).reshape(self.heads, -1) * self.scale  # heads, d
        attn = torch.einsum("hc,bcn->bhn", torch.einsum("hd,hdc->hc", q_fg, wk), feats).softmax(dim=-1)
        out_fg = torch.einsum("hdc,bhc->bhd", wv, torch.einsum("bhn,bcn->bhc", attn, feats)).reshape(b, -1)
        out_bg = torch.einsum("hdc,bc->bhd", wv, feats.mean(dim=-1)).reshape(b, -1)
        w_out = self.to_out.weight[:, :, 0, 0]
        out_fg = F.linear(out_fg, w_out, self.to_out.bias)
        out_bg = F.linear(out_bg, w_out, self.to_out.bias)
        return torch.where(fg, out_fg[:, :, None, None], out_bg[:, :, None, None])
