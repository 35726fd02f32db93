"""Robust frame-to-keyframe pose: PnP (SE(3)) or Sim(3) IRLS on 3D-3D matches.

``PoseMode.SE3_PNP`` (default): frame pixels against the keyframe's *fused* 3D points,
poselib LO-RANSAC (P3P) + Cauchy-robust Levenberg-Marquardt (``geometry.solve_pnp``). Needs
K (given or estimated) and trusts the keyframe pointmap's metric scale: the pose comes out
metric, scale errors of one pair's prediction are averaged away by the keyframe fusion, and
reprojection residuals in pixels are the right error model for a camera.

``PoseMode.SIM3``: the frame's own pointmap against the keyframe's fused points, a
similarity by Umeyama inside iteratively reweighted least squares (Cauchy weights on
depth-normalised residuals). Use it when the metric scale of the predictions is not trusted
(e.g. a non-metric checkpoint, or scale varying pair to pair): the per-frame scale is
estimated and removed, and only the rigid part is the camera pose (in the keyframe's scale).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from mast3r_ros.geometry import PnPConfig, solve_pnp, umeyama

__all__ = ["PoseMode", "PoseEstimate", "pnp_pose", "sim3_irls"]


class PoseMode(Enum):
    """How the frame-to-keyframe pose is solved (see the module docstring)."""

    SE3_PNP = "se3_pnp"
    SIM3 = "sim3"


@dataclass
class PoseEstimate:
    """A frame's pose relative to its keyframe.

    Attributes:
        T_kf_cam: (4, 4) float64 rigid pose of the frame's camera in the keyframe's frame.
        scale: frame-prediction scale relative to the keyframe (1 for SE(3)).
        inliers: (N,) bool. num_inliers: their count.
        residual: robust residual summary (pixels for PnP, relative depth for Sim(3)).
    """

    T_kf_cam: np.ndarray
    scale: float
    inliers: np.ndarray
    num_inliers: int
    residual: float


def pnp_pose(px_cam: np.ndarray, pts_kf: np.ndarray, K_net: np.ndarray, threshold_px: float,
             min_inliers: int) -> PoseEstimate:
    """SE(3) pose from frame pixels (N, 2) and keyframe 3D points (N, 3). Raises RuntimeError."""
    cfg = PnPConfig(reprojection_error_px=threshold_px, min_inliers=max(4, min_inliers),
                    compute_covariance=False, max_iterations=1000, confidence=0.999)
    res = solve_pnp(px_cam, pts_kf, K_net, cfg)
    return PoseEstimate(res.T_world_cam, 1.0, res.inliers, res.n_inliers, res.rms_px)


def sim3_irls(pts_cam: np.ndarray, pts_kf: np.ndarray, weights: np.ndarray | None = None, *,
              iterations: int = 10, inlier_threshold: float = 0.05, min_inliers: int = 10
              ) -> PoseEstimate:
    """Similarity taking the frame's points (N, 3, own frame) onto the keyframe's (N, 3).

    Residuals are divided by the keyframe depth (errors of predicted points grow with
    depth); Cauchy weights with scale ``1.4826 MAD`` (at least 0.2 ``inlier_threshold``);
    inliers have a relative residual below ``inlier_threshold``.

    Raises:
        RuntimeError: fewer than ``min_inliers`` inliers or a degenerate point set.
    """
    src = np.asarray(pts_cam, dtype=np.float64)
    dst = np.asarray(pts_kf, dtype=np.float64)
    ok = np.all(np.isfinite(src), 1) & np.all(np.isfinite(dst), 1) & (dst[:, 2] > 1e-6)
    base = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    base = np.where(ok, base, 0.0)
    if ok.sum() < max(3, min_inliers):
        raise RuntimeError(f"Sim(3): {int(ok.sum())} valid point pairs < {max(3, min_inliers)}")
    src0, dst0 = np.where(ok[:, None], src, 0.0), np.where(ok[:, None], dst, 1.0)
    zd = np.maximum(dst0[:, 2], 1e-6)
    w = base.copy()
    try:
        for _ in range(max(1, iterations)):
            sim = umeyama(src0, dst0, with_scale=True, weights=w)
            r = np.linalg.norm(dst0 - sim.apply(src0), axis=1) / zd
            sig = max(1.4826 * float(np.median(r[ok])), 0.2 * inlier_threshold)
            w = base / (1.0 + (r / sig) ** 2)
    except ValueError as exc:
        raise RuntimeError(f"Sim(3): {exc}") from None
    inl = ok & (r < inlier_threshold)
    n = int(inl.sum())
    if n < min_inliers:
        raise RuntimeError(f"Sim(3): {n} inliers < min_inliers={min_inliers}")
    sim = umeyama(src0[inl], dst0[inl], with_scale=True, weights=base[inl])
    r = np.linalg.norm(dst0 - sim.apply(src0), axis=1) / zd
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = sim.R, sim.t
    return PoseEstimate(T, float(sim.scale), inl, n, float(np.median(r[inl])))
