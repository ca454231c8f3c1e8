"""The trials of a blinded real-vs-synthetic survey: patches, their classes, blind ids and a seeded order.

Pure Python + numpy + Pillow (tifffile for TIFF patches); the generator (torch) is imported only when synthetic
patches are generated on the fly. No napari, no Qt.
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REAL = "real"
SYNTHETIC = "synthetic"

#: Suffixes of image files a survey folder may hold (matched case-insensitively; PNG content under a .jpg
#: name is fine: images are opened by content).
IMAGE_SUFFIXES = (".ome.tif", ".ome.tiff", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
_MASK_SUFFIXES = ("_mask.png", "_mask.ome.tif", "_mask.ome.tiff", "_mask.tif", "_mask.tiff")
_ID_SALT = b"napari-diffinfinite survey patch\0"


@dataclass(frozen=True)
class Patch:
    """One image shown to raters. ``patch_id`` is derived from the file's bytes only: it says nothing about
    the truth or the file name. ``class_name`` is the dominant non-zero label of a ``<stem>_mask.png`` beside
    the image, or None when there is no mask (or only label 0)."""

    path: Path
    truth: str
    patch_id: str
    class_name: str | None
    size: tuple[int, int]  # (height, width)

    @property
    def is_synthetic(self) -> bool:
        return self.truth == SYNTHETIC


@dataclass(frozen=True)
class Trial:
    """Position ``number`` (1-based) of the blinded order and the patch shown there."""

    number: int
    patch: Patch


def _name_stem(path: Path) -> str | None:
    """The stem of an image file name, or None when it is not a survey image (masks, sidecars, hidden files)."""
    name = path.name
    low = name.lower()
    if name.startswith(".") or any(low.endswith(s) for s in _MASK_SUFFIXES):
        return None
    for suffix in IMAGE_SUFFIXES:
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return None


def list_images(folder: str | Path) -> list[Path]:
    """The image files directly in ``folder`` (not masks ``*_mask.*``, not sidecars), sorted by name."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and _name_stem(p) is not None)


def mask_path(image: Path) -> Path | None:
    """The mask beside ``image`` (``<stem>_mask.png`` or ``<stem>_mask.ome.tif`` ...), if there is one."""
    stem = _name_stem(image)
    if stem is None:
        return None
    for suffix in _MASK_SUFFIXES:
        candidate = image.with_name(stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def _is_tiff(path: Path) -> bool:
    return path.name.lower().endswith((".tif", ".tiff"))


def read_array(path: str | Path) -> np.ndarray:
    """An image file's pixels (full resolution; level 0 of a pyramidal TIFF), as stored."""
    path = Path(path)
    if _is_tiff(path):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return np.asarray(tif.series[0].levels[0].asarray())
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


def load_patch(path: str | Path) -> np.ndarray:
    """A patch as (H, W, 3) uint8 RGB: grey is repeated, alpha dropped, 16-bit scaled down."""
    path = Path(path)
    if not _is_tiff(path):
        from PIL import Image

        with Image.open(path) as im:
            if im.mode not in ("RGB", "L", "RGBA", "LA", "P", "CMYK", "YCbCr"):
                a = np.asarray(im)
            else:
                return np.asarray(im.convert("RGB"))
    else:
        a = read_array(path)
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[2] not in (3, 4):  # planar (C, H, W)
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] < 3:
        raise ValueError(f"{path}: not an RGB or grey image (shape {a.shape})")
    a = a[..., :3]
    if a.dtype == np.uint16:
        a = (a.astype(np.uint32) * 255 + 32767) // 65535
    elif a.dtype != np.uint8:
        raise ValueError(f"{path}: unsupported pixel type {a.dtype} (uint8 or uint16 RGB expected)")
    return np.ascontiguousarray(a.astype(np.uint8, copy=False))


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image without decoding its pixels."""
    path = Path(path)
    if _is_tiff(path):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, shape = series.axes, series.levels[0].shape
            return int(shape[axes.index("Y")]), int(shape[axes.index("X")])
    from PIL import Image

    with Image.open(path) as im:
        width, height = im.size
    return int(height), int(width)


def dominant_label(mask: np.ndarray) -> int | None:
    """The most frequent non-zero label of a mask (ties: the smaller id), or None when all of it is 0."""
    m = np.asarray(mask)
    if m.ndim == 3:  # an RGB-saved mask: its first channel holds the ids
        m = m[..., 0]
    values = m[m > 0].astype(np.int64).ravel()
    if values.size == 0:
        return None
    return int(np.bincount(values).argmax())


def class_of(image: Path, class_names: Sequence[str]) -> str | None:
    """The class name of ``image`` from the mask beside it (its dominant non-zero label), or None."""
    mask = mask_path(image)
    if mask is None:
        return None
    label = dominant_label(read_array(mask))
    if label is None:
        return None
    return class_names[label] if label < len(class_names) else f"label {label}"


def blind_id(data: bytes, used: set[str]) -> str:
    """A short id from a file's bytes only (salted SHA-256), unique within ``used`` (which it joins)."""
    digest = hashlib.sha256(_ID_SALT + data).hexdigest()
    k = 0
    candidate = "p" + digest[:10]
    while candidate in used:  # identical files: chain the hash, deterministically
        k += 1
        candidate = "p" + hashlib.sha256(f"{digest}:{k}".encode()).hexdigest()[:10]
    used.add(candidate)
    return candidate


