"""The Python API: load a model bundle, generate masks and tissue of any size (no napari, no Qt).

>>> from napari_diffinfinite import load_model, generate
>>> model = load_model("embedded")
>>> result = generate(model, size=(2048, 2048), seed=0)        # generates the mask, then the tissue
>>> result.image.shape, result.mask.shape                      # (2048, 2048, 3) uint8, (2048, 2048) labels

Generated images are synthetic, for research and demos, not for diagnosis.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .label_grid import labels_at_cell_centres
from .model import (
    CompactAutoencoder,
    ImageUnet,
    MaskUnet,
    check_sampler,
    cosine_schedule,
    load_diffinfinite_checkpoint,
    select_device,
)
from .model.device import for_inference
from .model_manifest import MANIFEST_DEFAULTS, embedded_folder
from .sampling.blocks import block_seed, generate_latents
from .sampling.decode import decode_full
from .sampling.masks import (
    CONTEXT_NAMES,
    SD2MaskCodec,
    SimplexMaskCodec,
    clean_mask,
    labels_at_scale,
    validate_labels,
)
from .sampling.options import SamplingOptions
from .sampling.random_patch import SamplingStats, sample_region
from .sampling.steppers import MaskStepper

#: progress(stage, done, total) with stage "mask", "tissue" or "decode".
Progress = Callable[[str, int, int], None]

CONTEXT_DISPLAY = {0: "adenocarcinoma", 1: "squamous cell carcinoma"}


@dataclass
class DiffInfiniteModel:
    """Everything generation needs: the two denoisers, the autoencoder, the mask latent codec and settings.

    ``mask_px`` is image pixels per mask pixel (the reference's masks are 128 px per 512-px patch: 4);
    ``window``/``mask_window`` are the latent windows the networks were trained on.
    """

    name: str
    image_unet: ImageUnet
    autoencoder: object
    mask_unet: MaskUnet | None
    mask_codec: object | None
    num_classes: int
    contexts: list[str]
    default_steps: int = 50
    default_omega: float = 3.0  # the image model's guidance
    default_mask_omega: float = 3.0  # the mask model's guidance (a separate network, tuned separately)
    sampler: str = "ddim"  # the image model's sampler (model.diffusion.SAMPLERS; "ddim" is the reference's)
    window: int = 64
    mask_window: int = 16
    mask_px: int = 4
    pixel_size_um: float = 0.5
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def downsampling(self) -> int:
        return int(self.autoencoder.downsampling)

    @property
    def latent_channels(self) -> int:
        return int(self.image_unet.channels)

    @property
    def mask_latent_px(self) -> int:
        """Image pixels per mask-latent pixel."""
        return self.mask_px * int(self.mask_codec.cells_per_latent)

    def context_id(self, context: int | str) -> int:
        """The mask model's id for a context prompt; refuses contexts this model was not trained on."""
        if isinstance(context, str):
            key = " ".join(context.strip().lower().split())
            if key not in CONTEXT_NAMES:
                raise ValueError(
                    f"unknown context {context!r}; {self.name} supports: {', '.join(self.contexts)}"
                )
            value = CONTEXT_NAMES[key]
        else:
            value = int(context)
        if not 0 <= value < len(self.contexts):
            raise ValueError(
                f"model {self.name!r} does not support the context {context!r}: it was trained on "
                f"{', '.join(self.contexts)} only; choose one of those, or load a model trained on it"
            )
        return value


def load_model(
    spec: str | Path = "embedded",
    *,
    device=None,
    image_checkpoint=None,
    mask_checkpoint=None,
    num_classes: int = 5,
    vae=None,
    allow_download: bool = False,
) -> DiffInfiniteModel:
    """A model bundle by name or folder.

    - ``"embedded"``: the small model shipped with the package (CPU-interactive).
    - a folder with a ``model.json`` (the layout :func:`napari_diffinfinite.training` writes).
    - ``"diffinfinite"``: the released DiffInfinite checkpoints (``image_checkpoint``, ``mask_checkpoint``: the
      ``model-*.pt`` files; ``num_classes`` 5 or 10) with the SD2 VAE (``vae``: a local folder, or the Hugging Face
      cache; downloaded only with ``allow_download=True``).
    """
    device = select_device(device)
    if str(spec) == "diffinfinite":
        return _load_released(image_checkpoint, mask_checkpoint, num_classes, vae, allow_download, device)
    folder = embedded_folder() if str(spec) == "embedded" else Path(spec)
    manifest = folder / "model.json"
    if not manifest.is_file():
        if str(spec) == "embedded":
            raise FileNotFoundError(
                f"the embedded model is not in this installation ({manifest} is missing). It is trained with "
                "`diffinfinite train autoencoder|image|mask` (see resources/models/embedded/MODEL_CARD.md); "
                "meanwhile pass a model folder or the released DiffInfinite checkpoints"
            )
        raise FileNotFoundError(f"{folder} is not a model folder: it has no model.json")
    meta = json.loads(manifest.read_text())
    if "image" not in meta:
        raise FileNotFoundError(
            f"{folder} has no image model yet (model.json lists no 'image'); train and bundle it"
        )
    ae_meta = meta["autoencoder"]
    if ae_meta.get("type") != "compact":
        raise ValueError(f"{manifest}: unsupported autoencoder type {ae_meta.get('type')!r}")
    autoencoder = CompactAutoencoder.load(folder / ae_meta["file"], device=device)
    image = for_inference(load_diffinfinite_checkpoint(folder / meta["image"]["file"], "image"), device)
    mask_unet = codec = None
    if meta.get("mask"):
        mask_unet = for_inference(load_diffinfinite_checkpoint(folder / meta["mask"]["file"], "mask"), device)
        c = meta["mask"]["codec"]
        codec = SimplexMaskCodec(c["num_labels"], c["cells_per_latent"])
    d = MANIFEST_DEFAULTS
    return DiffInfiniteModel(
        name=meta.get("name", folder.name),
        image_unet=image,
        autoencoder=autoencoder,
        mask_unet=mask_unet,
        mask_codec=codec,
        num_classes=image.num_classes,
        contexts=meta.get("contexts", ["adenocarcinoma"]),
        default_steps=meta.get("default_steps", d["default_steps"]),
        default_omega=meta.get("default_omega", d["default_omega"]),
        default_mask_omega=meta.get("mask", {}).get("omega", meta.get("default_omega", d["default_omega"])),
        sampler=check_sampler(meta["image"].get("sampler", d["sampler"])),
        window=meta["image"].get("window", d["window"]),
        mask_window=meta.get("mask", {}).get("window", 32),
        mask_px=meta.get("mask", {}).get("mask_px", 1),
        pixel_size_um=meta.get("pixel_size_um", d["pixel_size_um"]),
        device=device,
    )


def _load_released(image_checkpoint, mask_checkpoint, num_classes, vae, allow_download, device):
    from .model import SD2VAE

    if image_checkpoint is None:
        raise ValueError("the released DiffInfinite model needs image_checkpoint (image_gen*/model-10.pt)")
    image = for_inference(
        load_diffinfinite_checkpoint(image_checkpoint, "image", num_classes=num_classes), device
    )
    autoencoder = SD2VAE.from_pretrained(vae, allow_download=allow_download, device=device)
    mask_unet = codec = None
    if mask_checkpoint is not None:
        mask_unet = for_inference(load_diffinfinite_checkpoint(mask_checkpoint, "mask"), device)
        codec = SD2MaskCodec(autoencoder, image.num_classes)
    return DiffInfiniteModel(
        name=f"diffinfinite-{image.num_classes}",
        image_unet=image,
        autoencoder=autoencoder,
        mask_unet=mask_unet,
        mask_codec=codec,
        num_classes=image.num_classes,
        contexts=["adenocarcinoma", "squamous cell carcinoma"],
        default_steps=50,
        window=64,
        mask_window=16,
        mask_px=4,
        device=device,
    )


@dataclass
class GenerationResult:
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) label ids
    settings: dict
    stats: SamplingStats
    seconds: dict


