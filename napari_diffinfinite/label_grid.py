"""Where a pixel mask meets the latent grid: the label at the centre of each latent cell.

The trainer, :func:`~napari_diffinfinite.generation.generate`, the canvas and the distributed path must all
read a mask the same way, or the same mask would condition the image model differently in each. Numpy only
(no torch): the napari face uses it before the model is loaded.
"""

from __future__ import annotations

import numpy as np


def cell_centres(length: int, cell: int) -> np.ndarray:
    """The pixel index at the centre of each ``cell``-px cell along an axis of ``length`` px; a last, partial
    cell takes the edge pixel (the mask extended by edge replication)."""
    cells = -(-int(length) // int(cell))
    return np.minimum(np.arange(cells) * cell + cell // 2, int(length) - 1)


def labels_at_cell_centres(mask, cell: int):
    """``mask`` (``(..., H, W)``, numpy or torch) at latent scale: ``(..., ceil(H / cell), ceil(W / cell))``."""
    h, w = mask.shape[-2:]
    ys, xs = cell_centres(h, cell), cell_centres(w, cell)
    if not isinstance(mask, np.ndarray):  # a torch tensor: index with its own integer tensors
        import torch

        ys, xs = torch.from_numpy(ys), torch.from_numpy(xs)
    return mask[..., ys[:, None], xs[None, :]]
