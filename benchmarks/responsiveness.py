"""Responsiveness of the napari plugin (issue 5): does the Qt event loop stall while the demo canvas generates?

A 10 ms QTimer heartbeat runs in napari's real event loop; the gap between two beats beyond the 10 ms period is
how long the GUI was frozen. Phases in the same process, with the same window size and the same scripted camera
moves (a pan every ``--pan-every`` s, a paint stroke every 4 s):

1. **idle**: a viewer showing a static image of the same size - the same 2**20 px multiscale tissue layer of a
   canvas nobody generates, and a Labels window like the plugin's;
2. the "DiffInfinite demo canvas" sample (the model: ``--model``, default a tiny random network; its tissue is
   noise, its cost per tile is the tiny network's), **generating** the view as it opens, in ``--rounds`` blocks
   that alternate with blocks where generation is **paused** (the same viewer, idle: a second baseline that
   shares the machine's load of that moment - on a shared machine the load drifts within a minute).

Prints, per phase, the max and 99th-percentile stall and the median of the per-block maxima; the difference of
generating against idle (target: <= 100 ms beyond idle); tiles done, tiles per second, the first tile's latency
after the sample opened, and how the tissue layer's slicings were served (prefetched region or store).

    xvfb-run -a python benchmarks/responsiveness.py                      # tiny model, 25 s per phase
    xvfb-run -a python benchmarks/responsiveness.py --model FOLDER --seconds 60 --torch-threads 2
    xvfb-run -a python benchmarks/responsiveness.py --screenshots docs/images     # the README's pictures instead

Software OpenGL under Xvfb stalls on its own (every redraw is drawn by the CPU); compare the two phases of one
run, not numbers from different runs or machines.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _tiny_model(folder: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import write_tiny_model  # the test suite's tiny random model

    return write_tiny_model(folder)


class Heartbeat:
    """A QTimer every ``period_ms``; records the gaps between beats (seconds)."""

    def __init__(self, period_ms: int = 10):
        from qtpy.QtCore import QTimer

        self.period = period_ms / 1000
        self.gaps: list[float] = []
        self._last = None
        self.timer = QTimer()
        self.timer.setInterval(period_ms)
        self.timer.timeout.connect(self._beat)

    def _beat(self):
        now = time.perf_counter()
        if self._last is not None:
            self.gaps.append(now - self._last)
        self._last = now

    def start(self):
        self.gaps, self._last = [], None
        self.timer.start()

    def stop(self) -> dict:
        self.timer.stop()
        g = np.asarray(self.gaps) if self.gaps else np.zeros(1)
        return summarise(np.maximum(g - self.period, 0) * 1000)


def summarise(stall_ms: np.ndarray, block_maxima=None) -> dict:
    out = {"beats": int(stall_ms.size), "max_stall_ms": round(float(stall_ms.max()), 1),
           "p99_stall_ms": round(float(np.percentile(stall_ms, 99)), 1),
           "stalls_over_100ms": int((stall_ms > 100).sum()), "_stalls": stall_ms}
    if block_maxima is not None:
        out["median_block_max_ms"] = round(float(np.median(block_maxima)), 1)
    return out


def merge(blocks: list[dict]) -> dict:
    return summarise(np.concatenate([b["_stalls"] for b in blocks]), [b["max_stall_ms"] for b in blocks])


def run_phase(app, viewer, labels_layer, seconds: float, pan_every: float, centre_px, ps: float) -> dict:
    """Spin the event loop for ``seconds`` with the heartbeat and the scripted camera moves / paint strokes."""
    from qtpy.QtCore import QEventLoop, QTimer

    beat = Heartbeat()
    cam = viewer.scene.camera
    cy, cx = centre_px
    moves = [(0, 0), (0, 600), (400, 600), (400, 0)]
    state = {"i": 0, "t0": time.perf_counter()}

    def pan():
        dy, dx = moves[state["i"] % len(moves)]
        state["i"] += 1
        cam.center = ((cy + dy) * ps, (cx + dx) * ps)

    def paint():
        if labels_layer is None:
            return
        # a short stroke near the view's centre, in the window's data coordinates
        y, x = labels_layer.world_to_data(cam.center[-2:])
        labels_layer.paint((int(y), int(x) + 3 * (state["i"] % 5)), 1 + state["i"] % 3)

    pans, paints = QTimer(), QTimer()
    pans.setInterval(int(pan_every * 1000))
    pans.timeout.connect(pan)
    paints.setInterval(4000)
    paints.timeout.connect(paint)
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    beat.start()
    pans.start()
    paints.start()
    loop.exec()
    pans.stop()
    paints.stop()
    return beat.stop()


def spin(app, seconds: float, until=None) -> bool:
    """Run the Qt event loop for ``seconds`` or until ``until()`` is true; returns whether it came true."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        if until is not None and until():
            return True
        app.processEvents()
        time.sleep(0.01)
    return until is not None and bool(until())


