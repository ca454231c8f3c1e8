"""benchmarks/denoiser_probe.py: the denoiser's x0 error against the best linear denoiser, on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from napari_diffinfinite.generation import load_model
from napari_diffinfinite.training.dataset import scan_folder


def _patches(folder: Path, n: int = 3, size: int = 64) -> list[str]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint16)
        mask[: size // 2] = 1 + i % 4
        Image.fromarray(image).save(folder / f"p{i}.png")
        Image.fromarray(mask).save(folder / f"p{i}_mask.png")
    return [f"p{i}.png" for i in range(n)]


def test_wiener_reference_is_the_best_linear_estimate(tiny_model_dir, tmp_path, benchmark_script):
    _patches(tmp_path / "data")
    model = load_model(tiny_model_dir, device="cpu")
    patches = scan_folder(tmp_path / "data", model.num_classes)
    report = benchmark_script("denoiser_probe").probe(model, patches, [10, 500, 990])
    rows = {r["t"]: r for r in report["rows"]}
    assert [r["t"] for r in report["rows"]] == [10, 500, 990]
    for r in report["rows"]:
        # the MMSE linear estimate beats the identity estimate x_t / sqrt(a) and the mean alike
        assert 0 < r["mse_wiener"] <= r["noise_std"] ** 2 / (1 - r["noise_std"] ** 2)
        assert np.isfinite(r["gain"]) and r["gain"] == 1 - r["mse_net"] / r["mse_wiener"]
    assert (
        rows[10]["mse_wiener"] < rows[500]["mse_wiener"] * (1 + 1e-3)
        and rows[10]["mse_wiener"] < rows[990]["mse_wiener"]
    )
    assert -1 <= report["latent_lag1"] <= 1 and -1 <= report["image_lag"] <= 1


def test_script_prints_the_table(tiny_model_dir, tmp_path, capsys, benchmark_script):
    names = _patches(tmp_path / "data", n=4)
    (tmp_path / "holdout.json").write_text(json.dumps({"held_out": names[:1]}))
    assert (
        benchmark_script("denoiser_probe").main(
            [
                "--model",
                str(tiny_model_dir),
                "--data",
                str(tmp_path / "data"),
                "--holdout-file",
                str(tmp_path / "holdout.json"),
                "--times",
                "10",
                "200",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "3 training patches" in out and "gain" in out and out.strip().splitlines()[-1].split()[0] == "200"
