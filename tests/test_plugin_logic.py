"""The napari face's logic without a GUI: camera geometry, the Labels window, LayerData of the reader and the
demo sample, the writer, and region export from a canvas (refusing placeholders)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from napari_diffinfinite import DISCLAIMER
from napari_diffinfinite.canvas import CanvasGrid, CanvasStore, Rect, TileScheduler
from napari_diffinfinite.label_grid import labels_at_cell_centres
from napari_diffinfinite.widgets import canvas_models
from napari_diffinfinite.io.canvas_export import (
    MissingTilesError,
    export_canvas_region,
    generated_bbox,
    missing_tiles,
)
from napari_diffinfinite.widgets.canvas_layers import META_KEY, canvas_layer_data
from napari_diffinfinite.widgets.canvas_view import (
    camera_for_rect,
    changed_bbox,
    labels_translate,
    level_for_zoom,
    needs_reanchor,
    rect_from_vertices,
    view_from_camera,
    window_anchor,
    window_rect,
)

BIG = CanvasGrid()  # 2**20 px a side


# ---------------------------------------------------------------------------------------------- geometry
def test_view_from_camera_at_1to1_and_zoomed_out():
    ps = 0.5
    centre_px = (500_000, 300_000)
    centre = camera_for_rect((centre_px[0], centre_px[0] + 1, centre_px[1], centre_px[1] + 1), ps)
    assert centre == (500_000 * ps, 300_000 * ps)  # pixel i's centre is world i * pixel size
    v = view_from_camera((0.0, *centre), 1 / ps, (1080, 1920), ps, BIG)  # a 3-tuple centre: napari's
    assert v.level == 0 and v.px_per_screen_px == 1
    assert (v.rect.height, v.rect.width) in {(1080, 1920), (1081, 1921)}
    assert abs(v.rect.centre[0] - 500_000.5) <= 1 and abs(v.rect.centre[1] - 300_000.5) <= 1
    v4 = view_from_camera(centre, 1 / ps / 4, (1080, 1920), ps, BIG)
    assert v4.level == 2 and abs(v4.rect.width - 4 * 1920) <= 1
    # the whole canvas on screen: the coarsest level, the view clipped to the canvas
    whole = view_from_camera((2**19 * ps, 2**19 * ps), 1000 / 2**20 / ps, (1000, 1000), ps, BIG)
    assert whole.level == 10 and whole.rect == BIG.bounds()  # 1,048 px per screen px: level 10 (1024 px)
    assert [level_for_zoom(f, 12) for f in (0.5, 1, 1.99, 2, 3, 4, 2**20)] == [0, 0, 0, 1, 1, 2, 11]
    assert level_for_zoom(math.nan, 12) == 0


def test_the_labels_window_follows_the_view_on_aligned_anchors():
    view = Rect(524_000, 525_080, 524_000, 525_920)
    a = window_anchor(view, BIG)
    assert a[0] % 512 == 0 and a[1] % 512 == 0
    win = window_rect(a, BIG).scaled_in(8)
    assert win.y0 <= view.y0 and view.y1 <= win.y1 and win.x0 <= view.x0 and view.x1 <= win.x1
    assert (win.height, win.width) == (16384, 16384)
    assert not needs_reanchor(view, a, BIG)
    assert not needs_reanchor(view.offset(2000, 2000), a, BIG)  # still inside the window
    moved = view.offset(0, 9000)
    assert needs_reanchor(moved, a, BIG) and window_anchor(moved, BIG) != a
    # at the canvas's far corner the window stays inside the canvas
    corner = Rect(2**20 - 600, 2**20, 2**20 - 900, 2**20)
    assert window_rect(window_anchor(corner, BIG), BIG).y1 == 2**17
    # a canvas smaller than the window: the window is the whole latent canvas, never moves
    small = CanvasGrid(4096, 4096)
    assert window_anchor(Rect(3000, 3500, 3000, 3500), small) == (0, 0)
    assert window_rect((0, 0), small) == Rect(0, 512, 0, 512)
    assert not needs_reanchor(Rect(0, 4096, 0, 4096), (0, 0), small)


def test_a_label_pixel_overlays_its_8_image_pixels():
    ps, d = 0.5, 8
    anchor = (130_000, 7)
    ty, tx = labels_translate(anchor, d, ps)
    # label (anchor + k) covers image px 8 (anchor + k) .. + 7, whose centres average to 8 (anchor + k) + 3.5
    for k in (0, 5):
        world_label = (ty + k * d * ps, tx + k * d * ps)
        first = ((anchor[0] + k) * d * ps, (anchor[1] + k) * d * ps)
        last = (((anchor[0] + k) * d + 7) * ps, ((anchor[1] + k) * d + 7) * ps)
        assert world_label == pytest.approx(((first[0] + last[0]) / 2, (first[1] + last[1]) / 2))
    # float32 keeps that to 1/16 um at the end of a 2**20 px canvas
    assert abs(float(np.float32(ty)) - ty) <= 1 / 16


def test_changed_bbox_latent_labels_and_selections():
    a = np.zeros((50, 60), np.uint8)
    b = a.copy()
    assert changed_bbox(a, b) is None
    b[10, 20] = 3
    b[14, 22] = 1
    r, where = changed_bbox(a, b)
    assert r == Rect(10, 15, 20, 23) and where.sum() == 2 and where[0, 0] and where[4, 2]
    mask = np.arange(20 * 17).reshape(20, 17) % 5
    lab = labels_at_cell_centres(mask, 8)
    assert lab.shape == (3, 3)
    assert lab[0, 0] == mask[4, 4] and lab[1, 1] == mask[12, 12] and lab[2, 2] == mask[19, 16]  # edge replicated
    verts = np.array([[10.0, 20.0], [10.0, 120.0], [60.0, 120.0], [60.0, 20.0]])  # world um
    assert rect_from_vertices(verts, 0.5) == Rect(20, 121, 40, 241)
    assert rect_from_vertices(np.c_[np.zeros(4), verts], 0.5) == Rect(20, 121, 40, 241)  # a 3-D shape's last axes
    with pytest.raises(ValueError, match="vertices"):
        rect_from_vertices(np.zeros((0, 2)), 0.5)


def test_model_source_is_injectable(monkeypatch, tmp_path):
    monkeypatch.delenv(canvas_models.MODEL_ENV, raising=False)
    assert canvas_models.default_model_source() == "embedded"
    monkeypatch.setenv(canvas_models.MODEL_ENV, str(tmp_path))
    assert canvas_models.default_model_source() == str(tmp_path)
    with pytest.raises(FileNotFoundError, match="model.json"):
        canvas_models.get_model()  # the env folder is no model
    msg = canvas_models.model_error_message(FileNotFoundError("x is missing"), canvas_models.ModelSpec("embedded"))
    assert "embedded" in msg and "Choose a model folder" in msg


# ---------------------------------------------------------------------------------------------- canvas data
@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return canvas_models.get_model(str(tiny_model_dir))


@pytest.fixture(scope="module")
def generated(tmp_path_factory, tiny):
    """A 1024 x 1536 px canvas (2 x 3 tiles) painted 1 | 3, with tiles (0, 0) and (0, 1) generated."""
    folder = tmp_path_factory.mktemp("canvas") / "c"
    store = CanvasStore.create_for_model(folder, tiny, shape_px=(1024, 1536), seed=5)
    lab = np.ones((128, 192), np.uint8)
    lab[:, 96:] = 3
    store.write_labels(0, 0, lab)
    sched = TileScheduler(store, tiny)
    sched.request_tiles([(0, 0), (0, 1)])
    assert sched.run_until_idle() == [(0, 0), (0, 1)]
    store.close()
    return folder


def test_reader_layer_data_shows_what_is_generated_without_a_model(generated):
    from napari_diffinfinite._reader import get_reader, read_canvas

    assert get_reader(str(generated)) is read_canvas and get_reader([str(generated)]) is read_canvas
    (tissue, tkw, ttype), (mask, mkw, mtype) = read_canvas(str(generated), attach=False)
    assert (ttype, mtype) == ("image", "labels")
    assert tkw["multiscale"] and tkw["rgb"] and tkw["scale"] == (0.5, 0.5)
    assert [lvl.shape for lvl in tissue] == [(1024, 1536, 3), (512, 768, 3), (256, 384, 3)]
    store = CanvasStore.open(generated, mode="r")
    np.testing.assert_array_equal(tissue[0][0:512, 0:1024], store.read_tissue_raw(0, 0, 512, 0, 1024))
    placeholder = tissue[0][600:610, 10:20]  # tile (1, 0) is not generated: the faint mask colour
    np.testing.assert_array_equal(placeholder, store.placeholder(0, 600, 610, 10, 20))
    assert placeholder.min() > 150
    assert mask.shape == (128, 192) and mask[0, 0] == 1 and mask[0, 150] == 3
    assert mkw["scale"] == (4.0, 4.0) and mkw["translate"] == (1.75, 1.75)
    assert tkw["metadata"][META_KEY]["role"] == "tissue" and tkw["metadata"]["disclaimer"] == DISCLAIMER
    assert mkw["metadata"][META_KEY]["anchor"] == [0, 0]


def test_reader_ignores_other_folders_and_files(tmp_path):
    from napari_diffinfinite._reader import get_reader
    from napari_diffinfinite.io import write_pyramidal_ome_tiff

    assert get_reader(str(tmp_path)) is None
    (tmp_path / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
    assert get_reader(str(tmp_path)) is None
    foreign = tmp_path / "foreign.ome.tif"
    write_pyramidal_ome_tiff(foreign, np.zeros((64, 64, 3), np.uint8), synthetic_note=False)
    assert get_reader(str(foreign)) is None
    assert get_reader([str(tmp_path), str(foreign)]) is None


def test_export_refuses_placeholders_and_round_trips_through_the_reader(generated, tmp_path):
    from napari_diffinfinite._reader import get_reader, read_export

    store = CanvasStore.open(generated, mode="r")
    assert missing_tiles(store, (0, 1024, 0, 1024)) == [(1, 0), (1, 1)]
    assert generated_bbox(store) == Rect(0, 512, 0, 1024)
    with pytest.raises(MissingTilesError, match="2 of the 4 tiles") as exc:
        export_canvas_region(store, tmp_path / "refused.ome.tif", (0, 1024, 0, 1024))
    assert exc.value.tiles == [(1, 0), (1, 1)] and not list(tmp_path.iterdir())
    region = (100, 400, 300, 900)  # across both generated tiles
    paths = export_canvas_region(store, tmp_path / "view.ome.tif", region, compression="zlib")  # lossless
    assert paths["image"].name == "view.ome.tif" and paths["mask"].name == "view_mask.ome.tif"
    side = json.loads(paths["sidecar"].read_text())
    assert side["region_px"] == [100, 400, 300, 900] and side["synthetic"] is True and side["num_classes"] == 5
    assert get_reader(str(paths["image"])) is read_export
    (image, ikw, itype), (mask, mkw, mtype) = read_export(str(paths["image"]))
    assert (itype, mtype) == ("image", "labels") and ikw["scale"] == (0.5, 0.5)
    level0 = np.asarray(image[0] if ikw["multiscale"] else image)
    np.testing.assert_array_equal(level0, store.read_tissue_raw(0, 100, 400, 300, 900))
    m = np.asarray(mask[0] if mkw["multiscale"] else mask)
    assert m.shape == (300, 600) and set(np.unique(m).tolist()) == {1, 3}
    assert (m[:, : 768 - 300] == 1).all() and (m[:, 768 - 300 :] == 3).all()  # label edge at latent 96 = px 768


def test_writer_saves_the_generated_tissue_of_a_canvas_and_plain_images(generated, tmp_path):
    from napari_diffinfinite._writer import write_tissue
    from napari_diffinfinite.io import read_pyramid

    store = CanvasStore.open(generated, mode="r")
    layers = canvas_layer_data(store)
    data, kwargs, _ = layers[0]
    written = write_tissue(str(tmp_path / "saved.ome.tif"), data, kwargs)
    assert [p.rsplit("/", 1)[1] for p in written] == ["saved.ome.tif", "saved_mask.ome.tif", "saved.json"]
    saved = np.asarray(read_pyramid(written[0])[0]).astype(int)  # JPEG (quality 95) by default: close, not equal
    assert saved.shape == (512, 1024, 3)
    assert np.abs(saved - store.read_tissue_raw(0, 0, 512, 0, 1024)).mean() < 12
    yy, xx = np.mgrid[0:100, 0:80]
    rgb = np.stack([yy * 2, xx * 3, yy + xx], -1).astype(np.uint8)  # smooth: JPEG keeps it within a few levels
    (plain,) = write_tissue(str(tmp_path / "plain.ome.tif"), rgb, {"scale": (0.25, 0.25), "name": "x"})
    assert np.abs(np.asarray(read_pyramid(plain)[0]).astype(int) - rgb).mean() < 3
    with pytest.raises(ValueError, match="RGB"):
        write_tissue(str(tmp_path / "grey.ome.tif"), np.zeros((8, 8), np.float32), {})


def test_demo_canvas_paints_the_demo_mask_in_the_middle(tmp_path, tiny):
    from napari_diffinfinite._sample_data import create_demo_canvas, load_demo_mask

    store, rect = create_demo_canvas(tmp_path / "d", tiny, settings={"model_source": "x"})
    c = store.grid.centre()
    assert (rect.height, rect.width) == (2560, 2560) and rect.centre == pytest.approx(c, abs=8)
    lab = store.read_labels(rect.scaled_out(8))
    np.testing.assert_array_equal(lab, labels_at_cell_centres(load_demo_mask(), 8))
    assert store.settings["context"] == 1 and store.settings["model_source"] == "x" and store.model_name == tiny.name
    assert store.read_labels(Rect(0, 8, 0, 8)).max() == 0
    store.close()
    # without a model: the default geometry and no model name (any 4-channel model may continue it)
    bare, _ = create_demo_canvas(tmp_path / "e", None, shape_px=(8192, 8192))
    assert bare.latent_channels == 4 and bare.model_name is None and bare.num_classes == 5
    bare.close()


def test_labels_to_latent_resamples_a_layer_by_its_scale():
    from types import SimpleNamespace

    from napari_diffinfinite._widget import labels_to_latent

    data = np.zeros((64, 64), np.uint8)
    data[:, 32:] = 2
    at_image_res = SimpleNamespace(data=data, scale=(0.5, 0.5), name="m", multiscale=False)
    assert labels_to_latent(at_image_res, 0.5, 8).shape == (8, 8)
    np.testing.assert_array_equal(labels_to_latent(at_image_res, 0.5, 8), labels_at_cell_centres(data, 8))
    coarse = SimpleNamespace(data=data, scale=(4.0, 4.0), name="m", multiscale=False)  # already latent scale
    np.testing.assert_array_equal(labels_to_latent(coarse, 0.5, 8), data)


def test_prefetched_regions_serve_napari_slicings_from_memory(generated):
    from napari_diffinfinite.canvas.prefetch import PrefetchLevel

    store = CanvasStore.open(generated, mode="r")
    level = PrefetchLevel(store.tissue_level(0), margin=0.5)
    assert level.shape == (1024, 1536, 3) and level.prefetch() is False  # nothing asked yet
    level[100:300, 200:400]
    assert level.misses == 1 and level.last_rect == Rect(100, 300, 200, 400)
    assert level.prefetch() and level.region == Rect(0, 400, 100, 500)  # grown by half the view's height, width
    level.margin, level.max_side = 10.0, 600
    level[100:300, 200:400]
    assert level.prefetch() and level.region == Rect(0, 500, 0, 600)  # at most max_side (clipped to the level)
    level.margin = 0.5
    np.testing.assert_array_equal(level[120:320, 250:450, :], store.read_tissue(0, 120, 320, 250, 450))
    assert level.hits == 2  # the two slicings after a prefetch
    level[0:1024, 0:1536]  # outside the region: read from the store
    assert level.misses == 2
    assert level[5, 5].shape == (3,) and level.misses == 2  # not napari's kind of slicing: straight through
    level.forget()
    assert level.region is None
