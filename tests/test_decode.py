"""Seamless decoding: Hann windows vs the reference's golden ones, the four-grid decode against a literal
whole-grid version of its formula, sub-regions against crops of the whole decode, and bounded memory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from napari_diffinfinite.model import SD2VAE, TINY_VAE_OVERRIDES, CompactAutoencoder
from napari_diffinfinite.sampling.decode import (
    HANN,
    MARGIN,
    decode_full,
    decode_hann,
    decode_region,
    decode_strategy,
    hann_windows,
)

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
TILE = 8  # latent pixels: 64-px decodes keep the tiny VAE fast


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Many small decodes: one thread is much faster than several on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_vae():
    return SD2VAE.from_config(seed=0, device="cpu", **TINY_VAE_OVERRIDES)


@pytest.fixture(scope="module", params=[8, 4], ids=["8x", "4x"])
def compact(request):
    torch.manual_seed(1)
    return CompactAutoencoder(widths=(8, 8, 8), downsampling=request.param).eval()


class DecodeSpy:
    """A real autoencoder whose decode calls are recorded (latent shapes), everything else forwarded."""

    def __init__(self, autoencoder):
        self._autoencoder = autoencoder
        self.shapes: list[tuple[int, ...]] = []

    def __getattr__(self, name):
        return getattr(self._autoencoder, name)

    def decode(self, latents):
        self.shapes.append(tuple(latents.shape))
        return self._autoencoder.decode(latents)


def _latents(h, w, seed, channels=4, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(1, channels, h, w, generator=g)


def _reader(latents, calls=None):
    def read(ys, xs):
        if calls is not None:
            calls.append((ys, xs))
        return latents[..., ys, xs]
    return read


def literal_four_grid(autoencoder, z, tile):
    """The reference formula, literally: decode each whole grid (its tiles batched in one call), then blend
    the shifted grids in with the tiled pixel windows, in the order vertical, horizontal, center."""
    d = autoencoder.downsampling
    p, half = d * tile, tile // 2

    def grid(lat):
        _, c, h, w = lat.shape
        tiles = lat.reshape(c, h // tile, tile, w // tile, tile).permute(1, 3, 0, 2, 4)
        tiles = tiles.reshape(-1, c, tile, tile)
        img = autoencoder.decode(tiles)  # (rows * cols, 3, p, p)
        img = img.reshape(h // tile, w // tile, 3, p, p).permute(2, 0, 3, 1, 4).reshape(1, 3, h * d, w * d)
        return img

    rows, cols = z.shape[-2] // tile, z.shape[-1] // tile
    win = hann_windows(p)
    img = grid(z)
    img_v = grid(z[..., :, half:-half])
    img_h = grid(z[..., half:-half, :])
    img_c = grid(z[..., half:-half, half:-half])
    v = win["vertical"].repeat(rows, cols - 1)
    h = win["horizontal"].repeat(rows - 1, cols)
    c = win["center"].repeat(rows - 1, cols - 1)
    q = p // 2
    img[..., :, q:-q] = img[..., :, q:-q] * (1 - v) + img_v * v
    img[..., q:-q, :] = img[..., q:-q, :] * (1 - h) + img_h * h
    img[..., q:-q, q:-q] = img[..., q:-q, q:-q] * (1 - c) + img_c * c
    return img


def aligned_grid_only(autoencoder, z, tile):
    """Plain tiling: the aligned grid's tiles side by side, no blending."""
    rows = []
    for i in range(0, z.shape[-2], tile):
        rows.append(torch.cat([autoencoder.decode(z[..., i:i + tile, j:j + tile])
                               for j in range(0, z.shape[-1], tile)], -1))
    return torch.cat(rows, -2)


# ------------------------------------------------------------------------------------------------ windows
def test_hann_windows_equal_the_reference_golden_ones():
    golden = load_file(str(GOLDEN / "image_model_public.io.safetensors"))
    windows = hann_windows(64)
    for name in ("vertical", "horizontal", "center"):
        got, want = windows[name], golden[f"hann64_{name}"]
        assert got.dtype == torch.float32 and got.shape == (64, 64)
        assert torch.equal(got, want), name


def test_hann_windows_shape_and_errors():
    w = hann_windows(512)
    assert sorted(w) == ["center", "horizontal", "vertical"]
    assert all(v.shape == (512, 512) and v.dtype == torch.float32 for v in w.values())
    assert w["center"][0].abs().max() == 0 and w["vertical"][:, 0].abs().max() == 0
    with pytest.raises(ValueError, match="size"):
        hann_windows(1)


def test_strategy(tiny_vae, compact):
    assert decode_strategy(tiny_vae) == HANN
    assert decode_strategy(compact) == MARGIN
    with pytest.raises(ValueError, match="tile"):
        decode_full(tiny_vae, _latents(8, 8, 0), tile=7)


# ------------------------------------------------------------------------------------------------ four grids
def test_decode_hann_equals_the_literal_four_grid_formula(tiny_vae):
    z = _latents(3 * TILE, 4 * TILE, seed=1, scale=0.05)
    want = literal_four_grid(tiny_vae, z, TILE)
    got = decode_hann(tiny_vae, z, tile=TILE)
    assert got.shape == (1, 3, 8 * 3 * TILE, 8 * 4 * TILE)
    assert (got - want).abs().max() < 1e-5
    # the blend matters: the plain aligned-grid decode differs from it at the seams
    assert (got - aligned_grid_only(tiny_vae, z, TILE)).abs().max() > 1e-3


