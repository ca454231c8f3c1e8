"""The napari face of the canvas (issue 5) with a real viewer under a virtual display (xvfb-run -a): the demo
canvas sample, paint -> exactly the affected tiles regenerate, panning, the far corner of a 2**20 canvas,
save and reopen, and bad inputs that must become notifications. The tiny random model stands in for the
embedded one (its tissue is noise, which is all these tests need)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_diffinfinite.canvas import CanvasStore
from napari_diffinfinite.canvas.grid import DEFAULT_SIDE, Rect
from napari_diffinfinite.widgets import canvas_models
from napari_diffinfinite.widgets.canvas_controller import close_all_controllers, controller_for, open_canvas
from napari_diffinfinite.widgets.canvas_layers import tissue_layer_kwargs
from napari_diffinfinite.widgets.canvas_view import window_rect

PLUGIN = "napari-diffinfinite"
SMALL = (4096, 4096)  # 8 x 8 tiles; the latent canvas (512 x 512) fits one Labels window


@pytest.fixture
def notes():
    """Messages of the napari notifications shown during the test."""
    from napari.utils.notifications import notification_manager

    start = len(notification_manager.records)

    class Notes:
        @property
        def messages(self) -> list[str]:
            return [str(n.message) for n in notification_manager.records[start:]]

    return Notes()


def small_canvas(folder, model, *, label: int = 1, seed: int = 3) -> CanvasStore:
    store = CanvasStore.create_for_model(folder, model, shape_px=SMALL, seed=seed)
    lh, lw = store.grid.latent_shape
    store.write_labels(0, 0, np.full((lh, lw), label, np.uint8))
    return store


def wait_idle(qtbot, ctrl, timeout=30.0):
    qtbot.waitUntil(lambda: not ctrl.scheduler.pending() and ctrl.scheduler.stats.current is None, timeout=int(timeout * 1000))
    qtbot.wait(ctrl._refresh_timer.interval() + 50)  # the throttled refresh after the last tile


def tile_pixels(store, key):
    r = store.grid.tile_rect(key)
    return store.read_tissue_raw(0, *r)


# ---------------------------------------------------------------------------------------------- demo + widget
def test_demo_canvas_opens_at_1to1_on_the_mask_and_generates(viewer, tiny, qtbot):
    from napari_diffinfinite import DISCLAIMER
    from napari_diffinfinite._widget import DiffInfiniteWidget

    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "DiffInfinite")
    assert isinstance(widget, DiffInfiniteWidget)
    assert widget.disclaimer.value == DISCLAIMER and not widget.disclaimer.native.isHidden()
    t0 = time.perf_counter()
    (mask,) = viewer.open_sample(PLUGIN, "demo_canvas")  # the window at once; the canvas in the next turns
    qtbot.waitUntil(lambda: controller_for(viewer) is not None, timeout=5000)
    ctrl = controller_for(viewer)
    tissue = ctrl.tissue_layer
    assert ctrl.labels_layer is mask and list(viewer.layers) == [tissue, mask]
    # the tissue pyramid: 2**20 px a side, 2x levels down to one tile, physical scale
    assert tissue.multiscale and tissue.rgb and tissue.level_shapes[0].tolist() == [DEFAULT_SIDE, DEFAULT_SIDE]
    assert len(tissue.data) == ctrl.grid.levels == 12
    np.testing.assert_allclose(tissue.scale, [0.5, 0.5])
    np.testing.assert_allclose(mask.scale, [4.0, 4.0])
    assert mask.data.shape == (2048, 2048)  # a bounded window, not the 131072**2 latent canvas
    # 1:1 zoom (one screen px per image px), centred on the painted mask
    cam = viewer.scene.camera
    assert cam.zoom == pytest.approx(1 / 0.5)
    c = DEFAULT_SIDE // 2
    assert np.allclose(np.asarray(cam.center[-2:]) / 0.5, (c, c), atol=1)
    assert ctrl.store.read_labels(Rect(c // 8 - 2, c // 8 + 2, c // 8 - 2, c // 8 + 2)).any()
    # the view is being generated, centre first, with the injected model
    assert ctrl.model is tiny and ctrl.generating
    qtbot.waitUntil(lambda: bool(ctrl.last_requested), timeout=5000)  # the view is requested on the I/O thread
    assert ctrl.last_requested[0] in {(1023, 1023), (1023, 1024), (1024, 1023), (1024, 1024)}
    qtbot.waitUntil(lambda: len(ctrl.landed) >= 1, timeout=20000)
    first_tile_s = time.perf_counter() - t0
    print(f"first tile landed {first_tile_s:.1f} s after the demo sample was opened (tiny model)")
    qtbot.waitUntil(lambda: "tiles done" in widget.progress.value and widget.labels_layer.value is mask, timeout=3000)
    assert widget.canvas_status.value.startswith("demo-canvas")
    # the palette paints on the canvas mask
    widget.palette_buttons[3].native.click()
    assert mask.selected_label == 3


def test_demo_canvas_opens_before_its_model_is_loaded(viewer, tiny_not_loaded, qtbot):
    """A model not loaded yet: the mask window comes at once from the model's manifest (nothing else in that
    turn of the event loop: napari's first layer is its own freeze), the canvas and its tissue layer in the next
    turns, the model in a worker thread, then the view generates (opening froze napari for 3.7-4.4 s while the
    model and torch loaded on the GUI thread)."""
    import sys
    import threading

    loads = tiny_not_loaded
    zarr_before = "zarr" in sys.modules
    (mask,) = viewer.open_sample(PLUGIN, "demo_canvas")
    assert loads == []  # nothing loaded while napari built the layer
    assert zarr_before or "zarr" not in sys.modules  # nor the canvas store
    qtbot.waitUntil(lambda: controller_for(viewer) is not None, timeout=5000)
    ctrl = controller_for(viewer)
    assert ctrl.labels_layer is mask and list(viewer.layers) == [ctrl.tissue_layer, mask]  # tissue under the mask
    assert viewer.layers.selection.active is mask  # the brush is ready
    # the window shown before the store existed is exactly the store's
    np.testing.assert_array_equal(mask.data, ctrl.store.read_labels(window_rect(ctrl.anchor, ctrl.grid)))
    assert mask.data.any() and ctrl.tissue_layer.metadata == tissue_layer_kwargs(ctrl.store)["metadata"]
    assert ctrl.store.model_name == "tiny-test-model" and ctrl.store.latent_channels == 4
    qtbot.waitUntil(lambda: ctrl.model is not None and ctrl.generating, timeout=20000)
    assert len(loads) == 1 and loads[0] is not threading.main_thread()
    qtbot.waitUntil(lambda: len(ctrl.landed) >= 1, timeout=20000)


def test_sample_list_starts_with_the_demo_canvas():
    import npe2

    from napari_diffinfinite import _resources  # noqa: F401 - the package is importable

    pm = npe2.PluginManifest.from_distribution(PLUGIN)
    keys = [s.key for s in pm.contributions.sample_data]
    assert keys[:2] == ["demo_canvas", "demo_mask"]


# ---------------------------------------------------------------------------------------------- painting
def test_painting_regenerates_exactly_the_affected_tiles_and_undo_too(viewer, tiny, qtbot, tmp_path):
    store = small_canvas(tmp_path / "c", tiny)
    ctrl = open_canvas(viewer, store=store, model=tiny, camera=((2048, 2048), 1.0),
                       scheduler_options={"max_view_tiles": 3})
    ctrl.start()
    wait_idle(qtbot, ctrl)
    view_tiles = [(4, 4), (3, 4), (4, 3)]  # the 3 nearest the view's centre (2048.5, 2048.5)
    assert sorted(ctrl.landed) == sorted(view_tiles)
    assert ctrl.refreshes >= 1
    before = {k: (store.tile_version(k), np.asarray(store.read_latents(store.grid.tile_latent_rect(k))), tile_pixels(store, k))
              for k in view_tiles}
    # paint inside tile (4, 4): latents 256..319 (the window is the whole 512 x 512 latent canvas here)
    layer = ctrl.labels_layer
    assert ctrl.anchor == (0, 0)
    layer.brush_size = 6
    layer.paint((290, 290), 2)
    qtbot.waitUntil(lambda: ctrl.last_invalidated == [(4, 4)], timeout=3000)
    assert store.read_labels(Rect(290, 291, 290, 291))[0, 0] == 2
    # a local repaint: no placeholder, the old tissue stays until the new lands
    assert all(store.tile_status(k) == 2 for k in view_tiles)
    wait_idle(qtbot, ctrl)
    assert ctrl.scheduler.stats.repaints_done == 1
    assert store.tile_status((4, 4)) == 2 and store.tile_version((4, 4)) == before[(4, 4)][0] + 1
    reach = ctrl.scheduler.changed_rect((4, 4))
    for k in view_tiles[1:]:
        version, latents, pixels = before[k]
        assert store.tile_version(k) == version
        np.testing.assert_array_equal(store.read_latents(store.grid.tile_latent_rect(k)), latents)
        # pixels: only the border strip within the decoder's reach of the repainted tile was decoded again
        r = store.grid.tile_rect(k)
        keep = np.ones((r.height, r.width), bool)
        inner = reach.intersect(r).offset(-r.y0, -r.x0)
        keep[inner.slices] = False
        np.testing.assert_array_equal(tile_pixels(store, k)[keep], pixels[keep])
    assert not np.array_equal(tile_pixels(store, (4, 4)), before[(4, 4)][2])
    # undo brings the old labels back, and with them the old tissue (the repaint record), in that tile only
    layer.undo()
    qtbot.waitUntil(lambda: store.read_labels(Rect(290, 291, 290, 291))[0, 0] == 1, timeout=3000)
    assert ctrl.last_invalidated == [(4, 4)]
    wait_idle(qtbot, ctrl)  # undo brings the tissue back too, bit for bit
    np.testing.assert_array_equal(store.read_latents(store.grid.tile_latent_rect((4, 4))), before[(4, 4)][1])
    layer.redo()
    qtbot.waitUntil(lambda: store.read_labels(Rect(290, 291, 290, 291))[0, 0] == 2, timeout=3000)
    assert ctrl.last_invalidated == [(4, 4)]
    # a label the canvas does not have is refused, not written
    layer.paint((100, 400), 7)
    qtbot.wait(200)
    assert store.read_labels(Rect(100, 101, 400, 401))[0, 0] == 1 and layer.data[100, 400] == 1


# ---------------------------------------------------------------------------------------------- panning
def test_panning_requests_new_tiles_keeps_old_ones_and_generated_areas_cost_nothing(viewer, tiny, qtbot, tmp_path):
    store = small_canvas(tmp_path / "c", tiny)
    ctrl = open_canvas(viewer, store=store, model=tiny, camera=((2048, 2048), 1.0),
                       scheduler_options={"max_view_tiles": 2})
    ctrl.start()
    wait_idle(qtbot, ctrl)
    first = sorted(ctrl.landed)
    assert len(first) == 2
    versions = {k: store.tile_version(k) for k in first}
    # pan 1536 px right: the camera event is debounced, then the new view's tiles are requested
    cam = viewer.scene.camera
    cam.center = (cam.center[-2], cam.center[-1] + 1536 * 0.5)
    qtbot.waitUntil(lambda: ctrl.last_view is not None and ctrl.last_view.rect.x0 > 2048, timeout=2000)
    qtbot.waitUntil(lambda: bool(ctrl.last_requested) and not set(ctrl.last_requested) & set(first), timeout=2000)
    new = ctrl.last_requested
    assert all(k[1] >= 6 for k in new)
    wait_idle(qtbot, ctrl)
    assert {k: store.tile_version(k) for k in first} == versions and all(store.tile_status(k) == 2 for k in first)
    # back to the first view: everything there exists, nothing is requested, the layer shows the store
    n_done = ctrl.scheduler.stats.tiles_done
    ctrl.set_camera((2048, 2048))
    assert ctrl.scheduler.pending() == [] and ctrl.scheduler.stats.tiles_done == n_done
    for k in first:
        r = store.grid.tile_rect(k)
        np.testing.assert_array_equal(np.asarray(ctrl.tissue_layer.data[0][r.y0 : r.y1, r.x0 : r.x1]), tile_pixels(store, k))


def test_generation_and_exports_show_in_naparis_activity_dock(viewer, tiny, qtbot, tmp_path):
    """Each piece of long work has a bar in napari's activity dock while it runs, closed when it ends. The dock
    follows the state 50 ms behind (work shorter than that never shows); the test holds the work paused, or
    updates the dock at once, to see the bars."""
    from napari.utils import progress

    def ours():
        return [str(bar.desc) for bar in progress._all_instances if "DiffInfinite" in str(bar.desc)]

    store = small_canvas(tmp_path / "c", tiny)
    ctrl = open_canvas(viewer, store=store, model=tiny, camera=((2048, 2048), 1.0))
    ctrl.scheduler.pause()
    ctrl.scheduler.request_tiles([(0, 0), (0, 1)])
    ctrl.state_changed.emit()
    qtbot.waitUntil(lambda: ctrl.activity["tiles"].active, timeout=3000)
    assert ctrl.activity["tiles"].bar.total == 2 and "(paused)" in ours()[0]
    ctrl.scheduler.resume()
    ctrl.scheduler.start()
    wait_idle(qtbot, ctrl)
    qtbot.waitUntil(lambda: not ctrl.activity["tiles"].active and not ours(), timeout=3000)
    ctrl.export(tmp_path / "corner.ome.tif", (512, 1024, 0, 512), generate_missing=True)
    ctrl._show_activity()  # now, not 50 ms later: the tiny model's tile may be done by then
    assert ctrl.export_state == "done" or "corner.ome.tif" in str(ctrl.activity["export"].bar.desc)
    qtbot.waitUntil(lambda: ctrl.export_state == "done", timeout=30000)
    qtbot.waitUntil(lambda: not ours(), timeout=3000)


def test_the_far_corner_of_a_2_20_canvas_lands_within_a_pixel(viewer, tiny, qtbot, tmp_path):
    store = CanvasStore.create_for_model(tmp_path / "big", tiny)  # 2**20 x 2**20 px, nothing allocated
    target = (DEFAULT_SIDE - 512, DEFAULT_SIDE - 512)
    ctrl = open_canvas(viewer, store=store, model=tiny, camera=(target, 1.0), scheduler_options={"max_view_tiles": 4})
    ctrl.start()
    corner = [(2046, 2046), (2046, 2047), (2047, 2046), (2047, 2047)]
    assert sorted(ctrl.last_requested) == corner
    qtbot.waitUntil(lambda: store.tile_status((2047, 2047)) == 2, timeout=30000)
    # world -> data: the camera centre is the target pixel, to a pixel, in float32 world coordinates
    world = np.asarray(viewer.scene.camera.center[-2:], dtype=np.float32)
    data = ctrl.tissue_layer.world_to_data(world)
    assert np.abs(np.asarray(data) - target).max() <= 1
    y, x = (round(v) for v in data)
    assert store.grid.px_to_tile(y, x) == (2047, 2047)
    # what the layer shows at the target pixel is the generated tile (not the placeholder)
    shown = np.asarray(ctrl.tissue_layer.data[0][y : y + 2, x : x + 2])
    np.testing.assert_array_equal(shown, store.read_tissue_raw(0, y, y + 2, x, x + 2))
    assert store.coverage(0, y, y + 2, x, x + 2).all()
    # the Labels window was re-anchored to the corner and still overlays the tissue there
    wy, wx = ctrl.labels_layer.world_to_data(world)
    assert ctrl.anchor[0] + wy == pytest.approx(y / 8 - 7 / 16, abs=1) and ctrl.anchor[1] + wx == pytest.approx(x / 8 - 7 / 16, abs=1)


# ---------------------------------------------------------------------------------------------- save / reopen
def test_save_and_reopen_round_trips(make_napari_viewer, tiny, qtbot, tmp_path):
    folder = tmp_path / "saved"
    v1 = make_napari_viewer()
    store = small_canvas(folder, tiny, label=3)
    ctrl = open_canvas(v1, store=store, model=tiny, camera=((1024, 1024), 1.0), scheduler_options={"max_view_tiles": 2})
    ctrl.start()
    wait_idle(qtbot, ctrl)
    done = sorted(ctrl.landed)
    ctrl.labels_layer.paint((10, 10), 4)  # an edit, written back when the canvas closes
    pixels = {k: tile_pixels(store, k) for k in done}
    v1.layers.clear()  # removing the canvas's layers closes it: labels written, view saved, lock released
    assert ctrl.closed
    assert CanvasStore.open(folder, mode="r").read_labels(Rect(10, 11, 10, 11))[0, 0] == 4

    v2 = v1  # the same viewer, emptied
    (mask,) = v2.open(str(folder), plugin=PLUGIN)  # the window at once; the store and the tissue next turns
    qtbot.waitUntil(lambda: controller_for(v2) is not None, timeout=3000)
    assert [layer.name for layer in v2.layers] == ["DiffInfinite tissue", "DiffInfinite mask"]
    tissue = v2.layers[0]
    for k in done:  # everything generated shows at once, from the store
        r = store.grid.tile_rect(k)
        np.testing.assert_array_equal(np.asarray(tissue.data[0][r.y0 : r.y1, r.x0 : r.x1]), pixels[k])
    assert mask.data[10, 10] == 4 and mask.data[300, 300] == 3
    # ... and the canvas is driven again (paint, pan), at the saved view, with the model it was made with
    ctrl2 = controller_for(v2)
    assert ctrl2.tissue_layer is tissue and ctrl2.labels_layer is mask and not ctrl2.read_only
    assert np.allclose(np.asarray(v2.scene.camera.center[-2:]) / 0.5, (1024, 1024), atol=1)
    qtbot.waitUntil(lambda: ctrl2.model is not None, timeout=10000)
    assert ctrl2.model is tiny
    close_all_controllers()


# ---------------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_give_notifications_not_tracebacks(viewer, tiny, tiny_model_dir, qtbot, tmp_path, monkeypatch, notes):
    from napari_diffinfinite import generation

    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "DiffInfinite")
    # an installation without the embedded model: a notification, the widget keeps working
    monkeypatch.delenv(canvas_models.MODEL_ENV, raising=False)
    monkeypatch.setattr(generation, "embedded_folder", lambda: tmp_path / "no-embedded-model")
    canvas_models.clear_cache()  # an earlier test may have loaded the real embedded model
    widget.model.value = "embedded"
    widget.load_selected_model()
    qtbot.waitUntil(lambda: widget.model_state == "error", timeout=5000)
    assert any("embedded model is not in this installation" in m for m in notes.messages)
    # a checkpoint of the wrong kind (the mask network given as the image network)
    widget.model.value = "diffinfinite-5"
    widget.checkpoint.value = tiny_model_dir / "mask.safetensors"
    widget.load_selected_model()
    qtbot.waitUntil(lambda: widget.model_state == "error" and len(notes.messages) >= 2, timeout=5000)
    assert "mask" in notes.messages[-1].lower() and "cannot load" in notes.messages[-1].lower()
    # a user folder that is not a model
    widget.model.value = "user"
    widget.model_folder.value = tmp_path
    widget.load_selected_model()
    qtbot.waitUntil(lambda: len(notes.messages) >= 3, timeout=5000)
    assert "model.json" in notes.messages[-1]
    # a non-Labels layer as the mask of a new canvas
    image = viewer.add_image(np.zeros((16, 16, 3), np.uint8), rgb=True)
    assert widget.new_canvas(tmp_path / "n", from_layer=image) is None
    assert "not a Labels layer" in notes.messages[-1]
    # a folder that is not a canvas
    assert widget.open_canvas(tmp_path) is None
    assert "not a DiffInfinite canvas" in notes.messages[-1]
    # the controls that need a canvas say so
    widget.export(tmp_path / "x.ome.tif")
    assert "open a canvas first" in notes.messages[-1]
    # a real model folder works after all that, and a new canvas paints the chosen Labels layer in
    painted = viewer.add_labels(np.full((64, 64), 4, np.uint8), scale=(0.5, 0.5), name="painted")
    widget.model_folder.value = tiny_model_dir
    widget.labels_layer.value = painted
    widget.new_canvas(tmp_path / "n2")
    qtbot.waitUntil(lambda: controller_for(viewer) is not None, timeout=5000)
    ctrl = controller_for(viewer)
    c = ctrl.grid.centre()
    assert ctrl.store.read_labels(Rect(c[0] // 8 - 4, c[0] // 8 + 4, c[1] // 8 - 4, c[1] // 8 + 4)).min() == 4
    # exporting a view that is not generated is refused with the reason
    widget.export(tmp_path / "view.ome.tif")
    assert "not generated" in notes.messages[-1]
    assert not (tmp_path / "view.ome.tif").exists()


# ---------------------------------------------------------------------------------------------- selection tools
def test_masks_reroll_and_export_of_a_drawn_selection(viewer, tiny, qtbot, tmp_path, monkeypatch):
    from napari_diffinfinite import generation
    from napari_diffinfinite.io.canvas_export import MissingTilesError

    store = CanvasStore.create_for_model(tmp_path / "c", tiny, shape_px=SMALL, seed=1)
    store.write_labels(0, 0, np.ones((64, 64), np.uint8))  # tile (0, 0) painted; the rest unlabelled
    ctrl = open_canvas(viewer, store=store, model=tiny, camera=((2048, 2048), 1.0))
    # a rectangle over tiles (0, 0) and (0, 1), drawn in the selection layer (data = image px)
    ctrl.selection_layer(create=True).add_rectangles(np.array([[0, 0], [511, 1023]]))
    assert ctrl.selection_rect() == Rect(0, 512, 0, 1024)
    # masks from the mask model: painted labels are kept, unlabelled ones filled (the window shows it)
    ctrl.generate_masks(context=0, seed=4)
    qtbot.waitUntil(lambda: ctrl.mask_state == "done", timeout=20000)
    assert (store.read_labels(Rect(0, 64, 0, 64)) == 1).all()
    np.testing.assert_array_equal(ctrl.labels_layer.data[:64, :128], store.read_labels(Rect(0, 64, 0, 128)))
    # ... or overwritten when asked (a constant mask stands in for the model here)
    monkeypatch.setattr(generation, "generate_mask", lambda model, size, **kw: np.full(size, 2, np.uint8))
    ctrl.generate_masks(context=0, overwrite=True)
    qtbot.waitUntil(lambda: ctrl.mask_state == "done" and (store.read_labels(Rect(0, 64, 0, 128)) == 2).all(),
                    timeout=5000)
    assert ctrl.last_invalidated == [(0, 0), (0, 1)] and (ctrl.labels_layer.data[:64, :128] == 2).all()
    # export refuses a selection that is not generated, or generates it first when asked
    with pytest.raises(MissingTilesError):
        ctrl.export(tmp_path / "sel.ome.tif")
    ctrl.export(tmp_path / "sel.ome.tif", generate_missing=True)
    qtbot.waitUntil(lambda: ctrl.export_state == "done", timeout=30000)
    assert (tmp_path / "sel.ome.tif").is_file() and (tmp_path / "sel_mask.ome.tif").is_file()
    assert ctrl.export_progress[0] == ctrl.export_progress[1] > 0
    # re-roll: the selected tiles regenerate with a new seed, nothing else does
    versions = {k: store.tile_version(k) for k in [(0, 0), (0, 1)]}
    before = tile_pixels(store, (0, 0))
    assert sorted(ctrl.reroll(seed=99)) == [(0, 0), (0, 1)]
    qtbot.waitUntil(lambda: all(store.tile_version(k) == v + 1 and store.tile_status(k) == 2
                                for k, v in versions.items()), timeout=30000)
    assert store.tile_seed((0, 0)) == 99 and not np.array_equal(tile_pixels(store, (0, 0)), before)
    assert store.read_status()[1:].max() == 0


# ---------------------------------------------------------------------------------------------- masks from files
def _square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def test_masks_load_from_qupath_geojson_and_label_images_into_the_view(viewer, tiny, qtbot, tmp_path, notes):
    import json

    from PIL import Image

    from napari_diffinfinite.io.mask_files import read_mask_file

    store = CanvasStore.create_for_model(tmp_path / "c", tiny, shape_px=SMALL, seed=2)
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "DiffInfinite")
    ctrl = open_canvas(viewer, store=store, model=tiny, camera=((2048, 2048), 1.0),
                       scheduler_options={"max_view_tiles": 4})
    ctrl.start()
    wait_idle(qtbot, ctrl)
    view_tiles = [(3, 3), (3, 4), (4, 3), (4, 4)]
    assert sorted(ctrl.landed) == view_tiles
    versions = {k: store.tile_version(k) for k in view_tiles}
    # a QuPath export: 1024 x 1024 image px of carcinoma with a hole, necrosis in the hole (coordinates: px at 0.5 um)
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"classification": {"name": "Carcinoma"}},
         "geometry": {"type": "Polygon", "coordinates": [_square(0, 0, 1024, 1024), _square(256, 256, 768, 768)]}},
        {"type": "Feature", "properties": {"classification": {"name": "necrosis"}},
         "geometry": {"type": "Polygon", "coordinates": [_square(448, 448, 576, 576)]}},
    ]}
    path = tmp_path / "slide.geojson"
    path.write_text(json.dumps(doc))
    widget.load_mask_file(path)  # at the centre of the view, (2048, 2048): latents 192..320
    qtbot.waitUntil(lambda: ctrl.mask_state == "done", timeout=10000)
    expected = read_mask_file(path, ["Unknown", "Carcinoma", "Necrosis", "Tumor stroma", "Others"], cell_um=4.0).labels
    assert expected.shape == (128, 128) and set(np.unique(expected)) == {0, 1, 2}
    np.testing.assert_array_equal(store.read_labels(Rect(192, 320, 192, 320)), expected)
    np.testing.assert_array_equal(ctrl.labels_layer.data[192:320, 192:320], expected)  # the window shows it
    assert not store.read_labels(Rect(0, 512, 0, 192)).any()
    assert sorted(ctrl.loaded_mask_tiles) == view_tiles == sorted(ctrl.last_invalidated)
    assert any("slide.geojson loaded" in m for m in notes.messages)
    # the painted path regenerates them: new versions, with the labels under them
    wait_idle(qtbot, ctrl)
    qtbot.waitUntil(lambda: all(store.tile_status(k) == 2 and store.tile_version(k) == versions[k] + 1
                                for k in view_tiles), timeout=30000)
    # a file with a class name the model does not know: a notification naming it, nothing written
    bad = tmp_path / "bad.geojson"
    doc["features"][1]["properties"]["classification"]["name"] = "Lymphocytes"
    bad.write_text(json.dumps(doc))
    before = store.read_labels(Rect(0, 512, 0, 512))
    widget.load_mask_file(bad)
    qtbot.waitUntil(lambda: ctrl.mask_state == "error", timeout=10000)
    assert "Lymphocytes" in notes.messages[-1] and "'Tumor stroma'" in notes.messages[-1]
    np.testing.assert_array_equal(store.read_labels(Rect(0, 512, 0, 512)), before)
    # a label image (one label per mask pixel by default) at another place; its 0s keep what is there
    img = np.zeros((16, 16), np.uint8)
    img[4:12, 4:12] = 4
    Image.fromarray(img).save(tmp_path / "mask.png")
    widget.load_mask_file(tmp_path / "mask.png", centre_px=(2048, 2048))
    qtbot.waitUntil(lambda: ctrl.mask_state == "done", timeout=10000)
    got = store.read_labels(Rect(248, 264, 248, 264))
    np.testing.assert_array_equal(got[4:12, 4:12], 4)
    np.testing.assert_array_equal(got[:4], expected[56:60, 56:72])
    assert sorted(ctrl.loaded_mask_tiles) == view_tiles  # latents 252..260 (necrosis before) touch all four
    widget.load_mask_file(tmp_path / "missing.png")
    qtbot.waitUntil(lambda: "does not exist" in notes.messages[-1], timeout=5000)


# ---------------------------------------------------------------------------------------------- unpainted areas
def test_unpainted_tiles_get_generated_masks_first_and_painted_labels_are_kept(viewer, tiny, qtbot, tmp_path):
    store = CanvasStore.create_for_model(tmp_path / "c", tiny, shape_px=SMALL, seed=5)
    store.write_labels(256, 256, np.full((64, 64), 1, np.uint8))  # tile (4, 4) painted whole
    store.write_labels(200, 270, np.full((4, 4), 3, np.uint8))  # a dab of stroma in tile (3, 4)
    painted = store.read_labels(Rect(0, 512, 0, 512))
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "DiffInfinite")
    ctrl = open_canvas(viewer, store=store, model=tiny, camera=((2048, 2048), 1.0),
                       scheduler_options={"max_view_tiles": 4})
    qtbot.waitUntil(lambda: widget.controller is ctrl and widget._controller is ctrl, timeout=3000)
    widget.unpainted.value = "generated"
    assert ctrl.unpainted == "generated" and store.settings["unpainted"] == "generated"
    ctrl.start()
    # the view's unpainted tiles, (3, 3) and (4, 3), get masks from the mask model first, then tissue
    qtbot.waitUntil(lambda: ctrl.auto_masked == {(3, 3), (4, 3)} and ctrl.mask_state == "done", timeout=20000)
    wait_idle(qtbot, ctrl)
    qtbot.waitUntil(lambda: all(store.tile_status(k) == 2 for k in [(3, 3), (3, 4), (4, 3), (4, 4)]), timeout=30000)
    after = store.read_labels(Rect(0, 512, 0, 512))
    lt = store.grid.latent_tile
    for i, j in [(3, 3), (4, 3)]:
        assert after[i * lt : (i + 1) * lt, j * lt : (j + 1) * lt].any()
    # painted labels are never overwritten; the partly painted tile keeps its 0s; nothing outside the view changes
    keep = np.ones(after.shape, bool)
    keep[3 * lt : 5 * lt, 3 * lt : 4 * lt] = False
    np.testing.assert_array_equal(after[keep], painted[keep])
    # each tile's tissue was generated with its mask (no tile generated before its mask landed)
    assert all(store.tile_version(k) == 1 for k in [(3, 3), (4, 3)])
    # the setting is the canvas's: back to unlabelled
    widget.unpainted.value = "unlabelled"
    assert ctrl.unpainted == "unlabelled" and store.settings["unpainted"] == "unlabelled"


# ---------------------------------------------------------------------------------------------- coarse zoom
def test_the_whole_canvas_overview_requests_no_tiles_and_shows_the_mask_placeholder(viewer, tiny, qtbot, tmp_path):
    from napari_diffinfinite.canvas.store import placeholder_lut

    store = CanvasStore.create_for_model(tmp_path / "c", tiny, seed=1)  # 2**20 px a side
    c = DEFAULT_SIDE // 2
    store.write_labels(c // 8 - 1024, c // 8 - 1024, np.full((2048, 2048), 2, np.uint8))  # 16,384 px of necrosis
    ctrl = open_canvas(viewer, store=store, model=tiny, camera=((c, c), 1.0), scheduler_options={"max_view_tiles": 2})
    ctrl.set_unpainted("generated")  # even so: no masks at coarse zoom either
    ctrl.start()
    wait_idle(qtbot, ctrl)
    assert len(ctrl.landed) == 2
    # zoom out until the whole canvas is on screen
    h, w = viewer.canvas.size
    ctrl.set_camera((c, c), zoom=min(h, w) / DEFAULT_SIDE)
    view = ctrl.update_view()
    assert view.level >= 9 and view.rect == Rect(0, DEFAULT_SIDE, 0, DEFAULT_SIDE)
    assert ctrl.last_requested == [] and ctrl.scheduler.pending() == []
    qtbot.wait(500)
    assert len(ctrl.landed) == 2 and ctrl.mask_state == "idle" and not ctrl.auto_masked
    # what the layer shows there: the faint class colour of the mask (level 9: 2048 px a side, 1 px = 512 image px)
    level = 9
    shown = np.asarray(ctrl.tissue_layer.data[level][1024 - 8 : 1024 + 8, 1024 - 8 : 1024 + 8])
    lut = placeholder_lut(store.num_classes)
    np.testing.assert_array_equal(shown[:4, :4], np.broadcast_to(lut[2], (4, 4, 3)))
    far = np.asarray(ctrl.tissue_layer.data[level][:4, :4])
    np.testing.assert_array_equal(far, np.broadcast_to(lut[0], (4, 4, 3)))
    assert not np.array_equal(lut[2], lut[0])


# ---------------------------------------------------------------------------------------------- reader choice
def test_dropping_a_canvas_folder_opens_it_with_our_reader(viewer, tiny, qtbot, tmp_path):
    """Drag and drop and File > Open Folder call ``viewer.open(paths, plugin=None)``: napari picks the reader from
    its preferences, or asks when several readers accept the path (its built-in one accepts every folder).
    (``viewer.open(path)`` with napari's default ``plugin='napari'`` always uses the built-in reader.)"""
    from napari.errors import MultipleReaderError
    from napari.settings import get_settings

    from napari_diffinfinite.widgets.reader_preferences import remember_reader

    folder = tmp_path / "mine"
    store = small_canvas(folder, tiny, label=2)
    ctrl = open_canvas(viewer, store=store, model=tiny, camera=((1024, 1024), 1.0))
    prefs = get_settings().plugins.extension2reader
    assert prefs[str(folder.resolve()) + "/"] == PLUGIN  # what napari's reader dialog records for a folder
    viewer.layers.clear()
    assert ctrl.closed
    layers = viewer.open(str(folder), plugin=None)  # as dropped: napari's built-in reader claims folders too
    # the mask window at once, empty (no zarr in napari's call); the store, the tissue and the labels follow
    assert [layer.name for layer in layers] == ["DiffInfinite mask"] and not layers[0].data.any()
    qtbot.waitUntil(lambda: controller_for(viewer) is not None, timeout=3000)
    assert [layer.name for layer in viewer.layers] == ["DiffInfinite tissue", "DiffInfinite mask"]
    assert viewer.layers[0].multiscale and viewer.layers[1].data[100, 100] == 2
    assert controller_for(viewer).labels_layer is layers[0]
    close_all_controllers()
    # a canvas never opened here: napari cannot choose by itself (drag and drop shows its reader dialog)
    other = small_canvas(tmp_path / "other", tiny)
    other.close()
    with pytest.raises(MultipleReaderError):
        viewer.open(str(tmp_path / "other"), plugin=None)
    # entries of ours for paths that are gone are dropped when a new one is made
    import shutil

    shutil.rmtree(folder)
    assert remember_reader(tmp_path / "other")
    prefs = get_settings().plugins.extension2reader
    assert str(folder.resolve()) + "/" not in prefs and prefs[str((tmp_path / "other").resolve()) + "/"] == PLUGIN


# ---------------------------------------------------------------------------------------------- export regions
def test_export_the_whole_generated_extent_and_reopen_it_as_a_pyramid(viewer, tiny, qtbot, tmp_path, notes):
    import tifffile

    store = small_canvas(tmp_path / "c", tiny, label=3)
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "DiffInfinite")
    ctrl = open_canvas(viewer, store=store, model=tiny, camera=((2048, 2048), 1.0))
    qtbot.waitUntil(lambda: widget._controller is ctrl, timeout=3000)
    block = [(2, 3), (2, 4), (2, 5), (3, 3), (3, 4), (3, 5)]  # 2 x 3 tiles, none of them the view's centre tile
    ctrl.scheduler.request_tiles(block)
    ctrl.scheduler.start()
    qtbot.waitUntil(lambda: all(store.tile_status(k) == 2 for k in block), timeout=60000)
    widget.export_region.value = "generated"
    widget.export(tmp_path / "all.ome.tif")
    qtbot.waitUntil(lambda: ctrl.export_state in ("done", "error"), timeout=30000)
    assert ctrl.export_state == "done", notes.messages
    with tifffile.TiffFile(tmp_path / "all.ome.tif") as tif:
        series = tif.series[0]
        assert [lvl.shape for lvl in series.levels] == [(1024, 1536, 3), (512, 768, 3)]
        full = series.levels[0].asarray()
    want = store.read_tissue_raw(0, 1024, 2048, 1536, 3072)
    assert np.abs(full.astype(int) - want.astype(int)).mean() < 4  # JPEG 95
    # the drawn-rectangle region needs a rectangle
    widget.export_region.value = "rectangle"
    widget.export(tmp_path / "rect.ome.tif")
    assert "draw a rectangle first" in notes.messages[-1] and not (tmp_path / "rect.ome.tif").exists()
    # reopen in napari as dropped (plugin=None: the export was registered with our reader; napari's built-in
    # reader claims *.tif too): a multiscale RGB layer at the physical pixel size, and the mask
    close_all_controllers()
    viewer.layers.clear()
    image, mask = viewer.open(str(tmp_path / "all.ome.tif"), plugin=None)
    assert image.multiscale and image.rgb
    assert [tuple(s) for s in image.level_shapes] == [(1024, 1536), (512, 768)]
    assert [tuple(level.shape) for level in image.data] == [(1024, 1536, 3), (512, 768, 3)]
    np.testing.assert_allclose(image.scale[-2:], [0.5, 0.5])
    np.testing.assert_array_equal(np.asarray(image.data[0][:64, :64]), full[:64, :64])
    assert mask.multiscale and [tuple(s) for s in mask.level_shapes] == [(1024, 1536), (512, 768)]
    assert np.unique(np.asarray(mask.data[0])).tolist() == [3]
    np.testing.assert_allclose(mask.scale[-2:], [0.5, 0.5])


