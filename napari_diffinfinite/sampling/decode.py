"""Latents to pixels without tiling seams, tile by tile, with memory bounded by the tile.

Two strategies, picked per autoencoder by :func:`decode_strategy`:

``"margin"`` (local decoders, e.g. :class:`~napari_diffinfinite.model.CompactAutoencoder`)
    The autoencoder declares ``decoder_margin``: every output pixel depends only on latents within that many
    latent pixels. A region is decoded in ``tile``-latent chunks, each with that margin around it (clamped to
    the latent's bounds), and cropped. This reproduces the decode of the whole latent (to float rounding), so
    any tiling of a canvas joins without seams.

``"hann"`` (decoders with normalisation or attention, e.g. the SD2 VAE)
    DiffInfinite's four-grid decode. The latent is decoded on four grids of ``tile``-latent tiles: aligned,
    shifted half a tile horizontally, vertically, and both. The shifted decodes are blended into the
    interior with Hann windows of the pixel tile size ``p = downsampling * tile``, in this order::

        img[..., :, p/2:-p/2]       = img * (1 - V) + img_v * V       # horizontally shifted grid
        img[..., p/2:-p/2, :]       = img * (1 - H) + img_h * H       # vertically shifted grid
        img[..., p/2:-p/2, p/2:-p/2] = img * (1 - C) + img_c * C      # shifted both ways

    with ``V``, ``H``, ``C`` the windows of :func:`hann_windows` tiled across the shifted grids. Each shifted
    tile is centred on a seam of the aligned grid and its window vanishes at its own edges, so no tile edge
    stays visible. Unlike the reference, any latent size works: the latent is extended to a multiple of
    ``tile`` by replicating its last row / column, decoded, and cropped.

How it is computed here: the three blends are expanded into one weighted sum per pixel,
``img = A (1-V)(1-H)(1-C) + Bv V (1-H)(1-C) + Bh H (1-C) + Bc C`` (the weights sum to 1), so every grid tile
is decoded once and added into the output with its weights. Peak memory is the output buffer plus one tile's
decode; a sub-region reads and decodes only the grid tiles that overlap it, and gives exactly (to float
rounding) the same pixels as the same crop of the whole decode. A canvas can therefore decode tile by tile,
given read access to the latents around each tile.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "HANN",
    "MARGIN",
    "LatentReader",
    "decode_full",
    "decode_hann",
    "decode_region",
    "decode_strategy",
    "hann_windows",
]

#: ``read_latents(ys, xs)`` returns the window ``latent[..., ys, xs]`` ``(B, C, h, w)`` of a full latent.
LatentReader = Callable[[slice, slice], torch.Tensor]

MARGIN = "margin"
HANN = "hann"

_GRIDS = ("aligned", "vertical", "horizontal", "center")


def hann_windows(size: int) -> dict[str, torch.Tensor]:
    """DiffInfinite's blending windows for a ``size`` x ``size`` tile, float32 (``size``, ``size``).

    With ``w[i] = 0.5 * (1 - cos(2 pi i / (size - 1)))``:

    - ``"center"`` = ``outer(w, w)``;
    - ``"vertical"[i, j] = w[j]`` (tapers across columns: blends vertical seams), except the middle row
      ``size // 2``, which is ``w[size // 2] * w[j]``;
    - ``"horizontal"[i, j] = w[i]``, except the middle column ``size // 2``, which is ``w[i] * w[size // 2]``.

    The middle row / column exceptions are the reference's, kept so the windows match its golden ones exactly.
    """
    size = int(size)
    if size < 2:
        raise ValueError(f"Hann window size must be >= 2, got {size}")
    i = torch.arange(size, dtype=torch.float32)
    w = 0.5 * (1 - torch.cos(2 * math.pi * i / (size - 1)))
    mid = size // 2
    vertical = w[None, :].repeat(size, 1)
    vertical[mid] = w[mid] * w
    horizontal = w[:, None].repeat(1, size)
    horizontal[:, mid] = w * w[mid]
    return {"vertical": vertical, "horizontal": horizontal, "center": torch.outer(w, w)}


def decode_strategy(autoencoder: Any) -> str:
    """Which strategy the decoders use for ``autoencoder``: :data:`MARGIN` or :data:`HANN`.

    :data:`MARGIN` when it declares a ``decoder_margin`` (a local decoder, decoded exactly tile by tile with
    that overlap); :data:`HANN` otherwise (the four-grid Hann blend).
    """
    margin = getattr(autoencoder, "decoder_margin", None)
    if margin is None:
        return HANN
    if isinstance(margin, bool) or not isinstance(margin, int) or margin < 0:
        raise ValueError(f"decoder_margin must be a non-negative int, got {margin!r}")
    return MARGIN


# ---------------------------------------------------------------------------------------------- checks
def _check_tile(tile: int) -> int:
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 2 or tile % 2:
        raise ValueError(f"tile must be an even int >= 2 (latent pixels), got {tile!r}")
    return tile


def _check_strategy(autoencoder: Any, strategy: str | None) -> str:
    if strategy is None:
        return decode_strategy(autoencoder)
    if strategy == MARGIN:
        decode_strategy(autoencoder)  # validates the margin
        if getattr(autoencoder, "decoder_margin", None) is None:
            raise ValueError(
                "the margin strategy needs an autoencoder with a decoder_margin (a local decoder)"
            )
        return MARGIN
    if strategy == HANN:
        return HANN
    raise ValueError(f"strategy must be {MARGIN!r}, {HANN!r} or None (automatic), got {strategy!r}")


def _latent_hw(latent_shape: Sequence[int]) -> tuple[int, int]:
    shape = tuple(int(s) for s in latent_shape)
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise ValueError(f"latent_shape must be (C, H, W) (or (B, C, H, W)) with positive sizes, got {shape}")
    return shape[-2], shape[-1]


def _check_latents(latents: torch.Tensor) -> None:
    if not isinstance(latents, torch.Tensor):
        raise TypeError(f"latents must be a torch.Tensor, not {type(latents).__name__}")
    if latents.ndim != 4 or min(latents.shape) < 1:
        raise ValueError(f"latents must have shape (B, C, H, W), got {tuple(latents.shape)}")


# ---------------------------------------------------------------------------------------------- decoding
class _Output:
    """The output buffer, allocated at the first decoded tile (whose channels and dtype it takes)."""

    def __init__(self, height: int, width: int, device: torch.device | str | None):
        self.height, self.width, self.device = height, width, device
        self.tensor: torch.Tensor | None = None

    def get(self, decoded: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        if self.tensor is None:
            device = latents.device if self.device is None else torch.device(self.device)
            dtype = torch.promote_types(decoded.dtype, torch.float32)
            b, c = decoded.shape[:2]
            self.tensor = torch.zeros(b, c, self.height, self.width, dtype=dtype, device=device)
        return self.tensor


def _read(read_latents: LatentReader, height: int, width: int, y0: int, y1: int, x0: int, x1: int):
    """``latent[..., y0:y1, x0:x1]`` of the latent extended past its bottom / right edge by replicating the
    last row / column (``y0 < height`` and ``x0 < width``)."""
    ry1, rx1 = min(y1, height), min(x1, width)
    z = read_latents(slice(y0, ry1), slice(x0, rx1))
    if not isinstance(z, torch.Tensor) or z.ndim != 4 or tuple(z.shape[-2:]) != (ry1 - y0, rx1 - x0):
        got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(
            f"read_latents(slice({y0}, {ry1}), slice({x0}, {rx1})) must return a (B, C, {ry1 - y0}, "
            f"{rx1 - x0}) tensor, got {got}"
        )
    if ry1 < y1 or rx1 < x1:
        z = F.pad(z, (0, x1 - rx1, 0, y1 - ry1), mode="replicate")
    return z


def _decode_tile(autoencoder: Any, z: torch.Tensor) -> torch.Tensor:
    img = autoencoder.decode(z)
    d = autoencoder.downsampling
    expected = (d * z.shape[-2], d * z.shape[-1])
    if tuple(img.shape[-2:]) != expected:
        raise ValueError(
            f"the autoencoder decoded a {tuple(z.shape[-2:])} latent to {tuple(img.shape[-2:])} pixels, "
            f"expected {expected} (downsampling {d})"
        )
    return img


def _hann_weight(
    grid: str,
    ys: torch.Tensor,
    xs: torch.Tensor,
    height: int,
    width: int,
    p: int,
    windows: dict[str, torch.Tensor],
) -> torch.Tensor:
    """The weight of ``grid``'s decode at the pixels ``ys`` x ``xs`` of the (padded) image ``height`` x
    ``width``; the four grids' weights sum to 1."""
    half = p // 2
    in_x = ((xs >= half) & (xs < width - half)).to(windows["center"].dtype)
    in_y = ((ys >= half) & (ys < height - half)).to(windows["center"].dtype)
    ry, rx = (ys % p)[:, None], (xs % p)[None, :]
    sy, sx = ((ys - half) % p)[:, None], ((xs - half) % p)[None, :]
    c = windows["center"][sy, sx] * in_y[:, None] * in_x[None, :]
    if grid == "center":
        return c
    h = windows["horizontal"][sy, rx] * in_y[:, None]
    if grid == "horizontal":
        return h * (1 - c)
    v = windows["vertical"][ry, sx] * in_x[None, :]
    if grid == "vertical":
        return v * (1 - h) * (1 - c)
    return (1 - v) * (1 - h) * (1 - c)


