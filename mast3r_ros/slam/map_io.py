"""Saving and loading the keyframes of a ``SlamSystem``.

Uses the shared versioned map folder format (``mast3r_ros.maps``: atomic save, manifest +
arrays) when it is available, else the same layout written here (``manifest.json`` +
``arrays.npz``, written to a temporary folder beside the target and renamed).

Manifest: ``format_version``, ``kind`` = "mast3r_ros.slam", ``engine`` (engine class),
``keyframes`` (id, stamp, T_map_cam, K, intrinsics_estimated, frame_id, num_fused,
median_depth). Arrays per keyframe ``<id>/image_jpeg`` (uint8 bytes), ``<id>/pts3d``,
``<id>/conf``, ``<id>/weight`` (float32, network resolution), ``<id>/colors`` (uint8).
Loading re-encodes every keyframe image once (``engine.encode`` with its ``frame_id``).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from .types import Keyframe

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
KIND = "mast3r_ros.slam"


class MapError(ValueError):
    """A map folder that cannot be read (the message names what is wrong)."""


def _save_folder(path: Path, manifest: dict, arrays: dict, overwrite: bool) -> None:
    try:
        from mast3r_ros.maps import save_map_folder
    except ImportError:
        save_map_folder = None
    if save_map_folder is not None:
        save_map_folder(path, manifest, arrays, overwrite=overwrite)
        return
    if path.exists() and not overwrite:
        raise FileExistsError(f"map {path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        with open(tmp / "arrays.npz", "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        with open(tmp / "manifest.json", "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        tmp.rename(path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load_folder(path: Path) -> tuple[dict, dict]:
    try:
        from mast3r_ros.maps import load_map_folder
    except ImportError:
        load_map_folder = None
    if load_map_folder is not None:
        return load_map_folder(path)
    if not (path / "manifest.json").is_file() or not (path / "arrays.npz").is_file():
        raise MapError(f"{path} is not a map folder (manifest.json / arrays.npz missing)")
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except json.JSONDecodeError as exc:
        raise MapError(f"{path}/manifest.json is not valid JSON: {exc}") from None
    with np.load(path / "arrays.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return manifest, arrays


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
        arrays[f"{kf.id}/image_jpeg"] = np.frombuffer(_jpeg(kf), dtype=np.uint8)
        arrays[f"{kf.id}/pts3d"] = kf.pts3d.detach().cpu().numpy().astype(np.float32)
        arrays[f"{kf.id}/conf"] = kf.conf.detach().cpu().numpy().astype(np.float32)
        arrays[f"{kf.id}/weight"] = kf.weight.detach().cpu().numpy().astype(np.float32)
        arrays[f"{kf.id}/colors"] = kf.colors
        entries.append({"id": kf.id, "stamp": int(kf.stamp_ns), "T_map_cam": kf.T_map_cam.tolist(),
                        "K": kf.K.tolist(), "intrinsics_estimated": bool(kf.intrinsics_estimated),
                        "frame_id": kf.frame_id, "num_fused": int(kf.num_fused),
                        "median_depth": float(kf.median_depth)})
    manifest = {"format_version": FORMAT_VERSION, "kind": KIND,
                "engine": {"class": type(system.engine).__name__,
                           "config": repr(getattr(system.engine, "config", None))},
                "keyframes": entries,
                "tracker": system.config.tracker.to_dict()}
    _save_folder(path, manifest, arrays, overwrite)
    log.info("saved %d keyframes to %s", len(entries), path)
    return len(entries)


def load_keyframes(system, path) -> int:
    """Replace ``system``'s map by the keyframes at ``path``; returns their count.

    Raises:
        FileNotFoundError: no folder; MapError (a ValueError): not a readable map.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no map folder at {path}")
    manifest, arrays = _load_folder(path)
    if manifest.get("kind") not in (KIND, None) and "keyframes" not in manifest:
        raise MapError(f"{path} holds a map of kind {manifest.get('kind')!r} without keyframes")
    entries = manifest.get("keyframes")
    if not isinstance(entries, list):
        raise MapError(f"{path}/manifest has no 'keyframes' list")
    system.reset()
    tr = system.tracker
    dev = None
    loaded = []
    for e in entries:
        kid = e.get("id")
        try:
            jpeg = arrays[f"{kid}/image_jpeg"]
            pts, conf, weight = (arrays[f"{kid}/{k}"] for k in ("pts3d", "conf", "weight"))
            colors = arrays[f"{kid}/colors"]
        except KeyError as exc:
            raise MapError(f"{path}: keyframe {kid!r} lacks the array {exc}") from None
        bgr = cv2.imdecode(np.asarray(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise MapError(f"{path}: keyframe {kid!r} image is not a decodable JPEG")
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        view = system.engine.encode(image, frame_id=e.get("frame_id"))
        if dev is None:
            dev = getattr(system.engine, "device", torch.device("cpu"))
        if tuple(pts.shape[:2]) != tuple(view.transform.network_size):
            raise MapError(f"{path}: keyframe {kid!r} pointmap is {pts.shape[:2]} but the engine "
                           f"encodes its image at {view.transform.network_size}")
        kf = Keyframe(id=kid, stamp_ns=int(e["stamp"]), T_map_cam=np.array(e["T_map_cam"], float),
                      K=np.array(e["K"], float),
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
