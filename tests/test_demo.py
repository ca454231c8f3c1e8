"""Demo mode (issue 8) with a real viewer under a virtual display (xvfb-run -a): the demo opens generating, the
canvas says synthetic, the preset follows the device and can be overridden, and the guided panel's buttons do
what they say. The tiny random model stands in for the embedded one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_diffinfinite import cli
from napari_diffinfinite.demo import (
    DEMO_MASK_OPACITY,
    DEMO_PANEL_NAME,
    OVERLAY_TEXT,
    PRESETS,
    SYNTHETIC_LAYER_NAME,
    DemoPreset,
    choose_preset,
    enter_demo_mode,
)
from napari_diffinfinite.widgets.canvas_controller import close_all_controllers, controller_for
from napari_diffinfinite.widgets.canvas_layers import labels_layer_kwargs


def _enter(viewer, qtbot, **kwargs):
    """Demo mode as the button starts it, waited for: it builds itself over a few turns of the event loop."""
    session = enter_demo_mode(viewer, **kwargs)
    qtbot.waitUntil(lambda: session.ready, timeout=10000)
    return session


def _zoom(viewer) -> float:
    """Screen px per image px (napari's zoom is per um; the canvas is 0.5 um/px)."""
    return float(viewer.scene.camera.zoom) * 0.5


def test_presets_follow_the_device_and_can_be_named():
    assert choose_preset(device=torch.device("cpu")) is PRESETS["cpu"]
    assert choose_preset(device=torch.device("cuda", 0)) is PRESETS["gpu"]
    assert choose_preset("auto", device="mps") is PRESETS["gpu"]
    assert choose_preset("gpu", device="cpu") is PRESETS["gpu"]
    custom = DemoPreset("mine", steps=2, max_view_tiles=4)
    assert choose_preset(custom) is custom
    with pytest.raises(ValueError, match="unknown demo preset"):
        choose_preset("fast")
    # CPU: fewer steps and a smaller budget than GPU; a preset never raises a model's own step count
    cpu, gpu = PRESETS["cpu"], PRESETS["gpu"]
    assert cpu.max_view_tiles < gpu.max_view_tiles
    model = type("M", (), {"default_steps": 25, "default_omega": 3.0})()
    assert cpu.steps_for(model) == 20 and gpu.steps_for(model) == 25
    model.default_steps = 3
    assert cpu.steps_for(model) == 3


def test_demo_mode_opens_before_its_model_is_loaded(viewer, tiny_not_loaded, qtbot):
    """A model not loaded yet: the canvas, the panel and the overlay come at once (from the model's manifest),
    the model loads in a worker thread once the event loop runs, then the device's preset applies and the view
    generates."""
    import threading

    loads = tiny_not_loaded
    session = enter_demo_mode(viewer)
    # at once: the mask window, light; nothing imported that would freeze (the tissue and its label follow)
    (mask,) = viewer.layers
    assert mask.opacity == DEMO_MASK_OPACITY and mask.data.any()
    assert session.controller is None and not session.ready and loads == []
    qtbot.waitUntil(lambda: session.ready, timeout=10000)
    ctrl = session.controller
    assert ctrl.labels_layer is mask and [layer.name for layer in viewer.layers][0] == "DiffInfinite tissue"
    assert ctrl.store.model_name == "tiny-test-model" and ctrl.labels_layer.opacity == DEMO_MASK_OPACITY
    # the tiny model may be in already (it loads from the canvas's turn on); until it is, the panel says so
    assert session.panel.progress.value == "loading the model ..." or ctrl.model is not None
    qtbot.waitUntil(lambda: ctrl.model is not None and ctrl.generating, timeout=20000)
    assert len(loads) == 1 and loads[0] is not threading.main_thread() and not ctrl.loading_model
    assert session.preset is PRESETS["cpu"]  # auto: this machine's device
    assert ctrl.store.settings["steps"] == 3 and ctrl.scheduler.options.steps == 3
    assert ctrl.scheduler.max_view_tiles == PRESETS["cpu"].max_view_tiles
    assert session.panel.preset.value.startswith("Preset: cpu - 3 steps")
    # the panel follows the canvas's events (no timer): tile progress shows up by itself
    qtbot.waitUntil(lambda: len(ctrl.landed) >= 1, timeout=20000)
    qtbot.waitUntil(lambda: session.panel.progress.value.split()[0] not in ("0", "loading"), timeout=5000)
    assert "tiles done" in session.panel.progress.value


def test_demo_mode_opens_generating_with_the_cpu_preset_and_labelled_synthetic(viewer, tiny, qtbot):
    from napari_diffinfinite.model.device import select_device

    assert select_device().type == "cpu"  # this machine: the automatic preset must be the CPU one
    session = _enter(viewer, qtbot)
    ctrl = session.controller
    assert controller_for(viewer) is ctrl and ctrl.model is tiny and ctrl.generating
    assert session.preset is PRESETS["cpu"]
    # the preset reached the canvas and its scheduler: steps (capped at the tiny model's 3), tile budget
    assert ctrl.store.settings["steps"] == 3 and ctrl.scheduler.options.steps == 3
    assert ctrl.scheduler.max_view_tiles == PRESETS["cpu"].max_view_tiles
    qtbot.waitUntil(lambda: len(ctrl.last_requested) > 0, timeout=5000)
    assert len(ctrl.last_requested) <= PRESETS["cpu"].max_view_tiles
    # 1:1, centred on the painted mask
    assert _zoom(viewer) == pytest.approx(1.0)
    y0, y1, x0, x1 = session.mask_rect
    assert y1 - y0 == x1 - x0 == 2560
    centre = np.asarray(viewer.scene.camera.center[-2:]) / 0.5
    np.testing.assert_allclose(centre, ((y0 + y1) / 2, (x0 + x1) / 2), atol=1)
    # the panel alone is docked (the full widget is one button away); the mask layer is active (ready to paint)
    assert list(viewer.window.dock_widgets) == [DEMO_PANEL_NAME]
    assert viewer.window.dock_widgets[DEMO_PANEL_NAME] is session.panel
    assert viewer.layers.selection.active is ctrl.labels_layer
    # the mask is light enough to show the tissue under it, unlike the painting default
    assert ctrl.labels_layer.opacity == pytest.approx(DEMO_MASK_OPACITY)
    assert DEMO_MASK_OPACITY < labels_layer_kwargs(ctrl.store, (0, 0))["opacity"]
    assert "not for diagnosis" in session.panel.disclaimer.value
    assert "Synthetic" in session.panel.disclaimer.value
    assert session.panel.preset.value.startswith("Preset: cpu - 3 steps")
    # the canvas itself says synthetic
    overlay = viewer.canvas.overlays.text
    assert overlay.visible and overlay.text == OVERLAY_TEXT
    assert "SYNTHETIC" in overlay.text and "not for diagnosis" in overlay.text
    assert "synthetic" in viewer.title
    # a tile lands, the panel counts it, and the generated area gets a labelled outline
    qtbot.waitUntil(lambda: len(ctrl.landed) >= 1, timeout=30000)
    key = ctrl.landed[0]
    assert ctrl.store.tile_status(key) == 2
    qtbot.waitUntil(lambda: session.panel.progress.value.split()[0] not in ("0", "no"), timeout=3000)
    shown = session.panel.progress.value
    assert "tiles done" in shown and "queued" in shown
    assert 1 <= int(shown.split()[0]) <= ctrl.scheduler.stats.tiles_done  # the panel counts the scheduler's tiles
    layer = viewer.layers[SYNTHETIC_LAYER_NAME]
    t = ctrl.grid.tile
    (ky, kx) = key
    boxes = [(r[:, 0].min(), r[:, 0].max(), r[:, 1].min(), r[:, 1].max()) for r in layer.data]
    assert any(b[0] <= ky * t and (ky + 1) * t <= b[1] and b[2] <= kx * t and (kx + 1) * t <= b[3] for b in boxes)
    assert all(s == "rectangle" for s in layer.shape_type)
    texts = np.broadcast_to(np.asarray(layer.text.string(layer.features)), (len(layer.data),))
    assert len(layer.data) >= 1 and all("SYNTHETIC" in str(v) and "not for diagnosis" in str(v) for v in texts)
    assert viewer.layers.selection.active is ctrl.labels_layer  # the outline layer did not take the brush


def test_the_preset_can_be_overridden(viewer, tiny, qtbot):
    session = _enter(viewer, qtbot, preset="gpu")
    ctrl = session.controller
    assert session.preset is PRESETS["gpu"] and ctrl.scheduler.max_view_tiles == PRESETS["gpu"].max_view_tiles
    assert ctrl.store.settings["steps"] == tiny.default_steps
    assert session.panel.preset.value.startswith("Preset: gpu")
    mine = DemoPreset("mine", steps=2, omega=1.5, max_view_tiles=2)
    session = _enter(viewer, qtbot, preset=mine)
    ctrl = session.controller
    assert controller_for(viewer) is ctrl and session.preset is mine
    assert ctrl.store.settings["steps"] == 2 and ctrl.scheduler.options.steps == 2
    assert ctrl.store.settings["omega"] == 1.5
    qtbot.waitUntil(lambda: len(ctrl.last_requested) > 0, timeout=5000)  # the view is requested on the I/O thread
    assert len(ctrl.last_requested) <= 2
    # one demo panel at a time
    assert list(viewer.window.dock_widgets).count(DEMO_PANEL_NAME) == 1
    assert viewer.window.dock_widgets[DEMO_PANEL_NAME] is session.panel


def test_the_panel_buttons_paint_zoom_and_export(viewer, tiny, qtbot):
    session = _enter(viewer, qtbot, preset=DemoPreset("test", max_view_tiles=4))
    ctrl, panel = session.controller, session.panel
    labels = ctrl.labels_layer
    # 1: paint a class -> the mask layer is active, in paint mode, with that class as the brush
    viewer.layers.selection.active = ctrl.tissue_layer
    labels.mode = "pan_zoom"
    panel.paint_class.value = 2
    panel.paint_button.native.click()
    assert viewer.layers.selection.active is labels and labels.mode == "paint" and labels.selected_label == 2
    # 3: overview zooms out to fit the mask (coarser pyramid levels), 1:1 comes back to where the view is
    panel.overview_button.native.click()
    zoom = _zoom(viewer)
    assert zoom < 0.5
    h, w = viewer.canvas.size
    assert 2560 * zoom <= min(h, w)  # the whole painted mask fits
    qtbot.waitUntil(lambda: ctrl.tissue_layer.data_level >= 1, timeout=5000)
    viewer.scene.camera.center = (viewer.scene.camera.center[0], viewer.scene.camera.center[1] + 100.0)
    before = np.asarray(viewer.scene.camera.center[-2:])
    panel.one_to_one_button.native.click()
    assert _zoom(viewer) == pytest.approx(1.0)
    np.testing.assert_allclose(np.asarray(viewer.scene.camera.center[-2:]), before, atol=1)
    # 4: export the view (a small one: zoomed in 4x); missing tiles are generated first, then the PNG is written
    cy, cx = (float(v) / 0.5 for v in viewer.scene.camera.center[-2:])
    ctrl.set_camera((cy, cx), 4.0)
    panel.export_button.native.click()
    assert panel.export_status.value.startswith("Exporting to")
    qtbot.waitUntil(lambda: bool(session.exports), timeout=60000)
    paths = session.exports[0]
    image = paths["image"]
    from pathlib import Path

    from PIL import Image

    image = Path(image)
    assert image.is_file() and image.parent == ctrl.folder.parent and image.name == "demo-view-1.png"
    with Image.open(image) as im:
        r = ctrl.current_view().rect
        assert im.size == (r.width, r.height)
    qtbot.waitUntil(lambda: panel.export_status.value.startswith("Saved"), timeout=3000)
    assert session.export_path().name == "demo-view-2.png"
    # more: the full DiffInfinite widget, on the demo canvas
    from napari_diffinfinite._widget import DiffInfiniteWidget

    panel.controls_button.native.click()
    widget = viewer.window.dock_widgets["DiffInfinite (napari-diffinfinite)"]
    assert isinstance(widget, DiffInfiniteWidget)
    qtbot.waitUntil(lambda: widget.labels_layer.value is labels, timeout=3000)


def test_demo_command_enters_demo_mode(napari_app_calls, tiny, qtbot):
    viewers, runs = napari_app_calls
    try:
        assert cli.main(["demo", "--preset", "gpu"]) == 0
        (viewer,) = viewers
        assert runs == [True]
        qtbot.waitUntil(lambda: DEMO_PANEL_NAME in viewer.window.dock_widgets, timeout=10000)
        ctrl = controller_for(viewer)
        assert ctrl is not None and ctrl.generating and ctrl.scheduler.max_view_tiles == PRESETS["gpu"].max_view_tiles
        assert DEMO_PANEL_NAME in viewer.window.dock_widgets
        assert viewer.canvas.overlays.text.text == OVERLAY_TEXT
    finally:
        close_all_controllers()
    with pytest.raises(SystemExit):
        cli.main(["demo", "--preset", "fast"])


def test_the_widgets_demo_button_enters_demo_mode_beside_it(viewer, tiny, qtbot):
    from napari_diffinfinite._widget import DiffInfiniteWidget

    _dock, widget = viewer.window.add_plugin_dock_widget("napari-diffinfinite", "DiffInfinite")
    assert isinstance(widget, DiffInfiniteWidget)
    widget.demo_button.native.click()
    qtbot.waitUntil(lambda: DEMO_PANEL_NAME in viewer.window.dock_widgets, timeout=10000)
    ctrl = controller_for(viewer)
    assert ctrl is not None and ctrl.generating and ctrl.model is tiny
    panel = viewer.window.dock_widgets[DEMO_PANEL_NAME]
    assert panel.session.controller is ctrl
    assert viewer.canvas.overlays.text.visible and viewer.canvas.overlays.text.text == OVERLAY_TEXT
    # the widget drives the demo canvas too
    qtbot.waitUntil(lambda: widget.labels_layer.value is ctrl.labels_layer, timeout=3000)
