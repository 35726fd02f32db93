"""Fast reciprocal matching: exact equality with the reference matcher on the shared
fixtures, mutual-NN property, recovery of a known warp, filters, chunking and errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mast3r_ros.matching import (
    FRMConfig, NNBackend, border_mask, fast_reciprocal_nn, grid_seeds, match_descriptors,
    match_prediction, mutual_nn, nearest_neighbors,
)
from mast3r_ros.synth.homography import homography_pair
from mast3r_ros.model.types import ImageTransform, PairPrediction, ViewPrediction

FIXTURES = ["public", "vitl_formula"]


def load_pair(reference_dir, name):
    z = np.load(reference_dir / name / "reference_outputs.npz")
    d1 = torch.from_numpy(z["pair0_view1_desc"][0])  # (48, 64, 24)
    d2 = torch.from_numpy(z["pair0_view2_desc"][0])
    return z, d1, d2


def brute_nn(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Reference NN in float64: argmax of the dot product."""
    return (a.double() @ b.double().T).argmax(1).numpy()


@pytest.mark.parametrize("name", FIXTURES)
def test_frm_equals_reference(reference_dir, name, device):
    """Reference matches: fast_reciprocal_NNs(subsample 8, dist='dot'), stored as (x, y)."""
    z, d1, d2 = load_pair(reference_dir, name)
    m = match_descriptors(d1.to(device), d2.to(device), FRMConfig(border=0))
    np.testing.assert_array_equal(m.xy1_net, z["pair0_frm_dot_xy1"])
    np.testing.assert_array_equal(m.xy2_net, z["pair0_frm_dot_xy2"])
    np.testing.assert_array_equal(m.xy1_net, z["pair0_frm_kdtree_xy1"])  # L2 NN = dot NN here
    assert m.n_unconverged == 0 and 1 <= m.n_iterations <= 10


@pytest.mark.parametrize("name", FIXTURES)
def test_frm_border3_equals_reference(reference_dir, name):
    """Default config = the demo: subsample 8 and a 3-pixel border in each image."""
    z, d1, d2 = load_pair(reference_dir, name)
    m = match_descriptors(d1, d2)
    np.testing.assert_array_equal(m.xy1_net, z["pair0_frm_dot_border3_xy1"])
    np.testing.assert_array_equal(m.xy2_net, z["pair0_frm_dot_border3_xy2"])
    np.testing.assert_array_equal(m.xy1, m.xy1_net.astype(float))  # identity transform


@pytest.mark.parametrize("name", FIXTURES)
def test_frm_faiss_backend_equals_reference(reference_dir, name):
    pytest.importorskip("faiss")
    z, d1, d2 = load_pair(reference_dir, name)
    m = match_descriptors(d1, d2, FRMConfig(border=0, backend=NNBackend.FAISS))
    np.testing.assert_array_equal(m.xy1_net, z["pair0_frm_dot_xy1"])
    np.testing.assert_array_equal(m.xy2_net, z["pair0_frm_dot_xy2"])


@pytest.mark.parametrize("name", FIXTURES)
def test_every_frm_match_is_mutual_nn(reference_dir, name):
    _, d1, d2 = load_pair(reference_dir, name)
    f1, f2 = d1.reshape(-1, 24), d2.reshape(-1, 24)
    nn12, nn21 = brute_nn(f1, f2), brute_nn(f2, f1)
    for sub in (1, 3, 8):
        r = fast_reciprocal_nn(d1, d2, subsample=sub)
        i1, i2 = r.idx1.numpy(), r.idx2.numpy()
        assert len(i1) > 0
        np.testing.assert_array_equal(nn12[i1], i2)
        np.testing.assert_array_equal(nn21[i2], i1)
        # sorted by idx1 then idx2, no duplicates
        key = i1 * f2.shape[0] + i2
        assert np.all(np.diff(key) > 0)
    dense = mutual_nn(d1, d2)
    mutual = np.nonzero(nn21[nn12] == np.arange(len(nn12)))[0]
    np.testing.assert_array_equal(dense.idx1.numpy(), mutual)
    # FRM with every pixel as a seed finds a subset of the dense mutual NNs
    r = fast_reciprocal_nn(d1, d2, subsample=1)
    assert set(r.idx1.tolist()) <= set(mutual.tolist())


