"""Local matching of a pair by its own pointmap: predict, then refine in a small window.

For an ordered pair, the network expresses the pointmap of one image ("source") in the
camera frame of the other ("destination"). Projecting a source pixel's predicted 3D point
with the destination's intrinsics gives where its match must be; the descriptors then
only need to be compared in a small window (``(2 radius + 1)^2`` pixels) around that
prediction instead of against the whole destination image (fast reciprocal matching, FRM).

Per source pixel on a regular grid (``stride``): gather the window's descriptors with one
indexed read (vectorised torch on the descriptors' device), take the best dot product,
keep it when (a) it is inside the window (not on its rim: the prediction was good enough),
(b) it passes a minimum score and confidences, and (c) it is mutual: the matched
destination descriptor's best source pixel, in the same-size window around the seed, is
the seed itself. The destination position is refined to sub-pixel by a parabola through
the scores of the peak's neighbours, in x and y.

Cost: ``S (2r+1)^2 D`` multiply-adds for S seeds (7x7 window, 3072 seeds at 512x384:
3.6 M) against ``S h w D`` for one NN round of FRM (600 M) — see ``benchmarks/bench_tracking.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from mast3r_ros.config import config_from_dict

__all__ = ["LocalMatchConfig", "LocalMatches", "local_match", "grid_indices", "sample_bilinear"]


@dataclass(frozen=True)
class LocalMatchConfig:
    """Settings of ``local_match``."""

    stride: int = 8  # grid step of the source seeds, network pixels
    radius: int = 3  # search window half-size: (2 radius + 1)^2 candidates (3 -> 7x7)
    mutual: bool = True  # keep only matches whose reverse window search returns the seed
    subpixel: bool = True  # parabola refinement of the destination position
    min_score: float = 0.5  # minimum descriptor dot product (descriptors are unit-norm)
    min_desc_conf: float = 0.0  # minimum descriptor confidence, both pixels
    min_conf: float = 0.0  # minimum pointmap confidence, both pixels
    border: int = 3  # destination predictions closer than this to the edge are dropped

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if self.radius < 1:
            raise ValueError(f"radius must be >= 1 (a window of at least 3x3), got {self.radius}")
        if self.border < 0:
            raise ValueError(f"border must be >= 0, got {self.border}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LocalMatchConfig":
        """Build from a dict, rejecting unknown keys."""
        return config_from_dict(cls, data)


@dataclass
class LocalMatches:
    """Matches between a source and a destination map (network pixels, on the device).

    Attributes:
        src_xy: (N, 2) float32 source pixels (x, y) (integer grid positions).
        dst_xy: (N, 2) float32 destination pixels (x, y), sub-pixel when refined.
        src_idx: (N,) int64 linear source index ``x + w_src * y``.
        score: (N,) float32 descriptor dot product of the match.
        num_seeds: grid seeds tried (before any filter).
    """

    src_xy: torch.Tensor
    dst_xy: torch.Tensor
    src_idx: torch.Tensor
    score: torch.Tensor
    num_seeds: int

    def __len__(self) -> int:
        return int(self.src_idx.shape[0])


def grid_indices(h: int, w: int, stride: int, margin: int, device: torch.device) -> torch.Tensor:
    """(S,) linear indices ``x + w y`` of a grid every ``stride`` pixels, ``margin`` from the edges."""
    start = max(stride // 2, margin)
    ys = torch.arange(start, h - margin, stride, device=device)
    xs = torch.arange(start, w - margin, stride, device=device)
    return (ys[:, None] * w + xs[None, :]).reshape(-1)


def sample_bilinear(maps: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of an (h, w, C) map at (N, 2) float pixel positions -> (N, C).

    Positions are clamped to the map; integer positions return the exact pixel values.
    """
    h, w = maps.shape[:2]
    x = xy[:, 0].clamp(0, w - 1)
    y = xy[:, 1].clamp(0, h - 1)
    x0 = x.floor().clamp(max=w - 2).long() if w > 1 else x.floor().long()
    y0 = y.floor().clamp(max=h - 2).long() if h > 1 else y.floor().long()
    fx = (x - x0).unsqueeze(1)
    fy = (y - y0).unsqueeze(1)
    flat = maps.reshape(h * w, -1)
    x1 = (x0 + 1).clamp(max=w - 1)
    y1 = (y0 + 1).clamp(max=h - 1)
    a, b = flat[y0 * w + x0], flat[y0 * w + x1]
    c, d = flat[y1 * w + x0], flat[y1 * w + x1]
    return (1 - fy) * ((1 - fx) * a + fx * b) + fy * ((1 - fx) * c + fx * d)


def _check(name: str, t: torch.Tensor, shape: tuple) -> None:
    if t.ndim != len(shape) or any(s is not None and t.shape[i] != s for i, s in enumerate(shape)):
        raise ValueError(f"{name} must have shape {tuple('?' if s is None else s for s in shape)}, "
                         f"got {tuple(t.shape)}")


