"""Loading released-layout checkpoints, bare state dicts and safetensors; clear errors for bad files."""

from __future__ import annotations

import json
import os

import pytest
import torch

from conftest import MANIFESTS
from napari_diffinfinite.model import (
    RELEASED_CONFIGS,
    CheckpointError,
    ImageUnet,
    MaskUnet,
    cosine_schedule,
    load_diffinfinite_checkpoint,
    save_unet,
)


def schedule_buffers() -> dict[str, torch.Tensor]:
    """The 13 buffers the reference's diffusion wrapper stores beside the UNet (values irrelevant here)."""
    ac = cosine_schedule(1000).alphas_cumprod
    names = [
        "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
        "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
        "p2_loss_weight",
    ]
    return {n: ac.clone() for n in names}


def released_layout(unet_state: dict[str, torch.Tensor], mask_trainer: bool = False) -> dict:
    """A training checkpoint shaped like the reference's ``model-<milestone>.pt``.

    The online weights are deliberately different from the EMA weights, so a loader that picks the wrong
    ones fails the golden comparison.
    """
    wrapper = {**schedule_buffers(), **{f"model.{k}": v for k, v in unet_state.items()}}
    online = {k: v + 1.0 if v.is_floating_point() else v for k, v in wrapper.items()}
    ema = {"initted": torch.tensor([True]), "step": torch.tensor([1234])}
    ema.update({f"online_model.{k}": v for k, v in online.items()})
    ema.update({f"ema_model.{k}": v for k, v in wrapper.items()})
    data = {
        "step": 10000, "loss": [0.1, 0.09], "lr": [1e-4, 9e-5], "model": online,
        "opt": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
        "scheduler": {"last_epoch": 10000}, "ema": ema, "scaler": None,
    }
    if mask_trainer:
        data["version"] = "1.0"
    return data


@pytest.mark.parametrize("name", ["image_model_5classes", "image_model_10classes", "mask_model"])
def test_released_configs_match_manifests(name):
    manifest = json.loads((MANIFESTS / f"{name}.json").read_text())
    kind = "mask" if name.startswith("mask") else "image"
    classes = 10 if "10classes" in name else RELEASED_CONFIGS[kind]["num_classes"]
    with torch.device("meta"):  # shapes only: the 172M network without allocating it
        net = (ImageUnet if kind == "image" else MaskUnet)(**{**RELEASED_CONFIGS[kind], "num_classes": classes})
    ours = {k: list(v.shape) for k, v in net.state_dict().items()}
    theirs = {k.removeprefix("ema_model.model."): v for k, v in manifest["ema"].items() if k.startswith("ema_model.model.")}
    assert ours == theirs
    model_keys = {k.removeprefix("model."): v for k, v in manifest["model"].items() if k.startswith("model.")}
    assert ours == model_keys


@torch.no_grad()
def test_released_layout_image_checkpoint_reproduces_golden(tmp_path, golden_image):
    path = tmp_path / "model-10.pt"
    torch.save(released_layout(golden_image.weights), path)
    net = load_diffinfinite_checkpoint(path, "image")
    assert not net.training
    assert net.config == {**golden_image.config, "dim_mults": tuple(golden_image.config["dim_mults"])}
    io = golden_image.io
    assert float((net(io["x"], io["t"], io["binary_mask"]) - io["unet_out"]).abs().max()) <= 1e-4


@torch.no_grad()
def test_released_layout_mask_checkpoint_reproduces_golden(tmp_path, golden_mask):
    path = tmp_path / "model-5.pt"
    torch.save(released_layout(golden_mask.weights, mask_trainer=True), path)
    net = load_diffinfinite_checkpoint(path, "mask")
    io = golden_mask.io
    assert float((net(io["x"], io["t"], io["classes"]) - io["out_cond"]).abs().max()) <= 1e-4
    assert float((net(io["x"], io["t"], io["classes"], 1.0) - io["out_null"]).abs().max()) <= 1e-4


@torch.no_grad()
def test_bare_state_dict_and_prefixed_safetensors(tmp_path, golden_image):
    io = golden_image.io
    bare = tmp_path / "unet.pt"
    torch.save(golden_image.weights, bare)
    for path in (bare, golden_image.weights_path):  # the golden file carries the reference's "model." prefix
        net = load_diffinfinite_checkpoint(path, "image")
        assert float((net(io["x"], io["t"], io["binary_mask"]) - io["unet_out"]).abs().max()) <= 1e-4


@torch.no_grad()
def test_save_unet_round_trip_keeps_config(tmp_path, golden_mask):
    net = MaskUnet(**{**golden_mask.config, "resnet_block_groups": 4})
    path = tmp_path / "mask.safetensors"
    save_unet(net, path)
    assert not (tmp_path / "mask.safetensors.tmp").exists()
    loaded = load_diffinfinite_checkpoint(path, "mask")  # groups come from the file's metadata
    assert loaded.config["resnet_block_groups"] == 4
    x, t = golden_mask.io["x"], golden_mask.io["t"]
    net.eval()
    assert torch.equal(loaded(x, t, golden_mask.io["classes"]), net(x, t, golden_mask.io["classes"]))


