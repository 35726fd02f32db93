"""Saving and loading a ``SlamSystem``'s map in the shared map folder format
(``mast3r_ros.maps``: versioned, atomic, manifest + ``arrays.npz`` without pickle).

Manifest: ``kind`` = "slam_keyframes", ``engine`` (``reloc.engine_identity``), ``keyframes``
(``maps.keyframe_entry``: id, stamp_ns, frame_id, T_map_cam, K, intrinsics_estimated, plus
num_fused and median_depth), ``tracker`` (the tracker config) and, when the system maps,
``mapper`` (the mapper's state section, ``slam.mapper_state``; format version 2).
Arrays per keyframe ``<id>.image_jpeg`` (uint8 bytes), ``<id>.pts3d``, ``<id>.conf``,
``<id>.weight`` (float32, network resolution), ``<id>.colors`` (uint8); the mapper's
arrays under ``mapper.<name>``.

Loading re-encodes every keyframe image once (``engine.encode`` with its ``frame_id``) and
checks everything (keyframe arrays, the mapper section) BEFORE the system's current map is
dropped: a refused map (``MapFormatError`` naming what is wrong) leaves the system as it was.

With a mapper, a map that has mapper state resumes mapping exactly where it stopped (no
decode, no alignment; each keyframe's pointmap becomes the mapper's optimised geometry, so
tracking against the loaded keyframes measures in the map's geometry); a map without it
(format 1, or saved without a mapper) is re-aligned keyframe by keyframe, except in
localization mode, where the map is never changed (the mapper then stays empty and the
keyframes keep their saved poses).
"""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import torch

from mast3r_ros.maps import keyframe_entry, load_map_folder, parse_keyframes, save_map_folder
from mast3r_ros.maps import MapFormatError

from .types import Keyframe

log = logging.getLogger(__name__)

KIND = "slam_keyframes"
MAPPER_PREFIX = "mapper."


