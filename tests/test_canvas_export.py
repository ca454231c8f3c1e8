"""Exporting a canvas region: streamed from the store, exact against it, refusing or generating missing tiles."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_diffinfinite.io.canvas_export import MissingTilesError, export_canvas
from napari_diffinfinite.canvas.grid import Rect
from napari_diffinfinite.canvas.scheduler import TileScheduler
from napari_diffinfinite.canvas.store import CanvasStore
from napari_diffinfinite.cli import EXIT_OK, EXIT_OUTPUT, main
from napari_diffinfinite.generation import load_model


@pytest.fixture(scope="module")
def canvas(tmp_path_factory, tiny_model_dir):
    """A 2048 px canvas with a painted mask and the top-left 2x2 tiles generated."""
    model = load_model(tiny_model_dir, device="cpu")
    folder = tmp_path_factory.mktemp("canvas") / "c"
    store = CanvasStore.create_for_model(folder, model, shape_px=(2048, 2048), seed=3)
    labels = np.zeros((256, 256), np.uint8)
    labels[:64, :100] = 3
    labels[70:120, 20:60] = 1
    store.write_labels(0, 0, labels)
    scheduler = TileScheduler(store, model, device="cpu")
    scheduler.request_tiles([(0, 0), (0, 1), (1, 0), (1, 1)])
    scheduler.run_until_idle()
    store.close()
    return folder, model


def test_export_equals_the_store_and_mask_is_exact(canvas, tmp_path):
    folder, _ = canvas
    store = CanvasStore.open(folder, mode="r")
    region = (100, 900, 37, 1000)  # not tile aligned
    written = export_canvas(store, region, tmp_path / "roi", compression="zlib")
    with tifffile.TiffFile(written["image"]) as tif:
        image = tif.series[0].asarray()
    assert np.array_equal(image, store.read_tissue(0, 100, 900, 37, 1000))
    with tifffile.TiffFile(written["mask"]) as tif:
        mask = tif.series[0].asarray()
    labels = store.read_labels(Rect(0, 256, 0, 256))
    assert np.array_equal(mask, np.kron(labels, np.ones((8, 8), np.uint8))[100:900, 37:1000])
    settings = json.loads(written["sidecar"].read_text())
    assert settings["region_px"] == [100, 900, 37, 1000] and settings["seed"] == 3


def test_missing_tiles_are_refused_or_generated(canvas, tmp_path):
    folder, model = canvas
    store = CanvasStore.open(folder, mode="r")
    with pytest.raises(MissingTilesError, match="2 of 6 tiles in the region are not generated yet"):
        export_canvas(store, (0, 1024, 0, 1536), tmp_path / "x")
    assert not list(tmp_path.iterdir())
    store.close()
    store = CanvasStore.open(folder)
    scheduler = TileScheduler(store, model, device="cpu")
    written = export_canvas(store, (0, 1024, 0, 1536), tmp_path / "x", scheduler=scheduler, fmt="png")
    assert written["image"].name == "x.png" and store.tile_status((0, 2)) == 2
    store.close()


def test_cli_export(canvas, tmp_path, capsys):
    folder, _ = canvas
    out = tmp_path / "cli.ome.tif"
    assert main(["export", str(folder), "--region", "0", "0", "512", "512", "--out", str(out), "--quiet"]) == EXIT_OK
    with tifffile.TiffFile(out) as tif:
        assert tif.series[0].shape == (512, 512, 3)
    assert main(["export", str(folder), "--region", "0", "0", "2048", "2048", "--out",
                 str(tmp_path / "all.ome.tif"), "--quiet"]) == EXIT_OUTPUT
    assert "not generated yet" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- a job from a session
@pytest.fixture
def session(tmp_path, tiny_model_dir):
    from napari_diffinfinite.canvas.session import CanvasSession

    model = load_model(tiny_model_dir, device="cpu")
    store = CanvasStore.create_for_model(tmp_path / "live", model, shape_px=(1024, 1024), seed=2)
    store.write_labels(0, 0, np.full((64, 128), 1, np.uint8))
    s = CanvasSession(store)
    s.set_model(model)
    yield s
    s.close()


def test_an_export_job_refuses_missing_tiles_or_generates_them_first(session, tmp_path):
    """Without a viewer: the job refuses at once with the missing tiles, or waits for the session to generate
    them (progress counts them), then writes tissue equal to the store's."""
    from napari_diffinfinite.io.canvas_export import CanvasExportJob

    region = Rect(0, 512, 0, 1024)  # tiles (0, 0) and (0, 1), neither generated
    with pytest.raises(MissingTilesError, match="2 of the 2 tiles") as refused:
        CanvasExportJob(session, tmp_path / "no.ome.tif", region).start()
    assert refused.value.tiles == [(0, 0), (0, 1)] and not list(tmp_path.glob("no*"))
    states = []
    job = CanvasExportJob(session, tmp_path / "roi.ome.tif", region, generate_missing=True, compression="zlib")
    job.changed.connect(lambda: states.append(job.state))
    job.start()
    assert states[0] == "waiting" and job.progress[1] == 2
    assert job.wait(timeout=120), job.state
    assert job.state == "done", job.error
    assert "running" in states and states[-1] == "done"
    assert (session.store.read_status()[0] == 2).all() and (session.store.read_status()[1] == 0).all()
    with tifffile.TiffFile(job.result["image"]) as tif:
        level0 = tif.series[0].levels[0].asarray()
    np.testing.assert_array_equal(level0, session.store.read_tissue_raw(0, 0, 512, 0, 1024))


def test_an_export_job_cancelled_while_waiting_writes_nothing(session, tmp_path):
    from napari_diffinfinite.io.canvas_export import CanvasExportJob

    job = CanvasExportJob(session, tmp_path / "roi.ome.tif", Rect(512, 1024, 0, 512), generate_missing=True)
    job.changed.connect(lambda: job.state == "waiting" and job.cancel())  # the user cancels at once
    job.start()
    assert job.wait(timeout=5) and job.state == "cancelled"
    assert session.scheduler.wait_idle(timeout=120)
    assert session.store.tile_status((1, 0)) == 0  # its tile was never asked for
    assert not list(tmp_path.glob("roi*"))
    session.tile_landed.emit((1, 0))  # a late event: the job no longer listens
    assert job.state == "cancelled"
