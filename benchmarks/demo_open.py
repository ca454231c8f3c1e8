"""Does opening the demo canvas freeze napari? (issue 16: it did, 3.7-4.4 s.)

Each repeat is a fresh process, as a user's first open is: nothing imported beyond napari, the model not
loaded. A 10 ms QTimer heartbeat (``responsiveness.Heartbeat``) runs in napari's event loop; the gap between
two beats beyond 10 ms is how long the GUI was frozen. Per repeat: the longest stall of the idle viewer (3 s
before opening, the baseline of the same process), the longest stall from ``File > Open Sample > DiffInfinite
demo canvas`` until the first tile lands, the time ``open_sample`` took and the first tile's latency; and, in
another fresh process, the control: the longest stall when napari alone adds an RGB image and a Labels layer
with class features to a fresh viewer (napari's price of a first layer). Prints each repeat and the medians.

    xvfb-run -a python benchmarks/demo_open.py                    # the embedded model, 3 repeats
    xvfb-run -a python benchmarks/demo_open.py --model FOLDER --repeats 5
    xvfb-run -a python benchmarks/demo_open.py --reader                 # a canvas folder through the reader
    xvfb-run -a python benchmarks/demo_open.py --demo-mode              # the widget's "Demo mode" button
    xvfb-run -a python benchmarks/demo_open.py --widget                 # Plugins > DiffInfinite, no canvas

To compare with an earlier version in the same run, check it out (``git worktree add /tmp/old REV``) and run
this script from outside the repository with ``PYTHONPATH=/tmp/old`` (from inside, ``python -c`` puts the
current folder first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent  # the heartbeat of benchmarks/responsiveness.py
ONE_OPEN = r"""
import json, sys, time
sys.path.insert(0, sys.argv[2])
import napari
from qtpy.QtWidgets import QApplication
from responsiveness import Heartbeat

viewer = napari.Viewer(title="DiffInfinite demo open")
viewer.window.resize(1400, 900)
app = QApplication.instance()

def spin(seconds, until=lambda: False):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end and not until():
        app.processEvents()
        time.sleep(0.002)

spin(2.0)
beat = Heartbeat()
beat.start()
spin(3.0)
idle = beat.stop()["max_stall_ms"]
beat.start()
spin(0.05)  # a first beat, so that the gap across open_sample is measured
t0 = time.perf_counter()
if len(sys.argv) > 3 and sys.argv[3] == "--widget":  # Plugins > DiffInfinite: the dock widget alone
    viewer.window.add_plugin_dock_widget("napari-diffinfinite", "DiffInfinite")
elif len(sys.argv) > 3 and sys.argv[3] == "--demo-mode":  # the widget's "Demo mode" button
    from napari_diffinfinite.demo import demo_mode_button_clicked
    demo_mode_button_clicked(viewer)
elif len(sys.argv) > 3:  # --reader: a canvas folder, as File > Open Folder or a drop opens it
    viewer.open(sys.argv[3], plugin="napari-diffinfinite")
else:
    viewer.open_sample("napari-diffinfinite", "demo_canvas")
opened = time.perf_counter() - t0
from napari_diffinfinite.widgets.canvas_controller import close_all_controllers, controller_for

if len(sys.argv) > 3 and sys.argv[3] == "--widget":  # no canvas, nothing to wait for: 3 s
    spin(3.0)
elif len(sys.argv) > 3 and sys.argv[3] != "--demo-mode":  # a reopened canvas does not generate until asked: until its model is in, then 1 s more
    spin(float(sys.argv[1]), lambda: controller_for(viewer) is not None and controller_for(viewer).model is not None)
    spin(1.0)
else:
    spin(float(sys.argv[1]), lambda: controller_for(viewer) is not None and bool(controller_for(viewer).landed))
ctrl = controller_for(viewer)
first = time.perf_counter() - t0 if ctrl is not None and ctrl.landed else None
stall = beat.stop()["max_stall_ms"]
first = None if first is None else round(first, 2)
print(json.dumps({"idle_max_stall_ms": round(idle), "open_max_stall_ms": round(stall),
                  "open_sample_s": round(opened, 2), "first_tile_s": first}))
