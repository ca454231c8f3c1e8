"""Costs of the canvas layer (issue 5): store I/O without a model, then tile generation with one.

1. An empty 2**20 x 2**20 px canvas: creation time and bytes on disk.
2. Reads of never-generated areas (what napari does at startup and when panning to new places): one tile at
   level 0 (plain and painted placeholder), the whole-canvas level, and a 1920 x 1080 view through the level-0
   dask array and through the array-like level (one read per view). napari runs these on the GUI thread.
3. Writes per tile with synthetic pixels (no model): latents chunk, level-0 tile, pyramid update through all
   12 levels, status; then the same reads over generated tiles, and reopening the canvas.
4. Generation with a model on the worker thread (``--model``: "tiny" = a random tiny network, the default;
   "embedded"; or a model folder), while this (main) thread runs a 10 ms heartbeat like a GUI event loop:
   tiles per second and the longest heartbeat gap, against the same heartbeat with an idle worker.

    python benchmarks/canvas_store.py                       # tiny model, 6 tiles
    python benchmarks/canvas_store.py --model embedded --tiles 12
    python benchmarks/canvas_store.py --threads 2 --dir /data/tmp

Timings are medians of ``--repeat`` runs (ms unless stated). On a machine shared with other jobs they wander;
compare numbers taken in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 2)


def folder_bytes(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def synthetic_tile(i: int, j: int, t: int = 512) -> np.ndarray:
    """An H&E-like 512 px RGB tile, deterministic in its canvas position (compresses like real tissue)."""
    y = np.arange(i * t, (i + 1) * t, dtype=np.float32)[:, None]
    x = np.arange(j * t, (j + 1) * t, dtype=np.float32)[None, :]
    field = np.sin(y / 211.0) * np.cos(x / 173.0) + 0.5 * np.sin((x + y) / 97.0)
    nuclei = (np.sin(y / 7.3) * np.sin(x / 6.1) > 0.6).astype(np.float32)
    h = (y.astype(np.uint32) * np.uint32(73856093)) ^ (x.astype(np.uint32) * np.uint32(19349663))
    noise = ((h * np.uint32(2654435761)) >> np.uint32(24)).astype(np.float32) / 128.0 - 1.0
    rgb = np.stack([225 - 35 * field - 90 * nuclei, 170 - 45 * field - 110 * nuclei, 205 - 20 * field - 40 * nuclei])
    return np.clip(np.moveaxis(rgb, 0, -1) + 6 * noise[..., None], 0, 255).astype(np.uint8)


def store_io(root: Path, repeat: int, side: int) -> dict:
    from napari_diffinfinite.canvas import CanvasStore

    out: dict = {}
    t = time.perf_counter()
    store = CanvasStore.create(root / "io", shape_px=(side, side), model_name="synthetic",
                               settings={"num_classes": 5}, latent_channels=8)
    out["create_s"] = round(time.perf_counter() - t, 3)
    out["empty_bytes"], out["empty_files"] = folder_bytes(root / "io")
    g = store.grid
    c = side // 2
    store.write_labels(c // 8, c // 8 + 64, np.full((64, 64), 2))  # paint one tile right of the centre

    empty = {
        "level0_tile_plain": median_ms(lambda: store.read_tissue(0, c, c + 512, c - 512, c), repeat),
        "level0_tile_painted": median_ms(lambda: store.read_tissue(0, c, c + 512, c + 512, c + 1024), repeat),
        f"level{g.levels - 1}_whole_canvas": median_ms(
            lambda: store.read_tissue(g.levels - 1, 0, 512, 0, 512), repeat),
        "dask_view_1920x1080_level0": median_ms(
            lambda: np.asarray(store.tissue_dask(0)[c - 540 : c + 540, c - 960 : c + 960]), repeat),
        "array_like_view_1920x1080_level0": median_ms(
            lambda: np.asarray(store.tissue_level(0)[c - 540 : c + 540, c - 960 : c + 960]), repeat),
        "dask_view_1920x1080_level4": median_ms(
            lambda: np.asarray(store.tissue_dask(4)[(c >> 4) - 540 : (c >> 4) + 540,
                                                    (c >> 4) - 960 : (c >> 4) + 960]), repeat),
    }
    out["read_not_generated_ms"] = empty

    # write an 8 x 8 block of tiles around the centre, as the scheduler does (no model)
    ci, cj = g.px_to_tile(c, c)
    keys = [(ci - 4 + a, cj - 4 + b) for a in range(8) for b in range(8)]
    rng = np.random.default_rng(0)
    lat = rng.standard_normal((8, 64, 64)).astype(np.float32) * 0.5
    costs: dict[str, list[float]] = {"latents": [], "level0": [], "pyramid": [], "status": []}
    for key in keys:
        tile = synthetic_tile(*key)
        for name, fn in (
            ("latents", lambda key=key: store.write_latents(key, lat)),
            ("level0", lambda key=key, tile=tile: store.write_tissue(g.tile_rect(key), tile)),
            ("pyramid", lambda key=key: store.update_pyramid(g.tile_rect(key))),
            ("status", lambda key=key: store.set_status(key, 2)),
        ):
            t = time.perf_counter()
            fn()
            costs[name].append((time.perf_counter() - t) * 1000)
    out["write_per_tile_ms"] = {k: round(statistics.median(v), 2) for k, v in costs.items()}
    out["write_per_tile_ms"]["total"] = round(sum(out["write_per_tile_ms"].values()), 2)

    y0, x0 = (ci - 4) * 512, (cj - 4) * 512
    out["read_generated_ms"] = {
        "level0_tile": median_ms(lambda: store.read_tissue(0, y0, y0 + 512, x0, x0 + 512), repeat),
        "dask_view_1920x1080_level0": median_ms(
            lambda: np.asarray(store.tissue_dask(0)[y0 + 200 : y0 + 1280, x0 + 100 : x0 + 2020]), repeat),
        "array_like_view_1920x1080_level0": median_ms(
            lambda: np.asarray(store.tissue_level(0)[y0 + 200 : y0 + 1280, x0 + 100 : x0 + 2020]), repeat),
        "dask_view_1920x1080_level1": median_ms(
            lambda: np.asarray(store.tissue_dask(1)[y0 // 2 : y0 // 2 + 1080, x0 // 2 : x0 // 2 + 1920]), repeat),
    }
    bytes_, files = folder_bytes(root / "io")
    out["bytes_per_tile"] = int((bytes_ - out["empty_bytes"]) / len(keys))
    out["files_after_64_tiles"] = files
    store.close()
    t = time.perf_counter()
    CanvasStore.open(root / "io").close()
    out["reopen_s"] = round(time.perf_counter() - t, 3)
    return out


def write_tiny_model(folder: Path) -> Path:
    """A random tiny model folder (the test suite's shape): for timing the machinery, not the network."""
    import torch

    from napari_diffinfinite.model import CompactAutoencoder, ImageUnet, save_unet

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    CompactAutoencoder(widths=(8, 8, 8)).save(folder / "autoencoder.safetensors")
    save_unet(ImageUnet(dim=8, num_classes=5, dim_mults=(1, 2), channels=4), folder / "image.safetensors")
    (folder / "model.json").write_text(json.dumps({
        "name": "tiny-benchmark-model", "contexts": ["adenocarcinoma"], "default_steps": 3, "default_omega": 3.0,
        "autoencoder": {"type": "compact", "file": "autoencoder.safetensors"},
        "image": {"file": "image.safetensors", "window": 16}, "pixel_size_um": 0.5,
    }))
    return folder


class Heartbeat:
    """A 10 ms timer on this thread, like a GUI event loop; records how late each beat is."""

    def __init__(self, period: float = 0.01):
        self.period = period
        self.gaps: list[float] = []

    def run(self, seconds: float, stop: threading.Event | None = None) -> dict:
        end = time.perf_counter() + seconds
        last = time.perf_counter()
        while time.perf_counter() < end and not (stop is not None and stop.is_set()):
            time.sleep(self.period)
            now = time.perf_counter()
            self.gaps.append((now - last) * 1000)
            last = now
        g = np.array(self.gaps) if self.gaps else np.zeros(1)
        return {"beats": len(self.gaps), "max_gap_ms": round(float(g.max()), 1),
                "p99_gap_ms": round(float(np.percentile(g, 99)), 1)}


def generation(root: Path, model_spec: str, tiles: int, threads: int) -> dict:
    import torch

    from napari_diffinfinite.canvas import CanvasStore, TileScheduler
    from napari_diffinfinite.generation import load_model

    torch.set_num_threads(threads)
    spec = write_tiny_model(root / "tiny-model") if model_spec == "tiny" else model_spec
    t = time.perf_counter()
    model = load_model(spec, device="cpu")
    load_s = time.perf_counter() - t
    store = CanvasStore.create_for_model(root / "gen", model)
    c = store.grid.height // 2
    lh = 1080 // 2
    labels = np.ones((2 * lh // 8 + 64, 1920 // 8 + 64), np.uint8)
    labels[:, labels.shape[1] // 2 :] = min(3, model.num_classes - 1)
    store.write_labels((c - lh) // 8, (c - 960) // 8, labels)
    done: list = []
    first = threading.Event()
    sched = TileScheduler(store, model, on_tile_done=lambda k: (done.append(time.perf_counter()), first.set()))
    idle = Heartbeat().run(1.0)
    sched.start()
    t0 = time.perf_counter()
    requested = sched.request_view(0, (c - 540, c + 540, c - 960, c + 960))[:tiles]
    sched.clear_view()
    sched.request_tiles(requested)
    finished = threading.Event()

    def waiter():
        sched.wait_idle()
        finished.set()

    threading.Thread(target=waiter, daemon=True).start()
    busy = Heartbeat().run(3600, stop=finished)
    total = time.perf_counter() - t0
    sched.stop()
    stats = sched.stats
    store.close()
    return {
        "model": model.name, "torch_threads": threads, "model_load_s": round(load_s, 2), "tiles": len(done),
        "first_tile_s": round(done[0] - t0, 2) if done else None, "seconds": round(total, 2),
        "tiles_per_second": round(len(done) / total, 3), "borders_redecoded": stats.borders_redecoded,
        "heartbeat_idle_worker": idle, "heartbeat_while_generating": busy,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", help='"tiny" (random, default), "embedded", or a model folder')
    p.add_argument("--tiles", type=int, default=6, help="tiles to generate with the model (0: skip)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for generation")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--side", type=int, default=2**20, help="canvas side in px for the I/O part")
    p.add_argument("--dir", default=None, help="where to put the temporary canvases")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="canvas-bench-") as tmp:
        root = Path(tmp)
        result = {"cpu_count": os.cpu_count(), "store_io": store_io(root, args.repeat, args.side)}
        if args.tiles > 0:
            result["generation"] = generation(root, args.model, args.tiles, args.threads)
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
