"""Lens distortion of ``sensor_msgs/CameraInfo`` models, removed with OpenCV (ROS-free).

MASt3R and the pose solvers assume a pinhole camera. A camera with distortion is either
undistorted here (maps built once per camera and reused) or refused with a message; it is
never silently treated as a pinhole.

Models (``CameraInfo.distortion_model``) and their coefficients ``D``:

- ``plumb_bob``: (k1, k2, t1, t2, k3), OpenCV's radial-tangential model (4, 5 or 8 values).
- ``rational_polynomial``: (k1, k2, t1, t2, k3, k4, k5, k6) (8, 12 or 14 values).
- ``equidistant``: (k1, k2, k3, k4), OpenCV's fisheye model.

The undistorted image keeps the intrinsics ``K`` (pixels outside the source are black).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import cv2
import numpy as np

from mast3r_ros.errors import InputError

from .intrinsics import check_K

__all__ = ["DistortionModel", "check_distortion", "is_distorted", "undistort_points",
           "undistortion_maps", "undistort_image", "Undistorter", "MAX_DISTORTION_COEFF"]

MAX_DISTORTION_COEFF = 1e4  # |coefficient|; real lenses stay far below


class DistortionModel(Enum):
    PLUMB_BOB = "plumb_bob"
    RATIONAL_POLYNOMIAL = "rational_polynomial"
    EQUIDISTANT = "equidistant"


_COUNTS = {DistortionModel.PLUMB_BOB: (4, 5, 8), DistortionModel.RATIONAL_POLYNOMIAL: (8, 12, 14),
           DistortionModel.EQUIDISTANT: (4,)}


def is_distorted(D) -> bool:
    """True when any coefficient is non-zero (an empty or all-zero D is a pinhole)."""
    D = np.asarray(D, dtype=np.float64).reshape(-1)
    return bool(D.size) and bool(np.any(D != 0))


def check_distortion(model: str | DistortionModel, D, name: str = "distortion") -> tuple[DistortionModel, np.ndarray]:
    """Validate a model name and its coefficients; returns (model, float64 (n,) D).

    Raises:
        InputError: unknown model (with a non-zero D), a wrong coefficient count, or
            non-finite / absurd coefficients.
    """
    try:
        D = np.asarray(D, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"{name}: coefficients must be numbers, got {D!r}") from None
    try:
        m = model if isinstance(model, DistortionModel) else DistortionModel(str(model).strip())
    except ValueError:
        raise InputError(f"{name}: distortion model {model!r} is not supported with non-zero "
                         f"coefficients; expected one of {[x.value for x in DistortionModel]} "
                         "(or rectify the images first)") from None
    if D.size not in _COUNTS[m]:
        raise InputError(f"{name}: {m.value} takes {' or '.join(map(str, _COUNTS[m]))} coefficients, "
                         f"got {D.size}: {D.tolist()}")
    if not np.all(np.isfinite(D)) or np.abs(D).max() > MAX_DISTORTION_COEFF:
        raise InputError(f"{name}: coefficients must be finite with |d| <= {MAX_DISTORTION_COEFF:g}, "
                         f"got {D.tolist()}")
    return m, D


def undistort_points(pts: np.ndarray, K: np.ndarray, model: str | DistortionModel, D) -> np.ndarray:
    """(N, 2) distorted pixels -> (N, 2) pixels of the pinhole camera with the same ``K``."""
    K = check_K(K)
    m, D = check_distortion(model, D)
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 1, 2)
    if m is DistortionModel.EQUIDISTANT:
        out = cv2.fisheye.undistortPoints(pts, K, D, P=K)
    else:
        out = cv2.undistortPoints(pts, K, D, P=K)
    return out.reshape(-1, 2)


def undistortion_maps(K: np.ndarray, model: str | DistortionModel, D, width: int,
                      height: int) -> tuple[np.ndarray, np.ndarray]:
    """(map_x, map_y), each (H, W) float32: where each undistorted pixel samples the
    distorted image (for ``cv2.remap``)."""
    K = check_K(K)
    m, D = check_distortion(model, D)
    size = (int(width), int(height))
    if m is DistortionModel.EQUIDISTANT:
        return cv2.fisheye.initUndistortRectifyMap(K, D, np.eye(3), K, size, cv2.CV_32FC1)
    return cv2.initUndistortRectifyMap(K, D, None, K, size, cv2.CV_32FC1)


def undistort_image(image: np.ndarray, K: np.ndarray, model: str | DistortionModel, D) -> np.ndarray:
    """The image a pinhole camera with intrinsics ``K`` would have taken (bilinear)."""
    h, w = image.shape[:2]
    mx, my = undistortion_maps(K, model, D, w, h)
    return cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


@dataclass
class Undistorter:
    """Undistortion for one camera; maps are built on first use per image size and reused."""

    K: np.ndarray
    model: DistortionModel
    D: np.ndarray
    _maps: dict = field(default_factory=dict, repr=False)

    @classmethod
    def create(cls, K, model, D, name: str = "camera_info") -> "Undistorter | None":
        """None when ``D`` is all zero (a pinhole camera); else a validated undistorter."""
        K = check_K(K, f"{name}.k")
        if not is_distorted(D):
            return None
        m, D = check_distortion(model, D, name)
        return cls(K, m, D)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        if (h, w) not in self._maps:
            self._maps[(h, w)] = undistortion_maps(self.K, self.model, self.D, w, h)
        mx, my = self._maps[(h, w)]
        return cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    def points(self, pts: np.ndarray) -> np.ndarray:
        return undistort_points(pts, self.K, self.model, self.D)
