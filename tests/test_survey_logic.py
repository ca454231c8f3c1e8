"""The blinded real-vs-synthetic survey without a GUI: trials, blinding, the CSV, resume, figures, histogram."""

from __future__ import annotations

import csv
import io
import re

import numpy as np
import pytest
from PIL import Image

from napari_diffinfinite.survey import (
    COLUMNS,
    GeneratorSettings,
    Session,
    SurveyConfig,
    build_trials,
    confidence_histogram,
    confidence_histogram_png,
    list_images,
    load_patch,
    make_patches,
    read_rows,
    summary,
)
from napari_diffinfinite.survey.results import CORRECT_COLOR, INCORRECT_COLOR, append_row
from napari_diffinfinite.survey.trials import class_of, dominant_label

NAMES5 = ["Unknown", "Carcinoma", "Necrosis", "Tumor stroma", "Others"]


def he_like(seed: int, size=(64, 64)) -> np.ndarray:
    """A small H&E-looking RGB patch: pink stroma with purple nuclei."""
    rng = np.random.default_rng(seed)
    h, w = size
    img = np.empty((h, w, 3), np.float32)
    img[:] = (236, 170, 200)
    img += rng.normal(0, 10, (h, w, 3))
    yy, xx = np.mgrid[:h, :w]
    for _ in range(12):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, 5)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (95, 60, 150)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_patch(path, seed, size=(64, 64), mask_label=None):
    Image.fromarray(he_like(seed, size)).save(path, format="PNG")  # PNG content whatever the suffix
    if mask_label is not None:
        mask = np.zeros(size, np.uint16)
        mask[: size[0] // 2] = mask_label
        mask[size[0] - 4 :] = 1  # a little of another class
        stem = path.name.split(".")[0]
        Image.fromarray(mask).save(path.with_name(stem + "_mask.png"))
    return path


@pytest.fixture
def folders(tmp_path):
    real = tmp_path / "real"
    synthetic = tmp_path / "synthetic"
    real.mkdir()
    synthetic.mkdir()
    for i in range(5):
        write_patch(real / f"real_{i}.jpg", i, mask_label=3 if i % 2 else None)
    for i in range(5):
        write_patch(synthetic / f"synthetic_{i}.png", 100 + i, mask_label=4)
    (synthetic / "synthetic_0.json").write_text("{}")
    return real, synthetic


def config(tmp_path, folders, **kw):
    real, synthetic = folders
    kw.setdefault("rater_id", "rater-1")
    kw.setdefault("results_csv", tmp_path / "results.csv")
    return SurveyConfig(real_folder=real, synthetic_folder=synthetic, **kw)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


# ------------------------------------------------------------------------------------------------ trials


def test_survey_lists_images_not_masks_sidecars_or_hidden_files(folders):
    real, synthetic = folders
    (synthetic / ".partial.png").write_bytes(b"")
    assert [p.name for p in list_images(synthetic)] == [f"synthetic_{i}.png" for i in range(5)]
    assert [p.name for p in list_images(real)] == [f"real_{i}.jpg" for i in range(5)]
    # PNG content under a .jpg name opens by content
    assert load_patch(real / "real_0.jpg").shape == (64, 64, 3)


def test_survey_class_is_the_dominant_non_zero_label(tmp_path, folders):
    real, _ = folders
    assert dominant_label(np.array([[0, 0, 0, 0], [3, 3, 1, 0]])) == 3
    assert dominant_label(np.zeros((4, 4), int)) is None
    assert dominant_label(np.array([[2, 1]])) == 1  # ties: the smaller id
    assert class_of(real / "real_1.jpg", NAMES5) == "Tumor stroma"
    assert class_of(real / "real_0.jpg", NAMES5) is None  # no mask
    real_patches, _ = make_patches(list_images(real), [], NAMES5)
    assert [p.class_name for p in real_patches] == [None, "Tumor stroma", None, "Tumor stroma", None]
    assert all(p.size == (64, 64) for p in real_patches)


def test_survey_patch_ids_reveal_nothing(folders, tmp_path):
    real, synthetic = folders
    r, s = make_patches(list_images(real), list_images(synthetic), NAMES5)
    ids = [p.patch_id for p in r + s]
    assert len(set(ids)) == len(ids)
    for p in r + s:
        assert re.fullmatch(r"p[0-9a-f]{10}", p.patch_id)
        assert p.path.stem not in p.patch_id
    # the id depends on the bytes only: a renamed copy keeps it, so the name cannot leak into it
    renamed = tmp_path / "elsewhere"
    renamed.mkdir()
    (renamed / "x.png").write_bytes((synthetic / "synthetic_2.png").read_bytes())
    (copy,) = make_patches([renamed / "x.png"], [], NAMES5)[0]
    assert copy.patch_id == s[2].patch_id
    # identical files still get distinct ids
    (renamed / "y.png").write_bytes((synthetic / "synthetic_2.png").read_bytes())
    a, b = make_patches([renamed / "x.png", renamed / "y.png"], [], NAMES5)[0]
    assert a.patch_id != b.patch_id


def test_survey_order_is_reproducible_from_the_seed_and_differs_across_seeds(folders):
    real, synthetic = folders
    r, s = make_patches(list_images(real), list_images(synthetic), NAMES5)

    def order(seed, rr=r, ss=s):
        return [t.patch.patch_id for t in build_trials(rr, ss, seed=seed)]

    assert order(1) == order(1)
    assert order(1) == order(1, rr=r[::-1], ss=s[::-1])  # not the listing order
    orders = {tuple(order(seed)) for seed in range(6)}
    assert len(orders) == 6
    trials = build_trials(r, s, seed=3)
    assert [t.number for t in trials] == list(range(1, 11))
    assert sorted(t.patch.patch_id for t in trials) == sorted(p.patch_id for p in r + s)
    # shuffled: the kinds are not in two blocks
    kinds = [t.patch.truth for t in trials]
    assert kinds != sorted(kinds) and kinds != sorted(kinds, reverse=True)


def test_survey_balanced_trials(folders):
    real, synthetic = folders
    r, s = make_patches(list_images(real), list_images(synthetic), NAMES5)
    for seed in range(4):
        kinds = [t.patch.truth for t in build_trials(r, s, seed=seed, n_trials=6)]
        assert kinds.count("real") == kinds.count("synthetic") == 3
        odd = [t.patch.truth for t in build_trials(r, s, seed=seed, n_trials=5)]
        assert sorted((odd.count("real"), odd.count("synthetic"))) == [2, 3]
    with pytest.raises(ValueError, match="balanced"):
        build_trials(r, s, seed=0, n_trials=12)


def test_survey_config_checks_its_inputs(tmp_path, folders):
    real, synthetic = folders
    with pytest.raises(ValueError, match="exactly one"):
        SurveyConfig(real, rater_id="a", results_csv=tmp_path / "r.csv")
    with pytest.raises(ValueError, match="exactly one"):
        SurveyConfig(real, rater_id="a", results_csv=tmp_path / "r.csv", synthetic_folder=synthetic,
                     generator=GeneratorSettings())
    with pytest.raises(ValueError, match="rater id"):
        SurveyConfig(real, rater_id="  ", results_csv=tmp_path / "r.csv", synthetic_folder=synthetic)


def test_survey_default_order_is_per_rater(tmp_path, folders):
    a1 = Session.open(config(tmp_path, folders, rater_id="anna"))
    a2 = Session.open(config(tmp_path, folders, rater_id="anna"))
    b = Session.open(config(tmp_path, folders, rater_id="ben"))
    ids = [[t.patch.patch_id for t in s.trials] for s in (a1, a2, b)]
    assert ids[0] == ids[1] != ids[2]


# ------------------------------------------------------------------------------------------ CSV and resume


def test_survey_writes_one_csv_row_per_answer_and_resumes_after_a_crash(tmp_path, folders):
    clock = FakeClock()
    cfg = config(tmp_path, folders, seed=5, n_trials=4)
    session = Session.open(cfg, clock=clock)
    assert (session.total, session.answered, session.current.number) == (4, 0, 1)
    image = session.current_image()
    assert image.dtype == np.uint8 and image.shape == (64, 64, 3)

    first = session.current
    clock.now += 7.25  # shown at 100.0 (when it became current), answered at 107.25
    row = session.answer(is_synthetic=True, confidence=4, comment="crisp, odd\nnuclei")
    lines = cfg.results_csv.read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS) and len(lines) == 2  # written at once, header once
    (saved,) = read_rows(cfg.results_csv)
    assert saved["rater_id"] == "rater-1" and saved["trial"] == "1"
    assert saved["patch_id"] == first.patch.patch_id
    assert saved["truth"] == first.patch.truth and saved["answer"] == "synthetic"
    assert saved["correct"] == str(int(first.patch.truth == "synthetic"))
    assert saved["confidence"] == "4" and float(saved["seconds"]) == 7.25
    assert saved["comment"] == "crisp, odd nuclei"  # one record per line
    assert saved["class"] == (first.patch.class_name or "")
    assert saved["timestamp"].endswith("+00:00")
    assert row["patch_id"] == saved["patch_id"]

    clock.now += 50.0
    session.mark_shown()  # the viewer shows the patch now: the clock restarts
    clock.now += 3.0
    second = session.current
    session.answer(is_synthetic=False, confidence=2)
    assert float(read_rows(cfg.results_csv)[-1]["seconds"]) == 3.0

    # a crash in the middle of the next write leaves half a line
    with open(cfg.results_csv, "ab") as fh:
        fh.write(b"rater-1,3,p00000")
    assert len(read_rows(cfg.results_csv)) == 2

    resumed = Session.open(cfg, clock=clock)
    assert resumed.answered == 2 and resumed.current.number == 3
    assert [t.patch.patch_id for t in resumed.trials[:2]] == [first.patch.patch_id, second.patch.patch_id]
    while not resumed.done:
        resumed.answer(is_synthetic=False, confidence=3)
    with pytest.raises(RuntimeError):
        resumed.answer(is_synthetic=False, confidence=3)
    rows = read_rows(cfg.results_csv)
    assert [r["trial"] for r in rows] == ["1", "2", "3", "4"]  # the half line is gone, nothing twice
    assert len({r["patch_id"] for r in rows}) == 4
    text = cfg.results_csv.read_text()
    assert text.count("rater_id,") == 1 and "p00000" not in text
    assert Session.open(cfg).done  # all answered: straight to the summary

    # another rater, same CSV: starts at the beginning, rows of both kept apart
    other = Session.open(config(tmp_path, folders, seed=5, n_trials=4, rater_id="rater-2"))
    assert other.answered == 0 and other.current.number == 1
    other.answer(True, 5)
    assert len(read_rows(cfg.results_csv, "rater-2")) == 1 and len(read_rows(cfg.results_csv, "rater-1")) == 4


