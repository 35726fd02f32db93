"""Typed results of the tracking core: tracking state, keyframes, per-frame results.

Frames: ``T_a_b`` maps coordinates in frame ``b`` to frame ``a`` (``T_map_cam`` is the
camera pose in the map; cameras use the OpenCV optical frame). Pointmaps are at the
engine's *network* resolution (h, w); intrinsics ``K`` at the original image resolution.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import torch

from mast3r_ros.model.types import EncodedView

__all__ = ["TrackingState", "Keyframe", "FrameResult"]


class TrackingState(IntEnum):
    """Tracker state; values equal ``mast3r_ros/msg/TrackingStatus.STATE_*``."""

    INITIALIZING = 0  # no keyframe yet
    TRACKING = 1  # pose from frame-to-keyframe tracking
    LOST = 2  # too few inliers; relocalization is attempted on the next frames
    RELOCALIZED = 3  # pose recovered by relocalization against the keyframes

    @property
    def state_name(self) -> str:
        """``TrackingStatus.state_name``: "initializing" | "tracking" | "lost" | "relocalized"."""
        return self.name.lower()


@dataclass(eq=False)
class Keyframe:
    """A keyframe: what tracking, relocalization and mapping need, and nothing per frame.

    Attributes:
        id: unique id ("kf000012").
        stamp_ns: image stamp, nanoseconds.
        T_map_cam: (4, 4) float64 pose in the map (corrected by the mapper when there is one).
        K: (3, 3) float64 intrinsics at the original image resolution.
        intrinsics_estimated: True when ``K`` was estimated from the pointmaps.
        view: the cached encoding (``engine.encode`` once, decoded against every frame).
        image: (H, W, 3) uint8 RGB, or None once dropped for a far keyframe (bounded memory).
        colors: (h, w, 3) uint8 RGB at network resolution (for point clouds; always kept).
        pts3d: (h, w, 3) float32 tensor on the engine's device: the fused pointmap in this
            keyframe's own camera frame, metres (confidence-weighted running mean).
        conf: (h, w) float32 tensor: mean confidence of the fused observations.
        weight: (h, w) float32 tensor: accumulated confidence (fusion weight).
        num_fused: number of pointmaps fused (every observation covers every pixel).
        median_depth: median z of the confident fused points, metres.
        frame_id: the id passed to ``engine.encode`` (simulator: ``stamp_id(stamp_ns)``).
        image_jpeg: the image as JPEG bytes once ``image`` was dropped (``rgb()`` decodes it).
    """

    id: str
    stamp_ns: int
    T_map_cam: np.ndarray
    K: np.ndarray
    intrinsics_estimated: bool
    view: EncodedView
    image: np.ndarray | None
    colors: np.ndarray
    pts3d: torch.Tensor
    conf: torch.Tensor
    weight: torch.Tensor
    num_fused: int = 1
    median_depth: float = 1.0
    frame_id: str | None = None
    image_jpeg: bytes | None = None

    def rgb(self) -> np.ndarray | None:
        """(H, W, 3) uint8 RGB: the image, or its stored JPEG decoded, or None."""
        if self.image is not None:
            return self.image
        if self.image_jpeg is None:
            return None
        import cv2

        bgr = cv2.imdecode(np.frombuffer(self.image_jpeg, np.uint8), cv2.IMREAD_COLOR)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    @property
    def K_net(self) -> np.ndarray:
        """(3, 3) intrinsics of the network-resolution pointmap."""
        return self.view.transform.intrinsics_to_net(self.K)

    def fuse(self, pts3d: torch.Tensor, conf: torch.Tensor) -> None:
        """Confidence-weighted running fusion of a new observation of this keyframe.

        Args:
            pts3d: (h, w, 3) points of this keyframe's pixels in its own camera frame.
            conf: (h, w) their confidences (> 0).
        """
        c = conf.to(self.weight.dtype).clamp_min(1e-6)
        w_new = self.weight + c
        self.pts3d = (self.pts3d * self.weight[..., None] + pts3d * c[..., None]) / w_new[..., None]
        self.weight = w_new
        self.num_fused += 1
        self.conf = self.weight / self.num_fused


@dataclass
class FrameResult:
    """What ``SlamSystem.process`` returns for one frame.

    Attributes:
        stamp_ns: image stamp, nanoseconds.
        state: ``TrackingState`` after this frame.
        T_map_cam: (4, 4) float64 camera pose in the map, or None (LOST: no pose).
        keyframe_id: keyframe the frame was tracked (or relocalized) against ("" if none).
        num_matches: matches frame <-> keyframe. num_inliers: those consistent with the pose.
        inlier_ratio: num_inliers / num_matches (0 without matches).
        confidence: 0..1 summary of the pose quality.
        new_keyframe: the keyframe created from this frame, or None.
        K: (3, 3) intrinsics used (original resolution), or None before they are known.
        intrinsics_estimated: True when ``K`` came from the pointmaps.
        timings_ms: encode, decode, match, pose, fuse, reloc, total (milliseconds).
        matcher: "local", "frm" or "" (which matcher produced the matches).
        map_updated: the mapper corrected keyframe poses since the previous frame (past
            frames' poses, ``SlamSystem.trajectory()``, moved with them).
    """

    stamp_ns: int
    state: TrackingState
    T_map_cam: np.ndarray | None
    keyframe_id: str = ""
    num_matches: int = 0
    num_inliers: int = 0
    inlier_ratio: float = 0.0
    confidence: float = 0.0
    new_keyframe: Keyframe | None = None
    K: np.ndarray | None = None
    intrinsics_estimated: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)
    matcher: str = ""
    map_updated: bool = False

    @property
    def state_name(self) -> str:
        return self.state.state_name
