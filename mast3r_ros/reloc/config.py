"""Relocalization settings and result types."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from mast3r_ros.config import config_from_dict


@dataclass(frozen=True)
class RelocConfig:
    """Settings of ``Relocalizer``. Pixel thresholds are in original-image pixels."""

    top_k: int = 5                         # references verified (decoded) when no id is given
    min_retrieval_score: float = -1.0      # candidates scoring below this are not decoded
    subsample: int = 8                     # FRM seed grid step, network pixels
    border: int = 3                        # FRM border filter, network pixels
    min_desc_conf: float = 0.0             # FRM: drop matches with desc_conf below this
    min_conf: float = 0.0                  # FRM: drop matches with pointmap conf below this
    min_matches: int = 30                  # fewer FRM matches: failure "too few matches"
    min_inliers: int = 25                  # fewer pose inliers: failure "too few inliers"
    min_inlier_ratio: float = 0.1          # inliers / matches below this: failure (wide
                                           # baselines leave many matches outside the overlap)
    pnp_reprojection_px: float = 3.0       # PnP RANSAC threshold
    epipolar_px: float = 1.5               # essential-matrix RANSAC threshold (Sampson)
    max_rotation_disagreement_deg: float = 10.0   # PnP vs essential rotation: else inconsistent
                                                  # (gross errors; depth distortion bends PnP a few deg)
    max_direction_disagreement_deg: float = 20.0  # PnP vs essential translation direction
    min_baseline_for_direction_m: float = 0.05    # below this the direction check is skipped
    prefer_essential: bool = True          # K known: answer with the essential matrix (+ pointmap
                                           # scale) rather than PnP (see reloc/solve.py)
    essential_min_baseline_ratio: float = 0.05  # baseline / median depth below this: PnP answers
    estimate_principal_point: bool = False  # unknown K: also fit (cx, cy) (else image centre)
    fuse_references: bool = True           # several verified references -> fused centre (solve.fuse)
    direction_sigma_deg: float = 0.5       # floor of the per-reference direction error (fusion)
    max_fusion_scale_deviation: float = 0.5  # |fused - single| / single baseline above: no fusion
    scale_sigma: float = 0.10              # relative metric-scale uncertainty of the network,
                                           # added to the translation covariance along the baseline
    use_map_points: bool = True            # a reference with its own map-scale 3D points (a
                                           # SLAM map's keyframe) is solved against them, not
                                           # against the pair's predicted pointmap (metric scale
                                           # error of one pair out of the baseline)
    map_scale_sigma: float = 0.03          # relative scale uncertainty of such map points (fusion
                                           # weights and covariance, instead of scale_sigma)
    confidence_inliers: float = 50.0       # inlier count giving confidence 1 - 1/e (x ratio term)
    seed: int = 0                          # RANSAC seed (reproducible answers)

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.subsample < 1 or self.border < 0:
            raise ValueError(f"need subsample >= 1 and border >= 0, got {self.subsample}, {self.border}")
        if self.min_matches < 5 or self.min_inliers < 5:
            raise ValueError(f"min_matches and min_inliers must be >= 5, got {self.min_matches}, "
                             f"{self.min_inliers}")
        if not 0.0 <= self.min_inlier_ratio <= 1.0:
            raise ValueError(f"min_inlier_ratio must be in [0, 1], got {self.min_inlier_ratio}")
        for name in ("pnp_reprojection_px", "epipolar_px", "max_rotation_disagreement_deg",
                     "max_direction_disagreement_deg", "direction_sigma_deg",
                     "max_fusion_scale_deviation", "confidence_inliers"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.scale_sigma < 0 or self.min_baseline_for_direction_m < 0 or self.map_scale_sigma < 0:
            raise ValueError("scale_sigma, map_scale_sigma and min_baseline_for_direction_m must "
                             "be >= 0")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "RelocConfig":
        """Build from a dict, rejecting unknown keys (the message lists the valid ones)."""
        return config_from_dict(cls, values)


@dataclass
class RelocResult:
    """The answer to "where is this camera?".

    Attributes:
        success: a verified pose was found; False with the reason in ``message`` otherwise.
        message: what was done ("pnp", "essential", "fused N references") or why it failed.
        T_map_cam: (4, 4) float64 query camera -> map, or None on failure.
        covariance: (6, 6) float64 covariance of ``T_map_cam`` in ROS order (x, y, z in the
            map frame, then rotations about the map's fixed X, Y, Z axes; m^2, rad^2), or None.
        reference_id: the reference the pose was verified against ("" when none).
        num_matches: FRM matches with that reference; num_inliers: pose inliers.
        confidence: 0..1, ``(1 - exp(-inliers / confidence_inliers)) * min(1, ratio / 0.5)``.
        K: (3, 3) query intrinsics used, at the original image resolution, or None.
        intrinsics_estimated: K was estimated from the query's own pointmap.
        timings_ms: encode, retrieval, decode, match, pose, total (milliseconds).
        candidates: ids of the references that were decoded, best retrieval score first.
        inlier_xy: ((n, 2) reference pixels, (n, 2) query pixels) of the pose inliers with
            ``reference_id`` (original resolution), or None; for drawing.
    """

    success: bool
    message: str
    T_map_cam: np.ndarray | None = None
    covariance: np.ndarray | None = None
    reference_id: str = ""
    num_matches: int = 0
    num_inliers: int = 0
    confidence: float = 0.0
    K: np.ndarray | None = None
    intrinsics_estimated: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)
    candidates: list[str] = field(default_factory=list)
    inlier_xy: tuple[np.ndarray, np.ndarray] | None = None
