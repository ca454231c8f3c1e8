"""Shared fixtures: the golden vectors of the reference implementation (copied from ../shared)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "golden"
MANIFESTS = FIXTURES / "manifests"


class Golden:
    """One golden network: its config, weights (``model.`` prefix stripped) and input/output tensors."""

    def __init__(self, name: str):
        self.meta = json.loads((GOLDEN / f"{name}.json").read_text())
        self.config = self.meta["unet_config"]
        self.weights_path = GOLDEN / f"{name}.weights.safetensors"
        self.prefixed_weights = load_file(str(self.weights_path))
        self.weights = {k.removeprefix("model."): v for k, v in self.prefixed_weights.items()}
        self.io = load_file(str(GOLDEN / f"{name}.io.safetensors"))


@pytest.fixture(scope="session")
def golden_image() -> Golden:
    return Golden("image_model_public")


@pytest.fixture(scope="session")
def golden_mask() -> Golden:
    return Golden("mask_model_public")


# One thread: the suite's networks are tiny, and on a loaded 2-core machine two threads per process
# oversubscribe the cores (a 20 ms forward pass becomes seconds).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield
