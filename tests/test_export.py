"""Export (issue 6): pyramidal OME-TIFF, PNG, JSON sidecar, all-or-nothing region export.

Real files in tmp_path, read back with tifffile, Pillow and ome-types (the OME schema); no mocks.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_diffinfinite import DISCLAIMER, __version__
from napari_diffinfinite.io import (
    PNG_MAX_SIDE,
    SETTINGS_NAMESPACE,
    SYNTHETIC_NAMESPACE,
    ExportCancelled,
    ExportError,
    PyramidOptions,
    export_paths,
    export_region,
    pyramid_shapes,
    read_export_info,
    read_pyramid,
    write_png,
    write_pyramidal_ome_tiff,
    write_sidecar,
)
from napari_diffinfinite.io import ome_tiff as ome_tiff_module
from napari_diffinfinite.io._atomic import translate_oserror

H, W = 1300, 2100  # not a multiple of the 512 px tile
LEVEL_SHAPES = [(1300, 2100), (650, 1050), (325, 525)]


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    """Smooth, tissue-like colour fields with fine texture (what JPEG sees in generated H&E)."""
    y = np.arange(H, dtype=np.float32)[:, None]
    x = np.arange(W, dtype=np.float32)[None, :]
    field = np.sin(y / 37.0) * np.cos(x / 53.0)
    r = 200 - 40 * field + 10 * np.sin(x / 5.0)
    g = 140 + 50 * np.sin((x + y) / 41.0)
    b = 180 + 40 * np.cos(y / 29.0) + 8 * np.sin(y / 4.0) + 5 * np.cos(x / 7.0)
    return np.clip(np.stack(np.broadcast_arrays(r, g, b), axis=-1), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    """Class blobs plus scattered single pixels, so nearest-neighbour reduction is tested pixel by pixel."""
    rng = np.random.default_rng(1)
    coarse = rng.integers(0, 6, (H // 50 + 1, W // 50 + 1))
    lab = np.kron(coarse, np.ones((50, 50), np.int64))[:H, :W]
    speckle = rng.random((H, W)) < 0.02
    lab[speckle] = rng.integers(0, 6, int(speckle.sum()))
    return lab  # int64 on purpose: the writer picks uint8


def reference_rgb_pyramid(image: np.ndarray) -> list[np.ndarray]:
    """Independent reference: 2 x 2 means with round-half-up, odd edges averaged over the pixels present."""
    levels = [image]
    while max(levels[-1].shape[:2]) > 1024:
        a = levels[-1].astype(np.float64)
        h, w = a.shape[:2]
        out = np.zeros(((h + 1) // 2, (w + 1) // 2, 3))
        count = np.zeros(out.shape[:2] + (1,))
        for dy in (0, 1):
            for dx in (0, 1):
                part = a[dy::2, dx::2]
                out[: part.shape[0], : part.shape[1]] += part
                count[: part.shape[0], : part.shape[1]] += 1
        levels.append(np.floor(out / count + 0.5).astype(np.uint8))
    return levels


def ome_xml(path) -> str:
    with tifffile.TiffFile(path) as tif:
        return tif.ome_metadata


def level_arrays(path) -> list[np.ndarray]:
    with tifffile.TiffFile(path) as tif:
        return [level.asarray() for level in tif.series[0].levels]


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------------ structure


@pytest.mark.parametrize("compression", ["zlib", "none"])
def test_rgb_round_trip_lossless(tmp_path, rgb, compression):
    path = tmp_path / "tissue.ome.tif"
    info = write_pyramidal_ome_tiff(path, rgb, options=PyramidOptions(compression=compression))
    assert info.shapes == tuple(LEVEL_SHAPES) and info.dtype == "uint8" and not info.bigtiff

    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        series = tif.series[0]
        assert series.is_pyramidal
        assert [level.shape for level in series.levels] == [(h, w, 3) for h, w in LEVEL_SHAPES]
        page0 = tif.pages[0]
        assert len(page0.subifds) == len(LEVEL_SHAPES) - 1  # reduced levels live in SubIFDs
        for level in series.levels:
            page = level.keyframe
            assert (page.tilelength, page.tilewidth) == (512, 512)
            assert page.photometric == tifffile.PHOTOMETRIC.RGB
            assert page.planarconfig == tifffile.PLANARCONFIG.CONTIG  # interleaved YXS
            assert page.compression == (
                tifffile.COMPRESSION.ADOBE_DEFLATE if compression == "zlib" else tifffile.COMPRESSION.NONE
            )
        for level in series.levels[1:]:
            assert level.keyframe.subfiletype == tifffile.FILETYPE.REDUCEDIMAGE
        # the thumbnail: a second, single-resolution image named "thumbnail" (QuPath: associated image)
        assert [s.name for s in tif.series[1:]] == ["thumbnail"]
        assert len(tif.series[1].levels) == 1
        assert tif.series[1].shape == (163, 263, 3)

    for got, want in zip(level_arrays(path), reference_rgb_pyramid(rgb), strict=True):
        np.testing.assert_array_equal(got, want)


def test_rgb_jpeg_within_tolerance(tmp_path, rgb):
    path = tmp_path / "tissue.ome.tif"
    info = write_pyramidal_ome_tiff(path, rgb)  # default: JPEG, quality 95
    assert info.compression == "jpeg"
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.compression == tifffile.COMPRESSION.JPEG
        # stored as YCbCr 4:2:0 like Aperio SVS; every reader hands back RGB
        assert page.photometric == tifffile.PHOTOMETRIC.YCBCR
    for got, want in zip(level_arrays(path), reference_rgb_pyramid(rgb), strict=True):
        assert got.shape == want.shape and got.dtype == np.uint8
        error = np.abs(got.astype(np.int16) - want).mean()
        assert error < 3.0, error


def test_labels_exact_at_every_level(tmp_path, labels):
    path = tmp_path / "tissue_mask.ome.tif"
    info = write_pyramidal_ome_tiff(path, labels, kind="labels")
    assert info.compression == "zlib" and info.dtype == "uint8"
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.photometric == tifffile.PHOTOMETRIC.MINISBLACK and page.samplesperpixel == 1
        assert (page.tilelength, page.tilewidth) == (512, 512)
        assert len(page.subifds) == 2
    for n, got in enumerate(level_arrays(path)):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, labels[:: 2**n, :: 2**n])  # nearest: every 2nd pixel


def test_labels_above_255_are_uint16(tmp_path):
    lab = np.arange(300 * 400, dtype=np.int32).reshape(300, 400) % 1000
    path = tmp_path / "big_ids.ome.tif"
    info = write_pyramidal_ome_tiff(path, lab, kind="labels", options=PyramidOptions(thumbnail=False))
    assert info.dtype == "uint16" and info.shapes == ((300, 400),)
    np.testing.assert_array_equal(level_arrays(path)[0], lab)


def test_labels_refuse_jpeg_and_bad_ids(tmp_path, labels):
    with pytest.raises(ValueError, match="losslessly"):
        write_pyramidal_ome_tiff(
            tmp_path / "m.ome.tif", labels, kind="labels", options=PyramidOptions(compression="jpeg")
        )
    with pytest.raises(ValueError, match=">= 0"):
        write_pyramidal_ome_tiff(tmp_path / "m.ome.tif", -np.ones((20, 20), np.int16), kind="labels")
    # a callable source is written as uint8 unless max_label says more; a larger id fails clearly
    big = np.full((40, 40), 400, np.uint16)
    with pytest.raises(ExportError, match="max_label"):
        write_pyramidal_ome_tiff(
            tmp_path / "m.ome.tif", lambda y0, y1, x0, x1: big[y0:y1, x0:x1], (40, 40), kind="labels"
        )
    assert files_in(tmp_path) == []
    info = write_pyramidal_ome_tiff(
        tmp_path / "m.ome.tif",
        lambda y0, y1, x0, x1: big[y0:y1, x0:x1],
        (40, 40),
        kind="labels",
        max_label=400,
    )
    assert info.dtype == "uint16"


def test_pyramid_shapes_stop_at_1024():
    assert pyramid_shapes(1300, 2100) == LEVEL_SHAPES
    assert pyramid_shapes(1024, 1024) == [(1024, 1024)]
    assert pyramid_shapes(16384, 16384)[-1] == (1024, 1024) and len(pyramid_shapes(16384, 16384)) == 5
    assert pyramid_shapes(3, 5000)[-1] == (1, 625)


# ------------------------------------------------------------------------------------------------ streaming


def test_streaming_from_callable_equals_array_and_reads_each_pixel_once(tmp_path, rgb):
    requests = []

    def read(y0, y1, x0, x1):
        requests.append((y0, y1, x0, x1))
        return rgb[y0:y1, x0:x1]

    a = tmp_path / "from_array.ome.tif"
    b = tmp_path / "from_callable.ome.tif"
    write_pyramidal_ome_tiff(a, rgb, options=PyramidOptions(compression="zlib"))
    write_pyramidal_ome_tiff(b, read, (H, W), options=PyramidOptions(compression="zlib"))
    for x, y in zip(level_arrays(a), level_arrays(b), strict=True):
        np.testing.assert_array_equal(x, y)
    # level 0 is read once, in tiles of at most 512 x 512 that cover the image exactly
    assert all(y1 - y0 <= 512 and x1 - x0 <= 512 for y0, y1, x0, x1 in requests)
    covered = np.zeros((H, W), np.int32)
    for y0, y1, x0, x1 in requests:
        covered[y0:y1, x0:x1] += 1
    assert covered.min() == covered.max() == 1


def test_reduced_levels_spooled_to_disk_are_identical(tmp_path, rgb, monkeypatch):
    """Large levels go to an anonymous scratch file instead of memory; the result must not change."""
    a = tmp_path / "memory.ome.tif"
    write_pyramidal_ome_tiff(a, rgb, options=PyramidOptions(compression="zlib"))
    monkeypatch.setattr(ome_tiff_module, "SPOOL_IN_MEMORY_BYTES", 0)
    b = tmp_path / "spooled.ome.tif"
    write_pyramidal_ome_tiff(b, rgb, options=PyramidOptions(compression="zlib"))
    for x, y in zip(level_arrays(a), level_arrays(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert files_in(tmp_path) == ["memory.ome.tif", "spooled.ome.tif"]  # no scratch left behind


def test_progress_reports_every_tile(tmp_path, rgb):
    calls = []
    write_pyramidal_ome_tiff(
        tmp_path / "p.ome.tif", rgb, progress=lambda done, total: calls.append((done, total))
    )
    total = 3 * 5 + 2 * 3 + 1 * 2  # tiles of the three levels
    assert calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


# ------------------------------------------------------------------------------------------------- metadata



def test_pyramid_options_take_any_real_pixel_size_and_refuse_the_rest():
    assert PyramidOptions(pixel_size_um=np.float32(0.25)).pixel_size_um == pytest.approx(0.25)
    for bad in (0, -0.5, float("nan"), float("inf"), "0.5", None):
        with pytest.raises(ValueError, match="pixel_size_um must be a positive number"):
            PyramidOptions(pixel_size_um=bad)
    mask = PyramidOptions(compression="jpeg", pixel_size_um=0.25).for_mask()
    assert mask.compression is None and not mask.thumbnail and mask.pixel_size_um == 0.25

def test_ome_xml_is_valid_and_marks_the_image_synthetic(tmp_path, rgb):
    ome_types = pytest.importorskip("ome_types")
    path = tmp_path / "tissue.ome.tif"
    write_pyramidal_ome_tiff(
        path,
        rgb,
        options=PyramidOptions(pixel_size_um=0.25),
        annotations={"seed": 7, "context": "adenocarcinoma"},
    )
    xml = ome_xml(path)
    ome = ome_types.from_xml(xml, validate=True)  # the OME 2016-06 schema
    image = ome.images[0]
    assert image.name == "tissue"
    assert image.pixels.size_x == W and image.pixels.size_y == H
    assert image.pixels.physical_size_x == pytest.approx(0.25)
    assert image.pixels.physical_size_y == pytest.approx(0.25)
    assert image.pixels.physical_size_x_unit.value == "µm"
    assert image.pixels.interleaved and image.pixels.type.value == "uint8"
    assert DISCLAIMER in image.description
    maps = {m.namespace: dict(m.value) for m in ome.structured_annotations.map_annotations}
    assert maps[SYNTHETIC_NAMESPACE]["synthetic"] == "true"
    assert maps[SYNTHETIC_NAMESPACE]["generator"] == f"napari-diffinfinite {__version__}"
    assert "not for diagnosis" in maps[SYNTHETIC_NAMESPACE]["disclaimer"]
    assert maps[SETTINGS_NAMESPACE] == {"seed": "7", "context": "adenocarcinoma"}
    assert [i.name for i in ome.images] == ["tissue", "thumbnail"]

    info = read_export_info(path)
    assert info["pixel_size_um"] == pytest.approx(0.25)
    assert info["annotations"][SYNTHETIC_NAMESPACE]["synthetic"] == "true"
    assert info["associated"] == ["thumbnail"]


def test_physical_size_in_tiff_resolution_tags_per_level(tmp_path, rgb):
    path = tmp_path / "res.ome.tif"
    write_pyramidal_ome_tiff(path, rgb, options=PyramidOptions(compression="zlib", pixel_size_um=0.5))
    with tifffile.TiffFile(path) as tif:
        for n, level in enumerate(tif.series[0].levels):
            page = level.keyframe
            assert page.resolutionunit == tifffile.RESUNIT.CENTIMETER
            px_per_cm = page.resolution[0]
            assert 1e4 / px_per_cm == pytest.approx(0.5 * 2**n)


def test_bigtiff_only_when_needed(tmp_path, rgb):
    from napari_diffinfinite.io.ome_tiff import _needs_bigtiff

    assert not _needs_bigtiff(pyramid_shapes(16384, 16384), 512, 3, 1)  # ~1 GiB of raw tiles
    assert _needs_bigtiff(pyramid_shapes(40000, 40000), 512, 3, 1)  # ~6.4 GiB
    info = write_pyramidal_ome_tiff(
        tmp_path / "big.ome.tif", rgb[:600, :600], options=PyramidOptions(bigtiff=True)
    )
    with tifffile.TiffFile(info.path) as tif:
        assert tif.is_bigtiff and tif.is_ome


def test_read_pyramid_is_lazy_and_matches(tmp_path, rgb):
    path = tmp_path / "lazy.ome.tif"
    write_pyramidal_ome_tiff(path, rgb, options=PyramidOptions(compression="zlib"))
    levels = read_pyramid(path)
    assert [lv.shape for lv in levels] == [(h, w, 3) for h, w in LEVEL_SHAPES]
    assert not isinstance(levels[0], np.ndarray)  # zarr arrays, decoded on slicing
    np.testing.assert_array_equal(np.asarray(levels[0][600:700, 1000:1200]), rgb[600:700, 1000:1200])
    with pytest.raises(FileNotFoundError):
        read_pyramid(tmp_path / "missing.ome.tif")


# ------------------------------------------------------------------------------------- atomicity and errors


def test_overwrite_is_refused_unless_asked(tmp_path, rgb):
    path = tmp_path / "x.ome.tif"
    write_pyramidal_ome_tiff(path, rgb[:300, :300])
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True") as exc:
        write_pyramidal_ome_tiff(path, rgb[:200, :200])
    assert str(path) in str(exc.value)
    assert path.read_bytes() == before
    write_pyramidal_ome_tiff(path, rgb[:200, :200], overwrite=True)
    assert level_arrays(path)[0].shape == (200, 200, 3)
    assert files_in(tmp_path) == ["x.ome.tif"]


def test_cancel_midway_leaves_nothing(tmp_path, rgb, monkeypatch):
    monkeypatch.setattr(ome_tiff_module, "SPOOL_IN_MEMORY_BYTES", 0)  # scratch files exist while it runs
    polls = []

    def cancel():
        polls.append(1)
        return len(polls) > 8  # midway through level 0 (15 tiles)

    path = tmp_path / "c.ome.tif"
    with pytest.raises(ExportCancelled, match="cancelled"):
        write_pyramidal_ome_tiff(path, rgb, cancel=cancel)
    assert len(polls) == 9
    assert not path.exists()
    assert files_in(tmp_path) == []  # no temporary, no scratch


def test_failing_source_leaves_nothing_and_says_where(tmp_path, rgb):
    def read(y0, y1, x0, x1):
        if y0 >= 512:
            raise RuntimeError("tile store unavailable")
        return rgb[y0:y1, x0:x1]

    path = tmp_path / "f.ome.tif"
    with pytest.raises(ExportError, match="tile store unavailable.*nothing was written"):
        write_pyramidal_ome_tiff(path, read, (H, W))
    assert files_in(tmp_path) == []

    def bad_shape(y0, y1, x0, x1):
        return rgb[y0:y1, x0 : x1 - 1]

    with pytest.raises(ExportError, match="expected"):
        write_pyramidal_ome_tiff(path, bad_shape, (H, W))
    assert files_in(tmp_path) == []


def test_argument_errors_before_any_file(tmp_path, rgb):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_pyramidal_ome_tiff(tmp_path / "no_such_folder" / "x.ome.tif", rgb)
    with pytest.raises(IsADirectoryError):
        write_pyramidal_ome_tiff(tmp_path, rgb)
    with pytest.raises(ValueError, match="compression"):
        write_pyramidal_ome_tiff(tmp_path / "x.ome.tif", rgb, options=PyramidOptions(compression="lzw"))
    with pytest.raises(TypeError, match="uint8"):
        write_pyramidal_ome_tiff(tmp_path / "x.ome.tif", rgb.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(height, width, 3\)"):
        write_pyramidal_ome_tiff(tmp_path / "x.ome.tif", rgb[..., 0])
    with pytest.raises(ValueError, match="shape"):
        write_pyramidal_ome_tiff(tmp_path / "x.ome.tif", lambda *a: None)
    assert files_in(tmp_path) == []


def test_no_permission(tmp_path, rgb):
    """A folder the user cannot write to: read-only by mode, or immutable for root (who ignores modes)."""
    import subprocess

    folder = tmp_path / "locked"
    folder.mkdir()
    as_root = os.geteuid() == 0
    if as_root:  # root bypasses modes but not the immutable attribute (ext4 and most local filesystems)
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    else:
        folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="no permission"):
            write_pyramidal_ome_tiff(folder / "x.ome.tif", rgb[:64, :64])
        assert list(folder.iterdir()) == []
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        else:
            folder.chmod(0o700)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_message():
    with pytest.raises(OSError) as exc:  # a real ENOSPC
        with open("/dev/full", "wb", buffering=0) as f:
            f.write(b"x")
    assert exc.value.errno == errno.ENOSPC
    err = translate_oserror(exc.value, Path("/data/region.ome.tif"))
    assert err.errno == errno.ENOSPC
    assert str(err).startswith("disk full while writing /data/region.ome.tif")
    assert "nothing was written" in str(err)


CHILD_PRELUDE = """
import os, sys, time, resource, signal
import numpy as np
from napari_diffinfinite.io import PyramidOptions, write_pyramidal_ome_tiff
"""


@pytest.mark.skipif(os.name != "posix", reason="RLIMIT_FSIZE / SIGKILL are POSIX")
def test_write_error_midway_leaves_nothing(tmp_path):
    """A real OS write failure (file-size limit: EFBIG) partway through: clear message, no files left."""
    script = CHILD_PRELUDE + textwrap.dedent(f"""
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, resource.RLIM_INFINITY))
        img = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
        try:
            write_pyramidal_ome_tiff({str(tmp_path / "e.ome.tif")!r}, img, options=PyramidOptions(compression="none"))
        except OSError as e:
            print("ERRNO", e.errno, str(e))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "ERRNO 27" in out.stdout, out.stdout + out.stderr
    assert "nothing was written" in out.stdout
    assert files_in(tmp_path) == []


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_sigkill_midway_leaves_no_target_and_next_export_cleans_up(tmp_path):
    target = tmp_path / "killed.ome.tif"
    script = CHILD_PRELUDE + textwrap.dedent(f"""
        img = np.random.default_rng(0).integers(0, 256, (2048, 2048, 3), dtype=np.uint8)
        def read(y0, y1, x0, x1):
            time.sleep(0.05)
            return img[y0:y1, x0:x1]
        def progress(done, total):
            print("tile", done, total, flush=True)
        write_pyramidal_ome_tiff({str(target)!r}, read, (2048, 2048), options=PyramidOptions(compression="zlib"),
                                 progress=progress)
        print("finished", flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        for line in child.stdout:
            if line.startswith("tile 4 "):
                break
        else:
            pytest.fail("the child export never reported progress")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert not target.exists()
    leftovers = files_in(tmp_path)
    # only a hidden partial of this target may remain (scratch files are anonymous)
    assert all(name.startswith(f".{target.name}.partial-{child.pid}-") for name in leftovers), leftovers

    # the next export of the same target removes the dead process's partial
    write_pyramidal_ome_tiff(target, np.zeros((64, 64, 3), np.uint8))
    assert files_in(tmp_path) == [target.name]


# ------------------------------------------------------------------------------------------------------ PNG


def test_png_rgb_and_labels_round_trip(tmp_path, rgb):
    from PIL import Image

    p = write_png(tmp_path / "r.png", rgb[:300, :400])
    with Image.open(p) as im:
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), rgb[:300, :400])
        assert im.text["synthetic"] == "true" and DISCLAIMER in im.text["Comment"]

    small = (np.arange(120 * 80) % 7).reshape(120, 80)
    with Image.open(write_png(tmp_path / "m8.png", small)) as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), small)

    large_ids = (np.arange(120 * 80) % 1000).reshape(120, 80).astype(np.int32)
    with Image.open(write_png(tmp_path / "m16.png", large_ids)) as im:
        assert im.mode.startswith("I")  # 16-bit grey
        np.testing.assert_array_equal(np.asarray(im).astype(np.int32), large_ids)

    with pytest.raises(FileExistsError, match="overwrite"):
        write_png(tmp_path / "r.png", rgb[:10, :10])
    write_png(tmp_path / "r.png", rgb[:10, :10], overwrite=True)
    assert files_in(tmp_path) == ["m16.png", "m8.png", "r.png"]


def test_png_refuses_large_regions(tmp_path):
    too_tall = np.zeros((PNG_MAX_SIDE + 1, 4, 3), np.uint8)
    with pytest.raises(ValueError, match=r"8192 px.*OME-TIFF"):
        write_png(tmp_path / "big.png", too_tall)
    assert files_in(tmp_path) == []


# --------------------------------------------------------------------------------------- sidecar and region


SETTINGS = {
    "model": "diffinfinite-5class",
    "seed": np.int64(1234),
    "omega": 3.0,
    "steps": 50,
    "context": "adenocarcinoma",
    "region": (1000, 2000, 2300, 4100),
}


def test_sidecar_content(tmp_path):
    path = write_sidecar(tmp_path / "s.json", SETTINGS)
    doc = json.loads(path.read_text())
    assert doc["model"] == "diffinfinite-5class" and doc["seed"] == 1234 and doc["omega"] == 3.0
    assert doc["steps"] == 50 and doc["context"] == "adenocarcinoma"
    assert doc["region"] == [1000, 2000, 2300, 4100]
    assert doc["project_version"] == __version__
    assert datetime.fromisoformat(doc["timestamp"]).tzinfo is not None
    assert doc["synthetic"] is True and doc["disclaimer"] == DISCLAIMER
    with pytest.raises(FileExistsError):
        write_sidecar(tmp_path / "s.json", SETTINGS)
    with pytest.raises(TypeError, match="JSON"):
        write_sidecar(tmp_path / "t.json", {"model": object()})
    assert files_in(tmp_path) == ["s.json"]


def test_export_region_writes_three_files(tmp_path, rgb, labels):
    def read_image(y0, y1, x0, x1):
        return rgb[y0:y1, x0:x1]

    calls = []
    written = export_region(
        tmp_path / "region",
        read_image,
        labels,
        (H, W),
        SETTINGS,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert written == export_paths(tmp_path / "region")
    assert calls[-1] == (2 * 23, 2 * 23)  # the tiles of both pyramids, counted as one job
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert files_in(tmp_path) == ["region.json", "region.ome.tif", "region_mask.ome.tif"]

    for n, got in enumerate(level_arrays(written["mask"])):
        np.testing.assert_array_equal(got, labels[:: 2**n, :: 2**n])
    with tifffile.TiffFile(written["image"]) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.JPEG
        assert [s.name for s in tif.series] == ["region", "thumbnail"]
    info = read_export_info(written["image"])
    assert info["annotations"][SETTINGS_NAMESPACE]["seed"] == "1234"
    assert info["annotations"][SYNTHETIC_NAMESPACE]["synthetic"] == "true"
    assert read_export_info(written["mask"])["annotations"][SYNTHETIC_NAMESPACE]["content"] == "labels"

    doc = json.loads(written["sidecar"].read_text())
    assert doc["seed"] == 1234 and doc["region"] == [1000, 2000, 2300, 4100]
    assert doc["export"]["image"] == "region.ome.tif" and doc["export"]["mask"] == "region_mask.ome.tif"
    assert doc["export"]["shape"] == [H, W] and doc["export"]["compression"] == "jpeg"

    # every target is checked before anything is written
    (tmp_path / "again.json").write_text("{}")
    with pytest.raises(FileExistsError, match="again.json"):
        export_region(tmp_path / "again", read_image, labels, (H, W), SETTINGS)
    assert not (tmp_path / "again.ome.tif").exists()


def test_export_region_is_all_or_nothing(tmp_path, rgb, labels):
    def failing_mask(y0, y1, x0, x1):
        if x0 >= 1024:
            raise OSError("mask store went away")
        return labels[y0:y1, x0:x1]

    with pytest.raises(OSError, match="mask store went away"):
        export_region(tmp_path / "r", rgb, failing_mask, (H, W), SETTINGS)
    assert files_in(tmp_path) == []  # the finished image was not kept either

    with pytest.raises(ExportCancelled):
        export_region(tmp_path / "r", rgb, labels, (H, W), SETTINGS, cancel=lambda: True)
    assert files_in(tmp_path) == []


def test_export_region_png(tmp_path, rgb, labels):
    from PIL import Image

    written = export_region(
        tmp_path / "small.png", rgb[:500, :700], labels[:500, :700], None, SETTINGS, fmt="png"
    )
    assert files_in(tmp_path) == ["small.json", "small.png", "small_mask.png"]
    with Image.open(written["image"]) as im:
        np.testing.assert_array_equal(np.asarray(im), rgb[:500, :700])
    with Image.open(written["mask"]) as im:
        np.testing.assert_array_equal(np.asarray(im), labels[:500, :700])
    assert json.loads(written["sidecar"].read_text())["export"]["format"] == "png"
    with pytest.raises(ValueError, match="OME-TIFF"):
        export_region(tmp_path / "huge", lambda *a: None, None, (9000, 100), SETTINGS, fmt="png")
