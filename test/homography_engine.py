"""``HomographyDescriptorEngine``: a ground-truth simulator of MASt3R *descriptor* outputs for
testing matching logic (coarse-to-fine, FRM) — never a production path.

Scene: a textured plane seen by two images related by a known homography ``H_21`` (image-1
pixel -> image-2 pixel). The "texture" is a smooth random descriptor field of the plane
coordinate (= image-1 pixel coordinate), so the same surface point gets the same descriptor in
any view, crop or resolution.

To let ``encode`` know where an arbitrary crop comes from, the test images carry their own
pixel coordinates: each pixel's RGB packs (image id: 2 bits, x: 11 bits, y: 11 bits). The
engine decodes the crop's origin from pixel (0, 0), resizes *geometrically* with the reference
``compute_transform`` and evaluates the field at the exact (sub-pixel) full-resolution position
of every network pixel centre.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from mast3r_ros.synth.descriptors import FourierDescriptorField
from mast3r_ros.model.preprocess import compute_transform
from mast3r_ros.model.types import EncodedView, PairPrediction, ViewPrediction


def coordinate_image(h: int, w: int, image_id: int) -> np.ndarray:
    """(h, w, 3) uint8 image whose pixels encode (image_id, x, y); h, w <= 2048."""
    if h > 2048 or w > 2048 or not 0 <= image_id < 4:
        raise ValueError("coordinate_image supports up to 2048x2048 and ids 0..3")
    ys, xs = np.mgrid[0:h, 0:w]
    code = (image_id << 22) | (xs << 11) | ys
    return np.stack([(code >> 16) & 255, (code >> 8) & 255, code & 255], -1).astype(np.uint8)


def decode_pixel(rgb: np.ndarray) -> tuple[int, int, int]:
    code = (int(rgb[0]) << 16) | (int(rgb[1]) << 8) | int(rgb[2])
    return code >> 22, (code >> 11) & 2047, code & 2047


class HomographyDescriptorEngine:
    """``PairEngine`` whose descriptors are exact functions of the plane point (see module).

    Args:
        H_21: (3, 3) homography image-1 pixel -> image-2 pixel (image ids 0 and 1).
        size: long side of the simulated network input.
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

    def decode_batch(self, pairs: Sequence[tuple[EncodedView, EncodedView]]) -> list[PairPrediction]:
        self.n_decode_batch += 1
        return [self.decode(a, b) for a, b in pairs]

    def global_descriptor(self, view: EncodedView) -> np.ndarray:
        """Mean descriptor of the plane points the view sees, unit norm (PairEngine contract)."""
        g = self.field(view.features).reshape(-1, 24).mean(axis=0)
        return (g / max(np.linalg.norm(g), 1e-12)).astype(np.float32)
