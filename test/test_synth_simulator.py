"""NetworkOutputSimulator: MASt3R conventions, ground-truth consistency, FRM recovery and
each noise knob doing what it says."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mast3r_ros.matching.frm import FRMConfig, match_prediction
from mast3r_ros.model.preprocess import compute_transform
from mast3r_ros.model.types import PairEngine
from mast3r_ros.synth.bag import write_bag
from mast3r_ros.synth.sequence import SynthConfig, generate
from mast3r_ros.synth.simulator import NetworkOutputSimulator, SimulatorConfig

W, H, SIZE = 320, 240, 224  # network input 224x160 keeps FRM fast on CPU


@pytest.fixture(scope="module")
def sequence():
    return generate(SynthConfig(trajectory="walk", frames=12, width=W, height=H, seed=3))


@pytest.fixture(scope="module")
def exact(sequence):
    return NetworkOutputSimulator(sequence, SimulatorConfig.exact(size=SIZE))


def _pair(sim, seq, i, j):
    a = sim.encode(seq.frames[i].rgb, frame_id=seq.frames[i].frame_id)
    b = sim.encode(seq.frames[j].rgb, frame_id=seq.frames[j].frame_id)
    return a, b, sim.decode(a, b)


def _to_world(pts_c1: np.ndarray, T_world_c1: np.ndarray) -> np.ndarray:
    return pts_c1 @ T_world_c1[:3, :3].T + T_world_c1[:3, 3]


def test_outputs_follow_the_engine_conventions(sequence, exact):
    assert isinstance(exact, PairEngine)
    a, b, pred = _pair(exact, sequence, 0, 4)
    tr = compute_transform(H, W, size=SIZE)
    h, w = tr.network_size
    for v in (pred.view1, pred.view2):
        assert v.transform == tr
        assert v.pts3d.shape == (h, w, 3) and v.conf.shape == (h, w)
        assert v.desc.shape == (h, w, 24) and v.desc_conf.shape == (h, w)
        for t in (v.pts3d, v.conf, v.desc, v.desc_conf):
            assert t.dtype == torch.float32 and t.device.type == "cpu"
        torch.testing.assert_close(v.desc.norm(dim=-1), torch.ones(h, w), atol=1e-5, rtol=0)
        assert v.conf.min() >= 1.0 and v.desc_conf.min() > 0.0
    assert a.frame_id == sequence.frames[0].frame_id


def test_view1_points_are_its_own_rays_and_view2_points_are_in_view1_frame(sequence, exact):
    """With no noise, view 1's points project onto their own network pixels, and view 2's
    points (in view 1's frame) are view 2's ground-truth surface points."""
    a, b, pred = _pair(exact, sequence, 0, 4)
    f1, f2 = a.features, b.features
    p1 = pred.view1.pts3d.double().numpy()
    h, w = p1.shape[:2]
    uv = (p1 @ f1.K_net.T)
    uv = uv[..., :2] / uv[..., 2:]
    xs, ys = np.meshgrid(np.arange(w), np.arange(h))
    assert np.abs(uv - np.stack([xs, ys], -1)).max() < 1e-3
    np.testing.assert_allclose(p1[..., 2], f1.depth, rtol=1e-6)
    # View 2 in view 1's frame -> world == view 2's own ground truth.
    p2w = _to_world(pred.view2.pts3d.double().numpy(), sequence.frames[0].T_world_cam)
    np.testing.assert_allclose(p2w, f2.world, atol=1e-5)


def test_depth_resampling_is_exact_on_planes():
    """Inverse depth of a plane is affine in pixels, so the resampled depth at each
    network pixel equals the plane's depth at its original-image position."""
    from mast3r_ros.synth.simulator import resample_depth

    u, v = np.meshgrid(np.arange(W, dtype=float), np.arange(H, dtype=float))
    plane = lambda x, y: 1.0 / (0.3 + 0.001 * x - 0.0007 * y)
    tr = compute_transform(H, W, size=SIZE)
    got = resample_depth(plane(u, v).astype(np.float32), tr)
    h, w = tr.network_size
    xs, ys = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float))
    orig = tr.net_to_orig(np.stack([xs.ravel(), ys.ravel()], 1))
    ref = plane(orig[:, 0], orig[:, 1]).reshape(h, w)
    assert np.abs(got - ref).max() < 1e-6 * ref.max()
    # A depth edge is not blurred: every value is one of the two sides'.
    step = np.where(u < 150.3, 2.0, 5.0).astype(np.float32)
    got = resample_depth(step, tr)
    assert (np.isclose(got, 2.0, atol=1e-9) | np.isclose(got, 5.0, atol=1e-9)).all()
    assert np.isclose(got, 2.0).any() and np.isclose(got, 5.0).any()


def test_frm_on_exact_descriptors_recovers_ground_truth_correspondences(sequence, exact):
    """FRM (mast3r_ros.matching) on zero-noise outputs: matches lie where geometry says,
    median reprojection error < 0.6 network px, < 2 % beyond 3 px."""
    for j in (1, 4, 8):
        a, b, pred = _pair(exact, sequence, 0, j)
        m = match_prediction(pred, FRMConfig(subsample=4, min_desc_conf=1.0))
        assert len(m) > 500
        f1, f2 = a.features, b.features
        P = f1.world[m.xy1_net[:, 1], m.xy1_net[:, 0]]
        T = np.linalg.inv(f2.T_world_cam)
        pc = P @ T[:3, :3].T + T[:3, 3]
        uv = pc @ f2.K_net.T
        err = np.linalg.norm(uv[:, :2] / uv[:, 2:] - m.xy2_net, axis=1)
        assert np.median(err) < 0.6, j
        assert np.mean(err > 3.0) < 0.02, j


