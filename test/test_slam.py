"""Tracking core (mast3r_ros.slam) on synthetic sequences with exact ground truth.

The network-output simulator stands in for MASt3R (labelled as such); images are 256x192
and the simulator answers at network size 256x192 to keep CPU time small.
The accuracy bounds of issue 9 are asserted at the simulator's ``realistic`` profile (issue
14: 18 % per-pair metric scale error, 4 % smooth depth distortion, 3 % focal error, 2 %
outliers); tests of other behaviour (Sim(3) mode, save/load) and the loss/relocalization test (its
post-relocalization accuracy fails at realistic, see the test) use ``moderate``. Figures per
profile (exact / moderate / realistic / hard) are in benchmarks/RESULTS.md.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mast3r_ros.evaluation import Trajectory, ate
from mast3r_ros.matching import FRMConfig, match_prediction
from mast3r_ros.slam import (
    LocalMatchConfig, PoseMode, SlamConfig, SlamSystem, TrackerConfig, TrackingState, local_match,
)
from mast3r_ros.synth.sequence import SynthConfig, generate
from mast3r_ros.synth.simulator import NetworkOutputSimulator, SimulatorConfig, texture_weight
from mast3r_ros.model.preprocess import resize_and_crop

W, H, SIZE = 256, 192, 256

def realistic(**kw) -> SimulatorConfig:
    """The simulator's ``realistic`` profile at the tests' network size."""
    return SimulatorConfig.realistic(**{"size": SIZE, **kw})


def moderate(**kw) -> SimulatorConfig:
    """The simulator's ``moderate`` profile (its realistic profile before the recalibration of
    issue 14) at the tests' network size."""
    return SimulatorConfig.moderate(**{"size": SIZE, **kw})


@pytest.fixture(scope="module")
def walk():
    """A smooth 300-frame walk (rendered once for the module)."""
    return generate(SynthConfig(frames=300, width=W, height=H, seed=0, trajectory="walk"))


@pytest.fixture(scope="module")
def walk_head():
    """The first 13 frames of the same walk (fast to render)."""
    from mast3r_ros.synth.render import pinhole_K
    from mast3r_ros.synth.scene import make_scene
    from mast3r_ros.synth.sequence import render_sequence
    from mast3r_ros.synth.trajectory import make_trajectory

    scene = make_scene("room", 0)
    poses = make_trajectory(scene, "walk", 300, 0)[:13]
    return render_sequence(scene, poses, pinhole_K(W, H, 70.0), W, H, 10.0)


def path_length(seq) -> float:
    return float(np.linalg.norm(np.diff(seq.poses[:, :3, 3], axis=0), axis=1).sum())


def run(seq, sim_cfg, config=None, use_K=True, frames=None):
    sim = NetworkOutputSimulator(seq, sim_cfg)
    slam = SlamSystem(sim, config)
    results = [slam.process(f.rgb, f.stamp_ns, f.K if use_K else None, frame_id=f.frame_id)
               for f in seq.frames[:frames]]
    return slam, results


def ate_pct(seq, slam, alignment: str) -> float:
    tr = slam.trajectory()
    est = Trajectory(np.array([s for s, _ in tr]) / 1e9, np.stack([T for _, T in tr]))
    gt = Trajectory(seq.stamps_ns / 1e9, seq.poses)
    return 100.0 * ate(gt, est, alignment).stats.rmse / path_length(seq)


def gt_match_errors(kf_view, fr_view, xy_frame, xy_kf) -> np.ndarray:
    fk, ff = kf_view.features, fr_view.features
    u = np.rint(np.asarray(xy_frame)).astype(int)
    X = ff.world[u[:, 1], u[:, 0]]
    T = np.linalg.inv(fk.T_world_cam)
    uv = (X @ T[:3, :3].T + T[:3, 3]) @ fk.K_net.T
    return np.linalg.norm(uv[:, :2] / uv[:, 2:] - np.asarray(xy_kf), axis=1)


# ---------------------------------------------------------------- local matcher


