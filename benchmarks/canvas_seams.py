"""Seams of the napari canvas (issues 3 and 5): the demo canvas generated tile by tile, as the plugin does it
(centre first, each tile with its generated neighbours as fixed context), then the seam ratio at the 512-px tile
boundaries of a 3 x 3-tile area around the mask centre, and the columns / rows with the strongest gradient.

    python benchmarks/canvas_seams.py                  # the embedded model, 2 torch threads
    python benchmarks/canvas_seams.py --model FOLDER --steps 25
    python benchmarks/canvas_seams.py --lookahead 0 --seeds 0 1 2   # compare: tiles sampled to their own edges
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_diffinfinite._sample_data import create_demo_canvas
from napari_diffinfinite.canvas.scheduler import TileScheduler
from napari_diffinfinite.generation import load_model
from napari_diffinfinite.sampling.seams import seam_ratio


def strongest(gradient: np.ndarray, n: int = 5) -> str:
    top = sorted(np.argsort(gradient)[-n:].tolist())
    return ", ".join(f"{k + 1} ({gradient[k] / np.median(gradient):.2f}x)" for k in top)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, help="default: the model's")
    p.add_argument("--lookahead", type=int, help="latents sampled past a tile's free sides (default: the "
                   "canvas default, sampling.blocks.LOOKAHEAD)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="canvas seeds (one canvas each)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu")
    ratios = []
    for seed in args.seeds:
        ratios.append(canvas_seam(model, args, seed))
    if len(ratios) > 1:
        print(f"mean seam ratio over seeds {args.seeds}: {np.mean(ratios):.3f} (target <= 1.10)")
    return 0


def canvas_seam(model, args, seed: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        settings = {"seed": seed}
        if args.steps:
            settings["steps"] = args.steps
        if args.lookahead is not None:
            settings["lookahead"] = args.lookahead
        store, rect = create_demo_canvas(Path(tmp) / "canvas", model, settings=settings)
        tile = store.grid.tile
        cy, cx = (int(c) for c in rect.centre)
        y0, x0 = (cy // tile - 1) * tile, (cx // tile - 1) * tile  # 3 x 3 tiles, the centre tile's corner inside
        scheduler = TileScheduler(store, model)
        scheduler.request_view(0, (y0, y0 + 3 * tile, x0, x0 + 3 * tile))
        t0 = time.perf_counter()
        done = scheduler.run_until_idle()
        seconds = time.perf_counter() - t0
        image = np.asarray(store.read_tissue(0, y0, y0 + 3 * tile, x0, x0 + 3 * tile))[..., :3].astype(np.float32)
    gx = np.abs(np.diff(image, axis=1)).mean(axis=(0, 2))
    gy = np.abs(np.diff(image, axis=0)).mean(axis=(1, 2))
    ratio = seam_ratio(image, tile=tile)
    print(f"model {args.model}, seed {seed}: {len(done)} tiles in {seconds:.1f} s, centre first")
    print(f"seam ratio at the {tile}-px tile boundaries of the 3 x 3 tiles: {ratio:.3f} (target <= 1.10)")
    print(f"strongest columns (boundary at k = between pixel k-1 and k; tiles at {tile}, {2 * tile}): {strongest(gx)}")
    print(f"strongest rows: {strongest(gy)}", flush=True)
    return ratio


if __name__ == "__main__":
    raise SystemExit(main())
