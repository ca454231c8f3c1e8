"""Joining new latents to fixed context without a seam: the x0 correction every guided step applies.

Context enters a window re-noised to the current time, so the network sees it, but the network's own
prediction of the clean latents (``x_start``) over the context is never exactly the known latents. Across
the window that prediction is one smooth field; it is the swap of the predicted context for the known one at
the end that leaves a step at the join. :func:`continue_context` carries the network's miss on the context
(known minus predicted) into the new latents next to it, smoothly and fading with distance, so the predicted
new latents continue the *known* context rather than the predicted one. It is applied to ``x_start`` before
every DDIM step, so the correction steers the sample while its structure forms (a cheap, gradient-free form
of reconstruction guidance) and the last step's output, which is ``x_start``, already meets the context.

Measured with the embedded model on real sample masks (``benchmarks/context_seams.py``): it lowers the
seam ratio across a join by about 0.06 at no measurable cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Smoothing of the carried miss, in latents: wide enough to drop the miss's texture (a copy of it would be
#: visible), narrow enough to reach the new latents only near the join.
CONTEXT_SIGMA = 2.0


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, C, H, W)`` with replicated edges."""
    radius = max(1, int(3 * sigma))
    k = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(k**2) / (2 * sigma * sigma))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(
        F.pad(x, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c
    )
    return F.conv2d(
        F.pad(x, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c
    )


def continue_context(
    x_start: torch.Tensor, known: torch.Tensor, known_mask: torch.Tensor, sigma: float = CONTEXT_SIGMA
) -> torch.Tensor:
    """``x_start`` (N, C, H, W) with the miss on the context carried into the unknown latents beside it.

    ``known`` (N, C, H, W) holds the fixed context where ``known_mask`` (N, H, W) is True. The miss
    ``known - x_start`` on the context is extended by normalised Gaussian smoothing (a smooth extrapolation
    of its low frequencies) and added to the unknown latents with a weight that is 1 on the context and fades
    with distance from it (about 0.8, 0.45, 0.2 on the first three new latents beside a straight join with
    ``sigma`` 2). Context latents and windows without context come back unchanged; the
    result stays within the clip range [-1, 1] of ``x_start``.
    """
    keep = known_mask.to(x_start.device)[:, None]
    if not bool(keep.any()):
        return x_start
    weight = keep.to(x_start.dtype)
    miss = torch.where(keep, known.to(x_start.device, x_start.dtype) - x_start, torch.zeros_like(x_start))
    reach = _gaussian_blur(weight, sigma)
    extended = _gaussian_blur(miss, sigma) / reach.clamp(min=1e-6)
    fade = (2 * reach).clamp(max=1.0)  # 1 where half the kernel or more lies on the context
    return torch.where(keep, x_start, (x_start + fade * extended).clamp(-1.0, 1.0))
