"""The map folder format (version 2; version 1 is still read) and its atomic save.

Layout of a map folder ``PATH/``::

    manifest.json   {"format_version": 2, "kind": "...", "created_utc": "...",
                     "engine": {...},            # engine type, config, checkpoint identity
                     "keyframes": [{"id", "stamp_ns", "frame_id", "T_map_cam" (4x4 nested
                                    list, camera -> map), "K" (3x3 or null),
                                    "intrinsics_estimated"}, ...],
                     "arrays": {name: {"shape": [...], "dtype": "..."}},
                     "arrays_sha256": "<hex of arrays.npz>",
                     ...}                        # any further keys the writer adds (kept)
    arrays.npz      every array of the map, ``np.savez`` (uncompressed), read with
                    allow_pickle=False; object arrays are refused when saving

``kind`` says who wrote it (``"reloc_references"`` for ``Relocalizer``; the mapper adds its
own kind and arrays, e.g. point clouds, under new names). Readers check the version, the
kind they expect, the checksum of ``arrays.npz``, every array's shape and dtype against the
table, and the keyframes (ids unique, finite rigid poses, valid K); anything wrong raises
``MapFormatError`` naming the file and the problem.

Versions (``FORMAT_VERSION`` is written, ``READABLE_VERSIONS`` are read; a map of any other
version, e.g. one written by a newer build, is refused with ``MapFormatError``):

1. manifest + ``arrays.npz`` as above.
2. the same container; a ``slam_keyframes`` map may carry the mapper's state: a manifest
   section ``"mapper"`` (with its own ``state_version``) and arrays named ``mapper.*``
   (``mast3r_ros.slam.map_io``, ``mast3r_ros.slam.mapper_state``). A version-1 build would
   silently drop that state, hence the bump; version-1 maps load unchanged (no mapper state).

Atomic save (a crash at any point leaves a loadable map at ``PATH``, old or new):

1. write ``manifest.json`` and ``arrays.npz`` into ``.PATH.tmp-<random>`` beside ``PATH``,
   fsync both files and the folder;
2. if ``PATH`` exists (``overwrite=True``): rename it aside to ``.PATH.old-<random>``;
3. rename the temporary folder to ``PATH``; fsync the parent folder;
4. delete the old folder.

Between 2 and 3 ``PATH`` does not exist but the complete old map sits aside:
``load_map_folder`` puts it back (and logs it) when ``PATH`` is missing and exactly one
aside copy exists. The manifest is written last into the temporary folder, so a folder
without a manifest is never a complete map. A save starts the same way (an interrupted
save's old map is put back first) and removes what killed saves left beside a complete
``PATH`` (aside copies; temporary folders older than an hour), so there is never more than
one aside copy to choose from.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Mapping

import numpy as np

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST_FILE = "manifest.json"
ARRAYS_FILE = "arrays.npz"

__all__ = ["FORMAT_VERSION", "READABLE_VERSIONS", "MANIFEST_FILE", "ARRAYS_FILE", "MapFormatError", "save_map_folder",
           "load_map_folder", "keyframe_entry", "parse_keyframes"]


class MapFormatError(ValueError):
    """A map folder is missing, partial, corrupt, of another version or another kind."""


# ------------------------------------------------------------------------------ helpers


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _aside_copies(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f".{path.name}.old-*"))


def _remove_stale(path: Path, tmp_age_s: float = 3600.0) -> None:
    """Leftovers of killed saves beside an existing ``PATH``: aside copies (older maps: a
    complete ``PATH`` exists) and temporary folders older than ``tmp_age_s`` (a younger one
    may be another process's save in progress)."""
    if not path.is_dir():
        return
    import time

    now = time.time()
    stale = _aside_copies(path)
    for p in path.parent.glob(f".{path.name}.tmp-*"):
        try:
            if now - p.stat().st_mtime > tmp_age_s:
                stale.append(p)
        except OSError:
            continue
    for p in stale:
        logger.info("removing %s (left by an interrupted save of %s)", p, path)
        shutil.rmtree(p, ignore_errors=True)


def keyframe_entry(kf_id: str, T_map_cam: np.ndarray, K: np.ndarray | None, *,
                   stamp_ns: int | None = None, frame_id: str | None = None,
                   intrinsics_estimated: bool = False, **extra: Any) -> dict:
    """One ``keyframes`` entry of the manifest (JSON-able). ``extra`` keys are kept as is."""
    T = np.asarray(T_map_cam, dtype=np.float64)
    return {"id": str(kf_id), "stamp_ns": None if stamp_ns is None else int(stamp_ns),
            "frame_id": frame_id, "T_map_cam": T.tolist(),
            "K": None if K is None else np.asarray(K, dtype=np.float64).tolist(),
            "intrinsics_estimated": bool(intrinsics_estimated), **extra}


def _check_pose(T: np.ndarray, where: str) -> None:
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise MapFormatError(f"{where}: T_map_cam must be a finite 4x4 matrix, got {T.tolist()}")
    R = T[:3, :3]
    if (np.abs(R.T @ R - np.eye(3)).max() > 1e-4 or abs(np.linalg.det(R) - 1) > 1e-4
            or not np.allclose(T[3], [0, 0, 0, 1], atol=1e-9)):
        raise MapFormatError(f"{where}: T_map_cam is not a rigid transform (rotation not "
                             "orthonormal or last row not [0, 0, 0, 1])")


def parse_keyframes(manifest: Mapping[str, Any], source: str = "manifest") -> list[dict]:
    """Validated keyframe entries: ``T_map_cam`` (4, 4) and ``K`` (3, 3) | None as float64
    arrays, ids unique. Raises ``MapFormatError`` naming the keyframe and the problem."""
    kfs = manifest.get("keyframes")
    if not isinstance(kfs, list):
        raise MapFormatError(f"{source}: 'keyframes' must be a list, got {type(kfs).__name__}")
    out, seen = [], set()
    for i, kf in enumerate(kfs):
        where = f"{source}: keyframe {i}"
        if not isinstance(kf, dict):
            raise MapFormatError(f"{where} is not an object")
        for key in ("id", "T_map_cam", "K", "intrinsics_estimated"):
            if key not in kf:
                raise MapFormatError(f"{where} lacks '{key}'")
        kid = kf["id"]
        if not isinstance(kid, str) or not kid:
            raise MapFormatError(f"{where}: id must be a non-empty string, got {kid!r}")
        if kid in seen:
            raise MapFormatError(f"{where}: duplicate id {kid!r}")
        seen.add(kid)
        try:
            T = np.asarray(kf["T_map_cam"], dtype=np.float64)
        except (TypeError, ValueError):
            raise MapFormatError(f"{where} ({kid}): T_map_cam is not numeric") from None
        _check_pose(T, f"{where} ({kid})")
        K = kf["K"]
        if K is not None:
            try:
                K = np.asarray(K, dtype=np.float64)
            except (TypeError, ValueError):
                raise MapFormatError(f"{where} ({kid}): K is not numeric") from None
            if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
                raise MapFormatError(f"{where} ({kid}): K must be a finite 3x3 with fx, fy > 0, "
                                     f"got {K.tolist()}")
        stamp = kf.get("stamp_ns")
        if stamp is not None and not isinstance(stamp, int):
            raise MapFormatError(f"{where} ({kid}): stamp_ns must be an integer or null")
        out.append({**kf, "T_map_cam": T, "K": K})
    return out


# ------------------------------------------------------------------------------ save


def save_map_folder(path: str | Path, manifest: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
                    *, overwrite: bool = False) -> Path:
    """Write a map folder atomically (see the module docstring).

    Args:
        path: target folder.
        manifest: JSON-able dict with at least ``kind`` (str), ``engine`` (dict) and
            ``keyframes`` (list of ``keyframe_entry``); ``format_version``, ``created_utc``,
            ``arrays`` and ``arrays_sha256`` are filled in here.
        arrays: name -> numeric/bool array (no object arrays); names are free-form strings
            without '/'.
        overwrite: replace an existing map at ``path``.

    Returns:
        The map folder path.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        NotADirectoryError: ``path`` is a file.
        ValueError: bad manifest or arrays (nothing is written).
        OSError: the disk refused; the previous map (if any) stays loadable.
    """
    path = Path(path)
    _recover(path)  # a save interrupted between its renames: its old map comes back first
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"map path {path} is a file; give a folder path")
    if path.exists() and not overwrite:
        raise FileExistsError(f"map folder {path} exists; pass overwrite=True to replace it")
    if not isinstance(manifest.get("kind"), str) or not manifest["kind"]:
        raise ValueError("manifest needs a non-empty string 'kind'")
    if not isinstance(manifest.get("engine"), dict):
        raise ValueError("manifest needs an 'engine' dict (type, config, checkpoint identity)")
    parse_keyframes(manifest, "manifest to save")
    table = {}
    clean: dict[str, np.ndarray] = {}
    for name, a in arrays.items():
        a = np.asarray(a)
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"array name {name!r} must be a non-empty string without '/'")
        if a.dtype.kind not in "biuf":
            raise ValueError(f"array {name!r} has dtype {a.dtype}; only bool/int/float are stored")
        clean[name] = a
        table[name] = {"shape": list(a.shape), "dtype": a.dtype.str}
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)   # leftovers of killed saves (so at most one aside copy ever exists)
    tmp = parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        arrays_path = tmp / ARRAYS_FILE
        with open(arrays_path, "wb") as f:
            np.savez(f, **clean)
            f.flush()
            os.fsync(f.fileno())
        full = {**dict(manifest), "format_version": FORMAT_VERSION,
                "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "arrays": table, "arrays_sha256": _sha256(arrays_path)}
        text = json.dumps(full, indent=1, allow_nan=False)
        with open(tmp / MANIFEST_FILE, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    aside = None
    try:
        if path.exists():
            aside = parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(path, aside)
        os.replace(tmp, path)
        _fsync_dir(parent)
    except BaseException:
        # Best effort: put the old map back (a real crash here is repaired by the loader).
        try:
            if aside is not None and aside.exists() and not path.exists():
                os.replace(aside, path)
        except OSError:
            logger.error("could not restore %s from %s; load_map_folder will", path, aside)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    logger.info("saved map %s (%d keyframes, %d arrays)", path, len(manifest["keyframes"]), len(clean))
    return path


# ------------------------------------------------------------------------------ load


def _recover(path: Path) -> None:
    """PATH missing but one complete aside copy (a save interrupted between renames)."""
    if path.exists():
        return
    asides = [p for p in _aside_copies(path) if (p / MANIFEST_FILE).is_file()]
    if len(asides) == 1:
        logger.warning("map folder %s is missing but %s holds the previous map (a save was "
                       "interrupted); restoring it", path, asides[0])
        os.replace(asides[0], path)


def load_map_folder(path: str | Path, *, kind: str | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and check a map folder.

    Args:
        path: the map folder.
        kind: the ``kind`` the caller expects (None accepts any).

    Returns:
        (manifest, arrays): the manifest dict as stored (keyframes still JSON: use
        ``parse_keyframes`` for arrays) and name -> array.

    Raises:
        MapFormatError: missing folder or file, bad JSON, unknown version, wrong kind,
            checksum mismatch (corrupt or truncated arrays), array shape/dtype mismatch,
            bad keyframes (NaN or non-rigid poses, bad K, duplicate ids).
    """
    path = Path(path)
    _recover(path)
    if not path.exists():
        raise MapFormatError(f"map folder {path} does not exist")
    if not path.is_dir():
        raise MapFormatError(f"map path {path} is a file, not a map folder")
    mpath, apath = path / MANIFEST_FILE, path / ARRAYS_FILE
    if not mpath.is_file():
        raise MapFormatError(f"{path}: missing {MANIFEST_FILE} (not a map folder, or a partial one)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MapFormatError(f"{mpath}: bad JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise MapFormatError(f"{mpath}: the manifest must be a JSON object")
    version = manifest.get("format_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise MapFormatError(f"{mpath}: unknown format_version {version!r}; this build reads "
                             f"versions {', '.join(map(str, READABLE_VERSIONS))} (a newer build "
                             "wrote it?)")
    if kind is not None and manifest.get("kind") != kind:
        raise MapFormatError(f"{mpath}: map kind is {manifest.get('kind')!r}, expected {kind!r}")
    if not isinstance(manifest.get("engine"), dict):
        raise MapFormatError(f"{mpath}: 'engine' must be an object")
    table = manifest.get("arrays")
    if not isinstance(table, dict):
        raise MapFormatError(f"{mpath}: 'arrays' must be an object")
    parse_keyframes(manifest, str(mpath))
    if not apath.is_file():
        raise MapFormatError(f"{path}: missing {ARRAYS_FILE}")
    digest = _sha256(apath)
    if digest != manifest.get("arrays_sha256"):
        raise MapFormatError(f"{apath}: checksum mismatch (file corrupt or truncated: sha256 "
                             f"{digest[:12]}..., manifest says {str(manifest.get('arrays_sha256'))[:12]}...)")
    try:
        with np.load(apath, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # zipfile / format errors of a damaged file
        raise MapFormatError(f"{apath}: unreadable ({type(exc).__name__}: {exc})") from None
    for name, spec in table.items():
        if name not in arrays:
            raise MapFormatError(f"{apath}: array {name!r} listed in the manifest is missing")
        a = arrays[name]
        if list(a.shape) != list(spec.get("shape", [])) or a.dtype.str != spec.get("dtype"):
            raise MapFormatError(f"{apath}: array {name!r} is {a.shape} {a.dtype.str}, manifest "
                                 f"says {tuple(spec.get('shape', []))} {spec.get('dtype')}")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise MapFormatError(f"{apath}: array {name!r} has NaN or inf values")
    extra = sorted(set(arrays) - set(table))
    if extra:
        raise MapFormatError(f"{apath}: arrays {extra} are not in the manifest")
    return manifest, arrays


