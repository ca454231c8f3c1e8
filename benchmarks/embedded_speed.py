"""Speed of the shipped defaults on this machine: one 512 px tile, and one 2048 px image with its generated mask.

Targets (issue 4, 2-core CPU, both cores, defaults of at least 25 steps and omega 3): tile <= 2 s, 2048 px with
mask <= 60 s. Each figure is the best of ``--repeat`` runs after one warm-up, and the stages are broken down.

    python benchmarks/embedded_speed.py                 # the embedded model
    python benchmarks/embedded_speed.py --model FOLDER --threads 2

The tile is also timed with the reference's DDIM sampler in the same run, for the ratio of the model's sampler
to it (the same network calls but one: its first step runs none).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_diffinfinite.generation import generate, load_model


def tile_mask(size: int) -> np.ndarray:
    """A painted two-class tile: carcinoma island in stroma, with a band of unlabelled tissue."""
    mask = np.full((size, size), 3, np.uint8)
    mask[size // 8 : size // 2, size // 8 : size // 2] = 1
    mask[size // 2 : size // 2 + size // 16] = 0
    return mask


def timed(fn, repeat: int):
    fn()  # warm-up: first-call allocations, cached kernels
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--steps", type=int, help="default: the model's")
    p.add_argument("--omega", type=float, help="default: the model's")
    p.add_argument("--sampler", help="default: the model's")
    p.add_argument("--big", type=int, default=2048)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu")
    steps = args.steps or model.default_steps
    omega = model.default_omega if args.omega is None else args.omega
    sampler = args.sampler or model.sampler
    print(f"model {model.name}, {steps} steps, omega {omega}, sampler {sampler}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")

    def tile(name):
        return timed(lambda: generate(model, mask=tile_mask(512), steps=steps, omega=omega, seed=0, sampler=name),
                     args.repeat)

    t_tile, r = tile(sampler)
    print(f"512 px tile (painted mask): {t_tile:6.2f} s   [tissue {r.seconds['tissue_s']:.2f} s, "
          f"decode {r.seconds['decode_s']:.2f} s, UNet rows {r.stats.extra['unet_rows']}]   target <= 2 s")
    if sampler != "ddim":
        t_ddim, r = tile("ddim")
        print(f"  the same tile with ddim:  {t_ddim:6.2f} s   [UNet rows {r.stats.extra['unet_rows']}]   "
              f"{sampler} / ddim = {t_tile / t_ddim:.2f}")
    t_big, r = timed(lambda: generate(model, size=(args.big, args.big), steps=steps, omega=omega, seed=0,
                                      sampler=sampler), 1)
    print(f"{args.big} px with generated mask: {t_big:6.2f} s   [mask {r.seconds.get('mask_s', 0):.2f} s, "
          f"tissue {r.seconds['tissue_s']:.2f} s, decode {r.seconds['decode_s']:.2f} s, "
          f"{r.stats.cost_vs_tiling:.2f}x tiling]   target <= 60 s")


if __name__ == "__main__":
    main()