def local_match(
    desc_src: torch.Tensor,
    desc_dst: torch.Tensor,
    pts3d_src_in_dst: torch.Tensor,
    K_dst: np.ndarray,
    config: LocalMatchConfig = LocalMatchConfig(),
    *,
    desc_conf_src: torch.Tensor | None = None,
    desc_conf_dst: torch.Tensor | None = None,
    conf_src: torch.Tensor | None = None,
    conf_dst: torch.Tensor | None = None,
) -> LocalMatches:
    """Match grid pixels of the source map into the destination map, guided by the pointmap.

    Args:
        desc_src: (hs, ws, D) unit descriptors of the source image (network resolution).
        desc_dst: (hd, wd, D) unit descriptors of the destination image.
        pts3d_src_in_dst: (hs, ws, 3) the source pixels' 3D points in the destination's
            camera frame (e.g. ``pred.view2.pts3d`` when the destination is view 1).
        K_dst: (3, 3) intrinsics of the destination's network-resolution map.
        config: window size, grid, filters.
        desc_conf_src, desc_conf_dst, conf_src, conf_dst: optional (h, w) confidence maps
            for ``min_desc_conf`` / ``min_conf``.

    Returns:
        ``LocalMatches`` on the descriptors' device.

    Raises:
        ValueError: shapes disagree, or a confidence threshold is set without its maps.
    """
    hs, ws, D = desc_src.shape
    _check("desc_dst", desc_dst, (None, None, D))
    _check("pts3d_src_in_dst", pts3d_src_in_dst, (hs, ws, 3))
    K = np.asarray(K_dst, dtype=np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)):
        raise ValueError(f"K_dst must be a finite (3, 3) matrix, got {K.shape}")
    hd, wd = desc_dst.shape[:2]
    dev = desc_src.device
    r, n = config.radius, 2 * config.radius + 1
    src_idx = grid_indices(hs, ws, config.stride, r, dev)  # (S,)
    S = int(src_idx.shape[0])
    P = pts3d_src_in_dst.reshape(-1, 3)[src_idx].to(torch.float32)  # (S, 3)
    z = P[:, 2]
    zs = torch.where(z > 1e-6, z, torch.ones_like(z))
    Kt = torch.as_tensor(K, dtype=torch.float32, device=dev)
    u = Kt[0, 0] * P[:, 0] / zs + Kt[0, 1] * P[:, 1] / zs + Kt[0, 2]
    v = Kt[1, 1] * P[:, 1] / zs + Kt[1, 2]
    pu, pv = torch.round(u), torch.round(v)
    m = float(max(config.border, r))
    valid = (z > 1e-6) & (pu >= m) & (pu <= wd - 1 - m) & (pv >= m) & (pv <= hd - 1 - m)
    valid &= torch.isfinite(u) & torch.isfinite(v)
    pu = pu.clamp(0, wd - 1).long()
    pv = pv.clamp(0, hd - 1).long()
    off = torch.arange(-r, r + 1, device=dev)
    dy, dx = torch.meshgrid(off, off, indexing="ij")
    dy, dx = dy.reshape(-1), dx.reshape(-1)  # (M,), row-major over the window
    cand = (pv[:, None] + dy).clamp(0, hd - 1) * wd + (pu[:, None] + dx).clamp(0, wd - 1)  # (S, M)
    flat_dst = desc_dst.reshape(-1, D)
    flat_src = desc_src.reshape(-1, D)
    d_src = flat_src[src_idx]  # (S, D)
    scores = torch.bmm(flat_dst[cand], d_src[:, :, None])[..., 0]  # (S, M)
    best_score, best = scores.max(dim=1)
    by, bx = best // n, best % n
    valid &= (bx > 0) & (bx < n - 1) & (by > 0) & (by < n - 1)  # peak inside the window
    valid &= best_score >= config.min_score
    dst_idx = cand.gather(1, best[:, None])[:, 0]  # (S,)
    if config.mutual:
        sy, sx = src_idx // ws, src_idx % ws
        cand_s = (sy[:, None] + dy).clamp(0, hs - 1) * ws + (sx[:, None] + dx).clamp(0, ws - 1)
        back = torch.bmm(flat_src[cand_s], flat_dst[dst_idx][:, :, None])[..., 0]  # (S, M)
        valid &= back.argmax(dim=1) == (n * n) // 2
    for name, thr, ms, md in (("desc_conf", config.min_desc_conf, desc_conf_src, desc_conf_dst),
                              ("conf", config.min_conf, conf_src, conf_dst)):
        if thr <= 0:
            continue
        if ms is None or md is None:
            raise ValueError(f"min_{name}={thr} needs both {name} maps")
        valid &= (ms.reshape(-1)[src_idx] >= thr) & (md.reshape(-1)[dst_idx] >= thr)
    dst_x = (dst_idx % wd).to(torch.float32)
    dst_y = (dst_idx // wd).to(torch.float32)
    if config.subpixel:
        sc = scores.reshape(S, n, n)
        ar = torch.arange(S, device=dev)
        byc, bxc = by.clamp(1, n - 2), bx.clamp(1, n - 2)
        c0 = sc[ar, byc, bxc]

        def vertex(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            den = a - 2 * c0 + b
            o = torch.where(den < -1e-9, 0.5 * (a - b) / den.clamp(max=-1e-9), torch.zeros_like(den))
            return o.clamp(-0.5, 0.5)

        dst_x = dst_x + vertex(sc[ar, byc, bxc - 1], sc[ar, byc, bxc + 1])
        dst_y = dst_y + vertex(sc[ar, byc - 1, bxc], sc[ar, byc + 1, bxc])
    keep = valid.nonzero()[:, 0]
    src_keep = src_idx[keep]
    src_xy = torch.stack([(src_keep % ws), (src_keep // ws)], 1).to(torch.float32)
    dst_xy = torch.stack([dst_x[keep], dst_y[keep]], 1)
    return LocalMatches(src_xy, dst_xy, src_keep, best_score[keep], S)
