"""Point clouds from an alignment problem: confident pixels, voxel-averaged, bounded.

Everything is vectorised on the problem's device (no per-point Python).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .alignment import AlignmentProblem

__all__ = ["voxel_downsample", "build_point_cloud"]


def voxel_downsample(xyz: torch.Tensor, rgb: torch.Tensor, voxel_size: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean point and colour per occupied voxel.

    Args:
        xyz: (N, 3) float points; rgb: (N, 3) float colours; voxel_size: metres (> 0).

    Returns:
        (M, 3) points and (M, 3) colours, M <= N.
    """
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be > 0 metres, got {voxel_size}")
    if len(xyz) == 0:
        return xyz, rgb
    keys = torch.floor(xyz / voxel_size).to(torch.int64)
    _, inv, counts = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
    n = len(counts)
    sx = torch.zeros(n, 3, dtype=xyz.dtype, device=xyz.device).index_add_(0, inv, xyz)
    sc = torch.zeros(n, 3, dtype=rgb.dtype, device=rgb.device).index_add_(0, inv, rgb)
    c = counts.to(xyz.dtype)[:, None]
    return sx / c, sc / c.to(rgb.dtype)


def _colours(image: np.ndarray, view, idx: torch.Tensor) -> torch.Tensor:
    """(N, 3) float colours of network pixels ``idx`` (nearest pixel of the original image)."""
    ix = idx.cpu().numpy()
    xy = np.stack([ix % view.w, ix // view.w], 1)
    uv = np.rint(view.transform.net_to_orig(xy)).astype(np.int64)
    H, W = image.shape[:2]
    u = np.clip(uv[:, 0], 0, W - 1)
    v = np.clip(uv[:, 1], 0, H - 1)
    return torch.as_tensor(image[v, u], device=idx.device).float()


def build_point_cloud(problem: AlignmentProblem, keys: Sequence, images: Sequence[np.ndarray], *,
                      min_conf: float, stride: int, max_points: int, voxel_size: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """World points of the views ``keys`` (images: their (H, W, 3) uint8 RGB, same order).

    Pixels on a ``stride`` grid whose fused confidence is >= ``min_conf``; voxel-averaged;
    then at most ``max_points`` (a fixed-seed random subset).

    Returns:
        xyz (N, 3) float32 (world/map frame, metres), rgb (N, 3) uint8.
    """
    if max_points < 0:
        raise ValueError(f"max_points must be >= 0, got {max_points}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    xyz, rgb = [], []
    for key, image in zip(keys, images):
        v = problem.index[key]
        X, conf, idx = problem.world_points(v, stride)
        keep = conf >= min_conf
        xyz.append(X[keep].float())
        rgb.append(_colours(image, problem.views[v], idx[keep]))
    if not xyz:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
    P, C = voxel_downsample(torch.cat(xyz), torch.cat(rgb), voxel_size)
    if len(P) > max_points:
        g = torch.Generator().manual_seed(0)
        sel = torch.randperm(len(P), generator=g)[:max_points].to(P.device)
        P, C = P[sel], C[sel]
    return (P.cpu().numpy().astype(np.float32),
            C.round().clamp(0, 255).to(torch.uint8).cpu().numpy())
