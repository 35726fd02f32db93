"""Absolute pose (PnP + RANSAC) and relative pose (essential matrix + RANSAC, metric scale
from MASt3R pointmaps).

Solver choice: poselib (``estimate_absolute_pose`` / ``estimate_relative_pose``: LO-RANSAC with
P3P / 5-point minimal solvers and a robust (Cauchy) Levenberg-Marquardt refinement of the
inliers built in). Measured here with ``mast3r-ros bench-match --pose`` (1000 matches, 50 %
outliers, 1 px noise, median of 5 scenes, 2-core CPU; see ``benchmarks/RESULTS.md``):
poselib 7.6 ms, 0.019 deg / 1.4 mm; OpenCV ``solvePnPRansac(USAC_MAGSAC)`` + ``solvePnPRefineLM``
9.7 ms, 0.017 deg / 1.2 mm; ``SOLVEPNP_SQPNP`` in RANSAC + LM 19.0 ms, 0.019 deg / 1.6 mm. The
accuracies are equal within the noise; poselib is the fastest, refines non-linearly in the same
call, is seeded (reproducible), and the same library gives the 5-point relative pose. The
OpenCV solvers stay available as ``PnPSolver.OPENCV_MAGSAC`` / ``PnPSolver.OPENCV_SQPNP``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping

import numpy as np

from mast3r_ros.config import config_from_dict
from mast3r_ros.geometry.covariance import pose_covariance
from mast3r_ros.geometry.intrinsics import check_K
from mast3r_ros.geometry.transforms import invert_T, make_T

logger = logging.getLogger(__name__)

__all__ = ["PnPSolver", "PnPConfig", "PnPResult", "solve_pnp", "RelativePoseConfig",
           "RelativePoseResult", "relative_pose_essential"]


class PnPSolver(Enum):
    """Which PnP + RANSAC implementation to use."""

    POSELIB = "poselib"  # LO-RANSAC + P3P + LM refinement (default, see module docstring)
    OPENCV_MAGSAC = "opencv_magsac"  # cv2.solvePnPRansac(USAC_MAGSAC) + cv2.solvePnPRefineLM
    OPENCV_SQPNP = "opencv_sqpnp"  # cv2.solvePnPRansac(SOLVEPNP_SQPNP) + cv2.solvePnPRefineLM


@dataclass(frozen=True)
class PnPConfig:
    """PnP + RANSAC settings."""

    solver: PnPSolver = PnPSolver.POSELIB  # implementation
    reprojection_error_px: float = 3.0  # RANSAC inlier threshold, pixels
    max_iterations: int = 10000  # RANSAC iteration cap
    confidence: float = 0.9999  # RANSAC success probability
    min_inliers: int = 12  # fewer inliers than this is a failure (RuntimeError)
    compute_covariance: bool = True  # 6x6 covariance from the inlier residuals
    seed: int = 0  # RANSAC seed (poselib), for reproducibility

    def __post_init__(self) -> None:
        if isinstance(self.solver, str):
            object.__setattr__(self, "solver", PnPSolver(self.solver))
        if not self.reprojection_error_px > 0:
            raise ValueError(f"reprojection_error_px must be > 0, got {self.reprojection_error_px}")
        if self.min_inliers < 4:
            raise ValueError(f"min_inliers must be >= 4, got {self.min_inliers}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PnPConfig":
        """Build from a dict, rejecting unknown keys."""
        return config_from_dict(cls, data)


@dataclass
class PnPResult:
    """Absolute pose of a camera.

    Attributes:
        T_cam_world: (4, 4) world -> camera. T_world_cam: (4, 4) camera -> world (its pose).
        inliers: (N,) bool. n_inliers: inlier count.
        rms_px: RMS reprojection error of the inliers (pixels).
        covariance: (6, 6) covariance of ``T_world_cam`` (ROS order x, y, z, rotX, rotY,
            rotZ; m^2 / rad^2) or None.
    """

    T_cam_world: np.ndarray
    T_world_cam: np.ndarray
    inliers: np.ndarray
    n_inliers: int
    rms_px: float
    covariance: np.ndarray | None


def _check_corr(name_a: str, a: np.ndarray, da: int, name_b: str, b: np.ndarray, db: int,
                min_n: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != da:
        raise ValueError(f"{name_a} must be (N, {da}), got {a.shape}")
    if b.ndim != 2 or b.shape[1] != db:
        raise ValueError(f"{name_b} must be (N, {db}), got {b.shape}")
    if len(a) != len(b):
        raise ValueError(f"{name_a} and {name_b} must have the same N, got {len(a)} and {len(b)}")
    if len(a) < min_n:
        raise ValueError(f"need at least {min_n} correspondences, got {len(a)}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError(f"{name_a}/{name_b} contain non-finite values; filter them first")
    return a, b


def _camera_dict(K: np.ndarray) -> dict:
    # poselib's PINHOLE: u = fx X/Z + cx (same pixel convention as ours / OpenCV).
    return {"model": "PINHOLE", "width": int(max(1, 2 * K[0, 2])), "height": int(max(1, 2 * K[1, 2])),
            "params": [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]}


def _pnp_opencv(pts2d: np.ndarray, pts3d: np.ndarray, K: np.ndarray, cfg: PnPConfig
                ) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    flags = cv2.USAC_MAGSAC if cfg.solver is PnPSolver.OPENCV_MAGSAC else cv2.SOLVEPNP_SQPNP
    ok, rvec, tvec, inl = cv2.solvePnPRansac(
        pts3d, pts2d, K, None, iterationsCount=cfg.max_iterations,
        reprojectionError=cfg.reprojection_error_px, confidence=cfg.confidence, flags=flags)
    if not ok or inl is None:
        raise RuntimeError("PnP failed: OpenCV RANSAC found no pose")
    inliers = np.zeros(len(pts2d), bool)
    inliers[inl.reshape(-1)] = True
    rvec, tvec = cv2.solvePnPRefineLM(pts3d[inliers], pts2d[inliers], K, None, rvec, tvec)
    R, _ = cv2.Rodrigues(rvec)
    return make_T(R, tvec.reshape(3)), inliers


def solve_pnp(pts2d: np.ndarray, pts3d_world: np.ndarray, K: np.ndarray,
              config: PnPConfig = PnPConfig()) -> PnPResult:
    """Camera pose from 2D-3D matches: RANSAC + non-linear refinement.

    Args:
        pts2d: (N, 2) pixels (x, y) in the image whose intrinsics are ``K``.
        pts3d_world: (N, 3) world points.
        K: (3, 3) intrinsics (known, or from ``estimate_focal(...).K``).
        config: solver settings.

    Returns:
        ``PnPResult``. Raises ValueError on bad input, RuntimeError when no pose with
        ``min_inliers`` inliers is found.
    """
    K = check_K(K)
    pts2d, pts3d = _check_corr("pts2d", pts2d, 2, "pts3d_world", pts3d_world, 3, 4)
    if config.solver is PnPSolver.POSELIB:
        import poselib

        ransac = {"max_reproj_error": config.reprojection_error_px,
                  "max_iterations": config.max_iterations, "success_prob": config.confidence,
                  "seed": config.seed}
        pose, info = poselib.estimate_absolute_pose(pts2d, pts3d, _camera_dict(K), ransac, {})
        T_cam_world = make_T(pose.R, pose.t)
        inliers = np.asarray(info["inliers"], dtype=bool)
    else:
        T_cam_world, inliers = _pnp_opencv(pts2d, pts3d, K, config)
    n_in = int(inliers.sum())
    if n_in < config.min_inliers:
        raise RuntimeError(f"PnP failed: {n_in} inliers < min_inliers={config.min_inliers}")
    T_world_cam = invert_T(T_cam_world)
    pc = pts3d[inliers] @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
    uv = pc @ K.T
    rms = float(np.sqrt(np.mean(np.sum((uv[:, :2] / uv[:, 2:] - pts2d[inliers]) ** 2, 1))))
    cov = pose_covariance(T_world_cam, pts2d[inliers], pts3d[inliers], K) \
        if config.compute_covariance else None
    logger.debug("PnP: %d/%d inliers, rms %.2f px", n_in, len(pts2d), rms)
    return PnPResult(T_cam_world, T_world_cam, inliers, n_in, rms, cov)


@dataclass(frozen=True)
class RelativePoseConfig:
    """Essential matrix + RANSAC settings."""

    epipolar_error_px: float = 1.5  # RANSAC Sampson-error threshold, pixels
    max_iterations: int = 10000  # RANSAC iteration cap
    confidence: float = 0.9999  # RANSAC success probability
    min_inliers: int = 12  # fewer inliers than this is a failure (RuntimeError)
    seed: int = 0  # RANSAC seed

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RelativePoseConfig":
        """Build from a dict, rejecting unknown keys."""
        return config_from_dict(cls, data)


@dataclass
class RelativePoseResult:
    """Metric relative pose of camera 2 with respect to camera 1.

    Attributes:
        T_cam2_cam1: (4, 4) camera-1 coordinates -> camera-2 coordinates, metric.
        T_cam1_cam2: (4, 4) its inverse (camera 2's pose in camera 1's frame).
        scale: metres per unit of the essential-matrix translation (from the pointmap).
        inliers: (N,) bool. n_inliers: inlier count.
        covariance: (6, 6) covariance of ``T_cam1_cam2`` (ROS order) from the inlier
            reprojections in image 2 of the pointmap's points, or None.
    """

    T_cam2_cam1: np.ndarray
    T_cam1_cam2: np.ndarray
    scale: float
    inliers: np.ndarray
    n_inliers: int
    covariance: np.ndarray | None


def _triangulate_depths(x1n: np.ndarray, x2n: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Depth in camera 1 of each normalised match (x2 ~ R x1 + t), midpoint-free linear LS."""
    a = np.concatenate([x1n, np.ones((len(x1n), 1))], 1)  # (N, 3) rays of camera 1
    b = np.concatenate([x2n, np.ones((len(x2n), 1))], 1)
    Ra = a @ R.T  # (N, 3)
    # z1 * Ra + t = z2 * b  -> cross with b: z1 (Ra x b) = -(t x b)
    c1 = np.cross(Ra, b)
    c2 = -np.cross(np.broadcast_to(t, b.shape), b)
    return np.sum(c1 * c2, 1) / np.maximum(np.sum(c1 * c1, 1), 1e-18)


