"""Frame-to-keyframe tracking (ROS-free): one encode per frame, one decode against the
current keyframe (whose encoding is cached), a local matcher guided by the pair's pointmap,
a robust pose, keyframe decisions with pointmap fusion, loss detection and a hook for
relocalization.

The path of one frame (``Tracker.track``):

1. ``engine.encode(image, frame_id)`` once.
2. ``engine.decode(keyframe, frame)`` (SE(3) mode; ``(frame, keyframe)`` in Sim(3) mode, so
   that view 1 is the frame's own pointmap).
3. ``local_match``: the frame's predicted 3D (in the keyframe's camera) projected with the
   keyframe's K says where each grid pixel's match must be; descriptors refine it in a
   7x7 window. Fast reciprocal matching (``mast3r_ros.matching``) only right after
   initialisation / relocalization and as a fallback when the local matcher finds too few.
4. Pose relative to the keyframe (``slam.pose``): PnP against the keyframe's fused 3D
   points (SE(3), metric) or Sim(3) IRLS; the map pose is ``T_map_kf @ T_kf_cam``.
5. Fusion: the keyframe's own pointmap of this pair is fused into its pointmap
   (confidence-weighted running mean), so it is refined as frames see it again.
6. Keyframe decision: inliers below ``kf_overlap_ratio`` of the keyframe's first tracked
   frame, or translation above ``kf_translation_ratio`` of the scene depth, or rotation
   above ``kf_rotation_deg`` -> this frame becomes the new keyframe (its pointmap comes from
   the same decode, rescaled to the keyframe's scale).
7. Fewer than ``min_inliers`` -> LOST; the caller relocalizes (``SlamSystem``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

import cv2
import numpy as np
import torch

from mast3r_ros.config import config_from_dict
from mast3r_ros.geometry import check_K, estimate_focal, rotation_angle_deg
from mast3r_ros.matching import FRMConfig, match_prediction
from mast3r_ros.model.preprocess import resize_and_crop
from mast3r_ros.model.types import EncodedView, PairPrediction

from .local_match import LocalMatchConfig, local_match, sample_bilinear
from .pose import PoseEstimate, PoseMode, pnp_pose, sim3_irls
from .types import Keyframe

log = logging.getLogger(__name__)

__all__ = ["TrackerConfig", "Tracker", "TrackOutcome"]


@dataclass(frozen=True)
class TrackerConfig:
    """Settings of the tracker (pixel thresholds are at network resolution)."""

    pose_mode: PoseMode = PoseMode.SE3_PNP  # SE(3) PnP (metric) or Sim(3) IRLS (see slam.pose)
    match: LocalMatchConfig = field(default_factory=LocalMatchConfig)  # local matcher
    frm_subsample: int = 8  # FRM seed grid (initialisation, fallback, relocalization)
    min_inliers: int = 40  # fewer pose inliers -> LOST
    second_chance_min_inlier_ratio: float = 0.4  # when tracking against the current keyframe
    # fails, the keyframe nearest to the last pose gets a second chance; its pose is taken only
    # when its inliers are at least this fraction of its matches (else LOST and relocalization):
    # FRM against a keyframe made as the view went blank gave 27 % inliers and a 2 deg / 6 cm
    # wrong pose that every later pose kept (benchmarks/RESULTS.md, "tracking: loss and
    # recovery"). Not applied to the current keyframe: under `hard` (aliasing) ordinary frames
    # fall below it and tracking would flip between lost and relocalized
    pnp_threshold_px: float = 2.0  # PnP inlier threshold, network pixels
    sim3_threshold: float = 0.05  # Sim(3) inlier threshold, residual / depth
    min_conf: float = 1.5  # pointmap confidence below this is not used for pose / fusion
    fuse: bool = True  # fuse every tracked frame's keyframe pointmap into the keyframe
    depth_along_rays: bool = True  # keyframe pointmaps keep only their predicted depth, placed
    # along the rays of K (given or estimated): a pointmap's own focal error (a few % for the
    # network) would otherwise move PnP translations by that fraction of the scene depth
    fuse_outlier_rel: float = 0.1  # a pointmap pixel whose depth differs from the median of its
    # 3x3 neighbourhood by more than this (relative) is an isolated outlier: it is not fused
    # (weight x 1e-3; 0 disables the test)
    scale_consistent_keyframes: bool = True  # new keyframe pointmaps and fused observations
    # take the current keyframe's scale (one consistent map scale)
    metric_scale_averaging: bool = True  # SE(3): rescale the map so the geometric mean of all
    # pairs' scales relative to it is 1 (per-pair metric-scale errors average away)
    kf_overlap_ratio: float = 0.6  # new keyframe when inliers < this x the keyframe's first count
    kf_translation_ratio: float = 0.1  # ... or translation > this x the keyframe's median depth
    kf_rotation_deg: float = 15.0  # ... or rotation > this
    keep_images: int = 4  # newest keyframes keeping their decoded image; older keep a JPEG
    jpeg_quality: int = 95  # JPEG quality of stored keyframe images
    reloc_max_candidates: int = 3  # keyframes tried per lost frame (built-in relocalization)
    reloc_min_inliers: int = 60  # inliers needed to accept a relocalization
    reloc_min_texture: float = 0.1  # a lost frame with less than this fraction of pixels whose
    # desc_conf reaches 0.3 x the keyframe's 90th percentile (same pair) is blank: no further
    # relocalization attempts on it (0 disables the gate)

    def __post_init__(self) -> None:
        if isinstance(self.pose_mode, str):
            try:
                object.__setattr__(self, "pose_mode", PoseMode(self.pose_mode))
            except ValueError:
                raise ValueError(f"pose_mode {self.pose_mode!r} unknown; choose one of "
                                 f"{[m.value for m in PoseMode]}") from None
        if isinstance(self.match, Mapping):
            object.__setattr__(self, "match", LocalMatchConfig.from_dict(self.match))
        if not 0.0 <= self.second_chance_min_inlier_ratio < 1.0:
            raise ValueError("second_chance_min_inlier_ratio must be in [0, 1), got "
                             f"{self.second_chance_min_inlier_ratio}")
        if self.min_inliers < 6:
            raise ValueError(f"min_inliers must be >= 6, got {self.min_inliers}")
        for name in ("pnp_threshold_px", "sim3_threshold", "kf_translation_ratio",
                     "kf_rotation_deg"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.fuse_outlier_rel < 0:
            raise ValueError(f"fuse_outlier_rel must be >= 0, got {self.fuse_outlier_rel}")
        if not 0 < self.kf_overlap_ratio < 1:
            raise ValueError(f"kf_overlap_ratio must be in (0, 1), got {self.kf_overlap_ratio}")
        if self.keep_images < 1 or self.reloc_max_candidates < 1 or self.frm_subsample < 1:
            raise ValueError("keep_images, reloc_max_candidates and frm_subsample must be >= 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrackerConfig":
        """Build from a dict (``match`` may be a dict), rejecting unknown keys."""
        return config_from_dict(cls, data)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["pose_mode"] = self.pose_mode.value
        d["match"] = {f.name: getattr(self.match, f.name) for f in fields(self.match)}
        return d


@dataclass
class TrackOutcome:
    """One frame tracked against one keyframe.

    Attributes:
        pose: the pose relative to the keyframe, or None (failure; ``message`` says why).
        pred: the pair prediction (device tensors), for fusion and keyframe creation.
        num_matches, matcher: how many matches, from "local" or "frm".
    """

    keyframe: Keyframe
    pose: PoseEstimate | None
    pred: PairPrediction
    num_matches: int
    matcher: str
    message: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)
    texture: float = 1.0  # fraction of frame pixels with desc_conf >= 0.3 x keyframe's 90th pct

    @property
    def num_inliers(self) -> int:
        return 0 if self.pose is None else self.pose.num_inliers


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


def isolated_outliers(pts3d: torch.Tensor, rel: float) -> torch.Tensor:
    """(h, w) bool: pixels whose depth differs from the median depth of their 3x3
    neighbourhood by more than ``rel`` (relative), i.e. isolated gross errors of a pointmap.

    Smooth errors (a bent or rescaled surface) and linear depth ramps (slanted planes) pass:
    a 3x3 median keeps a ramp's centre value. Pixels on occluding edges may be flagged;
    they are a small minority. An all-False mask when ``rel`` is 0.
    """
    z = pts3d[..., 2]
    if rel <= 0 or z.shape[0] < 3 or z.shape[1] < 3:
        return torch.zeros(z.shape, dtype=torch.bool, device=z.device)
    zp = torch.nn.functional.pad(z[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    med = zp.unfold(0, 3, 1).unfold(1, 3, 1).reshape(*z.shape, 9).median(dim=-1).values
    return (z - med).abs() > rel * med.abs().clamp_min(1e-6)


def _outlier_weights(pts3d: torch.Tensor, conf: torch.Tensor, rel: float) -> torch.Tensor:
    """Fusion weights: ``conf`` with isolated outliers (``isolated_outliers``) x 1e-3."""
    conf = conf.to(torch.float32)
    if rel <= 0:
        return conf
    return torch.where(isolated_outliers(pts3d, rel), conf * 1e-3, conf)


def along_rays(pts3d: torch.Tensor, K_net: np.ndarray) -> torch.Tensor:
    """(h, w, 3): each pixel's predicted depth ``z`` placed on its ray ``z K^-1 (x, y, 1)``
    (pixel centres at integer network coordinates, as in ``ImageTransform``)."""
    h, w = pts3d.shape[:2]
    Kinv = torch.as_tensor(np.linalg.inv(np.asarray(K_net, dtype=np.float64)),
                           dtype=pts3d.dtype, device=pts3d.device)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=pts3d.dtype, device=pts3d.device),
                            torch.arange(w, dtype=pts3d.dtype, device=pts3d.device), indexing="ij")
    rays = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1) @ Kinv.T
    return pts3d[..., 2:3] * (rays / rays[..., 2:3])


def median_depth(pts3d: torch.Tensor, conf: torch.Tensor, min_conf: float) -> float:
    """Median z of the points with conf >= min_conf (all points when too few)."""
    z = pts3d[..., 2]
    sel = z[(conf >= min_conf) & (z > 0)]
    if sel.numel() < 16:
        sel = z[z > 0]
    return float(sel.median()) if sel.numel() else 1.0


class Tracker:
    """Keyframe-based tracker on one ``PairEngine``; keeps keyframes, not frames.

    Not thread-safe by itself (``SlamSystem`` holds a lock around it).
    """

    def __init__(self, engine, config: TrackerConfig = TrackerConfig()) -> None:
        self.engine = engine
        self.config = config
        self.keyframes: list[Keyframe] = []
        self._ref_inliers: dict[str, int] = {}
        self._kf_counter = 0
        self.K_estimated: np.ndarray | None = None  # (3, 3) at original resolution
        self._focal_refined = False
        self._log_ratio_sum = 0.0  # sum of log(pair scale / map scale) since the last rescale
        self._n_ratio = 0  # pairs measured in all
        self._ev_sum, self._ev_n = 0.0, 0  # the same since the last take_scale_evidence()

    # ------------------------------------------------------------------ intrinsics

    def camera_K(self, K: np.ndarray | None) -> tuple[np.ndarray | None, bool]:
        """(K to use, estimated?) for a frame given ``K`` (None / zeros / NaN = unknown)."""
        if K is not None:
            K = np.asarray(K, dtype=np.float64)
            if K.shape == (3, 3) and np.all(np.isfinite(K)) and K[0, 0] > 0:
                return check_K(K), False
        return (self.K_estimated, True) if self.K_estimated is not None else (None, True)

    def _estimate_K(self, view: EncodedView, pts3d: torch.Tensor, conf: torch.Tensor) -> np.ndarray:
        fe = estimate_focal(pts3d, weights=conf)
        return view.transform.intrinsics_to_orig(fe.K)

    # ------------------------------------------------------------------ keyframes

    def make_keyframe(self, view: EncodedView, image: np.ndarray, stamp_ns: int,
                      T_map_cam: np.ndarray, K: np.ndarray, estimated: bool,
                      pts3d: torch.Tensor, conf: torch.Tensor) -> Keyframe:
        """A keyframe from a frame and its pointmap (own frame); appended to ``keyframes``."""
        kid = f"kf{self._kf_counter:06d}"
        self._kf_counter += 1
        colors = resize_and_crop(np.ascontiguousarray(image), view.transform)
        if self._use_rays(estimated):
            pts3d = along_rays(pts3d, view.transform.intrinsics_to_net(K))
        conf = _outlier_weights(pts3d, conf, self.config.fuse_outlier_rel).clamp_min(1e-6)
        kf = Keyframe(id=kid, stamp_ns=int(stamp_ns), T_map_cam=np.array(T_map_cam, dtype=np.float64),
                      K=np.array(K, dtype=np.float64), intrinsics_estimated=estimated, view=view,
                      image=np.array(image, dtype=np.uint8), colors=colors,
                      pts3d=pts3d.to(torch.float32).contiguous(), conf=conf.clone(),
                      weight=conf.clone(), num_fused=1,
                      median_depth=median_depth(pts3d, conf, self.config.min_conf),
                      frame_id=view.frame_id)
        self.keyframes.append(kf)
        self._compress_old_images()
        return kf

    def _use_rays(self, estimated: bool) -> bool:
        """``depth_along_rays`` applies (with estimated intrinsics only once they are refined
        from the first keyframe's fused pointmap, whose lateral coordinates they come from)."""
        return self.config.depth_along_rays and (not estimated or self._focal_refined)

    def _compress_old_images(self) -> None:
        for kf in self.keyframes[:-self.config.keep_images]:
            if kf.image is not None:
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(kf.image, cv2.COLOR_RGB2BGR),
                                       [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality])
                if ok:
                    kf.image_jpeg = buf.tobytes()
                    kf.image = None

    def initialize(self, view: EncodedView, image: np.ndarray, stamp_ns: int,
                   T_map_cam: np.ndarray, K: np.ndarray | None) -> Keyframe:
        """First keyframe: its pointmap from the self-pair (frame, frame); K estimated if None."""
        pred = self.engine.decode(view, view)
        pts, conf = pred.view1.pts3d, pred.view1.conf
        estimated = K is None
        if estimated:
            K = self._estimate_K(view, pts, conf)
            self.K_estimated = K
            log.info("intrinsics estimated from the first keyframe: f = %.1f px", K[0, 0])
        return self.make_keyframe(view, image, stamp_ns, T_map_cam, K, estimated, pts, conf)

    # ------------------------------------------------------------------ tracking

    def track(self, kf: Keyframe, view: EncodedView, K: np.ndarray, *, use_frm: bool = False,
              min_inliers: int | None = None, min_texture: float = 0.0) -> TrackOutcome:
        """Match and solve the pose of ``view`` against ``kf`` (no state change).

        With ``min_texture`` > 0, a frame whose textured fraction (see ``TrackOutcome``) is
        below it is not matched at all (a blank view: no pose, message says so)."""
        cfg = self.config
        min_inl = cfg.min_inliers if min_inliers is None else min_inliers
        timings: dict[str, float] = {}
        K_net_cam = view.transform.intrinsics_to_net(K)
        sim3 = cfg.pose_mode is PoseMode.SIM3
        t = time.perf_counter()
        pred = self.engine.decode(view, kf.view) if sim3 else self.engine.decode(kf.view, view)
        timings["decode"] = _ms(t)
        # "cam" = the frame, "kf" = the keyframe; src/dst of the matcher by mode.
        v_cam, v_kf = (pred.view1, pred.view2) if sim3 else (pred.view2, pred.view1)
        ref = torch.quantile(v_kf.desc_conf.reshape(-1)[::4].float(), 0.9)
        texture = float((v_cam.desc_conf >= 0.3 * ref).float().mean())
        if texture < min_texture:
            return TrackOutcome(kf, None, pred, 0, "", f"blank view (textured fraction {texture:.2f})",
                                timings, texture)
        t = time.perf_counter()
        matcher = "frm" if use_frm else "local"
        xy_cam, xy_kf = self._match(pred, v_cam, v_kf, kf, K_net_cam, sim3, use_frm)
        if not use_frm and xy_cam.shape[0] < 2 * min_inl and texture >= cfg.reloc_min_texture:
            # too few local matches on a textured view: FRM fallback (not on blank views)
            matcher = "frm"
            xy_cam, xy_kf = self._match(pred, v_cam, v_kf, kf, K_net_cam, sim3, True)
        n = int(xy_cam.shape[0])
        timings["match"] = _ms(t)
        t = time.perf_counter()
        pose, message = None, ""
        if n < min_inl:
            message = f"{n} matches < {min_inl}"
        else:
            X_kf = sample_bilinear(kf.pts3d, xy_kf)  # (N, 3) fused keyframe points
            c_kf = sample_bilinear(kf.conf[..., None], xy_kf)[:, 0]
            try:
                if sim3:
                    X_cam = sample_bilinear(v_cam.pts3d, xy_cam)
                    w = c_kf * sample_bilinear(v_cam.conf[..., None], xy_cam)[:, 0]
                    pose = sim3_irls(X_cam.cpu().numpy(), X_kf.cpu().numpy(),
                                     w.cpu().numpy(), inlier_threshold=cfg.sim3_threshold,
                                     min_inliers=min_inl)
                else:
                    pose = pnp_pose(xy_cam.cpu().numpy().astype(np.float64),
                                    X_kf.cpu().numpy().astype(np.float64), K_net_cam,
                                    cfg.pnp_threshold_px, min_inl)
            except RuntimeError as exc:
                message = str(exc)
        timings["pose"] = _ms(t)
        return TrackOutcome(kf, pose, pred, n, matcher, message, timings, texture)

    def _match(self, pred: PairPrediction, v_cam, v_kf, kf: Keyframe, K_net_cam: np.ndarray,
               sim3: bool, use_frm: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 2) frame pixels and (N, 2) keyframe pixels (network resolution, float)."""
        cfg = self.config
        if use_frm:
            m = match_prediction(pred, FRMConfig(subsample=cfg.frm_subsample,
                                                 min_conf=cfg.min_conf))
            dev = v_cam.pts3d.device
            xy1 = torch.as_tensor(m.xy1_net, dtype=torch.float32, device=dev).reshape(-1, 2)
            xy2 = torch.as_tensor(m.xy2_net, dtype=torch.float32, device=dev).reshape(-1, 2)
            return (xy1, xy2) if sim3 else (xy2, xy1)
        mc = cfg.match
        if sim3:  # source = keyframe pixels, predicted into the frame with the frame's K
            lm = local_match(v_kf.desc, v_cam.desc, v_kf.pts3d, K_net_cam, mc,
                             desc_conf_src=v_kf.desc_conf, desc_conf_dst=v_cam.desc_conf,
                             conf_src=v_kf.conf, conf_dst=v_cam.conf)
            keep = (v_kf.conf.reshape(-1)[lm.src_idx] >= cfg.min_conf)
            return lm.dst_xy[keep], lm.src_xy[keep]
        lm = local_match(v_cam.desc, v_kf.desc, v_cam.pts3d, kf.K_net, mc,
                         desc_conf_src=v_cam.desc_conf, desc_conf_dst=v_kf.desc_conf,
                         conf_src=v_cam.conf, conf_dst=v_kf.conf)
        keep = v_cam.conf.reshape(-1)[lm.src_idx] >= cfg.min_conf
        return lm.src_xy[keep], lm.dst_xy[keep]

    # ------------------------------------------------------------------ map updates

    def fuse(self, out: TrackOutcome) -> None:
        """Fuse the keyframe's pointmap of this pair into the keyframe (own frame)."""
        if out.pose is None or not self.config.fuse:
            return
        kf, pred, pose = out.keyframe, out.pred, out.pose
        if self.config.pose_mode is PoseMode.SIM3:
            T = torch.as_tensor(pose.T_kf_cam, dtype=torch.float32, device=kf.pts3d.device)
            pts = pose.scale * pred.view2.pts3d @ T[:3, :3].T + T[:3, 3]
            if self._use_rays(kf.intrinsics_estimated):
                pts = along_rays(pts, kf.K_net)
            kf.fuse(pts, _outlier_weights(pts, pred.view2.conf, self.config.fuse_outlier_rel))
        else:
            r = self.pair_scale(out)
            if r is not None:
                self._log_ratio_sum += float(np.log(r))
                self._n_ratio += 1
                self._ev_sum += float(np.log(r))
                self._ev_n += 1
            r = r if (r is not None and self.config.scale_consistent_keyframes) else 1.0
            pts = pred.view1.pts3d / r
            if self._use_rays(kf.intrinsics_estimated):
                pts = along_rays(pts, kf.K_net)
            kf.fuse(pts, _outlier_weights(pts, pred.view1.conf, self.config.fuse_outlier_rel))

    def pair_scale(self, out: TrackOutcome) -> float | None:
        """Scale of this pair's prediction relative to the keyframe's fused pointmap (median
        depth ratio over confident pixels), or None when too few pixels qualify."""
        kf, pred = out.keyframe, out.pred
        v1 = pred.view1 if self.config.pose_mode is PoseMode.SE3_PNP else None
        if v1 is None:
            return None
        z_map, z_pair = kf.pts3d[..., 2], v1.pts3d[..., 2]
        ok = (kf.conf >= self.config.min_conf) & (v1.conf >= self.config.min_conf) \
            & (z_map > 0) & (z_pair > 0)
        if int(ok.sum()) < 16:
            return None
        return float((z_pair[ok] / z_map[ok]).median())

    def scale_correction(self) -> float:
        """Factor that makes the map metric on average (1 when not enabled / no data):
        ``exp(mean log(pair scale / map scale))`` over the pairs since the last rescale,
        weighted by all pairs measured (per-pair errors average away, the map keeps one
        consistent scale)."""
        if (not self.config.metric_scale_averaging or self.config.pose_mode is PoseMode.SIM3
                or self._n_ratio < 5):
            return 1.0
        return float(np.exp(self._log_ratio_sum / self._n_ratio))

    def take_scale_evidence(self) -> tuple[float, int]:
        """(sum of log(pair scale / map scale), number of pairs) measured since the last
        call, and forget them: a mapper that owns the map's scale adds them to its own
        pairs' (``Mapper.add_scale_evidence``)."""
        out = (self._ev_sum, self._ev_n)
        self._ev_sum, self._ev_n = 0.0, 0
        return out

    def applied_rescale(self, c: float) -> None:
        """The caller rescaled every length of the map by ``c``."""
        self._log_ratio_sum -= self._n_ratio * float(np.log(c))

    def keyframe_due(self, out: TrackOutcome) -> bool:
        """Keyframe decision for a successfully tracked frame."""
        cfg, kf, pose = self.config, out.keyframe, out.pose
        if pose is None:
            return False
        ref = self._ref_inliers.setdefault(kf.id, pose.num_inliers)
        trans = float(np.linalg.norm(pose.T_kf_cam[:3, 3]))
        rot = rotation_angle_deg(np.eye(3), pose.T_kf_cam[:3, :3])
        return (pose.num_inliers < cfg.kf_overlap_ratio * ref
                or trans > cfg.kf_translation_ratio * kf.median_depth
                or rot > cfg.kf_rotation_deg)

    def keyframe_from(self, out: TrackOutcome, view: EncodedView, image: np.ndarray,
                      stamp_ns: int, T_map_cam: np.ndarray, K: np.ndarray,
                      estimated: bool) -> Keyframe:
        """Make the tracked frame a keyframe; its pointmap comes from the same decode."""
        cfg, kf, pred, pose = self.config, out.keyframe, out.pred, out.pose
        assert pose is not None
        if cfg.pose_mode is PoseMode.SIM3:
            pts, conf = pose.scale * pred.view1.pts3d, pred.view1.conf
        else:
            ratio = 1.0
            if cfg.scale_consistent_keyframes:
                r = self.pair_scale(out)
                ratio = 1.0 if r is None else 1.0 / r
            T_cam_kf = torch.as_tensor(np.linalg.inv(pose.T_kf_cam), dtype=torch.float32,
                                       device=kf.pts3d.device)
            pts = (ratio * pred.view2.pts3d) @ T_cam_kf[:3, :3].T + T_cam_kf[:3, 3]
            conf = pred.view2.conf
        if estimated and not self._focal_refined and len(self.keyframes) == 1:
            # K was estimated from one pointmap; refine it once from the first keyframe's
            # fused pointmap (many observations averaged), then keep it fixed.
            first = self.keyframes[0]
            self.K_estimated = self._estimate_K(first.view, first.pts3d, first.conf)
            first.K = self.K_estimated
            if self.config.depth_along_rays:
                first.pts3d = along_rays(first.pts3d, first.K_net)
            K = self.K_estimated
            self._focal_refined = True
            log.info("intrinsics refined from the fused first keyframe: f = %.1f px", K[0, 0])
        return self.make_keyframe(view, image, stamp_ns, T_map_cam, K, estimated, pts, conf)

    def reset(self) -> None:
        self.keyframes.clear()
        self._ref_inliers.clear()
        self.K_estimated = None
        self._focal_refined = False
        self._log_ratio_sum = 0.0
        self._n_ratio = 0
        self._ev_sum, self._ev_n = 0.0, 0
