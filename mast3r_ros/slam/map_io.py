"""Saving and loading the keyframes of a ``SlamSystem`` in the shared map folder format
(``mast3r_ros.maps``: versioned, atomic, manifest + ``arrays.npz`` without pickle).

Manifest: ``kind`` = "slam_keyframes", ``engine`` (``reloc.engine_identity``), ``keyframes``
(``maps.keyframe_entry``: id, stamp_ns, frame_id, T_map_cam, K, intrinsics_estimated, plus
num_fused and median_depth), ``tracker`` (the tracker config). Arrays per keyframe ``<id>.image_jpeg`` (uint8 bytes), ``<id>.pts3d``,
``<id>.conf``, ``<id>.weight`` (float32, network resolution), ``<id>.colors`` (uint8).
Loading re-encodes every keyframe image once (``engine.encode`` with its ``frame_id``).
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


def _jpeg(kf: Keyframe) -> bytes:
    if kf.image_jpeg is not None:
        return kf.image_jpeg
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(kf.image, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise RuntimeError(f"cannot JPEG-encode the image of keyframe {kf.id}")
    return buf.tobytes()


def save_keyframes(system, path, *, overwrite: bool = False) -> int:
    """Write the keyframes of ``system`` to the map folder ``path``; returns their count."""
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
    save_map_folder(path, manifest, arrays, overwrite=overwrite)
    log.info("saved %d keyframes to %s", len(entries), path)
    return len(entries)


def load_keyframes(system, path) -> int:
    """Replace ``system``'s map by the keyframes at ``path``; returns their count.

    Raises:
        MapFormatError (a ValueError): missing or unreadable map, another kind, missing arrays.
    """
    path = Path(path)
    manifest, arrays = load_map_folder(path, kind=KIND)
    entries = parse_keyframes(manifest, f"{path}/manifest.json")
    system.reset()
    tr = system.tracker
    dev = None
    loaded = []
    for e in entries:
        kid = e.get("id")
        try:
            jpeg = arrays[f"{kid}.image_jpeg"]
            pts, conf, weight = (arrays[f"{kid}.{k}"] for k in ("pts3d", "conf", "weight"))
            colors = arrays[f"{kid}.colors"]
        except KeyError as exc:
            raise MapFormatError(f"{path}: keyframe {kid!r} lacks the array {exc}") from None
        bgr = cv2.imdecode(np.asarray(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise MapFormatError(f"{path}: keyframe {kid!r} image is not a decodable JPEG")
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        view = system.engine.encode(image, frame_id=e.get("frame_id"))
        if dev is None:
            dev = getattr(system.engine, "device", torch.device("cpu"))
        if tuple(pts.shape[:2]) != tuple(view.transform.network_size):
            raise MapFormatError(f"{path}: keyframe {kid!r} pointmap is {pts.shape[:2]} but the engine "
                           f"encodes its image at {view.transform.network_size}")
        if e["K"] is None:
            raise MapFormatError(f"{path}: keyframe {kid!r} has no K")
        kf = Keyframe(id=kid, stamp_ns=int(e.get("stamp_ns") or 0), T_map_cam=e["T_map_cam"],
                      K=e["K"],
                      intrinsics_estimated=bool(e.get("intrinsics_estimated", False)), view=view,
                      image=None, colors=np.asarray(colors, np.uint8),
                      pts3d=torch.as_tensor(pts, device=dev), conf=torch.as_tensor(conf, device=dev),
                      weight=torch.as_tensor(weight, device=dev),
                      num_fused=int(e.get("num_fused", 1)),
                      median_depth=float(e.get("median_depth", 1.0)), frame_id=e.get("frame_id"),
                      image_jpeg=bytes(np.asarray(jpeg, np.uint8).tobytes()))
        tr.keyframes.append(kf)
        loaded.append(kf)
    tr._kf_counter = 1 + max((int(k.id[2:]) for k in loaded if k.id[2:].isdigit()), default=-1)
    if loaded and any(k.intrinsics_estimated for k in loaded):
        tr.K_estimated = loaded[0].K
        tr._focal_refined = True
    for kf in loaded:
        system._on_new_keyframe_reference_only(kf)
    system.counts["keyframes"] = len(loaded)
    log.info("loaded %d keyframes from %s", len(loaded), path)
    return len(loaded)
