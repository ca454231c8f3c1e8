"""Image- and mask-model trainers: resumable runs, loadable EMA weights with their metadata, the latent caches
(8 dihedral transforms), condition dropout at the configured rate, and the CLI's errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from napari_diffinfinite.cli import main as cli_main
from napari_diffinfinite.label_grid import labels_at_cell_centres
from napari_diffinfinite.model import CheckpointError, CompactAutoencoder, load_diffinfinite_checkpoint
from napari_diffinfinite.model.diffusion import cosine_schedule
from napari_diffinfinite.sampling.masks import SimplexMaskCodec
from napari_diffinfinite.training.dataset import DatasetError, Patch
from napari_diffinfinite.training.image import (
    DIHEDRAL,
    dihedral,
    encode_patches,
    image_batch,
    min_snr_weights,
    noise_loss,
    train_image_model,
    v_weights,
)
from napari_diffinfinite.training.loop import TrainConfig
from napari_diffinfinite.training.mask import encode_masks, mask_batch, patch_context, train_mask_model

SAMPLE_MASKS = sorted((Path(__file__).parent / "fixtures" / "sample_masks").glob("*_mask.png"))
IMAGE_UNET = dict(dim=8, dim_mults=(1, 2), num_classes=5, resnet_block_groups=2, block_per_layer=1)
MASK_UNET = dict(dim=8, dim_mults=(1, 2), resnet_block_groups=2, block_per_layer=1)


def sample_patch(i: int, size: int) -> Patch:
    """A sample mask brought to ``size`` px (nearest), under a random image."""
    with Image.open(SAMPLE_MASKS[i]) as im:
        mask = np.asarray(im)[:: 512 // size, :: 512 // size].astype(np.int64)
    image = np.random.default_rng(i).integers(0, 255, (size, size, 3), dtype=np.uint8)
    return Patch(SAMPLE_MASKS[i].name.replace("_mask.png", ".jpg"), image, mask)


@pytest.fixture(scope="module")
def autoencoder_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ae") / "ae.safetensors"
    CompactAutoencoder(widths=(8, 8, 8)).save(path)
    return path


@pytest.fixture(scope="module")
def patches() -> list[Patch]:
    return [sample_patch(i, 64) for i in range(5)]


def log_steps(run: Path) -> list[int]:
    with open(run / "log.csv") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


# ================================================================================ image model
def test_image_training_resumes_and_ships_loadable_ema(tmp_path, patches, autoencoder_file):
    out = tmp_path / "image"
    kwargs = dict(
        autoencoder_path=autoencoder_file,
        unet_config=IMAGE_UNET,
        batch=2,
        crop_latents=4,
        sample_steps=2,
        sample_count=2,
        progress=False,
    )
    train_image_model(
        patches[:4], patches[4:], out, TrainConfig(steps=3, save_every=2, sample_every=100), **kwargs
    )
    assert json.loads((out / "state.json").read_text())["step"] == 3
    assert (out / "samples-000003.png").is_file()
    ema = train_image_model(
        patches[:4], patches[4:], out, TrainConfig(steps=5, save_every=2, sample_every=100), **kwargs
    )
    assert log_steps(out) == [1, 2, 3, 4, 5]  # resumed at 4
    grid = Image.open(out / "samples-000005.png")
    assert grid.size == (64, 3 * 64)  # one held-out patch: real | mask colours | generated

    loaded = load_diffinfinite_checkpoint(out / "ema.safetensors", "image")
    assert loaded.config == ema.config == {**IMAGE_UNET, "channels": 4}
    for k, v in ema.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    meta = metadata(out / "ema.safetensors")
    assert meta["diffinfinite.kind"] == "image"
    assert json.loads(meta["diffinfinite.autoencoder"])["config"] == {
        "latent_channels": 4,
        "widths": [8, 8, 8],
        "blocks": [1, 1, 2],
    }
    with pytest.raises(CheckpointError, match="image-model UNet"):
        load_diffinfinite_checkpoint(out / "ema.safetensors", "mask")


def test_image_run_refuses_another_autoencoder(tmp_path, patches, autoencoder_file):
    out = tmp_path / "image"
    kwargs = dict(unet_config=IMAGE_UNET, batch=2, crop_latents=4, sample_steps=1, progress=False)
    train_image_model(
        patches[:2],
        [],
        out,
        TrainConfig(steps=1, sample_every=100),
        autoencoder_path=autoencoder_file,
        **kwargs,
    )
    other = tmp_path / "other.safetensors"
    CompactAutoencoder(widths=(8, 8, 8)).save(other)  # new random weights: another latent space
    with pytest.raises(ValueError, match="trained with another autoencoder"):
        train_image_model(patches[:2], [], out, TrainConfig(steps=2), autoencoder_path=other, **kwargs)
    with pytest.raises(
        FileNotFoundError, match="missing.safetensors does not exist.*diffinfinite train autoencoder"
    ):
        train_image_model(
            patches[:2],
            [],
            out,
            TrainConfig(steps=2),
            autoencoder_path=tmp_path / "missing.safetensors",
            **kwargs,
        )


def test_latent_cache_holds_all_eight_transforms(patches, autoencoder_file):
    ae = CompactAutoencoder.load(autoencoder_file)
    wide = Patch("wide", patches[0].image[:32], patches[0].mask[:32])  # 64 x 32 px: orientations swap
    cache = encode_patches([patches[0], wide], ae, num_classes=5)
    assert len(cache) == 2
    image = torch.from_numpy(patches[0].image.copy()).permute(2, 0, 1).float() / 255
    mask = torch.from_numpy(patches[0].mask.copy())
    assert len(cache.latents[0]) == len(cache.masks[0]) == DIHEDRAL == 8
    for k in range(DIHEDRAL):
        torch.testing.assert_close(cache.latents[0][k], ae.encode(dihedral(image, k)[None])[0])
        assert torch.equal(cache.masks[0][k], labels_at_cell_centres(dihedral(mask, k), 8))
    assert len({cache.latents[0][k].sum().item() for k in range(8)}) == 8  # eight different encodings
    assert [tuple(z.shape[-2:]) for z in cache.latents[1]] == [(4, 8), (8, 4)] * 4
    assert [tuple(m.shape) for m in cache.masks[1]] == [(4, 8), (8, 4)] * 4
    with pytest.raises(DatasetError, match="wide: label 4 is out of range 0..2"):
        encode_patches([wide], ae, num_classes=3)


def test_condition_dropout_zeroes_masks_at_its_rate(patches, autoencoder_file):
    ae = CompactAutoencoder.load(autoencoder_file)
    labelled = [p for p in patches if p.mask.any()]
    cache = encode_patches(labelled, ae, num_classes=5)
    n = 4000
    b = image_batch(cache, n, 8, 0.2, torch.Generator().manual_seed(1))
    assert abs(b.dropped.float().mean().item() - 0.2) < 0.025  # binomial sd 0.006
    assert not b.masks[b.dropped].any()  # the null condition: class 0 and an empty query mask
    kept = ~b.dropped
    assert torch.equal(
        b.masks[kept][:, 0],
        torch.stack([cache.masks[i][k] for i, k in zip(b.index[kept].tolist(), b.transform[kept].tolist())]),
    )  # whole 8x8 latents: no crop offset
    assert set(b.transform.tolist()) == set(range(8))
    again = image_batch(cache, n, 8, 0.2, torch.Generator().manual_seed(1))
    assert torch.equal(again.latents, b.latents) and torch.equal(again.dropped, b.dropped)
    assert not image_batch(cache, 64, 4, 0.0, torch.Generator().manual_seed(2)).dropped.any()
    assert image_batch(cache, 64, 4, 1.0, torch.Generator().manual_seed(2)).masks.eq(0).all()


def test_per_label_batches_keep_one_label_of_each_crop_as_the_sampler_feeds_it(autoencoder_file):
    ae = CompactAutoencoder.load(autoencoder_file)
    mixed = [sample_patch(i, 64) for i in (21, 27, 47)]  # carcinoma with necrosis / stroma / both
    assert all(len(set(np.unique(p.mask).tolist()) - {0}) >= 2 for p in mixed)
    cache = encode_patches(mixed, ae, num_classes=5)
    b = image_batch(cache, 400, 8, 0.0, torch.Generator().manual_seed(3), per_label=True)
    chosen = {}
    for m, i, k in zip(b.masks[:, 0], b.index.tolist(), b.transform.tolist()):
        full = cache.masks[i][k]
        present = set(torch.unique(m).tolist()) - {0}
        assert len(present) == 1  # one label per sample
        (label,) = present
        assert torch.equal(m, (full == label) * label)  # exactly the sampler's row for that label
        chosen.setdefault(i, set()).add(label)
    for i, labels in chosen.items():  # over 400 draws every label of a patch gets picked
        assert labels == set(torch.cat([m.flatten() for m in cache.masks[i]]).tolist()) - {0}
    plain = image_batch(cache, 400, 8, 0.0, torch.Generator().manual_seed(3))
    assert any(
        len(set(torch.unique(m).tolist()) - {0}) >= 2 for m in plain.masks
    )  # the reference's mixed masks


def test_balanced_batches_teach_a_rare_label_as_often_as_the_common_ones(autoencoder_file):
    ae = CompactAutoencoder.load(autoencoder_file)
    # carcinoma in every patch, necrosis in one of them (as in the sample data, where it is in 13 of 100)
    # (34: carcinoma + necrosis, 3: stroma, 0: others, the rest carcinoma only; 21's necrosis is so small that
    # only some transforms' latent grids hold it)
    patches = [sample_patch(i, 64) for i in (34, 3, 0, 5, 6, 7, 10, 11, 13, 16, 21)]
    cache = encode_patches(patches, ae, num_classes=5)
    assert [i for i, m in enumerate(cache.masks) if (m[0] == 2).any()] == [0]
    assert 0 < sum(bool((m == 2).any()) for m in cache.masks[10]) < DIHEDRAL
    n = 600
    b = image_batch(cache, n, 4, 0.0, torch.Generator().manual_seed(4), per_label=True, balance_labels=True)
    present = sorted(set(torch.cat([m[0].flatten() for m in cache.masks]).tolist()) - {0})
    counts = {label: 0 for label in present}
    for m, i, k in zip(b.masks[:, 0], b.index.tolist(), b.transform.tolist()):
        (label,) = set(torch.unique(m).tolist()) - {0}  # one label per sample, and it is in the crop
        counts[label] += 1
        full = cache.masks[i][k]
        windows = [
            (y, x)
            for y in range(full.shape[0] - 3)
            for x in range(full.shape[1] - 3)
            if torch.equal(m, (full[y : y + 4, x : x + 4] == label) * label)
        ]
        assert windows  # the crop is a window of that patch in that transform, masked to the label
    for label in present:  # uniform over labels: binomial sd ~ 0.02 at n = 600
        assert abs(counts[label] / n - 1 / len(present)) < 0.07, counts
    plain = image_batch(cache, n, 4, 0.0, torch.Generator().manual_seed(4), per_label=True)
    plain_necrosis = sum(bool((m == 2).any()) for m in plain.masks)
    assert counts[2] > 2 * plain_necrosis  # the rare label drawn far more often than crop sampling gives it
    small = [
        k
        for m, i, k in zip(b.masks[:, 0], b.index.tolist(), b.transform.tolist())
        if i == 10 and (m == 2).any()
    ]
    assert small and all((cache.masks[10][k] == 2).any() for k in small)  # only the transforms that hold it
    again = image_batch(
        cache, n, 4, 0.0, torch.Generator().manual_seed(4), per_label=True, balance_labels=True
    )
    assert torch.equal(again.latents, b.latents) and torch.equal(again.masks, b.masks)
    with pytest.raises(ValueError, match="balance_labels needs per_label"):
        image_batch(cache, 4, 4, 0.0, torch.Generator(), balance_labels=True)


def test_image_run_can_start_from_trained_weights(tmp_path, patches, autoencoder_file):
    kwargs = dict(autoencoder_path=autoencoder_file, batch=2, crop_latents=4, sample_steps=1, progress=False)
    first = train_image_model(
        patches[:2],
        [],
        tmp_path / "a",
        TrainConfig(steps=2, sample_every=100),
        unet_config=IMAGE_UNET,
        **kwargs,
    )
    cfg = TrainConfig(steps=1, lr=1e-12, sample_every=100, warmup=1)
    second = train_image_model(
        patches[:2],
        [],
        tmp_path / "b",
        cfg,
        unet_config=IMAGE_UNET,
        init_from=tmp_path / "a" / "ema.safetensors",
        **kwargs,
    )
    for k, v in first.state_dict().items():  # one step at lr ~0 from the loaded weights: the same weights
        assert torch.allclose(second.state_dict()[k], v, atol=1e-6), k
    with pytest.raises(ValueError, match="init-from"):
        train_image_model(
            patches[:2],
            [],
            tmp_path / "c",
            TrainConfig(steps=1, sample_every=100),
            unet_config={**IMAGE_UNET, "dim": 16},
            init_from=tmp_path / "a" / "ema.safetensors",
            **kwargs,
        )
    # weights trained in another latent space (an autoencoder of other widths) are refused
    other = tmp_path / "other-ae.safetensors"
    CompactAutoencoder(widths=(8, 8, 16)).save(other)
    with pytest.raises(ValueError, match="another autoencoder"):
        train_image_model(
            patches[:2],
            [],
            tmp_path / "d",
            TrainConfig(steps=1, sample_every=100),
            unet_config=IMAGE_UNET,
            init_from=tmp_path / "a" / "ema.safetensors",
            **{**kwargs, "autoencoder_path": other},
        )


# ================================================================================ mask model
@pytest.fixture(scope="module")
def mask_patches() -> list[Patch]:
    return [sample_patch(i, 128) for i in range(4)]  # 128 px / 16 cells per latent = 8x8 latents


def test_mask_training_resumes_and_records_codec_and_contexts(tmp_path, mask_patches):
    out = tmp_path / "mask"
    kwargs = dict(
        unet_config=MASK_UNET, batch=2, crop_latents=8, sample_steps=2, sample_count=2, progress=False
    )
    train_mask_model(mask_patches, out, TrainConfig(steps=3, save_every=2, sample_every=100), **kwargs)
    ema = train_mask_model(mask_patches, out, TrainConfig(steps=5, save_every=2, sample_every=100), **kwargs)
    assert log_steps(out) == [1, 2, 3, 4, 5]
    assert Image.open(out / "samples-000005.png").size == (2 * 32, 2 * 32)  # real row, one context row

    loaded = load_diffinfinite_checkpoint(out / "ema.safetensors", "mask")
    assert loaded.config == ema.config == {**MASK_UNET, "num_classes": 1, "channels": 4}
    meta = metadata(out / "ema.safetensors")
    assert meta["diffinfinite.kind"] == "mask"
    assert json.loads(meta["diffinfinite.mask_codec"]) == {
        "type": "simplex",
        "num_labels": 5,
        "cells_per_latent": 16,
    }
    assert json.loads(meta["diffinfinite.contexts"]) == ["adenocarcinoma"]
    with pytest.raises(CheckpointError):
        load_diffinfinite_checkpoint(out / "ema.safetensors", "image")


def test_mask_cache_and_null_rate(mask_patches):
    codec = SimplexMaskCodec(5, cells_per_latent=16)
    cache = encode_masks(mask_patches, codec, [0] * len(mask_patches))
    mask = torch.from_numpy(mask_patches[1].mask.copy())
    assert len(cache.latents[1]) == 8
    for k in range(8):
        torch.testing.assert_close(cache.latents[1][k], codec.encode(dihedral(mask, k)[None])[0])
    b = mask_batch(cache, 4000, 8, 0.3, torch.Generator().manual_seed(0))
    assert b.latents.shape == (4000, 4, 8, 8) and b.contexts.eq(0).all()
    assert abs(b.null.float().mean().item() - 0.3) < 0.025


def test_contexts_from_reference_names():
    assert patch_context("omega3.0/sample_label0_0001.jpg", 1) == 0
    assert patch_context("mine.png", 2) == 0
    assert patch_context("sample_label1_0004.jpg", 2) == 1
    with pytest.raises(DatasetError, match="context 1 .*squamous.*trained for 1 context"):
        patch_context("sample_label1_0004.jpg", 1)


# ================================================================================ CLI
def test_cli_image_needs_an_existing_autoencoder(tmp_path, capsys):
    args = ["train", "image", "--data", str(tmp_path), "--out", str(tmp_path / "run")]
    assert cli_main(args) == 2
    assert "needs --autoencoder PATH" in capsys.readouterr().err
    assert cli_main([*args, "--autoencoder", str(tmp_path / "ae.safetensors")]) == 2
    err = capsys.readouterr().err
    assert (
        "ae.safetensors does not exist" in err
        and "diffinfinite train autoencoder --data DATA --out RUN" in err
    )
    assert not (tmp_path / "run").exists()


def test_cli_trains_image_and_mask_models(tmp_path, autoencoder_file):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        p = sample_patch(i, 128)
        Image.fromarray(p.image).save(data / p.name, format="PNG")
        Image.fromarray(p.mask.astype(np.uint16)).save(data / p.name.replace(".jpg", "_mask.png"))
    holdout = tmp_path / "holdout.json"
    holdout.write_text(json.dumps({"held_out": [SAMPLE_MASKS[2].name.replace("_mask.png", ".jpg")]}))
    common = [
        "--data",
        str(data),
        "--holdout-file",
        str(holdout),
        "--steps",
        "2",
        "--batch",
        "2",
        "--dim",
        "8",
        "--dim-mults",
        "1,2",
        "--groups",
        "2",
        "--sample-steps",
        "1",
        "--threads",
        "1",
    ]
    image = [
        "train",
        "image",
        "--out",
        str(tmp_path / "image"),
        "--autoencoder",
        str(autoencoder_file),
        "--crop-latents",
        "8",
        *common,
    ]
    assert (
        cli_main([*image, "--balance-labels"]) == 2 and not (tmp_path / "image").exists()
    )  # needs --per-label
    assert cli_main([*image, "--per-label", "--balance-labels"]) == 0
    assert load_diffinfinite_checkpoint(tmp_path / "image" / "ema.safetensors", "image").config["dim"] == 8
    extra = json.loads((tmp_path / "image" / "state.json").read_text())["config"]["extra"]
    assert extra["per_label"] and extra["balance_labels"]
    assert cli_main(["train", "mask", "--out", str(tmp_path / "mask"), "--crop-latents", "8", *common]) == 0
    assert json.loads(metadata(tmp_path / "mask" / "ema.safetensors")["diffinfinite.contexts"]) == [
        "adenocarcinoma"
    ]
    assert log_steps(tmp_path / "mask") == [1, 2]
    bad = [
        "train",
        "mask",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "bad"),
        "--dim",
        "8",
        "--groups",
        "3",
    ]
    assert cli_main(bad) == 2  # 3 groups do not divide the widths 8, 16, ...
    init = [
        "train",
        "mask",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "bad2"),
        "--init-from",
        str(tmp_path / "mask" / "ema.safetensors"),
    ]
    assert cli_main(init) == 2 and not (tmp_path / "bad2").exists()  # mask runs start from scratch


def test_bundle_assembles_a_loadable_model_folder(tmp_path, tiny_model_dir, tiny_model_dir_4x):
    """Runs' EMA weights + model.json = a folder load_model reads; wrong kinds are refused."""
    import shutil

    from napari_diffinfinite.generation import load_model
    from napari_diffinfinite.training.bundle import bundle_model

    runs = {}
    for part in ("autoencoder", "image", "mask"):
        run = tmp_path / f"run-{part}"
        run.mkdir()
        shutil.copy(tiny_model_dir / f"{part}.safetensors", run / "ema.safetensors")
        (run / "state.json").write_text('{"step": 7, "elapsed_s": 1.5}')
        runs[part] = run
    # the tiny test model's mask weights carry no codec metadata; add what the mask trainer writes
    from safetensors.torch import load_file, save_file

    mask_file = runs["mask"] / "ema.safetensors"
    meta = {
        "diffinfinite.kind": "mask",
        "diffinfinite.config": '{"dim": 8, "num_classes": 1, "dim_mults": [1, 2], '
        '"channels": 4, "resnet_block_groups": 2, "block_per_layer": 2}',
        "diffinfinite.mask_codec": '{"type": "simplex", "num_labels": 5, "cells_per_latent": 16}',
        "diffinfinite.contexts": '["adenocarcinoma"]',
    }
    save_file(load_file(str(mask_file)), str(mask_file), metadata=meta)
    out = bundle_model(
        tmp_path / "bundle",
        autoencoder=runs["autoencoder"],
        image=runs["image"],
        mask=runs["mask"],
        name="bundled",
        default_steps=4,
        sampler="dpmpp-2m-sde",
        image_window=16,
        mask_window=8,
    )
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["provenance"]["image"]["steps"] == 7 and manifest["contexts"] == ["adenocarcinoma"]
    model = load_model(out, device="cpu")
    assert model.name == "bundled" and model.default_steps == 4 and model.mask_codec.cells_per_latent == 16
    assert model.sampler == "dpmpp-2m-sde"
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        bundle_model(tmp_path / "bundle", autoencoder=runs["autoencoder"], sampler="euler")
    # the image window defaults to 512 px of latents, whatever the autoencoder's downsampling
    assert (
        load_model(
            bundle_model(
                tmp_path / "b8", autoencoder=runs["autoencoder"], image=runs["image"], mask=runs["mask"]
            ),
            device="cpu",
        ).window
        == 64
    )
    four = bundle_model(
        tmp_path / "b4",
        autoencoder=tiny_model_dir_4x / "autoencoder.safetensors",
        image=runs["image"],
        mask=runs["mask"],
    )
    assert load_model(four, device="cpu").window == 128
    with pytest.raises(ValueError, match="holds a 'image' network, not the mask"):
        bundle_model(
            tmp_path / "wrong", autoencoder=runs["autoencoder"], image=runs["image"], mask=runs["image"]
        )


