"""The image samplers: the reference's DDIM and DPM-Solver++(2M) SDE (model.diffusion.SAMPLERS)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_diffinfinite.model import SAMPLERS, check_sampler, cosine_schedule, multistep_weight, time_pairs
from napari_diffinfinite.sampling.random_patch import sample_region
from napari_diffinfinite.sampling.steppers import ImageStepper

SCHEDULE = cosine_schedule()
DATA_STD = 0.3  # the embedded model's standardised latents


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from napari_diffinfinite.generation import load_model

    return load_model(tiny_model_dir, device="cpu")


class GaussianEps(torch.nn.Module):
    """The exact noise predictor for data x0 ~ N(0, DATA_STD^2) per value: a network whose best answer is known,
    so a sampler's own error can be measured (the samples' std against DATA_STD)."""

    size_multiple = 1
    num_classes = 1

    def __init__(self):
        super().__init__()
        self.a = SCHEDULE.alphas_cumprod.double()

    def forward(self, x, t, mask):
        a = self.a[t].reshape(-1, 1, 1, 1)
        x0 = a.sqrt() * DATA_STD**2 / (a * DATA_STD**2 + 1 - a) * x.double()
        return ((x.double() - a.sqrt() * x0) / (1 - a).sqrt()).float()


def _sample_std(sampler: str, steps: int, mode: str = "batched", shape=(4, 48, 48)) -> float:
    stepper = ImageStepper(GaussianEps(), SCHEDULE, 1.0, sampler=sampler)
    z = sample_region(stepper, shape, None, schedule=SCHEDULE, steps=steps, generator=torch.Generator().manual_seed(0),
                      window=16, mode=mode)
    return float(z.std())


def test_the_second_order_sampler_removes_most_of_ddims_discretisation_error():
    """With the exact denoiser of Gaussian data, DDIM (eta 1) at 25 steps under-disperses its samples (std 16% low);
    DPM-Solver++(2M) SDE lands within 2%. The 48 x 48 region takes several moving 16-latent windows per step,
    so the per-pixel history of x_start is carried across windows."""
    ddim, second = _sample_std("ddim", 25), _sample_std("dpmpp-2m-sde", 25)
    assert abs(second - DATA_STD) < 0.02 * DATA_STD  # sampling error of the std estimate: ~0.5%
    assert DATA_STD - ddim > 0.1 * DATA_STD
    assert abs(_sample_std("ddim", 100) - DATA_STD) < DATA_STD - ddim  # DDIM converges only with more steps


def test_the_faithful_sampler_takes_second_order_steps_too():
    ddim, second = (_sample_std(s, 10, "faithful", (1, 24, 24)) for s in ("ddim", "dpmpp-2m-sde"))
    assert abs(second - DATA_STD) < 0.6 * abs(ddim - DATA_STD)


def test_multistep_weight_is_dpm_solver_2m_sde():
    def lam(t):
        a = float(SCHEDULE.alphas_cumprod[t].double())
        return math.log(math.sqrt(a) / math.sqrt(1 - a))

    t_prev, t, t_next = 959, 919, 879
    h, r = lam(t_next) - lam(t), (lam(t) - lam(t_prev)) / (lam(t_next) - lam(t))
    alpha_next = float(SCHEDULE.alphas_cumprod[t_next].double()) ** 0.5
    assert multistep_weight(SCHEDULE, t_prev, t, t_next) == pytest.approx(alpha_next * (1 - math.exp(-2 * h)) / (2 * r))
    assert multistep_weight(SCHEDULE, 79, 39, -1) == 0.0  # the last step returns x_start itself
    weights = [multistep_weight(SCHEDULE, p[0], *q) for p, q in zip(time_pairs(25), time_pairs(25)[1:])]
    assert all(w > 0 for w in weights[:-1]) and weights[-1] == 0.0


def test_the_first_step_from_pure_noise_takes_the_mean_and_skips_the_network(tiny_model):
    """At t = T-1 (alpha_bar 2.4e-9) "dpmpp-2m-sde" takes x_start = 0 and runs no network; DDIM runs it."""
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, :, 4:] = 1
    x = torch.randn(1, tiny_model.image_unet.channels, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    for sampler, rows in (("ddim", 2), ("dpmpp-2m-sde", 0)):
        stepper = ImageStepper(tiny_model.image_unet, SCHEDULE, 1.0, sampler=sampler)
        out, x_start = stepper(x, labels, 999, 959, noise)
        assert stepper.rows_evaluated == rows  # ddim: the null row and the label-1 row
        assert torch.isfinite(out).all()
    assert torch.equal(x_start, torch.zeros_like(x))
    stepper(x, labels, 959, 919, noise)  # later steps use the network
    assert stepper.rows_evaluated == 2


def test_sampler_names_are_checked_and_the_cli_offers_them_all():
    assert SAMPLERS == ("ddim", "dpmpp-2m-sde")
    assert check_sampler("ddim") == "ddim"
    with pytest.raises(ValueError, match="unknown sampler 'euler'; choose one of ddim, dpmpp-2m-sde"):
        check_sampler("euler")
    with pytest.raises(ValueError, match="unknown sampler"):
        ImageStepper(GaussianEps(), SCHEDULE, 1.0, sampler="euler")


def test_generate_uses_the_models_sampler_unless_told(tiny_model):
    from napari_diffinfinite.generation import generate

    mask = np.zeros((64, 64), np.uint8)
    mask[:, 32:] = 1
    plain = generate(tiny_model, mask=mask, seed=0, steps=3)
    assert plain.settings["sampler"] == tiny_model.sampler == "ddim"
    second = generate(tiny_model, mask=mask, seed=0, steps=3, sampler="dpmpp-2m-sde")
    assert second.settings["sampler"] == "dpmpp-2m-sde" and not np.array_equal(second.image, plain.image)
    assert np.array_equal(generate(tiny_model, mask=mask, seed=0, steps=3, sampler="dpmpp-2m-sde").image, second.image)


def test_the_embedded_model_ships_the_second_order_sampler():
    from napari_diffinfinite.generation import load_model

    assert load_model("embedded").sampler == "dpmpp-2m-sde"
