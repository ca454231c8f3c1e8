"""The DiffInfinite dock widget: model and generation settings, the class palette, and the controls of the
canvas open in the viewer (generate / pause / cancel, progress, masks - generated, loaded from a label image or a
QuPath GeoJSON, and the "unpainted areas" setting -, re-roll, export of the view, a drawn rectangle or the whole
generated extent, and Demo mode).

Thin on purpose: the canvas itself is driven by
:class:`~napari_diffinfinite.widgets.canvas_controller.CanvasController` (layers, camera, paint events,
scheduler); this widget only turns buttons into its calls and shows its state. Every failure a user can cause
(a missing embedded model, a checkpoint of the wrong kind, a layer that is not a Labels layer, an export with
tissue missing) becomes a napari notification, never a traceback. Qt is reached only through magicgui/qtpy.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)

from . import DISCLAIMER
from .classes import CLASS_SETS, CONTEXT_PROMPTS, ClassSet, class_set
from .model_manifest import SAMPLER_LABELS

if TYPE_CHECKING:
    import napari
    from napari.layers import Labels

log = logging.getLogger(__name__)

#: (label shown, key, number of classes or None when the model tells)
MODEL_CHOICES: list[tuple[str, str, int | None]] = [
    ("Embedded default", "embedded", 5),
    ("DiffInfinite 5-class checkpoints", "diffinfinite-5", 5),
    ("DiffInfinite 10-class checkpoints", "diffinfinite-10", 10),
    ("Model folder...", "user", None),
]
GENERATE_TOOLTIP = (
    "Generate the tissue in view on the open canvas (more is generated as you pan); without a canvas, "
    "a new one is made from the chosen mask layer"
)
MAX_SEED = 2**31 - 1
#: The image samplers (model.diffusion.SAMPLERS, named; a test ties the two).
SAMPLER_CHOICES = [(label, name) for name, label in sorted(SAMPLER_LABELS.items(), reverse=True)]
UNPAINTED_CHOICES = [("unlabelled (label 0)", "unlabelled"), ("generated masks", "generated")]
EXPORT_REGIONS = [
    ("current view", "view"),
    ("drawn rectangle", "rectangle"),
    ("whole generated extent", "generated"),
]
MASK_FILE_FILTER = "Masks (*.png *.tif *.tiff *.geojson *.json);;All files (*)"


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


def device_choices() -> list[tuple[str, str]]:
    """The Device box's choices: "auto" (naming the device it picks here) and every device available."""
    from .model.device import select_device

    return [(f"auto ({select_device()})", "auto")] + [(d, d) for d in available_devices()]


def _text_color(rgba) -> str:
    r, g, b = rgba[:3]
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "#ffffff"


def _path_of(edit: FileEdit) -> Path | None:
    text = str(edit.line_edit.value).strip()
    return Path(text).expanduser() if text else None


def _notify(message: str, severity: str = "error") -> None:
    from .widgets.registry import notify

    notify(message, severity)


