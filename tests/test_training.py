"""Training: dataset checks with clear errors, the stratified hold-out, and a resumable tiny training run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from napari_diffinfinite.model import CompactAutoencoder
from napari_diffinfinite.training.autoencoder import train_autoencoder
from napari_diffinfinite.training.dataset import DatasetError, Patch, scan_folder, stratified_holdout
from napari_diffinfinite.training.loop import TrainConfig

SAMPLE_MASKS = sorted((Path(__file__).parent / "fixtures" / "sample_masks").glob("*_mask.png"))


def write_patch(folder: Path, stem: str, mask: np.ndarray, image_suffix=".jpg", seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (*mask.shape, 3), dtype=np.uint8)
    Image.fromarray(image).save(folder / f"{stem}{image_suffix}", format="PNG")  # PNG named .jpg, as published
    Image.fromarray(mask.astype(np.uint16)).save(folder / f"{stem}_mask.png")


def sample_mask(i: int, size: int = 64) -> np.ndarray:
    with Image.open(SAMPLE_MASKS[i]) as im:
        return np.asarray(im)[:: 512 // size, :: 512 // size].astype(np.int64)


def test_scan_reads_patches_by_content(tmp_path):
    for i in range(3):
        write_patch(tmp_path, f"p{i}", sample_mask(i), seed=i)
    patches = scan_folder(tmp_path, num_classes=5)
    assert [p.name for p in patches] == ["p0.jpg", "p1.jpg", "p2.jpg"]
    assert patches[0].image.shape == (64, 64, 3) and patches[0].mask.dtype == np.int64
    assert patches[1].labels == set(np.unique(sample_mask(1)).tolist())


def test_missing_mask_is_named(tmp_path):
    write_patch(tmp_path, "good", sample_mask(0))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "orphan.png")
    with pytest.raises(DatasetError, match=r"1 image\(s\) have no mask <stem>_mask.png: orphan.png"):
        scan_folder(tmp_path, 5)


def test_out_of_range_labels_are_located(tmp_path):
    mask = np.zeros((16, 16), np.int64)
    mask[3:5, 7:9] = 9
    write_patch(tmp_path, "bad", mask)
    with pytest.raises(DatasetError, match=r"bad_mask.png: labels \[9\] are out of range 0..4 \(4 pixels, first at y=3, x=7\)"):
        scan_folder(tmp_path, 5)


def test_class_map_and_unreadable_files(tmp_path):
    mask = np.zeros((16, 16), np.int64)
    mask[:8] = 7
    write_patch(tmp_path, "mapped", mask)
    patches = scan_folder(tmp_path, 5, class_map={0: 0, 7: 2})
    assert set(np.unique(patches[0].mask)) == {0, 2}
    with pytest.raises(DatasetError, match=r"labels \[7\] are not in the class map"):
        scan_folder(tmp_path, 5, class_map={0: 0})
    (tmp_path / "broken.png").write_bytes(b"not an image")
    Image.fromarray(np.zeros((16, 16), np.uint16)).save(tmp_path / "broken_mask.png")
    with pytest.raises(DatasetError, match="broken.png: cannot be read as an image"):
        scan_folder(tmp_path, 5)


def test_mask_size_must_match_image(tmp_path):
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((8, 16), np.uint16)).save(tmp_path / "a_mask.png")
    with pytest.raises(DatasetError, match=r"a_mask.png: mask is \(16, 8\) px but its image is \(16, 16\) px"):
        scan_folder(tmp_path, 5)


def test_stratified_holdout_covers_every_label():
    patches = [Patch(p.name, np.zeros((1, 1, 3), np.uint8), sample_mask(i, 64)) for i, p in enumerate(SAMPLE_MASKS)]
    names = stratified_holdout(patches, 10, labels=[1, 2, 3, 4])
    assert len(names) == 10 and names == stratified_holdout(patches, 10, labels=[1, 2, 3, 4])
    held = [p for p in patches if p.name in names]
    for label in (1, 2, 3, 4):
        assert sum(label in p.labels for p in held) >= 2
    with pytest.raises(DatasetError, match="label 9 appears in only 0"):
        stratified_holdout(patches, 10, labels=[9])


def test_autoencoder_training_checkpoints_and_resumes(tmp_path):
    patches = [Patch(f"p{i}", np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8),
                     np.zeros((32, 32), np.int64)) for i in range(4)]
    out = tmp_path / "run"
    kwargs = dict(batch=2, crop=16, widths=(8, 8, 8), progress=False)
    train_autoencoder(patches, patches[:1], out, TrainConfig(steps=3, save_every=2, sample_every=3), **kwargs)
    state = json.loads((out / "state.json").read_text())
    assert state["step"] == 3
    assert {"weights.safetensors", "ema.safetensors", "optimizer.safetensors", "samples-000003.png"} <= {
        p.name for p in out.iterdir()
    }
    ema = train_autoencoder(patches, patches[:1], out, TrainConfig(steps=5, save_every=2, sample_every=5), **kwargs)
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]  # resumed at 4, not from scratch
    assert json.loads((out / "state.json").read_text())["step"] == 5
    # the shipped artefact: EMA weights with their config, loadable without the training code
    ema.save(tmp_path / "ae.safetensors")
    loaded = CompactAutoencoder.load(tmp_path / "ae.safetensors")
    assert loaded.config == ema.config
    with pytest.raises(ValueError, match="different settings"):
        train_autoencoder(patches, patches[:1], out, TrainConfig(steps=6), batch=2, crop=16, widths=(8, 8, 16),
                          progress=False)


def test_decoder_finetune_keeps_the_encoder_and_its_latents(tmp_path):
    """--freeze-encoder: latents (what an image model was trained on) stay bit-identical; the decoder learns."""
    patches = [Patch(f"p{i}", np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8),
                     np.zeros((32, 32), np.int64)) for i in range(4)]
    kwargs = dict(batch=2, crop=16, widths=(8, 8, 8), progress=False)
    base = train_autoencoder(patches, patches[:1], tmp_path / "base", TrainConfig(steps=2, sample_every=99), **kwargs)
    base.save(tmp_path / "base.safetensors")
    tuned = train_autoencoder(patches, patches[:1], tmp_path / "tuned", TrainConfig(steps=3, sample_every=99),
                              init_from=tmp_path / "base.safetensors", freeze_encoder=True, texture_weight=1.0,
                              **kwargs)
    images = torch.rand(1, 3, 32, 32)
    assert torch.equal(tuned.encode(images), base.encode(images))
    assert not torch.equal(tuned.decode(base.encode(images)), base.decode(base.encode(images)))
    with open(tmp_path / "tuned" / "log.csv") as f:
        assert "texture" in next(csv.DictReader(f))
    with pytest.raises(ValueError, match="--init-from"):
        train_autoencoder(patches, patches[:1], tmp_path / "x", TrainConfig(steps=1), freeze_encoder=True, **kwargs)


def test_adversarial_decoder_finetune_keeps_latents_and_resumes_its_discriminator(tmp_path):
    """--adversarial-weight: the encoder stays frozen, the discriminator is saved with the run and resumed
    from it (a resumed run goes on with the same discriminator), and the log keeps one set of columns."""
    from safetensors.torch import load_file

    patches = [Patch(f"p{i}", np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8),
                     np.zeros((32, 32), np.int64)) for i in range(4)]
    kwargs = dict(batch=2, crop=32, widths=(8, 8, 8), progress=False)
    base = train_autoencoder(patches, patches[:1], tmp_path / "base", TrainConfig(steps=1, sample_every=99),
                             **kwargs)
    base.save(tmp_path / "base.safetensors")
    run = tmp_path / "gan"
    adv = dict(init_from=tmp_path / "base.safetensors", freeze_encoder=True, adversarial_weight=0.5,
               adversarial_start=1, **kwargs)
    train_autoencoder(patches, patches[:1], run, TrainConfig(steps=3, save_every=3, sample_every=99), **adv)
    first = load_file(str(run / "discriminator.safetensors"))
    assert (run / "discriminator-optimizer.safetensors").exists()
    tuned = train_autoencoder(patches, patches[:1], run, TrainConfig(steps=4, save_every=4, sample_every=99),
                              **adv)
    images = torch.rand(1, 3, 32, 32)
    assert torch.equal(tuned.encode(images), base.encode(images))
    second = load_file(str(run / "discriminator.safetensors"))
    assert any(not torch.equal(first[k], second[k]) for k in first)  # it went on learning
    with open(run / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[0]["gan_scale"]) == 0
    assert all(float(r["gan_scale"]) > 0 for r in rows[1:])
    with pytest.raises(ValueError, match="--freeze-encoder"):
        train_autoencoder(patches, patches[:1], tmp_path / "x", TrainConfig(steps=1), adversarial_weight=0.5,
                          **kwargs)


def test_standardised_latents_have_the_target_spread_and_decode_the_same(tmp_path):
    """--latent-std: the image model's latents get per-channel mean 0 / the target std; pixels are unchanged."""
    patches = [Patch(f"p{i}", np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8),
                     np.zeros((32, 32), np.int64)) for i in range(4)]
    net = train_autoencoder(patches, patches[:1], tmp_path / "run", TrainConfig(steps=2, sample_every=99), batch=2,
                            crop=16, widths=(8, 8, 8), latent_std=0.3, progress=False)
    loaded = CompactAutoencoder.load(tmp_path / "run" / "standardised.safetensors")
    raw = CompactAutoencoder.load(tmp_path / "run" / "ema.safetensors")
    images = torch.stack([torch.from_numpy(p.image.copy()).permute(2, 0, 1).float() / 255 for p in patches])
    z = loaded.encode(images)
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(4), atol=1e-4)
    assert torch.allclose(z.std((0, 2, 3), unbiased=False), torch.full((4,), 0.3), rtol=1e-3)
    assert torch.allclose(loaded.decode(z), raw.decode(raw.encode(images)), atol=1e-5)
    assert loaded.config == net.config and loaded.config["latent_target"] == 0.3


