"""Blocks per second of the distributed wavefront (issue 7) on a LocalCluster of 1 and of 2 worker processes.

One canvas of ``--grid`` x ``--grid`` blocks of ``--block`` latents is generated from a painted mask (no mask
sampling in the timing) with :func:`napari_diffinfinite.distributed.generate_canvas`, once per worker count,
each into a fresh canvas folder. Every worker has one task thread and one torch thread. Reported per worker
count: the wavefront time (first block submitted to last block decoded), sampled blocks per second, and the
summed time inside tasks (sampling, decoding); then the 2-worker / 1-worker ratio next to two bounds:

- the cores: this machine's count (2 here, shared with whatever else runs);
- the wavefront: with N workers, colour ``c`` (``w_c`` blocks, see ``wave_widths``) takes ``ceil(w_c / N)``
  block times at best, so the speed-up is at most ``blocks / sum_c ceil(w_c / N)`` (1.71 for 6 x 6 on 2
  workers).

The single-process :func:`~napari_diffinfinite.generation.generate` time of the same image (this process, one
torch thread) is the reference the 1-worker run's overhead is measured against, and both images are compared.

    python benchmarks/distributed_scaling.py                        # "small" random model, 6 x 6 blocks of 32
    python benchmarks/distributed_scaling.py --model tiny --grid 4   # machinery only (tiny network)
    python benchmarks/distributed_scaling.py --model embedded --block 64 --grid 4 --json out.json

The networks are random (``small``/``tiny``): timing, not quality. On a machine shared with other jobs the
figures wander; compare numbers from the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = {
    # name: (autoencoder widths, image UNet dim, dim_mults, window, default steps)
    "tiny": ((8, 8, 8), 8, (1, 2), 16, 3),
    "small": ((16, 16, 16), 32, (1, 2), 32, 10),
}


def write_random_model(folder: Path, kind: str) -> Path:
    """A random model folder of the given size (model.json + safetensors, as training writes it)."""
    import torch

    from napari_diffinfinite.model import CompactAutoencoder, ImageUnet, save_unet

    widths, dim, mults, window, steps = MODELS[kind]
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    CompactAutoencoder(widths=widths).save(folder / "autoencoder.safetensors")
    save_unet(ImageUnet(dim=dim, num_classes=5, dim_mults=mults, channels=4), folder / "image.safetensors")
    (folder / "model.json").write_text(json.dumps({
        "name": f"{kind}-random-benchmark-model", "contexts": ["adenocarcinoma"], "default_steps": steps,
        "default_omega": 3.0, "autoencoder": {"type": "compact", "file": "autoencoder.safetensors"},
        "image": {"file": "image.safetensors", "window": window}, "pixel_size_um": 0.5,
    }))
    return folder


def painted_mask(h: int, w: int) -> np.ndarray:
    """Stripes and a disc of 4 classes over background: every block sees 1-3 labels."""
    y, x = np.mgrid[0:h, 0:w]
    mask = ((x // max(1, w // 4)) % 4 + 1).astype(np.int64)
    mask[(y - h / 2) ** 2 + (x - w / 2) ** 2 < (min(h, w) / 4) ** 2] = 0
    return mask


def wavefront_bound(rows: int, cols: int, workers: int) -> float:
    from napari_diffinfinite.distributed import wave_widths

    return rows * cols / sum(math.ceil(w / workers) for w in wave_widths(rows, cols))


def run(args) -> dict:
    import torch

    from napari_diffinfinite.distributed import connect, generate_canvas
    from napari_diffinfinite.generation import generate, load_model

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="distributed-scaling-", dir=args.dir))
    spec = write_random_model(root / "model", args.model) if args.model in MODELS else args.model
    model = load_model(spec, device="cpu")
    d = model.downsampling
    side = args.grid * args.block * d
    mask = painted_mask(side, side)
    out: dict = {"model": model.name, "grid": [args.grid, args.grid], "block_latents": args.block,
                 "image_px": [side, side], "steps": args.steps or model.default_steps,
                 "cpu_cores": os.cpu_count()}

    t = time.perf_counter()
    reference = generate(model, mask=mask, seed=args.seed, block=args.block, steps=args.steps)
    out["single_process_s"] = round(time.perf_counter() - t, 2)
    out["single_process_blocks_per_s"] = round(args.grid**2 / out["single_process_s"], 3)
    print(f"{model.name}: {side} x {side} px, {args.grid} x {args.grid} blocks of {args.block} latents, "
          f"{out['steps']} steps")
    print(f"  single process (1 torch thread): {out['single_process_s']:.1f} s, "
          f"{out['single_process_blocks_per_s']:.2f} blocks/s")

    runs = {}
    for n in args.workers:
        t = time.perf_counter()
        with connect(workers=n, dashboard=False) as client:
            client.wait_for_workers(n, timeout=300)
            start_s = time.perf_counter() - t
            # warm-up: loads the model on every worker (the plugin) and imports everything once
            generate_canvas(client, spec, root / f"warm-{n}", mask=mask[: args.block * d, : args.block * d],
                            seed=args.seed, block=args.block, steps=args.steps, torch_threads=1)
            result = generate_canvas(client, spec, root / f"canvas-{n}", mask=mask, seed=args.seed,
                                     block=args.block, steps=args.steps, torch_threads=1)
            same = bool(np.array_equal(result.image(), reference.image))
        runs[n] = {
            "cluster_start_s": round(start_s, 2),
            "wavefront_s": round(result.wavefront_seconds, 2),
            "blocks_per_s": round(result.blocks_per_second, 3),
            "sampling_task_s": round(result.task_seconds["block"], 2),
            "decode_task_s": round(result.task_seconds["decode"], 2),
            "workers_used": len(result.workers),
            "equals_single_process": same,
        }
        print(f"  {n} worker{'s' if n > 1 else ''}: {result.wavefront_seconds:.1f} s wavefront, "
              f"{result.blocks_per_second:.2f} blocks/s (tasks: sampling "
              f"{result.task_seconds['block']:.1f} s, decode {result.task_seconds['decode']:.1f} s; "
              f"cluster start {start_s:.1f} s); "
              f"equals single process: {same}")
    out["runs"] = {str(k): v for k, v in runs.items()}
    if 1 in runs and 2 in runs:
        ratio = runs[2]["blocks_per_s"] / runs[1]["blocks_per_s"]
        bound = wavefront_bound(args.grid, args.grid, 2)
        out["ratio_2_vs_1"] = round(ratio, 2)
        out["wavefront_bound_2"] = round(bound, 2)
        print(f"  2 / 1 workers: {ratio:.2f}x (bounds: {min(2, os.cpu_count() or 1)} cores, "
              f"{bound:.2f}x from the wavefront of {args.grid} x {args.grid} blocks)")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="small",
                   help='"small" (random, default), "tiny", "embedded" or a model folder')
    p.add_argument("--grid", type=int, default=6, help="blocks per side (default 6)")
    p.add_argument("--block", type=int, default=32, help="block side in latents (default 32 = 256 px)")
    p.add_argument("--steps", type=int, help="DDIM steps (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--dir", help="where the canvases go (default: the system temp folder)")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    out = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":  # the guard matters: worker processes are spawned and re-import the main module
    sys.exit(main())