def test_loading_a_model_sets_its_guidance_and_steps_when_no_canvas_is_open(viewer, tiny_model_dir, qtbot,
                                                                          tmp_path):
    import json
    import shutil

    folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
    manifest = json.loads((folder / "model.json").read_text())
    manifest["default_omega"] = 0.5
    (folder / "model.json").write_text(json.dumps(manifest))
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "DiffInfinite")
    assert (widget.omega.value, widget.steps.value) == (3.0, 50)  # nothing loaded: the released defaults
    widget.model.value = "user"
    widget.model_folder.value = folder
    manifest["image"]["sampler"] = "dpmpp-2m-sde"
    (folder / "model.json").write_text(json.dumps(manifest))
    widget.load_selected_model()
    qtbot.waitUntil(lambda: widget.model_state == "loaded", timeout=10000)
    assert (widget.omega.value, widget.steps.value, widget.sampler.value) == (0.5, 3, "dpmpp-2m-sde")


def test_the_sampler_shows_the_canvases_and_applies_to_its_next_tiles(viewer, tiny, qtbot, tmp_path):
    from dataclasses import replace

    from napari_diffinfinite._widget import SAMPLER_CHOICES
    from napari_diffinfinite.model import SAMPLERS

    assert sorted(v for _, v in SAMPLER_CHOICES) == sorted(SAMPLERS)
    second = replace(tiny, sampler="dpmpp-2m-sde")
    store = CanvasStore.create_for_model(tmp_path / "c", second, shape_px=SMALL)
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "DiffInfinite")
    assert widget.sampler.value == "ddim"  # nothing loaded: the reference's
    ctrl = open_canvas(viewer, store=store, model=second, camera=((2048, 2048), 1.0),
                       scheduler_options={"max_view_tiles": 1})
    qtbot.waitUntil(lambda: widget._controller is ctrl, timeout=3000)
    assert widget.sampler.value == ctrl.sampler == "dpmpp-2m-sde"
    widget.sampler.value = "ddim"
    widget._start(ctrl)
    assert store.settings["sampler"] == "ddim" and ctrl.scheduler.stepper.sampler == "ddim"
    ctrl.cancel()
