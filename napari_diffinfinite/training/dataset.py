"""Training data in the reference's layout: ``stem.<img>`` beside ``stem_mask.png`` (label ids).

Everything is checked when the dataset is built, so a bad file fails at once with its name and the problem,
not hours into training. Patches are small and few, so they are held in memory as uint8.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MASK_SUFFIX = "_mask.png"


class DatasetError(ValueError):
    """A dataset that cannot be trained on; the message names the file and the problem."""


@dataclass
class Patch:
    name: str
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) int64 label ids; all zero for unlabelled images

    @property
    def labels(self) -> set[int]:
        return set(np.unique(self.mask).tolist())


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:  # opened by content: the published patches are PNGs named .jpg
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f"{path}: cannot be read as an image ({e})") from None


def _read_mask(path: Path, class_map: dict[int, int] | None, num_classes: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "I", "I;16", "I;16B", "P"):
                raise DatasetError(
                    f"{path}: a mask must be a single-channel label image (8- or 16-bit), got mode {im.mode}"
                )
            mask = np.asarray(im).astype(np.int64)
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f"{path}: cannot be read as a mask image ({e})") from None
    if class_map is not None:
        unknown = sorted(set(np.unique(mask).tolist()) - set(class_map))
        if unknown:
            raise DatasetError(f"{path}: labels {unknown} are not in the class map")
        lut = np.zeros(max(class_map) + 1, dtype=np.int64)
        for src, dst in class_map.items():
            lut[src] = dst
        mask = lut[mask]
    bad = sorted(set(np.unique(mask).tolist()) - set(range(num_classes)))
    if bad:
        ys, xs = np.nonzero(np.isin(mask, bad))
        raise DatasetError(
            f"{path}: labels {bad} are out of range 0..{num_classes - 1} ({len(ys)} pixels, first at "
            f"y={ys[0]}, x={xs[0]}); fix the mask or give a class map"
        )
    return mask


def load_class_map(path) -> dict[int, int]:
    """A JSON object mapping label ids in the masks to the model's label ids, e.g. ``{"0": 0, "7": 2}``."""
    try:
        raw = json.loads(Path(path).read_text())
        return {int(k): int(v) for k, v in raw.items()}
    except (OSError, ValueError, AttributeError) as e:
        raise DatasetError(f"{path}: not a class map (a JSON object of label -> label): {e}") from None


def scan_folder(
    folder, num_classes: int, class_map: dict[int, int] | None = None, recursive: bool = True
) -> list[Patch]:
    """Labelled patches of a folder: every image needs its ``<stem>_mask.png`` of the same size."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder")
    files = sorted(folder.rglob("*") if recursive else folder.iterdir())
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.endswith(MASK_SUFFIX)]
    if not images:
        raise DatasetError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    missing = [p for p in images if not p.with_name(p.stem + MASK_SUFFIX).is_file()]
    if missing:
        listed = ", ".join(str(p.relative_to(folder)) for p in missing[:10])
        raise DatasetError(
            f"{folder}: {len(missing)} image(s) have no mask <stem>{MASK_SUFFIX}: {listed}"
            + (" ..." if len(missing) > 10 else "")
            + "; add the masks, or pass images without labels as unlabelled folders"
        )
    patches = []
    for p in images:
        image = _read_image(p)
        mask_path = p.with_name(p.stem + MASK_SUFFIX)
        mask = _read_mask(mask_path, class_map, num_classes)
        if mask.shape != image.shape[:2]:
            raise DatasetError(
                f"{mask_path}: mask is {mask.shape[::-1]} px but its image is {image.shape[1::-1]} px"
            )
        patches.append(Patch(str(p.relative_to(folder)), image, mask))
    return patches


def scan_unlabelled(folder) -> list[Patch]:
    """Images without masks: they train the null condition (class 0, all-zero mask)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder")
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.endswith(MASK_SUFFIX)
    )
    if not files:
        raise DatasetError(f"{folder}: no images found in this unlabelled folder")
    out = []
    for p in files:
        image = _read_image(p)
        out.append(Patch(str(p.relative_to(folder)), image, np.zeros(image.shape[:2], dtype=np.int64)))
    return out


def stratified_holdout(
    patches: Sequence[Patch], n: int, labels: Iterable[int], min_per_label: int = 2, seed: int = 0
) -> list[str]:
    """Names of ``n`` patches to hold out so that every label in ``labels`` appears in >= ``min_per_label``.

    Rare labels are served first; the rest is filled at random. Deterministic for a seed.
    """
    rng = random.Random(seed)
    order = list(patches)
    rng.shuffle(order)
    chosen: list[Patch] = []
    labels = list(labels)
    for label in sorted(labels, key=lambda l: sum(l in p.labels for p in patches)):
        have = sum(label in p.labels for p in chosen)
        for p in order:
            if have >= min_per_label:
                break
            if label in p.labels and p not in chosen:
                chosen.append(p)
                have += 1
        if have < min_per_label:
            raise DatasetError(
                f"label {label} appears in only {have} patch(es); cannot hold out {min_per_label}"
            )
    for p in order:
        if len(chosen) >= n:
            break
        if p not in chosen:
            chosen.append(p)
    if len(chosen) > n:
        raise DatasetError(
            f"holding out {min_per_label} per label needs {len(chosen)} patches, more than {n}"
        )
    return sorted(p.name for p in chosen)


class PatchDataset(torch.utils.data.Dataset):
    """Random crops with flips and 90-degree rotations (tissue has no orientation), image and mask alike.

    Returns ``(image, mask)``: float (3, S, S) in [0, 1] and int64 (S, S).
    """

    def __init__(self, patches: Sequence[Patch], crop: int | None = None, augment: bool = True):
        if not patches:
            raise DatasetError("no patches to train on")
        self.patches = list(patches)
        self.crop = crop
        self.augment = augment

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, i: int):
        p = self.patches[i]
        image, mask = p.image, p.mask
        h, w = mask.shape
        if self.crop is not None and self.crop < min(h, w):
            y, x = random.randrange(h - self.crop + 1), random.randrange(w - self.crop + 1)
            image, mask = (
                image[y : y + self.crop, x : x + self.crop],
                mask[y : y + self.crop, x : x + self.crop],
            )
        if self.augment:
            k = random.randrange(4)
            image, mask = np.rot90(image, k), np.rot90(mask, k)
            if random.random() < 0.5:
                image, mask = image[:, ::-1], mask[:, ::-1]
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
        return image, torch.from_numpy(np.ascontiguousarray(mask))


def infinite_batches(dataset: torch.utils.data.Dataset, batch: int):
    """Shuffled batches for ever (epochs of a small in-memory dataset)."""
    if len(dataset) < batch:
        raise DatasetError(
            f"{len(dataset)} patches are fewer than one batch of {batch}; lower the batch size"
        )
    while True:
        yield from torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True)
