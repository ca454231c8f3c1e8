"""The quality metrics of issue 4 on synthetic arrays with known answers, and the report end to end on the
tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage.color import rgb2lab

from napari_diffinfinite import evaluation as ev
from napari_diffinfinite.training.dataset import Patch

WHITE = np.array([255, 255, 255], np.uint8)


def flat(color, h=16, w=16) -> np.ndarray:
    return np.broadcast_to(np.asarray(color, np.uint8), (h, w, 3)).copy()


def checkerboard(h=16, w=16) -> np.ndarray:
    board = ((np.arange(h)[:, None] + np.arange(w)[None, :]) % 2).astype(np.uint8) * 255
    return np.repeat(board[:, :, None], 3, axis=2)


def noise(seed=0, h=32, w=32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---- reconstruction ------------------------------------------------------------------------------------


class ShiftAutoencoder:
    """Identity up to a constant added on decode: a known PSNR."""

    downsampling = 8

    def __init__(self, shift=0.0):
        self.shift = shift

    def encode(self, x):
        assert x.shape[-1] % 8 == 0 and x.shape[-2] % 8 == 0  # padded to the downsampling
        return x

    def decode(self, z):
        return (z + self.shift).clamp(0, 1)


def test_psnr_known_values():
    a = flat((100, 100, 100))
    assert ev.psnr(a, a) == math.inf
    assert ev.psnr(a, a + 1) == pytest.approx(20 * math.log10(255))
    with pytest.raises(ValueError, match="same shape"):
        ev.psnr(a, a[:2])


def test_reconstruction_psnr_rounds_to_uint8_and_crops_the_padding():
    images = [Patch("a", flat((10, 20, 30), 30, 20), np.zeros((30, 20), np.int64)),
              Patch("b", noise(1, 24, 17), np.zeros((24, 17), np.int64))]
    exact = ev.reconstruction_psnr(ShiftAutoencoder(0.0), images)
    assert exact["per_patch"] == {"a": math.inf, "b": math.inf} and exact["pass"]
    # +0.4/255 rounds back to the same uint8 values; +1/255 is one grey level off everywhere
    assert ev.reconstruction_psnr(ShiftAutoencoder(0.4 / 255), images[:1])["mean_db"] == math.inf
    off = ev.reconstruction_psnr(ShiftAutoencoder(1 / 255), images[:1])
    assert off["mean_db"] == pytest.approx(20 * math.log10(255), abs=1e-3) and off["min_db"] == off["mean_db"]


# ---- colour and texture ---------------------------------------------------------------------------------


def test_lab_stats_of_a_flat_colour_counts_only_the_label():
    image = flat((200, 40, 60))
    image[:, 8:] = (30, 60, 200)
    mask = np.zeros((16, 16), np.int64)
    mask[:, :8] = 1
    stats = ev.lab_stats([image], [mask], 1)
    expected = rgb2lab(np.array([[[200, 40, 60]]], np.uint8))[0, 0]
    assert np.allclose(stats["mean"], expected, atol=1e-6) and np.allclose(stats["std"], 0, atol=1e-4)
    assert stats["pixels"] == 128 and stats["images"] == 1
    white = ev.lab_stats([flat(WHITE)], [np.full((16, 16), 3)], 3)
    assert np.allclose(white["mean"], [100, 0, 0], atol=0.01)  # skimage D65 white: a*, b* ~ 0.005
    assert ev.lab_stats([image], [mask], 2) is None


def test_lab_stats_pools_pixels_of_all_images():
    black, white = flat((0, 0, 0)), flat(WHITE)
    ones = np.ones((16, 16), np.int64)
    stats = ev.lab_stats([black, white], [ones, ones], 1)
    assert stats["mean"][0] == pytest.approx(50, abs=1e-3) and stats["std"][0] == pytest.approx(50, abs=1e-3)


def test_delta_e_is_cie76():
    assert ev.delta_e([50, 10, -20], [50, 10, -20]) == 0
    assert ev.delta_e([50, 0, 0], [53, 4, 0]) == pytest.approx(5)


def test_laplacian_energy_flat_is_zero_checkerboard_is_known():
    ones = np.ones((16, 16), np.int64)
    assert ev.hf_energy([flat((120, 80, 160))], [ones], 1) == pytest.approx(0, abs=1e-12)
    # L* alternates 0 / 100: the 5-point Laplacian is +-400 inside, squared 160000
    assert ev.hf_energy([checkerboard()], [ones], 1, erode=2) == pytest.approx(160000, rel=1e-4)
    assert ev.laplacian_energy(checkerboard()).shape == (16, 16)
    assert ev.hf_energy([checkerboard()], [ones], 2) is None


def test_hf_energy_erodes_class_borders():
    image = flat((0, 0, 0))
    image[:, 8:] = 255
    mask = np.ones((16, 16), np.int64)
    mask[:, 8:] = 2
    assert ev.hf_energy([image], [mask], 1, erode=0) > 0  # the step at the class border counts...
    assert ev.hf_energy([image], [mask], 1, erode=2) == 0  # ...unless the region is eroded


def test_class_region_erodes_from_the_image_edge_too():
    region = ev.class_region(np.ones((10, 10)), 1, erode=2)
    assert region.sum() == 36 and region[2:8, 2:8].all()


def test_compare_classes_blurred_generated_images_fail_the_hf_ratio():
    real = [noise(0), noise(1)]
    masks = [np.ones((32, 32), np.int64), np.full((32, 32), 3, np.int64)]
    same = ev.compare_classes(real, masks, real, masks, labels=(1, 2, 3))
    assert same["1"]["delta_e"] == pytest.approx(0, abs=1e-9) and same["1"]["hf_ratio"] == pytest.approx(1)
    assert same["1"]["pass_delta_e"] and same["1"]["pass_hf"] and same["1"]["name"] == "Carcinoma"
    assert same["2"]["delta_e"] is None and same["2"]["pass_hf"] is None  # necrosis is in neither
    blurred = [ndimage.uniform_filter(im, size=(5, 5, 1)) for im in real]
    soft = ev.compare_classes(real, masks, blurred, masks, labels=(1, 3))
    assert soft["1"]["hf_ratio"] < 0.7 and soft["1"]["pass_hf"] is False and soft["3"]["pass_hf"] is False
    tinted = [np.clip(im.astype(int) + (60, 0, 0), 0, 255).astype(np.uint8) for im in real]
    assert ev.compare_classes(real, masks, tinted, masks, labels=(1,))["1"]["pass_delta_e"] is False


# ---- class dependence ------------------------------------------------------------------------------------


def test_class_separation_distance_vs_spread():
    rng = np.random.default_rng(0)
    a = np.array([50.0, 0, 0]) + rng.normal(0, 1, (4, 3))
    b = np.array([60.0, 0, 0]) + rng.normal(0, 1, (4, 3))
    sep = ev.class_separation({1: a, 3: b})
    assert sep["pairs"]["1-3"]["distance"] == pytest.approx(ev.delta_e(a.mean(0), b.mean(0)))
    assert sep["spread"]["1"] == pytest.approx(np.sqrt(((a - a.mean(0)) ** 2).sum(1).mean()))
    assert sep["pass"] and sep["min_distance"] > sep["max_spread"]
    exact = ev.class_separation({1: [[50, 0, 0], [50, 0, 0]], 2: [[50, 3, 4], [50, 3, 4]]})
    assert exact["pairs"]["1-2"]["distance"] == pytest.approx(5) and exact["spread"] == {"1": 0, "2": 0}
    overlapping = ev.class_separation({1: [[40, 0, 0], [60, 0, 0]], 2: [[45, 0, 0], [55, 0, 0]]})
    assert not overlapping["pass"]  # centroids coincide, the images spread 10 around them
    scalar = ev.class_separation({1: [1.0, 1.2], 2: [3.0, 3.2]})  # one feature per image (e.g. log10 hf)
    assert scalar["pairs"]["1-2"]["distance"] == pytest.approx(2) and scalar["spread"]["1"] == pytest.approx(0.1)


# ---- anti-copying ----------------------------------------------------------------------------------------


def test_lab_thumbnail_of_a_flat_colour():
    thumb = ev.lab_thumbnail(flat((200, 40, 60), 128, 128), 64)
    assert thumb.shape == (64, 64, 3)
    assert np.allclose(thumb, rgb2lab(np.array([[[200, 40, 60]]], np.uint8))[0, 0], atol=1e-3)
    assert ev.lab_thumbnail(flat((200, 40, 60), 100, 90), 64).shape == (64, 64, 3)  # not a multiple of 64


def test_image_crops():
    assert len(ev.image_crops(np.zeros((1024, 1536, 3)), 512)) == 6
    assert [c.shape for c in ev.image_crops(np.zeros((64, 80, 3)), 512)] == [(64, 64, 3)]


def lab_flat_thumbs(colors, s=8):
    return np.stack([np.broadcast_to(np.asarray(c, float), (s, s, 3)) for c in colors])


def test_nearest_neighbour_distances_are_delta_e_and_see_rotations():
    refs = lab_flat_thumbs([[50, 0, 0], [70, 0, 0]])
    dist, index = ev.nearest_neighbour_distances(lab_flat_thumbs([[53, 4, 0]]), refs)
    assert dist[0] == pytest.approx(5) and index[0] == 0
    rng = np.random.default_rng(0)
    train = rng.normal(50, 10, (6, 8, 8, 3))
    rotated = np.rot90(train[2:3], 1, axes=(1, 2))[:, :, ::-1]
    d_rot, i_rot = ev.nearest_neighbour_distances(rotated, train)
    assert d_rot[0] == pytest.approx(0, abs=1e-6) and i_rot[0] == 2
    assert ev.nearest_neighbour_distances(rotated, train, dihedral=False)[0][0] > 5
    self_d, self_i = ev.nearest_neighbour_distances(train, train, exclude_self=True)
    assert (self_d > 5).all() and (self_i != np.arange(6)).all()
    grouped_i = ev.nearest_neighbour_distances(train, train, exclude_self=True, groups=[0, 0, 0, 1, 1, 1])[1]
    assert (grouped_i[:3] >= 3).all() and (grouped_i[3:] < 3).all()


def test_anti_copying_fails_with_a_planted_duplicate():
    rng = np.random.default_rng(1)
    train = rng.normal(50, 10, (20, 8, 8, 3))
    fresh = rng.normal(50, 10, (10, 8, 8, 3)) + np.array([0, 40, 0])  # far from every training patch
    ok = ev.anti_copying(fresh, train)
    assert ok["pass"] and ok["generated_to_train"]["p1"] >= ok["train_to_train"]["p5"]
    assert ok["train_to_train"]["n"] == 20 and ok["generated_to_train"]["n"] == 10
    copied = np.concatenate([fresh, train[7:8]])
    bad = ev.anti_copying(copied, train, training_names=[f"t{i}" for i in range(20)])
    assert not bad["pass"] and bad["generated_to_train"]["min"] == pytest.approx(0, abs=1e-6)
    assert bad["closest_generated"][0] == {"generated": 10, "train": "t7", "distance": pytest.approx(0, abs=1e-6)}
    dup_train = np.concatenate([train, train[:1]])  # a duplicate inside the training set: distance 0 there
    assert ev.anti_copying(fresh, dup_train)["train_to_train"]["min"] == pytest.approx(0, abs=1e-6)


# ---- seams and the grid ------------------------------------------------------------------------------------


def test_real_data_reference_scores_training_patches_against_held_out_ones():
    """Real patches in place of generated ones: a class whose held-out colour differs from its training colour
    misses Delta E by exactly that difference, and a held-out patch that duplicates a training one fails
    anti-copying."""
    pink, pale = (200, 120, 160), (235, 215, 225)
    mask = np.ones((64, 64), np.int64)
    train = [Patch(f"t{i}.png", noise(i, 64, 64), mask) for i in range(3)]
    train.append(Patch("t_pink.png", np.broadcast_to(np.array(pink, np.uint8), (64, 64, 3)).copy(), mask * 2))
    held = [Patch("h_pale.png", np.broadcast_to(np.array(pale, np.uint8), (64, 64, 3)).copy(), mask * 2)]
    ref = ev.real_data_reference(held, train, labels=(2,), crop=64, thumb=16)
    expected = ev.delta_e(rgb2lab(np.array([[pale]], np.uint8))[0, 0], rgb2lab(np.array([[pink]], np.uint8))[0, 0])
    assert ref["per_class"]["2"]["delta_e"] == pytest.approx(expected, abs=0.05) and expected > 8
    assert ref["anti_copying"]["held_out_to_train"]["n"] == 1 and ref["anti_copying"]["train_to_train"]["n"] == 4
    assert ref["anti_copying"]["pass"] is True  # a flat pale patch is far from every training patch
    copied = ev.real_data_reference([Patch("h_copy.png", train[0].image, mask)], train, labels=(1,), crop=64,
                                    thumb=16)
    assert copied["anti_copying"]["held_out_to_train"]["min"] == pytest.approx(0, abs=1e-6)
    assert copied["anti_copying"]["pass"] is False


def test_seam_report():
    assert ev.seam_report([flat((90, 90, 90), 64, 64)], tile=32)["pass"]
    striped = noise(2, 64, 64) // 8
    striped[:, 32:] += 100  # a step on the tile boundary
    report = ev.seam_report([flat((90, 90, 90), 64, 64), striped], tile=32)
    assert report["per_image"][0] == 1.0 and report["max"] > 1.1 and not report["pass"]


def test_best_crop_finds_the_label():
    mask = np.zeros((100, 120), np.int64)
    mask[60:90, 70:110] = 2
    y, x = ev.best_crop(mask, 2, 30)
    assert (mask[y : y + 30, x : x + 30] == 2).all()
    assert ev.best_crop(mask, 2, 500) == (0, 0)


def test_sample_grid_has_its_cells_and_the_note():
    grid = ev.sample_grid([("1 Carcinoma", [flat((255, 0, 0), 20, 20), None]), ("2 Necrosis", [])],
                          ["real", "generated"], cell=40)
    arr = np.asarray(grid)
    assert grid.size[0] > 2 * 40 and grid.size[1] > 2 * 40
    assert ((arr[..., 0] == 255) & (arr[..., 1] == 0)).sum() >= 40 * 40  # the red cell
    note_band = arr[-30:]
    assert (note_band[..., 0] > note_band[..., 1] + 60).any()  # the note, drawn in dark red


def test_write_report_turns_inf_into_null(tmp_path):
    ev.write_report({"a": math.inf, "b": np.float32(1.5), "c": [np.int64(2), np.bool_(True)]}, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": None, "b": 1.5, "c": [2, True]}


# ---- end to end on the tiny model ----------------------------------------------------------------------------


def write_patches(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, labels in enumerate([(1, 3), (2, 4), (1, 2), (3, 4)]):
        image = noise(10 + i, 64, 64)
        mask = np.zeros((64, 64), np.uint16)
        mask[:, :30] = labels[0]
        mask[:, 34:] = labels[1]
        Image.fromarray(image).save(folder / f"p{i}.png")
        Image.fromarray(mask).save(folder / f"p{i}_mask.png")
        names.append(f"p{i}.png")
    return names


def test_evaluate_end_to_end_on_the_tiny_model(tiny_model_dir, tmp_path):
    from napari_diffinfinite.generation import load_model
    from napari_diffinfinite.training.dataset import scan_folder

    names = write_patches(tmp_path / "data")
    model = load_model(tiny_model_dir, device="cpu")
    patches = scan_folder(tmp_path / "data", 5)
    result = ev.evaluate(model, patches, names[:2], seeds=(0, 1), steps=2, size=64, class_size=32,
                         seam_tile=32, log=None)
    r = result.report
    assert set(r["summary"]) == {"reconstruction_psnr_db", "delta_e_max_over_classes", "hf_ratio_min_over_classes",
                                 "class_dependence", "anti_copying", "seam_ratio_max"}
    assert set(r["reconstruction"]["per_patch"]) == {"p0.png", "p1.png"}
    assert set(r["per_class"]) == {"1", "2", "3", "4"}
    assert all(v["delta_e"] is not None for v in r["per_class"].values())
    assert set(r["class_dependence"]["pairs"]) == {"1-2", "1-3", "2-3"}
    assert set(r["class_dependence"]["texture"]["pairs"]) == {"1-2", "1-3", "2-3"}  # log10 hf, for information
    assert set(r["class_dependence"]["real_data_reference"]["centroids"]) == {"1", "2", "3"}
    # 2 held-out masks x 2 seeds + 2 large images, one 64-px crop each; 2 training patches
    assert r["anti_copying"]["generated_to_train"]["n"] == 6 and r["anti_copying"]["train_to_train"]["n"] == 2
    assert len(r["seams"]["per_image"]) == 2
    assert result.grid.size[1] > 4 * 100  # four class rows
    ref = r["real_data_reference"]
    assert set(ref["per_class"]) == {"1", "2", "3", "4"}
    assert ref["anti_copying"]["held_out_to_train"]["n"] == 2  # the two held-out patches, one crop each
    worst_real = max(v["delta_e"] for v in ref["per_class"].values())
    assert r["summary"]["delta_e_max_over_classes"]["real_data"] == pytest.approx(worst_real)
    text = ev.format_report(r)
    assert "Carcinoma" in text and "anti-copying" in text and "held-out -> train" in text
    ev.write_report(r, tmp_path / "report.json")
    assert json.loads((tmp_path / "report.json").read_text())["model"] == "tiny-test-model"


def test_quality_script_writes_report_and_grid(tiny_model_dir, tmp_path, capsys, benchmark_script):
    names = write_patches(tmp_path / "data")
    (tmp_path / "holdout.json").write_text(json.dumps({"held_out": names[:1]}))
    quality = benchmark_script("quality")
    out, grid = tmp_path / "r.json", tmp_path / "g.png"
    rc = quality.main(["--model", str(tiny_model_dir), "--data", str(tmp_path / "data"), "--holdout-file",
                       str(tmp_path / "holdout.json"), "--seeds", "3", "--steps", "2", "--size", "64",
                       "--class-size", "32", "--out", str(out), "--grid", str(grid)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["settings"]["seeds"] == [3] and report["settings"]["steps"] == 2
    assert report["seams"] is None  # 64 px fit in one 512-px tile: no boundary to measure
    assert Image.open(grid).mode == "RGB"
    printed = capsys.readouterr().out
    assert "criterion" in printed and "wrote" in printed
    assert quality.main(["--model", str(tiny_model_dir), "--data", str(tmp_path / "data"),
                         "--holdout-file", str(tmp_path / "missing.json")]) == 2


# ---- nuclear structure (issue 15) -------------------------------------------------------------------------

PINK, PURPLE = (240, 180, 210), (90, 40, 140)  # rgb2hed haematoxylin 0 and 0.107: below / above the threshold
FIXTURE = Path(__file__).parent / "fixtures" / "sample_patches" / "sample_label0_0000_crop128.png"


def draw_ellipse(image, cy, cx, ry, rx, color=PURPLE, hole=0.0):
    """Fill the pixels with ((y-cy)/ry)^2 + ((x-cx)/rx)^2 <= 1 (and, with ``hole`` > 0, outside the ellipse of
    ``hole`` times the radii: a ring); returns how many were filled."""
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    d = (yy - cy) ** 2 * rx**2 + (xx - cx) ** 2 * ry**2  # integers: no rounding on the rim
    region = d <= (rx * ry) ** 2
    if hole > 0:
        region &= d > hole**2 * (rx * ry) ** 2
    image[region] = color
    return int(region.sum())


def test_nucleus_blobs_counts_nucleus_sized_round_discs_only():
    image = flat(PINK, 256, 256)
    discs = [(30, 30), (30, 200), (100, 100), (200, 200)]  # sorted
    disc_px = [draw_ellipse(image, y, x, 7, 7) for y, x in discs]
    assert disc_px == [149] * 4  # 40 <= area <= 900
    positive, centroids = ev.nucleus_blobs(image)
    assert positive.sum() == sum(disc_px)  # a digital disc of radius 7 is open for a disk of radius 2
    figures = ev.nuclear_structure([image])
    assert figures["blobs"] == 4 and figures["blobs_per_mpx"] == pytest.approx(4 / 256**2 * 1e6)
    assert figures["positive_fraction"] == pytest.approx(4 * 149 / 256**2)
    assert "per_class" not in figures
    # 128-px cells: the four discs sit in three of the four cells (two in the top-left one)
    assert figures["cells"] == 4 and figures["occupied_cells"] == 3 and figures["cell_occupancy"] == 0.75
    # shapes that are not nucleus-like: positive, but no blob
    draw_ellipse(image, 90, 180, 4, 20)  # elongated: eccentricity 0.98 > 0.95
    draw_ellipse(image, 230, 40, 3, 3)  # a dot of 29 px (25 after the opening) < 40
    draw_ellipse(image, 160, 150, 12, 12, hole=0.6)  # a ring: solidity < 0.85
    draw_ellipse(image, 200, 100, 20, 20)  # 1257 px > 900
    positive, centroids = ev.nucleus_blobs(image)
    assert sorted(map(tuple, np.round(centroids).astype(int).tolist())) == discs
    assert positive.sum() > sum(disc_px) + 1257 + 280 + 200


def test_the_opening_removes_speckle_and_thin_lines():
    image = flat(PINK, 64, 64)
    image[10, :] = PURPLE  # a 1-px fibre
    image[20:23, 5:60] = PURPLE  # a 3-px one: narrower than the disk of radius 2 (5 px)
    image[40, 40] = PURPLE
    positive, centroids = ev.nucleus_blobs(image)
    assert not positive.any() and centroids.shape == (0, 2)
    assert ev.nuclear_structure([image])["positive_fraction"] == 0


def test_nuclear_structure_per_class_pools_pixels_and_assigns_blobs_by_centroid():
    a, b = flat(PINK, 128, 128), flat(PINK, 128, 128)
    draw_ellipse(a, 30, 30, 6, 6)
    draw_ellipse(a, 30, 100, 6, 6)
    draw_ellipse(a, 100, 64, 8, 8)  # on the class border below: its centroid's pixel (label 3) decides
    ma = np.ones((128, 128), np.int64)
    ma[:, 64:] = 3
    mb = np.full((128, 128), 4, np.int64)
    mb[:, :32] = 0  # label 0 pixels count in the whole image only
    disc6 = draw_ellipse(b, 60, 90, 6, 6)
    fig = ev.nuclear_structure([a, b], [ma, mb])
    per = fig["per_class"]
    assert set(per) == {"1", "2", "3", "4"}
    assert per["1"]["name"] == "Carcinoma" and per["3"]["name"] == "Tumor stroma"
    assert (per["1"]["blobs"], per["3"]["blobs"], per["4"]["blobs"], per["2"]["blobs"]) == (1, 2, 1, 0)
    assert per["1"]["pixels"] == 128 * 64 and per["4"]["pixels"] == 128 * 96
    assert per["1"]["blobs_per_mpx"] == pytest.approx(1 / (128 * 64) * 1e6)
    assert per["4"]["positive_fraction"] == pytest.approx(disc6 / (128 * 96))
    assert per["2"]["pixels"] == 0  # no necrosis: no figure
    assert per["2"]["positive_fraction"] is None and per["2"]["blobs_per_mpx"] is None
    assert fig["blobs"] == 4 and fig["pixels"] == 2 * 128 * 128 and fig["cell_occupancy"] == 1.0


def test_nuclear_structure_of_the_real_fixture_is_plausible():
    """128 px of a real (sparse, omega 0) sample patch: pale tissue with a few elongated stromal nuclei."""
    image = np.array(Image.open(FIXTURE).convert("RGB"))
    fig = ev.nuclear_structure([image], [np.ones(image.shape[:2], np.int64)])
    assert 0.0005 < fig["positive_fraction"] < 0.02  # the training set's pooled figure is 0.0275
    assert fig["per_class"]["1"]["positive_fraction"] == fig["positive_fraction"]
    assert fig["blobs"] == 0 and fig["cells"] == 1  # its nuclei are elongated: none counts as a round blob
    # a nucleus-sized purple disc painted on it is found, and only it
    draw_ellipse(image, 96, 40, 7, 7)
    _, centroids = ev.nucleus_blobs(image)
    assert np.round(centroids).astype(int).tolist() == [[96, 40]]


def test_compare_nuclear_ratios_and_targets():
    sparse, dense = flat(PINK, 128, 128), flat(PINK, 128, 128)
    for y, x in [(20, 20), (20, 100), (100, 20), (100, 100)]:
        draw_ellipse(dense, y, x, 6, 6)
    draw_ellipse(sparse, 20, 20, 6, 6)
    masks = [np.ones((128, 128), np.int64)]
    real = ev.nuclear_structure([dense], masks)
    same = ev.compare_nuclear(real, ev.nuclear_structure([dense], masks))
    assert same["ratio"]["blobs_per_mpx"] == 1 and same["pass"]["all"] is True
    assert set(same["pass"]) == {"whole_positive_fraction", "whole_blobs_per_mpx", "cell_occupancy",
                                 "carcinoma_positive_fraction", "carcinoma_blobs_per_mpx", "all"}
    quarter = ev.compare_nuclear(real, ev.nuclear_structure([sparse], masks))
    assert quarter["ratio"]["blobs_per_mpx"] == pytest.approx(0.25)
    assert quarter["ratio"]["per_class"]["1"]["positive_fraction"] == pytest.approx(0.25)
    assert quarter["pass"]["whole_blobs_per_mpx"] is False and quarter["pass"]["all"] is False
    assert quarter["ratio"]["per_class"]["2"]["blobs_per_mpx"] is None  # no necrosis, real or generated
    text = ev.format_nuclear({"settings": {"steps": 2, "sampler": "ddim", "omega": 0.0, "seed0": 0},
                              "definition": ev.nuclear_definition(), "train": quarter, "held_out": None},
                             autoencoder=same)
    assert "Carcinoma" in text and "Necrosis" in text and "autoencoder" in text and "NO" in text


def test_nuclear_report_and_reconstructions_on_the_tiny_model(tiny_model_dir):
    from napari_diffinfinite.generation import generate, load_model

    model = load_model(tiny_model_dir, device="cpu")
    mask = np.zeros((64, 64), np.int64)
    mask[:, :30], mask[:, 34:] = 1, 3
    patches = [Patch(f"p{i}.png", noise(i, 64, 64), mask) for i in range(3)]
    report = ev.nuclear_report(model, patches, patches[2:], seed0=5, steps=2, limit=2)
    assert report["train"]["real"]["images"] == 2 and report["held_out"]["real"]["images"] == 1
    assert report["settings"]["limit"] == 2 and report["settings"]["steps"] == 2
    used = ev.evenly_spaced(patches, 2)  # the first and the last
    assert [p.name for p in used] == ["p0.png", "p2.png"]
    assert report["train"]["real"] == ev.nuclear_structure([p.image for p in used], [p.mask for p in used])
    # the generate path of evaluate(): one image per mask, seed seed0 + index
    images = ev.generate_from_masks(model, used, seed0=5, steps=2)
    assert np.array_equal(images[1], generate(model, mask=mask, seed=6, steps=2).image)
    again = ev.nuclear_report(model, patches, [], steps=2, limit=2, seed0=5, generated={"train": images})
    assert again["train"] == report["train"] and again["held_out"] is None
    rec = ev.reconstruction_nuclear(model.autoencoder, used)
    assert rec["real"] == report["train"]["real"] and rec["generated"]["images"] == 2


def test_evenly_spaced():
    assert ev.evenly_spaced(range(10), 3) == [0, 4, 9] and ev.evenly_spaced("abc", None) == ["a", "b", "c"]
    assert ev.evenly_spaced(range(4), 9) == [0, 1, 2, 3] and ev.evenly_spaced(range(4), 1) == [0]
    assert ev.evenly_spaced(range(100), 20) == sorted(set(ev.evenly_spaced(range(100), 20)))  # no repeats


# ---- realism: classifier two-sample test -------------------------------------------------------------------


def textures(seed, n=12, size=48):
    """Random blob textures: smoothed noise, contrast stretched (sharp-ish edges), one per image."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        field = ndimage.gaussian_filter(rng.normal(size=(size, size, 3)), (1.0, 1.0, 0))
        out.append(np.clip(128 + 400 * field, 0, 255).astype(np.uint8))
    return out


