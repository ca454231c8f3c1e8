"""Autoencoders between RGB pixels and the latent space the diffusion models work in.

One small interface, :class:`Autoencoder`, and its implementation for the Stable Diffusion 2 (base) VAE
that DiffInfinite's released models were trained with, :class:`SD2VAE`.

DiffInfinite's conventions, which :class:`SD2VAE` follows exactly:

- images go into the VAE as they are, float RGB in [0, 1] (no mapping to [-1, 1]);
- the diffusion model's latent is the VAE's latent divided by 50 (``latent_scale = 1/50``; not the
  0.18215 ``scaling_factor`` of the Stable Diffusion pipelines);
- decoding multiplies by 50 again, runs the VAE decoder and clips the result to [0, 1].

Weights are found offline first: a local folder, or the local Hugging Face cache. Nothing is downloaded
unless the caller asks for it (``allow_download=True``). diffusers is an optional dependency (extra
``sd2vae``) and is imported only when an :class:`SD2VAE` is built.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from napari_diffinfinite._resources import resource_path

from .device import select_device, select_dtype

__all__ = [
    "SD2VAE",
    "SD2_LATENT_DIVISOR",
    "SD2_REPO_ID",
    "SD2_SUBFOLDER",
    "TINY_VAE_OVERRIDES",
    "Autoencoder",
    "VAEWeightsNotFoundError",
    "sd2_vae_config",
]

SD2_REPO_ID = "stabilityai/stable-diffusion-2-base"
SD2_SUBFOLDER = "vae"
#: DiffInfinite's model latent = VAE latent / 50.
SD2_LATENT_DIVISOR = 50.0

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
_PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")

#: Overrides of the shipped SD2 config for a tiny, fast, randomly initialised VAE (tests, examples):
#: still 4 levels, so the downsampling factor stays 8 and the latent has 4 channels.
TINY_VAE_OVERRIDES: dict[str, Any] = {
    "block_out_channels": [8, 8, 16, 16],
    "layers_per_block": 1,
    "norm_num_groups": 4,
}

_INSTALL_HINT = "pip install napari-diffinfinite[sd2vae]"


@runtime_checkable
class Autoencoder(Protocol):
    """What the samplers and decoders need from an autoencoder.

    ``encode`` takes float RGB images ``(B, 3, H, W)`` in [0, 1] (``H`` and ``W`` multiples of
    ``downsampling``) and returns the diffusion model's latents ``(B, latent_channels, H/d, W/d)``, already
    multiplied by ``latent_scale``. ``decode`` inverts that and returns images clipped to [0, 1]. Both run
    without gradients, on the autoencoder's ``device`` and return tensors in its ``dtype``.
    """

    latent_channels: int
    """Channels of the latent."""
    downsampling: int
    """Spatial factor between pixels and latents (8 for the SD2 VAE)."""
    latent_scale: float
    """Factor from the autoencoder's raw latent to the diffusion model's latent (1/50 for DiffInfinite)."""

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def to(self, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> Any:
        """Move to ``device`` / cast to ``dtype`` in place (``None`` keeps the current one); returns self."""
        ...

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


class VAEWeightsNotFoundError(FileNotFoundError):
    """The VAE weights are neither in the given folder nor in the local Hugging Face cache.

    For the Hugging Face cache, attributes ``repo_id``, ``subfolder``, ``revision`` and ``cache_dir`` say
    where they were looked for (``None`` for a local source).
    """

    def __init__(
        self,
        message: str,
        *,
        repo_id: str | None = None,
        subfolder: str | None = None,
        revision: str | None = None,
        cache_dir: str | None = None,
    ):
        super().__init__(message)
        self.repo_id = repo_id
        self.subfolder = subfolder
        self.revision = revision
        self.cache_dir = cache_dir


def sd2_vae_config() -> dict[str, Any]:
    """The shipped diffusers ``AutoencoderKL`` config of the SD2-base VAE (a fresh copy)."""
    with open(resource_path("vae", "sd2-base", CONFIG_NAME), encoding="utf-8") as f:
        return json.load(f)


def _import_autoencoder_kl():
    try:
        from diffusers import AutoencoderKL
    except ImportError as error:
        raise ImportError(
            f"The SD2 VAE needs the optional dependency diffusers ({error}); install it with: {_INSTALL_HINT}"
        ) from error
    return AutoencoderKL


def _import_hf_hub():
    try:
        import huggingface_hub
        from huggingface_hub import hf_hub_download
    except ImportError as error:
        raise ImportError(
            f"Loading the SD2 VAE from the Hugging Face cache needs huggingface_hub ({error}); install it "
            f"with: {_INSTALL_HINT}"
        ) from error
    return huggingface_hub, hf_hub_download


def _default_hf_cache() -> str:
    huggingface_hub, _ = _import_hf_hub()
    return str(huggingface_hub.constants.HF_HUB_CACHE)


def _hf_offline() -> bool:
    huggingface_hub, _ = _import_hf_hub()
    return bool(getattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False))


def _from_pretrained_kwargs() -> dict[str, Any]:
    # Only safetensors (no pickles); low_cpu_mem_usage needs accelerate, and diffusers warns without it.
    return {
        "use_safetensors": True,
        "low_cpu_mem_usage": importlib.util.find_spec("accelerate") is not None,
    }


def _chunks(x: torch.Tensor, batch_size: int | None):
    if batch_size is None or batch_size >= x.shape[0]:
        return [x]
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return list(torch.split(x, batch_size, dim=0))


class SD2VAE:
    """The Stable Diffusion 2 (base) VAE with DiffInfinite's conventions (see the module docstring).

    Build it with :meth:`from_pretrained` (real weights: local folder or Hugging Face cache) or
    :meth:`from_config` (random weights, e.g. a tiny one for tests). ``vae`` is the wrapped diffusers
    ``AutoencoderKL``, kept in eval mode with gradients off.
    """

    def __init__(self, vae: Any, *, latent_divisor: float = SD2_LATENT_DIVISOR):
        config = vae.config
        self.vae = vae.eval().requires_grad_(False)
        self.latent_divisor = float(latent_divisor)
        self.latent_channels = int(config.latent_channels)
        self.in_channels = int(config.in_channels)
        self.downsampling = 2 ** (len(config.block_out_channels) - 1)
        self.latent_scale = 1.0 / self.latent_divisor

    def __repr__(self) -> str:
        return (
            f"SD2VAE(latent_channels={self.latent_channels}, downsampling={self.downsampling}, "
            f"latent_scale=1/{self.latent_divisor:g}, "
            f"block_out_channels={list(self.vae.config.block_out_channels)}, "
            f"device={self.device}, dtype={self.dtype})"
        )

    # ------------------------------------------------------------------ device and precision
    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    def to(self, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> SD2VAE:
        """Move to ``device`` and cast to ``dtype`` in place; ``None`` keeps the current one.

        Both are checked by :func:`select_device` / :func:`select_dtype` (e.g. half precision on the CPU is
        refused). Returns ``self``.
        """
        target = self.device if device is None else select_device(device)
        target_dtype = select_dtype(target, self.dtype if dtype is None else dtype)
        # torch's own Module.to: diffusers 0.42's override warns about "modules that should be kept in
        # float32: []" on every cast (its check is always true); its extra checks concern quantised or
        # group-offloaded models, which this wrapper never holds.
        torch.nn.Module.to(self.vae, device=target, dtype=target_dtype)
        return self

    # ------------------------------------------------------------------ checks
    def _check_images(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, not {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"images must have shape (B, {self.in_channels}, H, W), got {tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise TypeError(
                f"images must be floating point in [0, 1], got {images.dtype} "
                "(for uint8 use images.float() / 255)"
            )
        h, w = images.shape[-2:]
        if h % self.downsampling or w % self.downsampling:
            raise ValueError(f"image height and width must be multiples of {self.downsampling}, got {h}x{w}")

    def _check_latents(self, latents: torch.Tensor) -> None:
        if not isinstance(latents, torch.Tensor):
            raise TypeError(f"latents must be a torch.Tensor, not {type(latents).__name__}")
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"latents must have shape (B, {self.latent_channels}, h, w), got {tuple(latents.shape)}"
            )
        if not latents.is_floating_point():
            raise TypeError(f"latents must be floating point, got {latents.dtype}")

    # ------------------------------------------------------------------ encode / decode
    @torch.no_grad()
    def encode_raw(
        self,
        images: torch.Tensor,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """The VAE's own latent of ``images`` as given (no pixel mapping, no latent scaling).

        ``sample=False`` returns the posterior's mean (deterministic); ``sample=True`` draws
        ``mean + std * noise`` with ``generator`` exactly as diffusers' ``latent_dist.sample`` does, with the
        noise drawn for the whole batch at once (so ``batch_size`` does not change the result).
        ``batch_size`` encodes that many images at a time to bound memory.
        """
        self._check_images(images)
        x = images.to(device=self.device, dtype=self.dtype)
        means, stds = [], []
        for chunk in _chunks(x, batch_size):
            dist = self.vae.encode(chunk).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
        mean = torch.cat(means) if len(means) > 1 else means[0]
        if not sample:
            return mean.contiguous()
        from diffusers.utils.torch_utils import randn_tensor

        std = torch.cat(stds) if len(stds) > 1 else stds[0]
        noise = randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + std * noise

    @torch.no_grad()
    def decode_raw(self, raw_latents: torch.Tensor, *, batch_size: int | None = None) -> torch.Tensor:
        """The VAE decoder's output for the VAE's own latent (no latent scaling, no clipping)."""
        if not isinstance(raw_latents, torch.Tensor):
            raise TypeError(f"latents must be a torch.Tensor, not {type(raw_latents).__name__}")
        z = raw_latents.to(device=self.device, dtype=self.dtype)
        outs = [self.vae.decode(chunk).sample for chunk in _chunks(z, batch_size)]
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    def encode(
        self,
        images: torch.Tensor,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """Diffusion-model latents of float RGB ``images`` ``(B, 3, H, W)`` in [0, 1]: VAE latent / 50.

        Deterministic (the posterior mean) unless ``sample=True``; see :meth:`encode_raw`.
        """
        raw = self.encode_raw(images, sample=sample, generator=generator, batch_size=batch_size)
        return raw / self.latent_divisor

    def decode(self, latents: torch.Tensor, *, batch_size: int | None = None) -> torch.Tensor:
        """Images ``(B, 3, 8h, 8w)`` in [0, 1] from diffusion-model latents.

        ``clip(VAE.decode(latents * 50), 0, 1)``, as the reference decodes.
        """
        self._check_latents(latents)
        z = latents.to(device=self.device, dtype=self.dtype)
        return self.decode_raw(z * self.latent_divisor, batch_size=batch_size).clamp_(0.0, 1.0)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any] | None = None,
        *,
        seed: int | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        **overrides: Any,
    ) -> SD2VAE:
        """A randomly initialised VAE from ``config`` (default: the shipped SD2-base config) + ``overrides``.

        ``seed`` makes the initialisation reproducible without touching the global RNG. If
        ``block_out_channels`` gets a different number of levels, the (uniform) block types follow it.
        A tiny VAE for tests: ``SD2VAE.from_config(seed=0, device="cpu", **TINY_VAE_OVERRIDES)``.
        """
        AutoencoderKL = _import_autoencoder_kl()
        cfg = dict(sd2_vae_config() if config is None else config)
        known = set(inspect.signature(AutoencoderKL.__init__).parameters) - {"self"}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown AutoencoderKL config keys {unknown}; known: {sorted(known)}")
        cfg.update(overrides)
        levels = len(cfg.get("block_out_channels", ()))
        for key in ("down_block_types", "up_block_types"):
            types = list(cfg.get(key, ()))
            if key not in overrides and types and len(types) != levels:
                if len(set(types)) != 1:
                    raise ValueError(f"{key} has {len(types)} levels but block_out_channels has {levels}")
                cfg[key] = types[:1] * levels
        cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}

        if seed is None:
            vae = AutoencoderKL.from_config(cfg)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                vae = AutoencoderKL.from_config(cfg)
        return cls(vae).to(select_device(device), dtype)

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike | None = None,
        *,
        allow_download: bool = False,
        cache_dir: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        repo_id: str = SD2_REPO_ID,
        subfolder: str | None = SD2_SUBFOLDER,
        revision: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> SD2VAE:
        """Load trained VAE weights, offline first.

        Args:
            source: where the weights are.

                - ``None``: the Hugging Face repo ``repo_id``
                  (default ``stabilityai/stable-diffusion-2-base``), ``subfolder`` (default ``vae``), from
                  the local Hugging Face cache; downloaded into that cache only if ``allow_download``.
                - a folder holding ``config.json`` and ``diffusion_pytorch_model.safetensors`` (what
                  ``save_pretrained`` writes), or a diffusers pipeline folder with such a ``vae/`` subfolder.
                - a folder or a ``.safetensors`` file with the weights but no ``config.json``: the
                  architecture comes from ``config`` (default: the shipped SD2-base config).

                Only safetensors are read; pickled weights (``.bin``, ``.ckpt``, ...) are refused.
            allow_download: allow fetching the two files (config and ~335 MB of weights) from the Hub.
            cache_dir: the Hugging Face cache folder (default: ``HF_HUB_CACHE`` / ``HF_HOME`` /
                ``~/.cache/huggingface/hub``).
            device, dtype: where and in which precision to run (see :func:`select_device`,
                :func:`select_dtype`; default: the best available device, float32).
            repo_id, subfolder, revision: which Hub repo / folder / revision ``source=None`` means.
            config: the architecture for weights without a ``config.json``.

        Raises:
            VAEWeightsNotFoundError: the weights are not there (the message says how to get them).
            ImportError: diffusers is not installed.
            ValueError: the files are there but unusable (pickled weights, a wrong kind of file).
        """
        AutoencoderKL = _import_autoencoder_kl()
        target = select_device(device)
        target_dtype = select_dtype(target, dtype)
        if source is None:
            folder = _resolve_hub_folder(repo_id, subfolder, revision, cache_dir, allow_download)
            vae = AutoencoderKL.from_pretrained(str(folder), **_from_pretrained_kwargs())
        else:
            vae = _load_local(AutoencoderKL, Path(source).expanduser(), config)
        return cls(vae).to(target, target_dtype)

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``diffusion_pytorch_model.safetensors`` into ``folder``; returns it."""
        folder = Path(folder)
        self.vae.save_pretrained(str(folder), safe_serialization=True)
        return folder


