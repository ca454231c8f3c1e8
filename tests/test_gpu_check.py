"""benchmarks/gpu_check.py runs every stage on the CPU with tiny networks, so it cannot rot before a GPU
comes."""

from __future__ import annotations

import json


def test_tiny_cpu_run_records_every_stage(tmp_path, capsys, benchmark_script):
    out = tmp_path / "gpu_check.json"
    rc = benchmark_script("gpu_check").main(
        [
            "--device",
            "cpu",
            "--tiny",
            "--steps",
            "2",
            "--repeat",
            "1",
            "--windows",
            "1",
            "2",
            "--canvas-tiles",
            "2",
            "--out",
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    stages = report["stages"]
    assert rc == 0, {k: v["status"] for k, v in stages.items()}
    assert list(stages) == ["unet_step", "half_precision", "vae_decode", "generate", "canvas"]
    assert set(stages["unet_step"]["ms"]) == {"fp32 eager 1w", "fp32 eager 2w", "bf16", "fp16"}
    assert (
        stages["unet_step"]["ms"]["fp32 eager 2w"] > 0
        and stages["unet_step"]["ms"]["bf16"] == "skipped: no CUDA"
    )
    assert stages["half_precision"]["status"] == "skipped: no CUDA"
    assert stages["vae_decode"]["status"] == "ok" and stages["vae_decode"]["ms"] > 0
    assert stages["generate"]["batched_s"] > 0 and stages["generate"]["faithful_s"] > 0
    canvas = stages["canvas"]["embedded"]
    assert stages["canvas"]["status"] == "ok" and canvas["tiles"] == 2 and 0 < canvas["first_tile_s"]
    assert canvas["tiles_per_second"] > 0
    assert report["torch"] and report["cuda"] is None
    assert "wrote" in capsys.readouterr().out


def test_a_failing_stage_is_recorded_and_sets_the_exit_status(tmp_path, benchmark_script):
    script = benchmark_script("gpu_check")
    script.STAGES["unet_step"] = lambda args, device: 1 / 0  # a stage that raises: the run goes on
    out = tmp_path / "r.json"
    assert (
        script.main(
            ["--device", "cpu", "--tiny", "--stages", "unet_step", "half_precision", "--out", str(out)]
        )
        == 1
    )
    stages = json.loads(out.read_text())["stages"]
    assert stages["unet_step"]["status"].startswith("failed: ZeroDivisionError")
    assert stages["half_precision"]["status"] == "skipped: no CUDA"


def test_no_cuda_is_a_clear_error(tmp_path, capsys, benchmark_script):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert benchmark_script("gpu_check").main(["--out", str(tmp_path / "x.json")]) == 2
    assert "--device cpu --tiny" in capsys.readouterr().out