def test_mse_learns_the_mean_a_sampler_needs_and_l1_the_median():
    """A constant fitted to noise targets with a rare large mode: MSE finds their mean, L1 their median."""
    g = torch.Generator().manual_seed(0)
    target = torch.where(torch.rand(4000, generator=g) < 0.1, 3.0, -0.3)[:, None]
    fits = {}
    for loss in ("mse", "l1"):
        c = torch.zeros(1, requires_grad=True)
        opt = torch.optim.Adam([c], lr=0.05)
        for _ in range(400):
            opt.zero_grad()
            noise_loss(c.expand_as(target), target, loss).backward()
            opt.step()
        fits[loss] = float(c.detach())
    assert abs(fits["mse"] - float(target.mean())) < 0.05
    assert abs(fits["l1"] - float(target.median())) < 0.05


def test_min_snr_weights_spare_the_noisy_steps_and_shrink_the_clean_ones():
    schedule = cosine_schedule()
    t = torch.tensor([999, 500, 100, 10, 0])
    w = min_snr_weights(schedule, t, 5.0)
    snr = schedule.alphas_cumprod[t] / (1 - schedule.alphas_cumprod[t])
    assert torch.allclose(w[snr <= 5], torch.ones(int((snr <= 5).sum())))
    assert torch.all(w[snr > 5] < 1) and torch.all(w[1:] <= w[:-1])
    assert torch.equal(min_snr_weights(schedule, t, 0), torch.ones(5))
    pred, target = torch.zeros(5, 2, 3, 3), torch.ones(5, 2, 3, 3)
    assert torch.isclose(noise_loss(pred, target, "mse", w), w.mean())


def test_v_weights_make_the_noisy_steps_count_as_a_v_prediction_loss_would():
    schedule = cosine_schedule()
    t = torch.tensor([0, 100, 500, 900, 999])
    a = schedule.alphas_cumprod[t]
    w = v_weights(schedule, t, 100.0)
    # eps error e gives the v error e / sqrt(alpha_bar): the weight of a squared error is 1 / alpha_bar
    torch.manual_seed(0)
    eps_err = torch.randn(5, 2, 4, 4)
    v_err = eps_err / a.sqrt()[:, None, None, None]
    unclipped = a >= 0.01
    assert torch.allclose((eps_err**2).flatten(1).mean(1)[unclipped] * w[unclipped],
                          (v_err**2).flatten(1).mean(1)[unclipped])
    assert w[-1] == 100.0 and torch.all(w[1:] >= w[:-1]) and w[0] == pytest.approx(1.0, abs=1e-3)
    assert torch.equal(v_weights(schedule, t, 0), torch.ones(5))
