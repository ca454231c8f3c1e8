"""Masks: latent codecs, one-patch mask generation, cleaning, painted-mask validation and loading.

Real data: the 16-bit label maps of the DiffInfinite sample patches (copied into tests/fixtures/sample_masks)
and the shipped 8-bit "scaled" example mask. Real networks: a tiny random SD2 VAE (diffusers) and a
tiny random MaskUnet. Nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from napari_diffinfinite._resources import resource_path
from napari_diffinfinite.sampling.masks import (
    MaskCodec,
    MaskError,
    SD2MaskCodec,
    SimplexMaskCodec,
    clean_mask,
    labels_at_scale,
    labels_to_signal,
    load_label_image,
    resolve_context,
    scaled_label_codes,
    signal_to_labels,
    simplex_vertices,
    upsample_labels,
    validate_labels,
)

# copies of the 50 masks of the sample data's patches/omega3.0 (see the folder's README)
PATCH_MASKS = sorted((Path(__file__).parent / "fixtures" / "sample_masks").glob("*_mask.png"))
assert len(PATCH_MASKS) == 50, "the sample-mask fixtures are missing"
SCALED_EXAMPLE = resource_path("masks", "squamous_mask_example_5classes.png")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny networks run fastest on one thread; on a busy 2-core machine more threads stall (~100x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _patch_mask(i: int) -> np.ndarray:
    with Image.open(PATCH_MASKS[i]) as im:
        return np.asarray(im)


def _two_label_patch_masks(n: int = 2) -> list[np.ndarray]:
    """The first ``n`` sample masks that hold a nonzero label (0 plus one or two classes)."""
    found = []
    for path in PATCH_MASKS:
        with Image.open(path) as im:
            arr = np.asarray(im)
        if len(np.unique(arr)) >= 2:
            found.append(arr)
        if len(found) == n:
            break
    return found


# ====================================================================================== codecs
def test_simplex_vertices_regular_centred_in_unit_box():
    for n in (2, 5, 10):
        v = simplex_vertices(n).double()
        assert v.shape == (n, n - 1)
        assert v.abs().max().item() == pytest.approx(1.0)
        assert torch.allclose(v.sum(dim=0), torch.zeros(n - 1, dtype=torch.float64), atol=1e-6)
        d = torch.cdist(v, v)[~torch.eye(n, dtype=torch.bool)]
        assert torch.allclose(d, d[0].expand_as(d), rtol=1e-5)  # all vertices equidistant
        norms = v.norm(dim=1)
        assert torch.allclose(norms, norms[0].expand_as(norms), rtol=1e-5)


def test_simplex_codec_exact_round_trip_on_sample_masks():
    masks = torch.from_numpy(np.stack(_two_label_patch_masks(2)).astype(np.int64))
    codec = SimplexMaskCodec(5)
    assert isinstance(codec, MaskCodec)
    assert (codec.latent_channels, codec.cells_per_latent) == (4, 1)
    latents = codec.encode(masks)
    assert latents.shape == (2, 4, 512, 512) and latents.dtype == torch.float32
    assert latents.abs().max() <= 1.0
    assert torch.equal(codec.decode(latents), masks)

    # at f = 4, masks constant on 4x4 cells survive exactly (a 128-px mask blown up to 512 px)
    coarse = torch.from_numpy(upsample_labels(masks.numpy()[:, ::4, ::4], 4))
    codec4 = SimplexMaskCodec(5, cells_per_latent=4)
    latents4 = codec4.encode(coarse)
    assert latents4.shape == (2, 4, 128, 128)
    assert torch.equal(codec4.decode(latents4), coarse)


def test_simplex_codec_majority_decode_and_checks():
    codec = SimplexMaskCodec(5, cells_per_latent=2)
    labels = torch.tensor([[[2, 2, 1, 3], [2, 0, 4, 4]]])  # cells: {2,2,2,0} -> 2; {1,3,4,4} -> 4
    out = codec.decode(codec.encode(labels))
    assert out.tolist() == [[[2, 2, 4, 4], [2, 2, 4, 4]]]
    with pytest.raises(ValueError, match="multiples of 2"):
        codec.encode(torch.zeros(1, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"0\.\.4"):
        codec.encode(torch.full((1, 2, 2), 5))
    with pytest.raises(ValueError, match=r"\(B, 4, h, w\)"):
        codec.decode(torch.zeros(1, 3, 2, 2))


@pytest.fixture(scope="module")
def tiny_vae():
    from napari_diffinfinite.model import SD2VAE, TINY_VAE_OVERRIDES

    return SD2VAE.from_config(seed=0, device="cpu", **TINY_VAE_OVERRIDES)


def test_sd2_label_formula_inverts_the_encode_signal_exactly():
    for n in (2, 5, 10):
        labels = torch.arange(n).repeat(3, 1).reshape(1, 3, n)
        signal = labels_to_signal(labels, n)
        assert signal.min() == -1.0 and signal.max() == 1.0
        images = signal[:, None].expand(-1, 3, -1, -1)  # the 3 grey channels the VAE would see
        assert torch.equal(signal_to_labels(images, n), labels)
    # out-of-range decoder output is clipped, not wrapped: labels stay in 0..L-1
    wild = torch.tensor([-3.0, -1.2, 1.4, 7.0]).reshape(1, 1, 1, 4)
    assert signal_to_labels(wild, 5).tolist() == [[[0, 0, 4, 4]]]


def test_sd2_codec_shapes_ranges_and_normalisation(tiny_vae):
    masks = np.stack(_two_label_patch_masks(2))[:, ::8, ::8].astype(np.int64)  # 64 px, as labels
    labels = torch.from_numpy(masks)
    codec = SD2MaskCodec(tiny_vae, 5)
    assert isinstance(codec, MaskCodec)
    assert (codec.num_labels, codec.latent_channels, codec.cells_per_latent) == (5, 4, 8)
    latents = codec.encode(labels)
    assert latents.shape == (2, 4, 8, 8) and latents.dtype == torch.float32
    # the VAE's own (unscaled) latent of the grey-level signal, divided per channel by 40, 36, 48, 32
    images = labels_to_signal(labels, 5)[:, None].expand(-1, 3, -1, -1)
    raw = tiny_vae.encode_raw(images)
    std = torch.tensor([40.0, 36.0, 48.0, 32.0]).view(1, 4, 1, 1)
    torch.testing.assert_close(latents, raw / std)
    decoded = codec.decode(latents)
    assert decoded.shape == (2, 64, 64) and decoded.dtype == torch.long
    assert 0 <= decoded.min() and decoded.max() <= 4

    assert SD2MaskCodec(tiny_vae, 10).std.tolist() == [46.0, 36.0, 55.0, 36.0]
    with pytest.raises(ValueError, match="no reference latent std for 7 labels"):
        SD2MaskCodec(tiny_vae, 7)
    assert SD2MaskCodec(tiny_vae, 7, std=(1, 2, 3, 4)).std.tolist() == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ValueError, match="multiples of 8"):
        codec.encode(torch.zeros(1, 12, 16, dtype=torch.long))


# ====================================================================================== cleaning
def test_clean_mask_turns_a_class_border_into_a_band_of_zero():
    labels = np.ones((16, 16), dtype=np.uint8)
    labels[:, 8:] = 3
    out = clean_mask(labels, 5)
    assert out.dtype == np.uint8 and out.shape == (16, 16)
    # thick boundary: columns 7 and 8; the 6x6 min filter spreads 0 two columns left and three right
    zero_cols = np.flatnonzero((out == 0).all(axis=0))
    assert zero_cols.tolist() == list(range(5, 12))
    assert (out[:, :5] == 1).all() and (out[:, 12:] == 3).all()  # interiors kept
    # a single class (no border) is left alone; factor 4 upsamples by nearest neighbour
    flat = np.full((8, 8), 2, dtype=np.int64)
    assert (clean_mask(flat, 5, factor=4) == 2).all() and clean_mask(flat, 5, factor=4).shape == (32, 32)
    up = clean_mask(labels, 5, factor=4)
    assert up.shape == (64, 64) and np.array_equal(up[::4, ::4], out)
    with pytest.raises(MaskError, match=r"0\.\.4"):
        clean_mask(np.full((4, 4), 6), 5)


def test_clean_mask_on_sample_masks_at_mask_resolution():
    masks = np.stack(_two_label_patch_masks(2))[:, ::4, ::4]  # the 128-px masks the mask model works at
    cleaned = clean_mask(masks, 5, factor=4)
    assert cleaned.shape == (2, 512, 512) and cleaned.dtype == masks.dtype
    small = cleaned[:, ::4, ::4]
    # cleaning only ever turns pixels into 0: every nonzero label is the original one
    assert np.array_equal(small[small > 0], masks[small > 0])
    assert (small == 0).sum() >= (masks == 0).sum()
    for m, c in zip(masks, small):
        assert set(np.unique(c)) <= set(np.unique(m))


# ====================================================================================== validation
def test_validate_labels_accepts_integer_and_integral_float_arrays():
    for dtype in (np.uint8, np.uint16, np.int32, np.int64, np.float32):
        arr = np.array([[0, 1], [4, 2]], dtype=dtype)
        out = validate_labels(arr, 5)
        assert out.dtype == np.int64 and out.tolist() == [[0, 1], [4, 2]]
    assert validate_labels(torch.tensor([[1, 2]]), 5).tolist() == [[1, 2]]


def test_validate_labels_lists_invalid_labels_counts_and_boxes():
    arr = np.zeros((64, 64), dtype=np.uint16)
    arr[10:20, 3:15] = 7  # 120 px
    arr[30:32, 40:45] = 9  # 10 px
    arr[50, 50] = 4
    with pytest.raises(MaskError) as err:
        validate_labels(arr, 5)
    msg = str(err.value)
    assert "mask has labels [7, 9] outside 0..4" in msg
    assert "label 7 at 120 px in y 10:20, x 3:15" in msg
    assert "label 9 at 10 px in y 30:32, x 40:45" in msg
    assert "Carcinoma" in msg  # the valid classes are named

    neg = np.zeros((4, 4), dtype=np.int16)
    neg[1, 2] = -1
    with pytest.raises(MaskError, match=r"labels \[-1\] outside 0\.\.4: label -1 at 1 px in y 1:2, x 2:3"):
        validate_labels(neg, 5, name="painted")
    many = np.arange(30 * 30).reshape(30, 30)
    with pytest.raises(MaskError, match=r"labels \[5, 6, .*, 14, \.\.\.\].*and 885 more invalid labels"):
        validate_labels(many, 5)


def test_validate_labels_rejects_bool_float_and_wrong_shapes():
    with pytest.raises(MaskError, match="boolean"):
        validate_labels(np.zeros((4, 4), dtype=bool), 5)
    frac = np.zeros((5, 6), dtype=np.float32)
    frac[3, 4] = 2.5
    frac[4, 5] = 0.25
    with pytest.raises(MaskError, match=r"non-integer values \(2 px\), the first 2\.5 at y=3, x=4"):
        validate_labels(frac, 5)
    nan = np.zeros((2, 2))
    nan[0, 1] = np.nan
    with pytest.raises(MaskError, match=r"nan at y=0, x=1"):
        validate_labels(nan, 5)
    with pytest.raises(MaskError, match=r"got shape \(8, 8, 3\); it looks like an RGB"):
        validate_labels(np.zeros((8, 8, 3), dtype=np.uint8), 5)
    with pytest.raises(MaskError, match=r"got shape \(1, 8, 8\); squeeze .* \(8, 8\)"):
        validate_labels(np.zeros((1, 8, 8), dtype=np.uint8), 5)
    with pytest.raises(MaskError, match=r"got shape \(8,\)"):
        validate_labels(np.zeros(8, dtype=np.uint8), 5)
    with pytest.raises(MaskError, match="integer label ids"):
        validate_labels(np.array([["a", "b"]]), 5)


# ====================================================================================== loading
def test_scaled_codes_cover_round_and_floor():
    codes = scaled_label_codes(5)
    assert {0, 63, 64, 127, 128, 191, 255} == set(codes)
    assert [codes[c] for c in (0, 63, 64, 127, 128, 191, 255)] == [0, 1, 1, 2, 2, 3, 4]


def test_load_scaled_8bit_example_gives_label_ids():
    labels = load_label_image(SCALED_EXAMPLE, 5)
    assert labels.shape == (2560, 2560) and labels.dtype == np.int64
    values, counts = np.unique(labels, return_counts=True)
    assert values.tolist() == [0, 1, 3, 4]
    assert counts.tolist() == [843, 3020147, 3505845, 26765]  # the file's 0, 63, 191, 255 counts
    # as a 10-class mask the values are no scaled codes: refused, with the likely explanation
    with pytest.raises(MaskError) as err:
        load_label_image(SCALED_EXAMPLE, 10)
    msg = str(err.value)
    assert "labels [63, 191, 255] outside 0..9" in msg and "5-class labels scaled to 0..255" in msg


def test_load_16bit_sample_masks_as_label_ids():
    for path in PATCH_MASKS[:3]:
        labels = load_label_image(path, 5)
        with Image.open(path) as im:
            raw = np.asarray(im)
        assert raw.dtype == np.uint16 and np.array_equal(labels, raw)


def test_load_label_files_of_each_kind(tmp_path):
    ids = np.zeros((16, 16), dtype=np.uint8)
    ids[4:8, 4:8] = 2
    ids[10:, :] = 1
    Image.fromarray(ids).save(tmp_path / "ids.png")
    assert np.array_equal(load_label_image(tmp_path / "ids.png", 5), ids)  # small values: label ids

    scaled = np.where(ids == 2, 255, 0).astype(np.uint8)
    Image.fromarray(scaled).save(tmp_path / "scaled.png")
    assert np.unique(load_label_image(tmp_path / "scaled.png", 5)).tolist() == [0, 4]

    mixed = scaled.copy()
    mixed[0, 0] = 3  # 3 is not a scaled code: values are ids, and 255 is invalid
    Image.fromarray(mixed).save(tmp_path / "mixed.png")
    msg = r"mask mixed.png has labels \[255\] outside 0\.\.4: label 255 at 16 px"
    with pytest.raises(MaskError, match=msg):
        load_label_image(tmp_path / "mixed.png", 5)

    import tifffile

    tifffile.imwrite(tmp_path / "ids.ome.tif", ids.astype(np.uint16)[None])
    assert np.array_equal(load_label_image(tmp_path / "ids.ome.tif", 5), ids)

    Image.fromarray(np.stack([ids] * 3, axis=-1)).save(tmp_path / "grey_rgb.png")
    assert np.array_equal(load_label_image(tmp_path / "grey_rgb.png", 5), ids)
    colour = np.stack([ids, ids, ids * 0 + 9], axis=-1)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(MaskError, match="colour image"):
        load_label_image(tmp_path / "colour.png", 5)

    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(MaskError, match="cannot read"):
        load_label_image(tmp_path / "junk.png", 5)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_label_image(tmp_path / "missing.png", 5)


# ====================================================================================== scales
def test_upsample_and_labels_at_scale():
    labels = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    up = upsample_labels(labels, 3)
    assert up.shape == (6, 6) and up.dtype == np.uint8 and (up[3:, :3] == 2).all()
    wide = upsample_labels(torch.from_numpy(labels), (1, 2))
    assert torch.equal(wide, torch.tensor([[0, 0, 1, 1], [2, 2, 3, 3]], dtype=torch.uint8))
    assert np.array_equal(labels_at_scale(labels, 4), upsample_labels(labels, 4))
    assert np.array_equal(labels_at_scale(labels, 4, (8, 8)), upsample_labels(labels, 4))
    assert np.array_equal(labels_at_scale(labels, target_shape=(10, 10)), upsample_labels(labels, 5))
    assert np.array_equal(labels_at_scale(up, target_shape=(2, 2)), labels)  # centre of each 3x3 block
    with pytest.raises(MaskError, match=r"2x2 mask at scale 4 covers 8x8 px, but the target is 10x10"):
        labels_at_scale(labels, 4, (10, 10))
    with pytest.raises(MaskError, match=r"target 9x9 px is not a whole multiple of the 2x2 mask"):
        labels_at_scale(labels, target_shape=(9, 9))
    with pytest.raises(MaskError, match=r"different scales along y \(2\) and x \(3\)"):
        labels_at_scale(labels, target_shape=(4, 6))
    with pytest.raises(MaskError, match="positive integer"):
        labels_at_scale(labels, 2.5)
    with pytest.raises(MaskError, match="mask_scale or target_shape"):
        labels_at_scale(labels)


def test_coarse_painted_mask_comes_back_to_full_resolution():
    full = _patch_mask(0)
    coarse = full[::8, ::8]  # painted at 1/8 of the image resolution
    back = labels_at_scale(coarse, 8, full.shape)
    assert back.shape == full.shape
    assert (back == full).mean() > 0.95  # the sample masks are coarse


# ====================================================================================== generation
def test_contexts_resolve_by_number_or_name_and_unknown_ones_are_refused_with_the_choices():
    assert resolve_context(0) == 0 and resolve_context("adeno") == 0
    assert resolve_context(" Squamous  Cell carcinoma ") == 1
    with pytest.raises(ValueError, match=r"context 5 is out of range.*0 \(adenocarcinoma\), 1 \(squamous"):
        resolve_context(5)
    with pytest.raises(ValueError, match=r"unknown mask context 'melanoma'.*0 \(adenocarcinoma\).*'squamous'"):
        resolve_context("melanoma")
    with pytest.raises(ValueError, match="out of range"):
        resolve_context(1, 1)
