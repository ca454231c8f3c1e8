"""Diffusion maths as plain functions over a :class:`Schedule` (no modules, no state).

Conventions follow the reference: cosine schedule (s = 0.008, betas clipped at 0.999) computed in float64
and stored in float32, objective ``pred_noise``, DDIM with ``eta`` (1.0 in DiffInfinite), ``x_start``
clipped to [-1, 1] when sampling, integer times in 0..T-1 and time pairs ending in ``(t, -1)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..model_manifest import SAMPLER_LABELS


@dataclass(frozen=True)
class Schedule:
    """Per-time coefficients (float32, shape (T,)) of a diffusion process."""

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor

    @property
    def timesteps(self) -> int:
        return int(self.betas.shape[0])

    def to(self, device) -> Schedule:
        return Schedule(self.betas.to(device), self.alphas_cumprod.to(device))


def cosine_schedule(timesteps: int = 1000, s: float = 0.008) -> Schedule:
    """The improved-DDPM cosine schedule, as the reference builds it (float64 maths, float32 storage)."""
    x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
    f = torch.cos(((x / timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2
    f = f / f[0]
    betas = torch.clip(1 - (f[1:] / f[:-1]), 0, 0.999)
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return Schedule(betas.float(), alphas_cumprod.float())


def time_pairs(steps: int, timesteps: int = 1000) -> list[tuple[int, int]]:
    """``(t, t_next)`` pairs for ``steps`` DDIM steps, e.g. 50 -> (999, 979), ..., (19, -1)."""
    if not 1 <= steps <= timesteps:
        raise ValueError(f"steps must lie in 1..{timesteps}, got {steps}")
    times = torch.linspace(-1, timesteps - 1, steps + 1).int().tolist()[::-1]
    return list(zip(times[:-1], times[1:]))


def _at(values: torch.Tensor, t, like: torch.Tensor) -> torch.Tensor:
    """Coefficient(s) at time(s) ``t``, broadcastable against ``like`` (B, ...)."""
    t = torch.as_tensor(t, device=values.device, dtype=torch.long)
    out = values.to(like.device)[t.to(like.device)]
    return out.reshape(-1, *([1] * (like.ndim - 1))) if out.ndim else out


def q_sample(schedule: Schedule, x_start: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
    """Noise clean latents to time ``t``: ``sqrt(a_t) x0 + sqrt(1 - a_t) eps``."""
    a = _at(schedule.alphas_cumprod, t, x_start)
    return a.sqrt() * x_start + (1 - a).sqrt() * noise


def predict_start_from_noise(schedule: Schedule, x_t: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
    a = _at(schedule.alphas_cumprod, t, x_t)
    return (1.0 / a).sqrt() * x_t - (1.0 / a - 1).sqrt() * noise


def predict_noise_from_start(schedule: Schedule, x_t: torch.Tensor, t, x_start: torch.Tensor) -> torch.Tensor:
    a = _at(schedule.alphas_cumprod, t, x_t)
    return ((1.0 / a).sqrt() * x_t - x_start) / (1.0 / a - 1).sqrt()


def predictions(schedule: Schedule, x_t: torch.Tensor, t, pred_noise: torch.Tensor, clip: bool = True):
    """``(pred_noise, x_start)`` from a noise prediction; ``x_start`` clipped to [-1, 1] when ``clip``.

    As in the reference, the noise is not re-derived from the clipped ``x_start``.
    """
    x_start = predict_start_from_noise(schedule, x_t, t, pred_noise)
    if clip:
        x_start = x_start.clamp(-1.0, 1.0)
    return pred_noise, x_start


def ddim_step(
    schedule: Schedule,
    x_start: torch.Tensor,
    pred_noise: torch.Tensor,
    t: int,
    t_next: int,
    eta: float = 1.0,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """One DDIM update from time ``t`` to ``t_next``; a negative ``t_next`` returns ``x_start`` (the last step)."""
    if t_next < 0:
        return x_start
    alpha = schedule.alphas_cumprod[t].to(x_start.device)
    alpha_next = schedule.alphas_cumprod[t_next].to(x_start.device)
    sigma = eta * ((1 - alpha / alpha_next) * (1 - alpha_next) / (1 - alpha)).sqrt()
    # clamp: for a large jump from t ~ T, c^2 is ~1e-9 and float32 rounding can make it negative
    c = (1 - alpha_next - sigma**2).clamp(min=0).sqrt()
    out = x_start * alpha_next.sqrt() + c * pred_noise
    if eta:
        if noise is None:
            raise ValueError("ddim_step with eta > 0 needs noise")
        out = out + sigma * noise
    return out


#: Image samplers. ``"ddim"``: the reference's DDIM step (eta 1) everywhere. ``"dpmpp-2m-sde"``: the same step
#: made second order by the last step's ``x_start`` (:func:`multistep_weight`), and a first step from pure noise
#: that takes ``x_start`` = 0, the mean of standardised latents (:func:`starts_from_mean`).
SAMPLERS: tuple[str, ...] = tuple(SAMPLER_LABELS)


def check_sampler(name: str) -> str:
    """``name`` if it is one of :data:`SAMPLERS`, else a ValueError that lists them."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return name