def make_patches(
    real: Sequence[Path], synthetic: Sequence[Path], class_names: Sequence[str]
) -> tuple[list[Patch], list[Patch]]:
    """Patches of both kinds; ids are assigned in a fixed order (real then synthetic, each sorted by path), so
    the same files always get the same ids."""
    used: set[str] = set()
    out: dict[str, list[Patch]] = {REAL: [], SYNTHETIC: []}
    for truth, paths in ((REAL, real), (SYNTHETIC, synthetic)):
        for p in sorted(Path(x) for x in paths):
            out[truth].append(
                Patch(
                    path=p,
                    truth=truth,
                    patch_id=blind_id(p.read_bytes(), used),
                    class_name=class_of(p, class_names),
                    size=image_size(p),
                )
            )
    return out[REAL], out[SYNTHETIC]


def rater_seed(rater_id: str) -> int:
    """The order seed of a rater when the organiser gives none: fixed per rater id, so a crashed session
    resumes in the same order, and different between raters."""
    return int.from_bytes(hashlib.sha256(b"survey order\0" + rater_id.encode("utf-8")).digest()[:8], "big")


def build_trials(
    real: Sequence[Patch], synthetic: Sequence[Patch], *, seed: int, n_trials: int | None = None
) -> list[Trial]:
    """The blinded order: all patches (``n_trials`` None) or ``n_trials`` of them drawn balanced (half real,
    half synthetic; the odd one's kind drawn from the seed), shuffled by ``seed``. The same inputs and seed
    always give the same order."""
    rng = random.Random(int(seed))
    real = sorted(real, key=lambda p: p.patch_id)
    synthetic = sorted(synthetic, key=lambda p: p.patch_id)
    if n_trials is None:
        chosen = list(real) + list(synthetic)
    else:
        n = int(n_trials)
        if n < 1:
            raise ValueError(f"n_trials must be at least 1, got {n}")
        n_real = n_syn = n // 2
        if n % 2:
            if rng.random() < 0.5:
                n_real += 1
            else:
                n_syn += 1
        if n_real > len(real) or n_syn > len(synthetic):
            raise ValueError(
                f"{n} balanced trials need {max(n_real, n_syn)} patches of each kind; there are {len(real)} real "
                f"and {len(synthetic)} synthetic patches"
            )
        chosen = rng.sample(real, n_real) + rng.sample(synthetic, n_syn)
    if not chosen:
        raise ValueError("no patches: the survey needs real and synthetic images")
    rng.shuffle(chosen)
    return [Trial(number=i + 1, patch=p) for i, p in enumerate(chosen)]


