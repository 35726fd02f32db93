"""SlamSystem with a Mapper (mapping on top of tracking, issue 10 item 2), ROS-free.

Tracking's keyframes go to ``Mapper.add_keyframe`` (through ``slam.map_link``), the
corrected keyframe poses come back into ``SlamSystem`` (keyframes, trajectory), and the
point cloud comes from the mapper. The network-output SIMULATOR stands in for MASt3R
(recalibrated realistic profile: 12 % median per-pair scale error, smooth depth distortion,
focal error; network size 128x96 for the CPU budget); images 256x192, a 40-frame
walk through the synthetic room with exact ground truth. Alignment iterations are reduced
(``FAST_LOCAL`` / ``FAST_FULL``) to keep the test near a minute on 2 cores.
"""
from __future__ import annotations

import numpy as np
import pytest

from mast3r_ros.evaluation import Trajectory, ate
from mast3r_ros.geometry.align import umeyama
from mast3r_ros.slam import SlamSystem
from mast3r_ros.slam.alignment import AlignmentConfig
from mast3r_ros.slam.map_link import MapperKeyframe, to_mapper_keyframe
from mast3r_ros.slam.mapper import Mapper, MapperConfig
from mast3r_ros.synth.sequence import SynthConfig, generate
from mast3r_ros.synth.simulator import NetworkOutputSimulator, SimulatorConfig
from surface_check import surface_distance

W, H, NET, FRAMES = 256, 192, 128, 40
FAST_LOCAL = AlignmentConfig(stage1_iters=60, stage2_iters=40, match_subsample=4)
FAST_FULL = AlignmentConfig(stage1_iters=100, stage2_iters=60, match_subsample=4)



def _ate(seq, traj, alignment: str) -> float:
    est = Trajectory(np.array([s for s, _ in traj]) / 1e9, np.stack([T for _, T in traj]))
    gt = Trajectory(seq.stamps_ns / 1e9, seq.poses)
    return float(ate(gt, est, alignment).stats.rmse)


@pytest.fixture(scope="module")
def runs(one_torch_thread):
    seq = generate(SynthConfig(trajectory="walk", frames=FRAMES, width=W, height=H, seed=2))
    out = {}
    for with_mapper in (False, True):
        eng = NetworkOutputSimulator(seq, SimulatorConfig.realistic(size=NET))
        mapper = None
        if with_mapper:
            mapper = Mapper(eng, MapperConfig(alignment=FAST_LOCAL, full_alignment=FAST_FULL,
                                              neighbors=2))
        slam = SlamSystem(eng, None, mapper=mapper)
        res = [slam.process(f.rgb, f.stamp_ns, f.K, frame_id=f.frame_id) for f in seq.frames]
        out[with_mapper] = (slam, mapper, res)
    return seq, out


@pytest.mark.slow
def test_keyframes_flow_through_the_mapper_and_back(runs):
    seq, out = runs
    slam, mapper, res = out[True]
    assert all(r.T_map_cam is not None for r in res), "a frame lost its pose"
    kfs = slam.keyframes()
    assert len(kfs) >= 5
    # every tracking keyframe reached the mapper, in order
    assert mapper.keyframe_ids() == [k.id for k in kfs]
    # the mapper's corrected poses are the keyframes' poses, and they were corrected
    corrected = mapper.poses()
    tracked = {r.new_keyframe.id: r.T_map_cam for r in res if r.new_keyframe is not None}
    moved = []
    for kf in kfs:
        np.testing.assert_allclose(kf.T_map_cam, corrected[kf.id], atol=1e-5)  # re-orthonormalised
        moved.append(np.linalg.norm(kf.T_map_cam[:3, 3] - tracked[kf.id][:3, 3]))
    print(f"{len(kfs)} keyframes; correction of keyframe positions: median "
          f"{1e3 * np.median(moved):.1f} mm, max {1e3 * np.max(moved):.1f} mm")
    assert max(moved) > 1e-4, "the mapper changed no keyframe pose"
    # the trajectory follows the corrections: a keyframe's own frame has its corrected pose
    traj = dict(slam.trajectory())
    for kf in kfs:
        np.testing.assert_allclose(traj[kf.stamp_ns], kf.T_map_cam, atol=1e-9)
    # tracking continues in the map's scale: the tracker's pointmaps of the most recent
    # keyframes agree with the mapper's depth of them (median ratio within 1 %)
    for kf in kfs[-3:]:
        z_map = mapper.keyframe_depth(kf.id)
        z_trk = kf.pts3d[..., 2].reshape(-1)
        ok = (z_map > 0) & (z_trk > 0) & (kf.conf.reshape(-1) >= slam.config.tracker.min_conf)
        ratio = float((z_map[ok] / z_trk[ok]).median())
        assert abs(ratio - 1) < 0.01, (kf.id, ratio)