def _jpeg(kf: Keyframe) -> bytes:
    if kf.image_jpeg is not None:
        return kf.image_jpeg
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(kf.image, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise RuntimeError(f"cannot JPEG-encode the image of keyframe {kf.id}")
    return buf.tobytes()


def save_keyframes(system, path, *, overwrite: bool = False) -> int:
    """Write the map of ``system`` (keyframes, and the mapper's state when it has one) to the
    map folder ``path``; returns the number of keyframes."""
    path = Path(path)
    kfs = system.tracker.keyframes
    arrays: dict[str, np.ndarray] = {}
    entries = []
    for kf in kfs:
        arrays[f"{kf.id}.image_jpeg"] = np.frombuffer(_jpeg(kf), dtype=np.uint8)
        arrays[f"{kf.id}.pts3d"] = kf.pts3d.detach().cpu().numpy().astype(np.float32)
        arrays[f"{kf.id}.conf"] = kf.conf.detach().cpu().numpy().astype(np.float32)
        arrays[f"{kf.id}.weight"] = kf.weight.detach().cpu().numpy().astype(np.float32)
        arrays[f"{kf.id}.colors"] = kf.colors
        entries.append(keyframe_entry(kf.id, kf.T_map_cam, kf.K, stamp_ns=int(kf.stamp_ns),
                                      frame_id=kf.frame_id,
                                      intrinsics_estimated=kf.intrinsics_estimated,
                                      num_fused=int(kf.num_fused),
                                      median_depth=float(kf.median_depth)))
    from mast3r_ros.reloc import engine_identity

    manifest = {"kind": KIND, "engine": engine_identity(system.engine), "keyframes": entries,
                "tracker": system.config.tracker.to_dict()}
    mapper = system.mapper
    if mapper is not None and hasattr(mapper, "state_dict") and len(mapper) > 0:
        meta, marr = mapper.state_dict()
        manifest["mapper"] = meta
        arrays.update({MAPPER_PREFIX + k: v for k, v in marr.items()})
    save_map_folder(path, manifest, arrays, overwrite=overwrite)
    log.info("saved %d keyframes%s to %s", len(entries),
             " and the mapper's state" if "mapper" in manifest else "", path)
    return len(entries)


def _build_keyframes(system, path: Path, entries: list[dict], arrays: dict) -> list[Keyframe]:
    """Keyframe objects from the map (each image encoded once); MapFormatError on bad data."""
    dev = getattr(system.engine, "device", None) or torch.device("cpu")
    out = []
    for e in entries:
        kid = e["id"]
        try:
            jpeg = arrays[f"{kid}.image_jpeg"]
            pts, conf, weight = (arrays[f"{kid}.{k}"] for k in ("pts3d", "conf", "weight"))
            colors = arrays[f"{kid}.colors"]
        except KeyError as exc:
            raise MapFormatError(f"{path}: keyframe {kid!r} lacks the array {exc}") from None
        if jpeg.dtype != np.uint8 or jpeg.ndim != 1 or colors.dtype != np.uint8 or colors.ndim != 3:
            raise MapFormatError(f"{path}: keyframe {kid!r}: image_jpeg must be 1-d uint8 and colors "
                                 f"(h, w, 3) uint8, got {jpeg.shape} {jpeg.dtype} / {colors.shape} "
                                 f"{colors.dtype}")
        bgr = cv2.imdecode(np.asarray(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise MapFormatError(f"{path}: keyframe {kid!r} image is not a decodable JPEG")
        if e["K"] is None:
            raise MapFormatError(f"{path}: keyframe {kid!r} has no K")
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        try:
            view = system.engine.encode(image, frame_id=e.get("frame_id"))
        except (KeyError, ValueError) as exc:  # e.g. the simulator has no such frame
            raise MapFormatError(f"{path}: keyframe {kid!r}: the engine cannot encode its image "
                                 f"({type(exc).__name__}: {exc})") from None
        hw = tuple(view.transform.network_size)
        for name, a, shape in (("pts3d", pts, hw + (3,)), ("conf", conf, hw), ("weight", weight, hw),
                               ("colors", colors, hw + (3,))):
            if tuple(a.shape) != shape:
                raise MapFormatError(f"{path}: keyframe {kid!r} {name} is {tuple(a.shape)} but the "
                                     f"engine encodes its image at {hw}: expected {shape}")
        kf = Keyframe(id=kid, stamp_ns=int(e.get("stamp_ns") or 0), T_map_cam=e["T_map_cam"],
                      K=e["K"], intrinsics_estimated=bool(e.get("intrinsics_estimated", False)),
                      view=view, image=None, colors=np.array(colors, np.uint8),
                      pts3d=torch.tensor(pts, device=dev), conf=torch.tensor(conf, device=dev),
                      weight=torch.tensor(weight, device=dev),
                      num_fused=int(e.get("num_fused", 1)),
                      median_depth=float(e.get("median_depth", 1.0)), frame_id=e.get("frame_id"),
                      image_jpeg=bytes(np.asarray(jpeg, np.uint8).tobytes()))
        out.append(kf)
    return out


def _to_map_scale(system, mapper, kfs: list[Keyframe]) -> None:
    """Give each keyframe the map's geometry: its fused pointmap (tracking's, which the
    mapper's corrections never touch: measured 7-20 % off the mapper's scale under the
    realistic simulator profile) becomes the mapper's optimised points where the mapper has
    a depth, and is rescaled to the mapper's scale (median depth ratio) elsewhere. Tracking
    against a loaded map then measures offsets in the map's geometry, like the keyframe poses
    it adds them to (tracking errors in the loaded map fell from ~10 cm to ~1 cm)."""
    min_conf = system.config.tracker.min_conf
    for kf in kfs:
        P_map = torch.as_tensor(mapper.keyframe_points(kf.id), device=kf.pts3d.device)
        z_map = P_map[..., 2]
        z_trk = kf.pts3d[..., 2]
        ok = (z_map > 0) & (z_trk > 0) & (kf.conf >= min_conf)
        if int(ok.sum()) < 16:
            continue
        r = float((z_map[ok] / z_trk[ok]).median())
        if np.isfinite(r) and r > 0:
            kf.pts3d = torch.where((z_map > 0)[..., None], P_map.to(kf.pts3d.dtype), kf.pts3d * r)
            kf.median_depth *= r


def load_keyframes(system, path) -> int:
    """Replace ``system``'s map by the one at ``path``; returns the number of keyframes.

    Raises:
        MapFormatError (a ValueError): missing or unreadable map, another kind or an unknown
            format version, missing or inconsistent arrays (keyframes or mapper state). The
            system's current map is kept then.
    """
    from .map_link import add_to_mapper, to_mapper_keyframe

    path = Path(path)
    manifest, arrays = load_map_folder(path, kind=KIND)
    entries = parse_keyframes(manifest, f"{path}/manifest.json")
    loaded = _build_keyframes(system, path, entries, arrays)
    mapper = system.mapper
    section = manifest.get("mapper")
    if section is not None and not isinstance(section, dict):
        raise MapFormatError(f"{path}: 'mapper' must be an object, got {type(section).__name__}")
    mapper_arrays = {k[len(MAPPER_PREFIX):]: v for k, v in arrays.items() if k.startswith(MAPPER_PREFIX)}
    if section is None and mapper_arrays:
        raise MapFormatError(f"{path}: arrays {sorted(mapper_arrays)[:3]}... have no 'mapper' section")
    restored = False
    mapped_ids: set[str] = set()
    if section is not None:
        if mapper is not None and hasattr(mapper, "load_state"):
            try:  # checked completely before the mapper changes
                mapper.load_state(section, mapper_arrays, [to_mapper_keyframe(k) for k in loaded])
            except ValueError as exc:
                raise MapFormatError(f"{path}: {exc}") from None
            restored = True
            mapped_ids = set(mapper.keyframe_ids())
        else:
            log.info("map %s carries mapper state; this system has no mapper (ignored)", path)
    if restored:
        _to_map_scale(system, mapper, [k for k in loaded if k.id in mapped_ids])
    # everything checked: drop the current map and install this one
    system._reset_tracking()
    if mapper is not None and not restored:
        mapper.reset()
    tr = system.tracker
    tr.keyframes.extend(loaded)
    tr._kf_counter = 1 + max((int(k.id[2:]) for k in loaded if k.id[2:].isdigit()), default=-1)
    if loaded and any(k.intrinsics_estimated for k in loaded):
        tr.K_estimated = loaded[0].K
        tr._focal_refined = True
    for kf in loaded:
        system._on_new_keyframe_reference_only(kf)
    system.counts["keyframes"] = len(loaded)
    pending = [k for k in loaded if k.id not in mapped_ids]
    if mapper is not None and pending:
        if system.localization_only:
            if not restored:
                log.warning("map %s has no mapper state (format 1, or saved without mapping): in "
                            "localization mode the map is used as saved, without its mapper", path)
        else:
            log.warning("map %s: %d keyframes without mapper state (format 1, saved without "
                        "mapping, or not mapped yet): aligning them now", path, len(pending))
            for kf in pending:
                system._apply_map_update(add_to_mapper(mapper, kf))
    log.info("loaded %d keyframes from %s (mapper state %s)", len(loaded), path,
             "restored" if restored else "absent")
    return len(loaded)
