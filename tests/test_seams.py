"""The seam metric: ~1 on a seamless image, clearly above 1.10 with tiles that do not match, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_diffinfinite.sampling.seams import seam_ratio


def smooth_field(size: int, sigma: float = 3.0, seed: int = 0) -> np.ndarray:
    """Gaussian-filtered white noise, (size, size, 3) float32 in about [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(3, 1, size, size, generator=g)
    radius = int(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    field = F.conv2d(F.pad(noise, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    field = F.conv2d(F.pad(field, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1))
    field = field[:, 0]
    field = 0.5 + 0.15 * field / field.std()
    return field.permute(1, 2, 0).numpy()


def brighten_tiles(image: np.ndarray, tile: int, seed: int = 1, amount: float = 0.08) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = image.copy()
    for y in range(0, image.shape[0], tile):
        for x in range(0, image.shape[1], tile):
            out[y:y + tile, x:x + tile] += rng.uniform(-amount, amount)
    return out


def test_seamless_field_is_about_one():
    image = smooth_field(768)
    ratio = seam_ratio(image, tile=256)
    assert 0.9 <= ratio <= 1.1, ratio
    # the same figure from a torch (3, H, W) tensor, a (1, 3, H, W) batch, and uint8 pixels
    assert seam_ratio(torch.from_numpy(image).permute(2, 0, 1), tile=256) == pytest.approx(ratio, rel=1e-6)
    batched = torch.from_numpy(image).permute(2, 0, 1)[None]
    assert seam_ratio(batched, tile=256) == pytest.approx(ratio, rel=1e-6)
    as_uint8 = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    assert 0.9 <= seam_ratio(as_uint8, tile=256) <= 1.1


def test_mismatched_tiles_give_a_large_ratio():
    image = smooth_field(768)
    ratio = seam_ratio(brighten_tiles(image, 256), tile=256)
    assert ratio > 1.5, ratio
    # measured on the wrong grid, the same steps are not on the boundaries: back to about 1
    shifted = brighten_tiles(image, 256)[128:, 128:]
    assert seam_ratio(shifted, tile=256) < 1.1


def test_a_seam_in_one_direction_only_and_non_multiple_sizes():
    image = smooth_field(600)
    stepped = image.copy()
    stepped[:, 256:] += 0.1  # one vertical seam; 600 is not a multiple of the tile
    assert seam_ratio(stepped, tile=256) > 1.3
    assert 0.9 <= seam_ratio(image[:, :300], tile=256) <= 1.1  # only a vertical boundary at 256
    assert 0.9 <= seam_ratio(image[:, :, 0], tile=256) <= 1.1  # grey (H, W)


def test_one_tile_has_no_boundary():
    with pytest.raises(ValueError, match="no tile boundary"):
        seam_ratio(np.zeros((512, 512, 3), np.uint8))
    with pytest.raises(ValueError, match="no tile boundary"):
        seam_ratio(torch.zeros(3, 100, 80), tile=128)


def test_flat_image_and_bad_arguments():
    assert seam_ratio(np.full((64, 64, 3), 7, np.uint8), tile=32) == 1.0
    with pytest.raises(ValueError, match="band"):
        seam_ratio(np.zeros((64, 64, 3)), tile=32, band=-1)
    with pytest.raises(ValueError, match="band"):
        seam_ratio(np.zeros((64, 64, 3)), tile=4, band=3)  # nothing left more than 3 px away from boundaries
    with pytest.raises(ValueError, match="tile"):
        seam_ratio(np.zeros((64, 64, 3)), tile=1)
    with pytest.raises(ValueError, match="shape"):
        seam_ratio(np.zeros((2, 64, 64, 3)), tile=32)
