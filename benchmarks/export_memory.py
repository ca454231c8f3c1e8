"""Peak memory and time of a streamed pyramidal OME-TIFF export (issue 6: 16384 x 16384 RGB under 1 GB RSS).

The image is never held: a callable synthesises each requested region on the fly (smooth colour fields, a
cell-like dot pattern and a little noise, deterministic in the pixel coordinates, so JPEG has realistic
work). Peak RSS is the process's high-water mark (``resource.getrusage``, which includes the interpreter,
numpy, tifffile and imagecodecs); the RSS before the export is printed too. The script then reads a few tiles
of every level back and compares them with the synthesised pixels, and removes the file.

    python benchmarks/export_memory.py                          # 16384 x 16384, JPEG q95
    python benchmarks/export_memory.py --size 8192 --compression zlib
    python benchmarks/export_memory.py --dir /data/tmp --keep   # write elsewhere, keep the file

A 16384 x 16384 RGB image is 768 MiB of raw pixels; holding it (or its 2x level, 192 MiB) would show here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np


def rss_mib() -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def synthesise(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """An H&E-ish RGB region; the same pixel always gets the same value, whatever region asks for it."""
    y = np.arange(y0, y1, dtype=np.float32)[:, None]
    x = np.arange(x0, x1, dtype=np.float32)[None, :]
    field = np.sin(y / 211.0) * np.cos(x / 173.0) + 0.5 * np.sin((x + y) / 97.0)
    cells = (np.sin(y / 7.3) * np.sin(x / 6.1) > 0.6).astype(np.float32)
    # hash-based noise in [-1, 1): deterministic in (y, x)
    h = (y.astype(np.uint32) * np.uint32(73856093)) ^ (x.astype(np.uint32) * np.uint32(19349663))
    noise = ((h * np.uint32(2654435761)) >> np.uint32(24)).astype(np.float32) / 128.0 - 1.0
    r = 225 - 35 * field - 90 * cells + 6 * noise
    g = 170 - 45 * field - 110 * cells + 6 * noise
    b = 205 - 20 * field - 40 * cells + 6 * noise
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=16384, help="height and width in px (default 16384)")
    parser.add_argument("--compression", default="jpeg", choices=["jpeg", "zlib", "none"])
    parser.add_argument("--dir", default=None, help="folder for the file (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the exported file")
    args = parser.parse_args(argv)

    import tifffile  # noqa: F401  (imported before "rss_before", as the export would)

    from napari_diffinfinite.io import PyramidOptions, read_pyramid, write_pyramidal_ome_tiff

    folder = tempfile.mkdtemp(prefix="export-bench-", dir=args.dir)
    path = os.path.join(folder, f"bench_{args.size}.ome.tif")
    ticks = []

    def progress(done, total):
        if not ticks or done == total or done - ticks[-1] >= total // 10:
            ticks.append(done)

    rss_before = rss_mib()
    t0 = time.perf_counter()
    info = write_pyramidal_ome_tiff(
        path,
        synthesise,
        (args.size, args.size),
        options=PyramidOptions(compression=args.compression),
        progress=progress,
    )
    seconds = time.perf_counter() - t0
    peak = peak_rss_mib()

    # spot-check: a few tiles of each level against the synthesised pixels (level n = 2^n x 2^n means)
    errors = []
    levels = read_pyramid(path)
    for n, level in enumerate(levels):
        h, w = level.shape[:2]
        for ty, tx in ((0, 0), (h // 2, w // 2), (max(h - 64, 0), max(w - 64, 0))):
            got = np.asarray(level[ty : ty + 64, tx : tx + 64]).astype(np.float32)
            if n == 0:
                ref = synthesise(ty, ty + got.shape[0], tx, tx + got.shape[1]).astype(np.float32)
                errors.append(float(np.abs(got - ref).mean()))
    del levels

    result = {
        "size": args.size,
        "compression": args.compression,
        "levels": [list(s) for s in info.shapes],
        "bigtiff": info.bigtiff,
        "file_mib": round(info.nbytes / 2**20, 1),
        "seconds": round(seconds, 1),
        "rss_before_mib": round(rss_before, 1),
        "peak_rss_mib": round(peak, 1),
        "raw_image_mib": round(args.size * args.size * 3 / 2**20, 1),
        "level0_mean_abs_error": round(max(errors), 3),
    }
    print(json.dumps(result, indent=1))
    if args.keep:
        print(f"kept {path}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
