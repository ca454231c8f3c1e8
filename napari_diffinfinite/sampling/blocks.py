"""Blocks of a latent canvas: a fixed decomposition with per-block seeds, and generation block by block.

A canvas is cut into square blocks. Each block is sampled as one region together with a halo of its
already-generated neighbours, which enter as fixed context (re-noised every step), so blocks continue each
other without seams. In the fixed order used by the CLI and the distributed path, a block's context is its
upper-left, upper and left neighbours, so the blocks of one anti-diagonal (a "wave", ``i + j``) share no
context and can run in parallel; the result is the same however many processes run the waves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .options import SamplingOptions
from .random_patch import SamplingStats, WindowStepper, sample_region


@dataclass(frozen=True)
class Block:
    i: int
    j: int
    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def wave(self) -> int:
        return self.i + self.j


def block_grid(height: int, width: int, block: int) -> list[Block]:
    """Blocks of ``block`` latents covering (height, width), in wave order (anti-diagonals, then row)."""
    if block <= 0:
        raise ValueError(f"block size must be positive, got {block}")
    rows, cols = -(-height // block), -(-width // block)
    blocks = [
        Block(i, j, i * block, j * block, min((i + 1) * block, height), min((j + 1) * block, width))
        for i in range(rows)
        for j in range(cols)
    ]
    return sorted(blocks, key=lambda b: (b.wave, b.i))


def block_seed(seed: int, i: int, j: int, *salt: int) -> int:
    """A 63-bit seed for block (i, j) of a canvas with ``seed``: independent streams, the same everywhere.
    ``salt`` (non-negative integers) draws further independent streams for the same block (e.g. repaints)."""
    if seed < 0 or i < 0 or j < 0 or min(salt, default=0) < 0:
        raise ValueError(f"seeds and block indices must be non-negative, got seed={seed}, block=({i}, {j})")
    hi, lo = np.random.SeedSequence([seed, i, j, *salt]).generate_state(2, dtype=np.uint32).tolist()
    return (hi << 31) | (lo >> 1)


def context_region(
    block: Block, done: torch.Tensor, halo: int, lookahead: int = 0
) -> tuple[int, int, int, int]:
    """The block grown by ``halo`` on every side whose halo strip holds generated (``done``) latents, and by
    ``lookahead`` (at most ``halo``, so that the region never leaves the block's halo, which is all that a
    distributed worker reads) on the other sides, inside ``done``'s bounds."""
    h, w = done.shape
    lookahead = min(lookahead, halo)
    y0, x0, y1, x1 = block.y0, block.x0, block.y1, block.x1
    top = y0 > 0 and bool(done[max(0, y0 - halo) : y0, max(0, x0 - halo) : min(w, x1 + halo)].any())
    bottom = y1 < h and bool(done[y1 : min(h, y1 + halo), max(0, x0 - halo) : min(w, x1 + halo)].any())
    y0 = max(0, y0 - (halo if top else lookahead))
    y1 = min(h, y1 + (halo if bottom else lookahead))
    left = x0 > 0 and bool(done[y0:y1, max(0, x0 - halo) : x0].any())
    right = x1 < w and bool(done[y0:y1, x1 : min(w, x1 + halo)].any())
    x0 = max(0, x0 - (halo if left else lookahead))
    x1 = min(w, x1 + (halo if right else lookahead))
    return y0, x0, y1, x1


def generate_block(
    stepper: WindowStepper,
    latents: torch.Tensor,
    done: torch.Tensor,
    labels: torch.Tensor | None,
    block: Block,
    *,
    seed: int,
    options: SamplingOptions,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    stats: SamplingStats | None = None,
    device="cpu",
) -> None:
    """Sample one block into ``latents`` (C, H, W) in place, with the generated (``done``) halo as context.

    The one tile pipeline's sampling step: ``generate()``, the canvas scheduler and the distributed tasks all
    sample through it, with ``stepper`` built by ``options.stepper``. Latents outside the block are never
    changed. ``done`` is only read: the caller marks the block done (after its wave, for order independence).
    """
    y0, x0, y1, x1 = context_region(block, done, options.halo, options.lookahead)
    region_done = done[y0:y1, x0:x1].clone()
    in_block = torch.zeros_like(region_done)
    in_block[block.y0 - y0 : block.y1 - y0, block.x0 - x0 : block.x1 - x0] = True
    known_mask = region_done & ~in_block  # a block being regenerated does not keep its own old latents
    known = latents[:, y0:y1, x0:x1]
    out = sample_region(
        stepper,
        (latents.shape[0], y1 - y0, x1 - x0),
        None if labels is None else labels[y0:y1, x0:x1],
        schedule=stepper.schedule,
        steps=options.steps,
        generator=torch.Generator().manual_seed(block_seed(seed, block.i, block.j)),
        mode=options.mode,
        window=options.window,
        known=known if known_mask.any() else None,
        known_mask=known_mask,
        progress=progress,
        cancel=cancel,
        stats=stats,
        device=device,
    )
    by, bx = slice(block.y0 - y0, block.y1 - y0), slice(block.x0 - x0, block.x1 - x0)
    latents[:, block.y0 : block.y1, block.x0 : block.x1] = out[:, by, bx].to(latents.device, latents.dtype)


def generate_latents(
    stepper: WindowStepper,
    shape: tuple[int, int, int],
    labels: torch.Tensor | None,
    *,
    seed: int,
    options: SamplingOptions,
    block: int = 512,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    stats: SamplingStats | None = None,
    device="cpu",
) -> torch.Tensor:
    """Latents (C, H, W) for a whole canvas, block by block in wave order (one block if it fits)."""
    c, h, w = shape
    latents = torch.zeros(shape)
    done = torch.zeros(h, w, dtype=torch.bool)
    blocks = block_grid(h, w, block)
    steps = options.steps
    total = steps * h * w
    finished = 0

    for wave in iter_waves(blocks):
        # context = blocks of earlier waves only, exactly as when a wave's blocks run in parallel
        for b in wave:
            size = (b.y1 - b.y0) * (b.x1 - b.x0)

            def block_progress(d, t, base=finished, size=size):
                if progress is not None:
                    progress(base + d * size * steps // max(t, 1), total)

            generate_block(
                stepper,
                latents,
                done,
                labels,
                b,
                seed=seed,
                options=options,
                progress=block_progress,
                cancel=cancel,
                stats=stats,
                device=device,
            )
            finished += size * steps
        for b in wave:
            done[b.y0 : b.y1, b.x0 : b.x1] = True
    if stats is not None:
        stats.latent_pixels = h * w  # output pixels: cost is counted against them, halo work included
    return latents


def iter_waves(blocks: list[Block]) -> Iterator[list[Block]]:
    """Blocks grouped by wave: each group can run in parallel once the previous groups are done."""
    wave: list[Block] = []
    for b in blocks:
        if wave and b.wave != wave[0].wave:
            yield wave
            wave = []
        wave.append(b)
    if wave:
        yield wave
