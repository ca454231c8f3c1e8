"""Quality of a model (issue 4, "Quality, measured"): reconstruction PSNR, per-class colour (CIE76 Delta E)
and texture (Laplacian energy ratio) against the held-out patches, class dependence, anti-copying
nearest-neighbour distances, and the seam ratio of large images. Prints a table, writes a JSON report and a
per-class sample grid.

    python benchmarks/quality.py                                   # the embedded model, its holdout.json
    python benchmarks/quality.py --model runs/my-model --seeds 0 1 2 --steps 25 --size 2048 \\
        --out report.json --grid grid.png

Issue 15's figures, beside the training data's own (added to the printout and to the JSON report when asked):

    python benchmarks/quality.py --nuclear --realism            # with the measurements above
    python benchmarks/quality.py --nuclear --realism --skip-standard --limit 20 --threads 1   # a quick look

``--nuclear``: nuclear structure (haematoxylin-positive area, nucleus-like blobs per Mpx, per class, 128-px
cell occupancy) of one image per training mask (seed = index) against the training patches, the same for the
held-out masks, and the autoencoder's reconstructions of the training patches (the ceiling). ``--realism``: a
classifier two-sample test (small CNN, 96-px crops, split by image, mean of two seeds; about a minute per
classifier on one thread) for the generated images, the reconstructions and two halves of the training
patches. ``--limit N``: only N of the training patches (evenly spaced) for both.

Exit status: 0 when it ran (whatever the figures), 2 for bad arguments or data. ``--strict`` makes a failed
target exit 1. The figures depend on the seeds and steps; state them with the numbers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from napari_diffinfinite.evaluation import (
    evaluate,
    evenly_spaced,
    format_nuclear,
    format_realism,
    format_report,
    generate_from_masks,
    load_holdout,
    nuclear_report,
    realism_report,
    reconstruct,
    reconstruction_nuclear,
    split_holdout,
    write_report,
)

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
    p.add_argument("--nuclear", action="store_true", help="issue 15's nuclear-structure figures: one image "
                   "per training and held-out mask, against the patches; and the autoencoder's "
                   "reconstructions")
    p.add_argument("--realism", action="store_true", help="issue 15's classifier two-sample tests: generated "
                   "images, reconstructions and half the training patches against the training patches")
    p.add_argument("--limit", type=int, default=None, help="--nuclear / --realism: only N training patches, "
                   "evenly spaced over the sorted list (default: all)")
    p.add_argument("--realism-seeds", type=int, nargs="+", default=[0, 1],
                   help="classifier seeds of --realism (default: 0 1)")
    p.add_argument("--skip-standard", action="store_true", help="only the figures of --nuclear / --realism, "
                   "not the issue-4 evaluation (no grid is written)")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 2:
        p.error("--limit needs at least 2 training patches")
    if args.skip_standard and not (args.nuclear or args.realism):
        p.error("--skip-standard needs --nuclear or --realism")
    return args


def _log(message: str) -> None:
    print(message, flush=True)


def issue15_figures(args, model, patches, held_out) -> tuple[dict, list[str], dict]:
    """The --nuclear / --realism figures: ``(report sections, printed tables, seconds)``."""
    held, train = split_holdout(patches, held_out)
    train = evenly_spaced(train, args.limit)
    sections, text = {}, []
    t = time.perf_counter()
    generated = generate_from_masks(model, train, seed0=0, steps=args.steps, sampler=args.sampler,
                                    omega=args.omega, log=_log)
    reconstructions = [reconstruct(model.autoencoder, p.image) for p in train]
    seconds = {"generate_train_masks_s": time.perf_counter() - t}
    if args.nuclear:
        t = time.perf_counter()
        nuclear = nuclear_report(model, train, held, seed0=0, steps=args.steps, sampler=args.sampler,
                                 omega=args.omega, generated={"train": generated}, log=_log)
        nuclear["autoencoder"] = reconstruction_nuclear(model.autoencoder, train, images=reconstructions,
                                                        num_classes=model.num_classes)
        nuclear["settings"]["limit"] = args.limit
        sections["nuclear"] = nuclear
        seconds["nuclear_s"] = time.perf_counter() - t
        text.append(format_nuclear(nuclear, autoencoder=nuclear["autoencoder"]))
    if args.realism:
        t = time.perf_counter()
        realism = realism_report([p.image for p in train], generated, reconstructions,
                                 seeds=args.realism_seeds, log=_log)
        realism["settings"]["limit"] = args.limit
        sections["realism"] = realism
        seconds["realism_s"] = time.perf_counter() - t
        text.append(format_realism(realism))
    return sections, text, seconds


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
        result = None
        if not args.skip_standard:
            result = evaluate(model, patches, held_out, seeds=args.seeds, steps=args.steps, omega=args.omega,
                              sampler=args.sampler,
                              size=args.size, class_size=args.class_size, seam_tile=args.seam_tile)
        extra, extra_text, extra_seconds = {}, [], {}
        if args.nuclear or args.realism:
            extra, extra_text, extra_seconds = issue15_figures(args, model, patches, held_out)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if result is not None:
        report = result.report
    else:
        omega = model.default_omega if args.omega is None else args.omega
        report = {"model": model.name, "seconds": {},
                  "settings": {"steps": args.steps or model.default_steps,
                               "sampler": args.sampler or model.sampler, "omega": omega}}
    report.update(extra)
    report["seconds"].update(extra_seconds)
    report["seconds"]["total_s"] = time.perf_counter() - t
    report["settings"].update(data=str(args.data), holdout_file=str(holdout),
                              threads=torch.get_num_threads(), device=str(model.device))
    if result is not None:
        print()
        print(format_report(report))
    for block in extra_text:
        print()
        print(block)
    write_report(report, args.out)
    wrote = str(args.out)
    if result is not None:
        result.grid.save(args.grid)
        wrote += f" and {args.grid}"
    print(f"\nwrote {wrote} ({report['seconds']['total_s']:.0f} s)")
    failed = [k for k, v in report.get("summary", {}).items() if v["pass"] is False]
    nuclear_train = (report.get("nuclear") or {}).get("train")
    if nuclear_train is not None and nuclear_train["pass"]["all"] is False:
        failed.append("nuclear_structure")
    if failed:
        print("missed targets: " + ", ".join(failed))
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