TINY_C2ST = {"crop": 24, "crops_per_image": 8, "steps": 60, "batch": 16}


def test_classifier_two_sample_chance_for_one_distribution_and_high_for_blur():
    a, b = textures(0), textures(1)
    same = ev.classifier_two_sample(a, b, seeds=(0, 1), **TINY_C2ST)
    assert same < 0.7
    blurred = [ndimage.gaussian_filter(im, (1.0, 1.0, 0)) for im in textures(1)]
    assert ev.classifier_two_sample(a, blurred, seeds=(0, 1), **TINY_C2ST) > 0.9


def test_classifier_accuracy_is_deterministic_and_leaves_torch_alone():
    import torch

    a, b = textures(2, n=6), [ndimage.gaussian_filter(im, (1.0, 1.0, 0)) for im in textures(3, n=6)]
    settings = {**TINY_C2ST, "steps": 20}
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = ev.classifier_accuracy(a, b, 0, **settings)
    assert torch.rand(1) == before  # torch's global random state is untouched
    assert ev.classifier_accuracy(a, b, 0, **settings) == first
    with pytest.raises(ValueError, match="smaller than"):
        ev.classifier_accuracy(a, b, 0, **{**settings, "crop": 64})
    with pytest.raises(ValueError, match=">= 2 images"):
        ev.classifier_accuracy(a[:1], b, 0, **settings)


