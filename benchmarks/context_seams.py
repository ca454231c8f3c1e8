"""Seam ratio across a context join (issue 3): two 512 px blocks, the second sampled beside the first as fixed
context, against the same mask generated as one block (no join at all) and two halves butted together.

A single 512-px join is one column of the image, so one image's ratio is mostly its content (one-block images
of the same masks read 0.85-1.12 at the same column). The figures are therefore means over masks x seeds, with
their standard error. Variants of the join, each measured in the same run:

- shipped: the context correction (sampling/context.py) and the lookahead past free sides (sampling/blocks.py);
- no correction: the stepper does not continue the context (``context_sigma=0``);
- no lookahead: block 1 is sampled to its own edge (``lookahead=0``);
- neither: both off (how joins were sampled before).

Masks: real sample masks mirrored at x = 512 (so the labels run on across the join) and uniform classes.
Target: the shipped join <= 1.10.

    python benchmarks/context_seams.py                   # the embedded model, 2 torch threads, seeds 0-3
    python benchmarks/context_seams.py --model FOLDER --seeds 0 1 2 3 4 5 --window 96
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from napari_diffinfinite.generation import load_model
from napari_diffinfinite.model import cosine_schedule
from napari_diffinfinite.sampling.blocks import generate_latents
from napari_diffinfinite.sampling.context import CONTEXT_SIGMA
from napari_diffinfinite.sampling.decode import decode_full
from napari_diffinfinite.sampling.options import LOOKAHEAD, SamplingOptions
from napari_diffinfinite.sampling.seams import seam_ratio
from napari_diffinfinite.sampling.steppers import ImageStepper

SAMPLE_MASKS = sorted((Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "sample_masks").glob("*_mask.png"))


def mirrored(index: int) -> np.ndarray:
    with Image.open(SAMPLE_MASKS[index]) as im:
        mask = np.asarray(im).astype(np.int64)
    return np.concatenate([mask, mask[:, ::-1]], axis=1)


def image(model, mask: np.ndarray, seed: int, *, block: int, sigma: float, lookahead: int, window: int,
          sampler: str) -> np.ndarray:
    d = model.downsampling
    labels = torch.from_numpy(mask[d // 2 :: d, d // 2 :: d].copy())
    stepper = ImageStepper(model.image_unet, cosine_schedule(), model.default_omega + 1, context_sigma=sigma,
                           sampler=sampler)
    options = SamplingOptions.for_model(model, sampler=sampler, halo=16, lookahead=lookahead, window=window)
    z = generate_latents(stepper, (model.image_unet.channels, *labels.shape), labels, seed=seed, options=options,
                         block=block, device=model.device)
    pixels = decode_full(model.autoencoder, z[None].to(model.device), out_device="cpu")[0]
    return (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--sampler", help="the image sampler (default: the model's)")
    p.add_argument("--window", type=int, default=96, help="sampling window in latents (96: one window over the "
                   "block and its halo, as the canvas samples; 64: the model's own window)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu")
    cases = {"sample mask 0": mirrored(0), "sample mask 3": mirrored(3), "sample mask 5": mirrored(5),
             "uniform necrosis": np.full((512, 1024), 2), "uniform stroma": np.full((512, 1024), 3)}
    lb = model.window
    sampler = args.sampler or model.sampler
    variants = {
        "shipped join": dict(block=lb, sigma=CONTEXT_SIGMA, lookahead=LOOKAHEAD),
        "no correction": dict(block=lb, sigma=0.0, lookahead=LOOKAHEAD),
        "no lookahead": dict(block=lb, sigma=CONTEXT_SIGMA, lookahead=0),
        "neither": dict(block=lb, sigma=0.0, lookahead=0),
        "one block (no join)": dict(block=2 * lb, sigma=CONTEXT_SIGMA, lookahead=LOOKAHEAD),
    }
    print(f"model {args.model}, {model.default_steps} steps, sampler {sampler}, window {args.window}, seeds {args.seeds}; "
          "seam ratio at "
          f"x = 512 (target <= 1.10)", flush=True)
    table = {v: {} for v in variants}
    seconds = {v: 0.0 for v in variants}
    for name, mask in cases.items():
        for v, kw in variants.items():
            vals = []
            for seed in args.seeds:
                t0 = time.perf_counter()
                vals.append(seam_ratio(image(model, mask, seed, window=args.window, sampler=sampler, **kw), tile=512))
                seconds[v] += time.perf_counter() - t0
            table[v][name] = vals
        halves = []
        for seed in args.seeds:
            left = image(model, mask[:, :512], seed, **variants["one block (no join)"], window=args.window,
                         sampler=sampler)
            right = image(model, mask[:, 512:], seed + 1000, **variants["one block (no join)"], window=args.window,
                          sampler=sampler)
            halves.append(seam_ratio(np.concatenate([left, right], axis=1), tile=512))
        table.setdefault("without context", {})[name] = halves
        print(f"{name:18s} " + "  ".join(f"{v} {np.mean(table[v][name]):.3f}" for v in table), flush=True)

    print("\nmean +- standard error over masks x seeds (real masks only | all masks):")
    real = [n for n in cases if n.startswith("sample")]
    for v, rows in table.items():
        a = np.concatenate([rows[n] for n in real])
        b = np.concatenate(list(rows.values()))
        secs = f"  ({seconds[v] / len(b):.1f} s per image)" if v in seconds else ""
        print(f"  {v:20s} {a.mean():.3f} +- {a.std(ddof=1) / np.sqrt(len(a)):.3f} | "
              f"{b.mean():.3f} +- {b.std(ddof=1) / np.sqrt(len(b)):.3f}{secs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
