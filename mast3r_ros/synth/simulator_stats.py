"""Measure what a simulator profile does to its outputs, against ground truth on the same frames.

Used by the tests of the profiles and by ``benchmarks/sim_profiles.py`` (the table in
``benchmarks/RESULTS.md``). Everything is measured from the outputs (pointmaps,
descriptors, confidences) and the exact ground truth of the same frames at network
resolution (what the ``exact`` profile returns), never from the simulator's random draws.

- scale: per pair, ``log s = median(log(z1 / z1_exact))`` over view 1's pixels (the median
  ignores outliers; the smooth distortion shifts it by about a percent).
- depth distortion: the structure function ``D(r) = E[(e(x + r) - e(x))^2]`` of the
  log-depth error ``e = log(z1 / z1_exact)`` (5x5 median-filtered against outliers and white
  noise), along x and y, is insensitive to the pair's scale; it is fitted with the model of
  random plane waves ``D(r) = 2 sigma^2 (1 - J0(2 pi r / wavelength))``, giving ``sigma`` (RMS
  of the distortion) and its ``wavelength`` (fraction of the image's long side; the error's
  autocorrelation halves at ``0.242 * wavelength``).
- AbsRel: mean ``|z1 / (s z1_exact) - 1|`` after the per-pair scale (all pixels).
- focal: per pair, ``log(f / f_exact)`` with ``geometry.estimate_focal`` on view 1's pointmap
  and on the exact one.
- aliasing: the best descriptor match in view 2 (among confident pixels, ``desc_conf > 1``)
  of confident covisible view-1 pixels; a match is wrong when its ground-truth surface point
  is more than ``wrong_m`` from the query's. Reported on the pixels whose descriptors alias
  (``features.aliased``) and on the others.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import cv2
import numpy as np
import torch

from .sequence import SyntheticSequence
from .simulator import NetworkOutputSimulator, SimulatorConfig


@dataclass
class ProfileStats:
    """Measured statistics of a simulator configuration (see the module docstring)."""

    pairs: int
    scale_log_std: float          # std over pairs of the per-pair log-scale
    scale_log_median: float       # median over pairs of the per-pair log-scale
    scale_median_error: float     # median over pairs of |s - 1|
    distortion_rms: float         # fitted RMS of the smooth log-depth error
    distortion_wavelength: float  # fitted wavelength, fraction of the image long side
    abs_rel: float                # mean |z / (s z_exact) - 1| after the per-pair scale
    focal_log_std: float          # std over pairs of log(f / f_exact)
    focal_log_median: float
    alias_wrong_fraction: float   # wrong best matches on aliasing pixels (nan: none)
    other_wrong_fraction: float   # wrong best matches elsewhere

    def as_dict(self) -> dict:
        return asdict(self)


def _j0(x: np.ndarray) -> np.ndarray:
    """Bessel J0 by its integral (no scipy needed): mean of cos(x sin t) over t in [0, pi)."""
    t = (np.arange(256) + 0.5) * np.pi / 256
    return np.cos(np.multiply.outer(np.asarray(x, dtype=np.float64), np.sin(t))).mean(-1)


def structure_function(fields: Sequence[np.ndarray], lags: np.ndarray) -> np.ndarray:
    """Mean of ``(e(x + r) - e(x))^2`` along x and y over all fields, per lag in pixels."""
    out = np.zeros(len(lags))
    for i, r in enumerate(lags):
        acc = []
        for e in fields:
            acc.append(np.mean((e[:, r:] - e[:, :-r]) ** 2))
            acc.append(np.mean((e[r:, :] - e[:-r, :]) ** 2))
        out[i] = float(np.mean(acc))
    return out


def fit_distortion(fields: Sequence[np.ndarray], long_side: int) -> tuple[float, float]:
    """(RMS, wavelength as a fraction of ``long_side``) of random-plane-wave fields."""
    h, w = fields[0].shape
    lags = np.unique(np.linspace(3, 0.5 * min(h, w), 12).astype(int))
    D = structure_function(fields, lags)
    best = (np.inf, 0.0, 1.0)
    for lam in np.exp(np.linspace(np.log(0.1), np.log(4.0), 300)) * long_side:
        m = 2.0 * (1.0 - _j0(2 * np.pi * lags / lam))
        s2 = float(m @ D / (m @ m))
        err = float(np.sum((D - s2 * m) ** 2))
        if err < best[0]:
            best = (err, s2, lam)
    return float(np.sqrt(max(best[1], 0.0))), float(best[2] / long_side)


def wrong_best_matches(pred, f1, f2, *, wrong_m: float = 0.25, step1: int = 4, step2: int = 2,
                       mask1: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Best descriptor match in view 2 of confident covisible view-1 pixels.

    Returns (wrong (N,) bool, query pixel mask (h, w) bool): which of the queried pixels'
    best matches land more than ``wrong_m`` metres (ground truth) from the query's surface
    point, and which pixels were queried.
    """
    dc1 = pred.view1.desc_conf.cpu().numpy()
    dc2 = pred.view2.desc_conf.cpu().numpy()
    h, w = dc1.shape
    grid1 = np.zeros((h, w), bool)
    grid1[::step1, ::step1] = True
    q = grid1 & (dc1 > 1.0)
    if mask1 is not None:
        q &= mask1
    grid2 = np.zeros(dc2.shape, bool)
    grid2[::step2, ::step2] = True
    c = grid2 & (dc2 > 1.0)
    if not q.any() or not c.any():
        return np.zeros(0, bool), q
    d1 = pred.view1.desc.cpu()[torch.from_numpy(q)]
    d2 = pred.view2.desc.cpu()[torch.from_numpy(c)]
    best = (d1 @ d2.T).argmax(dim=1).numpy()
    P1 = f1.world[q]
    P2 = f2.world[c][best]
    return np.linalg.norm(P1 - P2, axis=1) > wrong_m, q