def test_local_matcher_recovers_ground_truth_correspondences(walk_head, one_torch_thread):
    """Local matches land within a pixel of the true projection, at least as accurately as
    FRM on the same prediction (recalibrated realistic noise)."""
    walk = walk_head
    sim = NetworkOutputSimulator(walk, SimulatorConfig.realistic(size=SIZE))
    kf = sim.encode(walk.frames[0].rgb, frame_id=walk.frames[0].frame_id)
    for j in (4, 12):
        fr = sim.encode(walk.frames[j].rgb, frame_id=walk.frames[j].frame_id)
        pred = sim.decode(kf, fr)
        v1, v2 = pred.view1, pred.view2
        m = local_match(v2.desc, v1.desc, v2.pts3d, kf.features.K_net, LocalMatchConfig(),
                        desc_conf_src=v2.desc_conf, desc_conf_dst=v1.desc_conf)
        err = gt_match_errors(kf, fr, m.src_xy.numpy(), m.dst_xy.numpy())
        assert len(err) >= 300, f"pair 0-{j}: only {len(err)} local matches of {m.num_seeds} seeds"
        assert np.median(err) < 0.5 and np.mean(err < 1.5) > 0.95, (j, np.median(err))
        f = match_prediction(pred, FRMConfig(subsample=8))
        err_frm = gt_match_errors(kf, fr, f.xy2_net, f.xy1_net)
        assert np.median(err) <= np.median(err_frm) + 1e-9
        assert np.mean(err < 1.0) >= np.mean(err_frm < 1.0) - 0.02


def test_local_matcher_window_misses_when_prediction_is_wrong(walk_head, one_torch_thread):
    """Predictions displaced by more than the window radius give (almost) no matches: the
    rim check rejects peaks that are not inside the window."""
    walk = walk_head
    sim = NetworkOutputSimulator(walk, SimulatorConfig.exact(size=SIZE))
    kf = sim.encode(walk.frames[0].rgb, frame_id=walk.frames[0].frame_id)
    fr = sim.encode(walk.frames[3].rgb, frame_id=walk.frames[3].frame_id)
    pred = sim.decode(kf, fr)
    K = kf.features.K_net.copy()
    good = local_match(pred.view2.desc, pred.view1.desc, pred.view2.pts3d, K)
    K[0, 2] += 12.0  # shift every prediction 12 px: far outside a 7x7 window
    bad = local_match(pred.view2.desc, pred.view1.desc, pred.view2.pts3d, K)
    assert len(good) > 300 and len(bad) < 0.05 * len(good)


def test_local_matcher_checks_its_inputs():
    d = torch.nn.functional.normalize(torch.randn(32, 48, 24), dim=-1)
    with pytest.raises(ValueError, match="pts3d_src_in_dst"):
        local_match(d, d, torch.ones(16, 48, 3), np.eye(3))
    with pytest.raises(ValueError, match="desc_dst"):
        local_match(d, d[..., :16], torch.ones(32, 48, 3), np.eye(3))
    with pytest.raises(ValueError, match="min_conf"):
        local_match(d, d, torch.ones(32, 48, 3), np.eye(3), LocalMatchConfig(min_conf=2.0))
    with pytest.raises(ValueError, match="radius"):
        LocalMatchConfig(radius=0)


def test_keyframe_pointmap_helpers_remove_focal_error_and_isolated_outliers():
    """``along_rays`` puts a pointmap whose lateral coordinates imply a focal 3 % off back on
    the rays of K (exactly, depth kept); ``isolated_outliers`` flags single pixels off by
    x0.5..x2 but neither a slanted plane's depth ramp nor a smooth bend."""
    from mast3r_ros.slam.tracker import along_rays, isolated_outliers

    h, w = 48, 64
    K = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    z = 2.0 + 0.02 * ys + 0.01 * xs  # a slanted plane's ramp
    z = z * np.exp(0.04 * np.cos(2 * np.pi * xs / 50.0))  # a smooth bend
    rays = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(K).T
    true = torch.tensor(rays * z[..., None], dtype=torch.float32)
    off = true.clone()
    off[..., :2] *= 1.03  # the focal this pointmap implies is 3 % short
    np.testing.assert_allclose(along_rays(off, K).numpy(), true.numpy(), rtol=1e-5, atol=1e-5)
    assert not isolated_outliers(true, 0.1).any()
    bad = true.clone()
    rng = np.random.default_rng(0)
    idx = rng.choice(h * w, 60, replace=False)
    factor = torch.tensor(rng.choice([0.5, 0.7, 1.4, 2.0], 60), dtype=torch.float32)
    bad.view(-1, 3)[idx] *= factor[:, None]
    flagged = isolated_outliers(bad, 0.1).view(-1)
    assert bool(flagged[idx].all()) and int(flagged.sum()) <= 60 + 5
    assert not isolated_outliers(bad, 0.0).any()


