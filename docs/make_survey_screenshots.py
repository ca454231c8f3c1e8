"""Screenshots of the survey widget for docs/survey.md, taken from the real program.

    xvfb-run -a -s "-screen 0 1440x900x24" python docs/make_survey_screenshots.py [--model FOLDER]

The "real" patches are three of the held-out sample patches (themselves DiffInfinite outputs, as docs/survey.md
says), the synthetic ones are generated on the fly by ``--model`` (default: the embedded model). Writes
docs/images/survey-{organiser,rater,summary}.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SAMPLES = REPO.parent / "shared" / "data" / "diffinfinite-samples" / "patches"
sys.path.insert(0, str(HERE))
from make_demo_screenshots import save, wait


def real_folder(into: Path, count: int = 3) -> Path:
    """``count`` held-out sample patches with their masks, copied into a folder of their own."""
    held = json.loads((REPO / "resources" / "models" / "embedded" / "holdout.json").read_text())["held_out"]
    into.mkdir(parents=True)
    for name in held[:count]:
        image = SAMPLES / name
        shutil.copy(image, into / (image.stem + ".png"))
        shutil.copy(image.with_name(image.stem + "_mask.png"), into / (image.stem + "_mask.png"))
    return into


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(REPO / "resources" / "models" / "embedded"), help="model folder")
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    tmp = Path(tempfile.mkdtemp(prefix="survey-screenshots-"))
    viewer = napari.Viewer(title="DiffInfinite survey")
    app = QApplication.instance()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-diffinfinite", "DiffInfinite Survey")
    widget.real_folder.setText(str(real_folder(tmp / "real")))
    widget.source.setCurrentIndex(widget.source.findData("generate"))
    widget.model.setText(args.model)
    widget.rater_id.setText("dr-a")
    widget.seed.setValue(7)
    widget.n_trials.setValue(4)
    widget.results_csv.setText(str(tmp / "answers.csv"))
    save(viewer, app, "survey-organiser.png")
    widget.start_button.click()
    wait(app, 300, lambda: widget.pages.currentWidget() is widget.rater_page)
    answers = [(True, 4), (False, 3), (True, 2), (False, 5)]
    for i, (synthetic, confidence) in enumerate(answers):
        widget.set_answer(synthetic)
        widget.set_confidence(confidence)
        if i == 0:
            save(viewer, app, "survey-rater.png")
        widget.confirm()
        wait(app, 0.5)
    wait(app, 60, lambda: widget.pages.currentWidget() is widget.summary_page)
    save(viewer, app, "survey-summary.png")
    viewer.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
