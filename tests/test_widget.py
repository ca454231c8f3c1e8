"""The napari face: manifest, the demo-mask sample, dock widget and its class palette (needs a display:
xvfb-run -a). The canvas controls are tested with a canvas in test_plugin_canvas.py."""

from __future__ import annotations

import random

import numpy as np
import pytest

from napari_diffinfinite import DISCLAIMER
from napari_diffinfinite._widget import GENERATE_TOOLTIP, MAX_SEED, DiffInfiniteWidget
from napari_diffinfinite.classes import FIVE_CLASSES, TEN_CLASSES

PLUGIN = "napari-diffinfinite"


def _open_demo(viewer):
    (layer,) = viewer.open_sample(PLUGIN, "demo_mask")
    return layer


def _dock(viewer) -> DiffInfiniteWidget:
    _dock_widget, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "DiffInfinite")
    assert isinstance(widget, DiffInfiniteWidget)
    return widget


def _click(button) -> None:
    button.native.click()


def test_demo_sample_opens_as_a_5_class_labels_layer(viewer):
    layer = _open_demo(viewer)
    assert layer.__class__.__name__ == "Labels"
    assert layer.name == "DiffInfinite demo mask"
    assert layer.data.shape == (2560, 2560)
    assert set(np.unique(layer.data).tolist()) == {0, 1, 3, 4}
    np.testing.assert_allclose(layer.scale, [0.5, 0.5])
    assert [str(u) for u in layer.units] == ["micrometer", "micrometer"]
    # colours: the class palette, label 0 transparent
    ids = np.arange(len(FIVE_CLASSES))
    np.testing.assert_allclose(layer.colormap.map(ids), [c.color for c in FIVE_CLASSES], atol=1e-6)
    assert list(layer.features["class"]) == FIVE_CLASSES.names
    assert layer.metadata["disclaimer"] == DISCLAIMER


def test_dock_widget_from_the_manifest_and_its_defaults(viewer, qtbot):
    layer = _open_demo(viewer)
    widget = _dock(viewer)
    # torch is imported here (a model was loaded): the device list names what "auto" picks
    assert [widget.device.native.itemText(i) for i in range(2)] == ["auto (cpu)", "cpu"]
    assert viewer.window.dock_widgets["DiffInfinite (napari-diffinfinite)"] is widget
    assert widget.model.value == "embedded"
    assert widget.omega.value == 3.0
    assert widget.steps.value == 50
    assert widget.device.value == "auto"
    assert widget.context.value == 0
    assert widget.labels_layer.value is layer
    assert [b.text.split("  ")[1] for b in widget.palette_buttons] == FIVE_CLASSES.names
    # no canvas yet: Generate makes one from the chosen mask layer; the progress line says there is none
    assert widget.generate.enabled and widget.generate.tooltip == GENERATE_TOOLTIP
    assert widget.progress.value == "no canvas open" and widget.canvas_status.value == "no canvas open"
    for button in (widget.pause, widget.cancel, widget.reroll_region, widget.generate_masks_button,
                   widget.export_button, widget.new_canvas_button, widget.open_canvas_button,
                   widget.load_mask_button, widget.demo_button):
        assert not button.native.isHidden()
    # unpainted areas, mask files, export regions
    assert widget.unpainted.value == "unlabelled" and widget.unpainted.choices == ("unlabelled", "generated")
    assert widget.mask_file_um.value == 0 and widget.mask_file_um.native.text() == "auto"
    assert widget.export_region.value == "view"
    assert widget.export_region.choices == ("view", "rectangle", "generated")


def test_palette_sets_the_selected_label_of_the_chosen_layer(viewer):
    layer = _open_demo(viewer)
    widget = _dock(viewer)
    for label in (3, 4, 1, 0, 2):
        _click(widget.palette_buttons[label])
        assert layer.selected_label == label


def test_palette_follows_the_model_choice(viewer):
    layer = _open_demo(viewer)
    widget = _dock(viewer)
    widget.model.value = "diffinfinite-10"
    assert len(widget.palette_buttons) == 10
    assert not widget.num_classes.enabled
    _click(widget.palette_buttons[8])
    assert TEN_CLASSES[8].name == "Tumor stroma"
    assert layer.selected_label == 8

    # the released checkpoints come from file pickers (image, optional mask, optional local SD2 VAE)
    assert not widget.checkpoint.native.isHidden() and not widget.mask_checkpoint.native.isHidden()
    assert not widget.vae.native.isHidden() and widget.model_folder.native.isHidden()

    widget.model.value = "user"
    assert widget.num_classes.enabled
    assert widget.checkpoint.native.isHidden() and not widget.model_folder.native.isHidden()
    widget.num_classes.value = 5
    assert len(widget.palette_buttons) == 5

    widget.model.value = "embedded"
    assert widget.checkpoint.native.isHidden() and widget.model_folder.native.isHidden()


def test_palette_targets_a_new_labels_layer_and_colours_it(viewer):
    _open_demo(viewer)
    widget = _dock(viewer)
    painted = viewer.add_labels(np.zeros((64, 64), dtype=np.uint8), name="painted")
    choices = list(widget.labels_layer.choices)
    assert painted in choices
    widget.labels_layer.value = painted
    _click(widget.palette_buttons[2])
    assert painted.selected_label == 2
    assert viewer.layers["DiffInfinite demo mask"].selected_label != 2

    _click(widget.apply_colors)
    np.testing.assert_allclose(painted.colormap.map(np.array([2])), [FIVE_CLASSES[2].color], atol=1e-6)
    assert list(painted.features["class"]) == FIVE_CLASSES.names


def test_palette_is_disabled_without_a_labels_layer(viewer):
    widget = _dock(viewer)
    assert widget.labels_layer.value is None
    assert not any(b.enabled for b in widget.palette_buttons)
    viewer.add_labels(np.zeros((8, 8), dtype=np.uint8))
    assert widget.labels_layer.value is not None
    assert all(b.enabled for b in widget.palette_buttons)


def test_reroll_draws_a_new_seed(viewer):
    widget = _dock(viewer)
    widget.seed.value = 0
    random.seed(1234)
    _click(widget.reroll)
    expected = random.Random(1234).randrange(MAX_SEED + 1)
    assert widget.seed.value == expected != 0


@pytest.mark.napari
def test_opening_the_widget_or_a_canvas_folder_imports_neither_torch_nor_zarr(tmp_path):
    """What napari calls when a user opens the dock widget or drops a canvas folder returns without torch
    (its import holds the GIL up to a second at a time) or zarr; they come in later turns and workers."""
    import subprocess
    import sys

    from napari_diffinfinite._sample_data import create_demo_canvas

    store, _ = create_demo_canvas(tmp_path / "c")
    store.close()
    code = (
        "import sys, napari\n"
        "v = napari.Viewer(show=False)\n"
        "v.window.add_plugin_dock_widget('napari-diffinfinite', 'DiffInfinite')\n"
        "after_widget = sorted(m for m in ('torch', 'zarr') if m in sys.modules)\n"
        "from napari_diffinfinite._reader import get_reader\n"
        f"layers = get_reader({str(tmp_path / 'c')!r})({str(tmp_path / 'c')!r})  # what napari calls\n"
        "assert [kind for *_, kind in layers] == ['labels']\n"
        "print(after_widget, sorted(m for m in ('torch', 'zarr') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[] []"
