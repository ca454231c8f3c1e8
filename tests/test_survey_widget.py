"""The "DiffInfinite Survey" widget driven by key presses (needs a display: xvfb-run -a)."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
from PIL import Image
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractButton, QLabel, QLineEdit

from napari_diffinfinite import DISCLAIMER
from napari_diffinfinite.survey import load_patch, read_rows, summary
from napari_diffinfinite.widgets.survey_widget import PATCH_LAYER_NAME, SHORTCUTS, SurveyWidget

PLUGIN = "napari-diffinfinite"


def he_like(seed: int, size=(64, 64)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = size
    img = np.empty((h, w, 3), np.float32)
    img[:] = (236, 170, 200)
    img += rng.normal(0, 10, (h, w, 3))
    yy, xx = np.mgrid[:h, :w]
    for _ in range(12):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, 5)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (95, 60, 150)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def real_folder(tmp_path):
    folder = tmp_path / "real_patches"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(he_like(i)).save(folder / f"real_{i}.png")
        mask = np.zeros((64, 64), np.uint8)
        mask[:40] = 1 + i % 2  # Carcinoma or Necrosis
        Image.fromarray(mask).save(folder / f"real_{i}_mask.png")
    return folder


def _dock(viewer) -> SurveyWidget:
    _dock_widget, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "DiffInfinite Survey")
    assert isinstance(widget, SurveyWidget)
    return widget


def _visible_texts(widget) -> str:
    parts = []
    for child in widget.findChildren((QLabel, QAbstractButton, QLineEdit)):
        if child.isVisibleTo(widget):
            parts.append(child.text() if not isinstance(child, QLineEdit) else child.text() + child.placeholderText())
    return "\n".join(parts)


def _start(qtbot, widget, *, real_folder, model_dir, csv_path, rater="dr-a"):
    widget.real_folder.setText(str(real_folder))
    widget.source.setCurrentIndex(widget.source.findData("generate"))
    widget.model.setText(str(model_dir))
    widget.rater_id.setText(rater)
    widget.seed.setValue(7)
    widget.n_trials.setValue(4)
    widget.results_csv.setText(str(csv_path))
    qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.pages.currentWidget() is widget.rater_page, timeout=60000)


def test_survey_widget_runs_a_blinded_survey_by_keyboard(make_napari_viewer, qtbot, tmp_path, real_folder,
                                                        tiny_model_dir, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the generated patches' cache
    viewer = make_napari_viewer()
    other = viewer.add_image(np.zeros((8, 8)), name="organiser's canvas")
    widget = _dock(viewer)
    assert viewer.window.dock_widgets["DiffInfinite Survey (napari-diffinfinite)"] is widget
    assert DISCLAIMER in widget.disclaimer.text()
    # the organiser step: folder or generation; missing inputs are explained, nothing starts
    qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)
    assert "real patches" in widget.organiser_status.text()
    assert widget.pages.currentWidget() is widget.organiser_page

    csv_path = tmp_path / "answers.csv"
    _start(qtbot, widget, real_folder=real_folder, model_dir=tiny_model_dir, csv_path=csv_path)
    session = widget.session
    assert session.total == 4
    truths = [t.patch.truth for t in session.trials]
    assert sorted(truths) == ["real", "real", "synthetic", "synthetic"]
    assert SHORTCUTS in _visible_texts(widget)

    # answers: trial 1 wrong (widget keys + comment), 2 right (canvas keys), 3 right, 4 wrong
    plan = []
    for i, truth in enumerate(truths):
        right = i in (1, 2)
        says_synthetic = (truth == "synthetic") == right
        plan.append((says_synthetic, [4, 5, 2, 1][i]))

    handler = viewer.window._qt_viewer._key_map_handler
    for i, trial in enumerate(session.trials):
        assert widget.session.current is trial
        # blinded: one visible layer with a neutral name, pixels only, no path or truth on screen
        visible = [layer for layer in viewer.layers if layer.visible]
        assert [layer.name for layer in visible] == [PATCH_LAYER_NAME]
        (layer,) = visible
        assert layer.metadata == {} and layer.source.path is None
        np.testing.assert_array_equal(layer.data, load_patch(trial.patch.path))
        np.testing.assert_allclose(layer.scale, [1, 1])
        assert viewer.layers.selection.active is layer
        assert viewer.scene.camera.zoom <= 1.0
        shown = _visible_texts(widget)
        assert f"Patch {trial.number} of 4" in shown
        for secret in (str(tmp_path), trial.patch.path.name, trial.patch.patch_id, "real_patches"):
            assert secret not in shown

        says_synthetic, confidence = plan[i]
        if i == 0:
            # Enter before choosing saves nothing and says why
            qtbot.keyClick(widget, Qt.Key.Key_Return)
            assert "Choose real or synthetic" in widget.hint.text()
            assert not csv_path.exists()
            qtbot.keyClick(widget, Qt.Key.Key_S if says_synthetic else Qt.Key.Key_R)
            qtbot.keyClicks(widget, str(confidence))
            assert widget.next_button.isEnabled()
            # typing in the comment box writes text, not answers; Enter there confirms
            qtbot.keyClicks(widget.comment, "s5 stays a comment")
            assert widget._confidence == confidence
            qtbot.keyClick(widget.comment, Qt.Key.Key_Return)
        elif i == 1:
            # keys on the viewer canvas (the patch layer's keymap comes first in napari's chain)
            handler.press_key("S" if says_synthetic else "R")
            handler.press_key(str(confidence))
            handler.press_key("Enter")
        elif i == 2:
            qtbot.keyClicks(widget, ("s" if says_synthetic else "r") + "3")
            qtbot.keyClick(widget, Qt.Key.Key_2)  # changed their mind: the last key wins
            qtbot.keyClick(widget, Qt.Key.Key_Space)
        else:
            qtbot.keyClick(widget, Qt.Key.Key_S if says_synthetic else Qt.Key.Key_R)
            qtbot.keyClick(widget, Qt.Key.Key_1)
            qtbot.keyClick(widget, Qt.Key.Key_Enter)
        # written at once, one row per answer
        assert len(read_rows(csv_path)) == i + 1

    # the end: the truth and the figures, the histogram as a picture
    assert widget.pages.currentWidget() is widget.summary_page
    rows = read_rows(csv_path)
    assert [r["trial"] for r in rows] == ["1", "2", "3", "4"]
    assert [r["answer"] == "synthetic" for r in rows] == [p[0] for p in plan]
    assert [int(r["confidence"]) for r in rows] == [4, 5, 2, 1]
    assert [r["correct"] for r in rows] == ["0", "1", "1", "0"]
    assert [r["truth"] for r in rows] == truths
    assert rows[0]["comment"] == "s5 stays a comment" and rows[1]["comment"] == ""
    assert {r["rater_id"] for r in rows} == {"dr-a"}
    assert all(float(r["seconds"]) >= 0 for r in rows)
    assert {r["class"] for r in rows} <= {"Carcinoma", "Necrosis", "Tumor stroma", "Others"}
    s = summary(rows)
    assert widget.summary == s
    assert s.accuracy == 0.5 and s.confidence == {"correct": [0, 1, 0, 0, 1], "incorrect": [1, 0, 0, 1, 0]}
    right = [i in (1, 2) for i in range(4)]
    tp = sum(r and t == "synthetic" for r, t in zip(right, truths, strict=True))
    tn = sum(r and t == "real" for r, t in zip(right, truths, strict=True))
    assert (s.true_positives, s.true_negatives) == (tp, tn)
    assert s.sensitivity == tp / 2 and s.specificity == tn / 2
    assert "Accuracy: 50.0% (2 of 4)" in widget.summary_text.text()
    assert widget.histogram.counts == s.confidence
    assert not widget.histogram_label.pixmap().isNull()
    assert widget.histogram_label.pixmap().width() > 100
    # the patch layer is gone, the organiser's layers are back
    assert PATCH_LAYER_NAME not in [layer.name for layer in viewer.layers]
    assert other.visible
    # keys do nothing once finished
    qtbot.keyClick(widget, Qt.Key.Key_S)
    qtbot.keyClick(widget, Qt.Key.Key_Return)
    assert len(read_rows(csv_path)) == 4


def test_survey_widget_resumes_where_the_rater_stopped(make_napari_viewer, qtbot, tmp_path, real_folder,
                                                      tiny_model_dir, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    csv_path = tmp_path / "answers.csv"
    viewer = make_napari_viewer()
    widget = _dock(viewer)
    _start(qtbot, widget, real_folder=real_folder, model_dir=tiny_model_dir, csv_path=csv_path, rater="dr-b")
    first_ids = [t.patch.patch_id for t in widget.session.trials]
    qtbot.keyClicks(widget, "r3")
    qtbot.keyClick(widget, Qt.Key.Key_Return)
    assert len(read_rows(csv_path)) == 1
    # "crash": a new widget, same rater and CSV
    widget2 = SurveyWidget(viewer)
    qtbot.addWidget(widget2)
    _start(qtbot, widget2, real_folder=real_folder, model_dir=tiny_model_dir, csv_path=csv_path, rater="dr-b")
    assert [t.patch.patch_id for t in widget2.session.trials] == first_ids
    assert widget2.session.current.number == 2
    assert "Patch 2 of 4" in widget2.trial_label.text()


def test_survey_widget_reports_a_bad_folder_and_stays_with_the_organiser(make_napari_viewer, qtbot, tmp_path):
    widget = _dock(make_napari_viewer())
    widget.real_folder.setText(str(tmp_path / "missing"))
    widget.synthetic_folder.setText(str(tmp_path))
    widget.rater_id.setText("x")
    qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Cannot start" in widget.organiser_status.text(), timeout=20000)
    assert "missing is not a folder" in widget.organiser_status.text()
    assert widget.pages.currentWidget() is widget.organiser_page and widget.session is None
