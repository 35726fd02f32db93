"""Point clouds of keyframes' fused pointmaps: confidence filter, voxel subsampling, PLY."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .types import Keyframe

__all__ = ["keyframe_cloud", "voxel_downsample", "write_ply"]


def voxel_downsample(xyz: np.ndarray, rgb: np.ndarray, voxel_size: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Mean point and colour per occupied voxel (vectorised). (N, 3), (N, 3) -> (M, 3), (M, 3)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    if voxel_size <= 0:
        raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
    if len(xyz) == 0:
        return xyz.astype(np.float32), np.zeros((0, 3), np.uint8)
    keys = np.floor(xyz / voxel_size).astype(np.int64)
    _, inv, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    m = len(counts)
    out = np.zeros((m, 3))
    col = np.zeros((m, 3))
    for d in range(3):
        out[:, d] = np.bincount(inv, weights=xyz[:, d], minlength=m)
        col[:, d] = np.bincount(inv, weights=rgb[:, d].astype(np.float64), minlength=m)
    out /= counts[:, None]
    col /= counts[:, None]
    return out.astype(np.float32), np.clip(np.rint(col), 0, 255).astype(np.uint8)


def keyframe_cloud(keyframes: Sequence[Keyframe], *, min_conf: float = 3.0,
                   voxel_size: float = 0.02, max_points: int = 500_000
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Points of the keyframes' fused pointmaps in the map frame.

    Args:
        min_conf: keep pixels whose mean fused confidence is at least this.
        voxel_size: voxel edge, metres (one averaged point per voxel).
        max_points: bound on the output (a random, seeded subset beyond it).

    Returns:
        xyz (M, 3) float32 in the map frame, rgb (M, 3) uint8.
    """
    xyz_all, rgb_all = [], []
    for kf in keyframes:
        keep = (kf.conf >= min_conf).reshape(-1).cpu().numpy()
        pts = kf.pts3d.reshape(-1, 3).cpu().numpy()[keep].astype(np.float64)
        T = kf.T_map_cam
        xyz_all.append(pts @ T[:3, :3].T + T[:3, 3])
        rgb_all.append(kf.colors.reshape(-1, 3)[keep])
    if not xyz_all:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
    xyz, rgb = voxel_downsample(np.concatenate(xyz_all), np.concatenate(rgb_all), voxel_size)
    if len(xyz) > max_points:
        sel = np.random.default_rng(0).choice(len(xyz), max_points, replace=False)
        xyz, rgb = xyz[sel], rgb[sel]
    return xyz, rgb


def write_ply(path: str | Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Binary little-endian PLY with float xyz and uchar rgb."""
    xyz = np.asarray(xyz, dtype=np.float32)
    rgb = np.asarray(rgb, dtype=np.uint8)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or rgb.shape != xyz.shape:
        raise ValueError(f"xyz and rgb must both be (N, 3), got {xyz.shape} and {rgb.shape}")
    v = np.empty(len(xyz), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                  ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    v["x"], v["y"], v["z"] = xyz.T
    v["red"], v["green"], v["blue"] = rgb.T
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"element vertex {len(v)}\n"
              "property float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(v.tobytes())
