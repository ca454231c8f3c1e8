"""Which model the napari face generates with, loaded once per process. No Qt.

The model source is injectable: :func:`default_model_source` is ``"embedded"`` unless the environment variable
``DIFFINFINITE_MODEL`` names a model folder (tests, benchmarks and screenshots point it at a small model, and a
user can point ``diffinfinite demo`` at their own). :func:`get_model` caches loaded models by
(source, device, checkpoints), so the widget, the demo sample and a reopened canvas share one instance, as the
design asks ("one model instance per process, loaded once, kept on its device").
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

__all__ = [
    "MODEL_ENV",
    "ModelSpec",
    "cached_model",
    "clear_cache",
    "default_model_source",
    "get_model",
    "model_error_message",
]

MODEL_ENV = "DIFFINFINITE_MODEL"

_lock = threading.Lock()
_cache: dict[tuple, object] = {}
_load_lock = threading.Lock()  # one load at a time: a prefetch and the canvas that asks next share one load


def default_model_source() -> str:
    """``$DIFFINFINITE_MODEL`` if set (a model folder), else ``"embedded"``."""
    return os.environ.get(MODEL_ENV) or "embedded"


class ModelSpec:
    """What to load: ``source`` is ``"embedded"``, a model folder, or ``"diffinfinite"`` (the released
    checkpoints: ``image_checkpoint``, optional ``mask_checkpoint``, ``num_classes`` 5 or 10, ``vae`` folder)."""

    def __init__(
        self,
        source: str | os.PathLike = "embedded",
        *,
        device: str | None = None,
        image_checkpoint=None,
        mask_checkpoint=None,
        num_classes: int = 5,
        vae=None,
    ):
        self.source = str(source)
        self.device = None if device in (None, "", "auto") else str(device)
        self.image_checkpoint = None if image_checkpoint in (None, "") else str(image_checkpoint)
        self.mask_checkpoint = None if mask_checkpoint in (None, "") else str(mask_checkpoint)
        self.num_classes = int(num_classes)
        self.vae = None if vae in (None, "") else str(vae)

    @property
    def key(self) -> tuple:
        src = (
            self.source
            if self.source in ("embedded", "diffinfinite")
            else str(Path(self.source).expanduser().resolve())
        )
        return (src, self.device, self.image_checkpoint, self.mask_checkpoint, self.num_classes, self.vae)

    def describe(self) -> str:
        if self.source == "diffinfinite":
            return f"DiffInfinite {self.num_classes}-class ({self.image_checkpoint})"
        return self.source

    def __repr__(self) -> str:
        return f"ModelSpec({self.describe()!r}, device={self.device!r})"


def cached_model(spec: ModelSpec):
    """The model already loaded for ``spec``, or None."""
    with _lock:
        return _cache.get(spec.key)


def get_model(spec: ModelSpec | str | os.PathLike | None = None):
    """Load (once) and return the model for ``spec`` (default: :func:`default_model_source`). Raises what
    :func:`~napari_diffinfinite.generation.load_model` raises: ``FileNotFoundError`` (the embedded model is
    not installed, a folder without ``model.json``), ``CheckpointError`` (a checkpoint of the wrong kind),
    ``DeviceUnavailableError``, ``ValueError``."""
    if spec is None:
        spec = ModelSpec(default_model_source())
    elif not isinstance(spec, ModelSpec):
        spec = ModelSpec(spec)
    with _load_lock:
        with _lock:
            model = _cache.get(spec.key)
        if model is not None:
            return model
        from ..generation import load_model

        if spec.source == "diffinfinite":
            if spec.image_checkpoint is None:
                raise ValueError("choose the DiffInfinite image checkpoint (image_gen*/model-*.pt) first")
            model = load_model(
                "diffinfinite",
                device=spec.device,
                image_checkpoint=spec.image_checkpoint,
                mask_checkpoint=spec.mask_checkpoint,
                num_classes=spec.num_classes,
                vae=spec.vae,
            )
        else:
            model = load_model(spec.source, device=spec.device)
        model.image_unet.eval()
        if model.mask_unet is not None:
            model.mask_unet.eval()
        with _lock:
            return _cache.setdefault(spec.key, model)


def clear_cache() -> None:
    with _lock:
        _cache.clear()


def model_error_message(exc: BaseException, spec: ModelSpec | None = None) -> str:
    """One sentence for a notification about a model that could not be loaded."""
    what = f"the model {spec.describe()!r}" if spec is not None else "the model"
    name = type(exc).__name__
    if name == "CheckpointError":
        return f"Cannot load {what}: {exc}"
    if isinstance(exc, FileNotFoundError):
        return f"Cannot load {what}: {exc}. Choose a model folder or checkpoint in the DiffInfinite widget."
    if isinstance(exc, ImportError):
        return f"Cannot load {what}: a package it needs is missing ({exc})."
    return f"Cannot load {what}: {exc}"