def measure(sequence: SyntheticSequence, config: SimulatorConfig,
            pairs: Sequence[tuple[int, int]], alias_pairs: Sequence[tuple[int, int]] = (),
            ) -> ProfileStats:
    """Statistics of ``config``'s outputs against ground truth on ``pairs`` of ``sequence``
    (aliasing on ``alias_pairs``, covisible view-1 pixels)."""
    from mast3r_ros.geometry import estimate_focal

    sim = NetworkOutputSimulator(sequence, config)
    views: dict[int, object] = {}

    def view(i: int):
        if i not in views:
            f = sequence.frames[i]
            views[i] = sim.encode(f.rgb, frame_id=f.frame_id)
        return views[i]

    log_s, fields, abs_rel, log_f = [], [], [], []
    long_side = 0
    for i, j in pairs:
        a, b = view(i), view(j)
        pred = sim.decode(a, b)
        f1 = a.features
        z = pred.view1.pts3d[..., 2].cpu().double().numpy()
        e = np.log(np.maximum(z, 1e-9) / f1.depth)
        s = float(np.median(e))
        log_s.append(s)
        fields.append(cv2.medianBlur(e.astype(np.float32), 5).astype(np.float64))
        abs_rel.append(float(np.mean(np.abs(np.exp(e - s) - 1.0))))
        exact_pts = f1.rays * f1.depth[..., None]
        f_exact = estimate_focal(exact_pts).K[0, 0]
        log_f.append(float(np.log(estimate_focal(pred.view1.pts3d).K[0, 0] / f_exact)))
        long_side = max(z.shape)
    sigma, lam = fit_distortion(fields, long_side)
    wrong_alias, wrong_other = [], []
    for i, j in alias_pairs:
        a, b = view(i), view(j)
        pred = sim.decode(a, b)
        covis = sim._covisible(a.features, b.features)
        wrong, q = wrong_best_matches(pred, a.features, b.features, mask1=covis)
        al = a.features.aliased
        al = np.zeros_like(q) if al is None else al
        wrong_alias.append(wrong[al[q]])
        wrong_other.append(wrong[~al[q]])
    wa = np.concatenate(wrong_alias) if wrong_alias else np.zeros(0, bool)
    wo = np.concatenate(wrong_other) if wrong_other else np.zeros(0, bool)
    log_s_a = np.asarray(log_s)
    return ProfileStats(
        pairs=len(pairs),
        scale_log_std=float(np.std(log_s_a, ddof=1)) if len(pairs) > 1 else 0.0,
        scale_log_median=float(np.median(log_s_a)),
        scale_median_error=float(np.median(np.abs(np.exp(log_s_a) - 1.0))),
        distortion_rms=sigma, distortion_wavelength=lam,
        abs_rel=float(np.mean(abs_rel)),
        focal_log_std=float(np.std(log_f, ddof=1)) if len(pairs) > 1 else 0.0,
        focal_log_median=float(np.median(log_f)),
        alias_wrong_fraction=float(wa.mean()) if wa.size else float("nan"),
        other_wrong_fraction=float(wo.mean()) if wo.size else float("nan"),
    )
