"""The 5- and 10-class label sets and their palette."""

import pytest

from napari_diffinfinite.classes import CLASS_SETS, FIVE_CLASSES, TEN_CLASSES, TRANSPARENT, class_set


def test_label_sets_match_the_reference():
    assert FIVE_CLASSES.names == ["Unknown", "Carcinoma", "Necrosis", "Tumor stroma", "Others"]
    assert TEN_CLASSES.names == [
        "Unknown",
        "Alveole",
        "Artery",
        "Artifact",
        "Carcinoma",
        "Cartilage",
        "Connective tissue",
        "Necrosis",
        "Tumor stroma",
        "Others",
    ]
    assert [c.id for c in TEN_CLASSES] == list(range(10))
    assert class_set(5) is FIVE_CLASSES and class_set(10) is TEN_CLASSES
    assert sorted(CLASS_SETS) == [5, 10]


def test_palette_unknown_is_transparent_and_the_rest_are_distinct_opaque_colours():
    for cs in (FIVE_CLASSES, TEN_CLASSES):
        assert cs[0].color == TRANSPARENT
        colours = [c.color for c in cs.classes[1:]]
        assert all(c[3] == 1.0 and all(0.0 <= v <= 1.0 for v in c) for c in colours)
        assert len(set(colours)) == len(colours)


def test_classes_in_both_sets_share_their_colour():
    ten = {c.name: c.color for c in TEN_CLASSES}
    for c in FIVE_CLASSES:
        assert ten[c.name] == c.color


def test_color_dict_and_features_for_napari():
    colors = FIVE_CLASSES.color_dict()
    assert set(colors) == {0, 1, 2, 3, 4, None}
    assert colors[1] == FIVE_CLASSES[1].color
    assert FIVE_CLASSES.features() == {"index": [0, 1, 2, 3, 4], "class": FIVE_CLASSES.names}
    assert FIVE_CLASSES[1].hex == "#d62728"


def test_unknown_class_count_is_an_error():
    with pytest.raises(ValueError, match="7 classes"):
        class_set(7)