def test_the_phase_loss_sees_2_px_blocks_and_nothing_else():
    """A real sample patch against itself made half 2 x 2-blocky (what a pixel-shuffle decoder does when its
    sub-pixels agree: small steps inside a block, big ones between blocks), against noise and a shift by a whole
    period (not a pattern, so nearly free)."""
    import torch.nn.functional as F

    from napari_diffinfinite.training.autoencoder import pixel_phase_l1

    path = Path(__file__).parent / "fixtures" / "sample_patches" / "sample_label0_0000_crop128.png"
    with Image.open(path) as im:
        x = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).float()[None] / 255
    blocky = 0.5 * x + 0.5 * F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest")
    assert pixel_phase_l1(x, x) == 0
    patterned = pixel_phase_l1(blocky, x)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * 0.02
    assert pixel_phase_l1(x + noise, x) < patterned / 3
    assert pixel_phase_l1(torch.roll(x, 2, dims=-1), x) < patterned / 3


def test_scale_equivariance_asks_coarse_latents_to_decode_to_the_coarse_image(tmp_path):
    """Zero when pooling the latents and pooling the image agree through the decoder, positive otherwise; the
    option trains and logs it."""
    from napari_diffinfinite.training.autoencoder import scale_equivariance_l1

    def decoder(z):  # a stand-in decoder: each latent paints its 8 x 8 pixels
        return torch.nn.functional.interpolate(z[:, :3], scale_factor=8, mode="nearest")

    coarse = torch.rand(1, 4, 4, 4)
    smooth = torch.nn.functional.interpolate(coarse, scale_factor=2, mode="nearest")  # constant on 2x2 blocks
    assert float(scale_equivariance_l1(decoder, smooth, decoder(smooth))) < 1e-6
    rough = torch.rand(1, 4, 8, 8)
    assert float(scale_equivariance_l1(decoder, rough, decoder(rough))) > 0.05

    patches = [Patch(f"p{i}", np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8),
                     np.zeros((32, 32), np.int64)) for i in range(4)]
    out = tmp_path / "run"
    train_autoencoder(patches, patches[:1], out, TrainConfig(steps=2, sample_every=99), batch=2, crop=32,
                      widths=(8, 8, 8), scale_equivariance=1.0, progress=False)
    with open(out / "log.csv") as f:
        assert all(float(r["scale_eq"]) > 0 for r in csv.DictReader(f))


