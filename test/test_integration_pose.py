"""Issues 4 + 5 together: simulator -> FRM -> PnP / essential+scale recovers the
ground-truth relative pose of two rendered views, through the same code path the
relocalization service will use (engine contract, ``match_prediction``, pose solvers).

Tolerances: the realistic simulator adds depth noise growing with depth, a per-pair scale
jitter, descriptor noise and 2 % outliers. Measured here (views 34 deg and 1.6 m apart,
median depth 3.5 m): PnP 0.007 deg / 4.2 cm, essential 0.025 deg / 4.1 cm, focal exact.
We ask for <= 0.5 deg and <= 3 % of the median scene depth, focal within 1 %.
"""
from __future__ import annotations

import numpy as np
import pytest

from mast3r_ros.geometry import (
    estimate_focal,
    invert_T,
    relative_pose_essential,
    rotation_angle_deg,
    solve_pnp,
)
from mast3r_ros.matching import FRMConfig, match_prediction
from mast3r_ros.synth.sequence import SynthConfig, generate
from mast3r_ros.synth.simulator import NetworkOutputSimulator, SimulatorConfig


@pytest.fixture(scope="module")
def pair():
    seq = generate(SynthConfig(scene="cluttered", trajectory="reloc_30", frames=4, seed=5,
                               width=320, height=240))
    sim = NetworkOutputSimulator(seq, SimulatorConfig.realistic(size=320))
    f1, f2 = seq.frames[0], seq.frames[-1]  # a mapping view and a query ~30 deg away
    pred = sim.decode(sim.encode(f1.rgb, frame_id=f1.frame_id), sim.encode(f2.rgb, frame_id=f2.frame_id))
    matches = match_prediction(pred, FRMConfig(subsample=4))
    T_c1_c2 = invert_T(f1.T_world_cam) @ f2.T_world_cam  # ground truth: cam2 in cam1
    depth = float(np.median(f1.depth[np.isfinite(f1.depth)]))
    return f1, f2, pred, matches, T_c1_c2, depth


def _errors(T_est: np.ndarray, T_gt: np.ndarray) -> tuple[float, float]:
    return rotation_angle_deg(T_est, T_gt), float(np.linalg.norm(T_est[:3, 3] - T_gt[:3, 3]))


def _pts3d_at(pred_view, xy_net: np.ndarray) -> np.ndarray:
    return pred_view.pts3d.numpy()[xy_net[:, 1], xy_net[:, 0]].astype(np.float64)


def test_pnp_known_intrinsics_recovers_relative_pose(pair):
    f1, f2, pred, m, T_gt, depth = pair
    assert len(m) > 200
    pts3d = _pts3d_at(pred.view1, m.xy1_net)          # view-1 pointmap, camera-1 frame
    res = solve_pnp(m.xy2, pts3d, f2.K)                 # query pixels, original resolution
    rot, trans = _errors(res.T_world_cam, T_gt)         # "world" = camera 1 here
    assert rot <= 0.5 and trans <= 0.03 * depth, (rot, trans, depth)
    assert res.covariance.shape == (6, 6) and np.all(np.linalg.eigvalsh(res.covariance) > 0)


def test_uncalibrated_focal_then_pnp_and_essential(pair):
    f1, f2, pred, m, T_gt, depth = pair
    # unknown intrinsics: the focal comes from view 1's own pointmap (both views share the
    # camera in this sequence); network pixels -> original pixels through the transform
    fe = estimate_focal(pred.view1.pts3d.numpy())
    K_net = fe.K
    K_est = pred.view1.transform.intrinsics_to_orig(K_net)
    assert abs(K_est[0, 0] / f1.K[0, 0] - 1) <= 0.01, (K_est[0, 0], f1.K[0, 0])
    res = solve_pnp(m.xy2, _pts3d_at(pred.view1, m.xy1_net), K_est)
    rot, trans = _errors(res.T_world_cam, T_gt)
    assert rot <= 0.5 and trans <= 0.03 * depth, ("pnp", rot, trans)
    rel = relative_pose_essential(m.xy1, m.xy2, K_est, K_est, _pts3d_at(pred.view1, m.xy1_net))
    rot, trans = _errors(rel.T_cam1_cam2, T_gt)
    assert rot <= 0.5 and trans <= 0.03 * depth, ("essential", rot, trans)
