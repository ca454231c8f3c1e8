"""Command line: ``diffinfinite <command>`` (also ``python -m napari_diffinfinite``).

``demo`` opens napari in demo mode (the demo canvas generating the view, a guided panel, the widget); ``info`` prints versions and the device
the model would run on; ``train`` trains the embedded model's networks. Heavy imports (napari, torch) happen
inside the commands.
"""

from __future__ import annotations

import argparse
import sys

from . import DISCLAIMER, __version__
from .exit_codes import (
    EXIT_CANCELLED,
    EXIT_CODES_HELP,
    EXIT_MASK,
    EXIT_MEMORY,
    EXIT_MODEL,
    EXIT_OK,
    EXIT_OUTPUT,
    EXIT_USAGE,
    report_error,
)
from .model_manifest import SAMPLER_LABELS

PLUGIN = "napari-diffinfinite"
DEMO_SAMPLE = "demo_canvas"
WIDGET = "DiffInfinite"


def selected_device() -> str:
    """The device the model layer picks here (cuda, then mps, then cpu)."""
    from .model.device import select_device

    return str(select_device())


def setup_demo(viewer, *, preset: str | None = None, fullscreen: bool = False):
    """Demo mode in ``viewer`` (:func:`napari_diffinfinite.demo.enter_demo_mode`): a new canvas with the demo mask
    painted in its middle, at 1:1, generating the view as soon as napari's event loop runs (the model:
    ``$DIFFINFINITE_MODEL`` or the embedded one; without one, a notification says how to choose it), the guided
    panel next to the DiffInfinite widget, and the synthetic-image overlay. Returns the demo session."""
    from .demo import enter_demo_mode

    return enter_demo_mode(viewer, preset=preset, fullscreen=fullscreen)


def _qt_binding() -> str | None:
    """The Qt binding napari will use (``PyQt6``, ``PyQt5``, ...), or None when none is installed."""
    try:
        import qtpy
    except ImportError:  # qtpy.QtBindingsNotFoundError
        return None
    return qtpy.API_NAME


def _demo(args: argparse.Namespace) -> int:
    if _qt_binding() is None:
        return report_error(
            EXIT_USAGE,
            "napari needs a Qt binding and none is installed: "
            "pip install 'napari-diffinfinite[pyqt6]' (or [pyqt5])",
        )
    import napari

    viewer = napari.Viewer(title="DiffInfinite demo")
    setup_demo(viewer, preset=args.preset, fullscreen=args.fullscreen)
    print(DISCLAIMER)
    napari.run()
    return 0


def _info(args: argparse.Namespace) -> int:
    import torch

    print(f"napari-diffinfinite {__version__}")
    print(f"python {sys.version.split()[0]}")
    print(f"torch {torch.__version__}")
    print(f"Qt binding {_qt_binding() or 'none (pip install napari-diffinfinite[pyqt6])'}")
    print(f"device {selected_device()}")
    print(DISCLAIMER)
    return 0


def _stem(out):
    from pathlib import Path

    out = Path(out)
    name = out.name
    for suffix in (".ome.tiff", ".ome.tif", ".png"):
        if name.lower().endswith(suffix):
            return out.with_name(name[: -len(suffix)]), ("png" if suffix == ".png" else "ome.tif")
    raise ValueError(f"--out must end in .ome.tif or .png, got {out.name}")