def test_survey_answer_checks_confidence_and_never_overwrites(tmp_path, folders):
    cfg = config(tmp_path, folders, seed=1, n_trials=2)
    session = Session.open(cfg)
    with pytest.raises(ValueError, match="1..5"):
        session.answer(True, 6)
    assert not cfg.results_csv.exists()
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a survey results file"):  # refused before the first patch
        Session.open(config(tmp_path, folders, seed=1, n_trials=2, results_csv=tmp_path / "other.csv"))
    with pytest.raises(ValueError, match="not a survey results file"):
        append_row(tmp_path / "other.csv", _rows(HAND_ROWS[:1])[0])
    assert (tmp_path / "other.csv").read_text() == "a,b\n1,2\n"


# -------------------------------------------------------------------------------------- summary and plot

HAND_ROWS = [
    # truth, answer, confidence, seconds, class
    ("synthetic", "synthetic", 5, 2.0, "A"),  # TP
    ("synthetic", "synthetic", 4, 4.0, "A"),  # TP
    ("synthetic", "real", 2, 6.0, "B"),  # FN
    ("real", "real", 3, 8.0, "B"),  # TN
    ("real", "synthetic", 1, 10.0, ""),  # FP
    ("real", "synthetic", 2, 6.0, "A"),  # FP
]