def half_log_snr(schedule: Schedule, t: int) -> float:
    """``lambda_t = log(alpha_t / sigma_t)``, the time variable of DPM-Solver (float64)."""
    a = float(schedule.alphas_cumprod[t].double())
    return 0.5 * math.log(a / (1.0 - a))


def multistep_weight(schedule: Schedule, t_prev: int, t: int, t_next: int) -> float:
    """Weight ``w`` of ``x_start(t) - x_start(t_prev)`` that, added to the DDIM eta-1 step ``t -> t_next``,
    makes it the second-order multistep SDE solver DPM-Solver++(2M) SDE (midpoint form; Lu et al. 2022).

    The DDIM eta-1 step is that solver's first-order step. With ``h = lambda(t_next) - lambda(t)`` and
    ``r = (lambda(t) - lambda(t_prev)) / h``, ``w = alpha_next (1 - exp(-2h)) / (2 r)``. Zero for the last step
    (``t_next < 0``), whose output is ``x_start`` itself.
    """
    if t_next < 0:
        return 0.0
    lam_prev, lam, lam_next = (half_log_snr(schedule, u) for u in (t_prev, t, t_next))
    h = lam_next - lam
    r = (lam - lam_prev) / h
    alpha_next = math.sqrt(float(schedule.alphas_cumprod[t_next].double()))
    return alpha_next * -math.expm1(-2.0 * h) / (2.0 * r)


def starts_from_mean(schedule: Schedule, t: int) -> bool:
    """Whether ``t`` is the schedule's last time, where ``x_start`` is taken as 0 by ``"dpmpp-2m-sde"``.

    There the cosine schedule keeps ``alpha_bar = 2.4e-9`` of the signal: a noise-predicting network's
    ``x_start`` is its noise error times 2e4, which clipping turns into a saturated +-1 latent that the next
    steps read as content (it made the embedded model paint "Others" white). At that signal-to-noise ratio the
    best estimate of ``x_start`` is the data mean, 0 for standardised latents.
    """
    return int(t) == schedule.timesteps - 1


def label_masks(mask: torch.Tensor) -> list[torch.Tensor]:
    """The labels present in each sample's label map, sorted (``torch.unique`` order)."""
    return [torch.unique(m) for m in mask]


def multilabel_ddim_step(
    denoise: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor],
    schedule: Schedule,
    x_t: torch.Tensor,
    mask: torch.Tensor,
    t: int,
    t_next: int,
    cond_scale: float,
    eta: float = 1.0,
    noise: Callable[[torch.Tensor], torch.Tensor] | torch.Tensor | None = None,
) -> torch.Tensor:
    """DiffInfinite's multi-label step (reference ``ddim_multimask``), group by group.

    For the j-th label (in sorted order) of every sample that has one, the sub-batch is denoised with the
    per-label condition ``(mask == label) * label`` and guided with ``cond_scale`` (1 if the whole group is
    label 0), stepped with DDIM, and kept where ``mask == label``. ``denoise(x, t, cond_mask, scale)`` is the
    guided noise predictor. ``noise`` is a (B, ...) tensor indexed by the group's sample indices, or a
    callable ``indices -> noise`` (the reference draws ``randn`` of the group's size, which the golden test
    reproduces with ``lambda idx: noise[:len(idx)]``).
    """
    if mask.ndim == 3:
        mask = mask[:, None]
    labels = label_masks(mask)
    width = max(len(l) for l in labels)
    out = torch.zeros_like(x_t)
    for j in range(width):
        idx = torch.tensor([i for i, l in enumerate(labels) if len(l) > j], device=x_t.device)
        group_labels = torch.stack([labels[i][j] for i in idx.tolist()]).to(mask.dtype)
        keep = (mask[idx] == group_labels[:, None, None, None]).to(x_t.dtype)
        cond = keep * group_labels[:, None, None, None]
        scale = 1.0 if bool((group_labels == 0).all()) else cond_scale
        time = torch.full((len(idx),), t, device=x_t.device, dtype=torch.long)
        pred_noise, x_start = predictions(schedule, x_t[idx], time, denoise(x_t[idx], time, cond, scale))
        if callable(noise):
            group_noise = noise(idx)
        else:
            group_noise = None if noise is None else noise[idx]
        out[idx] += ddim_step(schedule, x_start, pred_noise, t, t_next, eta, group_noise) * keep
    return out


def guided_scale(omega: float) -> float:
    """The user-facing guidance weight omega as the model's guidance scale ``s = omega + 1``."""
    return float(omega) + 1.0
