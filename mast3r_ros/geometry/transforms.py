"""Rigid transforms: 4x4 matrices <-> quaternions <-> (position, quaternion) tuples.

Quaternions are **xyzw** (ROS and scipy order) unless a name says ``wxyz``. A transform
``T_a_b`` (4, 4) maps coordinates in frame ``b`` to frame ``a``: ``p_a = T_a_b @ p_b``; e.g.
``T_world_cam`` is the camera pose in the world.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

__all__ = [
    "make_T", "invert_T", "check_T", "check_rotation", "ROTATION_ATOL", "matrix_to_quaternion_xyzw", "quaternion_xyzw_to_matrix",
    "quaternion_xyzw_to_wxyz", "quaternion_wxyz_to_xyzw", "T_to_pose", "pose_to_T",
    "rotation_angle_deg", "transform_points",
]


ROTATION_ATOL = 1e-4  # |R^T R - I| entries; float32 round trips stay far below it


def _as_float_array(x, name: str) -> np.ndarray:
    from mast3r_ros.errors import InputError

    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be an array of numbers, got {type(x).__name__}: {exc}") from None


def check_rotation(R: np.ndarray, name: str = "R", atol: float = ROTATION_ATOL) -> np.ndarray:
    """Validate a (3, 3) rotation: finite, orthonormal (``R^T R = I`` within ``atol``) and
    ``det R = +1`` (no reflection); returns float64.

    Raises:
        InputError (a ValueError) naming ``name`` and what is wrong.
    """
    from mast3r_ros.errors import InputError

    R = _as_float_array(R, name)
    if R.shape != (3, 3):
        raise InputError(f"{name} must be a (3, 3) rotation, got shape {R.shape}")
    if not np.all(np.isfinite(R)):
        raise InputError(f"{name} has non-finite entries (NaN/inf): {R.tolist()}")
    err = float(np.abs(R.T @ R - np.eye(3)).max())
    if err > atol:
        raise InputError(f"{name} is not a rotation: R^T R differs from the identity by {err:.3g} "
                         f"(tolerance {atol:g}); expected an orthonormal matrix (scaled or sheared?)")
    det = float(np.linalg.det(R))
    if det < 0:
        raise InputError(f"{name} is a reflection (det {det:.3f}), expected a rotation (det +1)")
    return R


def check_T(T: np.ndarray, name: str = "T") -> np.ndarray:
    """Validate a (4, 4) rigid transform (finite, orthonormal rotation with det +1, last
    row 0 0 0 1); returns float64."""
    from mast3r_ros.errors import InputError

    T = _as_float_array(T, name)
    if T.shape != (4, 4):
        raise InputError(f"{name} must be a (4, 4) transform, got shape {T.shape}")
    if not np.all(np.isfinite(T)):
        raise InputError(f"{name} has non-finite entries")
    if not np.allclose(T[3], [0, 0, 0, 1]):
        raise InputError(f"{name} last row must be [0, 0, 0, 1], got {T[3]}")
    check_rotation(T[:3, :3], f"{name}[:3, :3]")
    return T


def make_T(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(3, 3) rotation and (3,) translation -> (4, 4) transform."""
    R, t = np.asarray(R, dtype=np.float64), np.asarray(t, dtype=np.float64).reshape(-1)
    if R.shape != (3, 3) or t.shape != (3,):
        raise ValueError(f"R must be (3, 3) and t (3,), got {R.shape} and {t.shape}")
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def invert_T(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid (4, 4) transform: ``T_b_a`` from ``T_a_b``."""
    T = check_T(T)
    R, t = T[:3, :3], T[:3, 3]
    return make_T(R.T, -R.T @ t)


def transform_points(T: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply (4, 4) ``T_a_b`` to (..., 3) points in frame b -> (..., 3) in frame a."""
    T = np.asarray(T, dtype=np.float64)
    return np.asarray(pts, dtype=np.float64) @ T[:3, :3].T + T[:3, 3]


def matrix_to_quaternion_xyzw(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation (or a (4, 4) transform) -> (4,) unit quaternion xyzw with w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape == (4, 4):
        R = R[:3, :3]
    R = check_rotation(R)
    q = Rotation.from_matrix(R).as_quat()  # xyzw
    return q if q[3] >= 0 else -q


def quaternion_xyzw_to_matrix(q_xyzw: np.ndarray) -> np.ndarray:
    """(4,) quaternion xyzw (normalised here) -> (3, 3) rotation."""
    q = np.asarray(q_xyzw, dtype=np.float64).reshape(-1)
    if q.shape != (4,) or not np.all(np.isfinite(q)) or np.linalg.norm(q) < 1e-12:
        raise ValueError(f"q_xyzw must be a finite non-zero (4,) quaternion, got {q}")
    return Rotation.from_quat(q).as_matrix()


def quaternion_xyzw_to_wxyz(q_xyzw: np.ndarray) -> np.ndarray:
    """Reorder (..., 4) xyzw -> wxyz (e.g. for poselib / Eigen-style APIs)."""
    q = np.asarray(q_xyzw)
    return np.concatenate([q[..., 3:], q[..., :3]], axis=-1)


def quaternion_wxyz_to_xyzw(q_wxyz: np.ndarray) -> np.ndarray:
    """Reorder (..., 4) wxyz -> xyzw (ROS order)."""
    q = np.asarray(q_wxyz)
    return np.concatenate([q[..., 1:], q[..., :1]], axis=-1)


def T_to_pose(T: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float, float]]:
    """(4, 4) ``T_parent_child`` -> ((x, y, z), (qx, qy, qz, qw)), what a ROS Pose holds."""
    T = check_T(T)
    q = matrix_to_quaternion_xyzw(T[:3, :3])
    return tuple(float(v) for v in T[:3, 3]), tuple(float(v) for v in q)  # type: ignore[return-value]


def pose_to_T(position: np.ndarray, q_xyzw: np.ndarray) -> np.ndarray:
    """((x, y, z), (qx, qy, qz, qw)) -> (4, 4) ``T_parent_child``."""
    return make_T(quaternion_xyzw_to_matrix(q_xyzw), position)


def rotation_angle_deg(R_a: np.ndarray, R_b: np.ndarray | None = None) -> float | np.ndarray:
    """Angle in degrees of a rotation: ``R_a`` itself, or ``R_a^T R_b`` (from a to b) when
    ``R_b`` is given. The one rotation-angle function of the package (evaluation uses it too).

    Args:
        R_a, R_b: (..., 3, 3) rotations or (..., 4, 4) transforms (their rotation block),
            batched alike (numpy broadcasting).

    Returns:
        A float for single rotations, an (...,) float64 array for batches; in [0, 180],
        accurate near 0 and 180 degrees (atan2 of the skew part against the trace part,
        where the arccos of the trace alone loses precision).
    """
    R = _rotation_block(R_a, "R_a")
    if R_b is not None:
        R = np.swapaxes(R, -1, -2) @ _rotation_block(R_b, "R_b")
    w = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0],
                  R[..., 1, 0] - R[..., 0, 1]], axis=-1)
    c = (np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0
    angle = np.degrees(np.arctan2(np.linalg.norm(w, axis=-1) / 2.0, c))
    return float(angle) if angle.ndim == 0 else angle


def _rotation_block(R: np.ndarray, name: str) -> np.ndarray:
    R = np.asarray(R, dtype=np.float64)
    if R.ndim < 2 or R.shape[-2:] not in ((3, 3), (4, 4)):
        raise ValueError(f"{name} must be (..., 3, 3) or (..., 4, 4), got shape {R.shape}")
    return R[..., :3, :3]
