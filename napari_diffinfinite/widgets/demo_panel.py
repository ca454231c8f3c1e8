"""The guided panel of demo mode: four steps (paint a class, watch tissue appear, zoom the pyramid, export),
the preset in use, and the synthetic-image disclaimer.

Thin on purpose: every button calls a :class:`~napari_diffinfinite.demo.DemoSession` method, so a demo can be
scripted and tested without clicking. Qt only through magicgui / qtpy.
"""

from __future__ import annotations

from magicgui.widgets import ComboBox, Container, Label, ProgressBar, PushButton, Slider

from ..classes import class_set

__all__ = ["DISCLAIMER_TEXT", "DemoPanel"]

DISCLAIMER_TEXT = "Synthetic images - research and demo use only, not for diagnosis"


def _heading(text: str) -> Label:
    label = Label(value=text)
    label.native.setStyleSheet("font-weight: bold; margin-top: 6px;")
    return label


class DemoPanel(Container):
    """Dock widget of demo mode (see the module docstring)."""

    def __init__(self, session):
        super().__init__(labels=False)
        self.session = session
        ctrl = session.controller
        self.disclaimer = Label(value=DISCLAIMER_TEXT)
        self.disclaimer.native.setWordWrap(True)
        self.disclaimer.native.setStyleSheet("color: #ffd400; font-weight: bold;")
        self.preset = Label()
        self.preset.native.setWordWrap(True)
        self.show_preset()

        # 1 paint
        classes = class_set(ctrl.store.num_classes) if ctrl.store.num_classes in (5, 10) else None
        choices = (
            [(f"{c.id}  {c.name}", c.id) for c in classes if c.id != 0]
            if classes is not None
            else [(str(i), i) for i in range(1, ctrl.store.num_classes)]
        )
        self.paint_class = ComboBox(choices=choices, value=choices[0][1])
        self.paint_class.tooltip = "The tissue class the brush paints"
        self.brush_size = Slider(label="Brush", min=1, max=100, value=int(ctrl.labels_layer.brush_size))
        self.brush_size.tooltip = "Brush size in mask pixels (one mask pixel = 8 image pixels)"
        self.paint_button = PushButton(text="Paint this class")
        self.paint_button.tooltip = (
            "Select the mask layer in paint mode with this class; then paint on the canvas"
        )
        # 2 watch
        self.progress = Label(value="")
        self.progress_bar = ProgressBar(min=0, max=100, value=0)
        # 3 zoom
        self.overview_button = PushButton(text="Zoom out: overview")
        self.overview_button.tooltip = "See the whole painted mask; the coarser pyramid levels show"
        self.one_to_one_button = PushButton(text="Back to 1:1")
        self.one_to_one_button.tooltip = "One screen pixel per image pixel (0.5 um)"
        # 4 export
        self.export_button = PushButton(text="Export this view (PNG)")
        self.export_button.tooltip = "Write the view's tissue, mask and settings next to the canvas folder"
        self.export_status = Label(value="")
        self.export_status.native.setWordWrap(True)
        self.controls_button = PushButton(text="All controls (DiffInfinite widget)")
        self.controls_button.tooltip = "Model, seed, generated masks, re-roll, export options"

        self.extend(
            [
                self.disclaimer,
                self.preset,
                _heading("1  Paint a class"),
                self.paint_class,
                Label(value="Brush size (mask px)"),
                self.brush_size,
                self.paint_button,
                _heading("2  Watch tissue appear"),
                self.progress,
                self.progress_bar,
                _heading("3  Zoom the pyramid"),
                self.overview_button,
                self.one_to_one_button,
                _heading("4  Export"),
                self.export_button,
                self.export_status,
                _heading("More"),
                self.controls_button,
            ]
        )
        self.brush_size.changed.connect(lambda v: setattr(ctrl.labels_layer, "brush_size", int(v)))
        self.paint_button.changed.connect(lambda *_: self._run(session.paint, self.paint_class.value))
        self.overview_button.changed.connect(lambda *_: self._run(session.zoom_overview))
        self.one_to_one_button.changed.connect(lambda *_: self._run(session.zoom_1to1))
        self.export_button.changed.connect(lambda *_: self._export())
        self.controls_button.changed.connect(lambda *_: self._run(session.show_controls))

        from .registry import disconnect_when_destroyed

        ctrl.state_changed.connect(self.refresh)  # tile progress, model loading, closing: no polling
        disconnect_when_destroyed(self.native, ctrl, "state_changed", self.refresh)
        self.refresh()

    def show_preset(self) -> None:
        """The preset line (again once the model is loaded: ``auto`` follows its device)."""
        p = self.session.preset
        self.preset.value = f"Preset: {p.name} - {self._preset_text()}"
        self.preset.tooltip = p.description

    def _preset_text(self) -> str:
        s = self.session.controller.store.settings
        steps = s.get("steps")  # the preset's, set when the canvas is made and again once the model is loaded
        return (
            f"{steps or 'model default'} steps, guidance {float(s.get('omega', 3.0)):g}, "
            f"up to {self.session.preset.max_view_tiles} tiles of the view at once"
        )

    def _run(self, fn, *args):
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - a button shows a notification, never a traceback
            from .registry import notify

            notify(f"DiffInfinite demo: {exc}")
            return None

    def _export(self) -> None:
        path = self._run(
            self.session.export_view,
            "png",
            lambda paths: setattr(self.export_status, "value", f"Saved {paths['image']}"),
        )
        if path is not None and not self.export_status.value.startswith("Saved"):
            self.export_status.value = f"Exporting to {path} ..."

    def refresh(self) -> None:
        """Show step 2's progress (on the canvas's ``state_changed``)."""
        ctrl = self.session.controller
        if ctrl is None or ctrl.closed:
            self.progress.value = "the demo canvas was closed"
            return
        if ctrl.scheduler is None:
            self.progress.value = (
                "loading the model ..."
                if ctrl.loading_model
                else "no model: choose one in the DiffInfinite widget"
            )
            return
        done, running, queued = self.session.progress()
        total = done + running + queued
        self.progress.value = f"{done} tiles done, {running} generating, {queued} queued"
        self.progress_bar.value = round(100 * done / total) if total else (100 if done else 0)
