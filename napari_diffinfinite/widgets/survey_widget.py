"""The "DiffInfinite Survey" dock widget: a blinded real-vs-synthetic survey in napari.

Thin on purpose: the trials, timing, CSV and figures live in :mod:`napari_diffinfinite.survey` (no Qt). This
widget has three steps:

1. organiser: real patches folder, synthetic patches (a folder, or generated on the fly), rater id, order
   seed, number of trials, results CSV; Start (patches are prepared in a worker thread).
2. rater: one patch at a time in the viewer, at native resolution (1 image pixel = 1 screen pixel when it
   fits; zoom with the mouse), under a neutral layer name; nothing on screen names the file or its kind.
3. summary: the truth is revealed only here - accuracy, sensitivity / specificity, per class, times, and the
   confidence histogram.

Keyboard (in the widget or on the viewer canvas): R real, S synthetic, 1-5 confidence, Enter or Space confirm
and go to the next patch. In the comment box keys type text; Enter there confirms, Esc leaves the box.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QPixmap
from qtpy.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from .. import DISCLAIMER
from ..survey import GeneratorSettings, Session, SurveyConfig, confidence_histogram

if TYPE_CHECKING:
    import napari

#: The one name the patch layer ever has: it says nothing about the patch.
PATCH_LAYER_NAME = "Survey patch"
SHORTCUTS = (
    "Keys: R = real, S = synthetic, 1-5 = confidence (1 guessing, 5 certain), Enter or Space = confirm and "
    "next. They work here and on the image; in the comment box Enter confirms and Esc leaves the box."
)
CONFIDENCE_WORDS = {1: "guessing", 2: "unsure", 3: "fair", 4: "fairly sure", 5: "certain"}
SOURCE_FOLDER, SOURCE_GENERATE = "folder", "generate"


def _key_code(key) -> int:
    """A Qt key as an int under every binding: PyQt6's ``Qt.Key`` members are enums, not ints, and
    ``QKeyEvent.key()`` returns an int."""
    return int(getattr(key, "value", key))


_KEY_ANSWERS = {_key_code(Qt.Key.Key_R): False, _key_code(Qt.Key.Key_S): True}
_KEY_CONFIDENCE = {_key_code(getattr(Qt.Key, f"Key_{n}")): n for n in range(1, 6)}
_KEY_CONFIRM = {_key_code(k) for k in (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Space)}


def _path_row(edit: QLineEdit, browse) -> QWidget:
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(edit, 1)
    button = QPushButton("Browse...")
    button.clicked.connect(browse)
    layout.addWidget(button)
    return row


class SurveyWidget(QWidget):
    """Dock widget: organiser step, one blinded patch at a time, then the summary."""

    #: (done, total) from the worker that prepares patches; queued onto the GUI thread
    _progress = Signal(int, int)

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent=None):
        super().__init__(parent)
        self._viewer = napari_viewer
        self.session: Session | None = None
        self._worker = None
        self._cancel_requested = False
        self._patch_layer = None
        self._hidden_layers: list = []
        self._answer: bool | None = None  # True = synthetic
        self._confidence: int | None = None
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

        layout = QVBoxLayout(self)
        title = QLabel("<b>DiffInfinite Survey</b>: real or synthetic?")
        layout.addWidget(title)
        self.disclaimer = QLabel(DISCLAIMER)
        self.disclaimer.setWordWrap(True)
        layout.addWidget(self.disclaimer)
        self.pages = QStackedWidget()
        layout.addWidget(self.pages, 1)
        self._build_organiser()
        self._build_preparing()
        self._build_rater()
        self._build_summary()
        self._progress.connect(self._on_progress)
        self.pages.setCurrentWidget(self.organiser_page)

    # --------------------------------------------------------------------------------------------- pages

    def _build_organiser(self) -> None:
        page = self.organiser_page = QWidget()
        form = QFormLayout(page)
        self.real_folder = QLineEdit()
        self.real_folder.setPlaceholderText(
            "folder of real patches (a <name>_mask.png beside one gives its class)"
        )
        form.addRow(
            "Real patches", _path_row(self.real_folder, lambda: self._browse_folder(self.real_folder))
        )
        self.source = QComboBox()
        self.source.addItem("From a folder (e.g. exported from a canvas)", SOURCE_FOLDER)
        self.source.addItem("Generate on the fly, at the real patches' size", SOURCE_GENERATE)
        form.addRow("Synthetic patches", self.source)
        self.synthetic_folder = QLineEdit()
        self._synthetic_row = _path_row(
            self.synthetic_folder, lambda: self._browse_folder(self.synthetic_folder)
        )
        form.addRow("Synthetic folder", self._synthetic_row)
        self.model = QLineEdit("embedded")
        self.model.setToolTip('"embedded" or a model folder (with model.json)')
        self._model_row = _path_row(self.model, lambda: self._browse_folder(self.model))
        form.addRow("Model", self._model_row)
        self.count = QSpinBox()
        self.count.setRange(0, 10000)
        self.count.setSpecialValueText("as needed")
        form.addRow("Generated patches", self.count)
        self.size = QSpinBox()
        self.size.setRange(0, 8192)
        self.size.setSpecialValueText("as the real patches")
        self.size.setSuffix(" px")
        form.addRow("Generated size", self.size)
        self.generation_seed = QSpinBox()
        self.generation_seed.setRange(0, 2**31 - 1)
        form.addRow("Generation seed", self.generation_seed)
        self.rater_id = QLineEdit()
        self.rater_id.setPlaceholderText("e.g. initials; the same id resumes an interrupted survey")
        form.addRow("Rater id", self.rater_id)
        self.seed = QSpinBox()
        self.seed.setRange(-1, 2**31 - 1)
        self.seed.setSpecialValueText("per rater")
        self.seed.setValue(-1)
        self.seed.setToolTip("The blinded order; 'per rater' gives each rater an order of their own")
        form.addRow("Order seed", self.seed)
        self.n_trials = QSpinBox()
        self.n_trials.setRange(0, 100000)
        self.n_trials.setSpecialValueText("all patches")
        self.n_trials.setToolTip("That many patches, half real and half synthetic")
        form.addRow("Trials", self.n_trials)
        self.results_csv = QLineEdit(str(Path.cwd() / "survey_results.csv"))
        form.addRow("Results CSV", _path_row(self.results_csv, self._browse_csv))
        self.start_button = QPushButton("Start the survey")
        self.start_button.clicked.connect(self.start)
        form.addRow(self.start_button)
        self.organiser_status = QLabel("")
        self.organiser_status.setWordWrap(True)
        form.addRow(self.organiser_status)
        self._form = form
        self.source.currentIndexChanged.connect(self._on_source_changed)
        self._on_source_changed()
        self.pages.addWidget(page)

    def _build_preparing(self) -> None:
        page = self.preparing_page = QWidget()
        layout = QVBoxLayout(page)
        self.preparing_label = QLabel("Preparing the patches...")
        layout.addWidget(self.preparing_label)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 0)
        layout.addWidget(self.progress_bar)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self._cancel)
        layout.addWidget(self.cancel_button)
        layout.addStretch(1)
        self.pages.addWidget(page)

    def _build_rater(self) -> None:
        page = self.rater_page = QWidget()
        layout = QVBoxLayout(page)
        self.trial_label = QLabel("")
        layout.addWidget(self.trial_label)
        question = QLabel("Is this patch real or synthetic?")
        layout.addWidget(question)

        row = QHBoxLayout()
        self.real_button = QPushButton("Real (R)")
        self.synthetic_button = QPushButton("Synthetic (S)")
        self._answer_group = QButtonGroup(self)
        for button in (self.real_button, self.synthetic_button):
            button.setCheckable(True)
            button.setFocusPolicy(
                Qt.FocusPolicy.NoFocus
            )  # Space confirms; it must not click a focused button
            self._answer_group.addButton(button)
            row.addWidget(button)
        self.real_button.clicked.connect(lambda: self.set_answer(False))
        self.synthetic_button.clicked.connect(lambda: self.set_answer(True))
        layout.addLayout(row)

        layout.addWidget(QLabel("Confidence (1 guessing ... 5 certain):"))
        row = QHBoxLayout()
        self.confidence_buttons: dict[int, QPushButton] = {}
        self._confidence_group = QButtonGroup(self)
        for value in range(1, 6):
            button = QPushButton(str(value))
            button.setCheckable(True)
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            button.setToolTip(f"{value}: {CONFIDENCE_WORDS[value]} (key {value})")
            button.clicked.connect(lambda _checked=False, v=value: self.set_confidence(v))
            self._confidence_group.addButton(button)
            self.confidence_buttons[value] = button
            row.addWidget(button)
        layout.addLayout(row)

        self.comment = QLineEdit()
        self.comment.setPlaceholderText("comment (optional)")
        self.comment.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        layout.addWidget(self.comment)
        row = QHBoxLayout()
        self.next_button = QPushButton("Next (Enter)")
        self.next_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.next_button.clicked.connect(self.confirm)
        row.addWidget(self.next_button)
        view_button = QPushButton("Reset view")
        view_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        view_button.clicked.connect(self._reset_view)
        row.addWidget(view_button)
        layout.addLayout(row)
        self.hint = QLabel("")
        self.hint.setWordWrap(True)
        layout.addWidget(self.hint)
        shortcuts = QLabel(SHORTCUTS)
        shortcuts.setWordWrap(True)
        layout.addWidget(shortcuts)
        layout.addStretch(1)
        self.pages.addWidget(page)

    def _build_summary(self) -> None:
        page = self.summary_page = QWidget()
        layout = QVBoxLayout(page)
        layout.addWidget(QLabel("<b>Survey finished - results</b>"))
        self.summary_text = QLabel("")
        self.summary_text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.summary_text.setWordWrap(True)
        layout.addWidget(self.summary_text)
        self.histogram_label = QLabel()
        self.histogram_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(self.histogram_label)
        self.results_label = QLabel("")
        self.results_label.setWordWrap(True)
        layout.addWidget(self.results_label)
        again = QPushButton("New survey")
        again.clicked.connect(self._new_survey)
        layout.addWidget(again)
        layout.addStretch(1)
        self.histogram = None
        self.summary = None
        self.pages.addWidget(page)

    # ----------------------------------------------------------------------------------------- organiser

    def _browse_folder(self, edit: QLineEdit) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder", edit.text())
        if folder:
            edit.setText(folder)

    def _browse_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Results CSV (answers are appended)",
            self.results_csv.text(),
            "CSV (*.csv)",
            options=QFileDialog.DontConfirmOverwrite,
        )
        if path:
            self.results_csv.setText(path)

    def _on_source_changed(self, *_args) -> None:
        generate = self.source.currentData() == SOURCE_GENERATE
        for widget, visible in (
            (self._synthetic_row, not generate),
            (self._model_row, generate),
            (self.count, generate),
            (self.size, generate),
            (self.generation_seed, generate),
        ):
            widget.setVisible(visible)
            label = self._form.labelForField(widget)
            if label is not None:
                label.setVisible(visible)

    def config(self) -> SurveyConfig:
        """The organiser's choices as a :class:`SurveyConfig` (``ValueError`` when something is missing)."""
        real = self.real_folder.text().strip()
        if not real:
            raise ValueError("choose the folder of real patches")
        csv_path = self.results_csv.text().strip()
        if not csv_path:
            raise ValueError("choose a results CSV")
        kwargs = {}
        if self.source.currentData() == SOURCE_GENERATE:
            size = self.size.value()
            kwargs["generator"] = GeneratorSettings(
                model=self.model.text().strip() or "embedded",
                count=self.count.value() or None,
                size=(size, size) if size else None,
                seed=self.generation_seed.value(),
            )
        else:
            folder = self.synthetic_folder.text().strip()
            if not folder:
                raise ValueError("choose the folder of synthetic patches, or generate them")
            kwargs["synthetic_folder"] = Path(folder)
        return SurveyConfig(
            real_folder=Path(real),
            rater_id=self.rater_id.text(),
            results_csv=Path(csv_path),
            seed=None if self.seed.value() < 0 else self.seed.value(),
            n_trials=self.n_trials.value() or None,
            **kwargs,
        )

    def start(self) -> None:
        """Prepare the patches in a worker thread, then show the first unanswered one."""
        try:
            config = self.config()
        except ValueError as exc:
            self.organiser_status.setText(f"Cannot start: {exc}")
            return
        # superqt's worker (napari's is the same plus an error pop-up): errors are shown on the organiser page
        from superqt.utils import create_worker

        self._cancel_requested = False
        self.progress_bar.setRange(0, 0)
        self.preparing_label.setText("Preparing the patches...")
        self.pages.setCurrentWidget(self.preparing_page)
        self._worker = create_worker(
            Session.open,
            config,
            progress=self._progress.emit,
            cancel=lambda: self._cancel_requested,
            _connect={"returned": self._on_ready, "errored": self._on_error},
        )

    def _on_progress(self, done: int, total: int) -> None:
        self.progress_bar.setRange(0, max(1, total))
        self.progress_bar.setValue(done)
        self.preparing_label.setText(f"Generating synthetic patches: {done} of {total}")

    def _cancel(self) -> None:
        self._cancel_requested = True
        self.preparing_label.setText("Cancelling...")

    def _on_error(self, exc: Exception) -> None:
        self._worker = None
        self.pages.setCurrentWidget(self.organiser_page)
        self.organiser_status.setText(f"Cannot start: {exc}")

    def _on_ready(self, session: Session) -> None:
        self._worker = None
        self.session = session
        self.organiser_status.setText("")
        if session.done:
            self._finish()
            return
        self._hidden_layers = [layer for layer in self._viewer.layers if layer.visible]
        for layer in self._hidden_layers:
            layer.visible = False
        self.pages.setCurrentWidget(self.rater_page)
        self._show_current()

    # --------------------------------------------------------------------------------------------- rater

    def _ensure_layer(self, image):
        layer = self._patch_layer
        if layer is None or layer not in self._viewer.layers:
            layer = self._viewer.add_image(image, name=PATCH_LAYER_NAME, rgb=True)
            for key, action in (
                ("R", lambda _l: self.set_answer(False)),
                ("S", lambda _l: self.set_answer(True)),
                ("Enter", lambda _l: self.confirm()),
                ("Space", lambda _l: self.confirm()),
                *((str(v), lambda _l, v=v: self.set_confidence(v)) for v in range(1, 6)),
            ):
                layer.bind_key(key, action, overwrite=True)
            self._patch_layer = layer
        else:
            layer.data = image
        layer.name = PATCH_LAYER_NAME
        layer.metadata = {}
        layer.visible = True
        self._viewer.layers.selection.active = layer
        return layer

    def _reset_view(self) -> None:
        """Fit the patch, then 1 image pixel per screen pixel where the whole patch still fits."""
        if self._patch_layer is None:
            return
        self._viewer.reset_view()
        camera = self._viewer.scene.camera
        camera.zoom = min(camera.zoom, 1.0)

    def _show_current(self) -> None:
        session = self.session
        trial = session.current
        self._ensure_layer(session.current_image())
        self._reset_view()
        self._answer = None
        self._confidence = None
        for group in (self._answer_group, self._confidence_group):
            group.setExclusive(False)
            for button in group.buttons():
                button.setChecked(False)
            group.setExclusive(True)
        self.comment.clear()
        self.hint.setText("")
        self.trial_label.setText(f"Patch {trial.number} of {session.total}")
        self._update_next()
        self.setFocus()
        session.mark_shown()

    def set_answer(self, is_synthetic: bool) -> None:
        if self.pages.currentWidget() is not self.rater_page:
            return
        self._answer = bool(is_synthetic)
        (self.synthetic_button if is_synthetic else self.real_button).setChecked(True)
        self._update_next()

    def set_confidence(self, value: int) -> None:
        if self.pages.currentWidget() is not self.rater_page:
            return
        self._confidence = int(value)
        self.confidence_buttons[int(value)].setChecked(True)
        self._update_next()

    def _update_next(self) -> None:
        self.next_button.setEnabled(self._answer is not None and self._confidence is not None)

    def confirm(self) -> None:
        """Save the answer (one CSV row, synced) and show the next patch, or the summary after the last."""
        if self.pages.currentWidget() is not self.rater_page or self.session is None:
            return
        if self._answer is None or self._confidence is None:
            missing = [
                w
                for w, v in (
                    ("real or synthetic (R / S)", self._answer),
                    ("a confidence (1-5)", self._confidence),
                )
                if v is None
            ]
            self.hint.setText("Choose " + " and ".join(missing) + " first.")
            return
        try:
            self.session.answer(self._answer, self._confidence, self.comment.text())
        except OSError as exc:  # the answer is not saved: stay on this patch
            self.hint.setText(f"Could not save the answer: {exc}")
            return
        if self.session.done:
            self._finish()
        else:
            self._show_current()

    def keyPressEvent(self, event) -> None:
        if self.pages.currentWidget() is self.rater_page:
            key = _key_code(event.key())
            if key in _KEY_ANSWERS:
                self.set_answer(_KEY_ANSWERS[key])
                return
            if key in _KEY_CONFIDENCE:
                self.set_confidence(_KEY_CONFIDENCE[key])
                return
            if key in _KEY_CONFIRM:
                self.confirm()
                return
            if key == _key_code(Qt.Key.Key_Escape):
                self.setFocus()
                return
        super().keyPressEvent(event)

    # ------------------------------------------------------------------------------------------- summary

    def _finish(self) -> None:
        """The end: remove the patch, bring back hidden layers, reveal the results."""
        layer, self._patch_layer = self._patch_layer, None
        if layer is not None and layer in self._viewer.layers:
            self._viewer.layers.remove(layer)
        for other in self._hidden_layers:
            if other in self._viewer.layers:
                other.visible = True
        self._hidden_layers = []
        summary = self.session.summary()
        self.summary = summary
        self.summary_text.setText(summary.as_text())
        self.histogram = confidence_histogram(summary)
        pixmap = QPixmap()
        pixmap.loadFromData(self.histogram.png(), "PNG")
        width = min(pixmap.width(), 420)
        self.histogram_label.setPixmap(
            pixmap.scaledToWidth(width, Qt.TransformationMode.SmoothTransformation)
        )
        self.results_label.setText(f"Answers saved in {self.session.config.results_csv}")
        self.pages.setCurrentWidget(self.summary_page)

    def _new_survey(self) -> None:
        self.session = None
        self.pages.setCurrentWidget(self.organiser_page)
