"""The ``Mapper``'s state as plain arrays (export) and back (import, checked), so that a saved
map resumes mapping (new keyframes connect to the old ones, loops close against them) or
serves localization without re-running any alignment.

What is kept, per keyframe ``v`` (in ``Mapper`` order; ``h x w`` its network size):

- ``<id>.z_sum``, ``<id>.w_sum`` (h*w,): its canonical depth (confidence-weighted depth sum
  and weight sum over the pairs fused so far) and ``<id>.delta`` (anchor log-depth
  corrections, ``ceil(h/s) * ceil(w/s)`` for the anchor step ``s``);
- ``T_world_cam`` (V, 4, 4) corrected poses, ``T_track`` (V, 4, 4) tracking's poses;
- ``focal`` (V,) current focal (network pixels; ``focal_valid`` False before any estimate),
  ``K_known`` (V, 3, 3) + ``K_known_mask`` (V,): network-resolution K when it was given
  (else the focal is estimated), ``canon_stats`` (V, 3): pairs fused, focal sum and weight,
  ``optimized`` (V,): the focal was refined by alignment.

Per ordered pair ``p`` (i = view 1, j = view 2; the observations alignment uses, so nothing
is decoded again): ``pair_views`` (P, 2) keyframe indices, ``pair_counts`` (P, 3) FRM
matches / consistent matches / fallback flag, ``pair_focal`` (P,), matches
``match_idx`` (M, 2) network-pixel indices in i and j with ``match_weight`` (M,), split by
``match_offsets`` (P + 1,), and the regression grid ``reg_idx`` (R,), ``reg_pts`` (R, 3),
``reg_weight`` (R,), split by ``reg_offsets`` (P + 1,).

The JSON section (``meta``): ``state_version``, ``keyframes`` (ids, in order),
``anchor_step``, ``dtype``, ``loop_closures`` (verified loops), ``config`` (for the record).

Size: bounded by keyframes (two floats per network pixel per keyframe, at most
``max_matches_per_pair`` matches and one coarse grid per pair), never by frames. Colours and
keyframe images are not repeated here: the keyframes carry them.

``import_state`` checks everything (ids, shapes, dtypes, index ranges, offsets, finite and
rigid poses) before touching the mapper and raises ``ValueError`` naming the array and the
problem; the map reader turns it into ``MapFormatError``.
"""
from __future__ import annotations

import dataclasses
import math
from enum import Enum
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .alignment import AlignmentProblem, CanonicalView, PairObservation
from .loop_closure import LoopCandidate

__all__ = ["STATE_VERSION", "export_state", "import_state"]

STATE_VERSION = 1

_VIEW_ARRAYS = ("z_sum", "w_sum", "delta")


