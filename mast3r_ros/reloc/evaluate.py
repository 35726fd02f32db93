"""Map-free relocalization evaluation on sequences with ground truth (``reloc-eval``).

Metrics per intrinsics mode, failures counted as failures (infinite errors):

- translation error ``|c_est - c_gt|`` (metres, camera centres), rotation error (degrees);
- recall at (0.25 m, 2 deg), (0.5 m, 5 deg), (1 m, 10 deg);
- VCRE (virtual correspondence reprojection error, as the map-free benchmark defines it):
  virtual 3D points placed in front of the query camera by its true pose are projected
  with the true and with the estimated pose through the true K; the error is the mean
  pixel distance. Here the points are a 7 x 5 pixel grid over the query image
  back-projected at depths 1, 2, 3, 4 and 5 m. Precision at 90 px: the fraction of queries
  with VCRE < 90 px (in the bag's own pixels; the benchmark's images are 540 x 720).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from mast3r_ros.geometry import invert_T
from mast3r_ros.geometry.transforms import rotation_angle_deg

THRESHOLDS = ((0.25, 2.0), (0.5, 5.0), (1.0, 10.0))


def overlap(frame_a, frame_b, stride: int = 8) -> float:
    """Fraction of ``frame_a``'s pixels (every ``stride``-th) whose surface point projects
    inside ``frame_b`` in front of it, unoccluded (5 % depth tolerance)."""
    H, W = frame_a.depth.shape
    ys, xs = np.mgrid[0:H:stride, 0:W:stride]
    z = frame_a.depth[ys, xs].astype(np.float64)
    ok = np.isfinite(z) & (z > 0)
    rays = np.stack([xs, ys, np.ones_like(xs)], -1).astype(np.float64) @ np.linalg.inv(frame_a.K).T
    pa = rays[ok] * z[ok, None]
    T = invert_T(frame_b.T_world_cam) @ frame_a.T_world_cam
    pb = pa @ T[:3, :3].T + T[:3, 3]
    front = pb[:, 2] > 1e-3
    uv = pb[front] @ frame_b.K.T
    uv = uv[:, :2] / uv[:, 2:]
    Hb, Wb = frame_b.depth.shape
    inside = (uv[:, 0] >= 0) & (uv[:, 0] <= Wb - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= Hb - 1)
    u = np.rint(uv[inside]).astype(int)
    zb = frame_b.depth[u[:, 1], u[:, 0]]
    vis = pb[front][inside, 2] <= zb * 1.05 + 0.01
    return float(vis.sum()) / max(int(ok.sum()), 1)


def pick_pairs(frames, n: int, seed: int = 0, min_overlap: float = 0.15) -> list[tuple[int, int]]:
    """``n`` (reference, query) index pairs spread over viewpoint change and distance.

    All ordered pairs with overlap >= ``min_overlap`` are binned on a 4 x 4 grid of
    (rotation angle quartile, distance quartile); pairs are drawn round-robin from the
    non-empty bins (seeded), so small and large changes are equally represented.

    Raises:
        ValueError: fewer than ``n`` usable pairs.
    """
    m = len(frames)
    cand = []
    for i in range(m):
        for j in range(m):
            if i == j:
                continue
            ov = overlap(frames[i], frames[j])
            if ov >= min_overlap:
                Ti, Tj = frames[i].T_world_cam, frames[j].T_world_cam
                cand.append((i, j, rotation_angle_deg(Ti[:3, :3], Tj[:3, :3]),
                             float(np.linalg.norm(Ti[:3, 3] - Tj[:3, 3]))))
    if len(cand) < n:
        raise ValueError(f"only {len(cand)} (reference, query) pairs of the {m} frames overlap by "
                         f">= {min_overlap:.0%}; ask for fewer --pairs or use a longer bag")
    a = np.array([c[2] for c in cand])
    d = np.array([c[3] for c in cand])
    qa = np.searchsorted(np.quantile(a, [0.25, 0.5, 0.75]), a)
    qd = np.searchsorted(np.quantile(d, [0.25, 0.5, 0.75]), d)
    rng = np.random.default_rng(seed)
    bins: dict[tuple[int, int], list[int]] = {}
    for k in rng.permutation(len(cand)):
        bins.setdefault((int(qa[k]), int(qd[k])), []).append(int(k))
    out: list[tuple[int, int]] = []
    keys = sorted(bins)
    while len(out) < n:
        for key in keys:
            if bins[key] and len(out) < n:
                k = bins[key].pop()
                out.append((cand[k][0], cand[k][1]))
    return out


def vcre_px(T_est: np.ndarray | None, T_gt: np.ndarray, K: np.ndarray, width: int, height: int) -> float:
    """Mean reprojection error (pixels) of the virtual points (see module docstring)."""
    if T_est is None:
        return float("inf")
    us, vs = np.meshgrid(np.linspace(0, width - 1, 7), np.linspace(0, height - 1, 5))
    rays = np.stack([us.ravel(), vs.ravel(), np.ones(us.size)], 1) @ np.linalg.inv(K).T
    pts_cam = np.concatenate([rays * z for z in (1.0, 2.0, 3.0, 4.0, 5.0)])     # (N, 3) true camera
    pts_w = pts_cam @ T_gt[:3, :3].T + T_gt[:3, 3]
    T_cw = invert_T(T_est)
    pc = pts_w @ T_cw[:3, :3].T + T_cw[:3, 3]
    if np.any(pc[:, 2] <= 1e-6):
        return float("inf")  # points behind the estimated camera: as bad as it gets
    uv_est = pc @ K.T
    uv_est = uv_est[:, :2] / uv_est[:, 2:]
    uv_gt = pts_cam @ K.T
    uv_gt = uv_gt[:, :2] / uv_gt[:, 2:]
    return float(np.mean(np.linalg.norm(uv_est - uv_gt, axis=1)))


@dataclass
class PairOutcome:
    """One evaluated pair: errors are inf on failure."""

    ref: int
    query: int
    success: bool
    trans_m: float
    rot_deg: float
    vcre_px: float
    ms: float
    message: str


def pose_errors(T_est: np.ndarray | None, T_gt: np.ndarray) -> tuple[float, float]:
    if T_est is None:
        return float("inf"), float("inf")
    return (float(np.linalg.norm(T_est[:3, 3] - T_gt[:3, 3])),
            rotation_angle_deg(T_est[:3, :3], T_gt[:3, :3]))


def summarize(outcomes: list[PairOutcome]) -> dict:
    """The JSON object of one mode (keys as ``reloc-eval`` documents)."""
    t = np.array([o.trans_m for o in outcomes])
    r = np.array([o.rot_deg for o in outcomes])
    v = np.array([o.vcre_px for o in outcomes])
    out = {"n": len(outcomes),
           "median_trans_m": float(np.median(t)) if len(t) else float("nan"),
           "median_rot_deg": float(np.median(r)) if len(r) else float("nan")}
    for (m, d), key in zip(THRESHOLDS, ("recall_0.25m_2deg", "recall_0.5m_5deg", "recall_1m_10deg")):
        out[key] = float(np.mean((t <= m) & (r <= d))) if len(t) else 0.0
    out["vcre_90px_precision"] = float(np.mean(v < 90.0)) if len(v) else 0.0
    out["median_ms"] = float(np.median([o.ms for o in outcomes])) if outcomes else float("nan")
    out["failures"] = int(sum(not o.success for o in outcomes))
    return out


def evaluate_pairs(relocalizer, frames, pairs, known_K: bool, views: dict | None = None
                   ) -> list[PairOutcome]:
    """Single-reference (map-free) relocalization of each pair through ``relocalizer``.

    ``views`` caches the engine encoding of each frame index (each image encoded once).
    """
    views = {} if views is None else views
    eng = relocalizer.engine
    out = []
    for i, j in pairs:
        fr, fq = frames[i], frames[j]
        for k, f in ((i, fr), (j, fq)):
            if k not in views:
                views[k] = eng.encode(f.rgb, frame_id=f.frame_id)
        relocalizer.reset()
        rid = relocalizer.add_reference(fr.rgb, fr.T_world_cam, fr.K if known_K else None, "ref",
                                        frame_id=fr.frame_id, view=views[i])
        t0 = time.perf_counter()
        res = relocalizer.relocalize(fq.rgb, fq.K if known_K else None, rid, frame_id=fq.frame_id,
                                     view=views[j])
        ms = (time.perf_counter() - t0) * 1e3 + res.timings_ms.get("encode", 0.0)
        te, re = pose_errors(res.T_map_cam if res.success else None, fq.T_world_cam)
        H, W = fq.rgb.shape[:2]
        out.append(PairOutcome(i, j, res.success, te, re,
                               vcre_px(res.T_map_cam if res.success else None, fq.T_world_cam, fq.K, W, H),
                               ms, res.message))
    return out