@torch.no_grad()
def test_an_image_unet_with_its_mask_as_input_round_trips_and_sees_each_pixels_label(tmp_path):
    """mask_input: the label map enters the first convolution as one-hot channels (labels 1..4), so a label
    change reaches the output through that convolution too; the file loads back as the same network, from its
    metadata or from the tensor shapes alone (a bare state dict)."""
    torch.manual_seed(0)
    net = ImageUnet(dim=8, num_classes=5, dim_mults=(1, 2), channels=4, resnet_block_groups=4,
                    block_per_layer=1, mask_input=True).eval()
    assert net.init_conv.in_channels == 4 + 4 and net.config["mask_input"] is True
    path = tmp_path / "image.safetensors"
    save_unet(net, path)
    bare = tmp_path / "bare.pt"
    torch.save(net.state_dict(), bare)
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([10, 500])
    mask = torch.zeros(2, 1, 16, 16)
    mask[0, :, :8] = 2
    mask[1, :, 4:12, 4:12] = 3
    for source in (path, bare):
        loaded = load_diffinfinite_checkpoint(source, "image", resnet_block_groups=4)
        assert loaded.config == net.config and loaded.channels == 4
        assert torch.equal(loaded(x, t, mask), net(x, t, mask))
    # two labels swapped between two regions: the same class embedding (the max, 3) and the same attention
    # query (mask > 0); the reference's network cannot tell them apart, this one sees the pixel labels
    a, b = torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16)
    a[..., :8, :] = 2
    a[..., 8:, :] = 3
    b[..., :8, :] = 3
    b[..., 8:, :] = 2
    assert not torch.allclose(net(x[:1], t[:1], a), net(x[:1], t[:1], b))
    plain = ImageUnet(dim=8, num_classes=5, dim_mults=(1, 2), channels=4, resnet_block_groups=4, block_per_layer=1)
    assert "mask_input" not in plain.config and plain.init_conv.in_channels == 4  # the reference's layout
    assert torch.equal(plain.eval()(x[:1], t[:1], a), plain(x[:1], t[:1], b))


def test_config_fills_what_shapes_cannot_reveal(tmp_path, golden_image):
    path = tmp_path / "unet.pt"
    torch.save(golden_image.weights, path)
    assert load_diffinfinite_checkpoint(path, "image", resnet_block_groups=4).config["resnet_block_groups"] == 4
    with pytest.raises(CheckpointError, match=r"dim_mults=\(1, 2, 8\) contradicts .* dim_mults=\(1, 2, 4\)"):
        load_diffinfinite_checkpoint(path, "image", dim_mults=(1, 2, 8))


def test_wrong_kind_is_named(tmp_path, golden_image, golden_mask):
    with pytest.raises(CheckpointError, match="holds a image-model UNet.*kind='image'"):
        load_diffinfinite_checkpoint(golden_image.weights_path, "mask")
    with pytest.raises(CheckpointError, match="holds a mask-model UNet.*kind='mask'"):
        load_diffinfinite_checkpoint(golden_mask.weights_path, "image")
    with pytest.raises(ValueError, match="kind must be"):
        load_diffinfinite_checkpoint(golden_mask.weights_path, "vae")


def test_missing_unexpected_and_mismatched_keys_are_listed(tmp_path, golden_image):
    state = dict(golden_image.weights)
    del state["final_conv.bias"]
    state["extra.weight"] = torch.zeros(3)
    state["downs.0.0.mlp.1.bias"] = torch.zeros(7)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_diffinfinite_checkpoint(path, "image")
    msg = str(err.value)
    assert "missing keys (1):\n    final_conv.bias" in msg
    assert "unexpected keys (1):\n    extra.weight" in msg
    assert "shape mismatches (1):\n    downs.0.0.mlp.1.bias: file (7,) vs network (64,)" in msg


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello, I am not a checkpoint\n")
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        load_diffinfinite_checkpoint(text, "image")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        load_diffinfinite_checkpoint(empty, "image")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_diffinfinite_checkpoint(tmp_path / "nope.pt", "image")
    tensors_only = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], tensors_only)
    with pytest.raises(CheckpointError, match="holds a list, not a dict"):
        load_diffinfinite_checkpoint(tensors_only, "image")


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_truncated_file(tmp_path, golden_mask, fmt):
    path = tmp_path / f"model.{fmt}"
    if fmt == "pt":
        torch.save(golden_mask.weights, path)
    else:
        save_unet(MaskUnet(**golden_mask.config), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_diffinfinite_checkpoint(path, "mask")


class _Payload:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, golden_mask):
    marker = tmp_path / "pwned"
    path = tmp_path / "model-5.pt"
    torch.save({"ema": dict(golden_mask.weights), "payload": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="refused to load .*would run code"):
        load_diffinfinite_checkpoint(path, "mask")
    assert not marker.exists()


def test_safetensors_header_starting_like_a_pickle_keeps_its_metadata(tmp_path, golden_mask):
    """A safetensors header length whose first byte is 0x80 (a pickle's opcode) is still read as safetensors,
    with its metadata (regression: the config's resnet_block_groups was silently lost)."""
    from safetensors.torch import save_file

    net = MaskUnet(**{**golden_mask.config, "resnet_block_groups": 4})
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    meta = {"diffinfinite.kind": "mask", "diffinfinite.config": json.dumps(net.config)}
    path = tmp_path / "m.safetensors"
    for pad in range(300):
        save_file(state, str(path), metadata={**meta, "pad": "x" * pad})
        if path.read_bytes()[:1] == b"\x80":
            break
    assert path.read_bytes()[:1] == b"\x80"
    assert load_diffinfinite_checkpoint(path, "mask").config["resnet_block_groups"] == 4
