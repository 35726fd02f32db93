"""Umeyama alignment of point sets in SE(3) and Sim(3)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Sim3", "umeyama"]


@dataclass
class Sim3:
    """``dst ≈ scale * R @ src + t``.

    Attributes:
        R: (3, 3) rotation. t: (3,) translation. scale: scale (1.0 for SE(3)).
        rmse: root mean square residual of the aligned points.
    """

    R: np.ndarray
    t: np.ndarray
    scale: float
    rmse: float

    @property
    def matrix(self) -> np.ndarray:
        """(4, 4) ``[[s R, t], [0, 1]]``."""
        M = np.eye(4)
        M[:3, :3], M[:3, 3] = self.scale * self.R, self.t
        return M

    def apply(self, pts: np.ndarray) -> np.ndarray:
        """(N, 3) -> (N, 3)."""
        return self.scale * np.asarray(pts, dtype=np.float64) @ self.R.T + self.t


def umeyama(src: np.ndarray, dst: np.ndarray, *, with_scale: bool = True,
            weights: np.ndarray | None = None) -> Sim3:
    """Least-squares similarity (or rigid) transform taking ``src`` onto ``dst``.

    Umeyama, "Least-squares estimation of transformation parameters between two point
    patterns", PAMI 1991: SVD of the (weighted) cross-covariance with the reflection fix.

    Args:
        src: (N, 3) points. dst: (N, 3) corresponding points, N >= 3 non-collinear.
        with_scale: Sim(3) when True, SE(3) (scale 1) when False.
        weights: optional (N,) non-negative weights.

    Returns:
        ``Sim3``.
    """
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 3 or src.shape != dst.shape:
        raise ValueError(f"src and dst must both be (N, 3), got {src.shape} and {dst.shape}")
    if src.shape[0] < 3:
        raise ValueError(f"umeyama needs at least 3 point pairs, got {src.shape[0]}")
    if not (np.all(np.isfinite(src)) and np.all(np.isfinite(dst))):
        raise ValueError("src/dst contain non-finite values")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(src),) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be (N,) non-negative with a positive sum, got {w.shape}")
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    xs, xd = src - mu_s, dst - mu_d
    cov = (xd * w[:, None]).T @ xs  # (3, 3) cross-covariance
    U, S, Vt = np.linalg.svd(cov)
    if S[1] < 1e-12 * max(S[0], 1e-300):
        raise ValueError("points are degenerate (collinear or coincident): rotation undefined")
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1.0
    R = U @ D @ Vt
    var_s = float(w @ (xs**2).sum(1))
    scale = float(np.trace(np.diag(S) @ D) / var_s) if with_scale else 1.0
    t = mu_d - scale * R @ mu_s
    res = dst - (scale * src @ R.T + t)
    return Sim3(R, t, scale, float(np.sqrt((res**2).sum(1).mean())))
