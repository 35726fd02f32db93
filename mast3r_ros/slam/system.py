"""``SlamSystem``: tracker + relocalization (+ an optional mapper) on ONE engine.

Used by both ``mast3r-ros slam --bag`` and ``slam_node`` (so both give the same trajectory).
Thread-safe: one internal lock serialises ``process`` and the service-like calls (reset,
set_pose, keyframes, save/load), as a multi-threaded ROS executor needs.

States (``TrackingState``): the first frame becomes the first keyframe (INITIALIZING, pose =
the initial pose); then TRACKING while frame-to-keyframe tracking holds; LOST when it fails
(no pose for that frame); while lost every frame is relocalized against the keyframes ->
RELOCALIZED (pose from relocalization), then TRACKING against the keyframe it was found in.

Trajectory: every frame with a pose is stored as (stamp, keyframe, ``T_kf_cam``) — small
arrays — so ``trajectory()`` follows keyframe corrections (mapper, ``set_pose``).

Mapping (``SlamConfig.mapping_mode``, a ``MappingMode``):

- ``sync``: a new keyframe is handed to the mapper inside ``process`` and its corrections are
  applied before ``process`` returns. Deterministic (same frames, same trajectory): offline
  runs (``mast3r-ros slam``) and tests. Tracking waits for every local pass.
- ``background``: a mapping thread owns the mapper. ``process`` only puts the new keyframe in
  a bounded queue and returns; the thread takes *all* queued keyframes at once
  (``Mapper.add_keyframes``: one local pass for the batch, so a mapper that falls behind
  catches up instead of queueing work), and hands back the corrected poses, applied between
  frames (at once when no frame is being processed, else at the start of the next
  ``process``; ``FrameResult.map_updated`` tells). Keyframes the mapper has not seen yet
  follow the correction of the keyframe they were tracked against. Only when
  ``mapping_queue`` keyframes are already waiting does ``process`` wait for the thread to
  take them (memory stays bounded; counted in ``counts["mapping_waits"]``). The order of
  events depends on timing, so results vary slightly from run to run. ``slam_node`` uses
  this mode by default (parameter ``mapping_mode``).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, Mapping

import numpy as np
import torch

from mast3r_ros.config import config_from_dict
from mast3r_ros.geometry import check_T

from .tracker import Tracker, TrackerConfig, TrackOutcome
from .types import FrameResult, Keyframe, TrackingState

log = logging.getLogger(__name__)

__all__ = ["MappingMode", "SlamConfig", "SlamSystem"]


class MappingMode(Enum):
    """Where the mapper runs (see the module docstring)."""

    SYNC = "sync"              # inside process(): deterministic, tracking waits for mapping
    BACKGROUND = "background"  # a mapping thread: tracking never waits for an alignment pass


@dataclass(frozen=True)
class SlamConfig:
    """Settings of ``SlamSystem``: ``tracker`` (``TrackerConfig`` or a dict), ``reloc``
    (the relocalization core's config as a dict, or None for its defaults) and where the
    mapper runs."""

    tracker: TrackerConfig = field(default_factory=TrackerConfig)  # tracking settings
    reloc: Any = None  # relocalization settings (dict / RelocConfig), None = defaults
    mapping_mode: MappingMode = MappingMode.SYNC  # sync | background (with a mapper only)
    mapping_queue: int = 8  # background: keyframes waiting for the mapping thread at most

    def __post_init__(self) -> None:
        if not isinstance(self.mapping_mode, MappingMode):
            try:
                object.__setattr__(self, "mapping_mode", MappingMode(str(self.mapping_mode)))
            except ValueError:
                raise ValueError(f"mapping_mode must be one of "
                                 f"{[m.value for m in MappingMode]}, got {self.mapping_mode!r}") from None
        if isinstance(self.mapping_queue, bool) or int(self.mapping_queue) < 1:
            raise ValueError(f"mapping_queue must be >= 1, got {self.mapping_queue!r}")
        if isinstance(self.tracker, Mapping):
            object.__setattr__(self, "tracker", TrackerConfig.from_dict(self.tracker))
        if not isinstance(self.tracker, TrackerConfig):
            raise ValueError(f"tracker must be a TrackerConfig or dict, got {type(self.tracker).__name__}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SlamConfig":
        """Build from a dict ({"tracker": {...}, "reloc": {...}}), rejecting unknown keys."""
        return config_from_dict(cls, data)


def _rigid(T) -> np.ndarray:
    """(4, 4) float64 with its rotation projected onto SO(3) (the mapper optimises in float32:
    its rotations are orthonormal to ~1e-6 only, which quaternion messages would expose)."""
    T = np.array(T, dtype=np.float64)
    U, _, Vt = np.linalg.svd(T[:3, :3])
    R = U @ Vt
    if np.linalg.det(R) < 0:
        R = U @ np.diag([1.0, 1.0, -1.0]) @ Vt
    T[:3, :3] = R
    T[3] = (0.0, 0.0, 0.0, 1.0)
    return T


def _confidence(num_inliers: int, num_matches: int, min_inliers: int) -> float:
    if num_matches <= 0:
        return 0.0
    return float(min(1.0, num_inliers / num_matches) * min(1.0, num_inliers / (3.0 * min_inliers)))


class SlamSystem:
    """Tracking, relocalization and (optionally) mapping on one ``PairEngine``.

    Args:
        engine: the one engine of the process (network or simulator).
        config: ``SlamConfig`` (or a ``TrackerConfig``, or None for defaults).
        mapper: optional mapper (``add_keyframe(kf) -> MapUpdate``); None = tracking only,
            keyframe poses stay as tracked.
        localization_only: never add keyframes nor change them, and never update the mapper
            (track against a loaded map; when a keyframe would be due, switch to the nearest
            existing keyframe). Without a loaded map every frame is LOST (nothing to localize
            in); ``set_pose`` then only says which keyframe to track against.
    """

    def __init__(self, engine, config: SlamConfig | TrackerConfig | None = None, *,
                 mapper=None, localization_only: bool = False) -> None:
        if config is None:
            config = SlamConfig()
        elif isinstance(config, TrackerConfig):
            config = SlamConfig(tracker=config)
        elif not isinstance(config, SlamConfig):
            raise ValueError(f"config must be a SlamConfig or TrackerConfig, got {type(config).__name__}")
        self.engine = engine
        self.config = config
        self.mapper = mapper
        self.localization_only = bool(localization_only)
        self.tracker = Tracker(engine, config.tracker)
        self.relocalizer = self._make_relocalizer()
        self._lock = threading.RLock()
        self._init_pose = np.eye(4)
        self._background = mapper is not None and config.mapping_mode is MappingMode.BACKGROUND
        # background mapping: queue of (mapper keyframe, reference id, T_map_ref then),
        # the latest finished update, and the thread (started with the first keyframe)
        self._map_cv = threading.Condition()
        self._map_queue: deque = deque()
        self._map_pending = None
        self._map_busy = False
        self._map_stop = False
        self._map_generation = 0
        self._map_thread: threading.Thread | None = None
        self._map_error: str = ""
        self._map_updated = False
        self._kf_ref: dict[str, str] = {}   # keyframe id -> keyframe it was tracked against
        self._warned_no_map = False
        self._clear()

    # ------------------------------------------------------------------ setup

    def _make_relocalizer(self):
        """The relocalization core when available (branch ``reloc``), else None: the
        built-in fallback (``_relocalize_builtin``) tries keyframes in turn."""
        try:
            from mast3r_ros.reloc import RelocConfig, Relocalizer  # noqa: F401
        except ImportError:
            return None
        rc = self.config.reloc
        if rc is None:  # SLAM default: verify the 3 best retrieved keyframes (cost per lost frame)
            rc = RelocConfig(top_k=3)
        elif isinstance(rc, Mapping):
            rc = RelocConfig.from_dict(rc)
        return Relocalizer(self.engine, rc)

    def _clear(self) -> None:
        self.state = TrackingState.INITIALIZING
        self._current: Keyframe | None = None
        self._use_frm_next = True
        self._last_T_map_cam: np.ndarray | None = None
        self._traj_stamps: list[int] = []
        self._traj_kf: list[Keyframe] = []
        self._traj_T: list[np.ndarray] = []
        self._reloc_cursor = 0
        self._kf_ref = {}
        self._map_updated = False
        # the mapper's map_scale the tracker's keyframes are in (a reset or loaded mapper
        # starts at 1): a map update with another scale rescales them (``_apply_map_update``)
        self._map_scale = 1.0
        self.counts = {"frames": 0, "lost": 0, "relocalized": 0, "keyframes": 0,
                       "map_updates": 0, "mapping_waits": 0, "mapped_batches": 0}

    # ------------------------------------------------------------------ API

    def process(self, image: np.ndarray, stamp_ns: int, K: np.ndarray | None = None, *,
                frame_id: str | None = None) -> FrameResult:
        """Track one frame.

        Args:
            image: (H, W, 3) uint8 RGB.
            stamp_ns: image stamp in nanoseconds (the trajectory key).
            K: (3, 3) intrinsics at the image's resolution, or None (zeros / NaN count as
                None): estimated from the first keyframe's pointmap, then fixed.
            frame_id: passed to ``engine.encode`` (the simulator finds its frame by it).

        Returns:
            ``FrameResult``.

        Raises:
            ValueError: not an (H, W, 3) uint8 image.
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        with self._lock:
            t0 = time.perf_counter()
            timings: dict[str, float] = {}
            if self._background:
                self._apply_pending_update()
            t = time.perf_counter()
            view = self.engine.encode(image, frame_id=frame_id)
            timings["encode"] = (time.perf_counter() - t) * 1e3
            K_use, estimated = self.tracker.camera_K(K)
            self.counts["frames"] += 1
            if not self.tracker.keyframes and self.localization_only:
                if not self._warned_no_map:
                    log.warning("localization_only without a map: frames are not tracked "
                                "(load a map first)")
                    self._warned_no_map = True
                res = FrameResult(stamp_ns, TrackingState.LOST, None, "", K=K_use,
                                  intrinsics_estimated=estimated)
            elif not self.tracker.keyframes:
                res = self._initialize(view, image, stamp_ns, K_use)
            elif self.state is TrackingState.LOST or self._current is None:
                res = self._relocalize(view, image, stamp_ns, K_use, estimated, timings)
            else:
                res = self._track(view, image, stamp_ns, K_use, estimated, timings)
            res.timings_ms = {**timings, **res.timings_ms,
                              "total": (time.perf_counter() - t0) * 1e3}
            self.state = res.state
            res.map_updated, self._map_updated = self._map_updated, False
            if res.state is TrackingState.LOST:
                self.counts["lost"] += 1
            elif res.state is TrackingState.RELOCALIZED:
                self.counts["relocalized"] += 1
            return res

    def reset(self) -> None:
        """Forget keyframes, trajectory, estimated intrinsics, references and the mapper's map."""
        with self._lock:
            self._reset_tracking()
            if self.mapper is not None and hasattr(self.mapper, "reset"):
                self.mapper.reset()   # (background: after the running pass, under its lock)

    def _reset_tracking(self) -> None:
        """``reset`` without the mapper (``load_map`` restores the mapper's state itself):
        tracking, references, trajectory, and the keyframes queued for background mapping
        (with the update being computed: a generation change makes the thread drop it)."""
        if self._background:
            with self._map_cv:
                self._map_generation += 1
                self._map_queue.clear()
                self._map_pending = None
                self._map_cv.notify_all()
        self.tracker.reset()
        if self.relocalizer is not None:
            self.relocalizer.reset()
        self._clear()

    def set_pose(self, T_map_cam: np.ndarray) -> None:
        """Declare the current camera pose: the whole map (keyframes, the mapper's poses,
        trajectory) is moved rigidly so the last tracked frame has this pose; before the
        first frame it is the initial pose.

        In localization mode the map is never moved: the pose is a hint instead, the next
        frame is tracked against the keyframe nearest to it (or relocalized when that fails).
        """
        T = check_T(T_map_cam, "T_map_cam")
        with self._lock:
            if self.localization_only and self.tracker.keyframes:
                self._current = self._nearest_keyframe(T)
                self._use_frm_next = True
                self._last_T_map_cam = T.copy()
                if self.state is TrackingState.LOST:
                    self.state = TrackingState.TRACKING
                return
            if self._last_T_map_cam is None or not self.tracker.keyframes:
                self._init_pose = T.copy()
                return
            C = T @ np.linalg.inv(self._last_T_map_cam)
            for kf in self.tracker.keyframes:
                kf.T_map_cam = C @ kf.T_map_cam
            if self.mapper is not None and hasattr(self.mapper, "transform_map"):
                self.mapper.transform_map(C)
            self._last_T_map_cam = T.copy()
            self._sync_references(self.tracker.keyframes)

    def keyframes(self) -> list[Keyframe]:
        """The keyframes (a new list; the objects are shared)."""
        with self._lock:
            return list(self.tracker.keyframes)

    def trajectory(self) -> list[tuple[int, np.ndarray]]:
        """Every frame that got a pose: (stamp_ns, (4, 4) T_map_cam), after corrections."""
        with self._lock:
            return [(s, kf.T_map_cam @ T) for s, kf, T in
                    zip(self._traj_stamps, self._traj_kf, self._traj_T)]

    def save_map(self, path, overwrite: bool = False) -> int:
        """Save the map: keyframes and, with a mapper, its state (see ``slam.map_io``);
        returns how many keyframes were saved."""
        from .map_io import save_keyframes

        with self._lock:
            return save_keyframes(self, path, overwrite=overwrite)

    def load_map(self, path) -> int:
        """Replace the map by the one saved at ``path`` (keyframes, and the mapper's state
        when both the map and this system have one: mapping then continues on it); tracking
        then starts by relocalizing against it. Returns how many keyframes were loaded.

        Raises:
            MapFormatError: the map is refused (the message names why); the current map is
                kept.
        """
        from .map_io import load_keyframes

        self.wait_for_mapping()   # background: the running pass and the queue finish first
        with self._lock:
            return load_keyframes(self, path)

    # ------------------------------------------------------------------ steps

    def _record(self, stamp_ns: int, kf: Keyframe, T_kf_cam: np.ndarray) -> np.ndarray:
        self._traj_stamps.append(int(stamp_ns))
        self._traj_kf.append(kf)
        self._traj_T.append(np.asarray(T_kf_cam, dtype=np.float64))
        T_map_cam = kf.T_map_cam @ T_kf_cam
        self._last_T_map_cam = T_map_cam
        return T_map_cam

    def _initialize(self, view, image, stamp_ns, K) -> FrameResult:
        kf = self.tracker.initialize(view, image, stamp_ns, self._init_pose, K)
        self._current = kf
        self._use_frm_next = True
        self._on_new_keyframe(kf)
        T = self._record(stamp_ns, kf, np.eye(4))
        return FrameResult(stamp_ns, TrackingState.INITIALIZING, T, kf.id, new_keyframe=kf,
                           K=kf.K, intrinsics_estimated=kf.intrinsics_estimated,
                           confidence=1.0)

    def _track(self, view, image, stamp_ns, K, estimated, timings) -> FrameResult:
        cfg = self.config.tracker
        kf = self._current
        assert kf is not None
        out = self.tracker.track(kf, view, K, use_frm=self._use_frm_next)
        timings.update(out.timings_ms)
        if out.pose is None and self._last_T_map_cam is not None and out.texture >= cfg.reloc_min_texture:
            # second chance before LOST: the keyframe nearest to the last pose (e.g. right
            # after a relocalization against a reference seen from afar)
            near = self._nearest_keyframe(self._last_T_map_cam, exclude=kf)
            if near is not None:
                out2 = self.tracker.track(near, view, K, use_frm=True)
                if out2.pose is not None and out2.pose.num_inliers >= \
                        cfg.second_chance_min_inlier_ratio * out2.num_matches:
                    out, kf = out2, near
                    self._current = near
        if out.pose is None:
            log.info("tracking lost at %d: %s", stamp_ns, out.message)
            self._reloc_cursor = 0
            return FrameResult(stamp_ns, TrackingState.LOST, None, kf.id, out.num_matches, 0,
                               0.0, 0.0, K=K, intrinsics_estimated=estimated, matcher=out.matcher)
        self._use_frm_next = False
        T_map_cam = self._record(stamp_ns, kf, out.pose.T_kf_cam)
        t = time.perf_counter()
        new_kf = None
        if not self.localization_only:
            self.tracker.fuse(out)
            if self.tracker.keyframe_due(out):
                new_kf = self.tracker.keyframe_from(out, view, image, stamp_ns, T_map_cam, K,
                                                    estimated)
                self._current = new_kf
                self._use_frm_next = False
                # the frame is the keyframe: re-anchor its trajectory entry on it
                self._traj_kf[-1], self._traj_T[-1] = new_kf, np.eye(4)
                if self.mapper is None:  # with a mapper, alignment owns the map's scale
                    self._rescale_map(self.tracker.scale_correction())
                self._on_new_keyframe(new_kf, ref=kf)
                T_map_cam = new_kf.T_map_cam
        elif self.tracker.keyframe_due(out):
            self._current = self._nearest_keyframe(T_map_cam) or kf
        timings["fuse"] = (time.perf_counter() - t) * 1e3
        n, ni = out.num_matches, out.num_inliers
        return FrameResult(stamp_ns, TrackingState.TRACKING, T_map_cam, kf.id, n, ni,
                           ni / n if n else 0.0, _confidence(ni, n, cfg.min_inliers), new_kf,
                           K=K, intrinsics_estimated=estimated, matcher=out.matcher)

    def _rescale_map(self, c: float) -> None:
        """Scale every length of the map by ``c`` about the first keyframe's centre (metric
        scale averaging, ``TrackerConfig.metric_scale_averaging``)."""
        if abs(np.log(c)) < 1e-3 or not self.tracker.keyframes:
            return
        p0 = self.tracker.keyframes[0].T_map_cam[:3, 3].copy()
        for kf in self.tracker.keyframes:
            kf.T_map_cam[:3, 3] = p0 + c * (kf.T_map_cam[:3, 3] - p0)
            kf.pts3d = kf.pts3d * c
            kf.median_depth *= c
        for T in self._traj_T:
            T[:3, 3] *= c
        if self._last_T_map_cam is not None:
            self._last_T_map_cam = self._traj_kf[-1].T_map_cam @ self._traj_T[-1]
        self.tracker.applied_rescale(c)
        log.debug("map rescaled by %.4f (metric scale averaging)", c)

    def _nearest_keyframe(self, T_map_cam: np.ndarray, exclude: Keyframe | None = None
                          ) -> Keyframe | None:
        """The keyframe closest to a pose (distance / its depth + viewing-direction change)."""
        kfs = [k for k in self.tracker.keyframes if k is not exclude]
        if not kfs:
            return None
        d = [np.linalg.norm(k.T_map_cam[:3, 3] - T_map_cam[:3, 3]) / max(k.median_depth, 1e-3)
             + (1.0 - float(np.dot(k.T_map_cam[:3, 2], T_map_cam[:3, 2]))) for k in kfs]
        return kfs[int(np.argmin(d))]

    def _relocalize(self, view, image, stamp_ns, K, estimated, timings) -> FrameResult:
        """While lost: first the last keyframe (FRM + pose, one decode); if the frame is
        blank relative to it (``reloc_min_texture``) stop there; else the relocalization
        core (retrieval + verification) or, without it, a few keyframes in turn. Right after
        ``load_map`` (no current keyframe) the relocalization core goes first."""
        cfg = self.config.tracker
        t = time.perf_counter()
        if K is None:  # loaded map without camera info: take the keyframes' intrinsics
            K = self.tracker.keyframes[0].K
            estimated = True
        found = None
        tried_core = self._current is None and self.relocalizer is not None
        if tried_core:
            # a loaded map (no keyframe tracked yet): retrieval over the whole map first, not
            # the last keyframe saved, which may be anywhere
            found = self._relocalize_core(view, image, K)
            if found is not None:
                return self._relocalized(found, stamp_ns, K, estimated, timings, t)
        last = self._current or self.tracker.keyframes[-1]
        out = self.tracker.track(last, view, K, use_frm=True, min_inliers=cfg.reloc_min_inliers,
                                 min_texture=cfg.reloc_min_texture)
        if out.pose is not None:
            found = (last, out.pose.T_kf_cam, out.num_matches, out.num_inliers)
        elif out.texture < cfg.reloc_min_texture:
            log.debug("lost frame %d looks blank (textured fraction %.2f): not relocalizing",
                      stamp_ns, out.texture)
        elif self.relocalizer is not None:
            if not tried_core:
                found = self._relocalize_core(view, image, K)
        else:
            found = self._relocalize_builtin(view, K, exclude=last)
        if found is None:
            timings["reloc"] = (time.perf_counter() - t) * 1e3
            return FrameResult(stamp_ns, TrackingState.LOST, None, "", K=K,
                               intrinsics_estimated=estimated)
        return self._relocalized(found, stamp_ns, K, estimated, timings, t)

    def _relocalized(self, found, stamp_ns, K, estimated, timings, t0) -> FrameResult:
        timings["reloc"] = (time.perf_counter() - t0) * 1e3
        kf, T_kf_cam, n, ni = found
        self._current = kf
        self._use_frm_next = True
        T_map_cam = self._record(stamp_ns, kf, T_kf_cam)
        log.info("relocalized at %d against %s (%d/%d inliers)", stamp_ns, kf.id, ni, n)
        return FrameResult(stamp_ns, TrackingState.RELOCALIZED, T_map_cam, kf.id, n, ni,
                           ni / n if n else 0.0,
                           _confidence(ni, n, self.config.tracker.min_inliers),
                           K=K, intrinsics_estimated=estimated, matcher="frm")

    def _relocalize_builtin(self, view, K, exclude: Keyframe | None = None
                            ) -> tuple[Keyframe, np.ndarray, int, int] | None:
        """Without the relocalization core: a few keyframes per frame, round robin over the
        newest-first list, with FRM + the tracker's pose; best by inliers."""
        cfg = self.config.tracker
        kfs = [k for k in self.tracker.keyframes[::-1] if k is not exclude]
        cands: list[Keyframe] = []
        while kfs and len(cands) < min(cfg.reloc_max_candidates, len(kfs)):
            k = kfs[self._reloc_cursor % len(kfs)]
            self._reloc_cursor += 1
            if k not in cands:
                cands.append(k)
        best: TrackOutcome | None = None
        for kf in cands:
            out = self.tracker.track(kf, view, K, use_frm=True, min_inliers=cfg.reloc_min_inliers)
            if out.pose is not None and (best is None or out.num_inliers > best.num_inliers):
                best = out
        if best is None or best.pose is None:
            return None
        return best.keyframe, best.pose.T_kf_cam, best.num_matches, best.num_inliers

    def _relocalize_core(self, view, image, K) -> tuple[Keyframe, np.ndarray, int, int] | None:
        """Relocalization through the relocalization core (its references are the keyframes)."""
        res = self.relocalizer.relocalize(image, K=K, frame_id=view.frame_id, view=view)
        if not res.success or res.T_map_cam is None:
            log.debug("relocalization failed: %s", res.message)
            return None
        kf = next((k for k in self.tracker.keyframes if k.id == res.reference_id), None)
        if kf is None:
            return None
        # relative to the pose the reference was registered with (the map may have been
        # rescaled since; references are not re-registered for that)
        T_ref = self.relocalizer.get_reference(kf.id).T_map_cam
        T_kf_cam = np.linalg.inv(T_ref) @ res.T_map_cam
        return kf, T_kf_cam, int(res.num_matches), int(res.num_inliers)

    def _on_new_keyframe(self, kf: Keyframe, ref: Keyframe | None = None) -> None:
        """A new tracking keyframe (``ref``: the keyframe it was tracked against): a
        relocalization reference, and the mapper's (at once in sync mode, through the
        mapping thread's queue in background mode)."""
        self.counts["keyframes"] = len(self.tracker.keyframes)
        if self.relocalizer is not None:
            self._add_reference(kf)
        if ref is not None:
            self._kf_ref[kf.id] = ref.id
        if self.mapper is None:
            return
        # the tracker's pairs since the last keyframe measure the map's scale too
        evidence = self.tracker.take_scale_evidence()
        if not self._background:
            from .map_link import add_to_mapper

            if hasattr(self.mapper, "add_scale_evidence"):
                self.mapper.add_scale_evidence(*evidence, map_scale=self._map_scale)
            self._apply_map_update(add_to_mapper(
                self.mapper, kf, connect_to=() if ref is None else (ref.id,)))
            return
        self._enqueue_keyframe(kf, ref, evidence)

    # ------------------------------------------------------------------ background mapping

    def _enqueue_keyframe(self, kf: Keyframe, ref: Keyframe | None,
                          evidence: tuple[float, int] = (0.0, 0)) -> None:
        """Hand a keyframe to the mapping thread (caller holds ``_lock``)."""
        from .map_link import to_mapper_keyframe

        item = (to_mapper_keyframe(kf), None if ref is None else ref.id,
                None if ref is None else np.array(ref.T_map_cam, dtype=np.float64),
                self._map_scale, evidence)
        with self._map_cv:
            if self._map_thread is None or not self._map_thread.is_alive():
                self._map_stop = False
                self._map_thread = threading.Thread(target=self._mapping_loop,
                                                     name="slam_mapping", daemon=True)
                self._map_thread.start()
            if len(self._map_queue) >= self.config.mapping_queue:
                # the mapper is more than a queue behind: wait until it takes the queue
                self.counts["mapping_waits"] += 1
                log.warning("mapping queue full (%d keyframes): tracking waits for the mapper",
                            len(self._map_queue))
                self._map_cv.wait_for(lambda: len(self._map_queue) < self.config.mapping_queue
                                      or self._map_stop)
            self._map_queue.append(item)
            self._map_cv.notify_all()

    def _mapping_loop(self) -> None:
        """The mapping thread: take every queued keyframe, one ``add_keyframes``, publish."""
        while True:
            with self._map_cv:
                self._map_cv.wait_for(lambda: self._map_queue or self._map_stop)
                if self._map_stop:
                    return
                batch = list(self._map_queue)
                self._map_queue.clear()
                gen = self._map_generation
                self._map_busy = True
                self._map_cv.notify_all()
            try:
                update = self._map_batch(batch, gen)
            except Exception as exc:  # never fatal: the keyframes keep their tracked poses
                log.error("mapping failed for keyframes %s: %s: %s",
                          [b[0].id for b in batch], type(exc).__name__, exc)
                self._map_error = f"{type(exc).__name__}: {exc}"
                update = None
            with self._map_cv:
                self._map_busy = False
                if update is not None and gen == self._map_generation:
                    self._map_pending = update
                self._map_cv.notify_all()
            # apply now when no frame is being processed; else process() does it first
            if self._lock.acquire(blocking=False):
                try:
                    self._apply_pending_update()
                finally:
                    self._lock.release()

    def _map_batch(self, batch: list, gen: int):
        """Initial poses relative to the keyframe each was tracked against (as the mapper
        has it now: corrections made since carry over), then one ``add_keyframes``. None
        when a ``reset`` came in between (checked under the mapper's lock)."""
        from contextlib import nullcontext

        from .map_link import add_to_mapper

        with getattr(self.mapper, "_lock", None) or nullcontext():
            if gen != self._map_generation:
                return None
            known = self.mapper.poses() if hasattr(self.mapper, "poses") else {}
            scale_now = float(getattr(self.mapper, "map_scale", 1.0))
            init: dict[str, np.ndarray] = {}
            mkfs = []
            for mkf, ref_id, T_ref_then, scale_then, evidence in batch:
                if hasattr(self.mapper, "add_scale_evidence"):
                    self.mapper.add_scale_evidence(*evidence, map_scale=scale_then)
                T_ref_now = init.get(ref_id, known.get(ref_id)) if ref_id is not None else None
                if T_ref_now is not None:   # (the relative motion in the map's scale now)
                    rel = np.linalg.inv(T_ref_then) @ mkf.T_map_cam
                    rel[:3, 3] *= scale_now / scale_then
                    mkf.T_map_cam = T_ref_now @ rel
                init[mkf.id] = mkf.T_map_cam
                mkfs.append(mkf)
            # each keyframe is also paired with the one it was tracked against
            refs = tuple(dict.fromkeys(b[1] for b in batch if b[1] is not None))
            if hasattr(self.mapper, "add_keyframes"):
                update = self.mapper.add_keyframes(mkfs, pose_is_corrected=True, connect_to=refs)
            else:  # a duck-typed mapper: one keyframe at a time
                for mkf in mkfs:
                    update = add_to_mapper(self.mapper, mkf)
        self.counts["mapped_batches"] += 1
        return update

    def _apply_pending_update(self) -> None:
        """Apply the mapping thread's latest update (caller holds ``_lock``)."""
        with self._map_cv:
            update, self._map_pending = self._map_pending, None
        if update is None:
            return
        self._apply_map_update(update)
        self._map_updated = True
        self.counts["map_updates"] += 1
        if self._traj_kf:
            self._last_T_map_cam = self._traj_kf[-1].T_map_cam @ self._traj_T[-1]

    def wait_for_mapping(self, timeout: float | None = None) -> bool:
        """Background mode: wait until the mapping thread has mapped every queued keyframe,
        and apply its last update. Returns False on timeout (True at once in sync mode)."""
        if not self._background:
            return True
        with self._map_cv:
            done = self._map_cv.wait_for(lambda: not self._map_queue and not self._map_busy,
                                         timeout)
        with self._lock:
            self._apply_pending_update()
        return bool(done)

    def mapping_status(self) -> dict[str, Any]:
        """Background mapping state: queued keyframes, whether a pass runs, last error."""
        with self._map_cv:
            return {"mode": self.config.mapping_mode.value if self.mapper is not None else "off",
                    "queued": len(self._map_queue), "busy": self._map_busy,
                    "error": self._map_error}

    def close(self) -> None:
        """Stop the mapping thread (after its running pass). The system stays usable in the
        sense that a later keyframe starts a new thread."""
        with self._map_cv:
            self._map_stop = True
            self._map_cv.notify_all()
            thread = self._map_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _add_reference(self, kf: Keyframe) -> None:
        """Register a keyframe with the relocalization core, with its map points (the
        mapper's optimised depth when the mapper holds it, else the keyframe's fused
        pointmap): relocalization then takes its metric scale from the map."""
        self.relocalizer.add_reference(kf.rgb(), kf.T_map_cam, K=kf.K, ref_id=kf.id,
                                       frame_id=kf.frame_id, view=kf.view,
                                       stamp_ns=kf.stamp_ns, points=self._points_of(kf))

    def _points_of(self, kf: Keyframe):
        """Zero-argument callable: (h, w, 3) float32 map points of ``kf`` in its camera frame
        (zeros where unknown), evaluated when a relocalization verifies this keyframe."""
        mapper, min_conf = self.mapper, self.config.tracker.min_conf

        def points() -> np.ndarray:
            if mapper is not None and hasattr(mapper, "keyframe_points"):
                try:
                    return mapper.keyframe_points(kf.id)
                except KeyError:  # not (yet) in the mapper: the keyframe's own pointmap
                    pass
            ok = (kf.conf >= min_conf) & (kf.pts3d[..., 2] > 0)
            return (kf.pts3d * ok[..., None]).float().cpu().numpy()

        return points

    def _on_new_keyframe_reference_only(self, kf: Keyframe) -> None:
        """A loaded keyframe: register it for relocalization (no mapping)."""
        if self.relocalizer is not None:
            self._add_reference(kf)

    def _apply_map_update(self, update) -> None:
        """Apply the mapper's corrected keyframe poses ({kf id: (4, 4) T_map_cam})."""
        poses = getattr(update, "poses", None)
        if poses is None:
            poses = getattr(update, "T_map_cam", None)
        if not poses:
            return
        # the mapper rescaled the map (metric scale from all its pairs): the tracker's
        # pointmaps, depths and frame-to-keyframe motions take the same factor
        scale = getattr(update, "scale", None)
        c = 1.0 if scale is None else float(scale) / self._map_scale
        if c != 1.0:
            self._scale_keyframes({id(kf): c for kf in self.tracker.keyframes})
            self._map_scale = float(scale)
        changed = []
        moved: dict[str, tuple[np.ndarray, np.ndarray]] = {}   # id -> (old, new) pose
        for kf in self.tracker.keyframes:
            T = poses.get(kf.id)
            old = kf.T_map_cam
            if T is not None:
                kf.T_map_cam = _rigid(T)
            elif self._kf_ref.get(kf.id) in moved:
                # not mapped yet (background): follow the keyframe it was tracked against
                # (their relative motion rescaled with the map)
                a, b = moved[self._kf_ref[kf.id]]
                rel = np.linalg.inv(a) @ old
                rel[:3, 3] *= c
                kf.T_map_cam = _rigid(b @ rel)
            else:
                continue
            moved[kf.id] = (old, kf.T_map_cam)
            changed.append(kf)
        self._match_keyframe_depths(getattr(update, "depths", None) or {}, poses)
        if self._traj_kf:
            self._last_T_map_cam = self._traj_kf[-1].T_map_cam @ self._traj_T[-1]
        self._sync_references(changed)

    def _scale_keyframes(self, factor: Mapping[int, float]) -> None:
        """Scale the pointmaps and median depths of the keyframes in ``factor`` ({id(kf):
        f}) and the frame motions tracked against them (trajectory entries are replaced,
        not changed in place: they may share arrays)."""
        for kf in self.tracker.keyframes:
            f = factor.get(id(kf))
            if f is not None:
                kf.pts3d = kf.pts3d * f
                kf.median_depth *= f
        for k, (kf, T) in enumerate(zip(self._traj_kf, self._traj_T)):
            f = factor.get(id(kf))
            if f is not None:
                T = T.copy()
                T[:3, 3] *= f
                self._traj_T[k] = T

    def _match_keyframe_depths(self, depths: Mapping[str, Any],
                               mapped: Mapping[str, Any] | None = None) -> None:
        """Make the tracker's pointmaps of the keyframes the mapper just optimised agree with
        the mapper's depth (median ratio over confident pixels), and the motions tracked
        against them with it: tracking then continues in the map's scale, and its pairs'
        scale measurements (``Tracker.take_scale_evidence``) are against the map's depth.
        Keyframes the mapper has not seen yet (``mapped``: the update's poses; background
        mode) were made from such a keyframe's pointmap: they take its factor too, and their
        offset from it."""
        if not depths:
            return
        factor: dict[int, float] = {}
        min_conf = self.config.tracker.min_conf
        for kf in self.tracker.keyframes:
            z_map = depths.get(kf.id)
            if z_map is None:
                continue
            z_map = torch.as_tensor(z_map).reshape(-1).to(kf.pts3d.device, kf.pts3d.dtype)
            z_trk = kf.pts3d[..., 2].reshape(-1)
            if z_map.numel() != z_trk.numel():
                continue
            ok = (z_map > 0) & (z_trk > 0) & (kf.conf.reshape(-1) >= min_conf)
            if int(ok.sum()) < 16:
                continue
            s = float((z_map[ok] / z_trk[ok]).median())
            if not (np.isfinite(s) and s > 0) or abs(np.log(s)) < 1e-3:
                continue
            factor[id(kf)] = s
        mapped = mapped or {}
        by_id = {kf.id: kf for kf in self.tracker.keyframes}
        for kf in self.tracker.keyframes:   # creation order: a parent before its children
            ref = by_id.get(self._kf_ref.get(kf.id, ""))
            if kf.id in mapped or ref is None or id(ref) not in factor:
                continue
            s = factor[id(ref)]
            rel = np.linalg.inv(ref.T_map_cam) @ kf.T_map_cam
            rel[:3, 3] *= s
            kf.T_map_cam = _rigid(ref.T_map_cam @ rel)
            factor[id(kf)] = s
        self._scale_keyframes(factor)

    def _sync_references(self, kfs: list[Keyframe]) -> None:
        if self.relocalizer is None:
            return
        for kf in kfs:
            self.relocalizer.remove_reference(kf.id)
            self._add_reference(kf)
