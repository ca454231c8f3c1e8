"""Where the image model's denoiser stops helping: its one-step x0 error on real latents at each noise level,
against the best *linear* denoiser (per-channel Wiener shrinkage), on training patches.

Why: a sampler can only paint structure that the denoiser recognises. At low noise (t <= 100) the denoiser
must tell a nucleus's latent pattern from noise; a network no better than Wiener shrinkage there knows only
the latents' colour and spectrum, and its samples are coloured noise, whatever the sampler and steps. It costs
seconds and needs no sampling. It is a diagnosis, not a ranking: on 2026-12-04 the three GPU candidates' gains
at t = 10 were 0.11-0.19 while their nuclear figures ranked otherwise (MODEL_CARD.md). It also prints how
correlated neighbouring latents are, next to the image's correlation at the same distance: near-white latents
are what makes the low-noise regime hard.

    python benchmarks/denoiser_probe.py                           # the embedded model, 12 training patches
    python benchmarks/denoiser_probe.py --model runs/my-model --limit 30 --times 10 50 100 200 400

"gain" = 1 - MSE(network's x0) / MSE(Wiener x0): 0 means the network adds nothing to linear shrinkage, 1 a
perfect denoiser. The conditioning is the sampler's: one row per label of the patch's latent label map, at the
model's guidance.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from napari_diffinfinite.evaluation import evenly_spaced, load_holdout, split_holdout
from napari_diffinfinite.generation import load_model
from napari_diffinfinite.label_grid import labels_at_cell_centres
from napari_diffinfinite.model.diffusion import cosine_schedule
from napari_diffinfinite.sampling.steppers import ImageStepper
from napari_diffinfinite.training.dataset import scan_folder

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "diffinfinite-samples" / "patches"


def neighbour_correlation(x: torch.Tensor, lag: int) -> float:
    """Correlation of values ``lag`` pixels apart along x, pooled over channels ((C, H, W), mean removed)."""
    x = x - x.mean((-2, -1), keepdim=True)
    return float((x[..., lag:] * x[..., :-lag]).mean() / (x**2).mean())


def probe(model, patches, times, seed: int = 0) -> dict:
    """Per noise level: the network's and the Wiener denoiser's x0 MSE, pooled over ``patches``."""
    ae, f = model.autoencoder, model.downsampling
    schedule = cosine_schedule()
    stepper = ImageStepper(model.image_unet, schedule, cond_scale=model.default_omega + 1)
    latents, labels, image_corr = [], [], []
    multiple = f * model.image_unet.size_multiple
    for p in patches:
        h, w = (p.mask.shape[0] // multiple) * multiple, (p.mask.shape[1] // multiple) * multiple
        image = torch.from_numpy(p.image[:h, :w].copy()).permute(2, 0, 1).float() / 255
        latents.append(ae.encode(image[None])[0].float().cpu())
        labels.append(labels_at_cell_centres(torch.from_numpy(p.mask[:h, :w].copy()).long(), f))
        image_corr.append(neighbour_correlation(image.mean(0, keepdim=True), f))
    z = torch.stack(latents)
    mean, var = z.mean((0, 2, 3), keepdim=True), z.var((0, 2, 3), keepdim=True)
    out = {
        "latent_lag1": float(np.mean([neighbour_correlation(x, 1) for x in latents])),
        "image_lag": float(np.mean(image_corr)),
        "downsampling": f,
        "rows": [],
    }
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in times:
            a = schedule.alphas_cumprod[t].float()
            noise = torch.randn(z.shape, generator=g)
            x_t = a.sqrt() * z + (1 - a).sqrt() * noise
            eps = torch.cat(
                [
                    stepper.guided_noise(x_t[i : i + 1].to(model.device), labels[i][None], t).cpu()
                    for i in range(len(z))
                ]
            )
            x0_net = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
            # the MMSE linear estimate of z from x_t, per channel:
            # mean + cov(z, x_t) / var(x_t) * (x_t - E x_t)
            x0_wiener = mean + a.sqrt() * var / (a * var + (1 - a)) * (x_t - a.sqrt() * mean)
            mse_net, mse_w = float(((x0_net - z) ** 2).mean()), float(((x0_wiener - z) ** 2).mean())
            out["rows"].append(
                {
                    "t": int(t),
                    "noise_std": float((1 - a).sqrt()),
                    "mse_net": mse_net,
                    "mse_wiener": mse_w,
                    "gain": 1 - mse_net / mse_w,
                }
            )
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="a model folder (default: the embedded model)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="labelled patches (default: %(default)s)")
    p.add_argument(
        "--holdout-file", type=Path, help="held-out names (default: the model folder's holdout.json)"
    )
    p.add_argument("--limit", type=int, default=12, help="training patches used, evenly spaced (default: 12)")
    p.add_argument("--times", type=int, nargs="+", default=[10, 50, 100, 200, 400, 700])
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model) if args.model else load_model()
    holdout = args.holdout_file
    if holdout is None:
        from napari_diffinfinite._resources import resource_path

        folder = Path(args.model) if args.model else resource_path("models", "embedded")
        holdout = folder / "holdout.json"
    _, train = split_holdout(scan_folder(args.data, model.num_classes), load_holdout(holdout))
    patches = evenly_spaced(train, args.limit)
    report = probe(model, patches, args.times)
    print(f"model {model.name}: {len(patches)} training patches, omega {model.default_omega}")
    print(
        f"neighbour correlation: latents (1 latent apart) {report['latent_lag1']:.2f}, "
        f"image ({report['downsampling']} px apart) {report['image_lag']:.2f}"
    )
    print(f"{'t':>5} {'noise std':>9} {'x0 MSE net':>11} {'Wiener':>9} {'gain':>6}")
    for r in report["rows"]:
        print(
            f"{r['t']:>5} {r['noise_std']:>9.3f} {r['mse_net']:>11.5f} "
            f"{r['mse_wiener']:>9.5f} {r['gain']:>6.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
