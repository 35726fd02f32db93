"""``Relocalizer``: where is this camera, from one image, against one reference or a whole
store of them (ROS-free; the relocalization node and the SLAM system wrap it).

Thread safety: one ``threading.RLock`` guards the reference store (the dict, the faiss
index and the cached reference intrinsics). ``relocalize`` holds it only to pick its
candidate references (a snapshot of immutable ``Reference`` objects) and to cache a
reference's estimated K; the engine calls (encode, decode) and the pose solvers run
outside it, so a slow relocalization never blocks ``add_reference`` / ``save`` / ``load``
for long, and a reference removed meanwhile is still safely used by the running query.
``load`` builds the new store completely (encoding every image) before swapping it in under
the lock: readers see the old store or the new one, never a half-loaded one. The engine
serialises its own network calls.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from mast3r_ros.geometry import check_K
from mast3r_ros.maps import keyframe_entry, load_map_folder, parse_keyframes, save_map_folder
from mast3r_ros.matching import FRMConfig, match_prediction
from mast3r_ros.model.types import EncodedView, PairEngine

from .config import RelocConfig, RelocResult
from .solve import PoseFailure, confidence, focal_K, fuse, solve_pair
from .store import Reference, ReferenceStore

logger = logging.getLogger(__name__)

MAP_KIND = "reloc_references"
_STAGES = ("encode", "retrieval", "decode", "match", "pose", "total")


def check_image(image: Any, name: str = "image") -> np.ndarray:
    """An (H, W, 3) uint8 RGB array with H, W >= 16, else ValueError naming the problem."""
    a = np.asarray(image) if image is not None else None
    if a is None or a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        got = "None" if a is None else f"{a.shape} {a.dtype}"
        raise ValueError(f"{name} must be an (H, W, 3) uint8 RGB array, got {got}")
    if a.shape[0] < 16 or a.shape[1] < 16:
        raise ValueError(f"{name} is {a.shape[1]}x{a.shape[0]} pixels; need at least 16x16")
    return a


def check_pose(T: Any, name: str = "T_map_cam") -> np.ndarray:
    """A finite rigid (4, 4) transform (rotation orthonormal within 1e-4), float64."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"{name} must be a (4, 4) transform, got shape {T.shape}")
    if not np.all(np.isfinite(T)):
        raise ValueError(f"{name} has NaN or inf entries")
    R = T[:3, :3]
    if (np.abs(R.T @ R - np.eye(3)).max() > 1e-4 or abs(np.linalg.det(R) - 1.0) > 1e-4
            or not np.allclose(T[3], [0, 0, 0, 1])):
        raise ValueError(f"{name} is not a rigid transform (rotation not orthonormal with "
                         "det +1, or last row not [0, 0, 0, 1]); normalise the quaternion")
    return T


def check_points(points: Any, network_size, name: str = "points") -> np.ndarray:
    """A reference's own 3D points: finite (h, w, 3) float32 matching ``network_size`` (h, w)."""
    p = np.asarray(points, dtype=np.float32)
    h, w = (int(x) for x in network_size)
    if p.shape != (h, w, 3):
        raise ValueError(f"{name} must be (h, w, 3) = ({h}, {w}, 3) at the view's network "
                         f"resolution, got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} has NaN or inf entries (use zeros for unknown points)")
    return p


