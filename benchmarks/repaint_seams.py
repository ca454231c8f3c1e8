"""Seams around a local repaint (issue 17): is the edge of a repainted region as invisible as a tile join?

A 1024 px canvas (2 x 2 tiles) is generated with a real sample mask (mirrored to fill it). A square of
``--side`` latents at its centre (across the tile corner) is painted with another class and then back to its
old labels: each edit repaints the square and ``margin`` latents around it, so the second leaves tissue of the
same labels on both sides of the repaint's edge, and any edge that is left is a seam.

Figure: the mean absolute pixel difference across the four sides of the repainted rectangle (2 px band), over
the mean difference everywhere else in the image, the same ratio as ``sampling.seams.seam_ratio`` for tile
joins. The same rectangle on the canvas before the edits is the baseline of the same run (content only). Means
over masks x seeds with their standard error, for each margin. Target: <= 1.10.

    python benchmarks/repaint_seams.py                    # the embedded model, 2 torch threads
    python benchmarks/repaint_seams.py --margins 0 2 4 --seeds 0 1 2 --side 24
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_diffinfinite.canvas import CanvasStore, Rect, TileScheduler
from napari_diffinfinite.generation import load_model
from napari_diffinfinite.label_grid import labels_at_cell_centres

sys.path.insert(0, str(Path(__file__).resolve().parent))
from context_seams import mirrored  # the benchmarks' real sample masks, mirrored across x = 512


def canvas_mask(index: int) -> np.ndarray:
    """A real 512 px sample mask mirrored to 1024 x 1024 px (labels run on across the tile joins)."""
    row = mirrored(index)
    return np.concatenate([row, row[::-1]], axis=0)


def edge_ratio(image: np.ndarray, rect: Rect, band: int = 2) -> float:
    """Mean |difference| across the sides of ``rect`` (px, within ``band`` of them) / the mean elsewhere."""
    img = image.astype(np.float32).mean(-1)
    dx, dy = np.abs(np.diff(img, axis=1)), np.abs(np.diff(img, axis=0))  # dx[:, k]: between columns k and k+1
    on_x = np.zeros(dx.shape, bool)
    on_y = np.zeros(dy.shape, bool)
    for x in (rect.x0, rect.x1):  # a side between columns x - 1 and x
        on_x[rect.y0:rect.y1, max(0, x - band):x + band - 1] = True
    for y in (rect.y0, rect.y1):
        on_y[max(0, y - band):y + band - 1, rect.x0:rect.x1] = True
    inside = np.concatenate([dx[on_x], dy[on_y]])
    outside = np.concatenate([dx[~on_x], dy[~on_y]])
    return float(inside.mean() / outside.mean())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--masks", type=int, nargs="+", default=[0, 3, 5], help="indices of the sample masks")
    p.add_argument("--margins", type=int, nargs="+", default=[0, 2, 4], help="repaint margins (latents)")
    p.add_argument("--side", type=int, default=16, help="side of the painted square (latents)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu")
    d = model.downsampling
    print(f"model {args.model}, {model.default_steps} steps, sampler {model.sampler}; a {args.side} x {args.side} "
          f"latent square ({args.side * d} px) at the canvas centre, painted and painted back; masks {args.masks}, "
          f"seeds {args.seeds}", flush=True)
    ratios: dict[str, list[float]] = {"before (no repaint)": []} | {f"margin {m}": [] for m in args.margins}
    seconds = {m: [] for m in args.margins}
    with tempfile.TemporaryDirectory() as tmp:
        for index in args.masks:
            labels = labels_at_cell_centres(canvas_mask(index), d).astype(np.uint8)
            for seed in args.seeds:
                base = Path(tmp) / f"base-{index}-{seed}"
                store = CanvasStore.create_for_model(base, model, shape_px=(1024, 1024), seed=seed)
                store.write_labels(0, 0, labels)
                sched = TileScheduler(store, model)
                sched.request_view(0, (0, 1024, 0, 1024))
                sched.run_until_idle()
                before = store.read_tissue(0, 0, 1024, 0, 1024)
                store.close()
                c = 512 // d
                square = Rect(c - args.side // 2, c + (args.side + 1) // 2, c - args.side // 2, c + (args.side + 1) // 2)
                old = labels[square.slices]
                other = np.full(old.shape, 2 if (old != 2).mean() > 0.5 else 4, np.uint8)
                for m in args.margins:
                    folder = Path(tmp) / f"m{m}-{index}-{seed}"
                    shutil.copytree(base, folder)
                    store = CanvasStore.open(folder, "r+")
                    sched = TileScheduler(store, model, repaint_margin=m)
                    t0 = time.perf_counter()
                    for new in (other, old):
                        sched.write_labels(square.y0, square.x0, new)
                        sched.run_until_idle()
                    seconds[m].append((time.perf_counter() - t0) / 2)
                    after = store.read_tissue(0, 0, 1024, 0, 1024)
                    store.close()
                    px = Rect(*(v * d for v in square.grow(m)))
                    ratios[f"margin {m}"].append(edge_ratio(after, px))
                    if m == args.margins[0]:
                        ratios["before (no repaint)"].append(edge_ratio(before, px))
                print(f"mask {index} seed {seed}: " + "  ".join(f"{k} {v[-1]:.3f}" for k, v in ratios.items()),
                      flush=True)
    print("\nedge ratio of the repainted rectangle, mean +- standard error over masks x seeds (target <= 1.10):")
    for k, v in ratios.items():
        a = np.asarray(v)
        note = f"  ({np.mean(seconds[int(k.split()[1])]):.2f} s per repaint)" if k.startswith("margin") else ""
        print(f"  {k:20s} {a.mean():.3f} +- {a.std(ddof=1) / np.sqrt(len(a)):.3f}{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
