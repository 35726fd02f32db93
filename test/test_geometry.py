"""Geometry: intrinsics from pointmaps, PnP, essential + metric scale, Umeyama, covariance,
conversions. All checks recover a known synthetic truth with stated tolerances."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mast3r_ros.geometry import (
    PnPConfig, PnPSolver, T_to_pose, estimate_focal, intrinsics_matrix, invert_T, make_T,
    matrix_to_quaternion_xyzw, pose_covariance, pose_to_T, quaternion_wxyz_to_xyzw,
    quaternion_xyzw_to_matrix, quaternion_xyzw_to_wxyz, relative_pose_essential,
    rotation_angle_deg, solve_pnp, transform_points, umeyama,
)

W, H = 640, 480
K = intrinsics_matrix(500.0, 319.5, 239.5)
ROT_TOL_DEG = 1.0  # rotation error tolerance
TRANS_TOL_REL = 0.02  # translation error tolerance, fraction of the median scene depth


def random_T(rng: np.random.Generator, max_angle_deg: float = 20.0, max_trans: float = 0.5) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    R = Rotation.from_rotvec(axis * np.radians(rng.uniform(2, max_angle_deg))).as_matrix()
    return make_T(R, rng.uniform(-max_trans, max_trans, 3))


def project(pts_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    uv = pts_cam @ K.T
    return uv[:, :2] / uv[:, 2:]


def scene_in_view(rng, T_cam_world, n):
    """n world points visible (in front, inside the image) of the camera T_cam_world."""
    uv = rng.uniform([0, 0], [W - 1, H - 1], (n, 2))
    z = rng.uniform(2.0, 6.0, n)
    pc = np.concatenate([(uv - K[:2, 2]) / K[0, 0] * z[:, None], z[:, None]], 1)
    return transform_points(invert_T(T_cam_world), pc), uv


def corrupt(rng, uv, noise_px=1.0, outlier_frac=0.3):
    uv = uv + rng.normal(scale=noise_px, size=uv.shape)
    out = rng.random(len(uv)) < outlier_frac
    uv[out] = rng.uniform([0, 0], [W - 1, H - 1], (out.sum(), 2))
    return uv, out


# ----------------------------------------------------------------------------- conversions


def test_quaternion_is_xyzw_ros_order():
    R = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    np.testing.assert_allclose(matrix_to_quaternion_xyzw(R), [0, 0, np.sqrt(0.5), np.sqrt(0.5)], atol=1e-12)
    np.testing.assert_allclose(quaternion_xyzw_to_wxyz([1, 2, 3, 4]), [4, 1, 2, 3])
    np.testing.assert_allclose(quaternion_wxyz_to_xyzw([4, 1, 2, 3]), [1, 2, 3, 4])


def test_pose_tuple_round_trip():
    rng = np.random.default_rng(1)
    for _ in range(20):
        T = random_T(rng, 179, 5)
        pos, q = T_to_pose(T)
        assert len(pos) == 3 and len(q) == 4 and q[3] >= 0
        np.testing.assert_allclose(pose_to_T(pos, q), T, atol=1e-12)
        np.testing.assert_allclose(quaternion_xyzw_to_matrix(q), T[:3, :3], atol=1e-12)
        np.testing.assert_allclose(invert_T(T) @ T, np.eye(4), atol=1e-12)


def test_conversion_errors():
    with pytest.raises(ValueError, match="non-finite"):
        T_to_pose(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        T_to_pose(np.eye(3))
    with pytest.raises(ValueError, match="quaternion"):
        quaternion_xyzw_to_matrix([0, 0, 0, 0])


# ----------------------------------------------------------------------------- focal


def pointmap(f, cx, cy, h=96, w=128, seed=0):
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    z = 3 + np.sin(u / 17.0 + rng.uniform(0, 6)) + 0.5 * np.cos(v / 11.0)  # smooth depth 1.5..4.5
    return np.stack([(u - cx) * z / f, (v - cy) * z / f, z], -1)


def test_focal_noiseless_within_2_percent():
    P = pointmap(110.0, 63.5, 47.5)
    est = estimate_focal(P)
    assert abs(est.focal - 110.0) / 110.0 < 0.02
    assert est.n_points == 96 * 128


def test_focal_and_principal_point_robust_to_outliers():
    P = pointmap(150.0, 70.0, 40.0, seed=3)
    rng = np.random.default_rng(0)
    bad = rng.random(P.shape[:2]) < 0.15  # 15% garbage points (sky, edges)
    P[bad] = rng.uniform([-5, -5, 0.5], [5, 5, 10], (bad.sum(), 3))
    P[0, 0] = np.nan
    est = estimate_focal(P, estimate_principal_point=True)
    assert abs(est.focal - 150.0) / 150.0 < 0.02
    assert abs(est.cx - 70.0) < 1.0 and abs(est.cy - 40.0) < 1.0
    np.testing.assert_allclose(est.K, intrinsics_matrix(est.focal, est.cx, est.cy))


def test_focal_errors():
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        estimate_focal(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="valid points"):
        estimate_focal(np.zeros((4, 4, 3)))  # all z = 0


# ----------------------------------------------------------------------------- PnP


@pytest.mark.parametrize("solver", list(PnPSolver))
def test_pnp_recovers_random_poses(solver):
    rng = np.random.default_rng(42)
    for trial in range(3):
        T_cam_world = random_T(rng, 30, 1.0)
        X, uv = scene_in_view(rng, T_cam_world, 400)
        uv_noisy, _ = corrupt(rng, uv)
        res = solve_pnp(uv_noisy, X, K, PnPConfig(solver=solver))
        depth = np.median(transform_points(T_cam_world, X)[:, 2])
        assert rotation_angle_deg(res.T_cam_world, T_cam_world) <= ROT_TOL_DEG
        # camera centre error relative to scene depth
        c_err = np.linalg.norm(res.T_world_cam[:3, 3] - invert_T(T_cam_world)[:3, 3])
        assert c_err <= TRANS_TOL_REL * depth, (trial, c_err, depth)
        assert 0.6 * 400 <= res.n_inliers <= 0.8 * 400
        assert res.rms_px < 2.0
        np.testing.assert_allclose(res.T_world_cam @ res.T_cam_world, np.eye(4), atol=1e-9)


def test_pnp_with_estimated_intrinsics():
    """Intrinsics unknown: focal from the (camera-frame) pointmap, then PnP."""
    rng = np.random.default_rng(5)
    f_true, cx, cy = 300.0, 159.5, 119.5
    P = pointmap(f_true, cx, cy, h=240, w=320, seed=5)
    K_est = estimate_focal(P).K
    T_cam_world = random_T(rng, 20, 0.5)
    idx = rng.choice(240 * 320, 500, replace=False)
    pts_cam = P.reshape(-1, 3)[idx]
    uv = np.stack([idx % 320, idx // 320], 1).astype(float)
    X = transform_points(invert_T(T_cam_world), pts_cam)
    uv_noisy, _ = corrupt(rng, uv)
    res = solve_pnp(uv_noisy, X, K_est)
    assert rotation_angle_deg(res.T_cam_world, T_cam_world) <= ROT_TOL_DEG
    c_err = np.linalg.norm(res.T_world_cam[:3, 3] - invert_T(T_cam_world)[:3, 3])
    assert c_err <= TRANS_TOL_REL * np.median(pts_cam[:, 2])


def test_pnp_bad_inputs():
    X = np.random.default_rng(0).uniform(1, 2, (20, 3))
    uv = np.zeros((20, 2))
    with pytest.raises(ValueError, match="non-finite"):
        solve_pnp(uv, X, np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="at least 4"):
        solve_pnp(uv[:3], X[:3], K)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        solve_pnp(uv, X[:, :2], K)
    with pytest.raises(ValueError, match="same N"):
        solve_pnp(uv[:10], X, K)
    with pytest.raises(ValueError, match="unknown PnPConfig key"):
        PnPConfig.from_dict({"reproj_err": 2})


def test_pnp_pure_outliers_fail_loudly():
    rng = np.random.default_rng(0)
    X = rng.uniform([-1, -1, 2], [1, 1, 6], (50, 3))
    uv = rng.uniform([0, 0], [W, H], (50, 2))
    with pytest.raises(RuntimeError, match="inliers"):
        solve_pnp(uv, X, K, PnPConfig(min_inliers=30, reprojection_error_px=1.0))


# ----------------------------------------------------------------------------- essential


def test_essential_with_metric_scale_recovers_random_poses():
    rng = np.random.default_rng(7)
    for trial in range(3):
        T_cam2_cam1 = random_T(rng, 20, 0.8)
        X1, uv1 = scene_in_view(rng, np.eye(4), 600)  # camera 1 = world
        uv2 = project(transform_points(T_cam2_cam1, X1), K)
        vis = np.all((uv2 >= 0) & (uv2 < [W, H]), 1) & (transform_points(T_cam2_cam1, X1)[:, 2] > 0)
        X1, uv1, uv2 = X1[vis], uv1[vis], uv2[vis]
        uv1n = uv1 + rng.normal(scale=1.0, size=uv1.shape)
        uv2n, _ = corrupt(rng, uv2)
        res = relative_pose_essential(uv1n, uv2n, K, K, X1)
        depth = np.median(X1[:, 2])
        assert rotation_angle_deg(res.T_cam2_cam1, T_cam2_cam1) <= ROT_TOL_DEG
        t_err = np.linalg.norm(res.T_cam2_cam1[:3, 3] - T_cam2_cam1[:3, 3])
        assert t_err <= TRANS_TOL_REL * depth, (trial, t_err, depth)
        assert res.covariance.shape == (6, 6)


def test_essential_bad_inputs():
    uv = np.zeros((20, 2))
    with pytest.raises(ValueError, match="K1"):
        relative_pose_essential(uv, uv, np.full((3, 3), np.nan), K, np.ones((20, 3)))
    with pytest.raises(ValueError, match="at least 5"):
        relative_pose_essential(uv[:4], uv[:4], K, K, np.ones((4, 3)))
    with pytest.raises(ValueError, match="pts3d1"):
        relative_pose_essential(uv, uv, K, K, np.ones((19, 3)))


# ----------------------------------------------------------------------------- Umeyama


@pytest.mark.parametrize("with_scale", [True, False])
def test_umeyama_recovers_sim3(with_scale):
    rng = np.random.default_rng(3)
    R = Rotation.random(random_state=4).as_matrix()
    t = rng.normal(size=3)
    s = 2.7 if with_scale else 1.0
    src = rng.normal(size=(100, 3))
    dst = s * src @ R.T + t
    res = umeyama(src, dst, with_scale=with_scale)
    np.testing.assert_allclose(res.R, R, atol=1e-10)
    np.testing.assert_allclose(res.t, t, atol=1e-10)
    assert abs(res.scale - s) < 1e-10 and res.rmse < 1e-10
    np.testing.assert_allclose(res.apply(src), dst, atol=1e-9)


def test_umeyama_errors():
    with pytest.raises(ValueError, match="at least 3"):
        umeyama(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="degenerate"):
        umeyama(np.zeros((5, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        umeyama(np.zeros((5, 2)), np.zeros((5, 2)))


# ----------------------------------------------------------------------------- covariance


def _cov_trace(n, noise, seed=0):
    rng = np.random.default_rng(seed)
    T_cam_world = random_T(rng)
    X, uv = scene_in_view(rng, T_cam_world, n)
    uv = uv + rng.normal(scale=noise, size=uv.shape)
    cov = pose_covariance(invert_T(T_cam_world), uv, X, K)
    assert cov.shape == (6, 6)
    np.testing.assert_allclose(cov, cov.T)
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    return np.trace(cov[:3, :3]), np.trace(cov[3:, 3:])


def test_covariance_shrinks_with_more_inliers_and_less_noise():
    t_few, r_few = _cov_trace(50, 1.0)
    t_many, r_many = _cov_trace(2000, 1.0)
    t_quiet, r_quiet = _cov_trace(50, 0.1)
    assert t_many < t_few / 10 and r_many < r_few / 10  # ~ 1/N: 40x more points
    assert t_quiet < t_few / 50 and r_quiet < r_few / 50  # ~ sigma^2: 100x smaller
    # absolute scale: 1 px noise at f = 500 px over ~4 m depth -> position std of mm..cm
    assert 1e-4 < np.sqrt(t_few) < 0.2


def test_covariance_matches_monte_carlo():
    """The Gauss-Newton covariance of the position agrees with the spread of PnP solutions."""
    rng = np.random.default_rng(11)
    T_cam_world = random_T(rng)
    X, uv = scene_in_view(rng, T_cam_world, 200)
    T_wc = invert_T(T_cam_world)
    centres, covs = [], []
    for _ in range(40):
        uvn = uv + rng.normal(scale=1.0, size=uv.shape)
        res = solve_pnp(uvn, X, K, PnPConfig(reprojection_error_px=5.0))
        centres.append(res.T_world_cam[:3, 3] - T_wc[:3, 3])
        covs.append(res.covariance)
    emp = np.var(np.array(centres), axis=0)
    pred = np.mean([np.diag(c)[:3] for c in covs], axis=0)
    assert np.all(emp / pred > 0.4) and np.all(emp / pred < 2.5), (emp, pred)


def test_essential_with_estimated_intrinsics():
    """Unknown intrinsics: K of each camera from its own-frame pointmap, then E + metric scale."""
    rng = np.random.default_rng(9)
    f_true, h, w = 280.0, 240, 320
    Kt = intrinsics_matrix(f_true, (w - 1) / 2, (h - 1) / 2)
    P1 = pointmap(f_true, (w - 1) / 2, (h - 1) / 2, h=h, w=w, seed=9)  # camera-1 frame
    T_cam2_cam1 = random_T(rng, 15, 0.5)
    K1 = estimate_focal(P1).K
    idx = rng.choice(h * w, 800, replace=False)
    X1 = P1.reshape(-1, 3)[idx]
    uv1 = np.stack([idx % w, idx // w], 1).astype(float)
    X2 = transform_points(T_cam2_cam1, X1)
    uv2 = project(X2, Kt)
    vis = np.all((uv2 >= 0) & (uv2 < [w, h]), 1) & (X2[:, 2] > 0)
    # camera 2's own pointmap would give its K the same way; same camera here
    K2 = K1
    uv2n, _ = corrupt(rng, uv2[vis])
    res = relative_pose_essential(uv1[vis] + rng.normal(size=(vis.sum(), 2)), uv2n, K1, K2, X1[vis])
    assert rotation_angle_deg(res.T_cam2_cam1, T_cam2_cam1) <= ROT_TOL_DEG
    t_err = np.linalg.norm(res.T_cam2_cam1[:3, 3] - T_cam2_cam1[:3, 3])
    assert t_err <= TRANS_TOL_REL * np.median(X1[:, 2])
