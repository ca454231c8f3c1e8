"""Shared fixtures: the golden vectors of the reference implementation (copied from ../shared)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).parent / "fixtures"
BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
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


@pytest.fixture
def benchmark_script():
    """A loader of ``benchmarks/<name>.py`` as a fresh module (the scripts are not a package), so tests call
    their ``main`` and functions and a test that patches one module leaves the others alone."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def write_tiny_model(folder: Path, *, contexts=("adenocarcinoma",), downsampling: int = 8) -> Path:
    """A complete, tiny, randomly initialised model folder (model.json + safetensors), as training writes it;
    its image window is 128 px at either ``downsampling``."""
    from napari_diffinfinite.model import CompactAutoencoder, ImageUnet, MaskUnet, save_unet

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    CompactAutoencoder(widths=(8, 8, 8), downsampling=downsampling).save(folder / "autoencoder.safetensors")
    save_unet(ImageUnet(dim=8, num_classes=5, dim_mults=(1, 2), channels=4), folder / "image.safetensors")
    save_unet(MaskUnet(dim=8, num_classes=len(contexts), dim_mults=(1, 2), channels=4), folder / "mask.safetensors")
    manifest = {
        "name": "tiny-test-model",
        "contexts": list(contexts),
        "default_steps": 3,
        "default_omega": 3.0,
        "autoencoder": {"type": "compact", "file": "autoencoder.safetensors"},
        "image": {"file": "image.safetensors", "window": 128 // downsampling},
        "mask": {"file": "mask.safetensors", "codec": {"type": "simplex", "num_labels": 5, "cells_per_latent": 16},
                 "window": 8, "mask_px": 1},
        "pixel_size_um": 0.5,
    }
    (folder / "model.json").write_text(json.dumps(manifest, indent=1))
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_model_dir_4x(tmp_path_factory) -> Path:
    """The tiny model with a 4x autoencoder (latents twice as fine as the 8x one's)."""
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-4x", downsampling=4)


@pytest.fixture
def tiny(tiny_model_dir, monkeypatch):
    """The tiny model, also what the plugin loads (``DIFFINFINITE_MODEL``). Test modules that need the model
    without the plugin define their own ``tiny``."""
    from napari_diffinfinite.widgets import canvas_models

    monkeypatch.setenv(canvas_models.MODEL_ENV, str(tiny_model_dir))
    return canvas_models.get_model(str(tiny_model_dir))


@pytest.fixture
def tiny_not_loaded(tiny_model_dir, monkeypatch) -> list:
    """The tiny model as what the plugin loads, not loaded yet (the cache emptied); returns the threads that
    load it from now on (the real loader, wrapped to note its thread)."""
    import threading

    from napari_diffinfinite import generation
    from napari_diffinfinite.widgets import canvas_models

    monkeypatch.setenv(canvas_models.MODEL_ENV, str(tiny_model_dir))
    canvas_models.clear_cache()
    loads = []
    real_load_model = generation.load_model

    def load_model(*args, **kwargs):
        loads.append(threading.current_thread())
        return real_load_model(*args, **kwargs)

    monkeypatch.setattr(generation, "load_model", load_model)
    return loads


@pytest.fixture
def viewer(make_napari_viewer):
    """A napari viewer; canvas controllers left open by the test are closed after it."""
    from napari_diffinfinite.widgets.canvas_controller import close_all_controllers

    v = make_napari_viewer()
    yield v
    close_all_controllers()


@pytest.fixture
def napari_app_calls(make_napari_viewer, monkeypatch):
    """``napari.Viewer`` made by ``make_napari_viewer`` and ``napari.run`` recorded instead of blocking, so a CLI
    command that opens napari can be driven by a test. Returns the lists (viewers, runs)."""
    import napari

    viewers, runs = [], []

    def viewer_factory(**kwargs):
        viewers.append(make_napari_viewer(**kwargs))
        return viewers[-1]

    monkeypatch.setattr(napari, "Viewer", viewer_factory)
    monkeypatch.setattr(napari, "run", lambda *a, **k: runs.append(True))
    return viewers, runs


# Tests that drive napari or Qt. CI runs the whole suite on the default binding (PyQt6) and these again on
# PyQt5 and on the napari pre-release (`pytest -m napari`, see .ci/run).
_NAPARI_FIXTURES = {"make_napari_viewer", "qtbot", "viewer", "napari_app_calls"}
_NAPARI_MODULES = {"test_plugin_logic", "test_sample_data"}  # reader, writer, demo sample


def pytest_collection_modifyitems(config, items):
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & _NAPARI_FIXTURES or item.module.__name__ in _NAPARI_MODULES:
            item.add_marker(pytest.mark.napari)
