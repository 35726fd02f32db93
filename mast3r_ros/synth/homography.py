"""A textured plane seen by two images related by a known homography: descriptor maps with
known correspondences (``homography_pair``) and a stand-in ``PairEngine`` over the same world
(``HomographyDescriptorEngine``). For benchmarks and tests of matching only.

Not a model of the network: a smooth random field on a plane, viewed through a known
homography, so that the same plane point gets (almost) the same descriptor in both images.
The 3D stand-in engine (pointmaps, confidences, descriptors of rendered scenes) is
``mast3r_ros.synth.simulator.NetworkOutputSimulator``; see ``mast3r_ros.synth``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from mast3r_ros.model.preprocess import compute_transform
from mast3r_ros.model.types import EncodedView, PairPrediction, ViewPrediction
from mast3r_ros.synth.descriptors import FourierDescriptorField

__all__ = ["SyntheticPair", "homography_pair", "HomographyDescriptorEngine", "coordinate_image",
           "decode_pixel"]


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


# --- a stand-in PairEngine over the plane (moved here from test/homography_engine.py) ---------
#
# To let ``encode`` know where an arbitrary crop comes from, the images carry their own pixel
# coordinates: each pixel's RGB packs (image id: 2 bits, x: 11 bits, y: 11 bits). The engine
# decodes the crop's origin from pixel (0, 0), resizes *geometrically* with the reference
# ``compute_transform`` and evaluates the field at the exact (sub-pixel) full-resolution
# position of every network pixel centre.


def coordinate_image(h: int, w: int, image_id: int) -> np.ndarray:
    """(h, w, 3) uint8 image whose pixels encode (image_id, x, y); h, w <= 2048."""
    if h > 2048 or w > 2048 or not 0 <= image_id < 4:
        raise ValueError(f"coordinate_image supports up to 2048x2048 and ids 0..3, got "
                         f"{h}x{w}, id {image_id}")
    ys, xs = np.mgrid[0:h, 0:w]
    code = (image_id << 22) | (xs << 11) | ys
    return np.stack([(code >> 16) & 255, (code >> 8) & 255, code & 255], -1).astype(np.uint8)


def decode_pixel(rgb: np.ndarray) -> tuple[int, int, int]:
    """(image_id, x, y) packed in one pixel of a ``coordinate_image``."""
    code = (int(rgb[0]) << 16) | (int(rgb[1]) << 8) | int(rgb[2])
    return code >> 22, (code >> 11) & 2047, code & 2047


class HomographyDescriptorEngine:
    """``PairEngine`` whose descriptors are exact functions of the plane point, for testing
    matching logic (coarse-to-fine, FRM) on any crop or resolution; never a production path.

    ``pts3d`` is the plane coordinate with z = 1 and every confidence is 1: only the
    descriptors carry meaning.

    Args:
        H_21: (3, 3) homography image-1 pixel -> image-2 pixel (image ids 0 and 1).
        size: long side of the simulated network input.
        seed: descriptor field seed.
    """

    def __init__(self, H_21: np.ndarray, size: int = 256, seed: int = 0):
        self.H_plane_from = {0: np.eye(3), 1: np.linalg.inv(H_21)}
        self.size = size
        self.field = FourierDescriptorField(seed, 24.0, 2000.0, in_dim=2)
        self.n_encode = 0
        self.n_decode_batch = 0

    def encode(self, image: np.ndarray, *, frame_id: str | None = None) -> EncodedView:
        self.n_encode += 1
        h, w = image.shape[:2]
        image_id, x0, y0 = decode_pixel(image[0, 0])
        tf = compute_transform(h, w, self.size)
        hn, wn = tf.network_size
        ys, xs = np.mgrid[0:hn, 0:wn].astype(np.float64)
        xy = tf.net_to_orig(np.stack([xs, ys], -1).reshape(-1, 2)) + [x0, y0]  # full-res coords
        p = np.concatenate([xy, np.ones((len(xy), 1))], 1) @ self.H_plane_from[image_id].T
        plane = (p[:, :2] / p[:, 2:]).reshape(hn, wn, 2)
        return EncodedView(plane, tf, frame_id)

    def _view(self, v: EncodedView) -> ViewPrediction:
        plane = v.features
        hn, wn = plane.shape[:2]
        desc = torch.from_numpy(self.field(plane))
        pts = torch.from_numpy(np.concatenate([plane, np.ones((hn, wn, 1))], -1).astype(np.float32))
        ones = torch.ones(hn, wn)
        return ViewPrediction(pts, ones, desc, ones.clone(), v.transform)

    def decode(self, view1: EncodedView, view2: EncodedView) -> PairPrediction:
        return PairPrediction(self._view(view1), self._view(view2))

    def global_descriptor(self, view: EncodedView) -> np.ndarray:
        """(D,) float32, unit L2 norm: the descriptor field pooled over the plane the view sees."""
        d = self.field(view.features)  # (h, w, D)
        g = d.reshape(-1, d.shape[-1]).mean(axis=0).astype(np.float32)
        return g / max(float(np.linalg.norm(g)), 1e-12)

    def decode_batch(self, pairs: Sequence[tuple[EncodedView, EncodedView]]) -> list[PairPrediction]:
        self.n_decode_batch += 1
        return [self.decode(a, b) for a, b in pairs]
