"""Command line: ``diffinfinite <command>`` (also ``python -m napari_diffinfinite``).

``demo`` opens napari with the demo mask and the DiffInfinite widget; ``info`` prints versions and the device
the model would run on; ``train`` trains the embedded model's networks. Heavy imports (napari, torch) happen
inside the commands.
"""

from __future__ import annotations

import argparse
import sys

from . import DISCLAIMER, __version__

PLUGIN = "napari-diffinfinite"
DEMO_SAMPLE = "demo_mask"
WIDGET = "DiffInfinite"


def selected_device() -> str:
    """The device the model layer picks here (cuda, then mps, then cpu)."""
    from .model.device import select_device

    return str(select_device())


def setup_demo(viewer) -> None:
    """Open the demo mask and the DiffInfinite dock widget in ``viewer``."""
    viewer.open_sample(PLUGIN, DEMO_SAMPLE)
    viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)


def _demo(args: argparse.Namespace) -> int:
    import napari

    viewer = napari.Viewer(title="DiffInfinite demo")
    setup_demo(viewer)
    print(DISCLAIMER)
    napari.run()
    return 0


def _info(args: argparse.Namespace) -> int:
    import torch

    print(f"napari-diffinfinite {__version__}")
    print(f"python {sys.version.split()[0]}")
    print(f"torch {torch.__version__}")
    print(f"device {selected_device()}")
    print(DISCLAIMER)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffinfinite",
        description="DiffInfinite in napari: paint tissue-class masks and grow synthetic H&E histology.",
        epilog=DISCLAIMER,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", title="commands", required=True)
    demo = sub.add_parser("demo", help="open napari with the demo mask and the DiffInfinite widget")
    demo.set_defaults(func=_demo)
    info = sub.add_parser("info", help="print versions and the selected device")
    info.set_defaults(func=_info)
    from .training.cli import add_train_parser

    add_train_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
