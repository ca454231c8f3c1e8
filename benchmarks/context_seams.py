"""Seam ratio across a context join (issue 3): two 512 px blocks, the second sampled beside the first as fixed
context (``generate(..., block=64)``), against the same halves generated without context and butted together.

Masks: real sample masks mirrored at x = 512 (so the labels run on smoothly across the join) and uniform classes.
Target: joined <= 1.10. Two ways to sample the second block: windows of the model's size (64 latents) over the
block and its 16-latent context halo (up to 2 x 2 windows per step), and one window over the whole region
(80 x 64 here; what the canvas does), with the wall time of each.

    python benchmarks/context_seams.py                 # the embedded model, 1 torch thread
    python benchmarks/context_seams.py --model FOLDER --threads 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from napari_diffinfinite.generation import generate, load_model
from napari_diffinfinite.sampling.seams import seam_ratio

SAMPLE_MASKS = sorted((Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "sample_masks").glob("*_mask.png"))


def mirrored(index: int) -> np.ndarray:
    with Image.open(SAMPLE_MASKS[index]) as im:
        mask = np.asarray(im).astype(np.int64)
    return np.concatenate([mask, mask[:, ::-1]], axis=1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu")
    cases = {"sample mask 0": mirrored(0), "sample mask 3": mirrored(3), "sample mask 5": mirrored(5),
             "uniform necrosis": np.full((512, 1024), 2), "uniform stroma": np.full((512, 1024), 3)}
    print(f"model {args.model}, {model.default_steps} steps, seed {args.seed}; seam ratio at x = 512 (target <= 1.10)")
    for name, mask in cases.items():
        joined = []
        for window in (model.window, model.window + 32):
            t0 = time.perf_counter()
            image = generate(model, mask=mask, seed=args.seed, block=64, halo=16, window=window).image
            joined.append((seam_ratio(image, tile=512), time.perf_counter() - t0))
        halves = [generate(model, mask=mask[:, :512], seed=args.seed).image,
                  generate(model, mask=mask[:, 512:], seed=args.seed + 1).image]
        independent = seam_ratio(np.concatenate(halves, axis=1), tile=512)
        print(f"{name:18s} joined, {model.window}-windows {joined[0][0]:.3f} ({joined[0][1]:.1f} s)  one window "
              f"{joined[1][0]:.3f} ({joined[1][1]:.1f} s)  without context {independent:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
