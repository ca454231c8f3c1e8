"""Device and precision selection, against what this machine really has."""

from __future__ import annotations

import pytest
import torch

from napari_diffinfinite.model.device import DeviceUnavailableError, select_device, select_dtype

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def test_default_is_cuda_then_mps_then_cpu():
    expected = "cuda" if HAS_CUDA else "mps" if HAS_MPS else "cpu"
    assert select_device().type == expected
    assert select_device(None) == select_device("auto") == select_device("AUTO")


@pytest.mark.parametrize("preference", ["cpu", " CPU ", torch.device("cpu")])
def test_cpu_is_always_honoured(preference):
    assert select_device(preference) == torch.device("cpu")


@pytest.mark.parametrize("preference", ["gpu", "cuda:x", "cuda:-1", "nvidia"])
def test_malformed_device_names_are_clear_errors(preference):
    with pytest.raises(ValueError, match="'cpu', 'cuda', 'cuda:<index>' or 'mps'") as info:
        select_device(preference)
    assert "available here: cpu" in str(info.value)


@pytest.mark.parametrize("preference", ["meta", torch.device("meta")])
def test_device_types_we_do_not_run_on_are_refused(preference):
    with pytest.raises(ValueError, match="not supported"):
        select_device(preference)


def test_non_device_values_are_type_errors():
    with pytest.raises(TypeError):
        select_device(0)


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("preference", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_a_clear_error(preference):
    with pytest.raises(DeviceUnavailableError, match="CUDA") as info:
        select_device(preference)
    assert preference in str(info.value) and "available here: cpu" in str(info.value)


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_cuda_devices_are_honoured_and_indices_checked():
    assert select_device("cuda").type == "cuda"
    assert select_device("cuda:0") == torch.device("cuda", 0)
    count = torch.cuda.device_count()
    with pytest.raises(DeviceUnavailableError, match=f"only {count} CUDA device"):
        select_device(f"cuda:{count}")


@pytest.mark.skipif(HAS_MPS, reason="this machine has MPS")
def test_mps_without_mps_is_a_clear_error():
    with pytest.raises(DeviceUnavailableError, match="MPS is not available"):
        select_device("mps")


# ------------------------------------------------------------------------------------------ precision
@pytest.mark.parametrize(
    "preference", [None, "auto", "fp32", "float32", "FP32", "torch.float32", torch.float32]
)
def test_float32_everywhere_by_default(preference):
    assert select_dtype("cpu", preference) == torch.float32
    assert select_dtype(None, preference) == torch.float32


@pytest.mark.parametrize(
    "preference", ["fp16", "half", "float16", torch.float16, "bf16", "bfloat16", torch.bfloat16]
)
def test_half_precision_is_refused_on_cpu(preference):
    with pytest.raises(ValueError, match="not supported on the CPU: use float32"):
        select_dtype("cpu", preference)


@pytest.mark.parametrize("preference", ["fp64", torch.float64, "int8", torch.int8, "float8"])
def test_unknown_or_unsupported_precisions_are_refused(preference):
    with pytest.raises(ValueError, match="float32"):
        select_dtype("cpu", preference)


def test_precision_type_errors_and_device_errors_surface():
    with pytest.raises(TypeError):
        select_dtype("cpu", 16)
    with pytest.raises(ValueError, match="not a device name"):
        select_dtype("gpu", "fp32")


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_half_precision_on_cuda():
    assert select_dtype("cuda", "fp16") == torch.float16
    assert select_dtype("cuda", None) == torch.float32
    if torch.cuda.is_bf16_supported():
        assert select_dtype("cuda", "bf16") == torch.bfloat16