# ---------------------------------------------------------------------- loading helpers
def _not_found_message(
    repo_id: str, subfolder: str | None, revision: str | None, cache: str, detail: str
) -> str:
    where = f"{repo_id!r}" + (f", subfolder {subfolder!r}" if subfolder else "")
    where += f", revision {revision or 'main'!r}"
    return (
        f"The VAE weights are not available offline: {where} is not in the Hugging Face cache {cache!r} "
        f"({detail}).\n"
        "Download them once (config + about 335 MB of weights); afterwards everything runs offline:\n"
        "  - command line: add --allow-download to the diffinfinite command\n"
        "  - Python: SD2VAE.from_pretrained(allow_download=True)\n"
        "Or use a local copy: SD2VAE.from_pretrained('/path/to/vae') with a folder holding config.json and "
        f"{WEIGHTS_NAME} (or a diffusers pipeline folder with a vae/ subfolder). "
        "Set HF_HUB_CACHE or HF_HOME, or pass cache_dir, to use another cache."
    )


def _resolve_hub_folder(
    repo_id: str,
    subfolder: str | None,
    revision: str | None,
    cache_dir: str | os.PathLike | None,
    allow_download: bool,
) -> Path:
    """The snapshot folder holding config + safetensors weights of ``repo_id/subfolder`` in the HF cache."""
    _, hf_hub_download = _import_hf_hub()
    cache = str(cache_dir) if cache_dir is not None else _default_hf_cache()
    paths = []
    for filename in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            paths.append(
                hf_hub_download(
                    repo_id,
                    filename,
                    subfolder=subfolder or None,
                    revision=revision,
                    cache_dir=None if cache_dir is None else str(cache_dir),
                    local_files_only=not allow_download,
                )
            )
        except (FileNotFoundError, ConnectionError) as error:
            if not allow_download:
                detail = f"{filename} is not cached; downloading was not allowed"
            elif _hf_offline():
                detail = (
                    f"{filename} is not cached; downloading was allowed but HF_HUB_OFFLINE is set, "
                    "unset it to download"
                )
            else:
                detail = (
                    f"{filename} is not cached and downloading it failed: {type(error).__name__}: {error}"
                )
            raise VAEWeightsNotFoundError(
                _not_found_message(repo_id, subfolder, revision, cache, detail),
                repo_id=repo_id,
                subfolder=subfolder,
                revision=revision,
                cache_dir=cache,
            ) from error
    folders = {Path(p).parent for p in paths}
    if len(folders) != 1:  # cannot happen for one revision, but never mix files of two snapshots
        raise VAEWeightsNotFoundError(
            _not_found_message(
                repo_id, subfolder, revision, cache, f"files resolved to different folders {folders}"
            ),
            repo_id=repo_id,
            subfolder=subfolder,
            revision=revision,
            cache_dir=cache,
        )
    return folders.pop()


