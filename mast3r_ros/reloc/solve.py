"""Pose of a query from one decoded (reference, query) pair, and the scale-free fusion of
several references.

Single reference (map-free): the reference's pointmap gives metric 3D points in its camera
frame; FRM matches tie them to query pixels.

- K known: PnP (poselib LO-RANSAC, P3P, robust Cauchy LM refinement of the inliers) on those
  points and the essential matrix with the known K (5-point LO-RANSAC + LM; metric scale from
  the pointmap depths). They cross-check each other (rotation, translation direction). The
  answer is the essential one (``prefer_essential``): its rotation and direction do not
  depend on the pointmap's depths, which a real network distorts smoothly by a few percent
  (that bends PnP's 3D points and its rotation by degrees); PnP answers when the baseline is
  too short for a direction.
- K unknown: the query's focal comes from its own pointmap (principal point at the image
  centre unless configured), the essential matrix (5-point LO-RANSAC + LM) gives rotation
  and translation direction, the metric scale is the median ratio of pointmap depth to
  triangulated depth; PnP with the estimated K is the cross-check.

Either way the translation length is the network's metric scale, which errs by several to
~15 % per pair; that error scales the whole reference->query baseline. Hence the fusion:
the *direction* from a reference centre to the query centre does not depend on the scale,
so with two or more verified references the query centre is fused with a covariance that
knows the scale error lies along each ray (``fuse``): in the limit, the rays' intersection.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from mast3r_ros.geometry import (
    PnPConfig, RelativePoseConfig, estimate_focal, invert_T, relative_pose_essential, solve_pnp,
)
from mast3r_ros.geometry.transforms import rotation_angle_deg

from .config import RelocConfig

logger = logging.getLogger(__name__)


class PoseFailure(RuntimeError):
    """An honest failure with its reason."""


@dataclass
class PairSolution:
    """The verified pose of the query from one reference.

    Attributes:
        T_ref_cam: (4, 4) query camera -> reference camera, metric (network scale).
        T_map_cam: (4, 4) query camera -> map.
        covariance: (6, 6) of ``T_map_cam`` (ROS order, map frame).
        method: "pnp" or "essential". num_matches / num_inliers: counts.
    """

    ref_id: str
    T_ref_cam: np.ndarray
    T_map_cam: np.ndarray
    covariance: np.ndarray
    method: str
    num_matches: int
    num_inliers: int
    inlier_xy_ref: np.ndarray | None = None  # (n, 2) inlier pixels in the reference
    inlier_xy_cam: np.ndarray | None = None  # (n, 2) their matches in the query
    scale_sigma: float = 0.10  # relative scale uncertainty of the 3D points used (along the baseline)

    @property
    def inlier_ratio(self) -> float:
        return self.num_inliers / max(self.num_matches, 1)


def focal_K(pts3d: np.ndarray, conf: np.ndarray | None, transform, estimate_pp: bool) -> np.ndarray:
    """(3, 3) intrinsics at original resolution from a view's own (h, w, 3) pointmap."""
    fe = estimate_focal(pts3d, weights=conf, estimate_principal_point=estimate_pp)
    return transform.intrinsics_to_orig(fe.K)