def _rows(spec):
    return [
        {"rater_id": "r", "trial": i + 1, "patch_id": f"p{i}", "truth": t, "answer": a, "correct": int(t == a),
         "confidence": c, "seconds": s, "comment": "", "class": k, "timestamp": "2025-01-01T00:00:00+00:00"}
        for i, (t, a, c, s, k) in enumerate(spec)
    ]


def test_survey_summary_on_a_hand_computed_example(tmp_path):
    path = tmp_path / "hand.csv"
    for row in _rows(HAND_ROWS):
        append_row(path, row)
    for rows in (_rows(HAND_ROWS), read_rows(path)):  # typed rows and the CSV's strings agree
        s = summary(rows)
        assert (s.n, s.correct) == (6, 3)
        assert s.accuracy == pytest.approx(0.5)
        assert s.sensitivity == pytest.approx(2 / 3)  # 2 of 3 synthetic called synthetic
        assert s.specificity == pytest.approx(1 / 3)  # 1 of 3 real called real
        assert (s.true_positives, s.false_negatives, s.true_negatives, s.false_positives) == (2, 1, 1, 2)
        assert list(s.per_class) == ["A", "B", "(no class)"]
        assert (s.per_class["A"].n, s.per_class["A"].correct) == (3, 2)
        assert s.per_class["B"].accuracy == pytest.approx(0.5)
        assert s.per_class["(no class)"].accuracy == 0.0
        assert s.confidence == {"correct": [0, 0, 1, 1, 1], "incorrect": [1, 2, 0, 0, 0]}
        assert s.mean_seconds == pytest.approx(6.0)
    text = summary(read_rows(path)).as_text()
    assert "Accuracy: 50.0% (3 of 6)" in text and "Sensitivity (synthetic spotted): 66.7%" in text
    empty = summary([])
    assert empty.accuracy is None and empty.sensitivity is None and empty.mean_seconds is None