def _region_hann(autoencoder, read_latents, y0, x0, y1, x1, height, width, tile, out: _Output):
    d = int(autoencoder.downsampling)
    p = d * tile
    half = tile // 2
    padded_h, padded_w = -(-height // tile) * tile, -(-width // tile) * tile
    windows = None
    for grid, oy, ox in zip(_GRIDS, (0, 0, half, half), (0, half, 0, half)):
        rows, cols = (padded_h - oy) // tile, (padded_w - ox) // tile
        # grid tiles [o + k tile, o + (k + 1) tile) that overlap the region
        ky = range(max(0, (y0 - oy) // tile), min(rows, -((oy - y1) // tile)))
        kx = range(max(0, (x0 - ox) // tile), min(cols, -((ox - x1) // tile)))
        for ty in (oy + k * tile for k in ky):
            for tx in (ox + k * tile for k in kx):
                z = _read(read_latents, height, width, ty, ty + tile, tx, tx + tile)
                img = _decode_tile(autoencoder, z)
                buf = out.get(img, z)
                if windows is None:
                    windows = {k: w.to(buf.device, buf.dtype) for k, w in hann_windows(p).items()}
                iy0, iy1, ix0, ix1 = max(ty, y0), min(ty + tile, y1), max(tx, x0), min(tx + tile, x1)
                ys = torch.arange(iy0 * d, iy1 * d, device=buf.device)
                xs = torch.arange(ix0 * d, ix1 * d, device=buf.device)
                weight = _hann_weight(grid, ys, xs, padded_h * d, padded_w * d, p, windows)
                crop = img[..., (iy0 - ty) * d : (iy1 - ty) * d, (ix0 - tx) * d : (ix1 - tx) * d]
                buf[..., (iy0 - y0) * d : (iy1 - y0) * d, (ix0 - x0) * d : (ix1 - x0) * d] += (
                    weight * crop.to(buf.device, buf.dtype)
                )


def _region_margin(autoencoder, read_latents, y0, x0, y1, x1, height, width, tile, out: _Output):
    d = int(autoencoder.downsampling)
    m = int(autoencoder.decoder_margin)
    # chunks on the global tile grid, clipped to the region
    for cy0 in range(y0 - y0 % tile, y1, tile):
        for cx0 in range(x0 - x0 % tile, x1, tile):
            ay0, ay1 = max(cy0, y0), min(cy0 + tile, y1)
            ax0, ax1 = max(cx0, x0), min(cx0 + tile, x1)
            ry0, ry1 = max(0, ay0 - m), min(height, ay1 + m)
            rx0, rx1 = max(0, ax0 - m), min(width, ax1 + m)
            z = _read(read_latents, height, width, ry0, ry1, rx0, rx1)
            img = _decode_tile(autoencoder, z)
            buf = out.get(img, z)
            buf[..., (ay0 - y0) * d : (ay1 - y0) * d, (ax0 - x0) * d : (ax1 - x0) * d] = img[
                ..., (ay0 - ry0) * d : (ay1 - ry0) * d, (ax0 - rx0) * d : (ax1 - rx0) * d
            ].to(buf.device, buf.dtype)


@torch.no_grad()
def decode_region(
    autoencoder: Any,
    read_latents: LatentReader,
    y0: int,
    x0: int,
    y1: int,
    x1: int,
    latent_shape: Sequence[int],
    tile: int = 64,
    *,
    strategy: str | None = None,
    out_device: torch.device | str | None = None,
) -> torch.Tensor:
    """Pixels ``(B, 3, d (y1 - y0), d (x1 - x0))`` of the latent region ``[y0:y1, x0:x1]`` (latent pixels).

    They equal (to float rounding) the same crop of :func:`decode_full` of the whole latent with the same
    ``tile`` and strategy, so regions decoded separately join without seams.

    Args:
        autoencoder: an :class:`~napari_diffinfinite.model.Autoencoder` (``d`` is its ``downsampling``).
        read_latents: ``read_latents(ys, xs)`` returns ``latent[..., ys, xs]`` ``(B, C, h, w)`` of the full
            latent; it is called only for windows around the region (one grid tile, or one chunk plus the
            decoder margin, at a time), never for the whole latent.
        y0, x0, y1, x1: the region, ``0 <= y0 < y1 <= H``, ``0 <= x0 < x1 <= W``.
        latent_shape: ``(C, H, W)`` of the full latent (a leading batch size is ignored).
        tile: grid tile size in latent pixels (even; 64 = the reference's 512-px tiles). Memory is bounded
            by one tile's decode (plus the margin on the margin path) and the output.
        strategy: ``None`` picks :func:`decode_strategy`; :data:`HANN` forces the four-grid blend.
        out_device: where the output is allocated (default: the device of the latents read).

    Returns a float tensor (float32 or wider).
    """
    tile = _check_tile(tile)
    height, width = _latent_hw(latent_shape)
    y0, x0, y1, x1 = (int(v) for v in (y0, x0, y1, x1))
    if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
        raise ValueError(
            f"region [{y0}:{y1}, {x0}:{x1}] is empty or outside the latent of {height}x{width} latent pixels"
        )
    strategy = _check_strategy(autoencoder, strategy)
    d = int(autoencoder.downsampling)
    out = _Output(d * (y1 - y0), d * (x1 - x0), out_device)
    region = _region_margin if strategy == MARGIN else _region_hann
    region(autoencoder, read_latents, y0, x0, y1, x1, height, width, tile, out)
    assert out.tensor is not None
    return out.tensor


def _tensor_reader(latents: torch.Tensor) -> LatentReader:
    return lambda ys, xs: latents[..., ys, xs]


def decode_hann(
    autoencoder: Any, latents: torch.Tensor, tile: int = 64, *, out_device: torch.device | str | None = None
) -> torch.Tensor:
    """DiffInfinite's four-grid Hann-window decode of a whole latent ``(B, C, H, W)`` -> ``(B, 3, dH, dW)``.

    Any ``H``, ``W`` (extended to multiples of ``tile`` by edge replication, then cropped); decoded tile by
    tile, each grid tile once. The output is on ``out_device`` (default: the latents' device).
    """
    _check_latents(latents)
    h, w = latents.shape[-2:]
    return decode_region(
        autoencoder,
        _tensor_reader(latents),
        0,
        0,
        h,
        w,
        latents.shape,
        tile,
        strategy=HANN,
        out_device=out_device,
    )


def decode_full(
    autoencoder: Any, latents: torch.Tensor, tile: int = 64, *, out_device: torch.device | str | None = None
) -> torch.Tensor:
    """Decode a whole latent ``(B, C, H, W)`` with the autoencoder's strategy (:func:`decode_strategy`).

    Local decoders: ``tile``-latent chunks with their margin (equal to decoding the whole latent at once).
    Others: :func:`decode_hann`. Memory is bounded by the tile, plus the output.
    """
    _check_latents(latents)
    h, w = latents.shape[-2:]
    return decode_region(
        autoencoder, _tensor_reader(latents), 0, 0, h, w, latents.shape, tile, out_device=out_device
    )
