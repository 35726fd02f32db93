"""Loop closure: retrieval over keyframe global descriptors proposes, geometry verifies.

Proposal: cosine similarity of unit global descriptors (``engine.global_descriptor(view)``
when the engine has it; otherwise ``image_global_descriptor``, a small normalised grey
thumbnail: a training-free stand-in that recognises a place seen from nearly the same
viewpoint). Recent keyframes are not candidates (they are covisible anyway).

Verification: decode (candidate, query), fast reciprocal matching, then PnP + RANSAC of
the query's pixels against the candidate's predicted 3D points (candidate frame). Only a
candidate with at least ``min_inliers`` inliers making ``min_inlier_ratio`` of the matches
is a loop; everything else (a similar-looking but different place gives matches that agree
on no single pose) is rejected with its reason.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

import cv2
import numpy as np

from mast3r_ros.config import config_from_dict
from mast3r_ros.geometry.pose import PnPConfig, solve_pnp
from mast3r_ros.matching.frm import FRMConfig, match_prediction
from mast3r_ros.model.types import EncodedView, PairEngine, PairPrediction

log = logging.getLogger(__name__)

__all__ = ["LoopClosureConfig", "LoopCandidate", "image_global_descriptor", "global_descriptor",
           "LoopDetector"]


@dataclass(frozen=True)
class LoopClosureConfig:
    """Loop proposal (retrieval) and verification settings."""

    enabled: bool = True            # look for loops at all
    exclude_recent: int = 8         # the most recent keyframes are never loop candidates
    top_k: int = 3                  # candidates verified per new keyframe
    min_similarity: float = 0.3     # global-descriptor cosine below this: not a candidate
                                    # (low: verification, not retrieval, decides)
    min_inliers: int = 60           # PnP inliers needed to accept a loop
    min_inlier_ratio: float = 0.4   # ... and this fraction of the matches
    reprojection_error_px: float = 2.0  # PnP inlier threshold, network pixels
    min_conf: float = 1.5           # matches on pixels with lower pointmap confidence are dropped

    def __post_init__(self) -> None:
        if self.exclude_recent < 0 or self.top_k < 0 or self.min_inliers < 4:
            raise ValueError("LoopClosureConfig: need exclude_recent >= 0, top_k >= 0, min_inliers >= 4")
        if not 0 <= self.min_inlier_ratio <= 1:
            raise ValueError(f"LoopClosureConfig.min_inlier_ratio must be in [0, 1], got {self.min_inlier_ratio}")
        if not self.reprojection_error_px > 0:
            raise ValueError("LoopClosureConfig.reprojection_error_px must be > 0")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "LoopClosureConfig":
        return config_from_dict(cls, values)


@dataclass
class LoopCandidate:
    """A proposed loop between a new keyframe (query) and an old one (match).

    Attributes:
        query_id, match_id: keyframe ids. similarity: retrieval cosine.
        accepted: True when verification passed; reason: why not (or "verified").
        num_matches, num_inliers: FRM matches and PnP inliers; inlier_ratio.
        T_match_query: (4, 4) query camera -> match camera (from PnP, the candidate's
            pointmap scale), or None.
        cycle_hops: for an accepted loop, the pair hops between query and match in the
            keyframe graph before the loop joined them (the length of the cycle it closes;
            the mapper runs a full pass only for long ones).
    """

    query_id: str
    match_id: str
    similarity: float
    accepted: bool = False
    reason: str = ""
    num_matches: int = 0
    num_inliers: int = 0
    inlier_ratio: float = 0.0
    T_match_query: np.ndarray | None = None
    cycle_hops: int = 0


def image_global_descriptor(image: np.ndarray, size: tuple[int, int] = (32, 24)) -> np.ndarray:
    """Fallback global descriptor of an (H, W, 3) uint8 image: (w*h,) float32, unit norm.

    A grey thumbnail (area-averaged), mean-removed and normalised.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got {image.shape}")
    grey = cv2.cvtColor(np.ascontiguousarray(image, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    thumb = cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    thumb -= thumb.mean()
    n = float(np.linalg.norm(thumb))
    return thumb / n if n > 0 else thumb


def global_descriptor(engine: PairEngine, view: EncodedView, image: np.ndarray | None) -> np.ndarray:
    """``engine.global_descriptor(view)`` when the engine offers it, else the image fallback."""
    fn = getattr(engine, "global_descriptor", None)
    if callable(fn):
        return np.asarray(fn(view), dtype=np.float32)
    if image is None:
        raise ValueError("the engine has no global_descriptor() and no image was given for the "
                         "fallback descriptor")
    return image_global_descriptor(image)


class LoopDetector:
    """Keyframe descriptor store + candidate proposal + geometric verification."""

    def __init__(self, engine: PairEngine, config: LoopClosureConfig = LoopClosureConfig()) -> None:
        self.engine = engine
        self.config = config
        self._ids: list[str] = []
        self._desc: list[np.ndarray] = []

    def add(self, kf_id: str, desc: np.ndarray) -> None:
        self._ids.append(kf_id)
        self._desc.append(np.asarray(desc, dtype=np.float32))

    def reset(self) -> None:
        self._ids.clear()
        self._desc.clear()

    def candidates(self, desc: np.ndarray, exclude: set[str] | None = None) -> list[tuple[str, float]]:
        """Up to ``top_k`` (id, similarity) above ``min_similarity``, best first, skipping the
        ``exclude_recent`` most recently added keyframes and ``exclude``."""
        cfg = self.config
        n = len(self._ids) - cfg.exclude_recent
        if not cfg.enabled or n <= 0 or cfg.top_k == 0:
            return []
        D = np.stack(self._desc[:n])
        if D.shape[1] != len(desc):
            raise ValueError(f"global descriptor has {len(desc)} dims, the store has {D.shape[1]}")
        sim = D @ np.asarray(desc, dtype=np.float32)
        order = np.argsort(-sim)
        out = []
        for k in order:
            if sim[k] < cfg.min_similarity or len(out) >= cfg.top_k:
                break
            if exclude and self._ids[k] in exclude:
                continue
            out.append((self._ids[k], float(sim[k])))
        return out

    def verify(self, candidate: LoopCandidate, match_view: EncodedView, query_view: EncodedView,
               K_query_net: np.ndarray) -> tuple[LoopCandidate, PairPrediction]:
        """Decode (match, query), FRM, PnP of the query against the match's 3D points.

        Args:
            K_query_net: (3, 3) the query's intrinsics at network resolution (known or
                current estimate).

        Returns:
            The candidate with its verdict filled in, and the prediction (reusable).
        """
        cfg = self.config
        pred = self.engine.decode(match_view, query_view)
        m = match_prediction(pred, FRMConfig(min_conf=cfg.min_conf))
        candidate.num_matches = len(m)
        if len(m) < cfg.min_inliers:
            candidate.reason = f"{len(m)} matches < min_inliers={cfg.min_inliers}"
            return candidate, pred
        w1 = pred.view1.pts3d.shape[1]
        idx = m.xy1_net[:, 0] + w1 * m.xy1_net[:, 1]
        pts3d = pred.view1.pts3d.reshape(-1, 3)[idx].detach().cpu().numpy().astype(np.float64)
        try:
            pnp = solve_pnp(m.xy2_net.astype(np.float64), pts3d, K_query_net,
                            PnPConfig(reprojection_error_px=cfg.reprojection_error_px,
                                      min_inliers=4, compute_covariance=False))
        except (RuntimeError, ValueError) as exc:
            candidate.reason = f"PnP failed: {exc}"
            return candidate, pred
        candidate.num_inliers = pnp.n_inliers
        candidate.inlier_ratio = pnp.n_inliers / max(len(m), 1)
        candidate.T_match_query = pnp.T_world_cam
        if pnp.n_inliers < cfg.min_inliers:
            candidate.reason = f"{pnp.n_inliers} PnP inliers < min_inliers={cfg.min_inliers}"
        elif candidate.inlier_ratio < cfg.min_inlier_ratio:
            candidate.reason = (f"inlier ratio {candidate.inlier_ratio:.2f} < "
                                f"min_inlier_ratio={cfg.min_inlier_ratio}")
        else:
            candidate.accepted = True
            candidate.reason = "verified"
        log.info("loop %s -> %s: %s (%d/%d inliers, similarity %.2f)", candidate.query_id,
                 candidate.match_id, candidate.reason, candidate.num_inliers,
                 candidate.num_matches, candidate.similarity)
        return candidate, pred