def test_confidences_drop_where_the_other_view_cannot_see(sequence, exact):
    a, b, pred = _pair(exact, sequence, 0, 11)
    f1, f2 = a.features, b.features
    covis = exact._covisible(f1, f2)
    assert 0.05 < covis.mean() < 0.95
    dc = pred.view1.desc_conf.numpy()
    assert dc[covis].min() > 3 * dc[~covis].max()


def test_scale_error_scales_both_pointmaps(sequence):
    ex = NetworkOutputSimulator(sequence, SimulatorConfig.exact(size=SIZE))
    sc = NetworkOutputSimulator(sequence, SimulatorConfig.exact(size=SIZE, scale_error=1.25))
    _, _, p = _pair(ex, sequence, 2, 5)
    _, _, q = _pair(sc, sequence, 2, 5)
    for u, v in ((p.view1, q.view1), (p.view2, q.view2)):
        torch.testing.assert_close(v.pts3d, 1.25 * u.pts3d, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(v.desc, u.desc)


def test_depth_noise_grows_with_depth(sequence, exact):
    noisy = NetworkOutputSimulator(sequence, SimulatorConfig.exact(
        size=SIZE, depth_noise_abs=0.002, depth_noise_rel=0.02))
    _, _, p = _pair(exact, sequence, 0, 3)
    _, _, q = _pair(noisy, sequence, 0, 3)
    z = p.view1.pts3d[..., 2].double().numpy()
    dz = q.view1.pts3d[..., 2].double().numpy() - z
    for lo, hi in ((1.0, 2.5), (4.0, 8.0)):
        sel = (z >= lo) & (z < hi)
        assert sel.sum() > 500
        expected = 0.002 + 0.02 * z[sel]
        ratio = dz[sel].std() / np.sqrt(np.mean(expected**2))
        assert 0.9 < ratio < 1.1, (lo, hi, ratio)


def test_outliers_and_descriptor_noise(sequence, exact):
    noisy = NetworkOutputSimulator(sequence, SimulatorConfig.exact(
        size=SIZE, outlier_fraction=0.1, desc_noise=0.02))
    _, _, p = _pair(exact, sequence, 0, 3)
    _, _, q = _pair(noisy, sequence, 0, 3)
    moved = (q.view1.pts3d - p.view1.pts3d).norm(dim=-1) > 1e-4
    assert 0.08 < moved.float().mean() < 0.12
    cos = (q.view1.desc * p.view1.desc).sum(-1)
    clean = ~moved
    assert cos[clean].median() > 0.99 and cos[clean].min() < 0.999  # noise, but small
    torch.testing.assert_close(q.view1.desc.norm(dim=-1), torch.ones_like(cos), atol=1e-5, rtol=0)


def test_blank_wall_gives_low_texture_failure():
    seq = generate(SynthConfig(trajectory="tracking_loss", frames=11, width=W, height=H, seed=1))
    sim = NetworkOutputSimulator(seq, SimulatorConfig(size=SIZE))
    _, _, blank = _pair(sim, seq, 5, 4)  # frame 5: only the blank panel in view
    _, _, textured = _pair(sim, seq, 0, 1)
    floor = sim.config.desc_conf_floor
    assert (blank.view1.desc_conf < floor + 0.05).float().mean() > 0.95
    assert (blank.view1.conf < 1.5).float().mean() > 0.95
    assert (textured.view1.desc_conf > 1.0).float().mean() > 0.5


def test_outputs_are_deterministic(sequence):
    cfg = SimulatorConfig.realistic(size=SIZE)
    s1, s2 = NetworkOutputSimulator(sequence, cfg), NetworkOutputSimulator(sequence, cfg)
    _, _, p = _pair(s1, sequence, 1, 2)
    _, _, q = _pair(s2, sequence, 1, 2)
    torch.testing.assert_close(p.view2.pts3d, q.view2.pts3d, rtol=0, atol=0)
    torch.testing.assert_close(p.view2.desc, q.view2.desc, rtol=0, atol=0)
    assert len(s1.decode_batch([(s1.encode(sequence.frames[0].rgb),) * 2])) == 1


def test_frame_lookup_by_stamp_or_image_and_clear_failures(sequence, exact, tmp_path):
    f = sequence.frames[6]
    assert exact.encode(f.rgb).features.index == 6  # by image bytes
    assert exact.encode(sequence.frames[0].rgb, frame_id=f.frame_id).features.index == 6
    with pytest.raises(KeyError, match="sec.nanosec"):
        exact.encode(np.zeros((H, W, 3), np.uint8), frame_id="12.5")
    with pytest.raises(ValueError, match="uint8"):
        exact.encode(f.rgb.astype(np.float32))
    with pytest.raises(ValueError, match="unknown SimulatorConfig key"):
        SimulatorConfig.from_dict({"noise": 1.0})
    # From a bag (bgr8): frames found by stamp, outputs identical to the in-memory ones.
    bag = write_bag(sequence, tmp_path / "bag", encoding="bgr8")
    from_bag = NetworkOutputSimulator.from_bag(bag, SimulatorConfig.exact(size=SIZE))
    _, _, p = _pair(from_bag, sequence, 0, 4)
    _, _, q = _pair(exact, sequence, 0, 4)
    torch.testing.assert_close(p.view2.pts3d, q.view2.pts3d, rtol=0, atol=0)
