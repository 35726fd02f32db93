"""The engine contract shared by the real network, the network-output simulator and
everything downstream (matching, tracking, mapping, relocalization).

Conventions (all tensors stay on the engine's device):

- Pixels are (x, y) with OpenCV's convention: integer coordinates at pixel centres.
- ``pts3d`` of *both* views are expressed in **view 1's camera frame** (OpenCV optical
  frame: x right, y down, z forward), in metres for the metric checkpoint.
- Per-view maps are at *network* resolution (h, w); ``ImageTransform`` maps network pixels
  back to the original image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
import torch


@dataclass(frozen=True)
class ImageTransform:
    """How an original image became the network input: resize then crop.

    ``x_net = (x_orig + 0.5) / scale_x - 0.5 - crop_x`` (same for y), i.e. pixel centres
    are mapped through the resize, then shifted by the crop offset.

    Attributes:
        orig_size: (H, W) of the original image.
        resized_size: (H', W') after resizing (before cropping).
        crop_xy: (x0, y0) top-left corner of the crop in the resized image.
        network_size: (h, w) fed to the network (multiples of 16).
    """

    orig_size: tuple[int, int]
    resized_size: tuple[int, int]
    crop_xy: tuple[int, int]
    network_size: tuple[int, int]

    @classmethod
    def identity(cls, h: int, w: int) -> "ImageTransform":
        return cls((h, w), (h, w), (0, 0), (h, w))

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Original pixels per resized pixel, (sx, sy)."""
        return (self.orig_size[1] / self.resized_size[1], self.orig_size[0] / self.resized_size[0])

    def net_to_orig(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) network pixel coordinates -> (N, 2) float64 original-image coordinates."""
        xy = np.asarray(xy, dtype=np.float64)
        sx, sy = self.scale_xy
        out = np.empty_like(xy)
        out[..., 0] = (xy[..., 0] + self.crop_xy[0] + 0.5) * sx - 0.5
        out[..., 1] = (xy[..., 1] + self.crop_xy[1] + 0.5) * sy - 0.5
        return out

    def orig_to_net(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) original-image coordinates -> (N, 2) float64 network coordinates."""
        xy = np.asarray(xy, dtype=np.float64)
        sx, sy = self.scale_xy
        out = np.empty_like(xy)
        out[..., 0] = (xy[..., 0] + 0.5) / sx - 0.5 - self.crop_xy[0]
        out[..., 1] = (xy[..., 1] + 0.5) / sy - 0.5 - self.crop_xy[1]
        return out

    def intrinsics_to_net(self, K: np.ndarray) -> np.ndarray:
        """3x3 intrinsics of the original image -> intrinsics of the network image."""
        K = np.asarray(K, dtype=np.float64)
        sx, sy = self.scale_xy
        A = np.array([[1 / sx, 0, 0.5 / sx - 0.5 - self.crop_xy[0]],
                      [0, 1 / sy, 0.5 / sy - 0.5 - self.crop_xy[1]],
                      [0, 0, 1]])
        return A @ K

    def intrinsics_to_orig(self, K_net: np.ndarray) -> np.ndarray:
        """3x3 intrinsics of the network image -> intrinsics of the original image."""
        K_net = np.asarray(K_net, dtype=np.float64)
        sx, sy = self.scale_xy
        A = np.array([[sx, 0, (self.crop_xy[0] + 0.5) * sx - 0.5],
                      [0, sy, (self.crop_xy[1] + 0.5) * sy - 0.5],
                      [0, 0, 1]])
        return A @ K_net


@dataclass
class ViewPrediction:
    """What the network predicts for one view of a pair, at network resolution.

    Attributes:
        pts3d: (h, w, 3) float32, 3D point of each pixel in view 1's camera frame.
        conf: (h, w) float32, pointmap confidence (>= 1 for the real network).
        desc: (h, w, 24) float32, unit-norm local descriptor.
        desc_conf: (h, w) float32, descriptor confidence (> 0).
        transform: network pixels <-> original image pixels.
    """

    pts3d: torch.Tensor
    conf: torch.Tensor
    desc: torch.Tensor
    desc_conf: torch.Tensor
    transform: ImageTransform


@dataclass
class PairPrediction:
    """Prediction for an ordered pair (view1, view2); both pointmaps in view 1's frame."""

    view1: ViewPrediction
    view2: ViewPrediction


@dataclass
class EncodedView:
    """An image encoded once, reusable in any number of pairs.

    Attributes:
        features: engine-specific payload (encoder tokens for the network; ground truth
            for the simulator). Opaque to callers.
        transform: network pixels <-> original image pixels.
        frame_id: caller-chosen id (e.g. keyframe id or image stamp), may be None.
    """

    features: Any
    transform: ImageTransform
    frame_id: str | None = None


@runtime_checkable
class PairEngine(Protocol):
    """What tracking, mapping and relocalization need from MASt3R (or its simulator)."""

    def encode(self, image: np.ndarray, *, frame_id: str | None = None) -> EncodedView:
        """Encode an (H, W, 3) uint8 RGB image once; preprocessing is the engine's job."""

    def decode(self, view1: EncodedView, view2: EncodedView) -> PairPrediction:
        """Predict the ordered pair (view1, view2) from cached encodings."""

    def decode_batch(self, pairs: Sequence[tuple[EncodedView, EncodedView]]) -> list[PairPrediction]:
        """Predict many pairs, batched where shapes allow."""

    def global_descriptor(self, view: EncodedView) -> np.ndarray:
        """(D,) float32 unit-L2-norm descriptor of the whole view, for retrieval by inner
        product (training-free: pooled from encoder tokens for the network, from the
        surface the view sees for the simulator). Views of the same place score high."""
