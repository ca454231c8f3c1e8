"""The Python API: model folders, mask generation, tissue generation from painted or generated masks."""

from __future__ import annotations

import numpy as np
import pytest

from napari_diffinfinite.generation import generate, generate_mask, load_model


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu")


def test_load_model_reads_the_folder(tiny):
    assert tiny.name == "tiny-test-model" and tiny.num_classes == 5 and tiny.contexts == ["adenocarcinoma"]
    assert tiny.mask_latent_px == 16 and tiny.downsampling == 8


def test_missing_model_folder_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no model.json"):
        load_model(tmp_path)


def test_contexts_the_model_was_not_trained_on_are_refused(tiny):
    with pytest.raises(ValueError, match="does not support the context 'squamous'.*adenocarcinoma only"):
        generate_mask(tiny, (64, 64), context="squamous")
    with pytest.raises(ValueError, match="unknown context 'melanoma'"):
        generate_mask(tiny, (64, 64), context="melanoma")


def test_generated_mask_is_clean_and_deterministic(tiny):
    a = generate_mask(tiny, (100, 150), seed=3)
    assert a.shape == (100, 150) and a.min() >= 0 and a.max() < 5
    assert np.array_equal(a, generate_mask(tiny, (100, 150), seed=3))


def test_generate_from_a_painted_coarse_mask(tiny):
    painted = np.zeros((12, 20), np.uint8)
    painted[:, 10:] = 3
    painted[2:6, 2:6] = 1
    progress = []
    result = generate(tiny, mask=painted, mask_scale=8, seed=0, progress=lambda *a: progress.append(a))
    assert result.image.shape == (96, 160, 3) and result.image.dtype == np.uint8
    assert np.array_equal(result.mask, np.kron(painted, np.ones((8, 8), np.uint8)))
    assert result.settings["mask"] == "given" and result.settings["seed"] == 0
    assert {p[0] for p in progress} == {"tissue", "decode"}
    again = generate(tiny, mask=painted, mask_scale=8, seed=0)
    assert np.array_equal(result.image, again.image)
    other = generate(tiny, mask=painted, mask_scale=8, seed=1)
    assert not np.array_equal(result.image, other.image)


def test_generate_without_a_mask_makes_one(tiny):
    result = generate(tiny, size=(72, 88), seed=5)  # not multiples of the 8x downsampling
    assert result.image.shape == (72, 88, 3) and result.mask.shape == (72, 88)
    assert result.settings["context"] == "adenocarcinoma" and result.settings["mask"] == "generated"


def test_bad_painted_masks_are_rejected_with_locations(tiny):
    bad = np.zeros((16, 16), np.int32)
    bad[4:6, 8:12] = 9
    with pytest.raises(ValueError, match=r"labels \[9\] outside 0..4"):
        generate(tiny, mask=bad)


def test_image_and_mask_guidance_are_separate_model_settings(tiny_model_dir, tmp_path):
    """model.json's default_omega guides the image model and mask.omega the mask model: the image's guidance
    leaves a generated mask as it is, the mask's changes it, and both are recorded in the settings."""
    import json
    import shutil

    folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
    manifest = json.loads((folder / "model.json").read_text())
    manifest["default_omega"], manifest["mask"]["omega"] = 0.0, 2.0
    (folder / "model.json").write_text(json.dumps(manifest))
    model = load_model(folder, device="cpu")
    assert (model.default_omega, model.default_mask_omega) == (0.0, 2.0)
    base = generate(model, size=(128, 128), seed=2)
    assert base.settings["omega"] == 0.0 and base.settings["mask_omega"] == 2.0
    assert np.array_equal(generate(model, size=(128, 128), seed=2, omega=5.0).mask, base.mask)
    assert np.array_equal(generate_mask(model, (128, 128), seed=2), base.mask)  # the model's mask guidance
    assert not np.array_equal(generate_mask(model, (128, 128), seed=2, omega=0.0), base.mask)
    assert generate(model, mask=base.mask, seed=2).settings["mask_omega"] is None  # a given mask: none used
    # a manifest without mask.omega keeps the old behaviour: one omega for both networks
    assert load_model(tiny_model_dir, device="cpu").default_mask_omega == 3.0


def test_a_4x_autoencoder_model_generates_at_its_finer_latent_grid(tiny_model_dir_4x):
    """A model whose autoencoder downsamples 4x (nuclei span several latents): masks and images keep their
    pixel sizes, each latent covers 4 px."""
    model = load_model(tiny_model_dir_4x, device="cpu")
    assert model.downsampling == 4 and model.window == 32
    painted = np.zeros((12, 20), np.uint8)
    painted[:, 10:] = 3
    result = generate(model, mask=painted, mask_scale=8, seed=0)
    assert result.image.shape == (96, 160, 3) and result.mask.shape == (96, 160)
    assert np.array_equal(result.image, generate(model, mask=painted, mask_scale=8, seed=0).image)
    assert generate(model, size=(72, 90), seed=5).image.shape == (72, 90, 3)  # not multiples of 4


def test_labels_at_cell_centres_read_numpy_and_torch_masks_alike():
    """One reading of a mask on the latent grid for the trainer (torch), generate(), the canvas and the
    distributed path (numpy): the centre pixel of each cell, a partial last cell taking the edge pixel."""
    import torch

    from napari_diffinfinite.label_grid import cell_centres, labels_at_cell_centres

    assert cell_centres(20, 8).tolist() == [4, 12, 19] and cell_centres(16, 4).tolist() == [2, 6, 10, 14]
    mask = np.arange(20 * 13).reshape(20, 13)
    want = np.pad(mask, ((0, 4), (0, 3)), mode="edge")[4::8, 4::8]
    assert np.array_equal(labels_at_cell_centres(mask, 8), want)
    assert torch.equal(labels_at_cell_centres(torch.from_numpy(mask)[None], 8)[0], torch.from_numpy(want))
