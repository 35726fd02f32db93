"""Point clouds from an alignment problem: confident pixels, voxel-averaged, bounded.

Everything is vectorised on the problem's device (no per-point Python).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .alignment import AlignmentProblem

__all__ = ["voxel_downsample", "network_colors", "build_point_cloud"]


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


def network_colors(image: np.ndarray, transform) -> np.ndarray:
    """(h, w, 3) uint8 colours of the network pixels of an (H, W, 3) uint8 image."""
    from mast3r_ros.model.preprocess import resize_and_crop

    return np.ascontiguousarray(resize_and_crop(np.asarray(image, dtype=np.uint8), transform))


def build_point_cloud(problem: AlignmentProblem, keys: Sequence, colors: Sequence[np.ndarray], *,
                      min_conf: float, stride: int, max_points: int, voxel_size: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """World points of the views ``keys`` (colors: their (h, w, 3) uint8 RGB at network
    resolution, ``network_colors``, same order).

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
    for key, col in zip(keys, colors):
        v = problem.index[key]
        X, conf, idx = problem.world_points(v, stride)
        keep = conf >= min_conf
        xyz.append(X[keep].float())
        flat = torch.as_tensor(np.array(col, copy=True).reshape(-1, 3), device=idx.device)  # copy: arrays loaded from a map are read-only
        rgb.append(flat[idx[keep]].float())
    if not xyz:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
    P, C = voxel_downsample(torch.cat(xyz), torch.cat(rgb), voxel_size)
    if len(P) > max_points:
        g = torch.Generator().manual_seed(0)
        sel = torch.randperm(len(P), generator=g)[:max_points].to(P.device)
        P, C = P[sel], C[sel]
    return (P.cpu().numpy().astype(np.float32),
            C.round().clamp(0, 255).to(torch.uint8).cpu().numpy())
