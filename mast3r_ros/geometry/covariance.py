"""Pose covariance from reprojection residuals (Gauss-Newton approximation).

``cov = sigma^2 (J^T J)^-1`` with ``J`` the (2N, 6) Jacobian of the reprojection residuals of
the inliers with respect to a perturbation of the camera pose and ``sigma^2 = sum(r^2) / (2N -
6)`` the residual variance. The perturbation is that of ``T_world_cam`` as ROS reads a
``PoseWithCovariance``: position (x, y, z) in the parent (world) frame, then small rotations
about the parent's fixed X, Y, Z axes (``R <- exp([d_theta]x) R``). Units: m^2, rad^2.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from mast3r_ros.geometry.intrinsics import check_K
from mast3r_ros.geometry.transforms import check_T, invert_T

__all__ = ["reprojection_residuals", "pose_covariance"]


def reprojection_residuals(T_world_cam: np.ndarray, pts2d: np.ndarray, pts3d_world: np.ndarray,
                           K: np.ndarray) -> np.ndarray:
    """(N, 2) projected minus observed pixels of world points seen by the camera."""
    T_cam_world = invert_T(T_world_cam)
    pc = pts3d_world @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]  # (N, 3) camera frame
    uv = pc @ K.T
    return uv[:, :2] / uv[:, 2:3] - pts2d


def _perturb(T: np.ndarray, d: np.ndarray) -> np.ndarray:
    out = T.copy()
    out[:3, 3] += d[:3]
    out[:3, :3] = Rotation.from_rotvec(d[3:]).as_matrix() @ T[:3, :3]
    return out


def pose_covariance(T_world_cam: np.ndarray, pts2d: np.ndarray, pts3d_world: np.ndarray,
                    K: np.ndarray, *, step: float = 1e-6) -> np.ndarray:
    """6x6 covariance of ``T_world_cam`` (ROS order x, y, z, rotX, rotY, rotZ).

    Args:
        T_world_cam: (4, 4) camera pose (camera -> world).
        pts2d: (N, 2) inlier pixels. pts3d_world: (N, 3) their world points. K: (3, 3).
        step: central-difference step of the numerical Jacobian (metres / radians).

    Returns:
        (6, 6) symmetric covariance.
    """
    T = check_T(T_world_cam, "T_world_cam")
    K = check_K(K)
    pts2d = np.asarray(pts2d, dtype=np.float64)
    pts3d_world = np.asarray(pts3d_world, dtype=np.float64)
    if not (np.all(np.isfinite(pts2d)) and np.all(np.isfinite(pts3d_world))):
        raise ValueError("pose covariance: pts2d / pts3d_world hold NaN or inf")
    if pts2d.ndim != 2 or pts2d.shape[1] != 2 or pts3d_world.shape != (len(pts2d), 3):
        raise ValueError(f"pts2d must be (N, 2) and pts3d_world (N, 3), got {pts2d.shape} and "
                         f"{pts3d_world.shape}")
    n = len(pts2d)
    if n < 4:
        raise ValueError(f"pose covariance needs at least 4 correspondences, got {n}")
    r0 = reprojection_residuals(T, pts2d, pts3d_world, K).reshape(-1)  # (2N,)
    J = np.empty((2 * n, 6))
    for k in range(6):
        d = np.zeros(6)
        d[k] = step
        rp = reprojection_residuals(_perturb(T, d), pts2d, pts3d_world, K).reshape(-1)
        rm = reprojection_residuals(_perturb(T, -d), pts2d, pts3d_world, K).reshape(-1)
        J[:, k] = (rp - rm) / (2 * step)
    sigma2 = float(r0 @ r0) / max(2 * n - 6, 1)
    if not (np.all(np.isfinite(J)) and np.isfinite(sigma2)):
        from mast3r_ros.errors import NonFiniteError

        raise NonFiniteError("pose covariance: reprojection residuals are not finite (a point at "
                             "or behind the camera, or NaN inputs); no covariance can be given")
    cov = sigma2 * np.linalg.pinv(J.T @ J)
    return 0.5 * (cov + cov.T)