def test_latent_noise_is_what_the_decoder_is_trained_on(tmp_path):
    """The noise has the asked std and no bias; with it the same run reconstructs its training batch worse at
    first (the decoder sees noised latents) and records the option in its state."""
    from napari_diffinfinite.training.autoencoder import noised_latents

    z = torch.zeros(4, 8, 32, 32)
    torch.manual_seed(0)
    noised = noised_latents(z, 0.05)
    assert abs(float(noised.std()) - 0.05) < 0.002 and abs(float(noised.mean())) < 0.002
    assert noised_latents(z, 0.0) is z

    patches = [Patch(f"p{i}", np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8),
                     np.zeros((32, 32), np.int64)) for i in range(4)]
    l1 = {}
    for sigma in (0.0, 0.5):
        out = tmp_path / f"run{sigma}"
        train_autoencoder(patches, patches[:1], out, TrainConfig(steps=2, sample_every=99), batch=2, crop=32,
                          widths=(8, 8, 8), latent_noise=sigma, progress=False)
        with open(out / "log.csv") as f:
            l1[sigma] = [float(r["l1"]) for r in csv.DictReader(f)]
    assert l1[0.5][0] != l1[0.0][0]
    state = json.loads((tmp_path / "run0.5" / "state.json").read_text())
    assert state["config"]["extra"]["latent_noise"] == 0.5


