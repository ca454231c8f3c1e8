"""Screenshots of demo mode for docs/demo.md, taken from the real program.

    xvfb-run -a -s "-screen 0 1440x900x24" python docs/make_demo_screenshots.py [--model FOLDER | --tiny]

``--model``: a model folder (default: ``$DIFFINFINITE_MODEL``, else the embedded model). ``--tiny``: a tiny,
randomly initialised test model (tests/conftest.py), for when no trained model is at hand: its "tissue" is
noise. Writes docs/images/demo-*.png as 256-colour PNGs (each under 300 KB).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "images"
MAX_BYTES = 300_000


def wait(app, seconds: float, until=None) -> bool:
    """Run the event loop for up to ``seconds`` (or until ``until()``); True if ``until`` became true."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        if until is not None and until():
            return True
        time.sleep(0.02)
    return until is None


def idle(ctrl) -> bool:
    s = ctrl.scheduler
    return s is not None and not s.pending() and s.stats.current is None


def save(viewer, app, name: str) -> Path:
    from PIL import Image

    wait(app, 1.0)  # the throttled refresh after the last tile
    rgba = np.asarray(viewer.screenshot(canvas_only=False, flash=False))
    im = Image.fromarray(rgba[..., :3])
    path = OUT / name
    for width, colours in ((im.width, 256), (im.width, 64), (1280, 64), (1024, 64), (800, 64)):
        small = im if width == im.width else im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
        small.quantize(colours, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        if path.stat().st_size <= MAX_BYTES:
            break
    print(f"{path.relative_to(HERE.parent)}: {path.stat().st_size // 1000} KB")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model folder (default: $DIFFINFINITE_MODEL, else the embedded model)")
    parser.add_argument("--tiny", action="store_true", help="a tiny random test model (its tissue is noise)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the view to generate")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    if args.tiny:
        sys.path.insert(0, str(HERE.parent / "tests"))
        from conftest import write_tiny_model

        os.environ["DIFFINFINITE_MODEL"] = str(write_tiny_model(Path(tempfile.mkdtemp()) / "tiny"))
    elif args.model:
        os.environ["DIFFINFINITE_MODEL"] = args.model

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_diffinfinite.demo import enter_demo_mode
    from napari_diffinfinite.widgets.canvas_controller import close_all_controllers

    OUT.mkdir(exist_ok=True)
    viewer = napari.Viewer(title="DiffInfinite demo")
    app = QApplication.instance()
    session = enter_demo_mode(viewer)
    ctrl = session.controller
    wait(app, args.timeout, lambda: not ctrl.loading_model)  # the model loads in a worker once the loop runs
    if ctrl.scheduler is None:
        print("no model: pass --model FOLDER or --tiny", file=sys.stderr)
        return 2
    # 1. the demo as it opens: the view generating, centre first
    wait(app, args.timeout, lambda: len(ctrl.landed) >= 3)
    save(viewer, app, "demo-start.png")
    # 2. step 1: a stroke of necrosis (class 2) across the view; the tiles under it regenerate
    wait(app, args.timeout, lambda: idle(ctrl))
    session.panel.paint_class.value = 2
    session.panel.paint_button.native.click()
    labels = ctrl.labels_layer
    session.panel.brush_size.value = 12
    view = ctrl.current_view().rect
    cy = (view.y0 + view.y1) / 2
    for x in np.linspace(view.x0 + view.width * 0.2, view.x0 + view.width * 0.8, 40):
        labels.paint(labels.world_to_data((cy * ctrl.pixel_size, x * ctrl.pixel_size)), 2)
    wait(app, 2.0)
    wait(app, args.timeout, lambda: idle(ctrl))  # the tiles under the stroke regenerated with context
    save(viewer, app, "demo-paint.png")
    # 3. step 3: the pyramid zoomed out to the whole painted mask
    session.panel.overview_button.native.click()
    wait(app, args.timeout, lambda: idle(ctrl))
    save(viewer, app, "demo-overview.png")
    # 4. step 4: back at 1:1, the view exported next to the canvas
    session.panel.one_to_one_button.native.click()
    wait(app, args.timeout, lambda: idle(ctrl))
    session.panel.export_button.native.click()
    wait(app, args.timeout, lambda: bool(session.exports))
    save(viewer, app, "demo-export.png")
    print("exported", session.exports[-1]["image"] if session.exports else "nothing")
    close_all_controllers()
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
