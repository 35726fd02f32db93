"""Trajectory metrics: ATE and RPE with SE(3) / Sim(3) Umeyama alignment, and
relocalization success rates.

Definitions (the usual ones, as in the TUM benchmark and evo):

- Alignment: the similarity ``S = (s, R, t)`` minimising ``sum |p_gt - (s R p_est + t)|^2``
  over associated positions (Umeyama; ``s = 1`` for SE(3)), applied to every estimated
  pose: position ``s R p + t``, rotation ``R R_est``.
- ATE: per associated pose, ``|p_gt - p_est_aligned|`` (metres).
- RPE (delta frames): ``E_i = (Q_i^-1 Q_{i+d})^-1 (P_i^-1 P_{i+d})`` over consecutive
  associated pairs; translation error ``|t(E_i)|`` (metres), rotation error ``angle(E_i)``
  (degrees). Q: ground truth, P: aligned estimate.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Sequence

import numpy as np

from mast3r_ros.geometry.align import umeyama
from mast3r_ros.geometry.transforms import rotation_angle_deg  # re-exported: the one angle function

from .trajectory import Trajectory, associate

# (translation metres, rotation degrees) thresholds of the usual relocalization benchmarks.
RELOC_THRESHOLDS: tuple[tuple[float, float], ...] = ((0.25, 2.0), (0.5, 5.0), (5.0, 10.0))


class Alignment(Enum):
    """How the estimate is aligned to ground truth before measuring."""

    NONE = "none"
    SE3 = "se3"
    SIM3 = "sim3"


@dataclass(frozen=True)
class ErrorStats:
    """Summary of a set of errors (population std, as evo)."""

    rmse: float
    mean: float
    median: float
    std: float
    min: float
    max: float

    @classmethod
    def of(cls, errors: np.ndarray) -> "ErrorStats":
        e = np.asarray(errors, dtype=np.float64)
        if e.size == 0:
            nan = float("nan")
            return cls(nan, nan, nan, nan, nan, nan)
        return cls(float(np.sqrt(np.mean(e**2))), float(e.mean()), float(np.median(e)),
                   float(e.std()), float(e.min()), float(e.max()))

    def to_dict(self) -> dict[str, float]:
        return dict(rmse=self.rmse, mean=self.mean, median=self.median, std=self.std,
                    min=self.min, max=self.max)


@dataclass(frozen=True, eq=False)
class AlignedPair:
    """Associated ground truth and aligned estimate.

    Attributes:
        gt: ground truth at the M associated stamps; est: the aligned estimate there.
        S: (4, 4) applied similarity ``[[s R, t], [0, 1]]``; scale: its ``s``.
        alignment: which alignment was applied.
    """

    gt: Trajectory
    est: Trajectory
    S: np.ndarray
    scale: float
    alignment: Alignment


@dataclass(frozen=True, eq=False)
class ATEResult:
    """Absolute trajectory error. ``errors``: (M,) metres per associated pose."""

    stats: ErrorStats
    errors: np.ndarray
    pair: AlignedPair


@dataclass(frozen=True, eq=False)
class RPEResult:
    """Relative pose error over ``delta`` frames.

    Attributes:
        trans: stats of ``trans_errors`` (K,) metres; rot_deg: stats of ``rot_errors_deg``.
    """

    trans: ErrorStats
    rot_deg: ErrorStats
    trans_errors: np.ndarray
    rot_errors_deg: np.ndarray
    delta: int


def _parse_alignment(alignment: Alignment | str) -> Alignment:
    if isinstance(alignment, Alignment):
        return alignment
    try:
        return Alignment(alignment)
    except ValueError:
        raise ValueError(f"unknown alignment {alignment!r}; choose none, se3 or sim3") from None


def align(gt: Trajectory, est: Trajectory, alignment: Alignment | str = Alignment.SE3,
          max_diff: float = 0.01) -> AlignedPair:
    """Associate by stamp (``max_diff`` seconds) and align ``est`` onto ``gt``.

    Raises:
        ValueError: fewer than 3 associated poses (alignment) or none at all.
    """
    alignment = _parse_alignment(alignment)
    i_gt, i_est = associate(gt, est, max_diff=max_diff)
    if i_gt.size == 0:
        raise ValueError(f"no estimated stamp lies within {max_diff} s of a ground-truth stamp; "
                         "check that both files use the same clock (or raise --max-diff)")
    g = Trajectory(gt.stamps[i_gt], gt.poses[i_gt])
    P = est.poses[i_est].copy()
    S = np.eye(4)
    scale = 1.0
    if alignment is not Alignment.NONE:
        if i_gt.size < 3:
            raise ValueError(f"alignment needs >= 3 associated poses, got {i_gt.size}")
        sim = umeyama(P[:, :3, 3], g.poses[:, :3, 3], with_scale=alignment is Alignment.SIM3)
        scale = float(sim.scale)
        S[:3, :3], S[:3, 3] = scale * sim.R, sim.t
        P[:, :3, 3] = scale * P[:, :3, 3] @ sim.R.T + sim.t
        P[:, :3, :3] = sim.R @ P[:, :3, :3]
    return AlignedPair(g, Trajectory(g.stamps, P), S, scale, alignment)


def ate(gt: Trajectory, est: Trajectory, alignment: Alignment | str = Alignment.SE3,
        max_diff: float = 0.01) -> ATEResult:
    """Absolute trajectory error (translation part) after alignment."""
    pair = align(gt, est, alignment, max_diff)
    errors = np.linalg.norm(pair.gt.positions - pair.est.positions, axis=1)
    return ATEResult(ErrorStats.of(errors), errors, pair)


def rpe(gt: Trajectory, est: Trajectory, alignment: Alignment | str = Alignment.SE3,
        delta: int = 1, max_diff: float = 0.01) -> RPEResult:
    """Relative pose error between associated poses ``delta`` frames apart.

    Raises:
        ValueError: delta < 1.
    """
    if delta < 1:
        raise ValueError(f"delta must be >= 1 frame, got {delta}")
    pair = align(gt, est, alignment, max_diff)
    Q, P = pair.gt.poses, pair.est.poses
    i = np.arange(0, len(Q) - delta, delta)
    j = i + delta
    dQ = np.linalg.inv(Q[i]) @ Q[j]
    dP = np.linalg.inv(P[i]) @ P[j]
    E = np.linalg.inv(dQ) @ dP
    t_err = np.linalg.norm(E[:, :3, 3], axis=1)
    r_err = rotation_angle_deg(E[:, :3, :3])
    return RPEResult(ErrorStats.of(t_err), ErrorStats.of(r_err), t_err, r_err, delta)


@dataclass(frozen=True, eq=False)
class RelocResult:
    """Relocalization accuracy over Q queries.

    Attributes:
        success_rate: {(metres, degrees): fraction of queries within both}; failed
            queries (no estimate) count as misses.
        trans_errors: (Q,) metres (inf when failed); rot_errors_deg: (Q,) (inf when failed).
    """

    success_rate: dict[tuple[float, float], float]
    trans_errors: np.ndarray
    rot_errors_deg: np.ndarray

    def to_dict(self) -> dict[str, float]:
        return {f"{m:g}m_{d:g}deg": r for (m, d), r in self.success_rate.items()}


def relocalization_success(est: Sequence[np.ndarray | None], gt: np.ndarray,
                           thresholds: Sequence[tuple[float, float]] = RELOC_THRESHOLDS,
                           ) -> RelocResult:
    """Fraction of queries whose estimated pose is within each (metres, degrees) threshold.

    Args:
        est: Q estimated T_world_cam (4, 4), or None where relocalization failed.
        gt: (Q, 4, 4) ground-truth T_world_cam.

    Raises:
        ValueError: lengths differ or no queries.
    """
    gt = np.asarray(gt, dtype=np.float64)
    if len(est) != len(gt) or len(gt) == 0:
        raise ValueError(f"need as many estimates as ground-truth poses (> 0), got {len(est)} "
                         f"and {len(gt)}")
    t_err = np.full(len(gt), np.inf)
    r_err = np.full(len(gt), np.inf)
    for k, (T, G) in enumerate(zip(est, gt)):
        if T is None:
            continue
        T = np.asarray(T, dtype=np.float64)
        t_err[k] = np.linalg.norm(T[:3, 3] - G[:3, 3])
        r_err[k] = rotation_angle_deg(G[:3, :3].T @ T[:3, :3])
    rates = {(float(m), float(d)): float(np.mean((t_err <= m) & (r_err <= d)))
             for m, d in thresholds}
    return RelocResult(rates, t_err, r_err)