close_all_controllers()
viewer.close()
"""
# the control: napari alone, in a fresh process too, adding an RGB image and a Labels layer with class features
# (what the demo's layers are) - the price of a first layer in napari (its unit registry, pandas, scipy imports)
ONE_CONTROL = ONE_OPEN.split("t0 = time.perf_counter()")[0] + r"""
import numpy as np
t0 = time.perf_counter()
viewer.add_image(np.zeros((1024, 1024, 3), np.uint8), scale=(0.5, 0.5), units=("um", "um"))
viewer.add_labels(np.zeros((2048, 2048), np.uint8), scale=(4, 4), units=("um", "um"),
                  features={"class": ["Unknown", "Carcinoma", "Necrosis", "Tumor stroma", "Others"]})
opened = time.perf_counter() - t0
spin(3.0)
print(json.dumps({"napari_alone_max_stall_ms": round(beat.stop()["max_stall_ms"]),
                  "napari_alone_add_s": round(opened, 2)}))
viewer.close()
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded", help="'embedded' or a model folder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for the first tile")
    parser.add_argument("--reader", action="store_true", help="open a demo canvas folder (made first, nothing "
                        "generated in it) with the plugin's reader instead of the demo sample")
    parser.add_argument("--demo-mode", action="store_true", help="enter demo mode in the open viewer, as the "
                        "widget's 'Demo mode' button does, instead of opening the demo sample")
    parser.add_argument("--widget", action="store_true", help="open the DiffInfinite dock widget alone")
    args = parser.parse_args(argv)
    env = {**os.environ, "DIFFINFINITE_MODEL": "" if args.model == "embedded" else args.model}
    runs = []
    extra = []
    if args.reader:
        import tempfile

        from napari_diffinfinite._sample_data import create_demo_canvas
        from napari_diffinfinite.model_manifest import read_manifest

        source = env["DIFFINFINITE_MODEL"] or "embedded"
        folder = Path(tempfile.mkdtemp(prefix="demo-open-")) / "canvas"
        store, _ = create_demo_canvas(folder, read_manifest(source), settings={"model_source": source})
        store.close()
        extra = [str(folder)]
    elif args.demo_mode:
        extra = ["--demo-mode"]
    elif args.widget:
        extra = ["--widget"]
    for i in range(args.repeats):
        proc = subprocess.run([sys.executable, "-c", ONE_OPEN, str(args.timeout), str(HERE), *extra], env=env,
                              check=False, capture_output=True, text=True, timeout=args.timeout + 120)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        control = subprocess.run([sys.executable, "-c", ONE_CONTROL, str(args.timeout), str(HERE)], env=env,
                                 check=False, capture_output=True, text=True, timeout=args.timeout + 120)
        if control.returncode != 0:
            print(control.stderr[-3000:], file=sys.stderr)
            return 1
        runs[-1].update(json.loads(control.stdout.strip().splitlines()[-1]))
        print(f"repeat {i + 1}: {runs[-1]}", flush=True)
        time.sleep(1)
    keys = ("idle_max_stall_ms", "open_max_stall_ms", "open_sample_s", "first_tile_s", "napari_alone_max_stall_ms",
            "napari_alone_add_s")
    medians = {k: statistics.median([r[k] for r in runs if r[k] is not None] or [float("nan")]) for k in keys}
    opened = ("the reader" if args.reader else "demo mode" if args.demo_mode else "the widget" if args.widget
              else "the demo sample")
    print(json.dumps({"model": args.model, "opened": opened,
                      "repeats": args.repeats, "median": medians}))
    print(f"{opened}: opening froze napari {medians['open_max_stall_ms']:.0f} ms at most (idle viewer "
          f"{medians['idle_max_stall_ms']:.0f} ms; target: idle + 100 ms); first tile "
          f"{medians['first_tile_s']:.1f} s after the open; napari alone adding an image and a Labels layer to a "
          f"fresh viewer froze it {medians['napari_alone_max_stall_ms']:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