def _mask_generator_seed(seed: int) -> int:
    # a stream of its own, apart from the per-block tissue seeds
    return block_seed(seed, 2**31 - 1, 2**31 - 1)


@torch.no_grad()
def generate_mask(
    model: DiffInfiniteModel,
    size: tuple[int, int],
    *,
    context="adenocarcinoma",
    seed: int = 0,
    steps: int | None = None,
    omega: float | None = None,
    mode: str = "batched",
    progress: Progress | None = None,
    cancel=None,
) -> np.ndarray:
    """A class mask (H, W) at image resolution for a context prompt, by random-patch sampling of the mask model.

    Labels are decoded correctly (not squashed) and cleaned: class borders become bands of label 0. ``omega``:
    the mask model's guidance (default: the model's ``default_mask_omega``).
    """
    if model.mask_unet is None:
        raise ValueError(f"model {model.name!r} has no mask model; paint or load a mask instead")
    ctx = model.context_id(context)
    h, w = size
    f = model.mask_latent_px
    shape = (model.mask_codec.latent_channels, -(-h // f), -(-w // f))
    stepper = MaskStepper(
        model.mask_unet, cosine_schedule(), ctx, (model.default_mask_omega if omega is None else omega) + 1
    )
    latents = sample_region(
        stepper,
        shape,
        None,
        schedule=stepper.schedule,
        steps=steps or model.default_steps,
        generator=torch.Generator().manual_seed(_mask_generator_seed(seed)),
        mode=mode,
        window=model.mask_window,
        progress=None if progress is None else (lambda d, t: progress("mask", d, t)),
        cancel=cancel,
        device=model.device,
    )
    labels = model.mask_codec.decode(latents[None].to(model.device))[0].cpu().numpy()
    labels = clean_mask(labels, model.num_classes, factor=model.mask_px)
    return labels[:h, :w]


@torch.no_grad()
def generate(
    model: DiffInfiniteModel,
    *,
    mask=None,
    size: tuple[int, int] | None = None,
    mask_scale: int | None = None,
    context="adenocarcinoma",
    omega: float | None = None,
    mask_omega: float | None = None,
    steps: int | None = None,
    seed: int = 0,
    mode: str = "batched",
    block: int = 512,
    halo: int = 16,
    window: int | None = None,
    sampler: str | None = None,
    max_batch: int = 64,
    progress: Progress | None = None,
    cancel=None,
) -> GenerationResult:
    """Synthetic H&E for a painted mask (``mask``, label ids, at image resolution or coarser by ``mask_scale``)
    or, without a mask, for a mask generated for ``context`` at ``size`` (H, W) pixels.

    The canvas is sampled in blocks of ``block`` latents (one block up to 4096 px) with per-block seeds, then
    decoded seamlessly. ``window``: the sampling window in latents (default: the model's training window).
    ``omega`` guides the image model, ``mask_omega`` the mask model (defaults: the model's). ``sampler``: the
    image model's (``model.diffusion.SAMPLERS``; default: the model's).
    Returns the image (H, W, 3) uint8 and the mask (H, W).
    """
    timings = {}
    t0 = time.perf_counter()
    options = SamplingOptions.for_model(
        model,
        steps=steps or None,
        omega=omega,
        sampler=sampler,
        mode=mode,
        window=window,
        halo=halo,
        max_batch=max_batch,
    )
    steps = options.steps
    if mask is None:
        if size is None:
            raise ValueError("give a mask, or a size (H, W) to generate one")
        mask_omega = model.default_mask_omega if mask_omega is None else float(mask_omega)
        labels = generate_mask(
            model,
            size,
            context=context,
            seed=seed,
            steps=steps,
            omega=mask_omega,
            mode=mode,
            progress=progress,
            cancel=cancel,
        )
        timings["mask_s"] = time.perf_counter() - t0
    else:
        labels = validate_labels(np.asarray(mask), model.num_classes)
        if mask_scale not in (None, 1) or (size is not None and tuple(size) != labels.shape):
            labels = labels_at_scale(labels, mask_scale, size)
    h, w = labels.shape
    d = model.downsampling
    latent_labels = torch.from_numpy(np.ascontiguousarray(labels_at_cell_centres(labels, d)))
    lh, lw = latent_labels.shape
    stepper = options.stepper(model.image_unet)
    stats = SamplingStats()
    t1 = time.perf_counter()
    latents = generate_latents(
        stepper,
        (model.image_unet.channels, lh, lw),
        latent_labels,
        seed=seed,
        options=options,
        block=block,
        progress=None if progress is None else (lambda done, total: progress("tissue", done, total)),
        cancel=cancel,
        stats=stats,
        device=model.device,
    )
    stats.extra["unet_rows"] = stepper.rows_evaluated
    timings["tissue_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    if progress is not None:
        progress("decode", 0, 1)
    pixels = decode_full(model.autoencoder, latents[None].to(model.device), out_device="cpu")[0]
    if progress is not None:
        progress("decode", 1, 1)
    timings["decode_s"] = time.perf_counter() - t2
    image = (pixels[:, :h, :w].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    settings = {
        "model": model.name,
        "seed": seed,
        "omega": options.omega,
        "steps": steps,
        "sampler": options.sampler,
        "mode": mode,
        "block": block,
        "mask_omega": mask_omega if mask is None else None,
        "context": CONTEXT_DISPLAY.get(model.context_id(context), str(context)) if mask is None else None,
        "mask": "generated" if mask is None else "given",
        "size": [h, w],
        "pixel_size_um": model.pixel_size_um,
        "version": __version__,
    }
    timings["total_s"] = time.perf_counter() - t0
    return GenerationResult(image=image, mask=labels, settings=settings, stats=stats, seconds=timings)