def test_frm_recovers_known_warp():
    """Descriptor maps of a plane under a known homography (noise 0.02 per channel)."""
    p = homography_pair(96, 128, noise=0.02, seed=1)
    m = match_descriptors(p.desc1, p.desc2, FRMConfig(subsample=4, border=0))
    assert len(m) > 0.6 * (96 // 4) * (128 // 4)
    x1 = np.concatenate([m.xy1_net, np.ones((len(m), 1))], 1) @ p.H_21.T
    err = np.linalg.norm(x1[:, :2] / x1[:, 2:] - m.xy2_net, axis=1)
    assert np.mean(err <= 1.5) >= 0.98, np.percentile(err, [50, 95, 99])
    assert m.n_iterations <= 10 and m.n_unconverged <= 0.01 * len(m)


def test_iteration_cap_drops_unconverged_seeds():
    p = homography_pair(64, 96, noise=0.05, seed=2)
    one = fast_reciprocal_nn(p.desc1, p.desc2, subsample=2, max_iterations=1)
    full = fast_reciprocal_nn(p.desc1, p.desc2, subsample=2, max_iterations=50)
    assert one.n_iterations == 1 and one.n_unconverged > 0
    assert full.n_unconverged == 0 and full.n_iterations < 50  # converges well before the cap
    # matches converged in round 1 are kept by longer runs
    k1 = set((one.idx1 * 10**6 + one.idx2).tolist())
    kf = set((full.idx1 * 10**6 + full.idx2).tolist())
    assert k1 <= kf and len(kf) > len(k1)


def test_chunked_search_is_identical():
    p = homography_pair(48, 80, noise=0.05, seed=3)
    big = fast_reciprocal_nn(p.desc1, p.desc2, subsample=3)
    small = fast_reciprocal_nn(p.desc1, p.desc2, subsample=3, block_elems=1000)
    assert torch.equal(big.idx1, small.idx1) and torch.equal(big.idx2, small.idx2)
    q = p.desc1.reshape(-1, 24)[:50]
    np.testing.assert_array_equal(nearest_neighbors(q, p.desc2.reshape(-1, 24), block_elems=7).numpy(),
                                  brute_nn(q, p.desc2.reshape(-1, 24)))


def test_nn_first_index_wins_ties():
    base = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert nearest_neighbors(q, base).tolist() == [1, 0]


def test_given_seeds_equal_grid():
    p = homography_pair(40, 56, noise=0.05, seed=4)
    idx = grid_seeds(40, 56, 8)
    assert idx[:3].tolist() == [4 + 56 * 4, 12 + 56 * 4, 20 + 56 * 4]
    seeds = torch.stack([idx % 56, idx // 56], 1)
    a = fast_reciprocal_nn(p.desc1, p.desc2, subsample=8)
    b = fast_reciprocal_nn(p.desc1, p.desc2, seeds_xy=seeds.numpy())
    assert torch.equal(a.idx1, b.idx1) and torch.equal(a.idx2, b.idx2)


def test_border_mask_uses_each_images_size():
    xy1 = np.array([[3, 3], [2, 10], [60, 44], [61, 10], [10, 10]])
    xy2 = np.array([[3, 3], [10, 10], [10, 10], [10, 10], [28, 10]])
    keep = border_mask(xy1, xy2, (48, 64), (32, 32), 3)  # image 2 is 32x32: x < 29 ok
    assert keep.tolist() == [True, False, True, False, True]
    keep = border_mask(xy1, xy2, (48, 64), (32, 28), 3)  # image 2 width 28: x=28 out
    assert keep.tolist() == [True, False, True, False, False]


def test_confidence_filters_and_transforms():
    p = homography_pair(48, 64, noise=0.02, seed=5)
    conf1 = torch.ones(48, 64)
    conf1[:, :32] = 0.1  # left half of image 1 unreliable
    base = match_descriptors(p.desc1, p.desc2, FRMConfig(border=0))
    m = match_descriptors(p.desc1, p.desc2, FRMConfig(border=0, min_desc_conf=0.5),
                          desc_conf1=conf1, desc_conf2=torch.ones(48, 64))
    assert len(m) > 0 and np.all(m.xy1_net[:, 0] >= 32)
    assert len(m) == int(np.sum(base.xy1_net[:, 0] >= 32))
    with pytest.raises(ValueError, match="desc_conf"):
        match_descriptors(p.desc1, p.desc2, FRMConfig(min_desc_conf=0.5))
    # original pixels through the transform: 128x96 image resized 2x down to 64x48
    tf = ImageTransform((96, 128), (48, 64), (0, 0), (48, 64))
    m = match_descriptors(p.desc1, p.desc2, transform1=tf, transform2=tf)
    np.testing.assert_allclose(m.xy1, m.xy1_net * 2 + 0.5)
    np.testing.assert_allclose(m.xy2, m.xy2_net * 2 + 0.5)
    with pytest.raises(ValueError, match="network_size"):
        match_descriptors(p.desc1, p.desc2, transform1=ImageTransform.identity(10, 10))


def test_match_prediction_on_pair_prediction():
    p = homography_pair(48, 64, noise=0.02, seed=6)
    ones = torch.ones(48, 64)
    tf = ImageTransform.identity(48, 64)
    pred = PairPrediction(ViewPrediction(torch.zeros(48, 64, 3), ones * 3, p.desc1, ones, tf),
                          ViewPrediction(torch.zeros(48, 64, 3), ones * 3, p.desc2, ones, tf))
    m = match_prediction(pred, FRMConfig(min_conf=2.0))
    ref = match_descriptors(p.desc1, p.desc2)
    np.testing.assert_array_equal(m.xy1_net, ref.xy1_net)
    assert len(match_prediction(pred, FRMConfig(min_conf=5.0))) == 0


def test_bad_inputs_raise():
    d = torch.zeros(8, 8, 24)
    with pytest.raises(ValueError, match=r"\(H, W, D\)"):
        fast_reciprocal_nn(d.reshape(64, 24), d)
    with pytest.raises(ValueError, match="descriptor size"):
        fast_reciprocal_nn(d, torch.zeros(8, 8, 16))
    with pytest.raises(ValueError, match="inside image 1"):
        fast_reciprocal_nn(d, d, seeds_xy=np.array([[8, 0]]))
    with pytest.raises(ValueError, match="unknown FRMConfig key"):
        FRMConfig.from_dict({"subsampel": 8})
    with pytest.raises(ValueError, match="subsample"):
        FRMConfig(subsample=0)
    with pytest.raises(ValueError):
        FRMConfig(backend="annoy")
    assert FRMConfig.from_dict({"backend": "faiss"}).backend is NNBackend.FAISS
    with pytest.raises(TypeError, match="torch.Tensor"):
        fast_reciprocal_nn(np.zeros((8, 8, 24)), d)


def test_half_precision_descriptors_on_cpu():
    """bf16 maps are matched in float32 on CPU (numpy has no bf16 argmax)."""
    p = homography_pair(32, 48, noise=0.02, seed=7)
    a = fast_reciprocal_nn(p.desc1.bfloat16().float(), p.desc2.bfloat16().float(), subsample=4)
    b = fast_reciprocal_nn(p.desc1.bfloat16(), p.desc2.bfloat16(), subsample=4)
    assert torch.equal(a.idx1, b.idx1) and torch.equal(a.idx2, b.idx2)
    assert len(mutual_nn(p.desc1.bfloat16(), p.desc2.bfloat16()).idx1) > 0