def test_a_pooling_encoder_gives_the_block_mean_image_and_trains_only_its_decoder(tmp_path):
    """``encoder="pool"``: the latents are the image averaged over 4 x 4 blocks in [-1, 1] (fixed, so image
    models trained on them stay valid whatever the decoder learns), standardised like learned latents, and the
    decoder still decodes locally (seamless tiles); its config survives the round trip."""
    from napari_diffinfinite.sampling.decode import decode_region

    rng = np.random.default_rng(0)
    patches = [Patch(f"p{i}", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), np.zeros((32, 32), np.int64))
               for i in range(4)]
    kwargs = dict(batch=2, crop=32, widths=(8, 8, 8), latent_channels=3, downsampling=4, encoder="pool",
                  progress=False)
    net = train_autoencoder(patches, patches[:1], tmp_path / "run", TrainConfig(steps=3, sample_every=99),
                            latent_std=0.3, adversarial_weight=0.5, **kwargs)
    images = torch.from_numpy(patches[0].image).permute(2, 0, 1)[None].float() / 255
    raw = net.encode_raw(images)
    assert raw.shape == (1, 3, 8, 8)
    assert torch.allclose(raw[0, :, 1, 2], images[0, :, 4:8, 8:12].mean((1, 2)) * 2 - 1, atol=1e-6)
    loaded = CompactAutoencoder.load(tmp_path / "run" / "standardised.safetensors")
    assert loaded.config["encoder"] == "pool" and loaded.config["latent_target"] == 0.3
    z = loaded.encode(images)
    assert torch.allclose(z, (raw - loaded._norm[0]) / loaded._norm[1], atol=1e-5)
    whole = loaded.decode(z)
    region = decode_region(loaded, lambda ys, xs: z[..., ys, xs], 2, 2, 6, 8, z.shape[1:], tile=4)
    assert (region - whole[..., 8:24, 8:32]).abs().max() < 1e-5
    with pytest.raises(ValueError, match="3 colour channels"):
        CompactAutoencoder(latent_channels=4, encoder="pool")
