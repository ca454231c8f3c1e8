"""The networks and the diffusion maths reproduce the reference implementation's golden vectors."""

from __future__ import annotations

import pytest
import torch

from napari_diffinfinite.model import (
    ImageUnet,
    MaskUnet,
    cosine_schedule,
    guide,
    multilabel_ddim_step,
    predictions,
    time_pairs,
)

TOL = 1e-4


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).abs().max())


@pytest.fixture(scope="module")
def image_net(golden_image):
    net = ImageUnet(**golden_image.config).eval()
    net.load_state_dict(golden_image.weights, strict=True)
    return net


@pytest.fixture(scope="module")
def mask_net(golden_mask):
    net = MaskUnet(**golden_mask.config).eval()
    net.load_state_dict(golden_mask.weights, strict=True)
    return net


@torch.no_grad()
def test_image_unet_output(image_net, golden_image):
    io = golden_image.io
    assert max_diff(image_net(io["x"], io["t"], io["binary_mask"]), io["unet_out"]) <= TOL


@torch.no_grad()
def test_image_unet_guided_output(image_net, golden_image):
    io = golden_image.io
    out = image_net.forward_with_cond_scale(io["x"], io["t"], io["binary_mask"], cond_scale=4.0)
    assert max_diff(out, io["unet_out_cfg4"]) <= TOL
    # the batched guidance equals two separate calls
    cond = image_net(io["x"], io["t"], io["binary_mask"])
    null = image_net(io["x"], io["t"], torch.zeros_like(io["binary_mask"]))
    assert max_diff(out, guide(cond, null, 4.0)) <= TOL


@torch.no_grad()
def test_predictions_match(image_net, golden_image):
    io = golden_image.io
    schedule = cosine_schedule(1000)
    out = image_net.forward_with_cond_scale(io["x"], io["t"], io["binary_mask"], cond_scale=4.0)
    pred_noise, x_start = predictions(schedule, io["x"], io["t"], out, clip=True)
    assert max_diff(pred_noise, io["pred_noise_cfg4"]) <= TOL
    assert max_diff(x_start, io["x_start_cfg4"]) <= TOL
    assert float(x_start.abs().max()) <= 1.0


def test_cosine_schedule_matches(golden_image):
    # exact: the same float64 maths, stored as float32
    assert torch.equal(cosine_schedule(1000).alphas_cumprod, golden_image.io["alphas_cumprod"])


@torch.no_grad()
def test_multilabel_ddim_step(image_net, golden_image):
    io = golden_image.io
    t, t_next = golden_image.meta["ddim_step"]
    scale = golden_image.meta["cond_scale"]
    schedule = cosine_schedule(1000)

    def denoise(x, time, cond, s):
        return image_net.forward_with_cond_scale(x, time, cond, cond_scale=s)

    out = multilabel_ddim_step(
        denoise, schedule, io["x"], io["mask"], t, t_next, scale, eta=golden_image.meta["ddim_eta"],
        noise=lambda idx: io["noise"][: len(idx)],  # the reference draws randn of the group's size
    )
    assert max_diff(out, io["ddim_multimask_step"]) <= TOL


@torch.no_grad()
def test_mask_unet_outputs(mask_net, golden_mask):
    io = golden_mask.io
    assert max_diff(mask_net(io["x"], io["t"], io["classes"]), io["out_cond"]) <= TOL
    assert max_diff(mask_net(io["x"], io["t"], io["classes"], cond_drop_prob=1.0), io["out_null"]) <= TOL
    # the condition matters: null and conditional outputs differ clearly
    assert max_diff(io["out_cond"], io["out_null"]) > 1e-2


@torch.no_grad()
def test_mask_unet_guidance_is_batched_equivalent(mask_net, golden_mask):
    io = golden_mask.io
    out = mask_net.forward_with_cond_scale(io["x"], io["t"], io["classes"], cond_scale=3.0)
    assert max_diff(out, guide(io["out_cond"], io["out_null"], 3.0)) <= TOL


def test_time_pairs():
    pairs = time_pairs(50)
    assert pairs[0] == (999, 979) and pairs[-1] == (19, -1) and len(pairs) == 50
    assert time_pairs(1) == [(999, -1)]
    with pytest.raises(ValueError, match="steps"):
        time_pairs(0)


def test_unet_rejects_bad_shapes(image_net):
    x = torch.zeros(1, 4, 18, 18)  # not a multiple of 4
    with pytest.raises(ValueError, match="multiples of 4"):
        image_net(x, torch.tensor([10]), torch.zeros(1, 1, 18, 18))
    with pytest.raises(ValueError, match="labels must lie in 0..4"):
        image_net(torch.zeros(1, 4, 16, 16), torch.tensor([10]), torch.full((1, 1, 16, 16), 7.0))