def _refuse_pickle(path: Path) -> ValueError:
    return ValueError(
        f"{str(path)!r} holds pickled weights, which can run arbitrary code when loaded; only "
        f"safetensors are read. Convert it once in a trusted environment (load it with diffusers, then "
        f"save_pretrained(..., safe_serialization=True)) or use the {WEIGHTS_NAME} of the original repo."
    )


def _load_local(AutoencoderKL, path: Path, config: Mapping[str, Any] | None):
    if not path.exists():
        hint = ""
        if re.fullmatch(r"[\w.-]+/[\w.-]+", str(path)):
            hint = f" (to load a Hugging Face repo, pass source=None, repo_id={str(path)!r})"
        raise VAEWeightsNotFoundError(f"VAE source {str(path)!r} does not exist{hint}")
    if path.is_file():
        if path.suffix == ".safetensors":
            return _load_weights_only(AutoencoderKL, path, config)
        if path.suffix in _PICKLE_WEIGHT_SUFFIXES:
            raise _refuse_pickle(path)
        raise ValueError(f"{str(path)!r} is not a VAE weights file; expected a folder or a .safetensors file")

    for folder in (path, path / "vae"):
        if (folder / WEIGHTS_NAME).is_file():
            if (folder / CONFIG_NAME).is_file():
                return AutoencoderKL.from_pretrained(str(folder), **_from_pretrained_kwargs())
            return _load_weights_only(AutoencoderKL, folder / WEIGHTS_NAME, config)
    for folder in (path, path / "vae"):
        if folder.is_dir():
            for candidate in sorted(folder.iterdir()):
                if (
                    candidate.name.startswith("diffusion_pytorch_model")
                    and candidate.suffix in _PICKLE_WEIGHT_SUFFIXES
                ):
                    raise _refuse_pickle(candidate)
    raise VAEWeightsNotFoundError(
        f"no VAE weights in {str(path)!r}: expected {WEIGHTS_NAME} (and {CONFIG_NAME}) in it or in its vae/ "
        "subfolder"
    )


def _load_weights_only(AutoencoderKL, weights: Path, config: Mapping[str, Any] | None):
    """Load a bare safetensors file with ``config`` (default: the shipped one) through diffusers' loader,
    which also renames the legacy attention keys of the original SD checkpoints."""
    cfg = dict(sd2_vae_config() if config is None else config)
    cfg.setdefault("_class_name", "AutoencoderKL")
    with tempfile.TemporaryDirectory(prefix="diffinfinite-vae-", ignore_cleanup_errors=True) as tmp:
        with open(os.path.join(tmp, CONFIG_NAME), "w", encoding="utf-8") as f:
            json.dump(cfg, f)
        link = os.path.join(tmp, WEIGHTS_NAME)
        try:
            os.symlink(weights.resolve(), link)
        except OSError:  # e.g. Windows without symlink rights
            shutil.copyfile(weights, link)
        return AutoencoderKL.from_pretrained(tmp, **_from_pretrained_kwargs())
