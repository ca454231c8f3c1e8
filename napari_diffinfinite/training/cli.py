"""``diffinfinite train autoencoder|image|mask``: argument parsing for the trainers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .dataset import DatasetError, load_class_map, scan_folder, scan_unlabelled
from .loop import TrainConfig


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train the autoencoder, image or mask model on a patch folder")
    p.add_argument("what", choices=["autoencoder"], help="which network to train")
    p.add_argument("--data", required=True, type=Path, help="folder of <stem>.<img> + <stem>_mask.png patches")
    p.add_argument("--unlabelled", type=Path, action="append", default=[], help="folder of images without masks")
    p.add_argument("--class-map", type=Path, help="JSON object mapping mask label ids to model label ids")
    p.add_argument("--num-classes", type=int, default=5)
    p.add_argument("--out", required=True, type=Path, help="run folder; an existing run there is resumed")
    p.add_argument("--holdout-file", type=Path, help="JSON of held-out patch names (created if missing)")
    p.add_argument("--holdout", type=int, default=10, help="patches to hold out when creating the holdout file")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (1 avoids oversubscription beside other work)")
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--sample-every", type=int, default=500)
    p.set_defaults(func=run_train)
    return p


def run_train(args) -> int:
    import torch

    from .autoencoder import split_holdout, train_autoencoder

    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        class_map = load_class_map(args.class_map) if args.class_map else None
        patches = scan_folder(args.data, args.num_classes, class_map)
        unlabelled = [p for folder in args.unlabelled for p in scan_unlabelled(folder)]
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    holdout_file = args.holdout_file or (args.out / "holdout.json")
    train, held_out = split_holdout(patches, holdout_file, args.holdout, range(1, args.num_classes))
    config = TrainConfig(steps=args.steps, lr=args.lr, seed=args.seed, save_every=args.save_every,
                         sample_every=args.sample_every)
    print(f"training {args.what} on {len(train)} labelled + {len(unlabelled)} unlabelled patches; "
          f"{len(held_out)} held out ({holdout_file}); run folder {args.out}")
    if args.what == "autoencoder":
        train_autoencoder(train + unlabelled, held_out, args.out, config, batch=args.batch, crop=args.crop)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m napari_diffinfinite.training")
    add_train_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)
