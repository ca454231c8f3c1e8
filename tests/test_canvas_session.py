"""The Qt-free canvas session: a canvas driven without a viewer - model, view requests, events, label edits
with exact invalidation, re-rolls, settings and the unpainted-areas policy."""

from __future__ import annotations

import numpy as np
import pytest

from napari_diffinfinite.canvas import CanvasStore, Rect
from napari_diffinfinite.canvas.session import MAX_REROLL_TILES, CanvasSession
from napari_diffinfinite.generation import load_model

SHAPE = (1024, 1024)  # 2 x 2 tiles of 512 px
WHOLE = Rect(0, 1024, 0, 1024)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture
def session(tmp_path, tiny):
    store = CanvasStore.create_for_model(tmp_path / "c", tiny, shape_px=SHAPE, seed=3)
    s = CanvasSession(store)
    yield s
    s.close()


def test_a_session_generates_its_view_and_reports_each_tile_as_an_event(session, tiny):
    landed, changes = [], []
    session.tile_landed.connect(landed.append)
    session.changed.connect(lambda: changes.append(session.generating))
    assert session.request_view(0, WHOLE) == []  # no model, nothing generating: nothing requested
    session.set_model(tiny)
    session.start()
    requested = session.request_view(0, WHOLE)
    assert sorted(requested) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert session.scheduler.wait_idle(timeout=120)
    assert sorted(landed) == sorted(requested) and (session.store.read_status() == 2).all()
    assert changes and changes[-1] is True  # set_model and start were announced
    session.cancel()
    assert not session.generating and session.request_view(0, WHOLE) == []


def test_a_label_edit_invalidates_exactly_the_tiles_whose_labels_changed(session, tiny):
    session.set_model(tiny)
    session.start()
    session.request_view(0, WHOLE)
    assert session.scheduler.wait_idle(timeout=120)
    before = session.store.tile_version((1, 1))
    # 8 x 8 latents of carcinoma inside tile (0, 1) only (a tile is 64 latents a side)
    assert session.write_labels(10, 70, np.full((8, 8), 1, np.uint8)) == [(0, 1)]
    assert (
        session.write_labels(10, 70, np.full((8, 8), 1, np.uint8)) == []
    )  # the same labels again: no change
    assert session.scheduler.wait_idle(timeout=120)
    assert session.store.tile_version((0, 1)) == 2 and session.store.tile_version((1, 1)) == before
    with pytest.raises(ValueError, match="reach outside the canvas"):
        session.write_labels(120, 120, np.ones((16, 16), np.uint8))


def test_without_a_model_an_edit_marks_its_tiles_empty(tmp_path, tiny):
    store = CanvasStore.create_for_model(tmp_path / "c", tiny, shape_px=SHAPE)
    s = CanvasSession(store)
    try:
        store.set_status([(0, 0)], 2)
        assert s.write_labels(0, 0, np.full((4, 4), 3, np.uint8)) == [(0, 0)]
        assert store.tile_status((0, 0)) == 0
        with pytest.raises(RuntimeError, match="load a model first"):
            s.reroll(WHOLE)
        with pytest.raises(RuntimeError, match="no model is loaded"):
            s.start()
    finally:
        s.close()


def test_reroll_gives_the_tiles_a_new_seed_and_refuses_bad_regions(session, tiny, tmp_path):
    session.set_model(tiny)
    assert session.reroll(Rect(0, 100, 600, 700), seed=99) == [(0, 1)]
    assert session.store.tile_seed((0, 1)) == 99
    with pytest.raises(ValueError, match="outside the canvas"):
        session.reroll(Rect(5000, 6000, 5000, 6000))
    side = 512 * 17  # 289 tiles, more than one re-roll may take
    assert 17 * 17 > MAX_REROLL_TILES
    big = CanvasSession(CanvasStore.create_for_model(tmp_path / "big", tiny, shape_px=(side, side)))
    try:
        big.set_model(tiny)
        with pytest.raises(ValueError, match=f"re-roll at most {MAX_REROLL_TILES}"):
            big.reroll(Rect(0, side, 0, side))
    finally:
        big.close()


def test_settings_are_recorded_and_rebuild_the_scheduler_only_when_they_change(session, tiny):
    session.set_model(tiny)
    first = session.scheduler
    assert (
        session.apply_settings(omega=session.store.settings["omega"]) is False and session.scheduler is first
    )
    assert session.apply_settings(steps=2, sampler="ddim") is True
    assert session.store.settings["steps"] == 2 and session.sampler == "ddim"
    assert session.scheduler is not first


