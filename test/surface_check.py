"""Test helper: how far reconstructed points lie from a synthetic sequence's true surface."""
from __future__ import annotations

import numpy as np


def surface_distance(xyz: np.ndarray, frames) -> np.ndarray:
    """Per point, the smallest |depth along the ray - true depth| over the ground-truth views
    that see it (an upper bound of the distance to the true surface)."""
    best = np.full(len(xyz), np.inf)
    for f in frames:
        T = np.linalg.inv(f.T_world_cam)
        pc = xyz @ T[:3, :3].T + T[:3, 3]
        z = pc[:, 2]
        uv = pc @ f.K.T
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.rint(uv[:, 0] / uv[:, 2])
            v = np.rint(uv[:, 1] / uv[:, 2])
        ok = (z > 0.05) & (u >= 0) & (u < f.depth.shape[1]) & (v >= 0) & (v < f.depth.shape[0])
        d = np.full(len(xyz), np.inf)
        d[ok] = np.abs(z[ok] - f.depth[v[ok].astype(int), u[ok].astype(int)])
        best = np.minimum(best, d)
    return best
