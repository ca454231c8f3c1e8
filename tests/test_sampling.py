"""Random-patch sampling: exactness of the batched step, tilings, context, determinism, and sample quality."""

from __future__ import annotations

import math

import pytest
import torch

from napari_diffinfinite.model import ImageUnet, MaskUnet, cosine_schedule, multilabel_ddim_step
from napari_diffinfinite.sampling.options import SamplingOptions
from napari_diffinfinite.sampling.random_patch import Cancelled, SamplingStats, _tiling, sample_region
from napari_diffinfinite.sampling.steppers import ImageStepper, MaskStepper

SCHEDULE = cosine_schedule(1000)


@pytest.fixture(scope="module")
def golden_net(golden_image):
    net = ImageUnet(**golden_image.config).eval()
    net.load_state_dict(golden_image.weights)
    return net


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(1)
    return ImageUnet(dim=8, num_classes=5, dim_mults=(1, 2), channels=4).eval()


def two_class_labels(h, w):
    labels = torch.zeros(h, w, dtype=torch.long)
    labels[:, w // 2 :] = 3
    labels[2 : h // 2, 2 : w // 3] = 1
    return labels


@torch.no_grad()
def test_batched_step_equals_reference_multilabel_step(golden_net, golden_image):
    """One noise tensor per sample: the batched stepper equals the reference's per-label-group loop."""
    io = golden_image.io
    t, t_next = golden_image.meta["ddim_step"]
    stepper = ImageStepper(golden_net, SCHEDULE, cond_scale=4.0)
    ours, _ = stepper(io["x"], io["mask"][:, 0].long(), t, t_next, io["noise"])

    def denoise(x, time, cond, s):
        return golden_net.forward_with_cond_scale(x, time, cond, cond_scale=s)

    reference = multilabel_ddim_step(denoise, SCHEDULE, io["x"], io["mask"], t, t_next, 4.0, 1.0, io["noise"])
    assert float((ours - reference).abs().max()) <= 1e-4
    # rows: one null per sample + one per label > 0 (labels {2,3}, {1}, {0,4}) instead of 2 per label
    assert stepper.rows_evaluated == 3 + 2 + 1 + 1


@pytest.mark.parametrize("size,win", [(100, 64), (64, 64), (200, 64), (37, 16), (16, 16)])
def test_shifted_tilings_partition_the_axis(size, win):
    for offset in range(win):
        tiles = _tiling(size, win, offset)
        owned = [p for _, a, b in tiles for p in range(a, b)]
        assert owned == list(range(size))  # every pixel owned exactly once, in order
        for start, a, b in tiles:
            assert 0 <= start <= size - win and start <= a < b <= start + win
        assert len(tiles) <= math.ceil(size / win) + 1


@pytest.mark.parametrize("mode", ["batched", "faithful"])
def test_sampling_is_deterministic_finishes_and_keeps_context(tiny_net, mode):
    stepper = ImageStepper(tiny_net, SCHEDULE, cond_scale=4.0)
    h, w = 20, 36
    labels = two_class_labels(h, w)
    known = torch.randn(4, h, w) * 0.3
    known_mask = torch.zeros(h, w, dtype=torch.bool)
    known_mask[:, :12] = True
    seen = []

    def run(seed):
        return sample_region(
            stepper, (4, h, w), labels, schedule=SCHEDULE, steps=6, generator=torch.Generator().manual_seed(seed),
            mode=mode, window=16, known=known, known_mask=known_mask, progress=lambda d, t: seen.append((d, t)),
        )

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(a[:, known_mask], known[:, known_mask])  # context bit-identical
    # the final (t, -1) step is applied: the output is the clipped x0 prediction, not a noisy x_t
    assert float(a.abs().max()) <= 1.0
    assert seen[-1][0] == seen[-1][1] == 6 * int((~known_mask).sum())


def test_regions_of_any_size(tiny_net):
    stepper = ImageStepper(tiny_net, SCHEDULE, cond_scale=2.0)
    for h, w in [(18, 30), (8, 8), (50, 9)]:
        stats = SamplingStats()
        out = sample_region(stepper, (4, h, w), two_class_labels(h, w), schedule=SCHEDULE, steps=2,
                            generator=torch.Generator().manual_seed(0), window=16, stats=stats)
        assert out.shape == (4, h, w) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="smaller than the network's minimum window"):
        sample_region(stepper, (4, 1, 8), None, schedule=SCHEDULE, steps=2, generator=torch.Generator(), window=16)


def test_cancel(tiny_net):
    stepper = ImageStepper(tiny_net, SCHEDULE, cond_scale=2.0)
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        sample_region(stepper, (4, 16, 16), None, schedule=SCHEDULE, steps=10, generator=torch.Generator(),
                      window=16, cancel=cancel)
    assert len(calls) == 3


def test_batched_cost_is_close_to_tiling(tiny_net):
    stepper = ImageStepper(tiny_net, SCHEDULE, cond_scale=1.0)
    stats = SamplingStats()
    sample_region(stepper, (4, 64, 64), None, schedule=SCHEDULE, steps=4, generator=torch.Generator().manual_seed(0),
                  window=16, stats=stats)
    # a randomly shifted tiling has at most one extra row and column of windows: (5/4)^2
    assert 1.0 <= stats.cost_vs_tiling <= (5 / 4) ** 2


def test_mask_stepper_samples_context_conditioned_latents():
    torch.manual_seed(0)
    net = MaskUnet(dim=8, num_classes=2, dim_mults=(1, 2), channels=4).eval()
    stepper = MaskStepper(net, SCHEDULE, context=1, cond_scale=3.0)
    out = sample_region(stepper, (4, 24, 24), None, schedule=SCHEDULE, steps=3,
                        generator=torch.Generator().manual_seed(0), window=16)
    assert out.shape == (4, 24, 24) and float(out.abs().max()) <= 1.0
    assert stepper.rows_evaluated > 0


def test_batched_matches_faithful_sample_statistics(tiny_net):
    """Both modes sample the same distribution: per-channel latent mean and std agree within 3 SE over 4 seeds."""
    stepper = ImageStepper(tiny_net, SCHEDULE, cond_scale=4.0)
    h = w = 24
    labels = two_class_labels(h, w)

    def moments(mode):
        outs = torch.stack([
            sample_region(stepper, (4, h, w), labels, schedule=SCHEDULE, steps=5, mode=mode, window=16,
                          generator=torch.Generator().manual_seed(seed))
            for seed in range(4)
        ])  # (seeds, C, H, W)
        means = outs.mean(dim=(2, 3))  # (seeds, C)
        stds = outs.std(dim=(2, 3))
        return means, stds

    (mb, sb), (mf, sf) = moments("batched"), moments("faithful")
    for a, b in ((mb, mf), (sb, sf)):
        se = torch.sqrt(a.var(dim=0) / 4 + b.var(dim=0) / 4)
        diff = (a.mean(dim=0) - b.mean(dim=0)).abs()
        assert bool((diff <= 3 * se + 1e-3).all()), (diff, se)


def test_blocks_give_the_same_canvas_in_any_order_within_a_wave(tiny_net):
    """Blocks of one wave share no context: running them in another order (or in parallel) changes nothing."""
    from napari_diffinfinite.sampling.blocks import (
        block_grid,
        block_seed,
        generate_block,
        generate_latents,
        iter_waves,
    )

    stepper = ImageStepper(tiny_net, SCHEDULE, cond_scale=4.0)
    h, w = 24, 40
    labels = two_class_labels(h, w)
    kwargs = dict(options=SamplingOptions(steps=3, halo=4, window=16))
    ref = generate_latents(stepper, (4, h, w), labels, seed=7, block=12, **kwargs)
    assert torch.equal(ref, generate_latents(stepper, (4, h, w), labels, seed=7, block=12, **kwargs))
    # the waves again, each wave's blocks in reverse order
    latents, done = torch.zeros(4, h, w), torch.zeros(h, w, dtype=torch.bool)
    for wave in iter_waves(block_grid(h, w, 12)):
        for b in reversed(wave):
            generate_block(stepper, latents, done, labels, b, seed=7, **kwargs)
        for b in wave:
            done[b.y0 : b.y1, b.x0 : b.x1] = True
    assert torch.equal(latents, ref)
    seeds = {block_seed(7, b.i, b.j) for b in block_grid(h, w, 12)}
    assert len(seeds) == len(block_grid(h, w, 12))


def test_regenerating_a_block_keeps_everything_else(tiny_net):
    from napari_diffinfinite.sampling.blocks import Block, generate_block, generate_latents

    stepper = ImageStepper(tiny_net, SCHEDULE, cond_scale=4.0)
    h, w = 24, 24
    labels = two_class_labels(h, w)
    canvas = generate_latents(stepper, (4, h, w), labels, seed=1, options=SamplingOptions(steps=3, window=16),
                              block=12)
    before = canvas.clone()
    done = torch.ones(h, w, dtype=torch.bool)
    generate_block(stepper, canvas, done, labels, Block(1, 1, 12, 12, 24, 24), seed=99,
                   options=SamplingOptions(steps=3, halo=4, window=16))
    changed = (canvas != before).any(dim=0)
    assert changed[12:, 12:].all() and not changed[:12].any() and not changed[:, :12].any()


def test_continue_context_carries_the_miss_on_the_context_into_the_join_only():
    """The network predicts the context 0.2 too low: next to the join the new latents are lifted by that miss
    (so they continue the known latents), far from it they stay as predicted, and the context is kept."""
    from napari_diffinfinite.sampling.context import continue_context

    g = torch.Generator().manual_seed(0)
    h, w = 16, 32
    field = torch.linspace(-0.3, 0.3, w).expand(1, 2, h, w).clone()  # one smooth field across the join
    x_start = field + 0.02 * torch.randn(field.shape, generator=g)
    known_mask = torch.zeros(1, h, w, dtype=torch.bool)
    known_mask[:, :, :16] = True
    known = x_start + 0.2  # the true context: what the network missed by 0.2
    out = continue_context(x_start, known, known_mask, sigma=2.0)
    assert torch.equal(out[..., :16], x_start[..., :16])  # context latents come back unchanged
    lift = (out - x_start).mean(dim=(0, 1, 2))
    assert 0.7 * 0.2 < float(lift[16]) <= 0.2 + 0.01  # the first new column takes most of the miss
    assert float(lift[-8:].abs().max()) < 1e-3  # far away (>= 8 latents) nothing changes
    assert bool((lift[16:-1] >= lift[17:] - 1e-6).all())  # the lift fades with distance
    step_before = float((x_start[..., 16] - known[..., 15]).mean())  # the offset across the join
    step_after = float((out[..., 16] - known[..., 15]).mean())
    assert abs(step_after) < abs(step_before) / 3, (step_before, step_after)
    # no context anywhere: nothing to carry
    assert torch.equal(continue_context(x_start, known, torch.zeros_like(known_mask)), x_start)


def test_context_region_grows_by_the_halo_on_context_sides_and_by_the_lookahead_elsewhere():
    from napari_diffinfinite.sampling.blocks import Block, context_region

    done = torch.zeros(64, 64, dtype=torch.bool)
    block = Block(1, 1, 16, 16, 32, 32)
    assert context_region(block, done, halo=8, lookahead=0) == (16, 16, 32, 32)
    assert context_region(block, done, halo=8, lookahead=4) == (12, 12, 36, 36)
    # the lookahead never leaves the halo (a distributed worker reads only the halo)
    assert context_region(block, done, halo=8, lookahead=20) == (8, 8, 40, 40)
    done[:16, 16:32] = True  # the block above is generated: halo there, lookahead on the three other sides
    assert context_region(block, done, halo=8, lookahead=4) == (8, 12, 36, 36)
    # the canvas edge bounds both
    assert context_region(Block(0, 0, 0, 0, 16, 16), torch.zeros(16, 24, dtype=torch.bool), 8, 4) == (0, 0, 16, 20)


def test_a_lookahead_is_sampled_and_thrown_away(tiny_net):
    """With a lookahead the block's latents change (its edge is sampled inside a wider region), everything
    outside the block stays as it was, and the run is reproducible."""
    from napari_diffinfinite.sampling.blocks import Block, generate_block

    stepper = ImageStepper(tiny_net, SCHEDULE, cond_scale=4.0)
    labels = two_class_labels(24, 24)
    block = Block(0, 0, 0, 0, 12, 12)
    outs = []
    for lookahead in (0, 4, 4):
        canvas = torch.full((4, 24, 24), 7.0)
        options = SamplingOptions(steps=3, halo=4, window=16, lookahead=lookahead)
        generate_block(stepper, canvas, torch.zeros(24, 24, dtype=torch.bool), labels, block, seed=5,
                       options=options)
        assert bool((canvas[:, 12:] == 7).all()) and bool((canvas[:, :, 12:] == 7).all())
        outs.append(canvas[:, :12, :12].clone())
    assert not torch.equal(outs[0], outs[1]) and torch.equal(outs[1], outs[2])


def test_sampling_options_check_their_settings_once_and_take_the_models_defaults(tiny_net):
    """One value for the sampling settings: bad ones are refused by name, None keeps the model's default, what
    results record leaves out max_batch (memory, not results), and its stepper guides with omega + 1."""
    model = type("M", (), {"default_steps": 7, "default_omega": 0.5, "sampler": "dpmpp-2m-sde", "window": 32})()
    options = SamplingOptions.for_model(model, steps=None, omega=2, mode="faithful", halo=None)
    assert (options.steps, options.omega, options.sampler, options.mode, options.window, options.halo) == (
        7, 2.0, "dpmpp-2m-sde", "faithful", 32, 16)
    assert "max_batch" not in options.recorded() and options.recorded()["sampler"] == "dpmpp-2m-sde"
    with pytest.raises(ValueError, match="unknown sampler 'euler'; choose one of ddim, dpmpp-2m-sde"):
        SamplingOptions(sampler="euler")
    with pytest.raises(ValueError, match="mode must be one of batched, faithful"):
        options.replaced(mode="fast")
    with pytest.raises(ValueError, match="steps must be at least 1"):
        SamplingOptions(steps=0)
    with pytest.raises(TypeError, match="unknown sampling setting.*guidance"):
        options.replaced(guidance=3)
    stepper = options.stepper(tiny_net)
    assert stepper.cond_scale == 3.0 and stepper.second_order and stepper.max_batch == 64