@pytest.mark.slow
def test_mapping_is_not_worse_than_tracking_alone(runs):
    seq, out = runs
    trk, _, _ = out[False]
    slam, _, _ = out[True]
    a_trk, a_map = _ate(seq, trk.trajectory(), "se3"), _ate(seq, slam.trajectory(), "se3")
    s_trk, s_map = _ate(seq, trk.trajectory(), "sim3"), _ate(seq, slam.trajectory(), "sim3")
    print(f"ATE over {FRAMES} frames: tracking alone {1e3 * a_trk:.1f} mm (SE3) / "
          f"{1e3 * s_trk:.1f} mm (Sim3); with the mapper {1e3 * a_map:.1f} / {1e3 * s_map:.1f} mm")
    assert len(slam.trajectory()) == FRAMES
    # not worse than tracking alone (1 mm slack for the simulator's noise)
    assert a_map <= a_trk + 1e-3
    assert s_map <= s_trk + 1e-3


@pytest.mark.slow
def test_mapper_point_cloud_lies_on_the_true_surface(runs):
    seq, out = runs
    slam, mapper, _ = out[True]
    xyz, rgb = mapper.point_cloud(max_points=30000, voxel_size=0.02)
    assert xyz.dtype == np.float32 and rgb.dtype == np.uint8 and len(xyz) == len(rgb)
    # judged in the ground-truth frame after the trajectory's SE(3) alignment
    tr = slam.trajectory()
    stamps = {s: i for i, s in enumerate(seq.stamps_ns)}
    est = np.stack([T[:3, 3] for _, T in tr])
    gt = np.stack([seq.poses[stamps[s]][:3, 3] for s, _ in tr])
    s = umeyama(est, gt, with_scale=False)
    d = surface_distance(s.apply(xyz.astype(np.float64)), seq.frames)
    depth = float(np.median(np.concatenate([f.depth.ravel() for f in seq.frames])))
    print(f"mapper cloud: {len(xyz)} points, median distance {1e3 * np.median(d):.1f} mm "
          f"({100 * np.median(d) / depth:.2f} % of median depth {depth:.2f} m), "
          f"90th percentile {1e3 * np.percentile(d, 90):.1f} mm")
    assert 1000 < len(xyz) <= 30000
    assert np.median(d) <= 0.02 * depth


def test_map_link_adapts_tracking_keyframes():
    """Estimated intrinsics reach the mapper as unknown (optimised), known ones as given;
    a keyframe whose image was dropped keeps its network-resolution colours."""
    from types import SimpleNamespace

    from mast3r_ros.model.types import EncodedView

    view = EncodedView.__new__(EncodedView)
    K = np.diag([100.0, 100.0, 1.0])
    base = dict(id="kf1", stamp_ns=5, T_map_cam=np.eye(4), K=K, view=view,
                image=None, colors=np.zeros((4, 4, 3), np.uint8))
    m = to_mapper_keyframe(SimpleNamespace(**base, intrinsics_estimated=True))
    assert isinstance(m, MapperKeyframe) and m.K is None and m.colors is not None
    m = to_mapper_keyframe(SimpleNamespace(**base, intrinsics_estimated=False))
    np.testing.assert_array_equal(m.K, K)
    assert m.id == "kf1" and m.stamp_ns == 5 and m.view is view
