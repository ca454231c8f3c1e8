"""Quality figures for a DiffInfinite model: the measurements of issue 4 ("Quality, measured").

Each metric is a small function on numpy arrays (uint8 RGB images ``(H, W, 3)``, label masks ``(H, W)``), so it
can be tested on synthetic arrays with known answers; :func:`evaluate` runs them all on a model and a labelled
dataset split into training and held-out patches, and returns a JSON-ready report and a sample grid.

The measurements and their targets (:data:`TARGETS`):

- **Reconstruction** (:func:`reconstruction_psnr`): autoencoder PSNR on the held-out patches, images rounded
  to uint8 after decoding, as a user sees them. Target: mean >= 26 dB.
- **Colour per class** (:func:`lab_stats`, :func:`delta_e`): mean and spread of CIELAB colour over one label's
  pixels, generated (with the held-out masks) vs held-out. Distance: CIE76 Delta E (Euclidean in L*a*b*).
  Target: <= 8 for every class.
- **Texture per class** (:func:`hf_energy`): mean squared Laplacian of L* over one label's pixels, the label
  region eroded so that class borders do not count; the generated / held-out ratio must be >= 0.7 (not blurry).
- **Class dependence** (:func:`class_separation`): the same mask filled with one class (carcinoma, necrosis,
  stroma), several seeds; the CIE76 distance between class mean colours must exceed the within-class spread.
- **Anti-copying** (:func:`anti_copying`): nearest-neighbour distances of 64-px Lab thumbnails, generated ->
  training, against training -> other training patches; the 1st percentile of the former must be >= the 5th
  percentile of the latter.
- **Seams** (:func:`seam_report`): :func:`~napari_diffinfinite.sampling.seams.seam_ratio` on generated large
  images; target <= 1.10.

And the measurements of issue 15 ("Recognisable tissue"), run by
``benchmarks/quality.py --nuclear --realism``:

- **Nuclear structure** (:func:`nucleus_blobs`, :func:`nuclear_structure`, :func:`nuclear_report`):
  haematoxylin-positive area fraction and nucleus-like blob density, whole images and per class, and the share
  of 128-px cells holding a blob; every training mask through the model, pooled, against the training
  patches. Target: generated / training within 0.67-1.5 (:data:`NUCLEAR_TARGET`) for the whole images,
  carcinoma and the cell occupancy. :func:`reconstruction_nuclear`: the same for the autoencoder's
  reconstructions (the ceiling).
- **Realism** (:func:`classifier_two_sample`, :func:`realism_report`): the held-out accuracy of a small CNN
  telling 96-px crops of one image set from another's, split by image; 0.5 = indistinguishable.

Label 0 ("Unknown", also the classifier-free-guidance null class and the class-border band) is never
evaluated as a class. Pure numpy / scipy / scikit-image / Pillow; torch only to run the model and the realism
classifier.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.color import rgb2lab
from skimage.transform import resize

from ._json import plain_json

__all__ = [
    "C2ST_BATCH",
    "C2ST_CROP",
    "C2ST_CROPS_PER_IMAGE",
    "C2ST_LR",
    "C2ST_STEPS",
    "CLASS_LABELS",
    "DEPENDENCE_LABELS",
    "HAEMATOXYLIN_THRESHOLD",
    "NUCLEAR_TARGET",
    "NUCLEUS_AREA",
    "NUCLEUS_MAX_ECCENTRICITY",
    "NUCLEUS_MIN_SOLIDITY",
    "NUCLEUS_OPENING_RADIUS",
    "OCCUPANCY_CELL",
    "SYNTHETIC_NOTE",
    "TARGETS",
    "EvaluationResult",
    "anti_copying",
    "best_crop",
    "cell_occupancy",
    "class_dependence",
    "class_name",
    "class_region",
    "class_separation",
    "classifier_accuracy",
    "classifier_two_sample",
    "compare_classes",
    "compare_nuclear",
    "delta_e",
    "evaluate",
    "evenly_spaced",
    "format_nuclear",
    "format_realism",
    "format_report",
    "generate_from_masks",
    "hf_energy",
    "image_crops",
    "lab_stats",
    "lab_thumbnail",
    "laplacian_energy",
    "load_holdout",
    "nearest_neighbour_distances",
    "nuclear_definition",
    "nuclear_report",
    "nuclear_structure",
    "nucleus_blobs",
    "psnr",
    "real_data_reference",
    "realism_report",
    "reconstruct",
    "reconstruction_nuclear",
    "reconstruction_psnr",
    "sample_grid",
    "seam_report",
    "split_holdout",
    "write_report",
]

#: Classes evaluated per class (label 0 excluded): carcinoma, necrosis, tumour stroma, others.
CLASS_LABELS: tuple[int, ...] = (1, 2, 3, 4)
#: Classes of the class-dependence test: carcinoma, necrosis, tumour stroma.
DEPENDENCE_LABELS: tuple[int, ...] = (1, 2, 3)
#: The targets of issue 4.
TARGETS = {
    "psnr_db_min_mean": 26.0,  # mean reconstruction PSNR >= this
    "delta_e_max": 8.0,  # per-class CIE76 Delta E between mean colours <= this
    "hf_ratio_min": 0.7,  # per-class generated / held-out Laplacian energy >= this
    "seam_ratio_max": 1.10,  # seam ratio of every large generated image <= this
}
SYNTHETIC_NOTE = "synthetic - research/demo use, not for diagnosis"


def class_name(label: int, num_classes: int = 5) -> str:
    """The name of a label id in the model's class set (``"Carcinoma"`` for 1 of the 5-class set)."""
    from .classes import CLASS_SETS

    classes = CLASS_SETS.get(num_classes)
    if classes is not None and 0 <= label < len(classes):
        return classes[label].name
    return f"label {label}"


# --------------------------------------------------------------------------------------------------------
# reconstruction


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB between two images of the same shape (``inf`` if identical).

    ``10 log10(peak^2 / MSE)``, the MSE over every pixel and channel; ``peak`` is 255 for uint8 images.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"psnr needs images of the same shape, got {a.shape} and {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(peak * peak / mse)


