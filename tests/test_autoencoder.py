"""The SD2 VAE adapter: DiffInfinite's latent conventions, offline-first loading, clear errors.

Real diffusers AutoencoderKL models throughout (tiny, randomly initialised from the shipped config); the
only fake is a Hugging Face cache folder laid out as the hub lays it out. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub are imported: never touch the network

import huggingface_hub
import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file, save_file

from napari_diffinfinite.model.autoencoder import (
    SD2_REPO_ID,
    SD2VAE,
    TINY_VAE_OVERRIDES,
    Autoencoder,
    VAEWeightsNotFoundError,
    sd2_vae_config,
)

COMMIT = "1cb61502fc8b634cdb04e7cd69e06051a728bedf"  # any 40-hex commit id works for the fake cache


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Offline whatever was imported first: huggingface_hub reads HF_HUB_OFFLINE at import time."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def tiny() -> SD2VAE:
    return SD2VAE.from_config(seed=0, device="cpu", **TINY_VAE_OVERRIDES)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _outputs(vae: SD2VAE, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = vae.encode(images)
    return z, vae.decode(z)


def _assert_same_model(a: SD2VAE, b: SD2VAE, images: torch.Tensor) -> None:
    za, xa = _outputs(a, images)
    zb, xb = _outputs(b, images)
    torch.testing.assert_close(zb, za, rtol=0, atol=0)
    torch.testing.assert_close(xb, xa, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------- shipped config
def test_shipped_config_is_the_sd2_base_vae():
    config = sd2_vae_config()
    assert config["_class_name"] == "AutoencoderKL"
    assert config["latent_channels"] == 4 and config["in_channels"] == 3
    with torch.device("meta"):  # the full-size architecture without allocating it
        full = AutoencoderKL.from_config(config)
    assert sum(p.numel() for p in full.parameters()) == 83_653_863  # the SD 1.x/2.x KL-f8 VAE


def test_interface_and_shapes(tiny, images):
    assert isinstance(tiny, Autoencoder)
    assert (tiny.latent_channels, tiny.downsampling) == (4, 8)
    assert tiny.latent_scale == pytest.approx(1 / 50)
    assert tiny.device == torch.device("cpu") and tiny.dtype == torch.float32

    z = tiny.encode(images)
    assert z.shape == (2, 4, 8, 8) and z.dtype == torch.float32
    x = tiny.decode(z)
    assert x.shape == (2, 3, 64, 64)

    wide = torch.rand(1, 3, 64, 128)
    assert tiny.encode(wide).shape == (1, 4, 8, 16)
    assert tiny.decode(torch.zeros(1, 4, 3, 5)).shape == (1, 3, 24, 40)


def test_other_level_counts_change_downsampling():
    overrides = {**TINY_VAE_OVERRIDES, "block_out_channels": [8, 8, 16]}
    three = SD2VAE.from_config(seed=0, device="cpu", **overrides)
    assert three.downsampling == 4
    assert three.encode(torch.rand(1, 3, 32, 32)).shape == (1, 4, 8, 8)


# ------------------------------------------------------------------------------- reference semantics
def test_latents_are_the_raw_vae_posterior_mean_over_50(tiny, images):
    # the reference feeds [0, 1] images straight into the VAE and divides its latent by 50
    expected = tiny.vae.encode(images).latent_dist.mode() / 50
    assert torch.equal(tiny.encode(images), expected)
    assert torch.equal(tiny.encode_raw(images), tiny.vae.encode(images).latent_dist.mean)


def test_decode_is_clip_of_vae_decode_of_latents_times_50(tiny):
    z = 2.0 * torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    raw = tiny.vae.decode(z * 50).sample
    assert raw.min() < 0 or raw.max() > 1  # so that the clipping below is really exercised
    out = tiny.decode(z)
    assert torch.equal(out, raw.clamp(0, 1))
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(tiny.decode_raw(z * 50), raw)


def test_encode_is_deterministic_and_sampling_follows_diffusers(tiny, images):
    assert torch.equal(tiny.encode(images), tiny.encode(images))

    a = tiny.encode(images, sample=True, generator=torch.Generator().manual_seed(7))
    b = tiny.encode(images, sample=True, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, tiny.encode(images))
    expected = tiny.vae.encode(images).latent_dist.sample(generator=torch.Generator().manual_seed(7)) / 50
    torch.testing.assert_close(a, expected, rtol=0, atol=0)


def test_batch_size_bounds_memory_without_changing_results(tiny, images):
    batch = torch.cat([images, images.flip(-1)])
    z = tiny.encode(batch)
    torch.testing.assert_close(tiny.encode(batch, batch_size=1), z, rtol=0, atol=1e-6)
    # batched convolutions may pick other kernels: equal up to float rounding
    torch.testing.assert_close(tiny.decode(z, batch_size=3), tiny.decode(z), rtol=0, atol=1e-5)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    torch.testing.assert_close(
        tiny.encode(batch, sample=True, generator=g(), batch_size=1),
        tiny.encode(batch, sample=True, generator=g()), rtol=0, atol=1e-6,
    )
    with pytest.raises(ValueError, match="batch_size"):
        tiny.encode(batch, batch_size=0)


def test_inputs_are_checked(tiny):
    with pytest.raises(TypeError, match="floating point"):
        tiny.encode(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny.encode(torch.rand(1, 4, 64, 64))
    with pytest.raises(ValueError, match="multiples of 8"):
        tiny.encode(torch.rand(1, 3, 60, 64))
    with pytest.raises(ValueError, match=r"\(B, 4, h, w\)"):
        tiny.decode(torch.rand(1, 3, 8, 8))
    with pytest.raises(TypeError):
        tiny.decode(torch.rand(1, 4, 8, 8).numpy())


def test_to_checks_device_and_precision(tiny):
    assert tiny.to("cpu", "fp32") is tiny
    with pytest.raises(ValueError, match="CPU"):
        tiny.to("cpu", torch.float16)
    assert tiny.dtype == torch.float32  # a refused cast leaves the model as it was


def test_from_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown AutoencoderKL config keys"):
        SD2VAE.from_config(device="cpu", block_out_channel=[8, 8, 16, 16])


def test_seeded_initialisation_is_reproducible_and_leaves_global_rng(tiny, images):
    state = torch.random.get_rng_state()
    again = SD2VAE.from_config(seed=0, device="cpu", **TINY_VAE_OVERRIDES)
    assert torch.equal(torch.random.get_rng_state(), state)
    _assert_same_model(tiny, again, images)


# --------------------------------------------------------------------------------------- local folders
def test_from_pretrained_local_folder_round_trip(tiny, images, tmp_path):
    folder = tiny.save_pretrained(tmp_path / "vae")
    assert {p.name for p in folder.iterdir()} == {"config.json", "diffusion_pytorch_model.safetensors"}
    loaded = SD2VAE.from_pretrained(folder, device="cpu")
    _assert_same_model(tiny, loaded, images)
    assert loaded.dtype == torch.float32 and not any(p.requires_grad for p in loaded.vae.parameters())


def test_from_pretrained_pipeline_folder_uses_its_vae_subfolder(tiny, images, tmp_path):
    tiny.save_pretrained(tmp_path / "pipeline" / "vae")
    (tmp_path / "pipeline" / "model_index.json").write_text("{}")
    _assert_same_model(tiny, SD2VAE.from_pretrained(str(tmp_path / "pipeline"), device="cpu"), images)


def test_weights_without_config_take_the_given_architecture(tiny, images, tmp_path):
    folder = tiny.save_pretrained(tmp_path / "weights-only")
    (folder / "config.json").unlink()
    config = dict(tiny.vae.config)
    _assert_same_model(tiny, SD2VAE.from_pretrained(folder, device="cpu", config=config), images)
    single = folder / "diffusion_pytorch_model.safetensors"
    _assert_same_model(tiny, SD2VAE.from_pretrained(single, device="cpu", config=config), images)


def test_legacy_attention_key_names_of_the_released_sd2_weights_load(tiny, images, tmp_path):
    # the SD2-base VAE on the Hub predates diffusers' attention rename: query/key/value/proj_attn
    folder = tiny.save_pretrained(tmp_path / "legacy")
    weights = folder / "diffusion_pytorch_model.safetensors"
    renames = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    state = load_file(weights)
    legacy = {}
    for key, value in state.items():
        for new, old in renames.items():
            key = key.replace(new, old)
        legacy[key] = value
    assert any(".query." in k for k in legacy)
    save_file(legacy, weights)
    _assert_same_model(tiny, SD2VAE.from_pretrained(folder, device="cpu"), images)


def test_pickled_weights_are_refused(tiny, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(tiny.save_pretrained(tmp_path / "ok") / "config.json", folder / "config.json")
    (folder / "diffusion_pytorch_model.bin").write_bytes(b"not even read")
    with pytest.raises(ValueError, match="pickled weights"):
        SD2VAE.from_pretrained(folder, device="cpu")
    ckpt = tmp_path / "vae.ckpt"
    ckpt.write_bytes(b"not even read")
    with pytest.raises(ValueError, match="pickled weights"):
        SD2VAE.from_pretrained(ckpt, device="cpu")


def test_missing_local_source_is_a_clear_error(tmp_path):
    with pytest.raises(VAEWeightsNotFoundError, match="does not exist"):
        SD2VAE.from_pretrained(tmp_path / "nowhere", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VAEWeightsNotFoundError, match="diffusion_pytorch_model.safetensors"):
        SD2VAE.from_pretrained(tmp_path / "empty", device="cpu")


# ----------------------------------------------------------------------------- Hugging Face cache
WEIGHT_FILES = ("config.json", "diffusion_pytorch_model.safetensors")


def _fake_hub_cache(cache: Path, vae_folder: Path, *, files=WEIGHT_FILES, commit: str = COMMIT) -> Path:
    """Lay files out as huggingface_hub does.

    ``models--<org>--<name>/blobs/<hash>``, ``snapshots/<commit>/vae/<file>`` -> blob, ``refs/main``.
    """
    repo = cache / ("models--" + SD2_REPO_ID.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit / "vae"
    snapshot.mkdir(parents=True, exist_ok=True)
    for name in files:
        data = (vae_folder / name).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        try:
            (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
        except OSError:  # no symlinks (Windows): the hub then stores copies
            shutil.copyfile(blob, snapshot / name)
    return repo


def test_from_pretrained_finds_the_hub_cache_offline(tiny, images, tmp_path):
    _fake_hub_cache(tmp_path / "hub", tiny.save_pretrained(tmp_path / "vae"))
    loaded = SD2VAE.from_pretrained(cache_dir=tmp_path / "hub", device="cpu")
    _assert_same_model(tiny, loaded, images)
    by_commit = SD2VAE.from_pretrained(cache_dir=tmp_path / "hub", revision=COMMIT, device="cpu")
    _assert_same_model(tiny, by_commit, images)


def test_nothing_cached_is_a_clear_error(tmp_path):
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    with pytest.raises(VAEWeightsNotFoundError) as info:
        SD2VAE.from_pretrained(cache_dir=cache, device="cpu")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert SD2_REPO_ID in message and "'vae'" in message
    assert str(cache) in message
    assert "--allow-download" in message and "from_pretrained(allow_download=True)" in message
    assert "local" in message and "config.json" in message
    error = info.value
    assert (error.repo_id, error.subfolder, error.cache_dir) == (SD2_REPO_ID, "vae", str(cache))
    assert not any(cache.iterdir())  # looked, wrote nothing


def test_partially_cached_weights_name_the_missing_file(tiny, tmp_path):
    _fake_hub_cache(tmp_path / "hub", tiny.save_pretrained(tmp_path / "vae"), files=("config.json",))
    with pytest.raises(VAEWeightsNotFoundError, match="diffusion_pytorch_model.safetensors is not cached"):
        SD2VAE.from_pretrained(cache_dir=tmp_path / "hub", device="cpu")


def test_allowed_download_while_offline_says_so(tmp_path):
    with pytest.raises(VAEWeightsNotFoundError, match="HF_HUB_OFFLINE"):
        SD2VAE.from_pretrained(cache_dir=tmp_path / "cache", allow_download=True, device="cpu")


def test_missing_diffusers_says_which_extra_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # what `import diffusers` sees when it is absent
    with pytest.raises(ImportError, match=r"pip install napari-diffinfinite\[sd2vae\]"):
        SD2VAE.from_config(device="cpu", **TINY_VAE_OVERRIDES)
    with pytest.raises(ImportError, match=r"pip install napari-diffinfinite\[sd2vae\]"):
        SD2VAE.from_pretrained(tmp_path, device="cpu")