def test_configs_reject_unknown_keys_and_modes():
    with pytest.raises(ValueError, match="unknown TrackerConfig key"):
        TrackerConfig.from_dict({"min_inlier": 3})
    with pytest.raises(ValueError, match="pose_mode"):
        TrackerConfig.from_dict({"pose_mode": "se4"})
    with pytest.raises(ValueError, match="fuse_outlier_rel"):
        TrackerConfig(fuse_outlier_rel=-0.1)
    with pytest.raises(ValueError, match="second_chance_min_inlier_ratio"):
        TrackerConfig(second_chance_min_inlier_ratio=1.0)
    cfg = SlamConfig.from_dict({"tracker": {"pose_mode": "sim3", "match": {"radius": 2}}})
    assert cfg.tracker.pose_mode is PoseMode.SIM3 and cfg.tracker.match.radius == 2
    assert [int(s) for s in TrackingState] == [0, 1, 2, 3]
    assert TrackingState.RELOCALIZED.state_name == "relocalized"


# ---------------------------------------------------------------- tracking


@pytest.mark.slow
def test_walk_every_frame_gets_an_accurate_metric_pose(walk, one_torch_thread):
    """300 frames, realistic noise, known K: a pose for every frame, Sim(3) ATE <= 1 % and
    SE(3) ATE <= 2 % of the path length; the map grows by keyframes, not frames."""
    slam, results = run(walk, realistic())
    assert results[0].state is TrackingState.INITIALIZING
    assert all(r.state is TrackingState.TRACKING for r in results[1:])
    assert all(r.T_map_cam is not None for r in results)
    assert len(slam.trajectory()) == len(walk)
    sim3, se3 = ate_pct(walk, slam, "sim3"), ate_pct(walk, slam, "se3")
    print(f"walk realistic known K: ATE sim3 {sim3:.3f} %, se3 {se3:.3f} %, "
          f"{len(slam.keyframes())} keyframes, local {sum(r.matcher == 'local' for r in results)}")
    assert sim3 <= 1.0 and se3 <= 2.0
    assert 3 <= len(slam.keyframes()) <= len(walk) // 4
    assert sum(r.matcher == "local" for r in results) >= 0.9 * len(results)
    # far keyframes keep their image only as JPEG (bounded memory)
    kfs = slam.keyframes()
    assert all(k.image is None and k.image_jpeg for k in kfs[:-slam.config.tracker.keep_images])
    assert kfs[0].rgb().shape == (H, W, 3)


@pytest.mark.slow
def test_sim3_mode_tracks_a_walk_without_trusting_scale(walk, one_torch_thread):
    """Sim(3) IRLS mode with every pair's scale off by 10 % and the realistic profile's
    per-pair scale jitter (18 % log-std): Sim(3) ATE <= 1 %.

    The realistic profile's smooth depth distortion and focal error are pinned to 0 here:
    Sim(3) mode aligns the pair's pointmap to the keyframe's in 3D, so a distorted depth
    enters the pose directly (measured: 10.0 % ATE with them, 10.0 % even with 2 % jitter;
    0.15 % without them). The default SE(3) PnP mode uses the frame's pixels only and tracks
    the full realistic profile (test above); benchmarks/RESULTS.md, "Tracking"."""
    cfg = TrackerConfig(pose_mode=PoseMode.SIM3)
    slam, results = run(walk, realistic(scale_error=1.1, depth_distortion=0.0, focal_error=0.0),
                        cfg, frames=100)
    seq = type(walk)(walk.frames[:100], walk.info)
    assert all(r.T_map_cam is not None for r in results)
    assert ate_pct(seq, slam, "sim3") <= 1.0


def _blank_fraction(seq) -> np.ndarray:
    from mast3r_ros.model.preprocess import compute_transform

    tr = compute_transform(H, W, size=SIZE)
    return np.array([1.0 - float((texture_weight(resize_and_crop(f.rgb, tr), 4.0) >= 1.0).mean())
                     for f in seq.frames])