def reconstruct(autoencoder, image: np.ndarray) -> np.ndarray:
    """Encode and decode one uint8 RGB image ``(H, W, 3)``; returns it as uint8, as a user would see it.

    The image is padded (reflected) to a multiple of the autoencoder's downsampling and cropped back.
    ``autoencoder`` follows :class:`~napari_diffinfinite.model.autoencoder.Autoencoder` (``encode`` takes
    float images in [0, 1], ``decode`` returns them clipped to [0, 1]).
    """
    import torch

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"reconstruct needs a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    d = int(getattr(autoencoder, "downsampling", 1))
    padded = np.pad(image, ((0, -h % d), (0, -w % d), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")
    x = torch.from_numpy(np.ascontiguousarray(padded)).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        y = autoencoder.decode(autoencoder.encode(x))
    y = y[0, :, :h, :w].float().clamp(0, 1).cpu()
    return (y * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _named_images(patches) -> list[tuple[str, np.ndarray]]:
    out = []
    for i, p in enumerate(patches):
        if hasattr(p, "image"):
            out.append((str(getattr(p, "name", i)), np.asarray(p.image)))
        else:
            out.append((str(i), np.asarray(p)))
    return out


def reconstruction_psnr(autoencoder, patches) -> dict:
    """Autoencoder PSNR (dB) per patch, with the mean and minimum over the patches.

    ``patches``: objects with ``.name`` and ``.image`` (e.g. :class:`~napari_diffinfinite.training.dataset.Patch`)
    or plain uint8 images. The decoded image is rounded to uint8 before the comparison.
    Returns ``{"mean_db", "min_db", "per_patch": {name: dB}, "target_db", "pass"}``.
    """
    per = {name: psnr(image, reconstruct(autoencoder, image)) for name, image in _named_images(patches)}
    if not per:
        raise ValueError("reconstruction_psnr needs at least one patch")
    values = list(per.values())
    mean = float(np.mean(values))
    return {
        "mean_db": mean,
        "min_db": float(min(values)),
        "per_patch": per,
        "target_db": TARGETS["psnr_db_min_mean"],
        "pass": bool(mean >= TARGETS["psnr_db_min_mean"]),
    }


# --------------------------------------------------------------------------------------------------------
# colour and texture per class


def class_region(mask: np.ndarray, label: int, erode: int = 0) -> np.ndarray:
    """Boolean map of ``label``'s pixels, eroded by ``erode`` px (3x3 cross steps; the image border counts
    as outside, so pixels near the edge are dropped too)."""
    region = np.asarray(mask) == label
    if erode > 0 and region.any():
        region = ndimage.binary_erosion(region, iterations=int(erode), border_value=0)
    return region


def _pairs(images, masks) -> list[tuple[np.ndarray, np.ndarray]]:
    images, masks = list(images), list(masks)
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    out = []
    for image, mask in zip(images, masks):
        image, mask = np.asarray(image), np.asarray(mask)
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != mask.shape:
            raise ValueError(f"an (H, W, 3) image needs an (H, W) mask, got {image.shape} and {mask.shape}")
        out.append((image, mask))
    return out


def lab_stats(images, masks, label: int, erode: int = 0) -> dict | None:
    """Mean and standard deviation of CIELAB colour (skimage ``rgb2lab``, D65) over ``label``'s pixels.

    The pixels of all images are pooled. Returns ``{"mean": [L, a, b], "std": [L, a, b], "pixels": n,
    "images": k}`` (``k``: images holding the label), or ``None`` if no image holds a pixel of the label.
    """
    total = np.zeros(3)
    total_sq = np.zeros(3)
    n = k = 0
    for image, mask in _pairs(images, masks):
        region = class_region(mask, label, erode)
        if not region.any():
            continue
        lab = rgb2lab(image[region][None])[0].astype(np.float64)  # only the label's pixels: (N, 3)
        total += lab.sum(axis=0)
        total_sq += (lab**2).sum(axis=0)
        n += lab.shape[0]
        k += 1
    if n == 0:
        return None
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean**2, 0.0))
    return {"mean": mean.tolist(), "std": std.tolist(), "pixels": int(n), "images": int(k)}


def delta_e(mean_a, mean_b) -> float:
    """CIE76 colour difference: the Euclidean distance between two L*a*b* colours."""
    a = np.asarray(mean_a, dtype=np.float64)
    b = np.asarray(mean_b, dtype=np.float64)
    return float(np.sqrt(np.sum((a - b) ** 2)))


def laplacian_energy(image: np.ndarray) -> np.ndarray:
    """Squared Laplacian (5-point stencil, reflected borders) of the CIELAB lightness L* (0..100), per pixel."""
    image = np.asarray(image)
    lightness = rgb2lab(image)[..., 0] if image.ndim == 3 else np.asarray(image, dtype=np.float64)
    return ndimage.laplace(lightness.astype(np.float64), mode="reflect") ** 2


def hf_energy(images, masks, label: int, erode: int = 4) -> float | None:
    """High-frequency energy of one class: the mean squared Laplacian of L* over ``label``'s pixels.

    The label region is eroded by ``erode`` px first, so the lightness steps at class borders (and the image
    edges) do not count. Pixels of all images are pooled. ``None`` if no pixel is left.
    """
    total, n = 0.0, 0
    for image, mask in _pairs(images, masks):
        region = class_region(mask, label, erode)
        if not region.any():
            continue
        total += float(laplacian_energy(image)[region].sum())
        n += int(region.sum())
    return None if n == 0 else total / n


def compare_classes(
    real_images,
    real_masks,
    gen_images,
    gen_masks,
    labels: Iterable[int] = CLASS_LABELS,
    *,
    erode: int = 4,
    num_classes: int = 5,
) -> dict:
    """Per class, generated vs real: Lab mean/std of each side, the CIE76 Delta E between the means, the
    high-frequency energies and their ratio (generated / real), each checked against :data:`TARGETS`.

    Colour statistics use the label's pixels as they are; the texture energy erodes them by ``erode`` px.
    A class missing on either side gets ``None`` figures and no pass/fail (``"pass": None``).
    """
    real = _pairs(real_images, real_masks)
    gen = _pairs(gen_images, gen_masks)
    out = {}
    for label in labels:
        r = lab_stats([i for i, _ in real], [m for _, m in real], label)
        g = lab_stats([i for i, _ in gen], [m for _, m in gen], label)
        hr = hf_energy([i for i, _ in real], [m for _, m in real], label, erode)
        hg = hf_energy([i for i, _ in gen], [m for _, m in gen], label, erode)
        de = None if r is None or g is None else delta_e(r["mean"], g["mean"])
        ratio = None if hr is None or hg is None or hr == 0 else hg / hr
        out[str(label)] = {
            "name": class_name(label, num_classes),
            "real": r,
            "generated": g,
            "delta_e": de,
            "hf_real": hr,
            "hf_generated": hg,
            "hf_ratio": ratio,
            "pass_delta_e": None if de is None else bool(de <= TARGETS["delta_e_max"]),
            "pass_hf": None if ratio is None else bool(ratio >= TARGETS["hf_ratio_min"]),
        }
    return out


# --------------------------------------------------------------------------------------------------------
# class dependence


def image_lab_mean(image: np.ndarray, region: np.ndarray | None = None) -> np.ndarray:
    """Mean L*a*b* colour of an image (or of the pixels in ``region``)."""
    image = np.asarray(image)
    pixels = image.reshape(-1, 3) if region is None else image[region]
    return rgb2lab(pixels[None])[0].astype(np.float64).mean(axis=0)


def class_separation(means: Mapping[int, Sequence]) -> dict:
    """Are classes told apart? ``means``: per class, the Lab means of its images (``(n, 3)``, one per image;
    any other per-image feature vector ``(n, k)`` works the same way, with Euclidean distances).

    The within-class spread is the standard deviation of a class's per-image means, as one distance: the root
    mean squared CIE76 distance of the image means to their centroid (``sqrt(sum of the per-channel
    variances)``). A pair of classes passes when the distance between their centroids exceeds the larger of
    their two spreads; the test passes when every pair does.
    """
    centroids, spreads, counts = {}, {}, {}
    for label, values in means.items():
        arr = np.asarray(values, dtype=np.float64)
        arr = arr.reshape(arr.shape[0], -1) if arr.ndim else arr.reshape(1, 1)
        if arr.shape[0] == 0:
            raise ValueError(f"class {label} has no image means")
        centroids[label] = arr.mean(axis=0)
        spreads[label] = float(np.sqrt(((arr - centroids[label]) ** 2).sum(axis=1).mean()))
        counts[label] = int(arr.shape[0])
    labels = list(centroids)
    pairs = {}
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            d = delta_e(centroids[a], centroids[b])
            s = max(spreads[a], spreads[b])
            pairs[f"{a}-{b}"] = {"distance": d, "spread": s, "pass": bool(d > s)}
    return {
        "centroids": {str(k): v.tolist() for k, v in centroids.items()},
        "spread": {str(k): v for k, v in spreads.items()},
        "images": {str(k): v for k, v in counts.items()},
        "pairs": pairs,
        "min_distance": min((p["distance"] for p in pairs.values()), default=None),
        "max_spread": max(spreads.values()) if spreads else None,
        "pass": bool(pairs) and all(p["pass"] for p in pairs.values()),
    }


def class_dependence(
    model,
    labels: Iterable[int] = DEPENDENCE_LABELS,
    seeds: Iterable[int] = (0, 1, 2),
    *,
    size: int = 256,
    steps: int | None = None,
    **generate_kwargs,
) -> tuple[dict, dict]:
    """Generate a ``size`` x ``size`` mask filled with one class, for each class and seed, and measure
    :func:`class_separation` of the images' Lab means (the pass criterion). For information, ``"texture"``
    is the same separation of ``log10`` :func:`hf_energy` per image (texture, which mean colour misses).
    Returns ``(report, {label: [images]})``."""
    from .generation import generate

    images: dict[int, list[np.ndarray]] = {}
    means: dict[int, list[np.ndarray]] = {}
    for label in labels:
        mask = np.full((size, size), int(label), dtype=np.int64)
        for seed in seeds:
            image = generate(model, mask=mask, seed=int(seed), steps=steps, **generate_kwargs).image
            images.setdefault(label, []).append(image)
            means.setdefault(label, []).append(image_lab_mean(image))
    report = class_separation(means)
    report["texture"] = class_separation(
        {k: [_log_hf(im, np.ones(im.shape[:2], bool)) for im in v] for k, v in images.items()}
    )
    report["names"] = {str(k): class_name(k, model.num_classes) for k in means}
    report["size"] = size
    return report, images


def _log_hf(image: np.ndarray, region: np.ndarray, erode: int = 4) -> float:
    """log10 of the mean squared Laplacian of L* over ``region`` eroded by ``erode`` px (1e-6 floor)."""
    value = hf_energy([image], [region.astype(np.int64)], 1, erode)
    return math.log10(max(value or 0.0, 1e-6))


# --------------------------------------------------------------------------------------------------------
# anti-copying


def lab_thumbnail(image: np.ndarray, size: int = 64) -> np.ndarray:
    """An image shrunk to ``size`` x ``size`` (area averaging in RGB) and converted to L*a*b*: ``(size, size, 3)``."""
    image = np.asarray(image)
    h, w = image.shape[:2]
    rgb = image.astype(np.float64) / (255.0 if image.dtype == np.uint8 else 1.0)
    if h % size == 0 and w % size == 0:
        small = rgb.reshape(size, h // size, size, w // size, 3).mean(axis=(1, 3))
    else:
        small = resize(rgb, (size, size, 3), anti_aliasing=True, preserve_range=True)
    return rgb2lab(np.clip(small, 0, 1)).astype(np.float32)


def image_crops(image: np.ndarray, crop: int = 512) -> list[np.ndarray]:
    """Non-overlapping ``crop`` x ``crop`` tiles of an image (whole tiles only, from the top-left); an image
    smaller than ``crop`` on a side is one crop of ``min(crop, H, W)`` px."""
    image = np.asarray(image)
    h, w = image.shape[:2]
    c = min(crop, h, w)
    return [image[y : y + c, x : x + c] for y in range(0, h - c + 1, c) for x in range(0, w - c + 1, c)]


def _dihedral(thumbs: np.ndarray) -> np.ndarray:
    """The 8 rotations / flips of each ``(N, s, s, 3)`` thumbnail: ``(8, N, s, s, 3)``."""
    out = []
    for flip in (False, True):
        t = thumbs[:, :, ::-1] if flip else thumbs
        out.extend(np.rot90(t, k, axes=(1, 2)) for k in range(4))
    return np.stack(out)


def nearest_neighbour_distances(
    queries: np.ndarray,
    references: np.ndarray,
    *,
    exclude_self: bool = False,
    groups: Sequence | None = None,
    dihedral: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """For each query thumbnail ``(N, s, s, 3)``, the distance to its nearest reference ``(M, s, s, 3)`` and
    that reference's index.

    The distance is the root mean square over the thumbnail pixels of the per-pixel CIE76 Delta E (the
    Euclidean distance divided by ``s``), so it reads in Delta E units. With ``dihedral`` the query's 8
    rotations / flips are all tried and the smallest distance counts (training augments with them, so a
    rotated copy is a copy). ``exclude_self`` (queries and references the same set): a thumbnail is not its
    own neighbour, nor any thumbnail of the same ``groups`` entry (e.g. the crops of one patch).
    """
    q = np.asarray(queries, dtype=np.float64)
    r = np.asarray(references, dtype=np.float64)
    if q.ndim != 4 or r.ndim != 4 or q.shape[1:] != r.shape[1:]:
        raise ValueError(f"thumbnails must be (N, s, s, 3) of one size, got {q.shape} and {r.shape}")
    if exclude_self and q.shape[0] != r.shape[0]:
        raise ValueError("exclude_self needs the queries and references to be the same set")
    if r.shape[0] - (1 if exclude_self else 0) < 1:
        raise ValueError("no reference thumbnail to compare with")
    pixels = q.shape[1] * q.shape[2]
    centre = r.reshape(-1, r.shape[-1]).mean(axis=0)  # centred values lose less to cancellation below
    rf = (r - centre).reshape(r.shape[0], -1)
    r2 = (rf**2).sum(axis=1)
    variants = _dihedral(q) if dihedral else q[None]
    best = np.full((q.shape[0], r.shape[0]), np.inf)
    best_variant = np.zeros((q.shape[0], r.shape[0]), dtype=np.int64)
    for k, v in enumerate(variants):
        vf = (np.ascontiguousarray(v) - centre).reshape(v.shape[0], -1)
        d2 = np.maximum((vf**2).sum(axis=1)[:, None] + r2[None, :] - 2.0 * vf @ rf.T, 0.0)
        better = d2 < best
        best = np.where(better, d2, best)
        best_variant = np.where(better, k, best_variant)
    if exclude_self:
        np.fill_diagonal(best, np.inf)
        if groups is not None:
            g = np.asarray(groups)
            if g.shape != (q.shape[0],):
                raise ValueError(f"groups needs one entry per thumbnail ({q.shape[0]}), got {g.shape}")
            best[g[:, None] == g[None, :]] = np.inf
        if not np.isfinite(best).any(axis=1).all():
            raise ValueError("a thumbnail has no reference outside its own group")
    index = best.argmin(axis=1)
    # the nearest pair's distance again, directly (the expansion above is exact only to rounding)
    rows = np.arange(q.shape[0])
    nearest = variants[best_variant[rows, index], rows]
    dist = np.sqrt(((nearest - r[index]) ** 2).reshape(q.shape[0], -1).sum(axis=1) / pixels)
    return dist, index


def _percentiles(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=np.float64)
    return {
        "n": int(values.size),
        "min": float(values.min()),
        "p1": float(np.percentile(values, 1)),
        "p5": float(np.percentile(values, 5)),
        "p50": float(np.percentile(values, 50)),
        "max": float(values.max()),
    }


def anti_copying(
    generated: np.ndarray,
    training: np.ndarray,
    *,
    training_names: Sequence[str] | None = None,
    dihedral: bool = True,
    closest: int = 5,
) -> dict:
    """Nearest-neighbour distances of generated thumbnails to the training thumbnails, against those between
    different training thumbnails (each training patch's nearest other one); both ``(N, s, s, 3)`` Lab, e.g.
    from :func:`lab_thumbnail`. ``training_names``: the patch of each training thumbnail (the crops of one
    patch repeat its name).

    Passes when the 1st percentile of generated -> training distances is >= the 5th percentile of training ->
    training distances: generated patches are no closer to the training set than training patches are to each
    other. Reports both distributions (n, min, percentiles 1/5/50, max) and the ``closest`` generated patches.
    """
    generated = np.asarray(generated)
    training = np.asarray(training)
    if generated.shape[0] < 1 or training.shape[0] < 2:
        raise ValueError("anti_copying needs >= 1 generated and >= 2 training thumbnails")
    g_dist, g_idx = nearest_neighbour_distances(generated, training, dihedral=dihedral)
    names = list(training_names) if training_names is not None else [str(i) for i in range(training.shape[0])]
    if len(names) != training.shape[0]:
        raise ValueError(f"{len(names)} training names for {training.shape[0]} training thumbnails")
    # thumbnails of one training patch (its crops) share a name and are not each other's neighbours
    t_dist, t_idx = nearest_neighbour_distances(
        training, training, exclude_self=True, groups=names, dihedral=dihedral
    )
    g, t = _percentiles(g_dist), _percentiles(t_dist)
    order = np.argsort(g_dist)[:closest]
    return {
        "distance": "RMS per-pixel CIE76 Delta E of 64-px Lab thumbnails"
        + (", min over 8 rotations/flips" if dihedral else ""),
        "generated_to_train": g,
        "train_to_train": t,
        "pass": bool(g["p1"] >= t["p5"]),
        "closest_generated": [
            {"generated": int(i), "train": names[int(g_idx[i])], "distance": float(g_dist[i])} for i in order
        ],
        "closest_train_pair": {
            "a": names[int(t_dist.argmin())],
            "b": names[int(t_idx[t_dist.argmin()])],
            "distance": float(t_dist.min()),
        },
    }


# --------------------------------------------------------------------------------------------------------
# seams


def seam_report(images: Sequence[np.ndarray], tile: int = 512) -> dict:
    """:func:`~napari_diffinfinite.sampling.seams.seam_ratio` of each image; passes when every one is
    <= 1.10."""
    from .sampling.seams import seam_ratio

    values = [float(seam_ratio(image, tile=tile)) for image in images]
    if not values:
        raise ValueError("seam_report needs at least one image")
    return {
        "per_image": values,
        "mean": float(np.mean(values)),
        "max": float(max(values)),
        "tile": tile,
        "target": TARGETS["seam_ratio_max"],
        "pass": bool(max(values) <= TARGETS["seam_ratio_max"]),
    }


# --------------------------------------------------------------------------------------------------------
# sample grid


def best_crop(mask: np.ndarray, label: int, crop: int) -> tuple[int, int]:
    """Top-left ``(y, x)`` of the ``crop`` x ``crop`` window (clipped to the mask) holding the most pixels of
    ``label``."""
    mask = np.asarray(mask)
    h, w = mask.shape
    ch, cw = min(crop, h), min(crop, w)
    integral = np.pad((mask == label).astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    counts = integral[ch:, cw:] - integral[:-ch, cw:] - integral[ch:, :-cw] + integral[:-ch, :-cw]
    y, x = np.unravel_index(int(counts.argmax()), counts.shape)
    return int(y), int(x)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType size support
        return ImageFont.load_default()


def sample_grid(
    rows: Sequence[tuple[str, Sequence[np.ndarray | None]]],
    column_titles: Sequence[str],
    *,
    cell: int = 192,
    note: str = SYNTHETIC_NOTE,
    title: str | None = None,
):
    """A labelled grid (a PIL image): one row per class (its name on the left), one column per title; each
    cell an RGB image resized to ``cell`` px (``None``: left blank), and ``note`` along the bottom."""
    from PIL import Image, ImageDraw

    pad, label_w, head_h, foot_h = 6, 150, 28 + (24 if title else 0), 30
    ncols = len(column_titles)
    width = label_w + ncols * (cell + pad) + pad
    height = head_h + len(rows) * (cell + pad) + pad + foot_h
    grid = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(grid)
    font, small = _font(16), _font(13)
    if title:
        draw.text((pad, 4), title, fill="black", font=font)
    for j, text in enumerate(column_titles):
        draw.text((label_w + pad + j * (cell + pad), head_h - 22), text, fill="black", font=small)
    for i, (name, cells) in enumerate(rows):
        y = head_h + pad + i * (cell + pad)
        draw.text((pad, y + cell // 2 - 8), name, fill="black", font=font)
        for j, image in enumerate(list(cells)[:ncols]):
            if image is None:
                continue
            tile = Image.fromarray(np.ascontiguousarray(np.asarray(image, dtype=np.uint8))).resize(
                (cell, cell), Image.Resampling.LANCZOS
            )
            grid.paste(tile, (label_w + pad + j * (cell + pad), y))
    draw.text((pad, height - foot_h + 6), note, fill=(160, 0, 0), font=font)
    return grid


# --------------------------------------------------------------------------------------------------------
# the whole evaluation


def load_holdout(path) -> list[str]:
    """The held-out patch names of a ``holdout.json`` (``{"held_out": [names]}``)."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("held_out"), list):
        # a ValueError like the JSON decoder's: the file's content is wrong, not the caller's argument
        raise ValueError(f'{path}: expected a JSON object {{"held_out": [patch names]}}')  # noqa: TRY004
    return [str(n) for n in data["held_out"]]


def split_holdout(patches: Sequence, held_out: Iterable[str]) -> tuple[list, list]:
    """``(held-out patches, training patches)``; every held-out name must be among the patches."""
    names = set(held_out)
    missing = sorted(names - {p.name for p in patches})
    if missing:
        raise ValueError(f"{len(missing)} held-out patch(es) are not in the data: {', '.join(missing[:5])}")
    return [p for p in patches if p.name in names], [p for p in patches if p.name not in names]


@dataclass
class EvaluationResult:
    report: dict  # JSON-ready (see write_report)
    grid: Any  # PIL.Image.Image


def _log_default(message: str) -> None:
    print(message, flush=True)


def evaluate(
    model,
    patches: Sequence,
    held_out: Iterable[str],
    *,
    seeds: Sequence[int] = (0, 1, 2),
    steps: int | None = None,
    omega: float | None = None,
    sampler: str | None = None,
    size: int = 2048,
    class_size: int | None = None,
    labels: Sequence[int] = CLASS_LABELS,
    dependence_labels: Sequence[int] = DEPENDENCE_LABELS,
    crop: int | None = None,
    thumb: int = 64,
    erode: int = 4,
    seam_tile: int = 512,
    log: Callable[[str], None] | None = _log_default,
) -> EvaluationResult:
    """All the measurements of issue 4 on ``model`` (a :class:`~napari_diffinfinite.generation.DiffInfiniteModel`).

    ``patches``: the labelled dataset (``Patch`` objects), split into held-out (names in ``held_out``) and
    training patches. Per seed: one image per held-out mask (per-class colour / texture, anti-copying), one
    whole-class ``class_size`` image per class of ``dependence_labels`` (class dependence), and one ``size`` x
    ``size`` image with a generated mask (seams, and its ``crop``-px tiles for anti-copying). ``crop`` is the
    training patch size (default: the smallest patch side, at most 512); thumbnails are ``thumb`` px.
    ``omega``: the image model's guidance, ``sampler`` its sampler (defaults: the model's). ``class_size``
    defaults to the image model's window in pixels (512 for the embedded model): the smallest region the canvas
    and the CLI sample, so the size users see.
    """
    from .generation import generate

    log = log or (lambda message: None)
    held, train = split_holdout(patches, held_out)
    if not held:
        raise ValueError("no held-out patches to evaluate on")
    if len(train) < 2:
        raise ValueError("anti-copying needs at least 2 training patches")
    steps = steps or model.default_steps
    omega = model.default_omega if omega is None else float(omega)
    sampler = model.sampler if sampler is None else sampler
    class_size = class_size or model.window * model.downsampling
    crop = crop or min(512, min(min(p.image.shape[:2]) for p in patches))
    seeds = [int(s) for s in seeds]
    timings: dict[str, float] = {}
    report: dict[str, Any] = {
        "model": model.name,
        "settings": {
            "seeds": seeds,
            "steps": steps,
            "omega": omega,
            "sampler": sampler,
            "mask_omega": model.default_mask_omega,
            "size": size,
            "class_size": class_size,
            "crop": crop,
            "thumbnail": thumb,
            "erode": erode,
            "held_out": [p.name for p in held],
            "train_patches": len(train),
        },
        "targets": dict(TARGETS),
        "note": SYNTHETIC_NOTE,
    }

    t = time.perf_counter()
    log(f"reconstruction PSNR on {len(held)} held-out patches")
    report["reconstruction"] = reconstruction_psnr(model.autoencoder, held)
    timings["reconstruction_s"] = time.perf_counter() - t

    t = time.perf_counter()
    gen_images, gen_masks, gen_by_patch = [], [], {}
    for i, p in enumerate(held):
        for seed in seeds:
            image = generate(model, mask=p.mask, seed=seed, steps=steps, omega=omega, sampler=sampler).image
            gen_images.append(image)
            gen_masks.append(p.mask)
            gen_by_patch.setdefault(p.name, []).append(image)
        log(f"generated {len(seeds)} image(s) for held-out mask {i + 1}/{len(held)} ({p.name})")
    timings["held_out_masks_s"] = time.perf_counter() - t
    t = time.perf_counter()
    report["per_class"] = compare_classes(
        [p.image for p in held],
        [p.mask for p in held],
        gen_images,
        gen_masks,
        labels,
        erode=erode,
        num_classes=model.num_classes,
    )
    timings["per_class_s"] = time.perf_counter() - t
    report["real_data_reference"] = real_data_reference(
        held, train, labels, crop=crop, thumb=thumb, erode=erode, num_classes=model.num_classes
    )

    t = time.perf_counter()
    log(f"class dependence: {len(dependence_labels)} classes x {len(seeds)} seeds, {class_size} px")
    dep, dep_images = class_dependence(
        model, dependence_labels, seeds, size=class_size, steps=steps, omega=omega, sampler=sampler
    )
    # the same figure on the real data, for scale: per-patch means of each class's pixels (>= 5% of a patch)
    real_means: dict[int, list[np.ndarray]] = {}
    real_hf: dict[int, list[float]] = {}
    for p in patches:
        for label in dependence_labels:
            region = class_region(p.mask, label, erode)
            if region.sum() >= 0.05 * region.size:
                real_means.setdefault(label, []).append(image_lab_mean(p.image, region))
                real_hf.setdefault(label, []).append(_log_hf(p.image, region))
    if len(real_means) >= 2:
        dep["real_data_reference"] = class_separation(real_means)
        dep["real_data_reference"]["texture"] = class_separation(real_hf)
    report["class_dependence"] = dep
    timings["class_dependence_s"] = time.perf_counter() - t

    t = time.perf_counter()
    large = []
    for seed in seeds:
        large.append(
            generate(model, size=(size, size), seed=seed, steps=steps, omega=omega, sampler=sampler).image
        )
        log(f"generated a {size} px image with its mask, seed {seed}")
    timings["large_images_s"] = time.perf_counter() - t
    report["seams"] = seam_report(large, tile=seam_tile) if size > seam_tile else None

    t = time.perf_counter()
    train_crops = [(p.name, c) for p in train for c in image_crops(p.image, crop)]
    train_thumbs = np.stack([lab_thumbnail(c, thumb) for _, c in train_crops])
    gen_crops = [c for image in gen_images for c in image_crops(image, crop)]
    gen_crops += [c for image in large for c in image_crops(image, crop)]
    gen_thumbs = np.stack([lab_thumbnail(c, thumb) for c in gen_crops])
    n_held_crops = sum(len(image_crops(image, crop)) for image in gen_images)
    report["anti_copying"] = anti_copying(
        gen_thumbs, train_thumbs, training_names=[n for n, _ in train_crops]
    )
    report["anti_copying"]["generated_sources"] = {
        "held_out_mask_crops": n_held_crops,
        "large_image_crops": len(gen_crops) - n_held_crops,
    }
    timings["anti_copying_s"] = time.perf_counter() - t

    rows = []
    cell_crop = min(256, crop)
    for label in labels:
        holders = [p for p in held if (p.mask == label).any()]
        cells: list[np.ndarray | None] = []
        if holders:
            p = max(holders, key=lambda q: int((q.mask == label).sum()))
            y, x = best_crop(p.mask, label, cell_crop)
            window = (slice(y, y + cell_crop), slice(x, x + cell_crop))
            cells.append(p.image[window])
            cells.extend(image[window] for image in gen_by_patch[p.name])
        else:
            cells.extend([None] * (1 + len(seeds)))
        cells.extend(dep_images.get(label, [None])[:1])
        rows.append((f"{label} {class_name(label, model.num_classes)}", cells))
    titles = ["held-out real"] + [f"generated, seed {s}" for s in seeds] + ["generated, whole-class mask"]
    grid = sample_grid(
        rows,
        titles,
        title=f"{model.name}: held-out real patch | generated with its mask "
        f"({steps} steps, {sampler}, omega {omega:g})",
    )

    report["summary"] = _summary(report)
    report["seconds"] = timings
    return EvaluationResult(report=report, grid=grid)


def real_data_reference(
    held: Sequence,
    train: Sequence,
    labels: Sequence[int] = CLASS_LABELS,
    *,
    crop: int = 512,
    thumb: int = 64,
    erode: int = 4,
    num_classes: int = 5,
) -> dict:
    """The per-class and anti-copying figures with real patches in place of generated ones: the training
    patches against the held-out ones (colour, texture), and the held-out patches against the training ones
    (nearest-neighbour distances).

    This is what a model that reproduced its training data exactly would score, and what a new real patch
    scores: where the data itself misses a target (few patches of a class, held-out patches unlike the training
    ones), the model's miss is not the model's alone.
    """
    per_class = compare_classes(
        [p.image for p in held],
        [p.mask for p in held],
        [p.image for p in train],
        [p.mask for p in train],
        labels,
        erode=erode,
        num_classes=num_classes,
    )
    train_crops = [(p.name, c) for p in train for c in image_crops(p.image, crop)]
    held_thumbs = np.stack([lab_thumbnail(c, thumb) for p in held for c in image_crops(p.image, crop)])
    copying = anti_copying(
        held_thumbs,
        np.stack([lab_thumbnail(c, thumb) for _, c in train_crops]),
        training_names=[n for n, _ in train_crops],
    )
    return {
        "what": "real patches in place of generated ones: training vs held-out (per class), held-out -> "
        "training (anti-copying)",
        "per_class": per_class,
        "anti_copying": {
            "held_out_to_train": copying["generated_to_train"],
            "train_to_train": copying["train_to_train"],
            "pass": copying["pass"],
        },
    }


def _summary(report: dict) -> dict:
    """One line per criterion: value, target, pass (``None`` where it could not be measured)."""
    rec = report["reconstruction"]
    per = report["per_class"]
    des = [v["delta_e"] for v in per.values() if v["delta_e"] is not None]
    hfs = [v["hf_ratio"] for v in per.values() if v["hf_ratio"] is not None]
    dep = report["class_dependence"]
    ac = report["anti_copying"]
    seams = report.get("seams")

    def verdict(values, ok):
        return None if not values else bool(all(ok(v) for v in values))

    ref = report.get("real_data_reference") or {}
    ref_per = ref.get("per_class", {})
    ref_des = [v["delta_e"] for v in ref_per.values() if v["delta_e"] is not None]
    ref_hfs = [v["hf_ratio"] for v in ref_per.values() if v["hf_ratio"] is not None]
    ref_copy = ref.get("anti_copying")
    summary = {
        "reconstruction_psnr_db": {"value": rec["mean_db"], "target": ">= 26", "pass": rec["pass"]},
        "delta_e_max_over_classes": {
            "value": max(des) if des else None,
            "target": "<= 8",
            "pass": verdict(des, lambda v: v <= TARGETS["delta_e_max"]),
        },
        "hf_ratio_min_over_classes": {
            "value": min(hfs) if hfs else None,
            "target": ">= 0.7",
            "pass": verdict(hfs, lambda v: v >= TARGETS["hf_ratio_min"]),
        },
        "class_dependence": {
            "value": dep["min_distance"],
            "target": f"> max spread {dep['max_spread']:.2f}",
            "pass": dep["pass"],
        },
        "anti_copying": {
            "value": ac["generated_to_train"]["p1"],
            "target": f">= train p5 {ac['train_to_train']['p5']:.2f}",
            "pass": ac["pass"],
        },
        "seam_ratio_max": {
            "value": None if seams is None else seams["max"],
            "target": "<= 1.10",
            "pass": None if seams is None else seams["pass"],
        },
    }
    # the same criterion scored by real patches (real_data_reference), where there is one
    summary["delta_e_max_over_classes"]["real_data"] = max(ref_des) if ref_des else None
    summary["hf_ratio_min_over_classes"]["real_data"] = min(ref_hfs) if ref_hfs else None
    summary["anti_copying"]["real_data"] = None if ref_copy is None else ref_copy["held_out_to_train"]["p1"]
    return summary


def _fmt(value, spec: str = ".2f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, spec)


def format_report(report: dict) -> str:
    """The report as a plain-text table."""
    st = report["settings"]
    lines = [
        (
            f"model {report['model']}  (steps {st['steps']}, sampler {st.get('sampler', 'ddim')}, "
            f"seeds {st['seeds']})"
        ),
        "",
        f"{'criterion':<28} {'value':>9}  {'target':<24} pass  {'real data':>9}",
    ]
    for key, row in report["summary"].items():
        verdict = {True: "yes", False: "NO", None: "-"}[row["pass"]]
        lines.append(
            f"{key:<28} {_fmt(row['value']):>9}  {row['target']:<24} {verdict:<4}  "
            f"{_fmt(row.get('real_data')):>9}"
        )
    lines.append("  (real data: the criterion scored by real patches, training vs held-out; see below)")
    ref_per = (report.get("real_data_reference") or {}).get("per_class", {})
    lines += [
        "",
        (
            f"{'class':<16} {'dE76':>6} {'real L a b':>20} {'gen L a b':>20} {'hf real':>9} "
            f"{'hf gen':>9} {'ratio':>6} | {'train dE':>8} {'train L a b':>20} {'ratio':>6}"
        ),
    ]
    for label, v in report["per_class"].items():

        def lab(side):
            return "-" if side is None else " ".join(f"{x:6.1f}" for x in side["mean"])

        r = ref_per.get(label, {})
        lines.append(
            f"{label + ' ' + v['name']:<16} {_fmt(v['delta_e'], '.1f'):>6} {lab(v['real']):>20} "
            f"{lab(v['generated']):>20} {_fmt(v['hf_real'], '.1f'):>9} {_fmt(v['hf_generated'], '.1f'):>9} "
            f"{_fmt(v['hf_ratio']):>6} | {_fmt(r.get('delta_e'), '.1f'):>8} {lab(r.get('generated')):>20} "
            f"{_fmt(r.get('hf_ratio')):>6}"
        )
    lines.append(
        "  (right of |: the training patches' own figures against the held-out ones, what a model that "
        "reproduced its training data would score)"
    )
    dep = report["class_dependence"]
    real = dep.get("real_data_reference") or {}
    lines += [
        "",
        "class dependence: distance between class centroids vs the larger within-class spread",
        (
            f"  {'pair':<6} {'Lab (pass criterion)':>22} {'log10 hf (info)':>18} {'real data Lab':>16} "
            f"{'real log10 hf':>16}"
        ),
    ]

    def pair_text(sep, pair, spec):
        if not sep:
            return "-"
        key = pair if pair in sep["pairs"] else "-".join(pair.split("-")[::-1])
        p = sep["pairs"].get(key)
        return (
            "-" if p is None else f"{p['distance']:{spec}} vs {p['spread']:{spec}}{'' if p['pass'] else ' x'}"
        )

    for pair in dep["pairs"]:
        lines.append(
            f"  {pair:<6} {pair_text(dep, pair, '.2f'):>22} {pair_text(dep.get('texture'), pair, '.2f'):>18} "
            f"{pair_text(real, pair, '.1f'):>16} {pair_text(real.get('texture'), pair, '.2f'):>16}"
        )
    lines.append("  (x: the distance does not exceed the spread)")
    ac = report["anti_copying"]
    g, t = ac["generated_to_train"], ac["train_to_train"]
    lines += [
        "",
        f"anti-copying ({ac['distance']}):",
        f"  generated -> train  n={g['n']:<4} p1 {g['p1']:.2f}  p5 {g['p5']:.2f}  p50 {g['p50']:.2f}",
        f"  train -> train      n={t['n']:<4} p1 {t['p1']:.2f}  p5 {t['p5']:.2f}  p50 {t['p50']:.2f}",
    ]
    ref_copy = (report.get("real_data_reference") or {}).get("anti_copying")
    if ref_copy:
        h = ref_copy["held_out_to_train"]
        lines.append(
            f"  held-out -> train   n={h['n']:<4} p1 {h['p1']:.2f}  p5 {h['p5']:.2f}  p50 {h['p50']:.2f}"
            "  (real patches never trained on)"
        )
    rec = report["reconstruction"]
    lines += ["", f"reconstruction PSNR: mean {_fmt(rec['mean_db'])} dB, min {_fmt(rec['min_db'])} dB"]
    if report.get("seams"):
        s = report["seams"]
        lines.append(f"seam ratio ({s['tile']} px tiles): " + ", ".join(f"{v:.3f}" for v in s["per_image"]))
    return "\n".join(lines)


def write_report(report: dict, path) -> None:
    """The report as JSON (non-finite numbers, e.g. the PSNR of an exact reconstruction, become ``null``)."""
    Path(path).write_text(json.dumps(plain_json(report, non_finite="null"), indent=1, allow_nan=False) + "\n")


# --------------------------------------------------------------------------------------------------------
# nuclear structure (issue 15)

#: Haematoxylin threshold on ``skimage.color.rgb2hed``'s H channel: the fixed value of issue 15's definition,
#: given there as the 95th percentile of the training pixels (the 100 sample patches measure 0.042 here). It
#: is a constant, not re-estimated per image set, so that real and generated images are cut at one level.
HAEMATOXYLIN_THRESHOLD = 0.045
#: Radius (px) of the disk that opens the haematoxylin-positive map: removes speckle and thin fibres.
NUCLEUS_OPENING_RADIUS = 2
#: Connected components of the opened map with an area in this range (px, inclusive) ...
NUCLEUS_AREA = (40, 900)
#: ... a solidity (area / convex hull area) at least this ...
NUCLEUS_MIN_SOLIDITY = 0.85
#: ... and an eccentricity at most this count as nucleus-like blobs (round, filled, nucleus-sized at 0.5
#: um/px).
NUCLEUS_MAX_ECCENTRICITY = 0.95
#: Side (px) of the non-overlapping grid cells of the cell-occupancy figure.
OCCUPANCY_CELL = 128
#: The generated / training ratio of the target figures (whole images, carcinoma, cell occupancy) must lie
#: in here.
NUCLEAR_TARGET = (0.67, 1.5)


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius


def nucleus_blobs(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The haematoxylin-positive map of a uint8 RGB image and the centroids of its nucleus-like blobs.

    Why: nuclei are what makes H&E read as tissue, and they are the dark, round, haematoxylin-stained blobs;
    a colour or texture statistic does not tell mottled purple texture from cells, this does.
    ``skimage.color.rgb2hed``'s haematoxylin channel > :data:`HAEMATOXYLIN_THRESHOLD`, opened with a disk of
    radius :data:`NUCLEUS_OPENING_RADIUS` (skimage's binary opening: the image border does not erode);
    8-connected components with an area in :data:`NUCLEUS_AREA`, solidity >= :data:`NUCLEUS_MIN_SOLIDITY` and
    eccentricity <= :data:`NUCLEUS_MAX_ECCENTRICITY` are nucleus-like.
    Returns ``(positive (H, W) bool, centroids (N, 2) float (row, col))``.
    """
    from skimage.color import rgb2hed
    from skimage.measure import label, regionprops

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"nucleus_blobs needs an (H, W, 3) RGB image, got {image.shape}")
    haematoxylin = rgb2hed(image)[..., 0]
    footprint = _disk(NUCLEUS_OPENING_RADIUS)
    # skimage.morphology.binary_opening (deprecated in 0.26) spelled out: outside the image counts as positive
    # for the erosion and as negative for the dilation
    positive = ndimage.binary_erosion(haematoxylin > HAEMATOXYLIN_THRESHOLD, footprint, border_value=1)
    positive = ndimage.binary_dilation(positive, footprint, border_value=0)
    lo, hi = NUCLEUS_AREA
    centroids = [
        r.centroid
        for r in regionprops(label(positive, connectivity=2))
        if lo <= r.area <= hi
        and r.solidity >= NUCLEUS_MIN_SOLIDITY
        and r.eccentricity <= NUCLEUS_MAX_ECCENTRICITY
    ]
    return positive, np.asarray(centroids, dtype=np.float64).reshape(-1, 2)


def _centroid_pixels(centroids: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The pixel (row, col) holding each centroid: rounded to the nearest, clipped to the image."""
    pixels = np.rint(np.asarray(centroids, dtype=np.float64)).astype(np.int64).reshape(-1, 2)
    return np.clip(pixels, 0, np.array(shape[:2]) - 1)


def cell_occupancy(
    centroids: np.ndarray, shape: tuple[int, int], cell: int = OCCUPANCY_CELL
) -> tuple[int, int]:
    """``(cells holding at least one centroid, cells)`` of the non-overlapping ``cell`` x ``cell`` grid from
    the top-left; a centroid belongs to the cell its (row, col) point falls in, ``floor(coordinate / cell)``
    (whole cells only; a centroid in the leftover margin counts nowhere).

    Why: pooled densities are dominated by a few dense patches; the share of 128-px cells with a nucleus says
    whether nuclei are spread over the tissue, as in the training data, or clumped in a few places.
    """
    rows, cols = shape[0] // cell, shape[1] // cell
    if rows == 0 or cols == 0:
        return 0, 0
    pixels = np.floor(np.asarray(centroids, dtype=np.float64).reshape(-1, 2) / cell).astype(np.int64)
    pixels = pixels[(pixels[:, 0] >= 0) & (pixels[:, 1] >= 0) & (pixels[:, 0] < rows) & (pixels[:, 1] < cols)]
    occupied = np.zeros((rows, cols), dtype=bool)
    occupied[pixels[:, 0], pixels[:, 1]] = True
    return int(occupied.sum()), rows * cols


def _nuclear_figures(positive: int, pixels: int, blobs: int) -> dict:
    return {
        "positive_fraction": positive / pixels if pixels else None,
        "blobs_per_mpx": blobs / pixels * 1e6 if pixels else None,
        "pixels": int(pixels),
        "positive_pixels": int(positive),
        "blobs": int(blobs),
    }


def nuclear_structure(
    images,
    masks=None,
    labels: Iterable[int] = CLASS_LABELS,
    *,
    num_classes: int = 5,
    cell: int = OCCUPANCY_CELL,
) -> dict:
    """Nuclear structure of an image set (:func:`nucleus_blobs`), pooled over the images.

    Why: an image model's tissue must hold nuclei where the training tissue does, as many and as much; pooling
    (sums of pixels, of positive pixels and of blobs, not a mean of per-image figures) weighs every pixel
    alike, so generated images from the training masks compare with the training patches class by class.

    Returns ``{"images", "positive_fraction", "blobs_per_mpx", "pixels", "positive_pixels", "blobs",
    "cell_occupancy", "cells", "occupied_cells", "per_class": {label: {"name", "positive_fraction",
    "blobs_per_mpx", "pixels", "positive_pixels", "blobs"}}}``: the haematoxylin-positive area fraction (after
    the opening) and nucleus-like blobs per megapixel, of the whole images and of each class's pixels (a blob
    belongs to the class of its centroid's pixel), and the :func:`cell_occupancy` of the whole images. Without
    ``masks`` there is no ``per_class``. A figure with no pixel to measure is ``None``.
    """
    images = [np.asarray(im) for im in images]
    if masks is None:
        pairs = [(im, None) for im in images]
        labels = ()
    else:
        pairs = _pairs(images, masks)
        labels = tuple(int(label) for label in labels)
    pos = pix = blobs = occupied = cells = 0
    per = {label: [0, 0, 0] for label in labels}  # positive pixels, pixels, blobs
    for image, mask in pairs:
        positive, centroids = nucleus_blobs(image)
        pos += int(positive.sum())
        pix += positive.size
        blobs += len(centroids)
        o, c = cell_occupancy(centroids, positive.shape, cell)
        occupied += o
        cells += c
        if mask is not None and labels:
            at = _centroid_pixels(centroids, positive.shape)
            blob_labels = mask[at[:, 0], at[:, 1]]
            for label in labels:
                region = mask == label
                per[label][0] += int(positive[region].sum())
                per[label][1] += int(region.sum())
                per[label][2] += int((blob_labels == label).sum())
    out = {
        "images": len(pairs),
        **_nuclear_figures(pos, pix, blobs),
        "cell_occupancy": occupied / cells if cells else None,
        "cells": cells,
        "occupied_cells": occupied,
        "cell": cell,
    }
    if masks is not None:
        out["per_class"] = {
            str(label): {"name": class_name(label, num_classes), **_nuclear_figures(*v)}
            for label, v in per.items()
        }
    return out


def _ratio(generated, real):
    return None if generated is None or real is None or real == 0 else generated / real


def compare_nuclear(real: dict, other: dict, target: tuple[float, float] = NUCLEAR_TARGET) -> dict:
    """Two :func:`nuclear_structure` figures side by side: ``{"real", "generated", "ratio", "pass"}``.

    ``ratio``: other / real for every figure (``None`` where the real one is 0 or missing), as
    ``{"positive_fraction", "blobs_per_mpx", "cell_occupancy", "per_class": {label: {...}}}``. ``pass``: each
    target figure of issue 15 (whole images, carcinoma (label 1), cell occupancy) within ``target``, and
    ``"all"``; ``None`` where there is no ratio.
    """
    lo, hi = target
    keys = ("positive_fraction", "blobs_per_mpx")
    ratio = {k: _ratio(other.get(k), real.get(k)) for k in (*keys, "cell_occupancy")}
    real_per = real.get("per_class", {})
    ratio["per_class"] = {
        label: {k: _ratio(v.get(k), real_per[label].get(k)) for k in keys}
        for label, v in other.get("per_class", {}).items()
        if label in real_per
    }
    checks = {
        "whole_positive_fraction": ratio["positive_fraction"],
        "whole_blobs_per_mpx": ratio["blobs_per_mpx"],
        "cell_occupancy": ratio["cell_occupancy"],
    }
    carcinoma = ratio["per_class"].get("1")
    if carcinoma is not None:
        checks["carcinoma_positive_fraction"] = carcinoma["positive_fraction"]
        checks["carcinoma_blobs_per_mpx"] = carcinoma["blobs_per_mpx"]
    passed = {k: None if v is None else bool(lo <= v <= hi) for k, v in checks.items()}
    passed["all"] = None if any(v is None for v in passed.values()) else all(passed.values())
    return {"real": real, "generated": other, "ratio": ratio, "target": list(target), "pass": passed}


def evenly_spaced(items: Sequence, limit: int | None) -> list:
    """At most ``limit`` of ``items``, evenly spaced over the sequence (first and last included), in order;
    all of them when ``limit`` is ``None`` or not smaller.

    Why: the sample patches are sorted by folder, the 50 sparse omega-0 patches first; the first ``limit`` of
    them would all be sparse, a spread holds both halves."""
    items = list(items)
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if limit == 1:
        return items[:1]
    return [items[i] for i in np.linspace(0, len(items) - 1, int(limit)).round().astype(int)]


def generate_from_masks(
    model,
    patches: Sequence,
    *,
    seed0: int = 0,
    steps: int | None = None,
    sampler: str | None = None,
    omega: float | None = None,
    log: Callable[[str], None] | None = None,
) -> list[np.ndarray]:
    """One image per patch's mask, as :func:`evaluate` generates from the held-out masks: ``generate(model,
    mask=patch.mask, seed=seed0 + index, ...)``. ``steps``, ``sampler``, ``omega``: defaults the model's."""
    from .generation import generate

    steps = steps or model.default_steps
    omega = model.default_omega if omega is None else float(omega)
    sampler = model.sampler if sampler is None else sampler
    images = []
    for i, p in enumerate(patches):
        result = generate(model, mask=p.mask, seed=seed0 + i, steps=steps, omega=omega, sampler=sampler)
        images.append(result.image)
        if log is not None and ((i + 1) % 10 == 0 or i + 1 == len(patches)):
            log(f"generated {i + 1}/{len(patches)} images from the masks")
    return images


def nuclear_report(
    model,
    train_patches: Sequence,
    held_patches: Sequence,
    *,
    seed0: int = 0,
    steps: int | None = None,
    sampler: str | None = None,
    omega: float | None = None,
    limit: int | None = None,
    generated: Mapping[str, Sequence[np.ndarray]] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Issue 15's nuclear-structure figures of ``model``: every training mask through the model (one image
    each, seed ``seed0 + index``; :func:`generate_from_masks`), pooled, against the training patches; the same
    for the held-out masks. ``limit`` caps the training patches (:func:`evenly_spaced`), for quick runs.

    Why the training masks: the generated set then has the training set's class mix pixel for pixel, so the
    pooled figures compare like with like; the held-out masks show the same on masks the model never saw.
    ``generated``: images already generated that way (``{"train": [...], "held_out": [...]}``, in patch
    order), so a caller that needs them for something else does not generate twice.

    Returns ``{"settings", "definition", "train": compare_nuclear(...), "held_out": compare_nuclear(...)}``.
    """
    train = evenly_spaced(train_patches, limit)
    held = list(held_patches)
    steps = steps or model.default_steps
    omega = model.default_omega if omega is None else float(omega)
    sampler = model.sampler if sampler is None else sampler
    generated = dict(generated or {})
    report: dict[str, Any] = {
        "settings": {
            "seed0": seed0,
            "steps": steps,
            "sampler": sampler,
            "omega": omega,
            "limit": limit,
            "train_patches": len(train),
            "held_out_patches": len(held),
        },
        "definition": nuclear_definition(),
    }
    for key, patches in (("train", train), ("held_out", held)):
        if not patches:
            report[key] = None
            continue
        images = generated.get(key)
        if images is None:
            images = generate_from_masks(
                model, patches, seed0=seed0, steps=steps, sampler=sampler, omega=omega, log=log
            )
        images = list(images)[: len(patches)]
        if len(images) != len(patches):
            raise ValueError(f"{len(images)} generated images for {len(patches)} {key} masks")
        masks = [p.mask for p in patches]
        report[key] = compare_nuclear(
            nuclear_structure([p.image for p in patches], masks, num_classes=model.num_classes),
            nuclear_structure(images, masks, num_classes=model.num_classes),
        )
    return report


def reconstruction_nuclear(
    autoencoder, patches: Sequence, *, images: Sequence[np.ndarray] | None = None, num_classes: int = 5
) -> dict:
    """The nuclear figures of the autoencoder's reconstructions (:func:`reconstruct`) against the patches
    themselves (:func:`compare_nuclear`).

    Why: the image model generates latents that this decoder turns into pixels, so what the decoder keeps of
    the nuclei is the ceiling the image model can reach. ``images``: the reconstructions, if already made.
    """
    patches = list(patches)
    if images is None:
        images = [reconstruct(autoencoder, p.image) for p in patches]
    masks = [p.mask for p in patches]
    return compare_nuclear(
        nuclear_structure([p.image for p in patches], masks, num_classes=num_classes),
        nuclear_structure(images, masks, num_classes=num_classes),
    )


def nuclear_definition() -> dict:
    """The constants of the nuclear-structure figures, for the report."""
    return {
        "haematoxylin_threshold": HAEMATOXYLIN_THRESHOLD,
        "opening_radius": NUCLEUS_OPENING_RADIUS,
        "area_px": list(NUCLEUS_AREA),
        "min_solidity": NUCLEUS_MIN_SOLIDITY,
        "max_eccentricity": NUCLEUS_MAX_ECCENTRICITY,
        "occupancy_cell": OCCUPANCY_CELL,
        "target_ratio": list(NUCLEAR_TARGET),
    }


def _nuclear_rows(comparison: dict) -> list[tuple[str, Any, Any, Any, bool | None, str]]:
    """``(figure, real, generated, ratio, pass or None, format)`` rows: the target figures, then every
    class."""
    real, gen, ratio, passed = (comparison[k] for k in ("real", "generated", "ratio", "pass"))

    def pair(name, r, g, q, key=None):  # key: the figures' name in ``passed`` (None: no target)
        ok = (
            (None, None)
            if key is None
            else (passed.get(f"{key}_positive_fraction"), passed.get(f"{key}_blobs_per_mpx"))
        )
        return [
            (
                f"haematoxylin-positive area, {name}",
                r["positive_fraction"],
                g["positive_fraction"],
                q["positive_fraction"],
                ok[0],
                ".4f",
            ),
            (
                f"nucleus-like blobs / Mpx, {name}",
                r["blobs_per_mpx"],
                g["blobs_per_mpx"],
                q["blobs_per_mpx"],
                ok[1],
                ".1f",
            ),
        ]

    rows = pair("whole", real, gen, ratio, "whole")
    per_real, per_gen = real.get("per_class", {}), gen.get("per_class", {})
    if "1" in per_real:
        rows += pair(per_real["1"]["name"], per_real["1"], per_gen["1"], ratio["per_class"]["1"], "carcinoma")
    rows.append(
        (
            f"{real['cell']} px cells with a blob",
            real["cell_occupancy"],
            gen["cell_occupancy"],
            ratio["cell_occupancy"],
            passed.get("cell_occupancy"),
            ".3f",
        )
    )
    for label, r in per_real.items():
        if label != "1":
            rows += pair(r["name"], r, per_gen[label], ratio["per_class"][label])
    return rows


def format_nuclear(report: dict, autoencoder: dict | None = None) -> str:
    """:func:`nuclear_report` as plain-text tables (training masks, held-out masks); with ``autoencoder`` (a
    :func:`reconstruction_nuclear` of the training patches) its figures and ratio in two more columns."""
    st = report["settings"]
    lo, hi = report["definition"]["target_ratio"]
    lines = [
        (
            f"nuclear structure (issue 15): {st['steps']} steps, {st['sampler']}, omega {st['omega']:g}, "
            f"seed {st['seed0']} + index"
        )
    ]
    for key, title in (("train", "training masks"), ("held_out", "held-out masks")):
        comparison = report.get(key)
        if comparison is None:
            continue
        n = comparison["real"]["images"]
        figure, target = f"figure ({title}, {n} patches)", f"target {lo:g}-{hi:g}"
        head = f"{figure:<46} {'patches':>9} {'model':>9} {'ratio':>6}  {target:<16}"
        ae_rows = None
        if key == "train" and autoencoder is not None:
            head += f" {'autoencoder':>11} {'ratio':>6}"
            ae_rows = _nuclear_rows(autoencoder)
        lines += ["", head]
        for i, (name, r, g, q, ok, spec) in enumerate(_nuclear_rows(comparison)):
            verdict = {True: "yes", False: "NO", None: "-"}[ok]
            line = f"{name:<46} {_fmt(r, spec):>9} {_fmt(g, spec):>9} {_fmt(q):>6}  {verdict:<16}"
            if ae_rows is not None:
                line += f" {_fmt(ae_rows[i][2], spec):>11} {_fmt(ae_rows[i][3]):>6}"
            lines.append(line)
    lines.append(
        "  (pooled over the patches: a class's figures over that class's pixels; stroma and "
        "necrosis hold few nuclei, their ratios are noisy)"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------
# realism: a classifier two-sample test (issue 15)

#: Side (px) of the crops the realism classifier sees.
C2ST_CROP = 96
#: Random crops taken from each image, for training and for testing alike.
C2ST_CROPS_PER_IMAGE = 16
#: Training steps and batch size of one classifier (about a minute on one CPU thread).
C2ST_STEPS = 300
C2ST_BATCH = 32
#: Adam learning rate of the classifier, at the start: it decays to 0 along a half cosine, so that the final
#: weights (and the batch-norm statistics) settle; at a constant rate the held-out accuracy of the last step
#: swings by +-0.15 from one step to the next.
C2ST_LR = 2e-3


def _c2st_net(width: int = 16):
    """A small CNN: four 3x3 convolution blocks (full resolution first, so fine detail counts), global average
    pooling, one logit."""
    from torch import nn

    def block(cin, cout, pool):
        layers = [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        return layers + ([nn.MaxPool2d(2)] if pool else [])

    return nn.Sequential(
        *block(3, width, True),
        *block(width, 2 * width, True),
        *block(2 * width, 4 * width, True),
        *block(4 * width, 4 * width, False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, 1),
    )


def _random_crops(
    images: Sequence[np.ndarray], crop: int, per_image: int, rng: np.random.Generator
) -> np.ndarray:
    out = np.empty((len(images) * per_image, crop, crop, 3), dtype=np.uint8)
    k = 0
    for image in images:
        h, w = image.shape[:2]
        if h < crop or w < crop:
            raise ValueError(f"an image of {h}x{w} px is smaller than the {crop} px crops")
        for y, x in zip(rng.integers(0, h - crop + 1, per_image), rng.integers(0, w - crop + 1, per_image)):
            out[k] = image[y : y + crop, x : x + crop]
            k += 1
    return out


def _to_tensor(crops: np.ndarray):
    import torch

    return torch.from_numpy(crops).permute(0, 3, 1, 2).float().div_(255.0).sub_(0.5)


def classifier_accuracy(
    real_images: Sequence[np.ndarray],
    other_images: Sequence[np.ndarray],
    seed: int = 0,
    *,
    crop: int = C2ST_CROP,
    crops_per_image: int = C2ST_CROPS_PER_IMAGE,
    steps: int = C2ST_STEPS,
    batch: int = C2ST_BATCH,
    lr: float = C2ST_LR,
) -> float:
    """One classifier two-sample test: the accuracy of a small CNN (:func:`_c2st_net`) telling ``crop``-px
    crops of ``other_images`` from crops of ``real_images``, on images it never saw.

    Each set is split by image into halves (a seeded permutation; two sets of the same length share it, so a
    generated image and the patch of its mask land in the same half); the classifier trains for ``steps`` Adam
    steps (learning rate ``lr`` decaying to 0 along a half cosine) on batches of ``batch`` crops (half from
    each set, random flips and 90-degree turns) of the first halves, and is scored on ``crops_per_image``
    random crops of each image of the second halves. The score is the balanced accuracy (the mean of the two
    sets' accuracies), so 0.5 is chance whatever the set sizes.
    Deterministic for a fixed ``seed`` (and torch thread count); torch's global random state is left alone.
    """
    import torch

    real = [np.asarray(im) for im in real_images]
    other = [np.asarray(im) for im in other_images]
    if len(real) < 2 or len(other) < 2:
        raise ValueError(f"the classifier test needs >= 2 images per set, got {len(real)} and {len(other)}")
    rng = np.random.default_rng([int(seed), 15])
    perm_real = rng.permutation(len(real))
    perm_other = perm_real if len(other) == len(real) else rng.permutation(len(other))

    def halves(images, perm):
        half = len(images) // 2
        return [images[i] for i in perm[:half]], [images[i] for i in perm[half:]]

    (real_train, real_test), (other_train, other_test) = halves(real, perm_real), halves(other, perm_other)
    train = [
        _random_crops(real_train, crop, crops_per_image, rng),
        _random_crops(other_train, crop, crops_per_image, rng),
    ]
    test = [
        _random_crops(real_test, crop, crops_per_image, rng),
        _random_crops(other_test, crop, crops_per_image, rng),
    ]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        net = _c2st_net()
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)

    def decay(step):  # the learning rate's factor: a half cosine, 1 to 0
        return 0.5 + 0.5 * math.cos(math.pi * step / steps)

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    half = max(1, batch // 2)
    target = torch.cat([torch.zeros(half), torch.ones(half)])[:, None]
    net.train()
    for _ in range(steps):
        idx = [rng.integers(0, len(t), half) for t in train]
        x = _to_tensor(np.concatenate([train[0][idx[0]], train[1][idx[1]]]))
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        x = torch.rot90(x, k, dims=(2, 3))
        if flip:
            x = torch.flip(x, dims=(3,))
        loss = loss_fn(net(x), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    net.eval()
    accuracies = []
    with torch.no_grad():
        for label, crops in enumerate(test):
            logits = torch.cat([net(_to_tensor(crops[i : i + 128]))[:, 0] for i in range(0, len(crops), 128)])
            accuracies.append(float(((logits > 0) == bool(label)).float().mean()))
    return float(np.mean(accuracies))


def classifier_two_sample(
    real_images: Sequence[np.ndarray],
    other_images: Sequence[np.ndarray],
    *,
    seeds: Sequence[int] = (0, 1),
    **kwargs,
) -> float:
    """Realism as a classifier two-sample test: the mean over ``seeds`` of :func:`classifier_accuracy`
    (held-out balanced accuracy of a small CNN telling crops of ``other_images`` from crops of
    ``real_images``).

    Why: a classifier finds any difference a human eye might, nuclei, fibres, blur, colour, without our
    choosing the feature; 0.5 means it cannot tell the sets apart, 1.0 that every crop gives itself away.
    ``kwargs``: :func:`classifier_accuracy`'s settings (``crop``, ``crops_per_image``, ``steps``, ``batch``).
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("classifier_two_sample needs at least one seed")
    return float(np.mean([classifier_accuracy(real_images, other_images, s, **kwargs) for s in seeds]))


def realism_report(
    train_images: Sequence[np.ndarray],
    generated: Sequence[np.ndarray] | None = None,
    reconstructions: Sequence[np.ndarray] | None = None,
    *,
    seeds: Sequence[int] = (0, 1),
    log: Callable[[str], None] | None = None,
    **kwargs,
) -> dict:
    """Issue 15's three classifier two-sample tests (:func:`classifier_accuracy` per seed, and their mean):
    ``generated`` (the model's images, from the training masks) vs the training patches, the autoencoder's
    ``reconstructions`` vs the training patches, and two halves of the training patches against each other
    (the even- and odd-indexed ones; a calibration, should be about 0.5). A missing set skips its test.
    """
    train = list(train_images)
    seeds = [int(s) for s in seeds]
    tests = {
        "generated_vs_train": (train, generated),
        "reconstructions_vs_train": (train, reconstructions),
        "train_half_vs_half": (train[0::2], train[1::2]),
    }
    settings = {
        "seeds": seeds,
        "crop": kwargs.get("crop", C2ST_CROP),
        "crops_per_image": kwargs.get("crops_per_image", C2ST_CROPS_PER_IMAGE),
        "steps": kwargs.get("steps", C2ST_STEPS),
        "batch": kwargs.get("batch", C2ST_BATCH),
        "train_images": len(train),
    }
    out: dict[str, Any] = {"settings": settings}
    for key, (real, other) in tests.items():
        if other is None:
            out[key] = None
            continue
        t = time.perf_counter()
        per_seed = [classifier_accuracy(real, other, s, **kwargs) for s in seeds]
        out[key] = {
            "accuracy": float(np.mean(per_seed)),
            "per_seed": per_seed,
            "images": [len(real), len(other)],
            "seconds": time.perf_counter() - t,
        }
        if log is not None:
            log(f"realism {key}: {out[key]['accuracy']:.3f} ({out[key]['seconds']:.0f} s)")
    return out


def format_realism(report: dict) -> str:
    """:func:`realism_report` as plain text."""
    st = report["settings"]
    lines = [
        (
            f"realism: classifier two-sample test ({st['crop']} px crops, held-out accuracy, mean of seeds "
            f"{st['seeds']}; 0.5 = indistinguishable)"
        )
    ]
    names = {
        "generated_vs_train": "generated (training masks) vs training patches",
        "reconstructions_vs_train": "autoencoder reconstructions vs training patches",
        "train_half_vs_half": "training patches, half vs half",
    }
    for key, name in names.items():
        r = report.get(key)
        if r is not None:
            per_seed = ", ".join(f"{a:.3f}" for a in r["per_seed"])
            lines.append(f"  {name:<50} {r['accuracy']:.3f}  ({per_seed})")
    return "\n".join(lines)