def engine_identity(engine: Any) -> dict:
    """JSON-able identity of an engine: type, config, checkpoint (name, size and sha256 of
    its first and last MiB: fast even for the 1.2 GB ViT-L file, and enough to tell
    checkpoints apart)."""
    def plain(x):
        if isinstance(x, Enum):
            return x.value
        if isinstance(x, dict):
            return {str(k): plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        if isinstance(x, (str, int, float, bool)) or x is None:
            return x
        return str(x)

    cfg = getattr(engine, "config", None)
    out: dict[str, Any] = {"type": type(engine).__name__,
                           "config": plain(dataclasses.asdict(cfg)) if dataclasses.is_dataclass(cfg)
                           else None}
    for attr in ("size", "square_ok", "resize"):
        if hasattr(engine, attr):
            out[attr] = plain(getattr(engine, attr))
    ckpt = getattr(engine, "checkpoint_path", None)
    if ckpt is not None and Path(ckpt).is_file():
        p = Path(ckpt)
        h = hashlib.sha256()
        size = p.stat().st_size
        with open(p, "rb") as f:
            h.update(f.read(1 << 20))
            if size > 2 << 20:
                f.seek(size - (1 << 20))
                h.update(f.read())
        out["checkpoint"] = {"name": p.name, "size": size, "sha256_head_tail": h.hexdigest()}
    frames = getattr(engine, "frames", None)
    if frames is not None:
        out["sequence_frames"] = len(frames)
    return out


class Relocalizer:
    """Reference store + retrieval + pair verification -> ``RelocResult``.

    Args:
        engine: a ``PairEngine`` (the network or, in tests, the simulator); shared, one per
            process.
        config: ``RelocConfig``.
    """

    def __init__(self, engine: PairEngine, config: RelocConfig = RelocConfig()) -> None:
        if not hasattr(engine, "global_descriptor"):
            raise TypeError(f"{type(engine).__name__} has no global_descriptor(view); it does not "
                            "implement the PairEngine contract")
        self.engine = engine
        self.config = config
        self._lock = threading.RLock()
        self._store = ReferenceStore()
        self._counter = 0
        self._frm = FRMConfig(subsample=config.subsample, border=config.border,
                              min_desc_conf=config.min_desc_conf, min_conf=config.min_conf)

    # ------------------------------------------------------------------ the store

    def __len__(self) -> int:
        with self._lock:
            return len(self._store)

    def reference_ids(self) -> list[str]:
        """Ids in insertion order."""
        with self._lock:
            return self._store.ids()

    def references(self) -> list[Reference]:
        """Snapshot of the references (for drawing, keyframe listings)."""
        with self._lock:
            return self._store.references()

    def get_reference(self, ref_id: str) -> Reference:
        """KeyError naming the id when unknown."""
        with self._lock:
            if ref_id not in self._store:
                raise KeyError(f"unknown reference id {ref_id!r}")
            return self._store.get(ref_id)

    def reset(self) -> None:
        """Drop every reference."""
        with self._lock:
            self._store.clear()
            self._counter = 0

    def remove_reference(self, ref_id: str) -> None:
        """KeyError when the id is unknown."""
        with self._lock:
            if ref_id not in self._store:
                raise KeyError(f"unknown reference id {ref_id!r}")
            self._store.remove(ref_id)

    def _make_reference(self, image, T_map_cam, K, ref_id, frame_id, view, stamp_ns,
                        points=None) -> Reference:
        image = check_image(image)
        T = check_pose(T_map_cam)
        K = None if K is None else check_K(K)
        if ref_id is not None and (not isinstance(ref_id, str) or not ref_id.strip()):
            raise ValueError(f"ref_id must be a non-empty string or None, got {ref_id!r}")
        if view is None:
            view = self.engine.encode(image, frame_id=frame_id)
        if points is not None and not callable(points):
            points = check_points(points, view.transform.network_size)
        desc = np.asarray(self.engine.global_descriptor(view), dtype=np.float32).reshape(-1)
        return Reference(ref_id or "", np.ascontiguousarray(image), view, T, K, desc,
                         None if stamp_ns is None else int(stamp_ns), frame_id, points=points)

    def add_reference(self, image: np.ndarray, T_map_cam: np.ndarray, K: np.ndarray | None = None,
                      ref_id: str | None = None, *, frame_id: str | None = None,
                      view: EncodedView | None = None, stamp_ns: int | None = None,
                      points=None) -> str:
        """Add a reference keyframe (encoded once, here, unless ``view`` is given).

        Args:
            image: (H, W, 3) uint8 RGB. T_map_cam: (4, 4) rigid camera -> map.
            K: (3, 3) intrinsics at the image's resolution, or None (estimated from the
                reference's own pointmap when first needed).
            ref_id: unique id (an existing id is replaced); None picks ``kf000000``, ...
            frame_id: passed to ``engine.encode`` (the simulator finds its frame by it).
            view: an existing encoding of ``image`` to reuse.
            stamp_ns: image stamp, stored with the map.
            points: the reference's own map-scale 3D points (``Reference.points``: an
                (h, w, 3) array at the network resolution of its view, camera frame, map
                units, zeros where unknown; or a zero-argument callable returning one), or
                None. With them (and ``use_map_points``) the query is solved against the
                map's geometry instead of the pair's predicted pointmap.

        Returns:
            The id. Raises ValueError on bad input (message names it).
        """
        ref = self._make_reference(image, T_map_cam, K, ref_id, frame_id, view, stamp_ns, points)
        with self._lock:
            if not ref.id:
                while f"kf{self._counter:06d}" in self._store:
                    self._counter += 1
                ref.id = f"kf{self._counter:06d}"
                self._counter += 1
            self._store.add(ref)
        return ref.id

    # ------------------------------------------------------------------ relocalize

    def relocalize(self, image: np.ndarray, K: np.ndarray | None = None,
                   reference_id: str | None = None, *, frame_id: str | None = None,
                   view: EncodedView | None = None) -> RelocResult:
        """Pose of the camera that took ``image``, in the map frame.

        Args:
            image: (H, W, 3) uint8 RGB query.
            K: (3, 3) query intrinsics at that resolution, or None (estimated from the
                query's own pointmap; then the essential-matrix route is used).
            reference_id: verify against this reference only (map-free, single reference);
                None retrieves the ``top_k`` best references by global descriptor, verifies
                each and keeps the best, fusing several when ``fuse_references``.
            frame_id, view: as in ``add_reference``.

        Returns:
            ``RelocResult``; ``success=False`` with the reason when no reference is stored,
            the id is unknown, matches or inliers are too few or the solution is
            inconsistent. Raises ValueError for a malformed ``image`` / ``K``; what the
            engine raises while encoding propagates (e.g. the simulator's KeyError for an
            image that is not one of its frames), so callers serving requests catch both.
        """
        t_start = time.perf_counter()
        tm = {k: 0.0 for k in _STAGES}
        image = check_image(image, "query image")
        K_given = None if K is None else check_K(K, "query K")
        cfg = self.config

        def fail(msg: str, **kw) -> RelocResult:
            tm["total"] = (time.perf_counter() - t_start) * 1e3
            logger.info("relocalization failed: %s", msg)
            return RelocResult(False, msg, timings_ms=dict(tm), **kw)

        with self._lock:
            if len(self._store) == 0:
                return fail("no reference keyframes: add a reference or load a map first")
            if reference_id is not None and reference_id not in self._store:
                return fail(f"unknown reference id {reference_id!r} (known: "
                            f"{', '.join(self._store.ids()[:10])}{'...' if len(self._store) > 10 else ''})")
        t = time.perf_counter()
        if view is None:
            view = self.engine.encode(image, frame_id=frame_id)
        tm["encode"] = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        with self._lock:
            if reference_id is not None:
                cands = [self._store.get(reference_id)]
            else:
                desc = self.engine.global_descriptor(view)
                hits = self._store.search(desc, cfg.top_k)
                cands = [self._store.get(i) for i, s in hits if s >= cfg.min_retrieval_score]
        tm["retrieval"] = (time.perf_counter() - t) * 1e3
        if not cands:
            return fail(f"no reference scored above min_retrieval_score={cfg.min_retrieval_score}")
        ids = [c.id for c in cands]

        # decode every candidate pair in one batched call (+ (query, best) when K is unknown)
        t = time.perf_counter()
        pairs = [(c.view, view) for c in cands]
        if K_given is None:
            pairs.append((view, cands[0].view))
        preds = self.engine.decode_batch(pairs)
        tm["decode"] = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        K_q = K_given
        if K_q is None:
            rev = preds[-1].view1  # the query's own pointmap
            try:
                K_q = _focal_fast(rev.pts3d, rev.conf, view.transform, cfg.estimate_principal_point)
            except ValueError as exc:
                return fail(f"cannot estimate the query focal from its pointmap: {exc}",
                            candidates=ids)
        tm["pose"] += (time.perf_counter() - t) * 1e3

        sols, reasons = [], []
        for ref, pred in zip(cands, preds):
            t = time.perf_counter()
            m = match_prediction(pred, self._frm)
            tm["match"] += (time.perf_counter() - t) * 1e3
            t = time.perf_counter()
            try:
                K_ref = self._reference_K(ref, pred)
                own = self._map_points(ref, pred)
                src = own if own is not None else pred.view1.pts3d.detach().cpu().numpy()
                pts = src[m.xy1_net[:, 1], m.xy1_net[:, 0]]
                sol = solve_pair(ref.id, ref.T_map_cam, m.xy1, m.xy2, pts.astype(np.float64),
                                 K_ref, K_q, K_given is not None, cfg,
                                 scale_sigma=cfg.map_scale_sigma if own is not None else None)
                if own is not None:
                    sol.method += " on map points"
                sols.append(sol)
            except PoseFailure as exc:
                reasons.append(str(exc))
            except ValueError as exc:  # degenerate inputs to the solvers
                reasons.append(f"degenerate geometry with reference {ref.id!r}: {exc}")
            tm["pose"] += (time.perf_counter() - t) * 1e3
        est = K_given is None
        if not sols:
            return fail(reasons[0] + (f" (and {len(reasons) - 1} other candidates failed)"
                                      if len(reasons) > 1 else ""),
                        reference_id=cands[0].id, K=K_q, intrinsics_estimated=est, candidates=ids)
        sols.sort(key=lambda s: s.num_inliers, reverse=True)
        best = sols[0]
        T, cov, msg = best.T_map_cam, best.covariance, f"{best.method} against {best.ref_id!r}"
        if cfg.fuse_references and len(sols) >= 2:
            t = time.perf_counter()
            fused = fuse(sols, {c.id: c.T_map_cam for c in cands}, cfg)
            tm["pose"] += (time.perf_counter() - t) * 1e3
            if fused is not None:
                T, cov, used = fused
                msg = (f"{best.method}, centre fused from {len(used)} references "
                       f"({', '.join(used)}; information-weighted, see solve.fuse)")
        tm["total"] = (time.perf_counter() - t_start) * 1e3
        return RelocResult(True, msg, T, cov, best.ref_id, best.num_matches, best.num_inliers,
                           confidence(best.num_inliers, best.num_matches, cfg), K_q, est,
                           dict(tm), ids, (best.inlier_xy_ref, best.inlier_xy_cam))

    def _map_points(self, ref: Reference, pred) -> np.ndarray | None:
        """The reference's own map points when they are to be used (``use_map_points``) and
        fit the pair's pointmap grid; else None (the pair's pointmap is used)."""
        if not self.config.use_map_points or ref.points is None:
            return None
        try:
            pts = ref.map_points()
        except (KeyError, ValueError, RuntimeError) as exc:  # e.g. the keyframe left the map
            logger.warning("reference %r: its map points are unavailable (%s); using the pair's "
                           "pointmap", ref.id, exc)
            return None
        if pts is None:
            return None
        if pts.shape != tuple(pred.view1.pts3d.shape):
            logger.warning("reference %r: map points %s do not match the pointmap grid %s; using "
                           "the pair's pointmap", ref.id, pts.shape, tuple(pred.view1.pts3d.shape))
            return None
        return pts

    def _reference_K(self, ref: Reference, pred) -> np.ndarray:
        """Given K, or estimated once from the reference's own pointmap (view 1) and cached."""
        if ref.K is not None:
            return ref.K
        if ref.K_estimated is None:
            v1 = pred.view1
            K = _focal_fast(v1.pts3d, v1.conf, ref.view.transform, self.config.estimate_principal_point)
            with self._lock:
                ref.K_estimated = K
        return ref.K_estimated

    # ------------------------------------------------------------------ maps

    def save(self, path: str | Path, *, overwrite: bool = False) -> int:
        """Save the references as a map folder (``mast3r_ros.maps``, kind ``reloc_references``).

        Returns the number of keyframes. Raises FileExistsError / NotADirectoryError /
        OSError (the previous map stays loadable).
        """
        with self._lock:
            refs = self._store.references()
        arrays = {f"image_{k:06d}": r.image for k, r in enumerate(refs)}
        entries = []
        for k, r in enumerate(refs):
            extra = {"image": f"image_{k:06d}"}
            pts = r.map_points() if r.points is not None else None
            if pts is not None:  # the reference's own map points (optional)
                arrays[f"points_{k:06d}"] = pts
                extra["points"] = f"points_{k:06d}"
            entries.append(keyframe_entry(r.id, r.T_map_cam, r.K, stamp_ns=r.stamp_ns,
                                          frame_id=r.frame_id, intrinsics_estimated=r.K is None,
                                          **extra))
        manifest = {"kind": MAP_KIND, "engine": engine_identity(self.engine),
                    "reloc_config": dataclasses.asdict(self.config), "keyframes": entries}
        if refs:
            arrays["global_descriptors"] = np.stack([r.descriptor for r in refs]).astype(np.float32)
        save_map_folder(path, manifest, arrays, overwrite=overwrite)
        return len(refs)

    def load(self, path: str | Path) -> int:
        """Replace the references with a saved map (each image encoded once, here).

        Returns the number of keyframes. Raises ``MapFormatError`` (a ValueError) naming
        what is wrong; the current references are kept then.
        """
        from mast3r_ros.maps import MapFormatError

        manifest, arrays = load_map_folder(path, kind=MAP_KIND)
        kfs = parse_keyframes(manifest, str(path))
        ident = engine_identity(self.engine)
        if manifest["engine"].get("type") != ident.get("type") or \
                manifest["engine"].get("checkpoint") != ident.get("checkpoint"):
            logger.warning("map %s was made with engine %s, this is %s: images are re-encoded and "
                           "descriptors recomputed", path, manifest["engine"].get("type"), ident.get("type"))
        store = ReferenceStore()
        for kf in kfs:
            name = kf.get("image")
            if name not in arrays:
                raise MapFormatError(f"{path}: keyframe {kf['id']!r} has no image array {name!r}")
            pname = kf.get("points")
            if pname is not None and (not isinstance(pname, str) or pname not in arrays):
                raise MapFormatError(f"{path}: keyframe {kf['id']!r} has no points array {pname!r}")
            try:
                ref = self._make_reference(arrays[name], kf["T_map_cam"], kf["K"], kf["id"],
                                           kf.get("frame_id"), None, kf.get("stamp_ns"),
                                           None if pname is None else arrays[pname])
            except (ValueError, KeyError) as exc:
                raise MapFormatError(f"{path}: keyframe {kf['id']!r}: {exc}") from None
            store.add(ref)
        with self._lock:
            self._store = store
            self._counter = len(kfs)
        logger.info("loaded %d reference keyframes from %s", len(kfs), path)
        return len(kfs)


def _focal_fast(pts3d, conf, transform, estimate_pp: bool) -> np.ndarray:
    """``focal_K`` on every other pixel of large maps (4x fewer points, same K)."""
    p = pts3d.detach().float().cpu().numpy() if hasattr(pts3d, "detach") else np.asarray(pts3d)
    c = conf.detach().float().cpu().numpy() if hasattr(conf, "detach") else conf
    h, w = p.shape[:2]
    if h * w <= 40000 or estimate_pp:
        return focal_K(p, c, transform, estimate_pp)
    from mast3r_ros.geometry import estimate_focal

    fe = estimate_focal(p[::2, ::2], weights=None if c is None else c[::2, ::2],
                        principal_point=((w - 1) / 4.0, (h - 1) / 4.0))
    K_net = np.array([[2 * fe.focal, 0, (w - 1) / 2.0], [0, 2 * fe.focal, (h - 1) / 2.0], [0, 0, 1]])
    return transform.intrinsics_to_orig(K_net)