def relative_pose_essential(xy1: np.ndarray, xy2: np.ndarray, K1: np.ndarray, K2: np.ndarray,
                            pts3d1: np.ndarray, config: RelativePoseConfig = RelativePoseConfig(),
                            *, compute_covariance: bool = True) -> RelativePoseResult:
    """Relative pose from the essential matrix, with metric scale from MASt3R's pointmap.

    The 5-point essential matrix (poselib LO-RANSAC + LM refinement) gives rotation and the
    translation direction; the scale is the median ratio, over inliers, of the pointmap depth
    in camera 1 to the depth triangulated with unit baseline. Useful when PnP is not (e.g.
    intrinsics estimated from the pointmaps, which are only approximately metric).

    Args:
        xy1: (N, 2) pixels in image 1; xy2: (N, 2) matching pixels in image 2.
        K1, K2: (3, 3) intrinsics (known or from ``estimate_focal``).
        pts3d1: (N, 3) 3D points of the ``xy1`` pixels in camera 1's frame (metres), e.g.
            MASt3R's view-1 pointmap sampled at ``xy1``.
        config: RANSAC settings.

    Returns:
        ``RelativePoseResult``.
    """
    K1, K2 = check_K(K1, "K1"), check_K(K2, "K2")
    xy1, xy2 = _check_corr("xy1", xy1, 2, "xy2", xy2, 2, 5)
    pts3d1 = np.asarray(pts3d1, dtype=np.float64)
    if pts3d1.shape != (len(xy1), 3):
        raise ValueError(f"pts3d1 must be (N, 3) = ({len(xy1)}, 3), got {pts3d1.shape}")
    import poselib

    ransac = {"max_epipolar_error": config.epipolar_error_px,
              "max_iterations": config.max_iterations, "success_prob": config.confidence,
              "seed": config.seed}
    pose, info = poselib.estimate_relative_pose(xy1, xy2, _camera_dict(K1), _camera_dict(K2),
                                                ransac, {})
    inliers = np.asarray(info["inliers"], dtype=bool)
    R, t = np.asarray(pose.R), np.asarray(pose.t)
    n_in = int(inliers.sum())
    if n_in < config.min_inliers:
        raise RuntimeError(f"relative pose failed: {n_in} inliers < min_inliers={config.min_inliers}")
    x1n = (xy1 - K1[:2, 2]) / np.diag(K1)[:2]
    x2n = (xy2 - K2[:2, 2]) / np.diag(K2)[:2]
    z_tri = _triangulate_depths(x1n[inliers], x2n[inliers], R, t / np.linalg.norm(t))
    z_map = pts3d1[inliers, 2]
    good = (z_tri > 0) & np.isfinite(z_map) & (z_map > 0)
    if good.sum() < 3:
        raise RuntimeError("relative pose: cannot fix the scale (too few points in front of "
                           "both cameras with a valid pointmap depth)")
    scale = float(np.median(z_map[good] / z_tri[good]))
    T21 = make_T(R, t / np.linalg.norm(t) * scale)
    T12 = invert_T(T21)
    cov = None
    if compute_covariance:
        cov = pose_covariance(T12, xy2[inliers][good], pts3d1[inliers][good], K2)
    return RelativePoseResult(T21, T12, scale, inliers, n_in, cov)
