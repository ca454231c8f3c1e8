"""One command that proves and times the full-size DiffInfinite path on a GPU (issue 19), stage by stage.

    python benchmarks/gpu_check.py                       # CUDA: full-size networks, random weights
    python benchmarks/gpu_check.py --device cpu --tiny   # the same stages, tiny networks (the test runs it)

Stages (each catches its own errors and out-of-memory, records them and goes on):
- ``unet_step``: one guided step of the image UNet at 64 x 64 latents (null row + 2 label rows per window) in
  fp32, bf16 and fp16 (half precision only on CUDA), eager and, with ``--compile``, ``torch.compile``d, over a
  few window counts; milliseconds per step.
- ``half_precision``: relative error of the bf16 / fp16 UNet output against fp32 on the same inputs; the stage
  fails when it is above ``HALF_TOLERANCE``.
- ``vae_decode``: the Stable Diffusion 2 VAE (shipped config, random weights, no download) decoding one 512 px
  tile (needs diffusers: ``pip install -e .[sd2vae]``).
- ``generate``: a 2048 px image (``--tiny``: 512 px) with a painted mask through ``generate()``, batched and
  with the reference's one-patch-at-a-time sampler (``mode="faithful"``): both times and their ratio.
- ``canvas``: the canvas headless (store + scheduler, no napari) on the 1920 x 1080 view at the centre of a
  new canvas with a painted mask, for ``--canvas-seconds`` (or ``--canvas-tiles``), on the full-size model and
  on the embedded one (``--tiny``: the embedded one only): first-tile latency and tiles per second.

Peak GPU memory per stage, the GPU's name and the torch / CUDA versions go to ``--out`` (default
``gpu_check.json``) as ``{"device", "torch", "cuda", "stages": {NAME: {"status": "ok" | "skipped: WHY" |
"failed: WHY", ...}}}``, and a table is printed. Exit status 1 when a stage failed. Targets on an
H100/H200-class GPU (issue 19): a guided step <= 10 ms in bf16, a 2048 px image <= 10 s, batched >= 5x
faithful.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from napari_diffinfinite._atomic import atomic_write_text
from napari_diffinfinite.generation import DiffInfiniteModel, generate
from napari_diffinfinite.model.checkpoint import RELEASED_CONFIGS
from napari_diffinfinite.model.device import for_inference
from napari_diffinfinite.model.unet import ImageUnet

#: Largest relative error (L2 of the difference / L2 of the fp32 output) of a half-precision UNet output.
HALF_TOLERANCE = {"bf16": 0.05, "fp16": 0.02}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TINY_UNET = {
    "dim": 16,
    "num_classes": 5,
    "dim_mults": (1, 2, 4),
    "channels": 4,
    "resnet_block_groups": 4,
    "block_per_layer": 1,
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_ms(fn, device, repeat: int) -> float:
    """Best wall time of ``repeat`` calls after two warm-ups (the first compiles or picks kernels)."""
    fn(), fn()
    best = float("inf")
    for _ in range(repeat):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def _unet(args, device: torch.device) -> ImageUnet:
    config = TINY_UNET if args.tiny else RELEASED_CONFIGS["image"]
    torch.manual_seed(0)
    return for_inference(ImageUnet(**config), device)


def _in_dtype(net: ImageUnet, dtype: torch.dtype) -> ImageUnet:
    """A copy of ``net`` with its weights in ``dtype`` (the fp32 original stays the reference)."""
    return copy.deepcopy(net).to(dtype)


def _rows(net: ImageUnet, windows: int, side: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch of one guided step: per window a null row and two label rows (labels 1 and 3)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(windows, net.channels, side, side, generator=g).repeat_interleave(3, 0)
    masks = torch.zeros(windows * 3, 1, side, side, dtype=torch.long)
    masks[1::3, :, : side // 2] = 1
    masks[2::3, :, side // 2 :] = 3
    t = torch.full((windows * 3,), 500, dtype=torch.long)
    return x.to(device), t.to(device), masks.to(device)


def stage_unet_step(args, device) -> dict:
    net = _unet(args, device)
    side = 16 if args.tiny else 64
    out: dict = {"latent_side": side, "parameters": sum(p.numel() for p in net.parameters()), "ms": {}}
    for name, dtype in DTYPES.items():
        if name != "fp32" and device.type != "cuda":
            out["ms"][name] = "skipped: no CUDA"
            continue
        typed = _in_dtype(net, dtype)
        variants = {"eager": typed}
        if args.compile:
            variants["compiled"] = torch.compile(typed)
        for label, fn in variants.items():
            for windows in args.windows:
                x, t, m = _rows(net, windows, side, device)
                with torch.inference_mode():
                    ms = _timed_ms(lambda: fn(x.to(dtype), t, m), device, args.repeat)  # noqa: B023
                out["ms"][f"{name} {label} {windows}w"] = round(ms, 2)
    return out


def stage_half_precision(args, device) -> dict:
    if device.type != "cuda":
        return {"status": "skipped: no CUDA"}
    net = _unet(args, device)
    x, t, m = _rows(net, 2, 16 if args.tiny else 64, device)
    with torch.inference_mode():
        ref = net(x, t, m).float()
        errors = {}
        for name in ("bf16", "fp16"):
            out = _in_dtype(net, DTYPES[name])(x.to(DTYPES[name]), t, m).float()
            errors[name] = float((out - ref).norm() / ref.norm())
    bad = {k: v for k, v in errors.items() if not v <= HALF_TOLERANCE[k]}
    result = {"relative_error": errors, "tolerance": HALF_TOLERANCE}
    if bad:
        result["status"] = f"failed: relative error {bad} above {HALF_TOLERANCE}"
    return result


def _vae(args, device):
    from napari_diffinfinite.model.autoencoder import SD2VAE, TINY_VAE_OVERRIDES

    return SD2VAE.from_config(seed=0, device=device, **(TINY_VAE_OVERRIDES if args.tiny else {}))


def stage_vae_decode(args, device) -> dict:
    try:
        vae = _vae(args, device)
    except ImportError as e:
        return {"status": f"skipped: {e}"}
    side = 512 // vae.downsampling
    z = torch.randn(1, vae.latent_channels, side, side, generator=torch.Generator().manual_seed(2)).to(device)
    with torch.inference_mode():
        ms = _timed_ms(lambda: vae.decode(z), device, args.repeat)
    return {"tile_px": 512, "ms": round(ms, 1)}


def _painted_mask(size: int) -> np.ndarray:
    mask = np.full((size, size), 3, np.uint8)
    mask[size // 8 : size // 2, size // 8 : size // 2] = 1
    mask[size // 2 :, size // 2 :] = 4
    return mask


def _full_model(args, device) -> DiffInfiniteModel:
    return DiffInfiniteModel(
        name="full-size, random weights",
        image_unet=_unet(args, device),
        autoencoder=_vae(args, device),
        mask_unet=None,
        mask_codec=None,
        num_classes=5,
        contexts=["adenocarcinoma"],
        default_steps=50,
        window=64,
        device=device,
    )


def _embedded(device) -> DiffInfiniteModel:
    from napari_diffinfinite.generation import load_model

    return load_model("embedded", device=device)


def stage_generate(args, device) -> dict:
    model, size = (_embedded(device), 512) if args.tiny else (_full_model(args, device), 2048)
    mask = _painted_mask(size)
    out: dict = {"size_px": size, "steps": args.steps or model.default_steps}
    for mode in ("batched", "faithful"):
        _sync(device)
        t0 = time.perf_counter()
        generate(model, mask=mask, seed=0, steps=args.steps, mode=mode)
        _sync(device)
        out[f"{mode}_s"] = round(time.perf_counter() - t0, 2)
    out["faithful_over_batched"] = round(out["faithful_s"] / out["batched_s"], 2)
    return out


def _canvas_run(model, args) -> dict:
    """Tiles of the centre 1920 x 1080 view of a new canvas, centre first, until the time or tile budget
    ends."""
    import tempfile

    from napari_diffinfinite.canvas import CanvasStore, TileScheduler

    with tempfile.TemporaryDirectory(prefix="gpu-check-canvas-") as tmp:
        store = CanvasStore.create_for_model(Path(tmp) / "c", model)
        c = store.grid.height // 2
        labels = np.ones((1080 // 8 + 64, 1920 // 8 + 64), np.uint8)
        labels[:, labels.shape[1] // 2 :] = 3
        store.write_labels((c - 540) // 8 - 32, (c - 960) // 8 - 32, labels)
        scheduler = TileScheduler(store, model)
        scheduler.request_tiles(scheduler.request_view(0, (c - 540, c + 540, c - 960, c + 960)))
        t0 = time.perf_counter()
        times = []
        while len(times) < args.canvas_tiles and time.perf_counter() - t0 < args.canvas_seconds:
            if scheduler.run_next() is None:
                break
            _sync(model.device)
            times.append(time.perf_counter() - t0)
        store.close()
    return {
        "tiles": len(times),
        "first_tile_s": round(times[0], 2) if times else None,
        "tiles_per_second": round(len(times) / times[-1], 2) if times else None,
    }


def stage_canvas(args, device) -> dict:
    out = {"embedded": _canvas_run(_embedded(device), args)}
    if not args.tiny:
        out["full_size"] = _canvas_run(_full_model(args, device), args)
    return out


STAGES = {
    "unet_step": stage_unet_step,
    "half_precision": stage_half_precision,
    "vae_decode": stage_vae_decode,
    "generate": stage_generate,
    "canvas": stage_canvas,
}


def run_stage(fn, args, device) -> dict:
    """One stage; errors and out-of-memory become its status, and the peak GPU memory is recorded."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    try:
        result = fn(args, device)
        result.setdefault("status", "ok")
    except torch.cuda.OutOfMemoryError as e:
        result = {"status": f"failed: out of memory ({str(e).splitlines()[0]})"}
    except Exception as e:  # noqa: BLE001 - a stage's failure is a finding; the others still run
        result = {"status": f"failed: {type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
    result["seconds"] = round(time.perf_counter() - t0, 2)
    if device.type == "cuda":
        result["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="torch device (default: cuda)")
    p.add_argument(
        "--tiny", action="store_true", help="tiny networks, 512 px image: a CPU check of the script"
    )
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd UNets (slow to compile)")
    p.add_argument("--windows", type=int, nargs="+", default=[1, 4, 16], help="windows per guided step")
    p.add_argument("--steps", type=int, default=None, help="sampling steps of the generate stage")
    p.add_argument("--repeat", type=int, default=5, help="timed repeats per figure (best is kept)")
    p.add_argument("--canvas-seconds", type=float, default=60.0, help="time per canvas run (default: 60)")
    p.add_argument("--canvas-tiles", type=int, default=10**6, help="at most this many tiles per canvas run")
    p.add_argument("--stages", nargs="+", choices=sorted(STAGES), default=list(STAGES))
    p.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here; run with --device cpu --tiny to check the script on a CPU")
        return 2
    report = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "tiny": args.tiny,
        "stages": {},
    }
    for name in args.stages:
        report["stages"][name] = result = run_stage(STAGES[name], args, device)
        figures = {k: v for k, v in result.items() if k not in ("status", "traceback")}
        print(f"{name:<15} {result['status']:<12.60} {json.dumps(figures)}", flush=True)
    atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out} ({report['device']}, torch {report['torch']}, CUDA {report['cuda']})")
    return 1 if any(r["status"].startswith("failed") for r in report["stages"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