def test_decode_hann_any_size_is_the_padded_decode_cropped(tiny_vae):
    z = _latents(2 * TILE + 5, 3 * TILE + 3, seed=2, scale=0.05)
    got = decode_hann(tiny_vae, z, tile=TILE)
    assert got.shape == (1, 3, 8 * z.shape[-2], 8 * z.shape[-1])
    padded = F.pad(z, (0, TILE - 3, 0, TILE - 5), mode="replicate")
    want = literal_four_grid(tiny_vae, padded, TILE)[..., : got.shape[-2], : got.shape[-1]]
    assert (got - want).abs().max() < 1e-5
    # smaller than one tile, too
    small = _latents(3, 5, seed=3, scale=0.05)
    assert decode_hann(tiny_vae, small, tile=TILE).shape == (1, 3, 24, 40)


# ------------------------------------------------------------------------------------------------ regions
REGIONS = [
    (0, 0, 8, 8),      # one aligned tile
    (8, 16, 16, 24),   # aligned, interior
    (3, 5, 13, 22),    # misaligned across seams of every grid
    (0, 0, 21, 27),    # everything
    (15, 20, 21, 27),  # bottom-right border (inside the padding rows / columns)
    (20, 0, 21, 27),   # last row
    (10, 26, 11, 27),  # one latent pixel at the right border
]


def test_decode_region_equals_the_crop_of_the_whole_decode_hann(tiny_vae):
    z = _latents(21, 27, seed=4, scale=0.05)
    whole = decode_full(tiny_vae, z, tile=TILE)
    assert (whole - decode_hann(tiny_vae, z, tile=TILE)).abs().max() == 0
    for y0, x0, y1, x1 in REGIONS:
        calls = []
        got = decode_region(tiny_vae, _reader(z, calls), y0, x0, y1, x1, z.shape[1:], tile=TILE)
        want = whole[..., 8 * y0:8 * y1, 8 * x0:8 * x1]
        assert got.shape == want.shape
        assert (got - want).abs().max() < 1e-5, (y0, x0, y1, x1)
        # only the latents of the grid tiles around the region are read
        for ys, xs in calls:
            assert ys.start >= y0 - TILE and ys.stop <= y1 + TILE
            assert xs.start >= x0 - TILE and xs.stop <= x1 + TILE


def test_decode_region_equals_the_crop_of_the_whole_decode_margin(compact):
    z = _latents(37, 45, seed=5, scale=0.5)
    whole = compact.decode(z)  # a local decoder: decode_full is the plain whole decode
    full = decode_full(compact, z, tile=TILE)
    assert (full - whole).abs().max() < 1e-5
    m, d = compact.decoder_margin, compact.downsampling
    for y0, x0, y1, x1 in REGIONS + [(9, 11, 37, 45), (30, 3, 37, 40)]:
        calls = []
        got = decode_region(compact, _reader(z, calls), y0, x0, y1, x1, z.shape[1:], tile=TILE)
        assert (got - whole[..., d * y0:d * y1, d * x0:d * x1]).abs().max() < 1e-5, (y0, x0, y1, x1)
        for ys, xs in calls:
            assert ys.start >= max(0, y0 - m) and ys.stop <= y1 + m
            assert xs.start >= max(0, x0 - m) and xs.stop <= x1 + m


def test_regions_decoded_separately_join_into_the_whole(compact, tiny_vae):
    z = _latents(20, 28, seed=6, scale=0.05)
    for ae in (compact, tiny_vae):
        whole = decode_full(ae, z, tile=TILE)
        parts = [torch.cat([decode_region(ae, _reader(z), y, x, min(y + 7, 20), min(x + 10, 28), z.shape[1:],
                                          tile=TILE) for x in range(0, 28, 10)], -1) for y in range(0, 20, 7)]
        assert (torch.cat(parts, -2) - whole).abs().max() < 1e-5


def test_decode_region_checks_its_region(compact, tiny_vae):
    z = _latents(16, 16, seed=0)
    for bad in [(0, 0, 0, 4), (0, 0, 17, 4), (-1, 0, 4, 4), (5, 5, 4, 8)]:
        with pytest.raises(ValueError, match="region"):
            decode_region(compact, _reader(z), *bad, z.shape[1:], tile=TILE)
    with pytest.raises(ValueError, match="read_latents"):
        decode_region(compact, lambda ys, xs: z, 0, 0, 4, 4, z.shape[1:], tile=TILE)
    with pytest.raises(ValueError, match="decoder_margin"):
        decode_region(tiny_vae, _reader(z), 0, 0, 4, 4, z.shape[1:], tile=TILE, strategy=MARGIN)


# ------------------------------------------------------------------------------------------------ memory
def test_peak_decode_is_a_tile_not_the_image(tiny_vae, compact):
    z = _latents(6 * TILE, 5 * TILE, seed=7, scale=0.05)
    spy = DecodeSpy(tiny_vae)
    decode_full(spy, z, tile=TILE)
    assert max(h * w for *_, h, w in spy.shapes) == TILE * TILE
    # every grid tile decoded exactly once: aligned, both half-shifted grids, the doubly shifted one
    assert len(spy.shapes) == 6 * 5 + 6 * 4 + 5 * 5 + 5 * 4

    spy = DecodeSpy(compact)
    decode_full(spy, z, tile=TILE)
    m = compact.decoder_margin
    assert max(h * w for *_, h, w in spy.shapes) <= (TILE + 2 * m) ** 2 < z.shape[-2] * z.shape[-1]
