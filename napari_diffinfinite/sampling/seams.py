"""A seam metric for images assembled from tiles: how much stronger the image changes across tile
boundaries than elsewhere. Used by the tests and benchmarks of the samplers and decoders."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["seam_ratio"]


def _as_hwc(image: Any) -> np.ndarray:
    """(H, W, C) float32 from a numpy (H, W, C) / (H, W) array or a torch (C, H, W) / (1, C, H, W) tensor."""
    if hasattr(image, "detach") and hasattr(image, "permute"):  # a torch tensor, without importing torch
        t = image.detach()
        if t.ndim == 4:
            if t.shape[0] != 1:
                raise ValueError(f"a batched image tensor must hold one image, got shape {tuple(t.shape)}")
            t = t[0]
        if t.ndim == 3:
            t = t.permute(1, 2, 0)
        elif t.ndim != 2:
            raise ValueError(
                f"an image tensor must be (C, H, W), (1, C, H, W) or (H, W), got {tuple(t.shape)}"
            )
        arr = t.cpu().float().numpy()
    else:
        arr = np.asarray(image)
        if arr.ndim not in (2, 3):
            raise ValueError(f"an image array must be (H, W, C) or (H, W), got shape {arr.shape}")
        numeric = np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
        if arr.dtype == bool or not numeric:
            raise TypeError(f"image must hold numbers (uint8 or float), got {arr.dtype}")
        arr = arr.astype(np.float32, copy=False)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr


def _mean_abs_diff(img: np.ndarray, axis: int) -> np.ndarray:
    """|I[k] - I[k-1]| along ``axis`` (0: rows, 1: columns), averaged over channels, one channel at a time."""
    total = None
    for c in range(img.shape[2]):
        diff = np.abs(np.diff(img[:, :, c], axis=axis))
        total = diff if total is None else np.add(total, diff, out=total)
    return total / img.shape[2]


def _distances(length: int, boundaries: np.ndarray) -> np.ndarray:
    """For the differences at positions 1..length-1 (between k-1 and k): distance to the nearest boundary."""
    positions = np.arange(1, length)
    if boundaries.size == 0:
        return np.full(positions.shape, np.iinfo(np.int64).max, dtype=np.int64)
    return np.abs(positions[:, None] - boundaries[None, :]).min(axis=1)


def seam_ratio(image: Any, tile: int = 512, band: int = 2) -> float:
    """Mean gradient on ``tile``-px tile boundaries divided by the mean gradient away from them.

    The gradient across a boundary is the absolute difference between pixel ``k * tile - 1`` and pixel
    ``k * tile`` (columns for vertical boundaries, rows for horizontal ones), averaged over the colour
    channels (mean over RGB, so a hue shift that keeps luminance still counts). The reference is the same
    difference, in the same direction, at every position more than ``band`` px from any boundary; the
    ``band`` px on either side are left out of both. Boundaries are at multiples of ``tile`` from the top-left
    corner, strictly inside the image; the image's own edges are not boundaries.

    1.0 means the boundaries are indistinguishable from the rest (a seamless image); visible seams give
    clearly more (the project requires <= 1.10). A flat image (no gradient anywhere) gives 1.0.

    Args:
        image: ``(H, W, 3)`` (or ``(H, W)``) numpy array, uint8 or float; or a torch tensor ``(3, H, W)``
            (or ``(1, 3, H, W)``). The value scale does not matter (the ratio is scale-free).
        tile: tile size in pixels.
        band: pixels on either side of a boundary excluded from the reference.

    Raises:
        ValueError: the image has no tile boundary (it fits in one tile), or no pixel is left for the
            reference.
    """
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 2:
        raise ValueError(f"tile must be an int >= 2 (pixels), got {tile!r}")
    if isinstance(band, bool) or not isinstance(band, (int, np.integer)) or band < 0:
        raise ValueError(f"band must be an int >= 0 (pixels), got {band!r}")
    img = _as_hwc(image)
    height, width = img.shape[:2]
    cols = np.arange(tile, width, tile)  # vertical boundaries: between columns c - 1 and c
    rows = np.arange(tile, height, tile)  # horizontal boundaries: between rows r - 1 and r
    if cols.size == 0 and rows.size == 0:
        raise ValueError(
            f"the image ({height}x{width} px) fits in one {tile}-px tile, so it has no tile boundary to "
            f"measure a seam on; use a smaller tile or a larger image (height or width > {tile})"
        )
    seam_sum, seam_n, ref_sum, ref_n = 0.0, 0, 0.0, 0
    for axis, boundaries, length in ((1, cols, width), (0, rows, height)):
        if length < 2:
            continue
        grad = _mean_abs_diff(img, axis)  # index k - 1 holds the difference between k - 1 and k
        # sums over the lines (rows for column differences, columns for row differences), per position
        line_sums = grad.sum(axis=1 - axis, dtype=np.float64)
        lines = grad.shape[1 - axis]
        dist = _distances(length, boundaries)
        on, away = dist == 0, dist > band
        seam_sum += float(line_sums[on].sum())
        seam_n += int(on.sum()) * lines
        ref_sum += float(line_sums[away].sum())
        ref_n += int(away.sum()) * lines
    if ref_n == 0:
        raise ValueError(
            f"no pixels more than band={band} px from a {tile}-px tile boundary in a {height}x{width} image: "
            "use a smaller band or a larger tile"
        )
    seam_mean, ref_mean = seam_sum / seam_n, ref_sum / ref_n
    if ref_mean == 0.0:
        return 1.0 if seam_mean == 0.0 else float("inf")
    return seam_mean / ref_mean
