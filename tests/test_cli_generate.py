"""`diffinfinite generate`: files written, settings sidecar, refusals and exit codes a script can rely on."""

from __future__ import annotations

import json

import numpy as np
import tifffile
from PIL import Image

from napari_diffinfinite.cli import EXIT_MASK, EXIT_MODEL, EXIT_OK, EXIT_OUTPUT, EXIT_USAGE, main


def test_generate_with_a_generated_mask_writes_pyramid_mask_and_settings(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "slide.ome.tif"
    code = main(["generate", "--size", "96", "128", "--out", str(out), "--model", str(tiny_model_dir),
                 "--seed", "4", "--quiet", "--compression", "zlib"])
    assert code == EXIT_OK
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome and tif.series[0].shape == (96, 128, 3)
    with tifffile.TiffFile(tmp_path / "slide_mask.ome.tif") as tif:
        mask = tif.series[0].asarray()
    assert mask.shape == (96, 128) and mask.max() < 5
    settings = json.loads((tmp_path / "slide.json").read_text())
    assert settings["seed"] == 4 and settings["model"] == "tiny-test-model" and settings["mask"] == "generated"
    # refuses to overwrite, unless asked
    assert main(["generate", "--size", "96", "128", "--out", str(out), "--model", str(tiny_model_dir), "--quiet"]) \
        == EXIT_OUTPUT
    assert "pass --overwrite" in capsys.readouterr().err


def test_generate_from_a_painted_png_mask(tiny_model_dir, tmp_path):
    painted = np.zeros((6, 10), np.uint8)
    painted[:, 5:] = 3
    Image.fromarray(painted).save(tmp_path / "painted.png")
    out = tmp_path / "tile.png"
    code = main(["generate", "--mask", str(tmp_path / "painted.png"), "--mask-scale", "16", "--out", str(out),
                 "--model", str(tiny_model_dir), "--quiet"])
    assert code == EXIT_OK
    assert np.asarray(Image.open(out)).shape == (96, 160, 3)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "tile_mask.png")), np.kron(painted, np.ones((16, 16))))


def test_exit_codes(tiny_model_dir, tmp_path, capsys):
    bad = np.zeros((8, 8), np.uint8)
    bad[2, 3] = 7
    Image.fromarray(bad).save(tmp_path / "bad.png")
    out = str(tmp_path / "x.png")
    assert main(["generate", "--mask", str(tmp_path / "bad.png"), "--out", out, "--model", str(tiny_model_dir),
                 "--quiet"]) == EXIT_MASK
    assert "labels [7]" in capsys.readouterr().err
    assert main(["generate", "--mask", str(tmp_path / "missing.png"), "--out", out, "--model", str(tiny_model_dir),
                 "--quiet"]) == EXIT_MASK
    assert main(["generate", "--size", "64", "64", "--out", out, "--model", str(tmp_path)]) == EXIT_MODEL
    assert "no model.json" in capsys.readouterr().err
    assert main(["generate", "--size", "64", "64", "--out", out, "--model", str(tiny_model_dir),
                 "--context", "squamous"]) == EXIT_USAGE
    assert "adenocarcinoma only" in capsys.readouterr().err
    assert not list(tmp_path.glob("x*"))  # nothing written by any failure
