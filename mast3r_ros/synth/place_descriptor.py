"""A global ("place") descriptor for the network-output simulator, built from what a view sees.

FOR TESTS AND EVALUATION ONLY (used by ``NetworkOutputSimulator.global_descriptor``).

Not a model of any network: a kernel mean embedding of the world-space surface points the
view sees. Each point ``p`` maps to random Fourier features ``cos(W p + b)`` with ``W ~
N(0, I / sigma^2)`` (an approximation of the Gaussian kernel of width ``sigma`` metres);
their mean over the visible points, concatenated with the mean of the simulator's own
surface descriptors (whose long wavelengths also say where the surface is), is
L2-normalised. The inner product of two such vectors approximates the average kernel
similarity of the two visible surfaces: views of the same place score high, views of
other parts of the scene low, so retrieval by inner product is really exercised.
"""
from __future__ import annotations

import numpy as np

PLACE_DIM = 256          # random Fourier features of the position
PLACE_SIGMA_M = 0.75     # kernel width, metres
DESC_WEIGHT = 0.5        # weight of the surface-descriptor mean in the concatenation


class PlaceDescriptor:
    """Callable: (h, w, 3) world points + (h, w, D) surface descriptors -> (PLACE_DIM + D,)."""

    def __init__(self, seed: int, dim: int = PLACE_DIM, sigma_m: float = PLACE_SIGMA_M,
                 max_points: int = 2000) -> None:
        if dim < 1 or not sigma_m > 0 or max_points < 1:
            raise ValueError(f"need dim >= 1, sigma_m > 0, max_points >= 1; got {dim}, {sigma_m}, "
                             f"{max_points}")
        rng = np.random.default_rng([int(seed), 0x91ACE])
        self.W = rng.normal(0.0, 1.0 / sigma_m, size=(dim, 3))  # (P, 3) rad / metre
        self.b = rng.uniform(0.0, 2 * np.pi, dim)               # (P,)
        self.max_points = max_points

    def __call__(self, world: np.ndarray, desc: np.ndarray) -> np.ndarray:
        h, w = np.shape(world)[:2]
        s = max(1, int(round(np.sqrt(h * w / self.max_points))))  # a regular subsample
        pts = np.asarray(world, dtype=np.float64)[::s, ::s].reshape(-1, 3)   # (n, 3)
        d = np.asarray(desc, dtype=np.float64)[::s, ::s].reshape(len(pts), -1)  # (n, D)
        ok = np.all(np.isfinite(pts), axis=1)
        if not ok.any():
            out = np.zeros(len(self.b) + d.shape[1], np.float32)
            out[0] = 1.0
            return out
        rff = np.cos(pts[ok] @ self.W.T + self.b).mean(axis=0)   # (P,)
        rff /= max(np.linalg.norm(rff), 1e-12)
        dm = d[ok].mean(axis=0)
        dm /= max(np.linalg.norm(dm), 1e-12)
        g = np.concatenate([rff, DESC_WEIGHT * dm])
        return (g / np.linalg.norm(g)).astype(np.float32)
