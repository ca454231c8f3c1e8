"""The first DiffInfinite dock widget: generation settings and a class palette for painting masks.

Thin on purpose: it holds settings and sets the brush label of a Labels layer. Generation itself is not
wired yet (the Generate button is disabled and says so). Qt is reached only through magicgui.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
)

from . import DISCLAIMER
from .classes import CLASS_SETS, CONTEXT_PROMPTS, ClassSet, class_set

if TYPE_CHECKING:
    import napari
    from napari.layers import Labels

#: (label shown, key, number of classes or None when the user chooses it)
MODEL_CHOICES: list[tuple[str, str, int | None]] = [
    ("Embedded default (not available yet)", "embedded", 5),
    ("DiffInfinite 5-class", "diffinfinite-5", 5),
    ("DiffInfinite 10-class", "diffinfinite-10", 10),
    ("User checkpoint...", "user", None),
]
GENERATE_TOOLTIP = "The generation engine is coming: this button is disabled until sampling is wired to the canvas."
MAX_SEED = 2**31 - 1


def available_devices() -> list[str]:
    """Torch devices this machine can use, cpu always included."""
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def _text_color(rgba) -> str:
    r, g, b = rgba[:3]
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "#ffffff"


class DiffInfiniteWidget(Container):
    """Dock widget: model, device, guidance, steps, seed, context prompt, class palette."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._model_classes = {key: n for _, key, n in MODEL_CHOICES}

        note = Label(value=DISCLAIMER, label="Note")
        note.native.setWordWrap(True)
        self.model = ComboBox(
            label="Model", choices=[(title, key) for title, key, _ in MODEL_CHOICES], value="embedded"
        )
        self.checkpoint = FileEdit(label="Checkpoint", mode="r", filter="*.pt *.pth *.safetensors", visible=False)
        self.checkpoint.tooltip = "A released DiffInfinite model-*.pt, a bare UNet state dict, or a safetensors file"
        self.num_classes = ComboBox(label="Classes", choices=[(s.title, n) for n, s in CLASS_SETS.items()], value=5)
        self.num_classes.enabled = False

        from .cli import selected_device

        self.device = ComboBox(
            label="Device", choices=[(f"auto ({selected_device()})", "auto")] + [(d, d) for d in available_devices()],
            value="auto",
        )
        self.omega = FloatSpinBox(label="Guidance ω", value=3.0, min=0.0, max=20.0, step=0.5)
        self.omega.tooltip = "Classifier-free guidance weight omega (the network's scale is omega + 1); 0 = unguided"
        self.steps = SpinBox(label="Steps", value=50, min=1, max=1000)
        self.steps.tooltip = "DDIM steps"
        self.seed = SpinBox(label="Seed", value=0, min=0, max=MAX_SEED)
        self.reroll = PushButton(text="Re-roll seed")
        self.context = ComboBox(label="Context", choices=[(name, i) for i, name in CONTEXT_PROMPTS.items()], value=0)
        self.context.tooltip = "Context prompt of the mask model"

        self.labels_layer = ComboBox(label="Mask layer", choices=self._labels_layers)
        self.labels_layer.tooltip = "The Labels layer the palette paints on"
        active = napari_viewer.layers.selection.active
        if active is not None and any(layer is active for _, layer in self._labels_layers()):
            self.labels_layer.value = active
        self.palette = Container(label="Paint class", labels=False)
        self.palette_buttons: list[PushButton] = []
        self.apply_colors = PushButton(text="Use class colours on this layer")
        self.generate = PushButton(text="Generate", enabled=False)
        self.generate.tooltip = GENERATE_TOOLTIP

        self.extend(
            [
                note,
                self.model,
                self.checkpoint,
                self.num_classes,
                self.device,
                self.omega,
                self.steps,
                self.seed,
                self.reroll,
                self.context,
                self.labels_layer,
                self.palette,
                self.apply_colors,
                self.generate,
            ]
        )

        self.model.changed.connect(self._on_model_changed)
        self.num_classes.changed.connect(self._rebuild_palette)
        self.reroll.changed.connect(self.reroll_seed)
        self.labels_layer.changed.connect(self._update_enabled)
        self.apply_colors.changed.connect(self.apply_class_colors)
        self._rebuild_palette()

    # -- state -----------------------------------------------------------------------------------------------
    @property
    def class_set(self) -> ClassSet:
        return class_set(self.num_classes.value)

    def _labels_layers(self, _widget=None) -> list[tuple[str, Labels]]:
        from napari.layers import Labels

        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Labels)]

    def _on_model_changed(self, key: str) -> None:
        n = self._model_classes[key]
        self.checkpoint.visible = key == "user"
        self.num_classes.enabled = n is None
        if n is not None:
            self.num_classes.value = n

    def _rebuild_palette(self, *_args) -> None:
        self.palette.clear()
        self.palette_buttons = []
        for tissue in self.class_set:
            text = f"{tissue.id}  {tissue.name}" + ("  (eraser)" if tissue.id == 0 else "")
            button = PushButton(text=text)
            if tissue.color[3] > 0:
                button.native.setStyleSheet(
                    f"background-color: {tissue.hex}; color: {_text_color(tissue.color)};"
                )
            button.tooltip = f"Paint label {tissue.id} ({tissue.name}) on the mask layer"
            button.changed.connect(lambda *_, label=tissue.id: self.select_class(label))
            self.palette_buttons.append(button)
        self.palette.extend(self.palette_buttons)
        self._update_enabled()

    def _update_enabled(self, *_args) -> None:
        has_layer = self.labels_layer.value is not None
        for button in self.palette_buttons:
            button.enabled = has_layer
        self.apply_colors.enabled = has_layer

    # -- actions ---------------------------------------------------------------------------------------------
    def select_class(self, label: int) -> None:
        """Make ``label`` the brush label of the chosen mask layer."""
        layer = self.labels_layer.value
        if layer is None:
            return
        layer.selected_label = label

    def apply_class_colors(self, *_args) -> None:
        """Colour the chosen mask layer with the class palette and name its labels."""
        layer = self.labels_layer.value
        if layer is None:
            return
        layer.colormap = self.class_set.color_dict()
        layer.features = self.class_set.features()

    def reroll_seed(self, *_args) -> int:
        self.seed.value = random.randrange(MAX_SEED + 1)
        return self.seed.value
