"""Cost of random-patch sampling: UNet window-evaluations per output latent pixel vs plain tiling.

Which windows a sampler evaluates does not depend on what the network outputs, so the counts use a stepper
that returns its input (no network): exact counts in seconds. With ``--model`` (a model folder or
"embedded") it also times one image with the real network, faithful vs batched, in the same run.

    python benchmarks/sampling_cost.py                       # counts at 1024/2048/4096 px, 50 steps
    python benchmarks/sampling_cost.py --model embedded --time-size 2048 --steps 25
"""

from __future__ import annotations

import argparse
import time

import torch

from napari_diffinfinite.model import cosine_schedule
from napari_diffinfinite.sampling.blocks import generate_latents
from napari_diffinfinite.sampling.options import SamplingOptions
from napari_diffinfinite.sampling.random_patch import SamplingStats, sample_region
from napari_diffinfinite.sampling.steppers import WindowStep


class CountingStepper:
    """Returns its input: the sampler's window choices are the same as with a network."""

    size_multiple = 4
    second_order = False

    def __call__(self, x, cond, t, t_next, noise, context=None):
        return WindowStep(x, x)


def count(size_px: int, steps: int, mode: str, seed: int = 0) -> SamplingStats:
    latent = size_px // 8
    stats = SamplingStats()
    sample_region(CountingStepper(), (4, latent, latent), None, schedule=cosine_schedule(), steps=steps,
                  generator=torch.Generator().manual_seed(seed), mode=mode, window=64, stats=stats)
    return stats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--model", help="model folder or 'embedded' for the wall-time comparison")
    p.add_argument("--time-size", type=int, default=2048)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"window evaluations per output latent pixel, relative to plain tiling ({args.steps} steps, 64-latent windows)")
    print(f"{'size px':>8} {'tiling':>8} {'faithful':>10} {'x':>6} {'batched':>9} {'x':>6} {'faithful s':>11}")
    for size in args.sizes:
        t = time.perf_counter()
        f = count(size, args.steps, "faithful")
        tf = time.perf_counter() - t
        b = count(size, args.steps, "batched")
        print(f"{size:>8} {f.tiling_evals:>8.0f} {f.window_evals:>10} {f.cost_vs_tiling:>6.2f} "
              f"{b.window_evals:>9} {b.cost_vs_tiling:>6.2f} {tf:>11.1f}")

    if args.model:
        from napari_diffinfinite.generation import load_model
        from napari_diffinfinite.sampling.steppers import ImageStepper

        model = load_model(args.model)
        latent = args.time_size // 8
        labels = torch.zeros(latent, latent, dtype=torch.long)
        labels[: latent // 2] = 1
        labels[latent // 2 :, latent // 3 :] = 3
        print(f"\nwall time, {args.time_size} px, model {model.name}, {args.steps} steps, "
              f"omega {model.default_omega}, threads {torch.get_num_threads()}")
        for mode in ("batched", "faithful"):
            stepper = ImageStepper(model.image_unet, cosine_schedule(), model.default_omega + 1)
            stats = SamplingStats()
            t = time.perf_counter()
            options = SamplingOptions.for_model(model, steps=args.steps, mode=mode)
            generate_latents(stepper, (model.image_unet.channels, latent, latent), labels, seed=0, options=options,
                             stats=stats)
            dt = time.perf_counter() - t
            print(f"{mode:>9}: {dt:7.1f} s  windows {stats.window_evals}  UNet rows {stepper.rows_evaluated}  "
                  f"({stats.cost_vs_tiling:.2f}x tiling)")


if __name__ == "__main__":
    main()
