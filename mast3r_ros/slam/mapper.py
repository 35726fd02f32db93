"""The mapper: keyframes in, corrected keyframe poses, loop closures and a point cloud out.

Each new keyframe is decoded against its ``neighbors`` most recent keyframes (both orders),
its pose initialised from tracking (relative to the latest keyframe, so corrections already
made carry over), and a *local window* (the new keyframe and the ``window - 1`` most recent
ones) is optimised by sparse global alignment with every other keyframe they share a pair
with held fixed. Then retrieval proposes loop candidates among older keyframes; a verified
loop adds its pairs and triggers a *full* pass (every keyframe but the first, which anchors
the map frame; the mean depth scale is kept). ``optimize_full()`` runs it on request.

Keyframes: anything with ``id`` (str), ``stamp_ns`` (int), ``T_map_cam`` ((4, 4) tracking's
pose), ``K`` ((3, 3) at original resolution, or None when unknown), ``view``
(``EncodedView`` from the same engine) and ``image`` ((H, W, 3) uint8 RGB, may be None
when the keyframe has ``colors``, (h, w, 3) uint8 at network resolution) - the tracking
core's ``Keyframe`` (branch ``track``) or ``KeyframeData`` below.

Memory per keyframe: its canonical depth (2 float32 per network pixel), anchors, and per
ordered pair at most ``max_matches_per_pair`` matches plus a coarse regression grid: the
map grows by keyframes, never by frames.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping, Protocol

import numpy as np
import torch

from mast3r_ros.config import config_from_dict
from mast3r_ros.model.types import EncodedView, PairEngine

from .alignment import AlignmentConfig, AlignmentProblem, _engine_device
from .point_cloud import build_point_cloud, network_colors
from .loop_closure import LoopCandidate, LoopClosureConfig, LoopDetector, global_descriptor

log = logging.getLogger(__name__)

__all__ = ["MapperConfig", "KeyframeLike", "KeyframeData", "OptimizationKind", "MapUpdate",
           "Mapper"]


class KeyframeLike(Protocol):
    """What the mapper reads from a keyframe (the tracking core's ``Keyframe`` fits)."""

    id: str
    stamp_ns: int
    T_map_cam: np.ndarray
    K: np.ndarray | None
    view: EncodedView
    image: np.ndarray


@dataclass
class KeyframeData:
    """A minimal keyframe (tests, ``mast3r-ros align``); see ``KeyframeLike``."""

    id: str
    stamp_ns: int
    T_map_cam: np.ndarray
    K: np.ndarray | None
    view: EncodedView
    image: np.ndarray


@dataclass(frozen=True)
class MapperConfig:
    """Mapper settings; ``alignment`` and ``loop`` may be given as nested dicts."""

    alignment: AlignmentConfig = AlignmentConfig(stage1_iters=150, stage2_iters=100)  # local passes
    full_alignment: AlignmentConfig = AlignmentConfig()  # full passes (after loops, on request)
    loop: LoopClosureConfig = LoopClosureConfig()
    neighbors: int = 3          # a new keyframe is paired with this many most recent keyframes
    window: int = 5             # keyframes optimised per new keyframe (itself included)
    cloud_min_conf: float = 3.0  # point-cloud pixels need this fused confidence
    cloud_stride: int = 2       # point-cloud pixel grid step (network pixels)
    max_keyframes: int = 5000   # refuse more (memory bound)
    reinit_full: bool = False   # full passes re-initialise poses along the spanning tree first
                                # (off: start from the current poses; measured better on loops)
    keep_mean_scale: bool = True  # full passes keep the mean log-depth correction (scale gauge)
    metric_scale: bool = True   # after every pass, rescale the whole map (about the first
                                # keyframe) so the robust geometric mean of all pairs' metric
                                # scales relative to it is 1: the map's scale comes from every
                                # pair decoded so far, not from the first keyframes' few pairs
    metric_scale_tol: float = 0.005  # ... only when it is off by more than this (relative):
                                     # the poses do not all move for a negligible change
    loop_full_min_hops: int = 1  # a verified loop starts a full pass only when it closes a cycle
                                 # of at least this many pair hops in the keyframe graph; a
                                 # shorter one (revisiting a place whose loop is closed already,
                                 # keyframe after keyframe) only adds its pair to the local
                                 # passes. 1: every loop (most accurate); ~5 bounds the work of
                                 # long runs that revisit places lap after lap

    def __post_init__(self) -> None:
        for name, cls in (("alignment", AlignmentConfig), ("full_alignment", AlignmentConfig),
                          ("loop", LoopClosureConfig)):
            v = getattr(self, name)
            if isinstance(v, Mapping):
                object.__setattr__(self, name, cls.from_dict(v))
        if not self.metric_scale_tol >= 0:
            raise ValueError(f"MapperConfig.metric_scale_tol must be >= 0, got {self.metric_scale_tol}")
        if self.loop_full_min_hops < 1:
            raise ValueError(f"MapperConfig.loop_full_min_hops must be >= 1, got {self.loop_full_min_hops}")
        if self.neighbors < 1 or self.window < 1 or self.cloud_stride < 1 or self.max_keyframes < 2:
            raise ValueError("MapperConfig: neighbors, window, cloud_stride must be >= 1 and "
                             "max_keyframes >= 2")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "MapperConfig":
        return config_from_dict(cls, values)


class OptimizationKind(Enum):
    """Which alignment pass a keyframe triggered."""

    NONE = "none"    # first keyframe
    LOCAL = "local"  # the local window
    FULL = "full"    # every keyframe (after a loop closure or on request)


@dataclass
class MapUpdate:
    """What one ``add_keyframe`` / ``optimize_full`` changed.

    Attributes:
        keyframe_id: the keyframe added ("" for ``optimize_full``).
        poses: {keyframe id: (4, 4) corrected T_map_cam} for *every* keyframe.
        loop_closures: verified loops (``LoopCandidate``, accepted).
        rejected_loops: candidates that failed verification (with their reason).
        optimization: which pass ran. timings_ms: decode, loop, optimize, total.
        scale: the mapper's cumulative ``map_scale`` after this update: every length of the
            map was multiplied by ``scale / previous scale`` (about the first keyframe)
            since the previous update; a tracker that follows the map rescales its own
            keyframes' pointmaps by that ratio.
        depths: {keyframe id: (h*w,) optimised depth} of the keyframes of the pass's local
            window (the most recent ones): a tracker makes its own pointmaps of them agree.
    """

    keyframe_id: str
    poses: dict[str, np.ndarray]
    loop_closures: list[LoopCandidate] = field(default_factory=list)
    rejected_loops: list[LoopCandidate] = field(default_factory=list)
    optimization: OptimizationKind = OptimizationKind.NONE
    timings_ms: dict[str, float] = field(default_factory=dict)
    scale: float = 1.0
    depths: dict[str, torch.Tensor] = field(default_factory=dict)


class Mapper:
    """Incremental sparse global alignment + loop closure over keyframes. Thread-safe."""

    def __init__(self, engine: PairEngine, config: MapperConfig = MapperConfig()) -> None:
        self.engine = engine
        self.config = config
        self.device = _engine_device(engine)
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Forget every keyframe."""
        with getattr(self, "_lock", threading.RLock()):
            self.problem = AlignmentProblem(self.config.full_alignment, self.device)
            self.loops = LoopDetector(self.engine, self.config.loop)
            self._kfs: dict[str, KeyframeLike] = {}
            self._T_track: dict[str, np.ndarray] = {}
            self._colors: dict[str, np.ndarray] = {}  # (h, w, 3) uint8 per keyframe
            self._order: list[str] = []
            self.loop_closures: list[LoopCandidate] = []
            self.map_scale = 1.0  # product of the metric rescales since the reset
            # pair-scale measurements from outside (a tracker's): sum of log(pair scale /
            # map scale at map_scale 1) and count (``add_scale_evidence``)
            self._ext_log_sum, self._ext_n = 0.0, 0

    # ------------------------------------------------------------------ queries

    def keyframe_ids(self) -> list[str]:
        with self._lock:
            return list(self._order)

    def poses(self) -> dict[str, np.ndarray]:
        """{keyframe id: (4, 4) corrected T_map_cam}."""
        with self._lock:
            return {k: self.problem.T[self.problem.index[k]].copy() for k in self._order}

    def intrinsics(self) -> dict[str, np.ndarray]:
        """{keyframe id: (3, 3) K at the keyframe's original resolution (known or estimated)}."""
        with self._lock:
            out = {}
            for k in self._order:
                v = self.problem.index[k]
                out[k] = self.problem.views[v].transform.intrinsics_to_orig(self.problem.K_net(v))
            return out

    def __len__(self) -> int:
        return len(self._order)

    # ------------------------------------------------------------------ updates

    def add_keyframe(self, kf: KeyframeLike, *, pose_is_corrected: bool = False,
                     connect_to: tuple[str, ...] | list[str] = ()) -> MapUpdate:
        """Add a keyframe, optimise its local window, look for (and close) loops.

        ``pose_is_corrected``: the keyframe's ``T_map_cam`` already includes the corrections
        made so far (a tracker that follows the mapper, as in ``SlamSystem``); by default it is
        taken as tracking's uncorrected pose and moved by the latest keyframe's correction.
        ``connect_to``: ids of existing keyframes to pair it with besides the ``neighbors``
        most recent ones (the keyframe it was tracked against).

        Raises:
            ValueError: a keyframe with this id exists, a field is missing or malformed,
                or ``max_keyframes`` is reached.
        """
        return self.add_keyframes([kf], pose_is_corrected=pose_is_corrected, connect_to=connect_to)

    def add_keyframes(self, kfs: list[KeyframeLike], *, pose_is_corrected: bool = False,
                      connect_to: tuple[str, ...] | list[str] = ()) -> MapUpdate:
        """Add several keyframes (in order), then ONE local pass over a window holding all of
        them and the ``window - 1`` keyframes before, then loop detection for each. What a
        mapper that fell behind does with the keyframes that queued up meanwhile (coalescing:
        one optimisation instead of one per keyframe). ``add_keyframes([kf])`` is exactly
        ``add_keyframe(kf)``. The update's ``keyframe_id`` is the last keyframe's.

        Raises:
            ValueError: as ``add_keyframe`` (keyframes before the bad one stay added).
        """
        t0 = time.perf_counter()
        if not kfs:
            raise ValueError("add_keyframes needs at least one keyframe")
        checked = [self._check_keyframe(kf) for kf in kfs]
        with self._lock:
            added = []
            for kf, (kid, T_trk) in zip(kfs, checked):
                self._add_view(kf, kid, T_trk, pose_is_corrected, connect_to)
                added.append((kid, kf))
            t_dec = time.perf_counter()
            if len(self._order) == len(added):  # canonical depth waits for the second keyframe
                kid, kf = added[0]
                desc = global_descriptor(self.engine, kf.view, self._descriptor_image(kf))
                self.loops.add(kid, desc)
                added = added[1:]
                if not added:
                    return MapUpdate(kid, self.poses(),
                                     timings_ms={"total": 1e3 * (time.perf_counter() - t0)},
                                     scale=self.map_scale)
            # local window first: it also refines the new keyframes' focals for verification
            window = self._order[-(self.config.window + len(added) - 1):]
            self._optimize(window, self.config.alignment)
            t_loc = time.perf_counter()
            accepted, rejected = [], []
            for kid, kf in added:
                acc, rej = self._close_loops(kid, kf)
                accepted += acc
                rejected += rej
            t_loop = time.perf_counter()
            kind = OptimizationKind.LOCAL
            if any(c.cycle_hops >= self.config.loop_full_min_hops for c in accepted):
                self._optimize(None, self.config.full_alignment, reinit=self.config.reinit_full)
                kind = OptimizationKind.FULL
            t_end = time.perf_counter()
            return MapUpdate(added[-1][0], self.poses(), accepted, rejected, kind, timings_ms={
                "decode": 1e3 * (t_dec - t0), "local": 1e3 * (t_loc - t_dec),
                "loop": 1e3 * (t_loop - t_loc), "full": 1e3 * (t_end - t_loop),
                "total": 1e3 * (t_end - t0)}, scale=self.map_scale,
                depths=self._recent_depths(len(added)))

    def _add_view(self, kf: KeyframeLike, kid: str, T_trk: np.ndarray, pose_is_corrected: bool,
                  connect_to: tuple[str, ...] | list[str] = ()) -> None:
        """One keyframe into the problem: its view, its pairs with the recent keyframes and
        with ``connect_to`` (the keyframes tracking says it sees, e.g. after relocalization in
        a loaded map, where the most recent keyframes may be elsewhere)."""
        if kid in self._kfs:
            raise ValueError(f"keyframe id {kid!r} was already added")
        if len(self._order) >= self.config.max_keyframes:
            raise ValueError(f"the map holds max_keyframes={self.config.max_keyframes} "
                             "keyframes; raise it or start a new map")
        prob = self.problem
        K_net = None if kf.K is None else kf.view.transform.intrinsics_to_net(np.asarray(kf.K))
        T_init = T_trk
        if self._order and not pose_is_corrected:  # carry the corrections made so far: relative to the last keyframe
            last = self._order[-1]
            T_init = prob.T[prob.index[last]] @ np.linalg.inv(self._T_track[last]) @ T_trk
        prob.add_view(kid, kf.view.transform, K_net, T_init)
        recent = self._order[-self.config.neighbors:]
        recent = list(dict.fromkeys(recent + [c for c in connect_to if c in self._kfs]))
        self._kfs[kid] = kf
        self._T_track[kid] = T_trk
        self._colors[kid] = self._network_colors(kf)
        self._order.append(kid)
        self._decode([(kid, r) for r in recent] + [(r, kid) for r in recent])

    def stats(self) -> dict[str, int]:
        """Structural sizes of the map (they grow with keyframes, never with frames):
        keyframes, ordered pairs, stored matches, regression points, anchors, loops."""
        with self._lock:
            prob = self.problem
            return {"keyframes": len(self._order), "views": len(prob.views),
                    "pairs": len(prob.pairs),
                    "matches": sum(int(len(o.weight)) for o in prob.pairs.values()),
                    "regression_points": sum(int(len(o.reg_weight)) for o in prob.pairs.values()),
                    "anchors": sum(int(len(d)) for d in prob.delta),
                    "loop_closures": len(self.loop_closures),
                    "descriptors": len(self.loops._ids)}

    def add_scale_evidence(self, log_ratio_sum: float, count: int,
                           map_scale: float | None = None) -> None:
        """``count`` more measurements of the map's metric scale from outside: pairs a tracker
        decoded against keyframes whose depth agrees with this map, as the sum of their
        log(pair scale / map scale) while the map was at ``map_scale`` (default: now). The
        next pass's metric rescale averages them in with the mapper's own pairs.

        Raises:
            ValueError: a non-finite sum, a negative count or a scale that is not > 0.
        """
        s = self.map_scale if map_scale is None else float(map_scale)
        if not (np.isfinite(log_ratio_sum) and count >= 0 and s > 0 and np.isfinite(s)):
            raise ValueError(f"scale evidence must be a finite sum, a count >= 0 and a map scale "
                             f"> 0, got {log_ratio_sum}, {count}, {map_scale}")
        with self._lock:
            self._ext_log_sum += float(log_ratio_sum) + count * float(np.log(s))
            self._ext_n += int(count)

    def _recent_depths(self, n_added: int) -> dict[str, torch.Tensor]:
        prob = self.problem
        keys = self._order[-(self.config.window + n_added):]
        return {k: prob.depth_map(prob.index[k]).clone() for k in keys}

    def keyframe_depth(self, kf_id: str) -> torch.Tensor:
        """(h*w,) the keyframe's optimised depth (map units, network pixels; 0 where no
        pair gave one). Raises KeyError for an unknown id."""
        with self._lock:
            if kf_id not in self.problem.index:
                raise KeyError(f"keyframe {kf_id!r} is not in the map")
            return self.problem.depth_map(self.problem.index[kf_id]).clone()

    def optimize_full(self) -> MapUpdate:
        """Full alignment pass over every keyframe (the first one anchors the map frame)."""
        t0 = time.perf_counter()
        with self._lock:
            if len(self._order) >= 2:
                self._optimize(None, self.config.full_alignment, reinit=self.config.reinit_full)
            return MapUpdate("", self.poses(), optimization=OptimizationKind.FULL,
                             timings_ms={"total": 1e3 * (time.perf_counter() - t0)},
                             scale=self.map_scale)

    # ------------------------------------------------------------------ point cloud

    def point_cloud(self, max_points: int = 200_000, voxel_size: float = 0.02
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Map points: confident pixels of every keyframe, voxel-averaged, at most ``max_points``.

        Returns:
            xyz (N, 3) float32 in the map frame (metres) and rgb (N, 3) uint8.
        """
        with self._lock:
            return build_point_cloud(
                self.problem, self._order, [self._colors[k] for k in self._order],
                min_conf=self.config.cloud_min_conf, stride=self.config.cloud_stride,
                max_points=max_points, voxel_size=voxel_size)

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _network_colors(kf: KeyframeLike) -> np.ndarray:
        """The keyframe's colours at network resolution (its ``colors`` when it has them)."""
        col = getattr(kf, "colors", None)
        if col is not None:
            return np.asarray(col, dtype=np.uint8)
        return network_colors(kf.image, kf.view.transform)

    @staticmethod
    def _descriptor_image(kf: KeyframeLike) -> np.ndarray:
        return kf.image if kf.image is not None else getattr(kf, "colors")

    @staticmethod
    def _check_keyframe(kf: Any) -> tuple[str, np.ndarray]:
        for name in ("id", "stamp_ns", "T_map_cam", "K", "view", "image"):
            if not hasattr(kf, name):
                raise ValueError(f"keyframe lacks the field {name!r} (expected id, stamp_ns, "
                                 "T_map_cam, K, view, image)")
        T = np.asarray(kf.T_map_cam, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError(f"keyframe {kf.id!r}: T_map_cam must be a finite (4, 4) matrix, got "
                             f"shape {T.shape}")
        if not isinstance(kf.view, EncodedView):
            raise ValueError(f"keyframe {kf.id!r}: view must be an EncodedView, got "
                             f"{type(kf.view).__name__}")
        if kf.image is None and getattr(kf, "colors", None) is None:
            raise ValueError(f"keyframe {kf.id!r} has neither image nor colors")
        return str(kf.id), T

    def _decode(self, pairs: list[tuple[str, str]]) -> None:
        if not pairs:
            return
        preds = self.engine.decode_batch([(self._kfs[a].view, self._kfs[b].view) for a, b in pairs])
        for (a, b), pred in zip(pairs, preds):
            self.problem.add_pair(pred, a, b)

    def _optimize(self, keys: list[str] | None, cfg: AlignmentConfig, *, reinit: bool = False) -> None:
        """Optimise ``keys`` (None: every keyframe but the first, which anchors the map frame
        and its scale) with the others fixed."""
        prob = self.problem
        prob.config = cfg
        full = keys is None
        if keys is None:
            keys = self._order[1:]
        elif self._order[0] in keys and len(keys) == len(self._order):
            keys = [k for k in keys if k != self._order[0]]
        res = prob.optimize(keys, reinit=reinit,
                            center_scale=full and self.config.keep_mean_scale)
        if self.config.metric_scale:
            extra = (self._ext_log_sum - self._ext_n * float(np.log(self.map_scale)), self._ext_n)
            c = prob.metric_rescale(tol=self.config.metric_scale_tol, extra=extra)
            if c != 1.0:
                self.map_scale *= c
                log.debug("mapper: map rescaled by %.4f (metric scale of %d pairs)", c,
                          len(prob.pairs))
        log.debug("mapper: %s pass over %s keyframes: %s", "full" if keys is None else "local",
                  len(keys) if keys else len(self._order), res.timings_ms)

    def _hops(self, a: str, b: str) -> int:
        """Pair hops between two keyframes in the current keyframe graph (a large number
        when they are not connected)."""
        prob = self.problem
        adj: dict[int, set[int]] = {}
        for (i, j) in prob.pairs:
            x, y = prob.index[i], prob.index[j]
            adj.setdefault(x, set()).add(y)
            adj.setdefault(y, set()).add(x)
        src, dst = prob.index[a], prob.index[b]
        seen, frontier, hops = {src}, [src], 0
        while frontier:
            if dst in seen:
                return hops
            hops += 1
            nxt = []
            for x in frontier:
                for y in adj.get(x, ()):
                    if y not in seen:
                        seen.add(y)
                        nxt.append(y)
            frontier = nxt
        return 1 << 30

    def _close_loops(self, kid: str, kf: KeyframeLike) -> tuple[list[LoopCandidate], list[LoopCandidate]]:
        desc = global_descriptor(self.engine, kf.view, self._descriptor_image(kf))
        cands = self.loops.candidates(desc)
        self.loops.add(kid, desc)
        accepted, rejected = [], []
        v = self.problem.index[kid]
        for mid, sim in cands:
            if (mid, kid) in self.problem.pairs:
                continue
            cand = LoopCandidate(query_id=kid, match_id=mid, similarity=sim)
            cand, pred = self.loops.verify(cand, self._kfs[mid].view, kf.view, self.problem.K_net(v))
            if cand.accepted:
                cand.cycle_hops = self._hops(kid, mid)
                self.problem.add_pair(pred, mid, kid)
                self._decode([(kid, mid)])
                accepted.append(cand)
            else:
                rejected.append(cand)
        self.loop_closures.extend(accepted)
        return accepted, rejected

    # ------------------------------------------------------------------ state (saved maps)

    def state_dict(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The mapper's state as (JSON-able meta, arrays): see ``slam.mapper_state``."""
        from .mapper_state import export_state

        with self._lock:
            return export_state(self)

    def load_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
                   keyframes) -> None:
        """Replace the state by one from ``state_dict`` (a saved map). ``keyframes``: the
        map's keyframes (``KeyframeLike``, encoded by this mapper's engine). Nothing is
        decoded or optimised: mapping resumes where it stopped.

        Raises:
            ValueError: naming what is wrong; the mapper is unchanged then.
        """
        from .mapper_state import import_state

        kfs = list(keyframes)
        for kf in kfs:
            self._check_keyframe(kf)
        with self._lock:
            import_state(self, meta, arrays, kfs)

    def _install(self, problem: AlignmentProblem, keyframes: list, T_track: dict,
                 loop_closures: list[LoopCandidate]) -> None:
        """Swap in a complete state (``mapper_state.import_state``; lock held)."""
        loops = LoopDetector(self.engine, self.config.loop)
        colors = {}
        for kf in keyframes:
            loops.add(str(kf.id), global_descriptor(self.engine, kf.view, self._descriptor_image(kf)))
            colors[str(kf.id)] = self._network_colors(kf)
        self.problem = problem
        self.loops = loops
        self._kfs = {str(kf.id): kf for kf in keyframes}
        self._T_track = {k: np.asarray(T, dtype=np.float64).copy() for k, T in T_track.items()}
        self._colors = colors
        self._order = [str(kf.id) for kf in keyframes]
        self.loop_closures = list(loop_closures)
        self.map_scale = 1.0  # (the loaded map's keyframes are in its scale)
        self._ext_log_sum, self._ext_n = 0.0, 0

    def transform_map(self, C: np.ndarray) -> None:
        """Move the whole map rigidly: every pose ``T`` becomes ``C @ T`` (``set_pose``)."""
        C = np.asarray(C, dtype=np.float64)
        if C.shape != (4, 4) or not np.all(np.isfinite(C)):
            raise ValueError(f"C must be a finite (4, 4) rigid transform, got shape {C.shape}")
        with self._lock:
            for v in range(len(self.problem.T)):
                self.problem.T[v] = C @ self.problem.T[v]
            for k in self._T_track:
                self._T_track[k] = C @ self._T_track[k]

    def keyframe_points(self, kf_id: str, min_conf: float | None = None) -> np.ndarray:
        """(h, w, 3) float32: the keyframe's optimised depth as 3D points in its own camera
        frame (map units, network resolution); zeros where the fused confidence is below
        ``min_conf`` (default: the alignment's ``min_conf``) or no pair gave a depth.

        Raises:
            KeyError: unknown keyframe id.
        """
        with self._lock:
            prob = self.problem
            if kf_id not in prob.index:
                raise KeyError(f"keyframe {kf_id!r} is not in the map")
            v = prob.index[kf_id]
            view = prob.views[v]
            if min_conf is None:
                min_conf = prob.config.min_conf
            idx = torch.arange(view.h * view.w, device=prob.device)
            z = prob.depth_map(v)
            ok = (view.depth > 0) & (view.conf >= min_conf)
            X = prob._backproject(v, idx, depth=z) * ok[:, None]
            return X.reshape(view.h, view.w, 3).float().cpu().numpy()
