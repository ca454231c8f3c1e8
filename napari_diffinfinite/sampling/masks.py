"""Class masks: latent codecs for the mask model, cleaning, painted-mask input.

The pieces, in the order the mask pipeline uses them:

- :class:`MaskCodec` - how a label map becomes the latent the mask UNet diffuses, and back. Two codecs:
  :class:`SD2MaskCodec` (DiffInfinite's released mask models: labels as grey levels through the SD2 VAE) and
  :class:`SimplexMaskCodec` (no autoencoder: labels as the vertices of a regular simplex, for the embedded
  mask model).
  (adenocarcinoma / squamous), decoded to labels.
- :func:`clean_mask` - the reference's clean step: class borders become bands of label 0, a 6x6 min filter,
  nearest-neighbour upsampling to the image resolution.
- Painted masks: :func:`validate_labels`, :func:`load_label_image`, :func:`upsample_labels`,
  :func:`labels_at_scale`. Bad input raises :class:`MaskError` (a ``ValueError``) with a message that says
  what is wrong and where.

Pure torch + numpy (scipy / scikit-image for cleaning, Pillow / tifffile for reading files); no napari.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from napari_diffinfinite.classes import CLASS_SETS, CONTEXT_PROMPTS

__all__ = [
    "CONTEXT_NAMES",
    "DEFAULT_MASK_OMEGA",
    "MASK_IMAGE_FACTOR",
    "MASK_PATCH_PX",
    "SD2_MASK_LATENT_STD",
    "MaskCodec",
    "MaskError",
    "SD2MaskCodec",
    "SimplexMaskCodec",
    "clean_mask",
    "labels_at_scale",
    "labels_to_signal",
    "load_label_image",
    "resolve_context",
    "scaled_label_codes",
    "signal_to_labels",
    "simplex_vertices",
    "upsample_labels",
    "validate_labels",
]

#: Side of the mask patch the reference mask model generates (pixels of the mask).
MASK_PATCH_PX = 128
#: A 128-px mask patch covers a 512-px image patch: mask pixels are upsampled by 4 to image pixels.
MASK_IMAGE_FACTOR = 4
#: Guidance weight omega used when none is given (guidance scale ``s = omega + 1``).
DEFAULT_MASK_OMEGA = 3.0
#: Per-channel std of the SD2 VAE's latent of the reference's mask signal, by number of labels (mean 0).
SD2_MASK_LATENT_STD: dict[int, tuple[float, ...]] = {
    5: (40.0, 36.0, 48.0, 32.0),
    10: (46.0, 36.0, 55.0, 36.0),
}
#: Names accepted for the mask model's context prompt (case-insensitive), mapped to the context id.
CONTEXT_NAMES: dict[str, int] = {
    "adeno": 0,
    "adenocarcinoma": 0,
    "squamous": 1,
    "squamous cell carcinoma": 1,
}


class MaskError(ValueError):
    """A label image that cannot be used as a mask (wrong dtype, shape, labels, scale, unreadable content)."""


# ====================================================================================== codecs
@runtime_checkable
class MaskCodec(Protocol):
    """Between label maps and the latents the mask model diffuses.

    ``encode(labels)``: LongTensor ``(B, h, w)`` of label ids in ``0..num_labels-1``, ``h`` and ``w``
    multiples of ``cells_per_latent`` -> float latents ``(B, latent_channels, h / f, w / f)``.
    ``decode(latents)`` -> LongTensor ``(B, h, w)`` of label ids. ``cells_per_latent`` (``f``) is the number
    of mask pixels per latent pixel along each axis, at the mask's own resolution.
    """

    num_labels: int
    latent_channels: int
    cells_per_latent: int

    def encode(self, labels: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


def _check_num_labels(num_labels: Any, *, what: str = "num_labels") -> int:
    if isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer)) or num_labels < 2:
        raise ValueError(f"{what} must be an integer >= 2, got {num_labels!r}")
    return int(num_labels)


def _check_label_tensor(labels: Any, num_labels: int, multiple: int) -> torch.Tensor:
    """``labels`` as a LongTensor (B, h, w) with values in range and sides divisible by ``multiple``."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor (B, h, w), not {type(labels).__name__}")
    if labels.ndim != 3:
        raise ValueError(f"labels must have shape (B, h, w), got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    h, w = labels.shape[-2:]
    if h % multiple or w % multiple:
        raise ValueError(
            f"mask height and width must be multiples of {multiple} (mask pixels per latent pixel), "
            f"got {h}x{w}"
        )
    labels = labels.long()
    if labels.numel():
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_labels:
            raise ValueError(f"labels must lie in 0..{num_labels - 1}, got values in {lo}..{hi}")
    return labels


def _check_latent_tensor(latents: Any, channels: int) -> torch.Tensor:
    if not isinstance(latents, torch.Tensor):
        raise TypeError(f"latents must be a torch.Tensor, not {type(latents).__name__}")
    if latents.ndim != 4 or latents.shape[1] != channels:
        raise ValueError(f"latents must have shape (B, {channels}, h, w), got {tuple(latents.shape)}")
    if not latents.is_floating_point():
        raise TypeError(f"latents must be floating point, got {latents.dtype}")
    return latents


def labels_to_signal(labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """The reference's grey-level signal of a label map: ``2 * label / (L - 1) - 1``, float32 in [-1, 1]."""
    num_labels = _check_num_labels(num_labels)
    return labels.to(torch.float32) * (2.0 / (num_labels - 1)) - 1.0


def signal_to_labels(images: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Labels from decoded grey-level images ``(B, C, H, W)``: ``(y + 1) / 2`` clipped to [0, 1], mean over
    the channels, times ``L - 1``, rounded. Exactly inverts :func:`labels_to_signal` (any channel count)."""
    num_labels = _check_num_labels(num_labels)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}")
    level = ((images.to(torch.float32) + 1.0) / 2.0).clamp(0.0, 1.0).mean(dim=1)
    return torch.round(level * (num_labels - 1)).long()


class SD2MaskCodec:
    """DiffInfinite's mask latent: the label map as grey levels through the SD2 VAE.

    Encode: labels -> ``2 * label / (L - 1) - 1`` in [-1, 1], repeated to the VAE's 3 input channels, the
    VAE's own latent (posterior mean, :meth:`SD2VAE.encode_raw`, not the image model's /50 latent), divided
    per channel by ``std`` (mean 0; :data:`SD2_MASK_LATENT_STD`: 40, 36, 48, 32 for 5 labels and 46, 36, 55,
    36 for 10). Decode: times ``std``, :meth:`SD2VAE.decode_raw`, then :func:`signal_to_labels`
    (``(y + 1) / 2`` clipped to [0, 1], channel mean, times ``L - 1``, rounded).

    That decode is the reference's patch decode and the correct inverse of the encode. The reference's
    *large-mask* decode instead multiplies the decoded image by 50 and clips it, which squashes almost every
    label to 0 (its published 2048-px masks are ~93 % label 0); this codec deliberately does not reproduce it.

    ``vae`` is an :class:`~napari_diffinfinite.model.SD2VAE` (anything with ``encode_raw``, ``decode_raw``,
    ``latent_channels``, ``downsampling``, ``device`` and ``dtype``); ``cells_per_latent`` is its
    downsampling factor (8). ``std`` overrides the per-channel std (needed for label counts other than 5, 10).
    """

    def __init__(self, vae: Any, num_labels: int, *, std: Sequence[float] | None = None):
        self.num_labels = _check_num_labels(num_labels)
        if std is None:
            try:
                std = SD2_MASK_LATENT_STD[self.num_labels]
            except KeyError:
                raise ValueError(
                    f"no reference latent std for {self.num_labels} labels (known: "
                    f"{sorted(SD2_MASK_LATENT_STD)}); pass std=(...) with one value per latent channel"
                ) from None
        self.vae = vae
        self.latent_channels = int(vae.latent_channels)
        self.cells_per_latent = int(vae.downsampling)
        self.image_channels = int(getattr(vae, "in_channels", 3))
        std = tuple(float(s) for s in std)
        if len(std) != self.latent_channels or any(not s > 0 for s in std):
            raise ValueError(
                f"std needs {self.latent_channels} positive values (one per latent channel), got {std}"
            )
        self.std = torch.tensor(std, dtype=torch.float32)

    def __repr__(self) -> str:
        return (
            f"SD2MaskCodec(num_labels={self.num_labels}, latent_channels={self.latent_channels}, "
            f"cells_per_latent={self.cells_per_latent}, std={tuple(self.std.tolist())})"
        )

    def _std(self, like: torch.Tensor) -> torch.Tensor:
        return self.std.to(device=like.device, dtype=like.dtype).view(1, -1, 1, 1)

    @torch.no_grad()
    def encode(self, labels: torch.Tensor) -> torch.Tensor:
        labels = _check_label_tensor(labels, self.num_labels, self.cells_per_latent)
        signal = labels_to_signal(labels, self.num_labels)[:, None]
        images = signal.expand(-1, self.image_channels, -1, -1)
        images = images.to(device=self.vae.device, dtype=self.vae.dtype)
        raw = self.vae.encode_raw(images, sample=False).to(torch.float32)
        return raw / self._std(raw)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        latents = _check_latent_tensor(latents, self.latent_channels).to(torch.float32)
        raw = latents * self._std(latents)
        images = self.vae.decode_raw(raw.to(device=self.vae.device, dtype=self.vae.dtype))
        return signal_to_labels(images, self.num_labels)


def simplex_vertices(num_labels: int) -> torch.Tensor:
    """The vertices (rows) of a regular simplex with ``num_labels`` vertices in ``num_labels - 1`` dimensions.

    Centred on the origin (so all vertices have the same norm and the nearest vertex is the one with the
    largest dot product), built from the Helmert basis of the plane ``sum(x) = 0`` and scaled so that the
    largest absolute coordinate is 1: every coordinate lies in [-1, 1]. float32, shape ``(L, L - 1)``.
    """
    n = _check_num_labels(num_labels)
    helmert = torch.zeros(n - 1, n, dtype=torch.float64)
    for k in range(1, n):
        norm = math.sqrt(k * (k + 1))
        helmert[k - 1, :k] = 1.0 / norm
        helmert[k - 1, k] = -k / norm
    vertices = helmert.T  # one-hot e_i projected on the orthonormal basis of sum(x) = 0
    return (vertices / vertices.abs().max()).to(torch.float32)


class SimplexMaskCodec:
    """A mask latent without an autoencoder, for the embedded mask model.

    Each label is a vertex of a regular simplex (:func:`simplex_vertices`: ``L - 1`` channels, coordinates in
    [-1, 1]). A mask ``h x w`` becomes a latent ``h / f x w / f`` by average-pooling the vertex embedding over
    ``f x f`` cells (``f = cells_per_latent``). Decoding takes, per latent pixel, the vertex with the largest
    dot product (the nearest vertex; for an average of vertices that is the majority label of the cell, ties
    to the lower label) and repeats it over the ``f x f`` cell. Deterministic; the round trip is exact for
    masks that are constant on ``f x f`` cells.
    """

    def __init__(self, num_labels: int, cells_per_latent: int = 1):
        self.num_labels = _check_num_labels(num_labels)
        f = cells_per_latent
        if isinstance(f, bool) or not isinstance(f, (int, np.integer)) or f < 1:
            raise ValueError(f"cells_per_latent must be an integer >= 1, got {f!r}")
        self.cells_per_latent = int(f)
        self.latent_channels = self.num_labels - 1
        self.vertices = simplex_vertices(self.num_labels)

    def __repr__(self) -> str:
        return f"SimplexMaskCodec(num_labels={self.num_labels}, cells_per_latent={self.cells_per_latent})"

    def encode(self, labels: torch.Tensor) -> torch.Tensor:
        labels = _check_label_tensor(labels, self.num_labels, self.cells_per_latent)
        vertices = self.vertices.to(labels.device)
        embedded = vertices[labels].permute(0, 3, 1, 2)  # (B, L-1, h, w)
        f = self.cells_per_latent
        return F.avg_pool2d(embedded, f) if f > 1 else embedded.contiguous()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        latents = _check_latent_tensor(latents, self.latent_channels)
        vertices = self.vertices.to(device=latents.device, dtype=latents.dtype)
        scores = torch.einsum("bchw,lc->blhw", latents, vertices)
        labels = scores.argmax(dim=1)
        f = self.cells_per_latent
        if f > 1:
            labels = labels.repeat_interleave(f, dim=1).repeat_interleave(f, dim=2)
        return labels


# ====================================================================================== generation
def resolve_context(context: int | str, num_contexts: int = 2) -> int:
    """The context id for ``context``: an id ``0 .. num_contexts - 1`` or a name of :data:`CONTEXT_NAMES`.

    ``num_contexts`` is the mask model's ``num_classes``. Raises ``ValueError`` naming the supported contexts.
    """
    supported = ", ".join(f"{i} ({CONTEXT_PROMPTS.get(i, f'context {i}')})" for i in range(num_contexts))
    names = ", ".join(repr(n) for n, i in CONTEXT_NAMES.items() if i < num_contexts)
    if isinstance(context, str):
        key = " ".join(context.strip().lower().split())
        if key not in CONTEXT_NAMES:
            raise ValueError(
                f"unknown mask context {context!r}; this mask model supports {supported} (names: {names})"
            )
        value = CONTEXT_NAMES[key]
    elif isinstance(context, (int, np.integer)) and not isinstance(context, bool):
        value = int(context)
    else:
        raise ValueError(f"context must be an id or a name, got {context!r}; supported: {supported}")
    if not 0 <= value < num_contexts:
        raise ValueError(
            f"mask context {context!r} is out of range for this mask model ({num_contexts} contexts); "
            f"supported: {supported}"
        )
    return value


# ====================================================================================== cleaning
def _as_label_array(labels: Any, *, name: str = "labels") -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise MaskError(f"{name} must be an integer label array, got dtype {arr.dtype}")
    return arr


def clean_mask(
    labels: Any,
    num_labels: int,
    *,
    factor: int = 1,
    min_filter: int = 6,
) -> np.ndarray:
    """The reference's clean step for generated masks, on a label array ``(h, w)`` or a batch ``(B, h, w)``.

    1. Class borders become bands of label 0: every pixel that ``skimage.segmentation.find_boundaries``
       (``mode="thick"``, ``background=0``) marks - both sides of each border between two different labels,
       so a 2-px band - is set to 0.
    2. A ``min_filter x min_filter`` minimum filter on the label ids (``scipy.ndimage.minimum_filter``), which
       widens the bands of 0 (and the edges of label-0 regions). For an even size the window cannot be
       centred; scipy's convention puts the centre at index ``size // 2``, so with size 6 the window of
       pixel ``(y, x)`` covers rows ``y-3 .. y+2`` and columns ``x-3 .. x+2``: a 0 spreads 2 px up/left and
       3 px down/right. At the array edges the window is clipped to the array. ``min_filter <= 1`` skips it.
    3. :func:`upsample_labels` by ``factor`` (nearest neighbour) to the image resolution, e.g. 4 for a
       128-px mask patch under a 512-px image patch (:data:`MASK_IMAGE_FACTOR`).

    Returns a numpy array of the input's integer dtype, ``factor`` times larger along the last two axes.
    """
    from scipy import ndimage
    from skimage.segmentation import find_boundaries

    arr = _as_label_array(labels, name="mask")
    num_labels = _check_num_labels(num_labels)
    if arr.ndim not in (2, 3):
        raise MaskError(f"clean_mask needs a label array (h, w) or (B, h, w), got shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_labels):
        raise MaskError(
            f"mask labels must lie in 0..{num_labels - 1}, got values in {arr.min()}..{arr.max()}"
        )
    min_filter = int(min_filter)
    out = np.array(arr, copy=True)
    planes = out if out.ndim == 3 else out[None]
    for i, plane in enumerate(planes):
        plane[find_boundaries(plane, mode="thick", background=0)] = 0
        if min_filter > 1:
            # mode "nearest": the window is clipped at the edges (for a min filter "reflect" gives the same)
            planes[i] = ndimage.minimum_filter(plane, size=min_filter, mode="nearest")
    return upsample_labels(out, factor)


# ====================================================================================== painted masks
def _positive_factor(factor: Any, what: str) -> int:
    if isinstance(factor, bool):
        raise MaskError(f"{what} must be a positive integer, got {factor!r}")
    if isinstance(factor, (float, np.floating)) and float(factor).is_integer():
        factor = int(factor)
    if not isinstance(factor, (int, np.integer)) or factor < 1:
        raise MaskError(f"{what} must be a positive integer, got {factor!r}")
    return int(factor)


def upsample_labels(labels: Any, factor: int | tuple[int, int]) -> Any:
    """Nearest-neighbour upsampling of the last two axes: each label pixel becomes a ``factor x factor``
    block.

    ``factor`` is a positive integer or ``(fy, fx)``. A torch tensor stays a tensor; anything else becomes a
    numpy array (dtype kept).
    """
    if isinstance(factor, tuple):
        if len(factor) != 2:
            raise MaskError(f"factor must be an integer or (fy, fx), got {factor!r}")
        fy, fx = (_positive_factor(f, "upsampling factor") for f in factor)
    else:
        fy = fx = _positive_factor(factor, "upsampling factor")
    if isinstance(labels, torch.Tensor):
        if labels.ndim < 2:
            raise MaskError(f"labels need at least 2 dimensions, got shape {tuple(labels.shape)}")
        out = labels.repeat_interleave(fy, dim=-2) if fy > 1 else labels
        return out.repeat_interleave(fx, dim=-1) if fx > 1 else out
    arr = np.asarray(labels)
    if arr.ndim < 2:
        raise MaskError(f"labels need at least 2 dimensions, got shape {arr.shape}")
    if fy > 1:
        arr = np.repeat(arr, fy, axis=-2)
    if fx > 1:
        arr = np.repeat(arr, fx, axis=-1)
    return arr


def labels_at_scale(
    labels: Any,
    mask_scale: int | None = None,
    target_shape: Sequence[int] | None = None,
) -> np.ndarray:
    """A painted mask brought to another resolution by nearest neighbour (numpy, last two axes).

    - ``mask_scale=k``: each mask pixel covers ``k x k`` target pixels; the result is ``k`` times larger.
      If ``target_shape`` is given too, it must be exactly that size.
    - ``target_shape=(H, W)`` alone: the scale is inferred. A larger target must be a whole multiple of the
      mask (same factor on both axes); a smaller one must divide the mask, and each target pixel takes the
      label at the centre of its block.

    Raises :class:`MaskError` with both shapes when they do not divide.
    """
    arr = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    if arr.ndim < 2:
        raise MaskError(f"labels need at least 2 dimensions, got shape {arr.shape}")
    h, w = arr.shape[-2:]
    if target_shape is not None:
        target = tuple(int(v) for v in target_shape)
        if len(target) != 2 or min(target) < 1:
            raise MaskError(f"target_shape must be (height, width), got {target_shape!r}")
    else:
        target = None
    if mask_scale is not None:
        k = _positive_factor(mask_scale, "mask_scale")
        if target is not None and target != (h * k, w * k):
            raise MaskError(
                f"a {h}x{w} mask at scale {k} covers {h * k}x{w * k} px, but the target is "
                f"{target[0]}x{target[1]} px; use mask_scale {target[0] / h:g} (if whole) or a mask of "
                f"{target[0] / k:g}x{target[1] / k:g} px"
            )
        return upsample_labels(arr, k)
    if target is None:
        raise MaskError("labels_at_scale needs mask_scale or target_shape")
    th, tw = target
    if (th, tw) == (h, w):
        return arr
    if th >= h and tw >= w:
        if th % h or tw % w:
            raise MaskError(
                f"the target {th}x{tw} px is not a whole multiple of the {h}x{w} mask "
                f"({th / h:g} x {tw / w:g}); resize or crop the mask so both sides divide, or give mask_scale"
            )
        fy, fx = th // h, tw // w
        if fy != fx:
            raise MaskError(
                f"a {h}x{w} mask would need different scales along y ({fy}) and x ({fx}) to cover "
                f"{th}x{tw} px; mask pixels must be square"
            )
        return upsample_labels(arr, fy)
    if th <= h and tw <= w:
        if h % th or w % tw:
            raise MaskError(
                f"the {h}x{w} mask does not reduce to {th}x{tw} px by a whole factor "
                f"({h / th:g} x {w / tw:g})"
            )
        fy, fx = h // th, w // tw
        if fy != fx:
            raise MaskError(
                f"a {h}x{w} mask would need different factors along y ({fy}) and x ({fx}) "
                f"to reach {th}x{tw} px"
            )
        return arr[..., fy // 2 :: fy, fx // 2 :: fx]
    raise MaskError(f"cannot bring a {h}x{w} mask to {th}x{tw} px: one side grows while the other shrinks")


def _shape_hint(shape: tuple[int, ...]) -> str:
    squeezed = tuple(s for s in shape if s != 1)
    if len(squeezed) == 2:
        return f"squeeze the length-1 axes (np.squeeze(mask) gives shape {squeezed})"
    if len(shape) == 3 and shape[-1] in (3, 4):
        return (
            "it looks like an RGB(A) image: take one channel (mask[..., 0]) if the channels are equal, "
            "or convert colours to label ids"
        )
    if len(shape) == 3:
        return "it looks like a stack: take one plane (mask[0])"
    if len(shape) < 2:
        return "reshape it to (height, width)"
    return "take a single 2-D plane"


def _bbox(where: np.ndarray) -> str:
    rows = np.flatnonzero(where.any(axis=1))
    cols = np.flatnonzero(where.any(axis=0))
    return f"y {rows[0]}:{rows[-1] + 1}, x {cols[0]}:{cols[-1] + 1}"


_MAX_LISTED = 10


def _invalid_labels_message(arr: np.ndarray, num_classes: int, name: str) -> str | None:
    bad = (arr < 0) | (arr >= num_classes)
    if not bad.any():
        return None
    values, counts = np.unique(arr[bad], return_counts=True)
    shown = [int(v) for v in values[:_MAX_LISTED]]
    listed = "[" + ", ".join(map(str, shown)) + (", ...]" if len(values) > _MAX_LISTED else "]")
    parts = [
        f"label {int(v)} at {int(c)} px in {_bbox(arr == v)}" for v, c in zip(values[:_MAX_LISTED], counts)
    ]
    more = f"; and {len(values) - _MAX_LISTED} more invalid labels" if len(values) > _MAX_LISTED else ""
    names = ""
    if num_classes in CLASS_SETS:
        names = " (" + ", ".join(f"{c.id} {c.name}" for c in CLASS_SETS[num_classes]) + ")"
    return (
        f"{name} has labels {listed} outside 0..{num_classes - 1}: "
        + "; ".join(parts)
        + more
        + f". This model knows {num_classes} classes{names}; repaint those pixels with valid labels."
    )


def validate_labels(array: Any, num_classes: int, *, name: str = "mask") -> np.ndarray:
    """Check a painted label image and return it as an int64 ``(height, width)`` numpy array.

    Accepts any integer dtype; floats only if every value is integral (else the first non-integral value and
    its position are named); ``bool`` is refused (a bool mask says where, not which class). 2-D only: other
    shapes get a message with the shape and how to fix it. Values must lie in ``0 .. num_classes - 1``;
    otherwise the message lists the invalid labels with their pixel counts and bounding boxes
    (``y y0:y1, x x0:x1``, end-exclusive as slices). Raises :class:`MaskError`.
    """
    num_classes = _check_num_labels(num_classes, what="num_classes")
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    arr = np.asarray(array)
    if arr.dtype == bool:
        raise MaskError(
            f"{name} is boolean, but a mask holds class label ids; convert it, "
            "e.g. mask.astype(np.uint8) * label"
        )
    if arr.ndim != 2:
        raise MaskError(
            f"{name} must be a 2-D label image (height, width), got shape {arr.shape}; "
            f"{_shape_hint(arr.shape)}"
        )
    if arr.size == 0:
        raise MaskError(f"{name} is empty (shape {arr.shape})")
    if np.issubdtype(arr.dtype, np.floating):
        integral = np.isfinite(arr) & (arr == np.floor(arr))
        if not integral.all():
            y, x = np.unravel_index(int(np.flatnonzero(~integral)[0]), arr.shape)
            count = int((~integral).sum())
            raise MaskError(
                f"{name} has non-integer values ({count} px), "
                f"the first {float(arr[y, x])!r} at y={y}, x={x}; "
                "a mask holds integer class label ids (do not resize it with interpolation)"
            )
        # integral floats outside int64's range are invalid labels anyway; clip so the cast is defined
        arr = np.clip(arr, np.iinfo(np.int64).min // 2, np.iinfo(np.int64).max // 2).astype(np.int64)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise MaskError(f"{name} must hold integer label ids, got dtype {arr.dtype}")
    message = _invalid_labels_message(arr, num_classes, name)
    if message:
        raise MaskError(message)
    return arr.astype(np.int64, copy=False)


def scaled_label_codes(num_labels: int) -> dict[int, int]:
    """8-bit codes of labels scaled to 0..255, ``{code: label}``: both ``round`` and ``floor`` of
    ``label * 255 / (L - 1)`` (tools disagree; the reference's example uses 0, 63, 191, 255 for 5 labels)."""
    n = _check_num_labels(num_labels)
    step = 255.0 / (n - 1)
    codes: dict[int, int] = {}
    for label in range(n):
        codes[int(math.floor(label * step + 1e-9))] = label
        codes[int(math.floor(label * step + 0.5))] = label
    return codes


def _is_scaled(values: np.ndarray, num_labels: int) -> bool:
    codes = scaled_label_codes(num_labels)
    return bool(values.size) and int(values.max()) > num_labels - 1 and all(int(v) in codes for v in values)


def _read_image(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() in (".tif", ".tiff"):  # also .ome.tif
            import tifffile

            arr = np.asarray(tifffile.imread(path))
        else:
            from PIL import Image

            with Image.open(path) as im:
                if im.mode == "1":
                    arr = np.asarray(im).astype(np.uint8)
                else:
                    arr = np.asarray(im)  # "P": palette indices are the label ids
    except (OSError, ValueError, SyntaxError) as exc:
        raise MaskError(f"cannot read {path} as a label image: {exc}") from exc
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] in (2, 3, 4):
        colour = arr[..., :3] if arr.shape[-1] >= 3 else arr[..., :1]
        opaque = True
        if arr.shape[-1] in (2, 4):  # an alpha channel: the mask must be fully opaque
            full = np.iinfo(arr.dtype).max if np.issubdtype(arr.dtype, np.integer) else 1.0
            opaque = bool((arr[..., -1] == full).all())
        if opaque and (colour == colour[..., :1]).all():
            arr = colour[..., 0]  # grey levels saved as RGB(A): every channel holds the label
        else:
            raise MaskError(
                f"{path} is a colour image (shape {arr.shape}); save the mask as a single-channel image of "
                "label ids (grayscale PNG/TIFF, 8 or 16 bit)"
            )
    return arr


def load_label_image(path: str | os.PathLike, num_classes: int) -> np.ndarray:
    """Read a label image (PNG, TIFF, or anything Pillow opens) as validated int64 label ids ``(H, W)``.

    Values are label ids, except for the 8-bit "scaled" convention (labels stored as
    ``label * 255 / (L - 1)``, e.g. 0, 63, 191, 255 in the reference's 5-class example): it is recognised
    only when the image is 8-bit, every value is one of those codes for ``L = num_classes``
    (:func:`scaled_label_codes`) and some value exceeds ``num_classes - 1``; it is converted with
    ``round(v / (255 / (L - 1)))``. Length-1 leading axes are dropped, a grey image saved as RGB(A) (equal
    channels, opaque) is read from one channel, palette images give their indices. Raises
    ``FileNotFoundError`` for a missing file and :class:`MaskError` for unreadable or invalid content.
    """
    num_classes = _check_num_labels(num_classes, what="num_classes")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file {str(path)!r} does not exist")
    arr = _read_image(path)
    if arr.dtype == np.uint8:
        values = np.unique(arr)
        if _is_scaled(values, num_classes):
            step = 255.0 / (num_classes - 1)
            arr = np.rint(arr / step).astype(np.int64)
    try:
        return validate_labels(arr, num_classes, name=f"mask {path.name}")
    except MaskError as exc:
        hint = ""
        if arr.dtype == np.uint8 and arr.ndim == 2:
            values = np.unique(arr)
            others = [n for n in sorted(CLASS_SETS) if n != num_classes and _is_scaled(values, n)]
            if others:
                hint = (
                    f" (its values {values.tolist()} look like {others[0]}-class labels scaled to 0..255: "
                    f"is it a {others[0]}-class mask?)"
                )
        raise MaskError(f"{exc}{hint}") from None