@pytest.mark.slow
def test_tracking_loss_then_relocalization(one_torch_thread):
    """Blank frames -> LOST; the scene returns -> RELOCALIZED within 5 frames, then TRACKING,
    with poses consistent with ground truth again."""
    seq = generate(SynthConfig(frames=120, width=W, height=H, seed=0, trajectory="tracking_loss"))
    slam, results = run(seq, realistic())
    states = np.array([int(r.state) for r in results])
    blank = _blank_fraction(seq) > 0.9
    lost = np.flatnonzero(states == TrackingState.LOST)
    assert lost.size, f"never lost; states {''.join(map(str, states))}"
    first_lost = lost[0]
    assert blank[first_lost - 3:first_lost + 4].any(), "lost far from the blank frames"
    returned = first_lost + np.flatnonzero(~blank[first_lost:])[0]
    reloc = np.flatnonzero(states == TrackingState.RELOCALIZED)
    assert reloc.size and reloc[0] >= returned - 1, f"states {''.join(map(str, states))}"
    assert reloc[0] - returned <= 5, f"returned {returned}, relocalized {reloc[0]}"
    assert (states[reloc[0] + 1:] == TrackingState.TRACKING).mean() > 0.9
    # after relocalization the poses agree with the truth, in the frame of the trajectory
    # before the loss: its rotation from the orientations (chordal mean of R_true R_est^T),
    # then its translation from the positions. (An SE(3) fit on positions alone leaves the
    # rotation about this nearly straight 42-frame path free: 4.2 deg off at realistic, an
    # error that grows with every metre walked after the loss: 165 mm median.)
    tr = dict(slam.trajectory())
    before = [i for i in range(first_lost) if seq.frames[i].stamp_ns in tr]
    after = [i for i in range(reloc[0], len(seq)) if seq.frames[i].stamp_ns in tr]
    M = sum(seq.poses[i][:3, :3] @ tr[seq.frames[i].stamp_ns][:3, :3].T for i in before)
    U, _, Vt = np.linalg.svd(M)
    R = U @ np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))]) @ Vt
    t = np.mean([seq.poses[i][:3, 3] - R @ tr[seq.frames[i].stamp_ns][:3, 3] for i in before], 0)

    def pos_err(i: int) -> float:
        return float(np.linalg.norm(R @ tr[seq.frames[i].stamp_ns][:3, 3] + t - seq.poses[i][:3, 3]))
    err = np.array([pos_err(i) for i in after])
    rms_before = float(np.sqrt(np.mean([pos_err(i) ** 2 for i in before])))
    print(f"loss: lost at {first_lost}, scene back at {returned}, relocalized at {reloc[0]}, "
          f"error before the loss {rms_before:.3f} m rms, after relocalization median "
          f"{np.median(err):.3f} m, max {err.max():.3f} m")
    # (at moderate, before TrackerConfig.second_chance_min_inlier_ratio, the frame after the
    # relocalization was tracked against a half-blank keyframe with 27 % pose inliers, 2 deg
    # off, and every later pose kept that offset: 57 mm; such a pose is now refused and the
    # next frame relocalizes against a well-textured keyframe)
    assert np.median(err) < 0.05


def test_save_load_set_pose_and_reset(walk_head, one_torch_thread, tmp_path):
    """Saved keyframes reload (re-encoded once) and relocalize the next frame where the
    original system tracked it; set_pose moves the map rigidly; reset forgets it."""
    cfg = realistic()
    slam, results = run(walk_head, cfg, frames=11)
    n = slam.save_map(tmp_path / "map")
    assert n == len(slam.keyframes()) >= 1
    other = SlamSystem(NetworkOutputSimulator(walk_head, cfg))
    assert other.load_map(tmp_path / "map") == n
    f = walk_head.frames[12]
    ref = slam.process(f.rgb, f.stamp_ns, f.K, frame_id=f.frame_id)
    got = other.process(f.rgb, f.stamp_ns, f.K, frame_id=f.frame_id)
    assert got.state is TrackingState.RELOCALIZED
    assert np.linalg.norm(got.T_map_cam[:3, 3] - ref.T_map_cam[:3, 3]) < 0.02
    with pytest.raises(ValueError, match="map"):
        other.load_map(tmp_path / "nothing")
    # set_pose: the last frame now has exactly this pose, the trajectory moved rigidly
    T_new = np.eye(4)
    T_new[:3, 3] = [1.0, 2.0, 3.0]
    before = slam.trajectory()
    slam.set_pose(T_new)
    after = slam.trajectory()
    np.testing.assert_allclose(after[-1][1], T_new, atol=1e-9)
    d0 = np.linalg.norm(before[0][1][:3, 3] - before[-1][1][:3, 3])
    d1 = np.linalg.norm(after[0][1][:3, 3] - after[-1][1][:3, 3])
    assert abs(d0 - d1) < 1e-9
    slam.reset()
    assert slam.keyframes() == [] and slam.trajectory() == []
    with pytest.raises(ValueError, match="image"):
        slam.process(np.zeros((4, 4), np.uint8), 0)