def test_generated_unpainted_areas_ask_for_masks_before_any_tile(session, tiny):
    session.set_model(tiny)
    session.start()
    with pytest.raises(ValueError, match="'unlabelled' or 'generated'"):
        session.set_unpainted("random")
    session.write_labels(0, 0, np.full((4, 4), 1, np.uint8))  # tile (0, 0) is painted
    assert session.set_unpainted("generated", context=0) is True
    assert session.store.settings["unpainted"] == "generated"
    kind, tiles = session.request_view(0, WHOLE)
    assert kind == "masks" and sorted(tiles) == [(0, 1), (1, 0), (1, 1)]
    assert session.scheduler.pending() == []  # nothing is generated before the masks are written
    session.auto_masked.update(tiles)  # masks asked for once: the view is then requested as it is
    assert set(tiles) <= set(session.request_view(0, WHOLE))  # (0, 0), repainted, may be running already


def test_a_read_only_session_refuses_to_generate(tmp_path, tiny):
    CanvasStore.create_for_model(tmp_path / "c", tiny, shape_px=SHAPE).close()
    s = CanvasSession(CanvasStore.open(tmp_path / "c", mode="r"))
    try:
        with pytest.raises(PermissionError, match="read-only"):
            s.set_model(tiny)
        assert s.apply_settings(steps=9) is False
    finally:
        s.close()


def test_generated_masks_fill_only_unpainted_cells_of_the_asked_tiles(session, tiny):
    from napari_diffinfinite.generation import generate_mask

    session.set_model(tiny)
    with pytest.raises(ValueError, match="outside the canvas"):
        session.mask_request(Rect(2000, 2100, 0, 100), 0, seed=1)
    with pytest.raises(ValueError, match="does not support the context"):
        session.mask_request(WHOLE, "squamous", seed=1)
    rect, ctx, seed = session.mask_request(Rect(3, 1000, 5, 1020), "adenocarcinoma", seed=1)
    assert rect == Rect(0, 1000, 0, 1024) and ctx == 0  # grown to whole 8-px cells, clipped to the canvas
    assert session.mask_request(Rect(3, 1000, 5, 1020), 0, seed=1)[2] == seed  # same region, same seed
    session.write_labels(0, 0, np.full((64, 64), 2, np.uint8))  # tile (0, 0) is painted necrosis
    mask = np.full((rect.height, rect.width), 3, np.uint8)  # a "generated" mask: all stroma
    written, tiles = session.write_mask(rect, mask, only_tiles=[(0, 0), (1, 1)])
    assert written == Rect(0, 125, 0, 128) and tiles == [(1, 1)]  # (0, 0) was painted: kept
    labels = session.store.read_labels(Rect(0, 128, 0, 128))
    assert (
        (labels[:64, :64] == 2).all() and (labels[64:125, 64:] == 3).all() and (labels[:64, 64:] == 0).all()
    )
    real = generate_mask(tiny, (rect.height, rect.width), context=ctx, seed=seed)
    assert real.shape == (rect.height, rect.width)


def test_a_placed_mask_is_centred_and_clipped_to_the_canvas(session):
    labels = np.full((40, 60), 4, np.uint8)
    r, block = session.placement(labels, (512.0, 512.0))  # centre of the canvas, latent (64, 64)
    assert r == Rect(44, 84, 34, 94) and block.shape == (40, 60)
    r, block = session.placement(labels, (0.0, 0.0))  # clipped at the top-left corner
    assert r == Rect(0, 20, 0, 30) and (block == 4).all() and block.shape == (20, 30)
    with pytest.raises(ValueError, match="classes 0..4"):
        session.placement(np.full((4, 4), 7), (512.0, 512.0))
    with pytest.raises(ValueError, match="outside the canvas"):
        session.placement(labels, (10_000.0, 10_000.0))


def test_another_model_may_continue_a_canvas_only_while_no_tile_is_generated(tmp_path, tiny):
    """The canvas records the model it was made for; another one may take over an untouched canvas (the demo
    made before its model loaded), never one with tissue of the first model in it."""
    store = CanvasStore.create(
        tmp_path / "c",
        shape_px=SHAPE,
        model_name="some-other-model",
        latent_channels=int(tiny.image_unet.channels),
        settings={"num_classes": int(tiny.num_classes)},
    )
    session = CanvasSession(store)
    try:
        session.set_model(tiny)  # untouched: accepted
        store.set_status((1, 1), 2)
        with pytest.raises(ValueError, match="generated with model 'some-other-model'"):
            session.set_model(tiny)
    finally:
        session.close()
