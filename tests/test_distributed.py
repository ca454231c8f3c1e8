"""Distributed generation on a LocalCluster of 2 worker processes (1 thread each): the wavefront canvas equals
the single-process result, survives a killed worker, and a re-run resumes without redoing finished blocks."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

distributed = pytest.importorskip("distributed")
import cloudpickle

from napari_diffinfinite.canvas.store import STATUS_LATENTS, STATUS_PIXELS, CanvasStore
from napari_diffinfinite.cli import EXIT_OK, EXIT_OUTPUT, EXIT_USAGE, main
from napari_diffinfinite.distributed import (
    CanvasJob,
    CanvasMismatchError,
    block_dependencies,
    connect,
    generate_canvas,
    wave_widths,
)
from napari_diffinfinite.generation import generate, load_model
from napari_diffinfinite.sampling.options import SamplingOptions

# the hooks below run on the workers, which cannot import this test module: ship its functions by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

BLOCK = 16  # latents (128 px); the canvas below is 3 x 3 blocks, the last row and column partial
SHAPE = (360, 376)
SEED = 7


def _mask() -> np.ndarray:
    mask = np.zeros(SHAPE, np.int64)
    mask[:, 190:] = 2
    mask[90:230, :150] = 1
    mask[250:, 60:300] = 4
    return mask


@dataclass
class Hook:
    """Runs on the worker at the start of every task: logs it; on request kills its worker once, or raises."""

    log: str
    kill: tuple | None = None  # (kind, i, j): SIGKILL the worker process the first time this task starts
    fail: tuple | None = None  # (kind, i, j): raise every time this task starts
    marker: str | None = None

    def __call__(self, kind, i, j):
        with open(self.log, "a") as f:
            f.write(f"{kind} {i} {j} {os.getpid()}\n")
        if self.kill == (kind, i, j):
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.close(fd)
            time.sleep(0.5)  # mid-task, once the coordinator has taken this worker's earlier results
            os.kill(os.getpid(), signal.SIGKILL)
        if self.fail == (kind, i, j):
            time.sleep(1.0)  # the other worker meanwhile decodes what is ready
            raise RuntimeError(f"injected failure in {kind} {i} {j}")


def _runs(log: Path, kind: str) -> dict[tuple[int, int], int]:
    counts: dict[tuple[int, int], int] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            k, i, j, _pid = line.split()
            if k == kind:
                counts[(int(i), int(j))] = counts.get((int(i), int(j)), 0) + 1
    return counts


ALL_BLOCKS = {(i, j) for i in range(3) for j in range(3)}


@pytest.fixture(scope="module")
def client():
    with connect(workers=2, dashboard=False) as c:
        c.wait_for_workers(2, timeout=120)
        yield c


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    """The single-process result (same seed, mask and block size), and its latents."""
    from napari_diffinfinite.sampling.blocks import generate_latents

    model = load_model(tiny_model_dir, device="cpu")
    result = generate(model, mask=_mask(), seed=SEED, block=BLOCK)
    d = model.downsampling
    lh, lw = -(-SHAPE[0] // d), -(-SHAPE[1] // d)
    padded = np.pad(_mask(), ((0, lh * d - SHAPE[0]), (0, lw * d - SHAPE[1])), mode="edge")
    options = SamplingOptions.for_model(model)  # the model's defaults, as generate() takes them
    latents = generate_latents(options.stepper(model.image_unet), (model.image_unet.channels, lh, lw),
                               torch.from_numpy(padded[d // 2 :: d, d // 2 :: d].copy()), seed=SEED,
                               options=options, block=BLOCK)
    return result, latents.numpy()


def _canvas(client, tiny_model_dir, folder, **kwargs):
    return generate_canvas(client, tiny_model_dir, folder, mask=_mask(), seed=SEED, block=BLOCK,
                           torch_threads=1, **kwargs)


# ------------------------------------------------------------------------------------------ no cluster
def test_wave_widths_ramp_up_plateau_and_down():
    assert wave_widths(3, 3) == [1, 2, 3, 2, 1]
    assert wave_widths(2, 5) == [1, 2, 2, 2, 2, 1]
    for rows, cols in [(1, 1), (4, 9), (13, 7)]:
        widths = wave_widths(rows, cols)
        assert len(widths) == rows + cols - 1 and sum(widths) == rows * cols
        assert max(widths) == min(rows, cols)


def _job(**changes) -> CanvasJob:
    options = SamplingOptions(steps=3, window=16, halo=changes.pop("halo", 16))
    settings = {"canvas": "", "latent_shape": (4, 45, 47), "block": 16, "seed": 0, "options": options,
                "decode_tile": 16, "decode_margin": 9, "downsampling": 8}
    return CanvasJob(**{**settings, **changes})


def test_context_and_decode_dependencies():
    context, decode = block_dependencies(_job())
    assert context[(0, 0)] == [] and sorted(context[(1, 1)]) == [(0, 0), (0, 1), (1, 0)]
    assert sorted(context[(0, 2)]) == [(0, 1)]
    assert len(decode[(1, 1)]) == 9 and len(decode[(0, 0)]) == 4  # the margin (9) reaches the 8 neighbours
    # a halo wider than a block reaches the blocks two rows up that are still of earlier waves
    wide, _ = block_dependencies(_job(latent_shape=(4, 64, 64), halo=20))
    assert (0, 3) in wide[(2, 2)] and (1, 3) not in wide[(2, 2)]
    # blocks smaller than the decode grid decode whole grid chunks (decode_full's), so they wait for them
    job = _job(decode_tile=32)
    assert job.decode_region(0, 0) == (0, 32, 0, 32) and job.decode_region(2, 2) == (32, 45, 32, 47)
    assert sorted(block_dependencies(job)[1][(0, 0)]) == [(a, b) for a in range(3) for b in range(3)]
    # the Hann decode reads a grid tile around the block
    assert _job(decode_margin=None).decode_window(1, 1) == (0, 45, 0, 47)


# ------------------------------------------------------------------------------------------ on the cluster
def test_canvas_equals_single_process_generate(client, tiny_model_dir, reference, tmp_path):
    result, latents = reference
    log = tmp_path / "tasks.log"
    run = _canvas(client, tiny_model_dir, tmp_path / "c", task_hook=Hook(str(log)))
    assert (run.blocks, run.sampled, run.decoded, run.resumed, run.grid) == (9, 9, 9, 0, (3, 3))
    assert run.workers == ["0", "1"]  # the two blocks of wave 1 run side by side
    assert np.array_equal(run.latents(), latents)  # bit for bit: same seeds, same context, one thread
    assert np.array_equal(run.image(), result.image)
    assert np.array_equal(run.mask(), result.mask)
    assert _runs(log, "block") == dict.fromkeys(ALL_BLOCKS, 1)
    store = CanvasStore.open(tmp_path / "c", "r")
    assert (store.read_status() == STATUS_PIXELS).all()
    assert store.read_tissue(store.grid.levels - 1, 0, 1, 0, 1).shape == (1, 1, 3)  # the pyramid is built
    # a canvas that holds another job is not resumed by mistake
    with pytest.raises(CanvasMismatchError, match="seed"):
        generate_canvas(client, tiny_model_dir, tmp_path / "c", mask=_mask(), seed=SEED + 1, block=BLOCK)


def test_canvas_with_the_second_order_sampler_equals_generate(client, tiny_model_dir, tmp_path):
    model = load_model(tiny_model_dir, device="cpu")
    expected = generate(model, mask=_mask(), seed=SEED, block=BLOCK, sampler="dpmpp-2m-sde")
    assert not np.array_equal(expected.image, generate(model, mask=_mask(), seed=SEED, block=BLOCK).image)
    run = _canvas(client, tiny_model_dir, tmp_path / "c", sampler="dpmpp-2m-sde")
    assert run.settings["sampler"] == "dpmpp-2m-sde"
    assert np.array_equal(run.image(), expected.image)  # the per-pixel history survives blocks and workers
    with pytest.raises(CanvasMismatchError, match="sampler"):  # a canvas sampled one way is not resumed another
        _canvas(client, tiny_model_dir, tmp_path / "c", sampler="ddim")


def test_a_killed_worker_loses_only_its_block(client, tiny_model_dir, reference, tmp_path):
    result, _ = reference
    log = tmp_path / "tasks.log"
    hook = Hook(str(log), kill=("block", 1, 1), marker=str(tmp_path / "killed"))
    run = _canvas(client, tiny_model_dir, tmp_path / "c", task_hook=hook)
    assert (tmp_path / "killed").exists()
    runs = _runs(log, "block")
    assert runs[(1, 1)] == 2  # killed once, run again elsewhere
    assert {k: n for k, n in runs.items() if k != (1, 1)} == dict.fromkeys(ALL_BLOCKS - {(1, 1)}, 1)
    assert run.sampled == 9 and np.array_equal(run.image(), result.image)
    client.wait_for_workers(2, timeout=120)  # the nanny restarted it


def test_a_rerun_resumes_without_redoing_finished_blocks(client, tiny_model_dir, reference, tmp_path):
    result, _ = reference
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    # a decode grid of one block and groups of one block: blocks are decoded and marked done as the
    # wavefront goes, so the interrupted run leaves finished blocks behind
    kwargs = {"decode_tile": BLOCK, "pyramid_group": 1}
    with pytest.raises(RuntimeError, match="injected failure"):
        _canvas(client, tiny_model_dir, tmp_path / "c", retries=0,
                task_hook=Hook(str(first), fail=("block", 2, 2)), **kwargs)
    status = CanvasStore.open(tmp_path / "c", "r").read_status()
    with_latents = {(int(i), int(j)) for i, j in np.argwhere(status >= STATUS_LATENTS)}
    with_pixels = {(int(i), int(j)) for i, j in np.argwhere(status == STATUS_PIXELS)}
    assert with_latents == ALL_BLOCKS - {(2, 2)} and (0, 0) in with_pixels and (1, 1) not in with_pixels
    run = _canvas(client, tiny_model_dir, tmp_path / "c", task_hook=Hook(str(second)), **kwargs)
    assert set(_runs(second, "block")) == ALL_BLOCKS - with_latents  # finished blocks are not sampled again
    assert set(_runs(second, "decode")) == ALL_BLOCKS - with_pixels  # nor decoded again
    assert max(_runs(second, "block").values()) == 1
    assert run.resumed == len(with_pixels) and run.sampled == 9 - len(with_latents)
    assert (CanvasStore.open(tmp_path / "c", "r").read_status() == STATUS_PIXELS).all()
    # the latents are generate()'s; the pixels too, up to float rounding of the other decode chunking
    assert np.abs(run.image().astype(int) - result.image.astype(int)).max() <= 1


def test_cli_scheduler_matches_the_single_process_cli(client, tiny_model_dir, tmp_path, capsys):
    common = ["--size", "200", "264", "--model", str(tiny_model_dir), "--seed", "3", "--block", str(BLOCK)]
    assert main(["generate", *common, "--out", str(tmp_path / "one.png"), "--quiet"]) == EXIT_OK
    code = main(["generate", *common, "--out", str(tmp_path / "many.png"), "--scheduler",
                 client.scheduler.address])
    assert code == EXIT_OK
    out = capsys.readouterr().out
    assert "6 blocks (2 x 3; 6 sampled, 6 decoded, 0 resumed) on 2 workers" in out
    for suffix in (".png", "_mask.png"):
        a = np.asarray(Image.open(tmp_path / f"one{suffix}"))
        b = np.asarray(Image.open(tmp_path / f"many{suffix}"))
        assert np.array_equal(a, b), suffix
    assert not (tmp_path / "many.canvas").exists()  # the default work canvas is removed after the export
    # the existing exit codes hold
    assert main(["generate", *common, "--out", str(tmp_path / "many.png"), "--scheduler",
                 client.scheduler.address]) == EXIT_OUTPUT
    assert main(["generate", *common, "--out", str(tmp_path / "x.png"), "--scheduler", "tcp://a:1",
                 "--workers", "2"]) == EXIT_USAGE
    assert main(["generate", *common, "--out", str(tmp_path / "x.png"), "--count", "0"]) == EXIT_USAGE


def test_cli_scheduler_keeps_the_sampler_asked_for(client, tiny_model_dir, tmp_path):
    """--sampler reaches the workers (it was dropped there once) and the sidecar records it."""
    from napari_diffinfinite.io import export_paths

    common = ["--size", "64", "96", "--model", str(tiny_model_dir), "--seed", "5", "--block", str(BLOCK),
              "--sampler", "dpmpp-2m-sde", "--quiet"]
    assert main(["generate", *common, "--out", str(tmp_path / "one.png")]) == EXIT_OK
    assert main(["generate", *common, "--out", str(tmp_path / "many.png"), "--scheduler",
                 client.scheduler.address]) == EXIT_OK
    a, b = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in ("one", "many"))
    assert np.array_equal(a, b)
    sidecar = export_paths(tmp_path / "many", "png")["sidecar"]
    assert json.loads(sidecar.read_text())["sampler"] == "dpmpp-2m-sde"


def test_cli_count_writes_independent_images(client, tiny_model_dir, tmp_path, capsys):
    code = main(["generate", "--size", "64", "96", "--model", str(tiny_model_dir), "--seed", "5",
                 "--count", "3", "--out", str(tmp_path / "b.png"), "--scheduler", client.scheduler.address])
    assert code == EXIT_OK
    assert "3 images on" in capsys.readouterr().out
    model = load_model(tiny_model_dir, device="cpu")
    images = [np.asarray(Image.open(tmp_path / f"b_{k:04d}.png")) for k in (1, 2, 3)]
    assert np.array_equal(images[1], generate(model, size=(64, 96), seed=6).image)  # seed + index
    assert not np.array_equal(images[0], images[1])
    assert (tmp_path / "b_0003_mask.png").exists() and (tmp_path / "b_0003.json").exists()


def test_a_generated_mask_uses_the_mask_guidance_as_generate_does(client, tiny_model_dir, tmp_path):
    """--mask-omega reaches the cluster's mask task: the canvas's mask equals generate()'s with the same
    mask guidance, and differs from the model's default one."""
    model = load_model(tiny_model_dir, device="cpu")
    run = generate_canvas(client, tiny_model_dir, tmp_path / "g", size=(128, 128), seed=SEED, block=BLOCK,
                          mask_omega=0.0, torch_threads=1)
    assert run.settings["mask_omega"] == 0.0 and run.settings["lookahead"] == min(8, run.settings["halo"])
    ours = generate(model, size=(128, 128), seed=SEED, block=BLOCK, mask_omega=0.0)
    assert np.array_equal(run.image(), ours.image)
    assert not np.array_equal(ours.mask, generate(model, size=(128, 128), seed=SEED, block=BLOCK).mask)
