"""Networks and their maths: reference-exact DiffInfinite UNets, diffusion steps, checkpoint loading.

No napari, no Qt, no files other than weights.
"""

from .checkpoint import RELEASED_CONFIGS, CheckpointError, load_diffinfinite_checkpoint, save_unet
from .diffusion import (
    Schedule,
    cosine_schedule,
    ddim_step,
    guided_scale,
    inpaint,
    multilabel_ddim_step,
    predict_noise_from_start,
    predict_start_from_noise,
    predictions,
    q_sample,
    time_pairs,
)
from .unet import ImageUnet, MaskUnet, guide

__all__ = [
    "CheckpointError",
    "ImageUnet",
    "MaskUnet",
    "RELEASED_CONFIGS",
    "Schedule",
    "cosine_schedule",
    "ddim_step",
    "guide",
    "guided_scale",
    "inpaint",
    "load_diffinfinite_checkpoint",
    "multilabel_ddim_step",
    "predict_noise_from_start",
    "predict_start_from_noise",
    "predictions",
    "q_sample",
    "save_unet",
    "time_pairs",
]
