"""Pinhole intrinsics from a pointmap expressed in its own camera frame.

A pixel (u, v) (integer pixel centres, OpenCV convention) sees the 3D point (X, Y, Z), so
``u = cx + f X/Z`` and ``v = cy + f Y/Z``: linear in (f) or (f, cx, cy). We solve it by
iteratively reweighted least squares with L1 weights (Weiszfeld-style), then a few
least-squares refits on the inliers (residual < 3 robust sigmas), which together are robust to
the spurious points of sky / edges that the network produces.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["FocalEstimate", "estimate_focal", "intrinsics_matrix", "check_K"]


@dataclass
class FocalEstimate:
    """Attributes: focal (pixels, fx = fy), cx, cy (pixels), n_points used."""

    focal: float
    cx: float
    cy: float
    n_points: int

    @property
    def K(self) -> np.ndarray:
        """(3, 3) intrinsics."""
        return intrinsics_matrix(self.focal, self.cx, self.cy)


def intrinsics_matrix(f: float, cx: float, cy: float, fy: float | None = None) -> np.ndarray:
    """(3, 3) pinhole K."""
    return np.array([[f, 0, cx], [0, f if fy is None else fy, cy], [0, 0, 1.0]])


def check_K(K: np.ndarray, name: str = "K") -> np.ndarray:
    """Validate a (3, 3) finite pinhole matrix with positive focal lengths; returns float64."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"{name} must be (3, 3) intrinsics, got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise ValueError(f"{name} has non-finite entries (NaN/inf): {K.tolist()}")
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]):
        raise ValueError(f"{name} must have fx, fy > 0 and last row [0, 0, 1], got {K.tolist()}")
    return K


def estimate_focal(
    pts3d: np.ndarray,
    *,
    principal_point: tuple[float, float] | None = None,
    estimate_principal_point: bool = False,
    weights: np.ndarray | None = None,
    iterations: int = 20,
    min_depth: float = 1e-6,
) -> FocalEstimate:
    """Focal length (and optionally principal point) of the camera that sees ``pts3d``.

    Args:
        pts3d: (H, W, 3) pointmap in its own camera frame (z forward). A torch tensor is
            accepted too. Points with z <= ``min_depth`` or non-finite are ignored.
        principal_point: (cx, cy) to hold fixed; default the image centre
            ((W - 1) / 2, (H - 1) / 2) in integer-pixel-centre coordinates.
        estimate_principal_point: also estimate (cx, cy) (ignores ``principal_point``).
        weights: optional (H, W) non-negative weights (e.g. the confidence map).
        iterations: IRLS iterations.

    Returns:
        ``FocalEstimate``.
    """
    if hasattr(pts3d, "detach"):
        pts3d = pts3d.detach().cpu().numpy()
    P = np.asarray(pts3d, dtype=np.float64)
    if P.ndim != 3 or P.shape[2] != 3:
        raise ValueError(f"pts3d must be (H, W, 3), got {P.shape}")
    h, w = P.shape[:2]
    vs, us = np.mgrid[0:h, 0:w].astype(np.float64)
    wt = np.ones((h, w)) if weights is None else np.asarray(
        weights.detach().cpu().numpy() if hasattr(weights, "detach") else weights, dtype=np.float64)
    if wt.shape != (h, w):
        raise ValueError(f"weights must be (H, W) = {(h, w)}, got {wt.shape}")
    ok = np.all(np.isfinite(P), axis=2) & (P[..., 2] > min_depth) & np.isfinite(wt) & (wt > 0)
    n = int(ok.sum())
    if n < 3:
        raise ValueError(f"pts3d has only {n} valid points (finite, z > {min_depth}); need >= 3")
    xn, yn = P[ok, 0] / P[ok, 2], P[ok, 1] / P[ok, 2]  # (n,) normalised coordinates
    u, v, base_w = us[ok], vs[ok], wt[ok]
    # Stack both axes: rows [xn, 1, 0] -> u and [yn, 0, 1] -> v.
    if estimate_principal_point:
        A = np.concatenate([np.stack([xn, np.ones(n), np.zeros(n)], 1),
                            np.stack([yn, np.zeros(n), np.ones(n)], 1)])
        b = np.concatenate([u, v])
    else:
        cx, cy = principal_point if principal_point is not None else ((w - 1) / 2, (h - 1) / 2)
        A = np.concatenate([xn, yn])[:, None]
        b = np.concatenate([u - cx, v - cy])
    bw = np.concatenate([base_w, base_w])
    wts = bw.copy()
    for _ in range(max(1, iterations)):
        sw = np.sqrt(wts)[:, None]
        sol, *_ = np.linalg.lstsq(A * sw, b * sw[:, 0], rcond=None)
        r = np.abs(A @ sol - b)
        # L1 reweighting; the floor keeps exact fits finite.
        wts = bw / np.maximum(r, 1e-6 * max(1.0, float(np.median(np.abs(b)))))
    # L1 is not robust to leverage points (tiny z, huge X/Z): finish with inlier refits
    # (residual below 3 robust sigmas, at least 1 px), which is exact on clean data.
    for _ in range(5):
        r = np.abs(A @ sol - b)
        inl = r <= max(1.0, 3.0 * 1.4826 * float(np.median(r)))
        if inl.sum() < A.shape[1] + 1:
            break
        sw = np.sqrt(bw[inl])[:, None]
        sol, *_ = np.linalg.lstsq(A[inl] * sw, b[inl] * sw[:, 0], rcond=None)
    if estimate_principal_point:
        f, cx, cy = (float(s) for s in sol)
    else:
        f = float(sol[0])
    if not np.isfinite(f) or f <= 0:
        raise ValueError(f"focal estimation failed (f = {f}); is pts3d in its own camera frame?")
    logger.debug("focal %.2f px, pp (%.1f, %.1f) from %d points", f, cx, cy, n)
    return FocalEstimate(f, float(cx), float(cy), n)