def rotate_covariance(cov: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Covariance of a pose in frame B -> in frame A, for T_A_B with rotation ``R``
    (position and fixed-axis rotation perturbations both rotate by R)."""
    A = np.zeros((6, 6))
    A[:3, :3] = R
    A[3:, 3:] = R
    out = A @ cov @ A.T
    return 0.5 * (out + out.T)


def _angle_between_deg(a: np.ndarray, b: np.ndarray) -> float:
    c = float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-18))
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


def solve_pair(ref_id: str, T_map_ref: np.ndarray, xy_ref: np.ndarray, xy_q: np.ndarray,
               pts_ref: np.ndarray, K_ref: np.ndarray, K_q: np.ndarray, k_known: bool,
               cfg: RelocConfig, scale_sigma: float | None = None) -> PairSolution:
    """Pose of the query from matches with one reference.

    Args:
        xy_ref, xy_q: (N, 2) matched pixels (original resolution) in reference and query.
        pts_ref: (N, 3) reference-camera 3D points of ``xy_ref`` (the reference's pointmap).
        K_ref, K_q: (3, 3) intrinsics (given or estimated). k_known: K_q was given.
        scale_sigma: relative scale uncertainty of ``pts_ref`` (None: ``cfg.scale_sigma``, the
            network's; a map's own points are steadier: ``cfg.map_scale_sigma``).

    Raises:
        PoseFailure: too few matches / inliers, or PnP and essential disagree.
    """
    n = len(xy_ref)
    ok = np.all(np.isfinite(pts_ref), axis=1) & (pts_ref[:, 2] > 1e-6)
    xy_ref, xy_q, pts_ref = xy_ref[ok], xy_q[ok], pts_ref[ok]
    if len(xy_ref) < cfg.min_matches:
        raise PoseFailure(f"too few matches with reference {ref_id!r}: {len(xy_ref)} < "
                          f"min_matches={cfg.min_matches}")
    pnp_cfg = PnPConfig(reprojection_error_px=cfg.pnp_reprojection_px, min_inliers=cfg.min_inliers,
                        seed=cfg.seed)
    rel_cfg = RelativePoseConfig(epipolar_error_px=cfg.epipolar_px, min_inliers=cfg.min_inliers,
                                 seed=cfg.seed)
    try:
        pnp = solve_pnp(xy_q, pts_ref, K_q, pnp_cfg)  # "world" = reference camera
    except RuntimeError as exc:
        raise PoseFailure(f"too few inliers with reference {ref_id!r} (PnP: {exc})") from None
    try:
        rel = relative_pose_essential(xy_ref, xy_q, K_ref, K_q, pts_ref, rel_cfg)
    except RuntimeError as exc:
        raise PoseFailure(f"too few inliers with reference {ref_id!r} (essential: {exc})") from None
    T_pnp, T_ess = pnp.T_world_cam, rel.T_cam1_cam2  # both: query camera -> reference camera
    rot_dis = rotation_angle_deg(T_pnp[:3, :3], T_ess[:3, :3])
    if rot_dis > cfg.max_rotation_disagreement_deg:
        raise PoseFailure(f"inconsistent solution with reference {ref_id!r}: PnP and essential "
                          f"rotations differ by {rot_dis:.1f} deg > "
                          f"{cfg.max_rotation_disagreement_deg} deg")
    base = min(np.linalg.norm(T_pnp[:3, 3]), np.linalg.norm(T_ess[:3, 3]))
    if base > cfg.min_baseline_for_direction_m:
        dir_dis = _angle_between_deg(T_pnp[:3, 3], T_ess[:3, 3])
        if dir_dis > cfg.max_direction_disagreement_deg:
            raise PoseFailure(f"inconsistent solution with reference {ref_id!r}: PnP and essential "
                              f"translation directions differ by {dir_dis:.1f} deg > "
                              f"{cfg.max_direction_disagreement_deg} deg")
    # Which answer: the essential matrix's rotation and direction do not depend on the
    # pointmap's depths (only its scale does), so they survive the smooth depth distortion of
    # a real network that bends PnP's 3D points; it is chosen unless the baseline is too
    # short for a direction (< essential_min_baseline_ratio x median depth), where PnP is.
    depth = float(np.median(pts_ref[:, 2]))
    use_ess = (cfg.prefer_essential or not k_known) and \
        np.linalg.norm(T_ess[:3, 3]) >= cfg.essential_min_baseline_ratio * depth
    if use_ess:
        T_ref_cam, cov, n_in, method, inl = T_ess, rel.covariance, rel.n_inliers, "essential", rel.inliers
    else:
        T_ref_cam, cov, n_in, method, inl = T_pnp, pnp.covariance, pnp.n_inliers, "pnp", pnp.inliers
    if n_in < cfg.min_inliers or n_in / n < cfg.min_inlier_ratio:
        raise PoseFailure(f"too few inliers with reference {ref_id!r}: {n_in} of {n} matches "
                          f"(need {cfg.min_inliers} and ratio {cfg.min_inlier_ratio})")
    if cov is None or not np.all(np.isfinite(cov)):
        raise PoseFailure(f"degenerate geometry with reference {ref_id!r}: no finite covariance")
    t_map = T_map_ref[:3, :3] @ T_ref_cam[:3, 3]  # baseline in the map frame
    cov_map = rotate_covariance(cov, T_map_ref[:3, :3])
    sigma = cfg.scale_sigma if scale_sigma is None else float(scale_sigma)
    cov_map[:3, :3] += sigma ** 2 * np.outer(t_map, t_map)
    cov_map += np.eye(6) * 1e-12  # keep SPD on exact (noise-free) data
    return PairSolution(ref_id, T_ref_cam, T_map_ref @ T_ref_cam, cov_map, method, n, n_in,
                        xy_ref[inl], xy_q[inl], sigma)


def chordal_mean(Rs: list[np.ndarray], w: np.ndarray) -> np.ndarray:
    """Weighted chordal L2 mean of rotations (SVD projection of the weighted sum)."""
    M = sum(wi * R for wi, R in zip(w, Rs))
    U, _, Vt = np.linalg.svd(M)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def fuse(sols: list[PairSolution], T_map_refs: dict[str, np.ndarray], cfg: RelocConfig
         ) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """Query pose from several verified references, robust to the network's scale error.

    Each reference ``i`` gives the query centre ``p_i = c_i + t_i`` (``c_i`` its centre,
    ``t_i`` the metric baseline, direction ``d_i``) with a covariance that separates what
    the scale error does from what it does not: ``Sigma_i = sigma_perp_i^2 (I - d_i d_i^T)
    + (scale_sigma_i |t_i|)^2 d_i d_i^T``, where ``sigma_perp_i`` is the across-ray position
    std (from the pair's own covariance, floored at ``|t_i| direction_sigma_deg``) and
    ``scale_sigma_i`` the solution's own (``scale_sigma`` for a pair's predicted pointmap,
    ``map_scale_sigma`` for a map's points). The
    fused centre is the information-weighted mean ``(sum Lambda_i)^-1 sum Lambda_i p_i``.
    With a small ``scale_sigma`` it averages the positions; with a large one it becomes the
    least-squares intersection of the rays from the reference centres (scale-free). The
    rotation is the inlier-weighted chordal mean.

    Only references whose rotation agrees with the best one (``max_rotation_disagreement_deg``)
    and with a baseline above ``min_baseline_for_direction_m`` take part.

    Returns (T_map_cam, covariance (6, 6), ids used), or None (fewer than two usable
    references, or the fused centre further than ``max_fusion_scale_deviation`` x baseline
    from the best single answer: then the references disagree and the best single answer
    stands).
    """
    best = sols[0]
    use = [s for s in sols
           if rotation_angle_deg(s.T_map_cam[:3, :3], best.T_map_cam[:3, :3])
           <= cfg.max_rotation_disagreement_deg
           and np.linalg.norm(s.T_ref_cam[:3, 3]) > cfg.min_baseline_for_direction_m]
    if len(use) < 2:
        return None
    cs = np.stack([T_map_refs[s.ref_id][:3, 3] for s in use])                       # (n, 3)
    ts = np.stack([T_map_refs[s.ref_id][:3, :3] @ s.T_ref_cam[:3, 3] for s in use])  # (n, 3)
    dist = np.linalg.norm(ts, axis=1)
    ds = ts / dist[:, None]
    P = np.eye(3)[None] - ds[:, :, None] * ds[:, None, :]                            # (n, 3, 3)
    info = np.zeros((3, 3))
    rhs = np.zeros(3)
    for s, Pi, ci, ti, di, dd in zip(use, P, cs, ts, ds, dist):
        cov_t = s.covariance[:3, :3] - s.scale_sigma ** 2 * np.outer(ti, ti)
        perp = max(float(np.trace(Pi @ cov_t @ Pi)) / 2.0,
                   (dd * math.radians(cfg.direction_sigma_deg)) ** 2, 1e-12)
        along = max((s.scale_sigma * dd) ** 2, 1e-12)
        Li = Pi / perp + np.outer(di, di) / along
        info += Li
        rhs += Li @ (ci + ti)
    if np.linalg.cond(info) > 1e10:
        return None
    cov_t = np.linalg.inv(info)
    c = cov_t @ rhs
    c_best = best.T_map_cam[:3, 3]
    baseline_best = np.linalg.norm(c_best - T_map_refs[best.ref_id][:3, 3])
    if np.linalg.norm(c - c_best) > cfg.max_fusion_scale_deviation * baseline_best:
        logger.info("fusion rejected: fused centre %.3f m from the best single answer "
                    "(baseline %.3f m)", float(np.linalg.norm(c - c_best)), baseline_best)
        return None
    R = chordal_mean([s.T_map_cam[:3, :3] for s in use],
                     np.array([s.num_inliers for s in use], dtype=np.float64))
    info_r = sum(np.linalg.inv(s.covariance[3:, 3:] + np.eye(3) * 1e-15) for s in use)
    cov = np.zeros((6, 6))
    cov[:3, :3] = cov_t
    cov[3:, 3:] = np.linalg.inv(info_r)
    cov = 0.5 * (cov + cov.T)
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, c
    return T, cov, [s.ref_id for s in use]


def confidence(num_inliers: int, num_matches: int, cfg: RelocConfig) -> float:
    ratio = num_inliers / max(num_matches, 1)
    return float((1.0 - math.exp(-num_inliers / cfg.confidence_inliers)) * min(1.0, ratio / 0.5))


__all__ = ["PoseFailure", "PairSolution", "solve_pair", "fuse", "focal_K", "confidence",
           "chordal_mean", "rotate_covariance", "invert_T"]