def test_realism_report_runs_the_three_tests():
    train = textures(4, n=8)
    blurred = [ndimage.gaussian_filter(im, (1.0, 1.0, 0)) for im in train]
    report = ev.realism_report(train, blurred, None, seeds=(0,), **{**TINY_C2ST, "steps": 20})
    assert report["reconstructions_vs_train"] is None
    assert report["generated_vs_train"]["images"] == [8, 8]
    assert report["train_half_vs_half"]["images"] == [4, 4]
    assert len(report["generated_vs_train"]["per_seed"]) == 1 and report["settings"]["crop"] == 24
    text = ev.format_realism(report)
    assert "generated" in text and "half vs half" in text and "reconstructions" not in text


def test_quality_script_nuclear_only(tiny_model_dir, tmp_path, capsys, benchmark_script):
    names = write_patches(tmp_path / "data")
    (tmp_path / "holdout.json").write_text(json.dumps({"held_out": names[:1]}))
    quality = benchmark_script("quality")
    out = tmp_path / "r.json"
    rc = quality.main(["--model", str(tiny_model_dir), "--data", str(tmp_path / "data"), "--holdout-file",
                       str(tmp_path / "holdout.json"), "--steps", "2", "--nuclear", "--skip-standard",
                       "--limit", "2", "--out", str(out), "--grid", str(tmp_path / "g.png")])
    assert rc == 0 and not (tmp_path / "g.png").exists()
    report = json.loads(out.read_text())
    assert "summary" not in report and report["nuclear"]["settings"]["limit"] == 2
    nuclear = report["nuclear"]
    assert nuclear["train"]["real"]["images"] == 2 and nuclear["held_out"]["real"]["images"] == 1
    assert report["nuclear"]["autoencoder"]["generated"]["images"] == 2
    printed = capsys.readouterr().out
    assert "nuclear structure" in printed and "held-out masks" in printed and "criterion" not in printed
    with pytest.raises(SystemExit):
        quality.main(["--skip-standard"])


def test_report_json_writes_infinite_psnr_as_null_and_numpy_as_numbers(tmp_path):
    """One JSON conversion (napari_diffinfinite._json) for reports, sidecars and the canvas store: reports
    keep an exact reconstruction's infinite PSNR as null; settings refuse it."""
    import json

    import pytest

    from napari_diffinfinite._json import plain_json

    report = {"psnr": math.inf, "blobs": np.float32(1.5), "n": np.int64(3), "shape": (2, 3), "path": tmp_path}
    ev.write_report(report, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == {"psnr": None, "blobs": 1.5, "n": 3, "shape": [2, 3],
                                                             "path": str(tmp_path)}
    with pytest.raises(ValueError, match="non-finite"):
        plain_json({"omega": math.nan})
    with pytest.raises(TypeError, match="cannot be saved as JSON"):
        plain_json({"model": object()})