def _guarded(fn):
    """A button callback whose failures become notifications."""

    @functools.wraps(fn)
    def call(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except Exception as exc:
            log.debug("%s failed", fn.__name__, exc_info=True)
            _notify(f"DiffInfinite: {exc}")
            return None

    return call


def labels_to_latent(layer, pixel_size: float, downsampling: int) -> np.ndarray:
    """A plain 2-D Labels layer's labels at canvas latent scale (one label per ``downsampling`` image px), by
    nearest sampling at each latent cell's centre, from the layer's own ``scale`` (um per layer pixel)."""
    data = np.asarray(layer.data if not getattr(layer, "multiscale", False) else layer.data[0])
    if data.ndim != 2:
        raise ValueError(f"the mask layer {layer.name!r} is {data.ndim}-D; a canvas mask is 2-D")
    f = float(layer.scale[-1]) / pixel_size  # image px per layer pixel
    h, w = data.shape
    lh, lw = max(1, round(h * f / downsampling)), max(1, round(w * f / downsampling))
    ys = np.minimum(((np.arange(lh) * downsampling + downsampling / 2) / f).astype(int), h - 1)
    xs = np.minimum(((np.arange(lw) * downsampling + downsampling / 2) / f).astype(int), w - 1)
    return np.ascontiguousarray(data[np.ix_(ys, xs)])


class DiffInfiniteWidget(Container):
    """Dock widget: model, device, guidance, steps, seed, context, palette; canvas, generation and export."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._model_classes = {key: n for _, key, n in MODEL_CHOICES}
        #: the loaded model (shared with the canvas) and how it was specified
        self.loaded_model = None
        self.loaded_spec = None
        self.model_state = "none"  # "loading", "loaded", "error"
        self._workers: list = []
        self._controller = None

        note = Label(value=DISCLAIMER, label="Note")
        note.native.setWordWrap(True)
        self.disclaimer = note
        # -- model ---------------------------------------------------------------------------------------------
        self.model = ComboBox(
            label="Model", choices=[(title, key) for title, key, _ in MODEL_CHOICES], value="embedded"
        )
        self.checkpoint = FileEdit(
            label="Image checkpoint", mode="r", filter="*.pt *.pth *.safetensors", visible=False
        )
        self.checkpoint.tooltip = "The released DiffInfinite image model (image_gen*/model-*.pt)"
        self.mask_checkpoint = FileEdit(
            label="Mask checkpoint", mode="r", filter="*.pt *.pth *.safetensors", visible=False
        )
        self.mask_checkpoint.tooltip = (
            "Optional: the released mask model (mask_gen*/model-*.pt), for Generate masks"
        )
        self.vae = FileEdit(label="SD2 VAE folder", mode="d", visible=False)
        self.vae.tooltip = "Optional: a local Stable Diffusion 2 VAE folder (else the Hugging Face cache)"
        self.model_folder = FileEdit(label="Model folder", mode="d", visible=False)
        self.model_folder.tooltip = "A model folder with model.json (as `diffinfinite bundle` writes it)"
        self.num_classes = ComboBox(
            label="Classes", choices=[(s.title, n) for n, s in CLASS_SETS.items()], value=5
        )
        self.num_classes.enabled = False

        # a callable: magicgui and napari reset choices (layers added, removed), so the list fills itself in
        self._devices = [("auto", "auto")]
        self.device = ComboBox(label="Device", choices=self._device_choices, value="auto")
        self.load_model_button = PushButton(text="Load model")
        self.model_status = Label(value="no model loaded")
        self.omega = FloatSpinBox(label="Guidance ω", value=3.0, min=0.0, max=20.0, step=0.5)
        self.omega.tooltip = (
            "Classifier-free guidance weight omega of the image model (the network's scale is "
            "omega + 1); 0 = unguided. Set to the model's default when a model loads. Applies to "
            "tiles generated from now on."
        )
        self.steps = SpinBox(label="Steps", value=50, min=1, max=1000)
        self.steps.tooltip = "Sampling steps; applies to tiles generated from now on"
        self.sampler = ComboBox(label="Sampler", choices=SAMPLER_CHOICES, value="ddim")
        self.sampler.tooltip = (
            "DDIM is the reference's sampler (the released checkpoints' default); DPM-Solver++(2M) "
            "SDE is sharper and truer to the data at the same cost (the embedded model's "
            "default). Set to the model's when a model loads; applies to tiles generated from "
            "now on."
        )
        self.seed = SpinBox(label="Seed", value=0, min=0, max=MAX_SEED)
        self.seed.tooltip = "Seed of a new canvas and of generated masks"
        self.reroll = PushButton(text="Re-roll seed")
        self.context = ComboBox(
            label="Context", choices=[(name, i) for i, name in CONTEXT_PROMPTS.items()], value=0
        )
        self.context.tooltip = "Context prompt of the mask model"
        # -- canvas --------------------------------------------------------------------------------------------
        self.new_canvas_button = PushButton(text="New canvas...")
        self.new_canvas_button.tooltip = (
            "A new canvas in a folder you choose (the chosen mask layer is painted in)"
        )
        self.open_canvas_button = PushButton(text="Open canvas...")
        self.demo_button = PushButton(text="Demo mode")
        self.demo_button.tooltip = "Open the demo canvas and generate it, with a guided tour"
        self.canvas_status = Label(value="no canvas open")
        # -- mask ----------------------------------------------------------------------------------------------
        self.labels_layer = ComboBox(label="Mask layer", choices=self._labels_layers)
        self.labels_layer.tooltip = "The Labels layer the palette paints on"
        active = napari_viewer.layers.selection.active
        if active is not None and any(layer is active for _, layer in self._labels_layers()):
            self.labels_layer.value = active
        self.palette = Container(label="Paint class", labels=False)
        self.palette_buttons: list[PushButton] = []
        self.apply_colors = PushButton(text="Use class colours on this layer")
        self.generate_masks_button = PushButton(text="Generate masks")
        self.generate_masks_button.tooltip = (
            "Fill the selection (or the view) with a mask from the mask model for the "
            "context; painted labels are kept unless 'overwrite' is ticked"
        )
        self.overwrite_masks = CheckBox(text="overwrite painted labels", value=False)
        self.unpainted = ComboBox(label="Unpainted areas", choices=UNPAINTED_CHOICES, value="unlabelled")
        self.unpainted.tooltip = (
            "What tiles generated where no label is painted get: label 0 (unlabelled: the "
            "model's 'no condition'), or a mask from the mask model for the context, generated "
            "first (painted labels are never overwritten)"
        )
        self.load_mask_button = PushButton(text="Load mask from file...")
        self.load_mask_button.tooltip = (
            "A label image (PNG/TIFF of class ids) or a QuPath GeoJSON annotation export, "
            "placed at the centre of the view; its unlabelled parts keep what is painted"
        )
        self.mask_file_um = FloatSpinBox(label="Mask file µm/px", value=0.0, min=0.0, max=1000.0, step=0.25)
        self.mask_file_um.tooltip = (
            "Micrometres per pixel of the mask file (a GeoJSON's coordinate unit). auto: one "
            "label per 8 image px for label images, the canvas's pixel size for GeoJSON"
        )
        with contextlib.suppress(Exception):
            self.mask_file_um.native.setSpecialValueText("auto")
        # -- tissue --------------------------------------------------------------------------------------------
        self.generate = PushButton(text="Generate")
        self.generate.tooltip = GENERATE_TOOLTIP
        self.pause = PushButton(text="Pause")
        self.cancel = PushButton(text="Cancel")
        self.select_region = PushButton(text="Draw selection")
        self.select_region.tooltip = (
            "Add a rectangle layer: its last rectangle is the region to re-roll, mask or export"
        )
        self.reroll_region = PushButton(text="Re-roll tissue")
        self.reroll_region.tooltip = (
            "Generate the tissue under the selection (or the view) again with a new seed"
        )
        self.progress = Label(value="")
        self.tile_progress = ProgressBar(label="Tile", min=0, max=100, value=0)
        # -- export --------------------------------------------------------------------------------------------
        self.export_path = FileEdit(label="Export to", mode="w", filter="*.ome.tif *.png")
        self.export_format = ComboBox(
            label="Format", choices=[("pyramidal OME-TIFF", "ome.tif"), ("PNG", "png")], value="ome.tif"
        )
        self.export_region = ComboBox(label="Region", choices=EXPORT_REGIONS, value="view")
        self.export_region.tooltip = (
            "What to export: the view, the rectangle drawn with 'Draw selection', or everything generated"
        )
        self.generate_missing = CheckBox(text="generate missing tiles first", value=False)
        self.overwrite_export = CheckBox(text="overwrite existing files", value=False)
        self.export_button = PushButton(text="Export")
        self.export_cancel = PushButton(text="Cancel export")
        self.export_progress = ProgressBar(label="Export", min=0, max=100, value=0)

        self.extend(
            [
                note,
                self.model,
                self.checkpoint,
                self.mask_checkpoint,
                self.vae,
                self.model_folder,
                self.num_classes,
                self.device,
                self.load_model_button,
                self.model_status,
                self.omega,
                self.steps,
                self.sampler,
                self.seed,
                self.reroll,
                self.context,
                self.new_canvas_button,
                self.open_canvas_button,
                self.demo_button,
                self.canvas_status,
                self.labels_layer,
                self.palette,
                self.apply_colors,
                self.generate_masks_button,
                self.overwrite_masks,
                self.unpainted,
                self.load_mask_button,
                self.mask_file_um,
                self.generate,
                self.pause,
                self.cancel,
                self.select_region,
                self.reroll_region,
                self.progress,
                self.tile_progress,
                self.export_path,
                self.export_format,
                self.export_region,
                self.generate_missing,
                self.overwrite_export,
                self.export_button,
                self.export_cancel,
                self.export_progress,
            ]
        )

        self.model.changed.connect(self._on_model_changed)
        self.num_classes.changed.connect(self._rebuild_palette)
        self.reroll.changed.connect(self.reroll_seed)
        self.labels_layer.changed.connect(self._update_enabled)
        self.apply_colors.changed.connect(self.apply_class_colors)
        self.load_model_button.changed.connect(lambda *_: self.load_selected_model())
        self.new_canvas_button.changed.connect(lambda *_: self.new_canvas())
        self.open_canvas_button.changed.connect(lambda *_: self.open_canvas())
        self.generate_masks_button.changed.connect(lambda *_: self.generate_masks())
        self.unpainted.changed.connect(lambda *_: self.set_unpainted())
        self.context.changed.connect(self._on_context_changed)
        self.load_mask_button.changed.connect(lambda *_: self.load_mask_file())
        self.demo_button.changed.connect(lambda *_: self.demo_mode())
        self.generate.changed.connect(lambda *_: self.generate_tissue())
        self.pause.changed.connect(lambda *_: self.toggle_pause())
        self.cancel.changed.connect(lambda *_: self.cancel_generation())
        self.select_region.changed.connect(lambda *_: self.draw_selection())
        self.reroll_region.changed.connect(lambda *_: self.reroll_tissue())
        self.export_button.changed.connect(lambda *_: self.export())
        self.export_cancel.changed.connect(lambda *_: self.cancel_export())
        self._rebuild_palette()

        from .widgets.registry import canvas_registry, disconnect_when_destroyed

        # follow the canvas of this viewer (opened here, by the reader or as a sample) through events, no polling
        canvas_registry.changed.connect(self._on_canvas_changed)
        disconnect_when_destroyed(self.native, canvas_registry, "changed", self._on_canvas_changed)
        self._on_canvas_changed()

    def _device_choices(self, _widget=None) -> list[tuple[str, str]]:
        """The Device box's choices: only "auto" until torch is imported - by a model's load, not for this list
        (its import holds the GIL up to a second at a time, freezing the viewer wherever it runs)."""
        import sys

        if "torch" in sys.modules and len(self._devices) == 1:
            self._devices = device_choices()
        return self._devices

    # -- state -----------------------------------------------------------------------------------------------
    @property
    def class_set(self) -> ClassSet:
        return class_set(self.num_classes.value)

    @property
    def controller(self):
        """The canvas open in this viewer (None if none)."""
        from .widgets.registry import controller_for

        return controller_for(self._viewer)

    def _labels_layers(self, _widget=None) -> list[tuple[str, Labels]]:
        from napari.layers import Labels

        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Labels)]

    def _on_model_changed(self, key: str) -> None:
        n = self._model_classes[key]
        released = key.startswith("diffinfinite")
        for edit in (self.checkpoint, self.mask_checkpoint, self.vae):
            edit.visible = released
        self.model_folder.visible = key == "user"
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

    def _keep(self, worker) -> None:
        self._workers.append(worker)
        worker.finished.connect(lambda: self._workers.remove(worker) if worker in self._workers else None)

    # -- palette ---------------------------------------------------------------------------------------------
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

    # -- model -----------------------------------------------------------------------------------------------
    def model_spec(self):
        """The :class:`~napari_diffinfinite.widgets.canvas_models.ModelSpec` of the current choices."""
        from .widgets.canvas_models import ModelSpec, default_model_source

        key = self.model.value
        device = self.device.value
        if key == "embedded":
            return ModelSpec(default_model_source(), device=device)
        if key == "user":
            folder = _path_of(self.model_folder)
            if folder is None:
                raise ValueError("choose a model folder (with model.json) first")
            return ModelSpec(folder, device=device)
        ckpt = _path_of(self.checkpoint)
        if ckpt is None:
            raise ValueError("choose the DiffInfinite image checkpoint (image_gen*/model-*.pt) first")
        return ModelSpec(
            "diffinfinite",
            device=device,
            image_checkpoint=ckpt,
            mask_checkpoint=_path_of(self.mask_checkpoint),
            num_classes=self._model_classes[key],
            vae=_path_of(self.vae),
        )

    @_guarded
    def load_selected_model(self, then=None):
        """Load the chosen model in a worker thread (cached per process); ``then(model)`` afterwards. The open
        canvas generates with it. Returns the worker."""
        from .widgets.canvas_controller import load_model_in_thread
        from .widgets.canvas_models import cached_model, model_error_message

        spec = self.model_spec()
        model = cached_model(spec)
        if model is not None:
            self._model_loaded(spec, model, then)
            return None
        self.model_state = "loading"
        self.model_status.value = f"loading {spec.describe()}..."

        def failed(exc):
            self.model_state = "error"
            self.model_status.value = "no model loaded"
            _notify(f"DiffInfinite: {model_error_message(exc, spec)}")

        worker = load_model_in_thread(spec, lambda m: self._model_loaded(spec, m, then), failed)
        self._keep(worker)
        return worker

    def _model_loaded(self, spec, model, then=None) -> None:
        self.device.reset_choices()  # torch is in now: every device can be listed
        try:
            self.loaded_model, self.loaded_spec = model, spec
            self.model_state = "loaded"
            self.model_status.value = f"{model.name}: {model.num_classes} classes on {model.device}"
            if self.controller is None:  # an open canvas keeps its own settings (see _attach)
                self.omega.value = float(model.default_omega)
                self.steps.value = int(model.default_steps)
                self.sampler.value = model.sampler
            if model.num_classes in CLASS_SETS and self.num_classes.value != model.num_classes:
                self.num_classes.value = model.num_classes
            ctrl = self.controller
            if ctrl is not None and ctrl.model is not model and not ctrl.read_only:
                ctrl.set_model(model, spec)
            if (
                ctrl is not None and ctrl.sampler is not None
            ):  # a canvas made without a model takes the model's
                self.sampler.value = ctrl.sampler
            if then is not None:
                then(model)
        except Exception as exc:  # noqa: BLE001
            _notify(f"DiffInfinite: {exc}")

    def _with_model(self, then) -> None:
        """Run ``then(model)`` with the loaded model, loading the chosen one first if needed."""
        ctrl = self.controller
        if ctrl is not None and ctrl.model is not None:
            then(ctrl.model)
        elif self.loaded_model is not None:
            then(self.loaded_model)
        else:
            self.load_selected_model(then=then)

    # -- canvas ----------------------------------------------------------------------------------------------
    def _on_canvas_changed(self, _viewer=None) -> None:
        """A canvas opened or closed (in any viewer): attach to this viewer's, refresh when its state changes."""
        from .widgets.registry import disconnect

        ctrl = self.controller
        if ctrl is not self._controller:
            if self._controller is not None:
                disconnect(self._controller.state_changed, self._refresh)
            if ctrl is not None:
                ctrl.state_changed.connect(self._refresh)
            self._attach(ctrl)
        self._refresh()

    def _attach(self, ctrl) -> None:
        self._controller = ctrl
        if ctrl is None:
            self.canvas_status.value = "no canvas open"
            return
        self.labels_layer.reset_choices()
        self.labels_layer.value = ctrl.labels_layer
        n = ctrl.store.num_classes
        if n in CLASS_SETS and self.num_classes.value != n:
            self.num_classes.value = n
        s = ctrl.store.settings
        self.omega.value = float(s.get("omega", self.omega.value))
        if s.get("steps"):
            self.steps.value = int(s["steps"])
        if ctrl.sampler is not None:
            self.sampler.value = ctrl.sampler
        if self.unpainted.value != ctrl.unpainted:
            with self.unpainted.changed.blocked():
                self.unpainted.value = ctrl.unpainted
        ctrl.session.unpainted_context = int(self.context.value)
        h, w = ctrl.grid.shape
        self.canvas_status.value = f"{ctrl.folder.name}: {h} x {w} px" + (
            "  (read-only)" if ctrl.read_only else ""
        )
        self.canvas_status.tooltip = str(ctrl.folder)

    @_guarded
    def new_canvas(self, folder=None, *, from_layer=None, start: bool = False):
        """A new canvas in ``folder`` (asked for if None) for the loaded (or chosen) model, opened in the viewer at
        its centre, 1:1. ``from_layer`` (default: the chosen mask layer, if it is not a canvas's) is painted in;
        with ``start`` generation starts."""
        from napari.layers import Labels

        from .widgets.canvas_layers import canvas_meta

        if from_layer is None:
            chosen = self.labels_layer.value
            from_layer = chosen if chosen is not None and canvas_meta(chosen) is None else None
        elif not isinstance(from_layer, Labels):
            raise TypeError(
                f"{getattr(from_layer, 'name', from_layer)!r} is not a Labels layer; a canvas is painted "
                "from a Labels layer (class ids)"
            )
        if folder is None:
            from qtpy.QtWidgets import QFileDialog

            folder = QFileDialog.getExistingDirectory(self.native, "Folder for the new canvas (empty or new)")
            if not folder:
                return None
        folder = Path(folder)
        if folder.exists() and any(folder.iterdir()):
            folder = folder / "canvas"
            if folder.exists():
                raise FileExistsError(f"{folder} already exists; choose an empty folder")
        self._with_model(lambda model: self._create_canvas(folder, model, from_layer, start))
        return folder

    def _create_canvas(self, folder: Path, model, from_layer, start: bool = False) -> None:
        from .canvas.store import CanvasStore
        from .widgets.canvas_controller import open_canvas

        spec = self.loaded_spec
        settings = {
            "seed": int(self.seed.value),
            "omega": float(self.omega.value),
            "steps": int(self.steps.value),
            "sampler": self.sampler.value,
            "context": int(self.context.value),
        }
        if spec is not None:
            settings["model_source"] = spec.source
        try:
            store = CanvasStore.create_for_model(folder, model, **settings)
        except (OSError, ValueError) as exc:
            _notify(f"DiffInfinite: cannot create a canvas in {folder}: {exc}")
            return
        centre = store.grid.centre()
        if from_layer is not None:
            lab = labels_to_latent(from_layer, store.pixel_size_um, store.grid.downsampling)
            if lab.max(initial=0) >= store.num_classes:
                lab = np.where(lab < store.num_classes, lab, 0)
            lh, lw = lab.shape
            d = store.grid.downsampling
            ly, lx = centre[0] // d - lh // 2, centre[1] // d - lw // 2
            store.write_labels(ly, lx, lab.astype(np.uint8))
            centre = ((ly + lh / 2) * d, (lx + lw / 2) * d)
        ctrl = open_canvas(self._viewer, store=store, model=model, model_spec=spec, camera=(centre, 1.0))
        if start:
            self._start(ctrl)

    @_guarded
    def open_canvas(self, folder=None):
        """Open a canvas folder (asked for if None) in the viewer; it generates with the loaded model, else with
        the model it was made with."""
        from ._reader import is_canvas_folder
        from .widgets.canvas_controller import open_canvas

        if folder is None:
            from qtpy.QtWidgets import QFileDialog

            folder = QFileDialog.getExistingDirectory(self.native, "Open a DiffInfinite canvas folder")
            if not folder:
                return None
        if not is_canvas_folder(folder):
            raise ValueError(f"{folder} is not a DiffInfinite canvas folder (no canvas zarr.json there)")
        ctrl = open_canvas(self._viewer, folder, load_model=self.loaded_model is None)
        if self.loaded_model is not None and not ctrl.read_only:
            try:
                ctrl.set_model(self.loaded_model, self.loaded_spec)
            except ValueError as exc:
                _notify(f"DiffInfinite: the loaded model cannot continue this canvas: {exc}", "warning")
        return ctrl

    # -- generation ------------------------------------------------------------------------------------------
    @_guarded
    def generate_tissue(self):
        """Generate the view on the open canvas (a new canvas from the chosen mask layer if none is open)."""
        ctrl = self.controller
        if ctrl is None:
            import tempfile

            self.new_canvas(Path(tempfile.mkdtemp(prefix="diffinfinite-canvas-")) / "canvas", start=True)
            return
        if ctrl.read_only:
            raise PermissionError("this canvas is open read-only (another program is generating it)")
        if ctrl.scheduler is None:

            def go(model):
                if ctrl.model is not model:
                    ctrl.set_model(model, self.loaded_spec)
                self._start(ctrl)

            self._with_model(go)
            return
        self._start(ctrl)

    def _start(self, ctrl) -> None:
        if ctrl is None or ctrl.closed:
            return
        try:
            ctrl.apply_settings(omega=self.omega.value, steps=self.steps.value, sampler=self.sampler.value)
            ctrl.start()
            self.pause.text = "Pause"
        except Exception as exc:  # noqa: BLE001
            _notify(f"DiffInfinite: {exc}")

    @_guarded
    def toggle_pause(self):
        ctrl = self.controller
        if ctrl is None or ctrl.scheduler is None:
            return
        if ctrl.paused:
            ctrl.resume()
            self.pause.text = "Pause"
        else:
            ctrl.pause()
            self.pause.text = "Resume"

    @_guarded
    def cancel_generation(self):
        ctrl = self.controller
        if ctrl is not None:
            ctrl.cancel()
            self.pause.text = "Pause"

    @_guarded
    def draw_selection(self):
        ctrl = self._require_canvas()
        layer = ctrl.selection_layer(create=True)
        self._viewer.layers.selection.active = layer
        layer.mode = "add_rectangle"
        self.export_region.value = "rectangle"

    @_guarded
    def reroll_tissue(self, rect_px=None):
        """Re-roll the tissue of the selection (or view) with a new seed."""
        return self._require_canvas(model=True).reroll(rect_px, seed=random.randrange(MAX_SEED + 1))

    @_guarded
    def generate_masks(self, rect_px=None):
        """Generate masks for the selection (or view) with the chosen context (worker thread)."""
        ctrl = self._require_canvas(model=True)
        return ctrl.generate_masks(
            rect_px,
            context=int(self.context.value),
            seed=int(self.seed.value),
            overwrite=bool(self.overwrite_masks.value),
        )

    @_guarded
    def set_unpainted(self, mode: str | None = None):
        """Apply the "Unpainted areas" setting to the open canvas (also recorded in it)."""
        mode = mode or self.unpainted.value
        if self.unpainted.value != mode:
            self.unpainted.value = mode  # calls this again
            return
        ctrl = self.controller
        if ctrl is None:
            return
        try:
            ctrl.set_unpainted(mode, context=int(self.context.value))
        except Exception:
            with self.unpainted.changed.blocked():
                self.unpainted.value = ctrl.unpainted
            raise

    def _on_context_changed(self, value) -> None:
        ctrl = self.controller
        if ctrl is not None:
            ctrl.session.unpainted_context = int(value)

    @_guarded
    def load_mask_file(self, path=None, *, centre_px=None):
        """Load a label image or QuPath GeoJSON into the open canvas at the centre of the view (asks for the file
        if ``path`` is None); the tiles under it regenerate. Bad files become notifications."""
        ctrl = self._require_canvas()
        if path is None:
            from qtpy.QtWidgets import QFileDialog

            path, _ = QFileDialog.getOpenFileName(
                self.native, "Load a mask (label image or QuPath GeoJSON)", "", MASK_FILE_FILTER
            )
            if not path:
                return None
        return ctrl.load_mask_file(path, centre_px=centre_px, file_um=float(self.mask_file_um.value) or None)

    @_guarded
    def demo_mode(self):
        """Demo mode (napari_diffinfinite.demo.enter_demo_mode)."""
        try:
            from .demo import enter_demo_mode
        except ImportError as exc:
            raise RuntimeError(f"demo mode is not available in this installation ({exc})") from None
        return enter_demo_mode(self._viewer)

    def _require_canvas(self, model: bool = False):
        ctrl = self.controller
        if ctrl is None:
            raise RuntimeError(
                "open a canvas first (File > Open Sample > DiffInfinite demo canvas, or New canvas)"
            )
        if model and ctrl.model is None:
            raise RuntimeError("load a model first (Load model)")
        return ctrl

    # -- export ----------------------------------------------------------------------------------------------
    @_guarded
    def export(self, path=None, rect_px=None, region: str | None = None):
        """Export a region of the open canvas: ``rect_px``, else ``region`` (default: the 'Region' choice -
        ``"view"``, ``"rectangle"`` drawn with Draw selection, or ``"generated"``, the whole generated extent), in
        a worker thread; regions with tissue missing are refused unless 'generate missing tiles first'."""
        ctrl = self._require_canvas()
        path = Path(path) if path is not None else _path_of(self.export_path)
        if path is None:
            raise ValueError("choose a file to export to ('Export to')")
        if rect_px is None:
            rect_px = ctrl.region_rect(region or self.export_region.value)
        return ctrl.export(
            path,
            rect_px,
            fmt=self.export_format.value,
            overwrite=bool(self.overwrite_export.value),
            generate_missing=bool(self.generate_missing.value),
        )

    @_guarded
    def cancel_export(self):
        ctrl = self.controller
        if ctrl is not None:
            ctrl.cancel_export()

    # -- progress --------------------------------------------------------------------------------------------
    def _refresh(self) -> None:
        """Show the canvas's state (on its ``state_changed``: the model, tile and export progress)."""
        try:
            ctrl = self._controller
            self.generate.enabled = not (ctrl is not None and ctrl.read_only)
            if ctrl is not None and ctrl.model is not None and len(self._devices) == 1:
                self.device.reset_choices()  # a canvas's model brought torch in: every device can be listed
            if ctrl is not None and ctrl.model is not None and ctrl.model is not self.loaded_model:
                m = ctrl.model
                self.model_status.value = (
                    f"canvas generates with {m.name}: {m.num_classes} classes on {m.device}"
                )
            if ctrl is None or ctrl.scheduler is None:
                self.progress.value = "no canvas open" if ctrl is None else "no model loaded for this canvas"
                self.tile_progress.value = 0
            else:
                s = ctrl.scheduler.stats
                state = "cancelled" if not ctrl.generating and s.state != "paused" else s.state
                self.progress.value = (
                    f"{state}: {s.tiles_done} tiles done, {s.tiles_queued} queued, "
                    f"{s.tiles_per_second:.2f} tiles/s"
                )
                self.tile_progress.value = round(100 * s.current_fraction) if s.current is not None else 0
            if ctrl is not None:
                done, total = ctrl.export_progress
                self.export_progress.value = round(100 * done / total) if total else 0
        except Exception:
            log.debug("progress poll failed", exc_info=True)
