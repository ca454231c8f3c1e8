"""``diffinfinite train autoencoder|image|mask``: argument parsing for the trainers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .dataset import DatasetError, load_class_map, scan_folder, scan_unlabelled
from .loop import TrainConfig

#: Network defaults per kind: small enough to train in hours and sample interactively on a 2-core CPU.
#: Image: dim 32 with levels 1,2,4 (64x64 latents -> 16x16 at the bottom), one block per level (the
#: reference has 2; a second one costs ~40 % more per training step), 4 GroupNorm groups
#: (8 channels per group at dim 32; the reference uses 2 groups at dim 256): ~2.1 M parameters.
#: Mask: dim 16 with levels 1,2,4,8 (32x32 simplex latents -> 4x4), one block per level: ~1.9 M parameters.
NETWORK_DEFAULTS = {
    "image": {"dim": 32, "dim_mults": (1, 2, 4), "block_per_layer": 1, "groups": 4, "crop_latents": 32},
    "mask": {"dim": 16, "dim_mults": (1, 2, 4, 8), "block_per_layer": 1, "groups": 4, "crop_latents": 32},
}


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, e.g. 1,2,4; got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, e.g. 1,2,4; got {text!r}")
    return values


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train the autoencoder, image or mask model on a patch folder")
    p.add_argument(
        "what",
        choices=["autoencoder", "image", "mask"],
        help="which network to train: the autoencoder first, then the image model in its latent "
        "space (--autoencoder), and the mask model (independent of both)",
    )
    p.add_argument(
        "--data", required=True, type=Path, help="folder of <stem>.<img> + <stem>_mask.png patches"
    )
    p.add_argument(
        "--unlabelled", type=Path, action="append", default=[], help="folder of images without masks"
    )
    p.add_argument("--class-map", type=Path, help="JSON object mapping mask label ids to model label ids")
    p.add_argument("--num-classes", type=int, default=5)
    p.add_argument("--out", required=True, type=Path, help="run folder; an existing run there is resumed")
    p.add_argument("--holdout-file", type=Path, help="JSON of held-out patch names (created if missing)")
    p.add_argument(
        "--holdout", type=int, default=10, help="patches to hold out when creating the holdout file"
    )
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=256, help="autoencoder: crop side in pixels")
    p.add_argument(
        "--latent-channels",
        type=int,
        default=8,
        help="autoencoder: latent channels (at 8x downsampling 8 is 24x compression; 4 blurs nuclei)",
    )
    p.add_argument(
        "--downsampling",
        type=int,
        choices=[4, 8],
        default=8,
        help="autoencoder: image pixels per latent pixel along each side (4: nuclei span several "
        "latents, a tile costs the image model about 4x more)",
    )
    p.add_argument(
        "--encoder",
        choices=["learned", "pool"],
        default="learned",
        help="autoencoder: 'pool' uses the block-averaged image as latents (3 channels, smooth enough "
        "for a small prior) and trains only the decoder, as a super-resolution network",
    )
    p.add_argument(
        "--fourier-weight",
        type=float,
        default=0.2,
        help="autoencoder: weight of the Fourier-magnitude loss beside L1 (keeps texture sharp)",
    )
    p.add_argument(
        "--texture-weight",
        type=float,
        default=0.0,
        help="autoencoder: weight of the local texture-strength loss (sharper decoder)",
    )
    p.add_argument(
        "--phase-weight",
        type=float,
        default=0.0,
        help="autoencoder: weight of the loss against a 2-px (even/odd) pattern in the decoded images",
    )
    p.add_argument(
        "--latent-std",
        type=float,
        metavar="STD",
        help="autoencoder: when done, also write standardised.safetensors whose latents have "
        "per-channel mean 0 and this std (image models train on it)",
    )
    p.add_argument(
        "--init-from",
        type=Path,
        metavar="SAFETENSORS",
        help="autoencoder or image: start a new run from these trained weights (e.g. a run's "
        "ema.safetensors, or a model folder's image.safetensors)",
    )
    p.add_argument(
        "--adversarial-weight",
        type=float,
        default=0.0,
        help="autoencoder, with --freeze-encoder: weight of a patch-discriminator (hinge GAN) "
        "loss on the decoder, scaled adaptively against the pixel losses (0: off; 0.5 is the "
        "LDM recipe's)",
    )
    p.add_argument(
        "--adversarial-start",
        type=int,
        default=0,
        help="autoencoder: step from which the adversarial loss is on",
    )
    p.add_argument(
        "--scale-equivariance",
        type=float,
        default=0.0,
        help="autoencoder: weight of a loss asking the 2x-pooled latents to decode to the "
        "2x-pooled image (smoother latents that a small diffusion prior can model; 0: off)",
    )
    p.add_argument(
        "--latent-noise",
        type=float,
        default=0.0,
        metavar="SIGMA",
        help="autoencoder: decode the latents plus Gaussian noise of this std (raw latents lie "
        "in [-1, 1]), so that detail below it is not used and a prior's residual noise is "
        "harmless (0: off)",
    )
    p.add_argument("--ema-decay", type=float, default=0.999, help="decay of the weights' moving average")
    p.add_argument(
        "--freeze-encoder",
        action="store_true",
        help="autoencoder: train only the decoder, so latents (and image models on them) stay valid",
    )
    net = p.add_argument_group(
        "image and mask models",
        "defaults (image / mask): dim 32 / 16, dim-mults 1,2,4 / 1,2,4,8, block-per-layer 1, groups 4, "
        "crop-latents 32 - small CPU networks (~2 M parameters each, ~0.3-0.5 s per step at batch 8 on one "
        "core); the reference's 172 M image network is dim 256, block-per-layer 2, groups 2",
    )
    net.add_argument(
        "--autoencoder",
        type=Path,
        metavar="PATH",
        help="image: the trained autoencoder (ema.safetensors of a `train autoencoder` run, or the "
        "run folder)",
    )
    net.add_argument("--dim", type=int, help="base channel width of the UNet")
    net.add_argument(
        "--dim-mults",
        type=_int_list,
        metavar="M,M,...",
        help="width multiplier per level; each level but the last halves the resolution",
    )
    net.add_argument("--block-per-layer", type=int, help="ResNet blocks per level")
    net.add_argument("--groups", type=int, help="GroupNorm groups (must divide every level's width)")
    net.add_argument(
        "--crop-latents",
        type=int,
        help="side of the training crops in latent pixels (image: 8 px each, 32 = 256 px; mask: "
        "cells-per-latent px each, 32 = 512 px)",
    )
    net.add_argument(
        "--cond-drop",
        type=float,
        default=0.2,
        help="probability of training a sample with the null condition (classifier-free guidance)",
    )
    net.add_argument(
        "--per-label",
        action="store_true",
        help="image: condition each training crop on one of its labels, (mask == label) * label, as "
        "the multi-label sampler does (the reference conditions on class = max(mask))",
    )
    net.add_argument(
        "--mask-input",
        action="store_true",
        help="image: also feed the label map to the first convolution as one-hot channels, so each latent "
        "pixel sees its own label (not in the reference's networks)",
    )
    net.add_argument(
        "--balance-labels",
        action="store_true",
        help="image, with --per-label: draw each crop's label evenly over the dataset's labels, then a "
        "crop that holds it, so rare classes (necrosis) are trained as often as common ones",
    )
    net.add_argument(
        "--loss",
        choices=["l1", "mse"],
        default="mse",
        help="noise-prediction loss (default: mse, the mean a sampler needs; the reference's l1 learns the "
        "median and under-draws rare structure such as nuclei)",
    )
    net.add_argument(
        "--snr-gamma",
        type=float,
        default=0.0,
        help="image: min-SNR-gamma loss weighting (e.g. 5; 0: off), less weight on nearly noise-free steps",
    )
    net.add_argument(
        "--v-weighting",
        type=float,
        default=0.0,
        metavar="CLIP",
        help="image: weigh each step's noise loss by 1/alpha_bar, at most CLIP (the v-prediction's loss; e.g. "
        "100), so the nearly pure-noise steps, where the class condition matters, are learnt (0: off)",
    )
    net.add_argument("--omega", type=float, default=3.0, help="guidance weight of the sample grids")
    net.add_argument("--sample-steps", type=int, default=20, help="DDIM steps of the sample grids")
    net.add_argument(
        "--contexts",
        type=int,
        default=1,
        help="mask: number of context prompts (0 adenocarcinoma, 1 squamous); a patch named "
        "*label<k>_* is context k, others context 0",
    )
    net.add_argument(
        "--cells-per-latent",
        type=int,
        default=16,
        help="mask: mask pixels per simplex-latent pixel (16: a 512-px mask is a 32x32 latent)",
    )
    net.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads", type=int, help="torch CPU threads (1 avoids oversubscription beside other work)"
    )
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--sample-every", type=int, default=500)
    p.set_defaults(func=run_train)
    return p


def _network_settings(args) -> tuple[dict, int]:
    """The UNet keywords and crop of ``args.what``, defaults filled in."""
    d = NETWORK_DEFAULTS[args.what]
    pick = lambda name: d[name] if getattr(args, name) is None else getattr(args, name)  # noqa: E731
    unet = {
        "dim": pick("dim"),
        "dim_mults": tuple(pick("dim_mults")),
        "block_per_layer": pick("block_per_layer"),
        "resnet_block_groups": pick("groups"),
    }
    if args.what == "image":
        unet["num_classes"] = args.num_classes
        if args.mask_input:
            unet["mask_input"] = True
    return unet, pick("crop_latents")


def _check_network(unet: dict) -> str | None:
    widths = [unet["dim"] * m for m in unet["dim_mults"]]
    bad = [w for w in [unet["dim"], *widths] if w % unet["resnet_block_groups"]]
    if bad:
        return (
            f"--groups {unet['resnet_block_groups']} does not divide the level widths {bad} (dim x dim-mults)"
        )
    return None


def run_train(args) -> int:
    import torch

    from .autoencoder import split_holdout, train_autoencoder

    if args.threads:
        torch.set_num_threads(args.threads)

    autoencoder = None
    if args.what == "image":
        from .image import AUTOENCODER_HINT, AutoencoderFileError, load_training_autoencoder

        if args.autoencoder is None:
            print(
                "error: training the image model needs --autoencoder PATH, the trained autoencoder "
                f"(its ema.safetensors). Train one first: {AUTOENCODER_HINT}",
                file=sys.stderr,
            )
            return 2
        try:
            load_training_autoencoder(args.autoencoder)
        except AutoencoderFileError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        autoencoder = args.autoencoder
    if args.what == "mask" and args.init_from is not None:
        print(
            "error: --init-from starts autoencoder and image runs; a mask run starts from scratch",
            file=sys.stderr,
        )
        return 2
    if args.balance_labels and not (args.what == "image" and args.per_label):
        print(
            "error: --balance-labels balances the label each image crop is conditioned on; use it with "
            "'train image --per-label'",
            file=sys.stderr,
        )
        return 2
    if args.what in ("image", "mask"):
        unet, crop_latents = _network_settings(args)
        problem = _check_network(unet)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2

    try:
        class_map = load_class_map(args.class_map) if args.class_map else None
        patches = scan_folder(args.data, args.num_classes, class_map)
        unlabelled = [p for folder in args.unlabelled for p in scan_unlabelled(folder)]
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    holdout_file = args.holdout_file or (args.out / "holdout.json")
    train, held_out = split_holdout(patches, holdout_file, args.holdout, range(1, args.num_classes))
    config = TrainConfig(
        steps=args.steps,
        lr=args.lr,
        seed=args.seed,
        save_every=args.save_every,
        sample_every=args.sample_every,
        ema_decay=args.ema_decay,
    )
    if args.what == "mask" and unlabelled:
        print("note: unlabelled folders are not used by the mask model (it learns masks)")
        unlabelled = []
    print(
        f"training {args.what} on {len(train)} labelled + {len(unlabelled)} unlabelled patches; "
        f"{len(held_out)} held out ({holdout_file}); run folder {args.out}"
    )
    try:
        if args.what == "autoencoder":
            train_autoencoder(
                train + unlabelled,
                held_out,
                args.out,
                config,
                batch=args.batch,
                crop=args.crop,
                latent_channels=args.latent_channels,
                downsampling=args.downsampling,
                encoder=args.encoder,
                fourier_weight=args.fourier_weight,
                texture_weight=args.texture_weight,
                phase_weight=args.phase_weight,
                init_from=args.init_from,
                latent_std=args.latent_std,
                freeze_encoder=args.freeze_encoder,
                adversarial_weight=args.adversarial_weight,
                adversarial_start=args.adversarial_start,
                scale_equivariance=args.scale_equivariance,
                latent_noise=args.latent_noise,
                device=args.device,
            )
        elif args.what == "image":
            from .image import train_image_model

            train_image_model(
                train + unlabelled,
                held_out,
                args.out,
                config,
                autoencoder_path=autoencoder,
                unet_config=unet,
                batch=args.batch,
                crop_latents=crop_latents,
                cond_drop=args.cond_drop,
                loss=args.loss,
                snr_gamma=args.snr_gamma,
                v_weighting=args.v_weighting,
                per_label=args.per_label,
                balance_labels=args.balance_labels,
                init_from=args.init_from,
                omega=args.omega,
                sample_steps=args.sample_steps,
                device=args.device,
            )
        else:
            from .mask import train_mask_model

            train_mask_model(
                train,
                args.out,
                config,
                unet_config=unet,
                contexts=args.contexts,
                num_labels=args.num_classes,
                cells_per_latent=args.cells_per_latent,
                batch=args.batch,
                crop_latents=crop_latents,
                cond_drop=args.cond_drop,
                loss=args.loss,
                omega=args.omega,
                sample_steps=args.sample_steps,
                device=args.device,
            )
    except (DatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m napari_diffinfinite.training")
    add_train_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)
