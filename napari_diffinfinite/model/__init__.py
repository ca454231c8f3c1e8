"""Networks and their maths: reference-exact DiffInfinite UNets, diffusion steps, checkpoint loading.

No napari, no Qt, no files other than weights.
"""

from .autoencoder import (
    SD2_LATENT_DIVISOR,
    SD2_REPO_ID,
    SD2VAE,
    TINY_VAE_OVERRIDES,
    Autoencoder,
    VAEWeightsNotFoundError,
    sd2_vae_config,
)
from .checkpoint import RELEASED_CONFIGS, CheckpointError, load_diffinfinite_checkpoint, save_unet
from .compact_autoencoder import CompactAutoencoder
from .device import DeviceUnavailableError, select_device, select_dtype
from .diffusion import (
    SAMPLERS,
    Schedule,
    check_sampler,
    cosine_schedule,
    ddim_step,
    guided_scale,
    multilabel_ddim_step,
    multistep_weight,
    predict_noise_from_start,
    predict_start_from_noise,
    predictions,
    q_sample,
    time_pairs,
)
from .unet import ImageUnet, MaskUnet, guide

__all__ = [
    "RELEASED_CONFIGS",
    "SAMPLERS",
    "SD2VAE",
    "SD2_LATENT_DIVISOR",
    "SD2_REPO_ID",
    "TINY_VAE_OVERRIDES",
    "Autoencoder",
    "CheckpointError",
    "CompactAutoencoder",
    "DeviceUnavailableError",
    "ImageUnet",
    "MaskUnet",
    "Schedule",
    "VAEWeightsNotFoundError",
    "check_sampler",
    "cosine_schedule",
    "ddim_step",
    "guide",
    "guided_scale",
    "load_diffinfinite_checkpoint",
    "multilabel_ddim_step",
    "multistep_weight",
    "predict_noise_from_start",
    "predict_start_from_noise",
    "predictions",
    "q_sample",
    "save_unet",
    "sd2_vae_config",
    "select_device",
    "select_dtype",
    "time_pairs",
]