def screenshots(app, viewer, out: Path) -> int:
    """The demo canvas in the real viewer: the demo mask's tiles generated, then a paint stroke repainted in place,
    then a zoomed-out pyramid view. Saves plugin-demo.png (window with the dock widget), plugin-painting.png and
    plugin-pyramid.png (canvas only)."""
    from napari_diffinfinite.widgets.canvas_controller import close_all_controllers, controller_for

    out.mkdir(parents=True, exist_ok=True)
    viewer.window.add_plugin_dock_widget("napari-diffinfinite", "DiffInfinite")
    viewer.open_sample("napari-diffinfinite", "demo_canvas")
    spin(app, 1.0, until=lambda: controller_for(viewer) is not None)
    ctrl = controller_for(viewer)
    grid = ctrl.grid
    c = grid.centre()
    mask_rect = (c[0] - 1280, c[0] + 1280, c[1] - 1280, c[1] + 1280)
    tiles = grid.tiles_in_rect(mask_rect)
    ctrl.scheduler.request_tiles(grid.centre_first(tiles, mask_rect))
    spin(app, 600, until=lambda: all(ctrl.store.tile_status(k) == 2 for k in tiles))
    spin(app, 1.0)
    ctrl.labels_layer.selected_label = 1
    viewer.screenshot(str(out / "plugin-demo.png"), canvas_only=False)
    # a necrosis stroke: the tissue under it is repainted in place (a local repaint, no placeholder)
    layer = ctrl.labels_layer
    layer.brush_size = 12
    y, x = (int(v) for v in layer.world_to_data(viewer.scene.camera.center[-2:]))
    for k in range(-40, 41, 4):
        layer.paint((y + k // 2, x + k), 2)
    spin(app, 0.2)
    ctrl.sync_labels(wait=True)
    spin(app, 30.0, until=lambda: ctrl.scheduler.stats.repaints_done >= 1 and not ctrl.scheduler.pending()
         and ctrl.scheduler.stats.current is None)
    spin(app, 1.0)
    viewer.screenshot(str(out / "plugin-painting.png"), canvas_only=True)
    spin(app, 120, until=lambda: all(ctrl.store.tile_status(k) == 2 for k in tiles))
    # zoomed out 4x: the pyramid (level 2) shows the generated patch; around it, the unpainted canvas
    layer.opacity = 0.3
    ctrl.set_camera(c, zoom=1 / 4)
    spin(app, 3.0)
    viewer.screenshot(str(out / "plugin-pyramid.png"), canvas_only=True)
    print(f"screenshots in {out}: {len(tiles)} tiles generated, {ctrl.scheduler.stats.tiles_done} in all")
    close_all_controllers()
    viewer.close()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="'tiny' (a random tiny network), 'embedded', or a model folder")
    parser.add_argument("--seconds", type=float, default=24.0, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=3, help="generating / paused blocks in phase 2")
    parser.add_argument("--pan-every", type=float, default=1.5)
    parser.add_argument("--size", type=int, nargs=2, default=(1400, 900), metavar=("W", "H"), help="window size")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--screenshots", metavar="DIR", help="instead of timing: generate the demo mask's tiles and "
                        "save plugin-*.png screenshots of the real viewer into DIR")
    args = parser.parse_args(argv)

    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    tmp = Path(tempfile.mkdtemp(prefix="diffinfinite-responsiveness-"))
    source = str(_tiny_model(tmp / "tiny")) if args.model == "tiny" else args.model
    os.environ["DIFFINFINITE_MODEL"] = source

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_diffinfinite._sample_data import create_demo_canvas
    from napari_diffinfinite.widgets.canvas_controller import close_all_controllers, controller_for
    from napari_diffinfinite.widgets.canvas_layers import canvas_layer_data
    from napari_diffinfinite.widgets.canvas_models import get_model

    model = get_model(source)  # loaded before both phases: the phases measure the GUI, not the loading
    viewer = napari.Viewer(title="DiffInfinite responsiveness")
    viewer.window.resize(*args.size)
    app = QApplication.instance()
    for _ in range(50):
        app.processEvents()
        time.sleep(0.01)
    if args.screenshots:
        return screenshots(app, viewer, Path(args.screenshots))

    # phase 1: the same layers, static (a canvas nobody generates), same camera and moves
    static_store, rect = create_demo_canvas(tmp / "static", model)
    (tdata, tkw, _), (ldata, lkw, _) = canvas_layer_data(static_store, centre_px=rect.centre)
    viewer.add_image(tdata, **tkw)
    static_labels = viewer.add_labels(ldata, **lkw)
    ps = static_store.pixel_size_um
    centre = rect.centre
    viewer.scene.camera.center = (centre[0] * ps, centre[1] * ps)
    viewer.scene.camera.zoom = 1 / ps
    run_phase(app, viewer, static_labels, 3.0, args.pan_every, centre, ps)  # warm-up
    idle = run_phase(app, viewer, static_labels, args.seconds, args.pan_every, centre, ps)
    viewer.layers.clear()
    static_store.close()

    # phase 2: the demo canvas sample, generating
    t_open = time.perf_counter()
    viewer.open_sample("napari-diffinfinite", "demo_canvas")
    open_s = time.perf_counter() - t_open
    for _ in range(20):
        app.processEvents()
        time.sleep(0.005)
    ctrl = controller_for(viewer)
    assert ctrl is not None and ctrl.scheduler is not None, "the demo canvas did not start generating"
    first = {}
    ctrl.tile_landed.connect(lambda _k: first.setdefault("t", time.perf_counter() - t_open))
    block = args.seconds / args.rounds
    gen_blocks, paused_blocks = [], []
    for _ in range(args.rounds):
        ctrl.resume()
        gen_blocks.append(run_phase(app, viewer, ctrl.labels_layer, block, args.pan_every, centre, ps))
        ctrl.pause()
        paused_blocks.append(run_phase(app, viewer, ctrl.labels_layer, block, args.pan_every, centre, ps))
    ctrl.resume()
    gen, paused = merge(gen_blocks), merge(paused_blocks)
    stats = ctrl.scheduler.stats
    result = {
        "model": args.model, "device": str(model.device), "torch_threads": torch.get_num_threads(),
        "canvas_px": list(viewer.canvas.size), "seconds_per_phase": args.seconds, "rounds": args.rounds,
        "idle": idle, "generating": gen, "paused": paused,
        "max_stall_beyond_idle_ms": round(gen["max_stall_ms"] - idle["max_stall_ms"], 1),
        "p99_stall_beyond_idle_ms": round(gen["p99_stall_ms"] - idle["p99_stall_ms"], 1),
        "max_stall_beyond_paused_ms": round(gen["max_stall_ms"] - paused["max_stall_ms"], 1),
        "demo_open_s": round(open_s, 2),
        "first_tile_after_open_s": round(first["t"], 2) if "t" in first else None,
        "tiles_done": stats.tiles_done, "tiles_per_second": round(stats.tiles_per_second, 2),
        "layer_refreshes": ctrl.refreshes,
        "slicings_from_prefetched_region": sum(getattr(level, "hits", 0) for level in ctrl.tissue_layer.data_raw),
        "slicings_read_from_store": sum(getattr(level, "misses", 0) for level in ctrl.tissue_layer.data_raw),
    }
    close_all_controllers()
    viewer.close()
    for phase in ("idle", "generating", "paused"):
        result[phase].pop("_stalls", None)
    print(json.dumps(result, indent=1))
    print(f"max stall: idle {idle['max_stall_ms']} ms, generating {gen['max_stall_ms']} ms "
          f"(paused {paused['max_stall_ms']} ms), generating - idle {result['max_stall_beyond_idle_ms']} ms "
          f"(target <= 100 ms); p99: idle {idle['p99_stall_ms']} / generating {gen['p99_stall_ms']} / paused "
          f"{paused['p99_stall_ms']} ms; {stats.tiles_done} tiles at {stats.tiles_per_second:.2f} tiles/s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