def test_survey_confidence_histogram_is_a_plot_with_the_right_bars():
    spec = []
    correct = [0, 3, 1, 6, 2]
    incorrect = [4, 0, 2, 1, 0]
    for c in range(1, 6):
        spec += [("real", "real", c, 1.0, "")] * correct[c - 1]
        spec += [("real", "synthetic", c, 1.0, "")] * incorrect[c - 1]
    rows = _rows(spec)
    plot = confidence_histogram(rows)
    assert plot.counts == {"correct": correct, "incorrect": incorrect}
    png = confidence_histogram_png(rows)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    np.testing.assert_array_equal(image, plot.image)
    assert image.shape[0] > 200 and image.shape[1] > 300
    left, top, right, bottom = plot.plot_box
    plot_h = bottom + 1 - top
    assert plot.y_max >= 6
    assert len(plot.bars) == 10
    for bar in plot.bars:
        color = CORRECT_COLOR if bar.kind == "correct" else INCORRECT_COLOR
        expected = round(bar.count / plot.y_max * plot_h)
        column = image[top : bottom + 1, (bar.x0 + bar.x1) // 2]
        filled = np.all(column == color, axis=1)
        assert filled.sum() == expected == bar.height, bar  # the bar's pixels, counted in the image
        if expected:
            assert filled[plot_h - expected :].all()  # standing on the axis
    # bars of equal count are equally tall; the tallest is the largest count
    heights = {(b.kind, b.confidence): b.height for b in plot.bars}
    assert heights[("correct", 4)] == max(heights.values())
    assert heights[("correct", 2)] < heights[("incorrect", 1)]
    # reading the image alone: one run of each colour per non-zero count, left to right
    line = image[bottom - 1, left : right + 1]
    for color, counts in ((CORRECT_COLOR, correct), (INCORRECT_COLOR, incorrect)):
        on = np.all(line == color, axis=1).astype(int)
        assert int((np.diff(on) == 1).sum() + on[0]) == sum(n > 0 for n in counts)


# ------------------------------------------------------------------------------------ generated on the fly


def test_survey_generates_synthetic_patches_at_the_real_size_and_caches_them(tmp_path, folders, tiny_model_dir,
                                                                           monkeypatch):
    real, _ = folders
    cache = tmp_path / "cache"
    cfg = SurveyConfig(real, rater_id="g", results_csv=tmp_path / "g.csv", seed=2, n_trials=4,
                       generator=GeneratorSettings(model=str(tiny_model_dir), seed=11, cache_folder=cache))
    progress = []
    session = Session.open(cfg, progress=lambda d, t: progress.append((d, t)))
    assert progress[-1] == (2, 2)
    synthetic = [t.patch for t in session.trials if t.patch.truth == "synthetic"]
    assert len(synthetic) == 2 and len(session.trials) == 4
    for p in synthetic:
        assert p.size == (64, 64) and p.path.parent == cache
        assert "synth" not in p.path.name
        assert load_patch(p.path).shape == (64, 64, 3)
    assert sorted(x.name for x in cache.iterdir()) == ["g0000.png", "g0000_mask.png", "g0001.png", "g0001_mask.png"]
    # a resumed survey reuses the cache: nothing is generated again, the ids are the same
    from napari_diffinfinite import generation

    monkeypatch.setattr(generation, "generate", lambda *a, **k: pytest.fail("generated again"))
    again = Session.open(cfg)
    assert [t.patch.patch_id for t in again.trials] == [t.patch.patch_id for t in session.trials]


def test_survey_refuses_a_model_of_another_magnification(tmp_path, folders, tiny_model_dir):
    real, _ = folders
    cfg = SurveyConfig(real, rater_id="g", results_csv=tmp_path / "g.csv", n_trials=2, pixel_size_um=0.25,
                       generator=GeneratorSettings(model=str(tiny_model_dir), cache_folder=tmp_path / "c"))
    with pytest.raises(ValueError, match="magnifications differ"):
        Session.open(cfg)


def test_survey_csv_is_readable_by_the_csv_module(tmp_path):
    path = tmp_path / "x.csv"
    for row in _rows(HAND_ROWS[:2]):
        append_row(path, row)
    with open(path, newline="") as fh:
        records = list(csv.DictReader(fh))
    assert [r["truth"] for r in records] == ["synthetic", "synthetic"]


def test_survey_refuses_sizes_that_give_the_answer_away(tmp_path, folders):
    _, synthetic = folders
    write_patch(synthetic / "synthetic_big.png", 7, size=(96, 96))
    with pytest.raises(ValueError, match="give the answer away"):
        Session.open(config(tmp_path, folders))
    assert Session.open(config(tmp_path, folders, allow_size_mismatch=True)).total == 11
