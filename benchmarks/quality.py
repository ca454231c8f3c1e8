"""Quality of a model (issue 4, "Quality, measured"): reconstruction PSNR, per-class colour (CIE76 Delta E)
and texture (Laplacian energy ratio) against the held-out patches, class dependence, anti-copying
nearest-neighbour distances, and the seam ratio of large images. Prints a table, writes a JSON report and a
per-class sample grid.

    python benchmarks/quality.py                                   # the embedded model, its holdout.json
    python benchmarks/quality.py --model runs/my-model --seeds 0 1 2 --steps 25 --size 2048 \\
        --out report.json --grid grid.png

Exit status: 0 when it ran (whatever the figures), 2 for bad arguments or data. ``--strict`` makes a failed
target exit 1. The figures depend on the seeds and steps; state them with the numbers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from napari_diffinfinite.evaluation import evaluate, format_report, load_holdout, write_report

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "diffinfinite-samples" / "patches"


def _model_folder(spec: str) -> Path | None:
    if spec == "embedded":
        from napari_diffinfinite._resources import resource_path

        try:
            return resource_path("models", "embedded")
        except FileNotFoundError:
            return None
    return Path(spec)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded", help="'embedded' or a model folder (with model.json)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="labelled patches: stem.<img> + stem_mask.png (default: %(default)s)")
    p.add_argument("--holdout-file", type=Path,
                   help='JSON {"held_out": [patch names]} (default: holdout.json in the model folder)')
    p.add_argument("--num-classes", type=int, default=5, help="label set of the masks (default: 5)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--omega", type=float, default=None, help="the image model's guidance (default: the model's)")
    p.add_argument("--sampler", default=None, help="the image model's sampler (default: the model's)")
    p.add_argument("--size", type=int, default=2048, help="side of the generated-mask images for the seam "
                   "metric (default: %(default)s)")
    p.add_argument("--class-size", type=int, help="side of the whole-class images (default: the image model's "
                   "window, 512 px for the embedded model)")
    p.add_argument("--seam-tile", type=int, default=512, help="tile of the seam metric in px (default: 512)")
    p.add_argument("--out", type=Path, default=Path("report.json"), help="JSON report (default: %(default)s)")
    p.add_argument("--grid", type=Path, default=Path("grid.png"), help="sample grid PNG (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default=None, help="torch device (default: the package's choice)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from napari_diffinfinite.generation import load_model
    from napari_diffinfinite.training.dataset import DatasetError, scan_folder

    holdout = args.holdout_file
    if holdout is None:
        folder = _model_folder(args.model)
        holdout = None if folder is None else folder / "holdout.json"
        if holdout is None or not holdout.is_file():
            print(f"error: no --holdout-file, and the model has no holdout.json ({holdout})", file=sys.stderr)
            return 2
    try:
        held_out = load_holdout(holdout)
        patches = scan_folder(args.data, args.num_classes)
    except (OSError, ValueError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t = time.perf_counter()
    model = load_model(args.model, device=args.device)
    print(f"model {model.name}: {len(patches)} patches in {args.data}, {len(held_out)} held out ({holdout})",
          flush=True)
    try:
        result = evaluate(model, patches, held_out, seeds=args.seeds, steps=args.steps, omega=args.omega,
                          sampler=args.sampler,
                          size=args.size, class_size=args.class_size, seam_tile=args.seam_tile)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result.report["seconds"]["total_s"] = time.perf_counter() - t
    result.report["settings"].update(data=str(args.data), holdout_file=str(holdout),
                                     threads=torch.get_num_threads(), device=str(model.device))
    print()
    print(format_report(result.report))
    write_report(result.report, args.out)
    result.grid.save(args.grid)
    print(f"\nwrote {args.out} and {args.grid} ({result.report['seconds']['total_s']:.0f} s)")
    failed = [k for k, v in result.report["summary"].items() if v["pass"] is False]
    if failed:
        print("missed targets: " + ", ".join(failed))
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