def _generate(args: argparse.Namespace) -> int:
    import torch

    try:
        stem, fmt = _stem(args.out)
    except ValueError as e:
        return report_error(EXIT_USAGE, str(e))
    if (args.size is None) == (args.mask is None):
        return report_error(EXIT_USAGE, "give either --size H W or --mask MASK.png")
    if args.scheduler or args.workers is not None or args.count != 1 or args.canvas:
        try:  # on a dask.distributed cluster: napari_diffinfinite.distributed
            from .distributed import run_cli
        except ImportError as e:
            return report_error(
                EXIT_USAGE,
                f"{e}; --scheduler, --workers, --count and --canvas need "
                "dask.distributed: pip install 'napari-diffinfinite[distributed]'",
            )
        return run_cli(args, stem, fmt)
    from .io import export_paths

    existing = [p for p in export_paths(stem, fmt).values() if p is not None and p.exists()]
    if existing and not args.overwrite:
        return report_error(EXIT_OUTPUT, f"{existing[0]} exists; pass --overwrite to replace it")
    from .generation import generate, load_model
    from .model import CheckpointError, DeviceUnavailableError
    from .sampling.masks import MaskError, load_label_image

    try:
        model = load_model(args.model, device=args.device)
    except (FileNotFoundError, CheckpointError, DeviceUnavailableError, ValueError) as e:
        return report_error(EXIT_MODEL, str(e))
    mask = None
    if args.mask is not None:
        try:
            mask = load_label_image(args.mask, model.num_classes)
        except (FileNotFoundError, MaskError, ValueError) as e:
            return report_error(EXIT_MASK, str(e))
    from tqdm import tqdm

    bars: dict = {}

    def progress(stage, done, total):
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(
                total=total,
                desc=stage,
                unit="px-step" if stage != "decode" else "image",
                unit_scale=True,
                dynamic_ncols=True,
                disable=args.quiet,
            )
        bar.update(done - bar.n)

    try:
        result = generate(
            model,
            mask=mask,
            size=tuple(args.size) if args.size else None,
            mask_scale=args.mask_scale,
            context=args.context,
            omega=args.omega,
            mask_omega=args.mask_omega,
            steps=args.steps,
            sampler=args.sampler,
            seed=args.seed,
            mode=args.mode,
            block=args.block,
            progress=progress,
        )
    except ValueError as e:
        return report_error(EXIT_MASK if mask is not None else EXIT_USAGE, str(e))
    except (torch.cuda.OutOfMemoryError, MemoryError) as e:
        return report_error(
            EXIT_MEMORY, f"out of memory ({e}); use smaller blocks (--block 128) or --device cpu"
        )
    except KeyboardInterrupt:
        return report_error(EXIT_CANCELLED, "interrupted; nothing was written")
    finally:
        for bar in bars.values():
            bar.close()
    from .io import PyramidOptions, export_region

    settings = {**result.settings, "out": str(args.out)}
    try:
        written = export_region(
            stem,
            result.image,
            result.mask,
            result.image.shape[:2],
            settings,
            fmt=fmt,
            options=PyramidOptions(compression=args.compression, pixel_size_um=model.pixel_size_um),
            overwrite=args.overwrite,
        )
    except (OSError, ValueError) as e:
        return report_error(EXIT_OUTPUT, str(e))
    if not args.quiet:
        for path in written.values():
            if path is not None:
                print(f"wrote {path}")
        s = result.seconds
        print(
            f"{result.image.shape[1]}x{result.image.shape[0]} px in {s['total_s']:.1f} s "
            f"({result.stats.window_evals} window evaluations, {result.stats.cost_vs_tiling:.2f}x tiling)"
        )
        print(DISCLAIMER)
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from .canvas.store import CanvasStore
    from .io.canvas_export import MissingTilesError, export_canvas

    try:
        stem, fmt = _stem(args.out)
    except ValueError as e:
        return report_error(EXIT_USAGE, str(e))
    y0, x0, y1, x1 = args.region
    try:
        store = CanvasStore.open(args.canvas, mode="r+" if args.generate_missing else "r")
    except (FileNotFoundError, ValueError, OSError) as e:
        return report_error(EXIT_USAGE, f"cannot open canvas {args.canvas}: {e}")
    scheduler = None
    if args.generate_missing:
        from .canvas.scheduler import TileScheduler
        from .generation import load_model

        try:
            scheduler = TileScheduler(store, load_model(args.model, device=args.device))
        except (FileNotFoundError, ValueError) as e:
            return report_error(EXIT_MODEL, str(e))
    try:
        written = export_canvas(
            store,
            (y0, y1, x0, x1),
            stem,
            fmt=fmt,
            compression=args.compression,
            overwrite=args.overwrite,
            scheduler=scheduler,
        )
    except (MissingTilesError, FileExistsError, OSError, ValueError) as e:
        return report_error(EXIT_OUTPUT, str(e))
    finally:
        store.close()
    if not args.quiet:
        for path in written.values():
            if path is not None:
                print(f"wrote {path}")
        print(DISCLAIMER)
    return EXIT_OK