@pytest.mark.slow
def test_slam_command_without_camera_info(walk, tmp_path_factory, one_torch_thread, capsys):
    """`mast3r-ros slam --bag --no-camera-info` end to end on the 300-frame walk: files and
    keys, a pose per frame, ATE bounds x2 (Sim(3) <= 2 %, SE(3) <= 4 %), focal within 3 %."""
    import json

    from mast3r_ros.cli import main
    from mast3r_ros.evaluation import read_tum
    from mast3r_ros.synth.bag import write_dataset

    root = tmp_path_factory.mktemp("slam_cli")
    bag, gt_tum = write_dataset(walk, root / "data")
    out = root / "out"
    rc = main(["slam", "--bag", str(bag), "--out", str(out), "--engine", "simulator",
               "--size", str(SIZE), "--no-camera-info", "--no-progress",
               "--sim-noise", "realistic", "--max-frames", "0"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == summary["poses"] == len(walk)
    assert summary["lost"] == 0 and summary["keyframes"] >= 3 and summary["intrinsics_estimated"]
    assert "simulator" in summary["engine"] and "NOT the network" in summary["engine"]
    focal_true = walk.frames[0].K[0, 0]
    assert abs(summary["focal_px"] / focal_true - 1) < 0.03, (summary["focal_px"], focal_true)
    rows = [json.loads(line) for line in (out / "status.jsonl").read_text().splitlines()]
    assert len(rows) == len(walk)
    for key in ("stamp", "state_name", "num_matches", "num_inliers", "processing_ms"):
        assert all(key in r for r in rows), key
    assert rows[0]["state_name"] == "initializing"
    assert {r["state_name"] for r in rows[1:]} == {"tracking"}
    est, gt = read_tum(out / "trajectory.tum"), read_tum(gt_tum)
    L = path_length(walk)
    sim3 = 100 * ate(gt, est, "sim3").stats.rmse / L
    se3 = 100 * ate(gt, est, "se3").stats.rmse / L
    print(f"walk realistic, no camera info: ATE sim3 {sim3:.3f} %, se3 {se3:.3f} %, "
          f"focal {summary['focal_px']:.2f} vs {focal_true:.2f}")
    assert sim3 <= 2.0 and se3 <= 4.0
    kf = read_tum(out / "keyframes.tum")
    assert len(kf) == summary["keyframes"]
    header = (out / "cloud.ply").read_bytes()[:300].decode("ascii", "replace")
    n_pts = int(header.split("element vertex ")[1].split()[0])
    assert n_pts == summary["cloud_points"] > 1000
    assert (out / "cloud.ply").stat().st_size > n_pts * 15


def test_voxel_downsample_and_ply(tmp_path):
    """One averaged point and colour per occupied voxel; PLY header and payload size."""
    from mast3r_ros.slam.cloud import voxel_downsample, write_ply

    xyz = np.array([[0.01, 0.01, 0.01], [0.03, 0.01, 0.01], [0.5, 0.5, 0.5]])
    rgb = np.array([[0, 0, 0], [100, 200, 50], [9, 9, 9]], np.uint8)
    p, c = voxel_downsample(xyz, rgb, 0.1)
    order = np.argsort(p[:, 0])
    np.testing.assert_allclose(p[order], [[0.02, 0.01, 0.01], [0.5, 0.5, 0.5]], atol=1e-6)
    np.testing.assert_array_equal(c[order], [[50, 100, 25], [9, 9, 9]])
    write_ply(tmp_path / "c.ply", p, c)
    data = (tmp_path / "c.ply").read_bytes()
    head, _, body = data.partition(b"end_header\n")
    assert b"element vertex 2" in head and len(body) == 2 * 15
    with pytest.raises(ValueError, match="voxel_size"):
        voxel_downsample(xyz, rgb, 0.0)