@dataclass
class GeneratorSettings:
    """Synthetic patches generated on the fly with :func:`napari_diffinfinite.generate`.

    ``model``: ``"embedded"``, a model folder, or a loaded ``DiffInfiniteModel``. ``count``: how many (None: as
    many as the survey needs). ``size``: (H, W) or None for the real patches' sizes (patch k takes the size of
    real patch k, cycling). ``seed``: patch k uses ``seed + k``. Results are cached in ``cache_folder`` (None: a
    folder under the system temp folder keyed by these settings), so a resumed survey shows the same images.
    """

    model: object = "embedded"
    count: int | None = None
    size: tuple[int, int] | None = None
    seed: int = 0
    steps: int | None = None
    omega: float | None = None
    context: str = "adenocarcinoma"
    device: str | None = None
    cache_folder: Path | None = None

    def model_label(self) -> str:
        m = self.model
        return str(m) if isinstance(m, (str, Path)) else str(getattr(m, "name", type(m).__name__))

    def cache_dir(self, sizes: Sequence[tuple[int, int]]) -> Path:
        if self.cache_folder is not None:
            return Path(self.cache_folder).expanduser()
        key = json.dumps(
            {
                "model": self.model_label(),
                "sizes": [list(s) for s in sizes],
                "seed": self.seed,
                "steps": self.steps,
                "omega": self.omega,
                "context": self.context,
            },
            sort_keys=True,
        )
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / "napari-diffinfinite-survey" / digest


def generated_sizes(settings: GeneratorSettings, real: Sequence[Patch], count: int) -> list[tuple[int, int]]:
    if settings.size is not None:
        h, w = settings.size
        return [(int(h), int(w))] * count
    if not real:
        raise ValueError("give a size for generated patches, or real patches to match")
    ordered = sorted(real, key=lambda p: p.patch_id)
    return [ordered[k % len(ordered)].size for k in range(count)]


def generate_patches(
    settings: GeneratorSettings,
    sizes: Sequence[tuple[int, int]],
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    pixel_size_um: float | None = None,
) -> list[Path]:
    """Generate (or reuse from the cache) one synthetic patch per size; returns the image paths, each with its
    ``_mask.png`` beside it. File names are neutral (``g0000.png``). ``pixel_size_um`` (the real patches'
    magnification, when known) must match the model's."""
    from ..io import write_png

    folder = settings.cache_dir(sizes)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"g{k:04d}.png" for k in range(len(sizes))]
    todo = [
        k for k, p in enumerate(paths) if not (p.is_file() and p.with_name(p.stem + "_mask.png").is_file())
    ]
    model = None
    if todo:
        model = settings.model
        if isinstance(model, (str, Path)):
            from ..generation import load_model

            model = load_model(model, device=settings.device)
    if model is not None and pixel_size_um is not None:
        ratio = float(model.pixel_size_um) / float(pixel_size_um)
        if abs(ratio - 1) > 0.05:
            raise ValueError(
                f"the model generates {model.pixel_size_um} um/px but the real patches are {pixel_size_um} um/px: "
                "the magnifications differ, raters would see the scale"
            )
    total = len(sizes)
    done = total - len(todo)
    if progress is not None:
        progress(done, total)
    for k in todo:
        if cancel is not None and cancel():
            raise InterruptedError("generation cancelled")
        from ..generation import generate

        result = generate(
            model,
            size=tuple(sizes[k]),
            seed=int(settings.seed) + k,
            steps=settings.steps,
            omega=settings.omega,
            context=settings.context,
        )
        # the mask first: an image without its mask is regenerated next time
        write_png(paths[k].with_name(paths[k].stem + "_mask.png"), result.mask, overwrite=True)
        write_png(paths[k], result.image, overwrite=True)
        done += 1
        if progress is not None:
            progress(done, total)
    return paths
