"""Peak memory and time of the tiled decode (``decode_full``) at two image sizes.

Shows that the decode's peak memory does not grow with the image beyond the output buffer: each size runs in
a fresh subprocess, which resets the kernel's peak-RSS counter (``/proc/self/clear_refs``) just before the
decode and reads ``VmHWM`` after it. "beyond output" = peak RSS during the decode - RSS before it - the
float32 output buffer (3 x H x W x 4 bytes). Random weights (memory and time do not depend on them).

    python benchmarks/decode_memory.py                       # 2048 and 4096 px, CompactAutoencoder, tile 64
    python benchmarks/decode_memory.py --sizes 1024 2048 --whole   # also the untiled whole-latent decode
    python benchmarks/decode_memory.py --mmap-threshold 65536      # RSS without glibc heap growth

With glibc's default (dynamic) mmap threshold, tile-sized buffers freed after the first tiles are later
served from the heap, which grows with fragmentation; the RSS "beyond output" then creeps up by some 100 MiB
between sizes. A fixed threshold shows the decode's own peak, which is flat.

Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def child(args: argparse.Namespace) -> dict:
    import torch

    from napari_diffinfinite.model import CompactAutoencoder
    from napari_diffinfinite.sampling.decode import decode_full

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ae = CompactAutoencoder(widths=tuple(args.widths)).eval()
    n = args.size // ae.downsampling
    latents = torch.rand(1, ae.latent_channels, n, n, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():  # warm up kernels and allocator on one tile, outside the measurement
        ae.decode(latents[..., : args.tile, : args.tile])
    before = _status_kib("VmRSS")
    _reset_peak()
    start = time.perf_counter()
    if args.whole:
        image = ae.decode(latents)
    else:
        image = decode_full(ae, latents, tile=args.tile)
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    out_mib = image.numel() * image.element_size() / 2**20
    return {
        "mode": "whole" if args.whole else "tiled",
        "size": args.size,
        "latent": n,
        "seconds": seconds,
        "rss_before_mib": before / 1024,
        "peak_rss_mib": peak / 1024,
        "output_mib": out_mib,
        "decode_peak_mib": (peak - before) / 1024,
        "beyond_output_mib": (peak - before) / 1024 - out_mib,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096], help="image sizes in pixels")
    parser.add_argument("--tile", type=int, default=64, help="decode tile in latent pixels (default 64)")
    parser.add_argument("--widths", type=int, nargs=3, default=[32, 64, 96],
                        help="CompactAutoencoder widths (default: its defaults, 32 64 96)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--whole", action="store_true",
                        help="also decode each latent in one call (no tiling), for comparison")
    parser.add_argument("--mmap-threshold", type=int, metavar="BYTES",
                        help="run the decodes with MALLOC_MMAP_THRESHOLD_=BYTES (glibc): freed tile buffers "
                             "go back to the system at once, so RSS shows the decode's own peak, not heap "
                             "growth")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(child(args)))
        return

    rows = []
    for size in args.sizes:
        for whole in ([False, True] if args.whole else [False]):
            cmd = [sys.executable, __file__, "--child", "--size", str(size), "--tile", str(args.tile),
                   "--threads", str(args.threads), "--widths", *map(str, args.widths)]
            if whole:
                cmd.append("--whole")
            env = dict(os.environ)
            if args.mmap_threshold is not None:
                env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode:
                sys.exit(f"child for {size} px failed:\n{done.stderr}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))

    print(f"decode_full, CompactAutoencoder(widths={tuple(args.widths)}), tile {args.tile} latents, "
          f"{args.threads} thread(s), CPU, "
          + ("glibc default malloc" if args.mmap_threshold is None
             else f"MALLOC_MMAP_THRESHOLD_={args.mmap_threshold}"))
    header = (f"{'mode':>6} {'image px':>9} {'latent':>7} {'seconds':>8} {'output MiB':>11} "
              f"{'decode peak MiB':>16} {'beyond output MiB':>18}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['mode']:>6} {r['size']:>9} {r['latent']:>7} {r['seconds']:>8.1f} {r['output_mib']:>11.0f} "
              f"{r['decode_peak_mib']:>16.0f} {r['beyond_output_mib']:>18.0f}")


if __name__ == "__main__":
    main()
