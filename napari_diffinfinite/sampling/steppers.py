"""Window steppers: one guided DDIM step for a batch of latent windows, in as few UNet calls as possible.

A stepper turns windows at one diffusion time into windows at the next. The samplers in
:mod:`napari_diffinfinite.sampling.random_patch` decide which windows; steppers decide how to run the
network on them.

:class:`ImageStepper` is DiffInfinite's multi-label step, batched: for every window it runs one null row
(the all-zero mask) and one conditional row per label > 0 present, all windows in one forward pass. Each
pixel then takes the guided noise of its own label (label 0 takes the null prediction: its condition *is*
the null condition) and the whole window takes a single DDIM step. Because ``x_start`` prediction, clipping
and the DDIM update are per-pixel, this equals the reference's per-label-group loop with one noise tensor
per window (tested against :func:`napari_diffinfinite.model.multilabel_ddim_step`), at
``1 + labels`` rows per window instead of ``2 x labels``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..model.diffusion import Schedule, check_sampler, ddim_step, predictions, starts_from_mean
from ..model.unet import ImageUnet, MaskUnet
from .context import CONTEXT_SIGMA, continue_context


class WindowStep(NamedTuple):
    """What a stepper returns: the windows at ``t_next``, and the ``x_start`` the step took them from (the
    history a second-order sampler keeps per latent pixel, see :mod:`~napari_diffinfinite.sampling.random_patch`)."""

    x: torch.Tensor
    x_start: torch.Tensor


class ImageStepper:
    """Multi-label guided DDIM step of the mask-conditioned image UNet over a batch of windows."""

    def __init__(
        self,
        net: ImageUnet,
        schedule: Schedule,
        cond_scale: float,
        eta: float = 1.0,
        max_batch: int = 64,
        context_sigma: float = CONTEXT_SIGMA,
        sampler: str = "ddim",
    ):
        self.net = net
        self.context_sigma = context_sigma  # 0: no context correction (for comparisons)
        self.sampler = check_sampler(sampler)  # one of model.diffusion.SAMPLERS
        #: whether the region samplers add the multistep term (``model.diffusion.multistep_weight``)
        self.second_order = self.sampler == "dpmpp-2m-sde"
        self.schedule = schedule
        self.cond_scale = float(cond_scale)
        self.eta = eta
        self.max_batch = max_batch
        self.size_multiple = net.size_multiple
        self.rows_evaluated = 0  # UNet rows (samples) run so far: the cost figure the benchmarks report

    def _forward(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        outs = []
        for i in range(0, x.shape[0], self.max_batch):
            sl = slice(i, i + self.max_batch)
            outs.append(self.net(x[sl], t[sl], mask[sl]))
        self.rows_evaluated += x.shape[0]
        return torch.cat(outs)

    def guided_noise(self, x: torch.Tensor, labels: torch.Tensor, t: int) -> torch.Tensor:
        """Per-pixel guided noise prediction for windows ``x`` (N, C, h, w) with label maps (N, h, w)."""
        n = x.shape[0]
        if labels is None:  # no label map: unconditional (every pixel label 0)
            labels = torch.zeros((n, *x.shape[-2:]), dtype=torch.long)
        labels = labels.to(x.device)
        rows_x, rows_mask, owner = [x], [torch.zeros_like(labels)[:, None]], []
        for i in range(n):
            for label in torch.unique(labels[i]).tolist():
                if label > 0 and self.cond_scale != 0:
                    rows_x.append(x[i : i + 1])
                    rows_mask.append(((labels[i] == label) * label)[None, None])
                    owner.append((i, label))
        xs, masks = torch.cat(rows_x), torch.cat(rows_mask).to(x.dtype)
        time = torch.full((xs.shape[0],), t, device=x.device, dtype=torch.long)
        eps = self._forward(xs, time, masks)
        null = eps[:n]
        guided = null.clone()
        for row, (i, label) in enumerate(owner, start=n):
            where = (labels[i] == label)[None]
            guided[i] = torch.where(where, null[i] + (eps[row] - null[i]) * self.cond_scale, guided[i])
        return guided

    @torch.no_grad()
    def __call__(
        self,
        x: torch.Tensor,
        labels: torch.Tensor,
        t: int,
        t_next: int,
        noise: torch.Tensor,
        context: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> WindowStep:
        """One step of windows ``x``; ``context`` = (known latents, known mask) of the windows, if any."""
        if self.sampler != "ddim" and starts_from_mean(self.schedule, t):
            # x_start = 0 (model.diffusion.starts_from_mean), so the noise is x itself: no network call
            x_start = torch.zeros_like(x)
            eps = x / (1 - self.schedule.alphas_cumprod[t].to(x.device)).sqrt()
            return _ddim(self, x, eps, t, t_next, noise, context, x_start=x_start)
        return _ddim(self, x, self.guided_noise(x, labels, t), t, t_next, noise, context)


class MaskStepper:
    """Guided DDIM step of the mask UNet for one context class over a batch of windows."""

    second_order = False  # the mask model samples with the reference's DDIM

    def __init__(
        self,
        net: MaskUnet,
        schedule: Schedule,
        context: int,
        cond_scale: float,
        eta: float = 1.0,
        max_batch: int = 64,
        context_sigma: float = CONTEXT_SIGMA,
    ):
        self.net = net
        self.context_sigma = context_sigma
        self.schedule = schedule
        self.context = int(context)
        self.cond_scale = float(cond_scale)
        self.eta = eta
        self.max_batch = max_batch
        self.size_multiple = net.size_multiple
        self.rows_evaluated = 0

    @torch.no_grad()
    def __call__(
        self,
        x: torch.Tensor,
        labels,
        t: int,
        t_next: int,
        noise: torch.Tensor,
        context: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> WindowStep:
        outs = []
        for i in range(0, x.shape[0], self.max_batch):
            xb = x[i : i + self.max_batch]
            time = torch.full((xb.shape[0],), t, device=x.device, dtype=torch.long)
            outs.append(self.net.forward_with_cond_scale(xb, time, self.context, self.cond_scale))
            self.rows_evaluated += xb.shape[0] * (1 if self.cond_scale == 1 else 2)
        return _ddim(self, x, torch.cat(outs), t, t_next, noise, context)


def _ddim(stepper, x, eps, t, t_next, noise, context, x_start=None) -> WindowStep:
    """The DDIM step both steppers end with; with context, ``x_start`` first continues the known latents.

    ``x_start``: given instead of predicted from ``eps``.
    """
    if x_start is None:
        eps, x_start = predictions(stepper.schedule, x, torch.full((x.shape[0],), t, device=x.device), eps)
    if context is not None and stepper.context_sigma:
        x_start = continue_context(x_start, *context, sigma=stepper.context_sigma)
    return WindowStep(ddim_step(stepper.schedule, x_start, eps, t, t_next, stepper.eta, noise), x_start)
