"""Coarse-to-fine matching on a synthetic high-resolution pair with a known homography,
through the ground-truth descriptor engine ``mast3r_ros.synth.homography.HomographyDescriptorEngine``."""
from __future__ import annotations

import numpy as np
import pytest

from mast3r_ros.matching.coarse_to_fine import (
    CoarseToFineConfig, coarse_to_fine_match, select_window_pairs, window_grid,
)
from mast3r_ros.model.types import PairEngine
from mast3r_ros.synth.homography import HomographyDescriptorEngine, coordinate_image, decode_pixel

FINE_TOL_PX = 1.5  # full-resolution accuracy required of fine matches


def homography(h, w, angle=0.1, scale=1.05, shift=(20, -15), persp=(4e-5, 2e-5)):
    c = np.array([[1, 0, w / 2], [0, 1, h / 2], [0, 0, 1.0]])
    a = np.array([[scale * np.cos(angle), -scale * np.sin(angle), shift[0]],
                  [scale * np.sin(angle), scale * np.cos(angle), shift[1]],
                  [persp[0], persp[1], 1.0]])
    return c @ a @ np.linalg.inv(c)


def errors(H21, xy1, xy2):
    p = np.concatenate([xy1, np.ones((len(xy1), 1))], 1) @ H21.T
    return np.linalg.norm(p[:, :2] / p[:, 2:] - xy2, axis=1)


def test_window_grid_overlap_and_cover():
    w = window_grid((600, 800), (192, 256), 0.5)
    assert np.all((w[:, 2] - w[:, 0]) == 256) and np.all((w[:, 3] - w[:, 1]) == 192)
    assert sorted(set(w[:, 0].tolist())) == [0, 128, 256, 384, 512, 544]  # last flush with border
    assert sorted(set(w[:, 1].tolist())) == [0, 96, 192, 288, 384, 408]
    assert w[:, 2].max() == 800 and w[:, 3].max() == 600
    with pytest.raises(ValueError, match="larger than the image"):
        window_grid((100, 100), (192, 256))


def test_greedy_selection_covers_requested_fraction():
    w1 = window_grid((400, 400), (160, 160), 0.5)
    rng = np.random.default_rng(0)
    xy1 = rng.uniform(0, 400, (500, 2))
    xy2 = xy1[:, ::-1].copy()  # a transpose: windows pair up off the diagonal
    pairs, cov = select_window_pairs(xy1, xy2, w1, w1, coverage=0.9)
    assert cov >= 0.9
    # removing the last pair drops below the target: greedy stops as soon as it can
    _, cov_less = select_window_pairs(xy1, xy2, w1, w1, coverage=0.9, max_pairs=len(pairs) - 1)
    assert cov_less < 0.9
    assert len({tuple(p) for p in pairs.tolist()}) == len(pairs)


def test_coordinate_image_round_trip():
    im = coordinate_image(30, 40, 1)
    assert decode_pixel(im[17, 23]) == (1, 23, 17)


def test_coarse_to_fine_accuracy_high_res():
    """800x600 pair, simulated network input 256x192 (the same 3.125 downscale as 1600x1200
    into MASt3R's 512x384): fine matches within 1.5 px and far better than coarse ones."""
    h, w = 600, 800
    H21 = homography(h, w)
    engine = HomographyDescriptorEngine(H21, size=256)
    assert isinstance(engine, PairEngine)
    res = coarse_to_fine_match(engine, coordinate_image(h, w, 0), coordinate_image(h, w, 1),
                               CoarseToFineConfig(window_size=(192, 256)))
    assert res.covered >= 0.9
    e_fine = errors(H21, res.xy1, res.xy2)
    e_coarse = errors(H21, res.coarse.xy1, res.coarse.xy2)
    assert len(res) > 5 * len(res.coarse)  # many more matches at full resolution
    assert np.mean(e_fine <= FINE_TOL_PX) >= 0.99, np.percentile(e_fine, [50, 99, 100])
    assert np.median(e_fine) < 0.6
    assert np.median(e_fine) < np.median(e_coarse) / 2
    assert np.mean(e_fine <= FINE_TOL_PX) > np.mean(e_coarse <= FINE_TOL_PX)
    # every crop encoded once, all crop pairs decoded in one batch
    used = {(0, i) for i in res.window_pairs[:, 0]} | {(1, j) for j in res.window_pairs[:, 1]}
    assert engine.n_encode == 2 + len(used) and engine.n_decode_batch == 1
    # merged without duplicates: one match per pixel of each image
    for xy in (res.xy1, res.xy2):
        assert len(np.unique(np.round(xy).astype(int), axis=0)) == len(xy)
    # inside the images
    assert np.all((res.xy1 >= 0) & (res.xy1 < [w, h])) and np.all((res.xy2 >= 0) & (res.xy2 < [w, h]))


def test_coarse_to_fine_config_errors():
    with pytest.raises(ValueError, match="multiples of 16"):
        CoarseToFineConfig(window_size=(100, 512))
    with pytest.raises(ValueError, match="unknown CoarseToFineConfig key"):
        CoarseToFineConfig.from_dict({"windows": 3})
    cfg = CoarseToFineConfig.from_dict({"fine": {"subsample": 4}, "window_size": [192, 256]})
    assert cfg.fine.subsample == 4 and cfg.window_size == (192, 256)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        coarse_to_fine_match(HomographyDescriptorEngine(np.eye(3)), np.zeros((10, 10)), np.zeros((10, 10, 3)))
