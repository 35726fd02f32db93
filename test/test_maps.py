"""The versioned map folder (mast3r_ros.maps): round trip, atomic save under a crash, and
refusal of corrupt, partial, wrong-version and wrong-kind maps with named reasons."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mast3r_ros.maps import (
    ARRAYS_FILE, FORMAT_VERSION, MANIFEST_FILE, MapFormatError, keyframe_entry, load_map_folder,
    parse_keyframes, save_map_folder,
)


def _map(n: int = 3, tag: float = 0.0):
    rng = np.random.default_rng(int(tag * 10) + n)
    kfs = []
    for i in range(n):
        T = np.eye(4)
        T[:3, 3] = [i, tag, 0.5]
        kfs.append(keyframe_entry(f"kf{i}", T, None if i % 2 else np.diag([100.0, 100.0, 1.0]),
                                  stamp_ns=10**9 * i, frame_id=f"{i}.000000000",
                                  intrinsics_estimated=bool(i % 2)))
    manifest = {"kind": "test_map", "engine": {"type": "X", "config": {"a": 1}}, "keyframes": kfs,
                "extra_key": {"kept": True}}
    arrays = {"desc": rng.normal(size=(n, 8)).astype(np.float32),
              "image_000000": rng.integers(0, 255, (12, 16, 3), dtype=np.uint8),
              "mask": np.ones(5, bool)}
    return manifest, arrays


def test_round_trip_keeps_everything(tmp_path):
    manifest, arrays = _map()
    save_map_folder(tmp_path / "m", manifest, arrays)
    m2, a2 = load_map_folder(tmp_path / "m", kind="test_map")
    assert m2["format_version"] == FORMAT_VERSION and m2["extra_key"] == {"kept": True}
    assert sorted(a2) == sorted(arrays)
    for k in arrays:
        np.testing.assert_array_equal(a2[k], arrays[k])
        assert a2[k].dtype == arrays[k].dtype
    kfs = parse_keyframes(m2)
    assert [k["id"] for k in kfs] == ["kf0", "kf1", "kf2"]
    np.testing.assert_array_equal(kfs[2]["T_map_cam"][:3, 3], [2, 0, 0.5])
    assert kfs[1]["K"] is None and kfs[0]["K"].shape == (3, 3)
    assert not list(tmp_path.glob(".m.*")), "no temporary folder left behind"


def test_existing_map_needs_overwrite(tmp_path):
    save_map_folder(tmp_path / "m", *_map())
    with pytest.raises(FileExistsError, match="overwrite"):
        save_map_folder(tmp_path / "m", *_map(tag=1.0))
    save_map_folder(tmp_path / "m", *_map(4, tag=1.0), overwrite=True)
    assert len(load_map_folder(tmp_path / "m")[0]["keyframes"]) == 4
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        save_map_folder(tmp_path / "file", *_map(), overwrite=True)


@pytest.mark.parametrize("crash_at", [1, 2])
def test_interrupted_save_leaves_old_map_loadable(tmp_path, monkeypatch, crash_at):
    """A crash at the first rename (old aside) or the second (new in): the old map loads."""
    path = tmp_path / "m"
    save_map_folder(path, *_map(3, tag=0.0))
    real = os.replace
    calls = {"n": 0}

    def crashing_replace(a, b):
        calls["n"] += 1
        if calls["n"] >= crash_at:  # every later call fails too, as if the process died
            raise OSError("simulated crash")
        return real(a, b)

    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(OSError, match="simulated crash"):
        save_map_folder(path, *_map(5, tag=1.0), overwrite=True)
    monkeypatch.setattr(os, "replace", real)
    manifest, _ = load_map_folder(path)
    assert len(manifest["keyframes"]) == 3  # the old map, complete
    assert parse_keyframes(manifest)[0]["T_map_cam"][1, 3] == 0.0
    assert not list(tmp_path.glob(".m.tmp-*")), "temporary folder cleaned"


def _saved(tmp_path):
    path = tmp_path / "m"
    save_map_folder(path, *_map())
    return path


def _edit_manifest(path, fn):
    m = json.loads((path / MANIFEST_FILE).read_text())
    fn(m)
    (path / MANIFEST_FILE).write_text(json.dumps(m))


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / MANIFEST_FILE).unlink(), "missing manifest.json"),
    (lambda p: (p / ARRAYS_FILE).unlink(), "missing arrays.npz"),
    (lambda p: (p / MANIFEST_FILE).write_text("{not json"), "bad JSON"),
    (lambda p: _edit_manifest(p, lambda m: m.update(format_version=99)), "unknown format_version 99"),
    (lambda p: _edit_manifest(p, lambda m: m.update(kind="other")), "kind is 'other', expected 'test_map'"),
    (lambda p: _edit_manifest(p, lambda m: m["keyframes"][1]["T_map_cam"][0].__setitem__(3, float("nan"))),
     "keyframe 1 \\(kf1\\): T_map_cam must be a finite"),
    (lambda p: _edit_manifest(p, lambda m: m["keyframes"][0].__setitem__("T_map_cam", np.diag([2.0, 1, 1, 1]).tolist())),
     "not a rigid transform"),
    (lambda p: _edit_manifest(p, lambda m: m["keyframes"][1].update(id="kf0")), "duplicate id 'kf0'"),
    (lambda p: _edit_manifest(p, lambda m: m["keyframes"][0].update(K=[[0, 0, 1], [0, 1, 1], [0, 0, 1]])),
     "K must be a finite 3x3"),
    (lambda p: _edit_manifest(p, lambda m: m["arrays"]["desc"].update(shape=[3, 9])),
     "array 'desc' is \\(3, 8\\)"),
    (lambda p: _edit_manifest(p, lambda m: m["arrays"].update(ghost={"shape": [1], "dtype": "<f4"})),
     "array 'ghost' listed in the manifest is missing"),
])
def test_damaged_maps_are_refused_with_the_reason(tmp_path, damage, message):
    path = _saved(tmp_path)
    damage(path)
    with pytest.raises(MapFormatError, match=message):
        load_map_folder(path, kind="test_map")


def test_truncated_or_corrupted_arrays_are_refused(tmp_path):
    path = _saved(tmp_path)
    data = (path / ARRAYS_FILE).read_bytes()
    (path / ARRAYS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(MapFormatError, match="checksum mismatch"):
        load_map_folder(path)
    path = tmp_path / "m2"
    save_map_folder(path, *_map())
    b = bytearray((path / ARRAYS_FILE).read_bytes())
    b[len(b) // 2] ^= 0xFF
    (path / ARRAYS_FILE).write_bytes(bytes(b))
    with pytest.raises(MapFormatError, match="checksum mismatch"):
        load_map_folder(path)


def test_missing_folder_file_and_bad_arrays(tmp_path):
    with pytest.raises(MapFormatError, match="does not exist"):
        load_map_folder(tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(MapFormatError, match="is a file"):
        load_map_folder(tmp_path / "f")
    manifest, arrays = _map()
    with pytest.raises(ValueError, match="dtype object"):
        save_map_folder(tmp_path / "o", manifest, {"bad": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError, match="without '/'"):
        save_map_folder(tmp_path / "o", manifest, {"a/b": np.zeros(2)})
    assert not (tmp_path / "o").exists()