def _bundle(args: argparse.Namespace) -> int:
    from .training.bundle import bundle_model

    try:
        folder = bundle_model(
            args.out,
            autoencoder=args.autoencoder,
            image=args.image,
            mask=args.mask,
            name=args.name,
            default_steps=args.default_steps,
            default_omega=args.default_omega,
            mask_omega=args.mask_omega,
            sampler=args.sampler,
        )
    except (FileNotFoundError, ValueError, KeyError) as e:
        return report_error(EXIT_USAGE, str(e))
    print(f"wrote {folder / 'model.json'}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffinfinite",
        description="DiffInfinite in napari: paint tissue-class masks and grow synthetic H&E histology.",
        epilog=DISCLAIMER,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", title="commands", required=True)
    demo = sub.add_parser(
        "demo",
        help="open napari in demo mode: the demo canvas generating, a guided panel and "
        "the DiffInfinite widget",
    )
    demo.add_argument(
        "--preset",
        choices=["auto", "cpu", "gpu"],
        default="auto",
        help="steps and tile budget (auto: from the device the model runs on)",
    )
    demo.add_argument("--fullscreen", action="store_true", help="full screen (default: maximised)")
    demo.set_defaults(func=_demo)
    info = sub.add_parser("info", help="print versions and the selected device")
    info.set_defaults(func=_info)
    gen = sub.add_parser(
        "generate",
        help="generate a mask (or use yours) and synthetic tissue; write OME-TIFF or PNG",
        epilog=EXIT_CODES_HELP,
    )
    what = gen.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--size", type=int, nargs=2, metavar=("H", "W"), help="generate a mask of this size first"
    )
    what.add_argument("--mask", help="painted mask: PNG/TIFF label ids (or 8-bit labels scaled to 0..255)")
    gen.add_argument(
        "--mask-scale", type=int, help="image pixels per mask pixel (e.g. 4 for a 128-px mask per 512 px)"
    )
    gen.add_argument("--out", required=True, help="OUT.ome.tif (pyramidal OME-TIFF) or OUT.png")
    gen.add_argument("--model", default="embedded", help="'embedded' (default) or a model folder")
    gen.add_argument(
        "--omega",
        type=float,
        help="guidance weight of the image model (default: the model's: 3 for "
        "the released DiffInfinite, 0 for the embedded model, see its model card)",
    )
    gen.add_argument(
        "--mask-omega",
        type=float,
        help="guidance weight of the mask model, for generated masks (default: the model's, 3)",
    )
    gen.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    gen.add_argument(
        "--sampler",
        choices=tuple(SAMPLER_LABELS),
        help="the image model's sampler (default: the model's): ddim is "
        "the reference's DDIM (eta 1); dpmpp-2m-sde is DPM-Solver++(2M) SDE, the same steps made second "
        "order, sharper at the same cost (the embedded model's)",
    )
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--context", default="adeno", help="mask context prompt: adeno or squamous")
    gen.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    gen.add_argument(
        "--compression",
        choices=["jpeg", "zlib", "none"],
        default=None,
        help="image compression for OME-TIFF (default jpeg, quality 95; masks are always lossless)",
    )
    gen.add_argument(
        "--mode",
        choices=["batched", "faithful"],
        default="batched",
        help="random-patch sampler (faithful: the reference algorithm, ~2x slower)",
    )
    gen.add_argument("--block", type=int, default=512, help="canvas block size in latent pixels")
    gen.add_argument("--overwrite", action="store_true", help="replace existing output files")
    gen.add_argument("--quiet", action="store_true", help="no progress bars")
    dist = gen.add_argument_group(
        "scale out (dask.distributed)",
        "blocks of one image as a wavefront on a cluster (use the same --block as a single run for the same image), "
        "or --count images at once",
    )
    dist.add_argument(
        "--scheduler", metavar="ADDRESS", help="an existing dask scheduler, e.g. tcp://host:8786"
    )
    dist.add_argument("--workers", type=int, metavar="N", help="start a local cluster of N worker processes")
    dist.add_argument(
        "--count",
        type=int,
        default=1,
        metavar="N",
        help="N independent images, seeds SEED..SEED+N-1, written as OUT_0001... (default 1)",
    )
    dist.add_argument(
        "--canvas",
        metavar="FOLDER",
        help="the shared canvas store (a folder all workers reach; kept, and resumed by a re-run). "
        "Default: OUT.canvas next to --out, removed after the export",
    )
    gen.set_defaults(func=_generate)
    export = sub.add_parser(
        "export",
        help="export a canvas region as pyramidal OME-TIFF (or PNG) with its mask",
        epilog=EXIT_CODES_HELP,
    )
    export.add_argument("canvas", help="canvas folder (as the napari plugin saves it)")
    export.add_argument(
        "--region",
        type=int,
        nargs=4,
        required=True,
        metavar=("Y0", "X0", "Y1", "X1"),
        help="region in canvas pixels",
    )
    export.add_argument("--out", required=True, help="OUT.ome.tif or OUT.png")
    export.add_argument("--compression", choices=["jpeg", "zlib", "none"], default=None)
    export.add_argument("--generate-missing", action="store_true", help="generate tiles not generated yet")
    export.add_argument("--model", default="embedded", help="model for --generate-missing")
    export.add_argument("--device")
    export.add_argument("--overwrite", action="store_true")
    export.add_argument("--quiet", action="store_true")
    export.set_defaults(func=_export)
    bundle = sub.add_parser(
        "bundle", help="assemble a model folder from training runs (model.json + weights)"
    )
    bundle.add_argument("--autoencoder", required=True, help="autoencoder run folder or its ema.safetensors")
    bundle.add_argument("--image", help="image-model run folder or its ema.safetensors")
    bundle.add_argument("--mask", help="mask-model run folder or its ema.safetensors")
    bundle.add_argument("--out", required=True, help="model folder to write (e.g. resources/models/embedded)")
    bundle.add_argument("--name", default="embedded")
    bundle.add_argument("--default-steps", type=int, default=25)
    bundle.add_argument("--default-omega", type=float, default=3.0, help="the image model's default guidance")
    bundle.add_argument("--mask-omega", type=float, default=3.0, help="the mask model's default guidance")
    bundle.add_argument(
        "--sampler", choices=tuple(SAMPLER_LABELS), default="ddim", help="the image model's default sampler"
    )
    bundle.set_defaults(func=_bundle)
    from .training.cli import add_train_parser

    add_train_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
