"""Masks from files (no GUI): a hand-written QuPath GeoJSON export (a hole, a MultiPolygon, a lower-case class
name, unclassified and point features) rasterised at a canvas's label scale, bad class names, label images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from napari_diffinfinite.classes import class_set
from napari_diffinfinite.io.mask_files import (
    parse_qupath_geojson,
    rasterize_annotations,
    read_mask_file,
    resample_labels,
)
from napari_diffinfinite.sampling.masks import MaskError

NAMES = class_set(5).names  # Unknown, Carcinoma, Necrosis, Tumor stroma, Others


def square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def feature(geometry, cls=None):
    props = {"objectType": "annotation"}
    if cls is not None:
        props["classification"] = {"name": cls, "color": [200, 0, 0]}
    return {"type": "Feature", "geometry": geometry, "properties": props}


QUPATH = {
    "type": "FeatureCollection",
    "features": [
        # carcinoma: 800 x 800 px with a 400 x 400 px hole in the middle
        feature({"type": "Polygon", "coordinates": [square(0, 0, 800, 800), square(200, 200, 600, 600)]}, "Carcinoma"),
        # necrosis (lower case): one square inside the hole, one to the right, as one MultiPolygon
        feature({"type": "MultiPolygon", "coordinates": [[square(320, 320, 480, 480)], [[[1000, 0], [1160, 0],
                                                                                             [1160, 160], [1000, 160]]]]},
                "necrosis"),
        # a small stroma square drawn inside the carcinoma (after it in the file, drawn on top since it is smaller)
        feature({"type": "Polygon", "coordinates": [square(40, 40, 120, 120)]}, "TUMOR STROMA"),
        feature({"type": "Polygon", "coordinates": [square(0, 900, 100, 1000)]}),  # unclassified
        feature({"type": "Point", "coordinates": [5, 5]}, "Others"),
    ],
}


def test_qupath_geojson_is_rasterised_at_the_label_scale_with_holes(tmp_path):
    path = tmp_path / "annotations.geojson"
    path.write_text(json.dumps(QUPATH))
    # file coordinates are image px at 0.5 um; one label cell is 8 image px (4 um)
    raster = read_mask_file(path, NAMES, cell_um=4.0, image_um=0.5)
    lab = raster.labels
    assert raster.origin == (0, 0) and lab.dtype == np.uint8
    assert lab.shape == (100, 145)  # 800 px / 8 high, 1160 px / 8 wide
    assert raster.counts == {"Carcinoma": 1, "Necrosis": 2, "Tumor stroma": 1}
    assert any("no classification" in s for s in raster.skipped) and any("Point" in s for s in raster.skipped)
    # carcinoma ring, its hole unlabelled, necrosis inside the hole and to the right, stroma inside the ring
    assert (lab[1:24, 30:99] == 1).all() and (lab[80:99, 1:99] == 1).all()
    assert (lab[26:39, 26:74] == 0).all() and (lab[61:74, 26:74] == 0).all()
    assert (lab[41:59, 41:59] == 2).all() and (lab[1:19, 126:144] == 2).all()
    assert (lab[6:14, 6:14] == 3).all()
    # the areas match the polygons' to within their outline (one cell)
    assert abs(int((lab == 2).sum()) - 2 * 20 * 20) <= 2 * 4 * 21
    assert abs(int((lab == 1).sum()) - (100 * 100 - 50 * 50 - 10 * 10)) <= 4 * 100 + 4 * 50 + 4 * 10
    assert not lab[:, 100:124].any()  # between the carcinoma and the right-hand necrosis square (cells 125..144,
    # and 124, which its outline touches)


def test_the_file_pixel_size_scales_the_annotations_and_the_origin_is_the_bounding_box():
    annotations, skipped = parse_qupath_geojson([feature({"type": "Polygon", "coordinates": [square(400, 800, 480, 880)]},
                                                         "Others")], NAMES)
    assert skipped == [] and annotations[0].label == 4
    lab, origin = rasterize_annotations(annotations, 0.25)  # a file pixel of 1 um on 4 um cells
    assert origin == (200, 100) and lab.shape == (20, 20) and (lab == 4).all()


def test_unknown_class_names_are_an_error_naming_them_and_the_known_ones(tmp_path):
    doc = {"type": "FeatureCollection", "features": [
        feature({"type": "Polygon", "coordinates": [square(0, 0, 10, 10)]}, "Carcinoma"),
        feature({"type": "Polygon", "coordinates": [square(0, 0, 10, 10)]}, "Tumour"),
        feature({"type": "Polygon", "coordinates": [square(0, 0, 10, 10)]}, "Tumour"),
        feature({"type": "Polygon", "coordinates": [square(0, 0, 10, 10)]}, "Immune cells"),
    ]}
    path = tmp_path / "bad.geojson"
    path.write_text(json.dumps(doc))
    with pytest.raises(MaskError) as err:
        read_mask_file(path, NAMES, cell_um=4.0)
    msg = str(err.value)
    assert "'Tumour' (2 features)" in msg and "'Immune cells' (1 feature)" in msg
    assert all(repr(n) in msg for n in NAMES) and "bad.geojson" in msg


@pytest.mark.parametrize(("content", "expected"), [
    ("{not json", "cannot read"),
    (json.dumps({"type": "Topology"}), "not a GeoJSON FeatureCollection"),
    (json.dumps([feature({"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}, "Carcinoma")]), "at least 3"),
    (json.dumps([feature({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}, "Carcinoma")]), "no classified"),
])
def test_bad_geojson_files_say_what_is_wrong(tmp_path, content, expected):
    path = tmp_path / "x.geojson"
    path.write_text(content)
    with pytest.raises(MaskError, match=expected):
        read_mask_file(path, NAMES, cell_um=4.0)


def test_label_images_are_validated_and_resampled_to_the_label_scale(tmp_path):
    arr = np.zeros((40, 60), np.uint8)
    arr[:20, :30] = 3
    Image.fromarray(arr).save(tmp_path / "mask.png")
    same = read_mask_file(tmp_path / "mask.png", NAMES, cell_um=4.0)  # one label per mask pixel by default
    np.testing.assert_array_equal(same.labels, arr)
    half = read_mask_file(tmp_path / "mask.png", NAMES, cell_um=4.0, file_um=2.0)  # 2 um pixels on 4 um cells
    np.testing.assert_array_equal(half.labels, arr[::2, ::2])
    np.testing.assert_array_equal(resample_labels(arr, 2.0)[::2, ::2], arr)
    arr[5, 7] = 9
    Image.fromarray(arr).save(tmp_path / "bad.png")
    with pytest.raises(MaskError, match=r"label 9 at 1 px in y 5:6, x 7:8"):
        read_mask_file(tmp_path / "bad.png", NAMES, cell_um=4.0)
    with pytest.raises(FileNotFoundError):
        read_mask_file(tmp_path / "missing.tif", NAMES, cell_um=4.0)