def _plain(x: Any) -> Any:
    if isinstance(x, Enum):
        return x.value
    if dataclasses.is_dataclass(x):
        return {f.name: _plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _np(t: torch.Tensor, dtype) -> np.ndarray:
    """Host copy as ``dtype`` (converted on the device first: bf16/fp16 have no numpy type)."""
    tt = {np.float64: torch.float64, np.float32: torch.float32, np.int32: torch.int32}[dtype]
    return t.detach().to(tt).cpu().numpy()


def export_state(mapper) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta JSON-able dict, arrays) of a ``Mapper`` (the caller holds its lock)."""
    prob: AlignmentProblem = mapper.problem
    order = list(mapper._order)
    V = len(order)
    vidx = [prob.index[k] for k in order]
    pos = {k: n for n, k in enumerate(order)}
    fdt = np.float64 if prob.dtype == torch.float64 else np.float32
    arrays: dict[str, np.ndarray] = {}
    for k, v in zip(order, vidx):
        cv = prob.views[v]
        arrays[f"{k}.z_sum"] = _np(cv.z_sum, fdt)
        arrays[f"{k}.w_sum"] = _np(cv.w_sum, fdt)
        arrays[f"{k}.delta"] = _np(prob.delta[v], fdt)
    focal = np.array([prob.focal[v] for v in vidx], dtype=np.float64).reshape(V)
    valid = np.isfinite(focal)
    arrays["T_world_cam"] = np.array([prob.T[v] for v in vidx], dtype=np.float64).reshape(V, 4, 4)
    arrays["T_track"] = np.array([mapper._T_track[k] for k in order], dtype=np.float64).reshape(V, 4, 4)
    arrays["focal"] = np.where(valid, focal, 0.0)
    arrays["focal_valid"] = valid
    arrays["K_known"] = np.array([np.zeros((3, 3)) if prob.K_known[v] is None else prob.K_known[v]
                                  for v in vidx], dtype=np.float64).reshape(V, 3, 3)
    arrays["K_known_mask"] = np.array([prob.K_known[v] is not None for v in vidx], dtype=bool)
    arrays["canon_stats"] = np.array([[prob.views[v].n, prob.views[v].focal_sum, prob.views[v].focal_w]
                                      for v in vidx], dtype=np.float64).reshape(V, 3)
    arrays["optimized"] = np.array([v in prob.optimized for v in vidx], dtype=bool)
    pairs = [o for o in prob.pairs.values() if o.i in pos and o.j in pos]
    P = len(pairs)
    arrays["pair_views"] = np.array([[pos[o.i], pos[o.j]] for o in pairs], dtype=np.int32).reshape(P, 2)
    arrays["pair_counts"] = np.array([[o.n_matches, o.n_consistent, int(o.fallback)] for o in pairs],
                                     dtype=np.int64).reshape(P, 3)
    arrays["pair_focal"] = np.array([o.focal_i for o in pairs], dtype=np.float64).reshape(P)
    m_off, r_off = [0], [0]
    for o in pairs:
        m_off.append(m_off[-1] + len(o.idx_i))
        r_off.append(r_off[-1] + len(o.reg_idx_j))
    arrays["match_offsets"] = np.array(m_off, dtype=np.int64)
    arrays["reg_offsets"] = np.array(r_off, dtype=np.int64)

    def cat(get, shape, dtype):
        parts = [_np(get(o), dtype).reshape((-1,) + shape) for o in pairs]
        return np.concatenate(parts) if parts else np.zeros((0,) + shape, dtype)

    arrays["match_idx"] = np.stack([cat(lambda o: o.idx_i, (), np.int32),
                                    cat(lambda o: o.idx_j, (), np.int32)], 1).reshape(-1, 2)
    arrays["match_weight"] = cat(lambda o: o.weight, (), np.float32)
    arrays["reg_idx"] = cat(lambda o: o.reg_idx_j, (), np.int32)
    arrays["reg_pts"] = cat(lambda o: o.reg_pts_i, (3,), np.float32)
    arrays["reg_weight"] = cat(lambda o: o.reg_weight, (), np.float32)
    loops = [{"query_id": c.query_id, "match_id": c.match_id, "similarity": float(c.similarity),
              "num_matches": int(c.num_matches), "num_inliers": int(c.num_inliers),
              "inlier_ratio": float(c.inlier_ratio),
              "T_match_query": None if c.T_match_query is None
              else np.asarray(c.T_match_query, dtype=np.float64).tolist()}
             for c in mapper.loop_closures]
    meta = {"state_version": STATE_VERSION, "keyframes": order,
            "anchor_step": int(prob.config.anchor_step), "dtype": np.dtype(fdt).name,
            "num_pairs": P, "loop_closures": loops, "config": _plain(mapper.config)}
    return meta, arrays


# ----------------------------------------------------------------------------- import


def _need(arrays: Mapping[str, np.ndarray], name: str, shape: tuple, kinds: str) -> np.ndarray:
    """The array ``name`` with this shape (None = any length) and dtype kind, else ValueError."""
    if name not in arrays:
        raise ValueError(f"mapper array {name!r} is missing")
    a = np.asarray(arrays[name])
    if a.dtype.kind not in kinds:
        raise ValueError(f"mapper array {name!r} has dtype {a.dtype}, expected kind {kinds!r}")
    if len(a.shape) != len(shape) or any(s is not None and s != n for s, n in zip(shape, a.shape)):
        want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"mapper array {name!r} has shape {a.shape}, expected {want}")
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise ValueError(f"mapper array {name!r} has NaN or inf values")
    return a


def _rigid(T: np.ndarray, what: str) -> None:
    R = T[:3, :3]
    if (np.abs(R.T @ R - np.eye(3)).max() > 1e-3 or abs(np.linalg.det(R) - 1) > 1e-3
            or not np.allclose(T[3], [0, 0, 0, 1], atol=1e-9)):
        raise ValueError(f"{what} is not a rigid transform")


def _offsets(arrays, name: str, P: int, total: int) -> np.ndarray:
    off = _need(arrays, name, (P + 1,), "iu").astype(np.int64)
    if off[0] != 0 or off[-1] != total or np.any(np.diff(off) < 0):
        raise ValueError(f"mapper array {name!r} is not a split of {total} rows (must start at 0, "
                         f"never decrease and end at {total}; got {off[0]} .. {off[-1]})")
    return off


def import_state(mapper, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
                 keyframes: Sequence) -> None:
    """Replace ``mapper``'s state by an exported one.

    Args:
        mapper: the ``Mapper`` (its engine encoded the keyframes' views).
        meta, arrays: from ``export_state`` (arrays without any prefix).
        keyframes: ``KeyframeLike`` objects (view, colours or image, K), every id of
            ``meta["keyframes"]`` among them (any order; others, e.g. keyframes that were not
            mapped yet when the map was saved, are left to the caller).

    Raises:
        ValueError: naming what is wrong (unknown state version, ids that do not match,
            a missing or malformed array, an index out of range). The mapper is unchanged then.
    """
    if not isinstance(meta, Mapping):
        raise ValueError(f"mapper section must be an object, got {type(meta).__name__}")
    version = meta.get("state_version")
    if version != STATE_VERSION or isinstance(version, bool):
        raise ValueError(f"mapper state_version {version!r} is unknown; this build reads "
                         f"version {STATE_VERSION}")
    order = meta.get("keyframes")
    if not isinstance(order, list) or not all(isinstance(k, str) and k for k in order):
        raise ValueError("mapper 'keyframes' must be a list of keyframe ids")
    if len(set(order)) != len(order):
        raise ValueError("mapper 'keyframes' has duplicate ids")
    by_id = {str(k.id): k for k in keyframes}
    missing = [k for k in order if k not in by_id]
    if missing:
        raise ValueError(f"mapper keyframes {missing[:5]} are not keyframes of the map")
    step = meta.get("anchor_step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"mapper anchor_step must be a positive integer, got {step!r}")
    V = len(order)
    cfg = mapper.config
    prob = AlignmentProblem(cfg.full_alignment, mapper.device)
    dt = prob.dtype
    T = _need(arrays, "T_world_cam", (V, 4, 4), "f").astype(np.float64)
    T_track = _need(arrays, "T_track", (V, 4, 4), "f").astype(np.float64)
    for n, k in enumerate(order):
        _rigid(T[n], f"mapper T_world_cam of keyframe {k!r}")
        _rigid(T_track[n], f"mapper T_track of keyframe {k!r}")
    focal = _need(arrays, "focal", (V,), "f").astype(np.float64)
    focal_valid = _need(arrays, "focal_valid", (V,), "b")
    K_known = _need(arrays, "K_known", (V, 3, 3), "f").astype(np.float64)
    K_mask = _need(arrays, "K_known_mask", (V,), "b")
    stats = _need(arrays, "canon_stats", (V, 3), "f").astype(np.float64)
    optimized = _need(arrays, "optimized", (V,), "b")
    if np.any(focal[focal_valid] <= 0) or np.any(K_known[K_mask][:, [0, 1], [0, 1]] <= 0):
        raise ValueError("mapper focal / K_known has a focal <= 0")
    if np.any(stats < 0):
        raise ValueError("mapper canon_stats has negative entries")
    sizes = []
    for n, k in enumerate(order):
        kf = by_id[k]
        h, w = (int(x) for x in kf.view.transform.network_size)
        na = math.ceil(h / step) * math.ceil(w / step)
        z = _need(arrays, f"{k}.z_sum", (h * w,), "f")
        ws = _need(arrays, f"{k}.w_sum", (h * w,), "f")
        d = _need(arrays, f"{k}.delta", (na,), "f")
        if np.any(ws < 0) or np.any(z < 0):
            raise ValueError(f"mapper arrays of keyframe {k!r}: negative depth or weight sums")
        sizes.append((h, w, z, ws, d))
    pv = _need(arrays, "pair_views", (None, 2), "iu").astype(np.int64)
    P = len(pv)
    if P and (pv.min() < 0 or pv.max() >= V or np.any(pv[:, 0] == pv[:, 1])):
        raise ValueError(f"mapper pair_views must name two different keyframes of {V}")
    if len({(int(a), int(b)) for a, b in pv}) != P:
        raise ValueError("mapper pair_views has duplicate pairs")
    counts = _need(arrays, "pair_counts", (P, 3), "iu").astype(np.int64)
    pfocal = _need(arrays, "pair_focal", (P,), "f").astype(np.float64)
    midx = _need(arrays, "match_idx", (None, 2), "iu").astype(np.int64)
    mw = _need(arrays, "match_weight", (len(midx),), "f")
    m_off = _offsets(arrays, "match_offsets", P, len(midx))
    ridx = _need(arrays, "reg_idx", (None,), "iu").astype(np.int64)
    rpts = _need(arrays, "reg_pts", (len(ridx), 3), "f")
    rw = _need(arrays, "reg_weight", (len(ridx),), "f")
    r_off = _offsets(arrays, "reg_offsets", P, len(ridx))
    npix = np.array([s[0] * s[1] for s in sizes], dtype=np.int64)
    for p in range(P):
        a, b = pv[p]
        mi = midx[m_off[p]:m_off[p + 1]]
        ri = ridx[r_off[p]:r_off[p + 1]]
        if len(mi) and (mi.min() < 0 or mi[:, 0].max() >= npix[a] or mi[:, 1].max() >= npix[b]):
            raise ValueError(f"mapper match_idx of pair {p} ({order[a]}, {order[b]}) is out of the "
                             "images' pixel range")
        if len(ri) and (ri.min() < 0 or ri.max() >= npix[b]):
            raise ValueError(f"mapper reg_idx of pair {p} ({order[a]}, {order[b]}) is out of the "
                             "image's pixel range")
    loops_meta = meta.get("loop_closures", [])
    if not isinstance(loops_meta, list):
        raise ValueError("mapper loop_closures must be a list")
    loops = []
    for n, c in enumerate(loops_meta):
        try:
            Tq = c.get("T_match_query")
            loops.append(LoopCandidate(
                query_id=str(c["query_id"]), match_id=str(c["match_id"]),
                similarity=float(c["similarity"]), accepted=True, reason="verified (loaded)",
                num_matches=int(c.get("num_matches", 0)), num_inliers=int(c.get("num_inliers", 0)),
                inlier_ratio=float(c.get("inlier_ratio", 0.0)),
                T_match_query=None if Tq is None else np.asarray(Tq, dtype=np.float64).reshape(4, 4)))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"mapper loop closure {n} is malformed ({type(exc).__name__}: {exc})") from None

    # ---- everything checked: build the new state, then swap it in
    dev = prob.device
    for n, k in enumerate(order):
        kf = by_id[k]
        h, w, z, ws, d = sizes[n]
        K_net = K_known[n] if K_mask[n] else None
        prob.add_view(k, kf.view.transform, K_net, T[n])
        v = prob.index[k]
        z_t = torch.tensor(np.asarray(z), dtype=dt, device=dev)
        w_t = torch.tensor(np.asarray(ws), dtype=dt, device=dev)
        d_t = torch.tensor(np.asarray(d), dtype=dt, device=dev)
        if step != prob.config.anchor_step:
            # another anchor grid: bake the stored corrections into the canonical depth
            idx = torch.arange(h * w, device=dev)
            wa = math.ceil(w / step)
            a_old = torch.div(idx // w, step, rounding_mode="floor") * wa + \
                torch.div(idx % w, step, rounding_mode="floor")
            z_t = z_t * torch.exp(d_t[a_old])
            d_t = torch.zeros_like(prob.delta[v])
        prob.views[v] = CanonicalView(h, w, kf.view.transform, z_t, w_t, int(stats[n, 0]),
                                      float(stats[n, 1]), float(stats[n, 2]))
        prob.delta[v] = d_t
        prob.focal[v] = float(focal[n]) if focal_valid[n] else float("nan")
        if optimized[n]:
            prob.optimized.add(v)
    for p in range(P):
        a, b = (int(x) for x in pv[p])
        mi = torch.tensor(midx[m_off[p]:m_off[p + 1]], dtype=torch.long, device=dev)
        ri = slice(r_off[p], r_off[p + 1])
        obs = PairObservation(
            i=order[a], j=order[b], idx_i=mi[:, 0].contiguous(), idx_j=mi[:, 1].contiguous(),
            weight=torch.tensor(np.asarray(mw[m_off[p]:m_off[p + 1]]), dtype=torch.float32,
                                   device=dev),
            n_matches=int(counts[p, 0]), n_consistent=int(counts[p, 1]), fallback=bool(counts[p, 2]),
            reg_idx_j=torch.tensor(ridx[ri], dtype=torch.long, device=dev),
            reg_pts_i=torch.tensor(np.asarray(rpts[ri]), dtype=torch.float32, device=dev),
            reg_weight=torch.tensor(np.asarray(rw[ri]), dtype=torch.float32, device=dev),
            focal_i=float(pfocal[p]))
        prob.pairs[(order[a], order[b])] = obs
    mapper._install(prob, [by_id[k] for k in order], {k: T_track[n] for n, k in enumerate(order)},
                    loops)
