"""Synthetic descriptor maps with known correspondences, for benchmarks and tests only.

Not a model of the network: a smooth random field on a plane, viewed through a known
homography, so that the same plane point gets (almost) the same descriptor in both images.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mast3r_ros.synth.descriptors import FourierDescriptorField

__all__ = ["SyntheticPair", "homography_pair"]


@dataclass
class SyntheticPair:
    """Descriptor maps of two views of a plane.

    Attributes:
        desc1: (H, W, D) float32 tensor; desc2: (H, W, D) float32 tensor.
        H_21: (3, 3) homography mapping image-1 pixels to image-2 pixels.
    """

    desc1: torch.Tensor
    desc2: torch.Tensor
    H_21: np.ndarray


def _pixel_grid(h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([xs, ys], -1)  # (H, W, 2)


def homography_pair(h: int = 384, w: int = 512, *, noise: float = 0.0, seed: int = 0,
                    dim: int = 24) -> SyntheticPair:
    """Two descriptor maps of a textured plane related by a random mild homography.

    Args:
        h, w: map size. noise: std of Gaussian noise added to descriptors before
        re-normalisation. seed: RNG seed. dim: descriptor size.
    """
    rng = np.random.default_rng(seed)
    field = FourierDescriptorField(seed, 6.0, 600.0, in_dim=2, dim=dim)  # 6 px: precise to ~0.5 px
    a = rng.uniform(-0.15, 0.15)
    s = rng.uniform(0.9, 1.1)
    c, si = np.cos(a), np.sin(a)
    H_21 = np.array([[s * c, -s * si, rng.uniform(-0.1, 0.1) * w],
                     [s * si, s * c, rng.uniform(-0.1, 0.1) * h],
                     [rng.uniform(-1e-4, 1e-4), rng.uniform(-1e-4, 1e-4), 1.0]])
    ctr = np.array([[1, 0, w / 2], [0, 1, h / 2], [0, 0, 1.0]])
    H_21 = ctr @ H_21 @ np.linalg.inv(ctr)  # rotate/scale about the image centre
    g = _pixel_grid(h, w)
    d1 = field(g)
    gh = np.concatenate([g, np.ones((h, w, 1))], -1) @ np.linalg.inv(H_21).T
    d2 = field(gh[..., :2] / gh[..., 2:])  # image-2 pixel -> plane (= image-1) coordinate
    if noise > 0:
        for d in (d1, d2):
            d += noise * rng.standard_normal(d.shape).astype(np.float32)
            d /= np.linalg.norm(d, axis=-1, keepdims=True)
    return SyntheticPair(torch.from_numpy(d1), torch.from_numpy(d2), H_21)
