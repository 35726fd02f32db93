"""Preprocessing: reference resize/crop geometry, coordinates back to original pixels,
intrinsics, normalisation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mast3r_ros.model.preprocess import (
    check_network_size,
    compute_transform,
    normalize_image,
    preprocess_image,
)


@pytest.mark.parametrize(
    "hw, resized, crop, net",
    [
        ((480, 640), (384, 512), (0, 0), (384, 512)),
        ((1080, 1920), (288, 512), (0, 0), (288, 512)),
        ((720, 1280), (288, 512), (0, 0), (288, 512)),
        ((512, 512), (512, 512), (0, 64), (384, 512)),       # square -> 3/4 height
        ((1000, 750), (512, 384), (0, 0), (512, 384)),       # portrait
        ((375, 500), (384, 512), (0, 0), (384, 512)),        # enlarged
        ((641, 1023), (321, 512), (0, 0), (320, 512)),       # 321 -> crop 1 px: y0 = 160 - 160
        ((777, 333), (512, 219), (5, 0), (512, 208)),        # 219 = 13*16 + 11 -> x0 = 5
    ],
)
def test_compute_transform_values(hw, resized, crop, net):
    """Values worked out by hand from the reference rule (long side -> 512, round, centre crop)."""
    t = compute_transform(*hw)
    assert t.orig_size == hw
    assert t.resized_size == resized
    assert t.crop_xy == crop
    assert t.network_size == net


def test_square_ok_keeps_square():
    t = compute_transform(600, 600, square_ok=True)
    assert t.network_size == (512, 512) and t.crop_xy == (0, 0)


def test_transform_rejects_bad_sizes():
    with pytest.raises(ValueError, match="positive"):
        compute_transform(0, 10)
    with pytest.raises(ValueError, match="no full 16-pixel"):
        compute_transform(10, 2000)


def _blob_image(h: int, w: int, centre_xy: tuple[float, float], radius: int) -> np.ndarray:
    """Grey image (128) with a bright (228) square of side 2*radius centred on centre_xy
    (which lies between pixels when the side is even)."""
    img = np.full((h, w, 3), 128, np.uint8)
    cx, cy = centre_xy
    x0, y0 = int(round(cx - radius + 0.5)), int(round(cy - radius + 0.5))
    img[y0:y0 + 2 * radius, x0:x0 + 2 * radius] = 228
    return img


def _centroid(net_img: np.ndarray, around_xy: np.ndarray, half: int) -> np.ndarray:
    """Intensity-weighted centroid of (value - background) in a window: resampling with
    symmetric, normalised kernels keeps it, ringing included (no clipping at 128 +- 100)."""
    v = net_img[..., 0].astype(np.float64) - 128.0
    x, y = np.round(around_xy).astype(int)
    ys, xs = np.mgrid[y - half:y + half + 1, x - half:x + half + 1]
    wgt = v[y - half:y + half + 1, x - half:x + half + 1]
    return np.array([(wgt * xs).sum() / wgt.sum(), (wgt * ys).sum() / wgt.sum()])


@pytest.mark.parametrize(
    "hw",
    [(641, 1023), (1023, 641), (777, 333), (601, 601), (301, 203), (203, 301), (199, 199)],
    ids=["landscape", "portrait", "tall", "square", "small-portrait-enlarged",
         "small-landscape-enlarged", "small-square-enlarged"],
)
def test_markers_map_back_to_original_pixels(hw):
    """A marker drawn at a known original position is found in the network image at
    orig_to_net(position), and net_to_orig of where it is found gives the position back."""
    h, w = hw
    t = compute_transform(h, w)
    rng = np.random.default_rng(h * 7 + w)
    scale = max(t.scale_xy)
    radius = max(2, int(np.ceil(2 * scale)))
    for _ in range(4):
        # keep markers away from the crop border so the whole blob is inside the network image
        nh, nw = t.network_size
        nx, ny = rng.uniform(12, nw - 13), rng.uniform(12, nh - 13)
        centre = t.net_to_orig(np.array([[nx, ny]]))[0]
        centre = np.floor(centre) + 0.5 if radius % 1 == 0 else centre  # between pixels
        img = _blob_image(h, w, tuple(centre), radius)
        net_img, t2 = preprocess_image(img)
        assert t2 == t
        net_u8 = np.round((net_img[0].permute(1, 2, 0).numpy() * 0.5 + 0.5) * 255.0)
        expect_net = t.orig_to_net(centre[None])[0]
        found = _centroid(net_u8, expect_net, half=int(np.ceil(radius / min(t.scale_xy))) + 4)
        # uint8 rounding of the resampled image: well under a tenth of a network pixel
        np.testing.assert_allclose(found, expect_net, atol=0.08)
        np.testing.assert_allclose(t.net_to_orig(found[None])[0], centre, atol=0.08 * scale)


def test_wrong_crop_would_be_detected():
    """The marker test is sensitive: a transform off by one crop pixel fails it."""
    from dataclasses import replace

    t = compute_transform(777, 333)
    bad = replace(t, crop_xy=(t.crop_xy[0] + 1, t.crop_xy[1]))
    centre = np.array([150.5, 400.5])
    img = _blob_image(777, 333, tuple(centre), 4)
    net_img, _ = preprocess_image(img)
    net_u8 = np.round((net_img[0].permute(1, 2, 0).numpy() * 0.5 + 0.5) * 255.0)
    found = _centroid(net_u8, t.orig_to_net(centre[None])[0], half=8)
    assert np.abs(bad.net_to_orig(found[None])[0] - centre).max() > 0.5


@pytest.mark.parametrize("hw", [(641, 1023), (777, 333), (601, 601), (203, 301)])
def test_intrinsics_map_consistently(hw):
    """Projecting with K_net equals projecting with K then mapping pixels to the network."""
    t = compute_transform(*hw)
    K = np.array([[500.0, 0, hw[1] / 2 - 3.2], [0, 510.0, hw[0] / 2 + 1.7], [0, 0, 1]])
    rng = np.random.default_rng(0)
    X = rng.uniform([-1, -1, 2], [1, 1, 5], size=(20, 3))
    uv = (X @ K.T)[:, :2] / X[:, 2:]
    K_net = t.intrinsics_to_net(K)
    uv_net = (X @ K_net.T)[:, :2] / X[:, 2:]
    np.testing.assert_allclose(uv_net, t.orig_to_net(uv), atol=1e-9)
    np.testing.assert_allclose(t.intrinsics_to_orig(K_net), K, atol=1e-9)
    np.testing.assert_allclose(t.net_to_orig(t.orig_to_net(uv)), uv, atol=1e-9)


def test_normalisation_matches_reference_op_order():
    img = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    out = normalize_image(img)
    assert out.shape == (1, 3, 16, 16) and out.dtype == torch.float32
    ref = (torch.arange(256, dtype=torch.float32) / 255.0 - 0.5) / 0.5
    assert torch.equal(out[0, 0].flatten(), ref)
    assert out.min() == -1.0 and out.max() == 1.0


def test_no_resize_checks_multiples_of_16():
    img = np.zeros((48, 70, 3), np.uint8)
    with pytest.raises(ValueError, match="width 70 not a multiple of 16.*drop --no-resize"):
        preprocess_image(img, resize=False)
    x, t = preprocess_image(np.zeros((48, 64, 3), np.uint8), resize=False)
    assert x.shape == (1, 3, 48, 64) and t.network_size == (48, 64) and t.crop_xy == (0, 0)
    check_network_size(32, 32)


def test_bad_image_rejected():
    with pytest.raises(ValueError, match="uint8"):
        preprocess_image(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        preprocess_image(np.zeros((32, 32), np.uint8))
