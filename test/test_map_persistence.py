"""Maps that last (issue 10 item 3), ROS-free: ``SlamSystem.save_map`` / ``load_map`` with the
mapper's state, relocalization in a loaded map from a DIFFERENT trajectory, localization
mode, mapping resumed on a loaded map, refusal of damaged maps, and a save killed midway.

The world: one synthetic room, a mapping walk and a query walk through it (``two_walks``:
another seed, turned to overlap what the map sees; never the same poses). The network-output
SIMULATOR stands in for MASt3R (labelled as such); 256x192 images, network size 128x96.

Accuracy is judged *in the map*: a Sim(3) fitted on the map's keyframe centres only (never
on the queries) takes map poses to the world; a query's error is its pose through it against
the truth. Both profiles' figures are printed; the bound (>= 90 % within 0.25 m / 2 deg) is
asserted at ``PROFILE`` (see the module constant).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mast3r_ros.maps import ARRAYS_FILE, MANIFEST_FILE, MapFormatError, load_map_folder, save_map_folder
from mast3r_ros.reloc import RelocConfig
from mast3r_ros.slam import SlamConfig, SlamSystem, TrackingState
from mast3r_ros.slam.alignment import AlignmentConfig
from mast3r_ros.slam.mapper import Mapper, MapperConfig
from mast3r_ros.synth.simulator import NetworkOutputSimulator, SimulatorConfig

from two_walks import folder_digest, map_alignment, pose_errors, two_walks

# every test shares the built map (~60 s on the loaded 2-core CPU): the module is slow
pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
W, H, NET = 256, 192, 128
N_MAP, N_QUERY = 28, 20
FAST_LOCAL = AlignmentConfig(stage1_iters=40, stage2_iters=30)   # fewer iterations: CPU budget
FAST_FULL = AlignmentConfig(stage1_iters=60, stage2_iters=40)
PROFILE = "realistic"
TOL_M, TOL_DEG, MIN_OK = 0.25, 2.0, 0.9


def sim_config(profile: str) -> SimulatorConfig:
    return SimulatorConfig.profile(profile, size=NET)


def make_system(seq, profile: str = PROFILE, *, mapper: bool = True, localization_only=False,
                reloc: dict | None = None) -> SlamSystem:
    """A fresh engine (as a restarted process would have) and system."""
    eng = NetworkOutputSimulator(seq, sim_config(profile))
    m = Mapper(eng, MapperConfig(alignment=FAST_LOCAL, full_alignment=FAST_FULL, neighbors=2)) \
        if mapper else None
    cfg = SlamConfig(reloc={"top_k": 3, **(reloc or {})})
    return SlamSystem(eng, cfg, mapper=m, localization_only=localization_only)


@pytest.fixture(scope="module")
def world():
    return two_walks(N_MAP, N_QUERY, width=W, height=H)


@pytest.fixture(scope="module")
def built(world, tmp_path_factory):
    """The map of the mapping walk at ``PROFILE``, saved; its keyframe poses and mapper state."""
    seq, n_map = world
    slam = make_system(seq)
    slam.set_pose(seq.frames[0].T_world_cam)  # the map frame = the world (up to drift and scale)
    for f in seq.frames[:n_map]:
        slam.process(f.rgb, f.stamp_ns, f.K, frame_id=f.frame_id)
    path = tmp_path_factory.mktemp("maps") / "walk_map"
    n = slam.save_map(path)
    assert n == len(slam.keyframes()) >= 5
    kf_poses = {k.stamp_ns: k.T_map_cam.copy() for k in slam.keyframes()}
    return path, slam, kf_poses


def _relocalize_queries(seq, n_map, slam, sim) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    t, r, raw, fails = [], [], [], []
    for f in seq.frames[n_map:]:
        res = slam.relocalizer.relocalize(f.rgb, f.K, frame_id=f.frame_id)
        if not res.success:
            fails.append(res.message)
            t.append(np.inf)
            r.append(np.inf)
            raw.append(np.inf)
            continue
        te, re = pose_errors(res.T_map_cam, f.T_world_cam, sim)
        t.append(te)
        r.append(re)
        raw.append(pose_errors(res.T_map_cam, f.T_world_cam)[0])
    return np.array(t), np.array(r), np.array(raw), fails


# ----------------------------------------------------------------------------- round trip


def test_saved_map_restores_the_mapper_exactly(world, built):
    """A fresh system loads the map: keyframes, mapper state (every array), point cloud and
    the relocalization references' map points are what was saved; nothing was re-aligned."""
    seq, _ = world
    path, slam, _ = built
    manifest, arrays = load_map_folder(path)
    assert manifest["format_version"] == 2 and manifest["mapper"]["state_version"] == 1
    assert any(k.startswith("mapper.") for k in arrays)
    fresh = make_system(seq)
    assert fresh.load_map(path) == len(slam.keyframes())
    assert [k.id for k in fresh.keyframes()] == [k.id for k in slam.keyframes()]
    assert fresh.mapper.keyframe_ids() == slam.mapper.keyframe_ids()
    m0, a0 = slam.mapper.state_dict()
    m1, a1 = fresh.mapper.state_dict()
    assert m0 == m1 and sorted(a0) == sorted(a1)
    for k in a0:
        np.testing.assert_array_equal(a0[k], a1[k], err_msg=k)
    for k0, k1 in zip(slam.keyframes(), fresh.keyframes()):
        np.testing.assert_allclose(k1.T_map_cam, k0.T_map_cam, atol=1e-12)
    xyz0, _ = slam.mapper.point_cloud(20000, 0.02)
    xyz1, _ = fresh.mapper.point_cloud(20000, 0.02)
    np.testing.assert_allclose(xyz1, xyz0, atol=1e-6)
    kid = slam.keyframes()[len(slam.keyframes()) // 2].id
    pts = fresh.relocalizer.get_reference(kid).map_points()
    np.testing.assert_allclose(pts, slam.mapper.keyframe_points(kid), atol=1e-6)
    assert pts.shape == (NET * 3 // 4, NET, 3) and (pts[..., 2] > 0).mean() > 0.5
    # bounded by keyframes: the map's arrays per keyframe
    size = (path / ARRAYS_FILE).stat().st_size
    print(f"map: {len(slam.keyframes())} keyframes, {size / 1e6:.2f} MB "
          f"({size / 1e3 / len(slam.keyframes()):.0f} kB per keyframe at network size {NET})")


# ----------------------------------------------------------------------------- relocalization


@pytest.mark.slow
def test_relocalize_another_trajectory_in_the_loaded_map(world, built):
    """A fresh system (new engine) loads the map in localization mode and relocalizes every
    frame of the OTHER walk: >= 90 % within 0.25 m / 2 deg at ``PROFILE``. The map's own
    points give the metric scale (the pair's ~12 % scale error no longer scales the
    baseline); the same queries without them are printed for comparison."""
    seq, n_map = world
    path, _, kf_poses = built
    sim = map_alignment(kf_poses, seq)
    loc = make_system(seq, localization_only=True)
    loc.load_map(path)
    t, r, raw, fails = _relocalize_queries(seq, n_map, loc, sim)
    ok = (t <= TOL_M) & (r <= TOL_DEG)
    print(f"\n[{PROFILE}] map points: {ok.mean():.0%} of {len(ok)} within {TOL_M} m / {TOL_DEG} deg; "
          f"median {np.median(t):.3f} m / {np.median(r):.2f} deg, 90th percentile "
          f"{np.percentile(t, 90):.3f} m (in the map: similarity of the keyframes, scale "
          f"{sim.scale:.3f}, keyframes {sim.kf_rmse_m:.3f} m rmse / {sim.kf_rot_deg:.2f} deg "
          f"median); world frame (first pose given) median {np.median(raw):.3f} m; "
          f"failures {fails}")
    base = make_system(seq, localization_only=True, reloc={"use_map_points": False})
    base.load_map(path)
    tb, rb, _, _ = _relocalize_queries(seq, n_map, base, sim)
    okb = (tb <= TOL_M) & (rb <= TOL_DEG)
    print(f"[{PROFILE}] pair pointmaps (use_map_points=False): {okb.mean():.0%} within bounds; "
          f"median {np.median(tb):.3f} m / {np.median(rb):.2f} deg, 90th percentile "
          f"{np.percentile(tb, 90):.3f} m")
    assert ok.mean() >= MIN_OK, (np.round(t, 3), np.round(r, 2), fails)


@pytest.mark.slow
def test_localization_mode_tracks_the_other_trajectory_and_never_changes_the_map(world, built):
    """Localization mode on the loaded map: the query walk is relocalized, then tracked
    against the map's keyframes (>= 90 % of frames within bounds), no keyframe is added, no
    keyframe pose, mapper array or reference changes, and the map folder is byte for byte
    the same afterwards."""
    seq, n_map = world
    path, _, kf_poses = built
    digest = folder_digest(path)
    sim = map_alignment(kf_poses, seq)
    loc = make_system(seq, localization_only=True)
    loc.load_map(path)
    before_kf = {k.id: k.T_map_cam.copy() for k in loc.keyframes()}
    before_pts = {k.id: k.pts3d.clone() for k in loc.keyframes()}
    m0, a0 = loc.mapper.state_dict()
    res = [loc.process(f.rgb, f.stamp_ns, f.K, frame_id=f.frame_id) for f in seq.frames[n_map:]]
    states = [r.state.name for r in res]
    t, rot = [], []
    for f, r in zip(seq.frames[n_map:], res):
        if r.T_map_cam is None:
            t.append(np.inf)
            rot.append(np.inf)
        else:
            te, re = pose_errors(r.T_map_cam, f.T_world_cam, sim)
            t.append(te)
            rot.append(re)
    t, rot = np.array(t), np.array(rot)
    ok = (t <= TOL_M) & (rot <= TOL_DEG)
    print(f"\n[{PROFILE}] localization mode: {ok.mean():.0%} of {len(ok)} frames within bounds, "
          f"median {np.median(t):.3f} m / {np.median(rot):.2f} deg; states {states}")
    assert res[0].state in (TrackingState.RELOCALIZED, TrackingState.TRACKING)
    assert all(r.new_keyframe is None for r in res)
    assert {k.id: k.T_map_cam for k in loc.keyframes()}.keys() == before_kf.keys()
    for k in loc.keyframes():
        np.testing.assert_array_equal(k.T_map_cam, before_kf[k.id])
        assert bool((k.pts3d == before_pts[k.id]).all()), f"keyframe {k.id} pointmap was fused"
    m1, a1 = loc.mapper.state_dict()
    assert m0 == m1 and all(np.array_equal(a0[k], a1[k]) for k in a0)
    assert folder_digest(path) == digest
    assert ok.mean() >= MIN_OK, (np.round(t, 3), np.round(rot, 2), states)


@pytest.mark.slow
def test_mapping_resumes_on_the_loaded_map(world, built):
    """Mapping mode on the loaded map, 10 frames of the query walk: they relocalize, their new
    keyframes join the mapper after the old ones, paired with old keyframes, loops against
    old keyframes close, the new keyframes sit in the old map's frame (within 0.25 m / 2 deg
    of the truth through the map's similarity) and the old ones stay within 10 cm."""
    seq, n_map = world
    path, slam, kf_poses = built
    sim = map_alignment(kf_poses, seq)
    gt = {f.stamp_ns: f.T_world_cam for f in seq.frames}
    old = {k.id: k.T_map_cam.copy() for k in slam.keyframes()}
    sys2 = make_system(seq)
    sys2.load_map(path)
    res = [sys2.process(f.rgb, f.stamp_ns, f.K, frame_id=f.frame_id)
           for f in seq.frames[n_map:n_map + 10]]
    new = [r.new_keyframe.id for r in res if r.new_keyframe is not None]
    ids = sys2.mapper.keyframe_ids()
    assert new and ids[:len(old)] == list(old) and ids[len(old):] == new
    cross = [(i, j) for i, j in sys2.mapper.problem.pairs if (i in old) != (j in old)]
    loops = [(c.query_id, c.match_id) for c in sys2.mapper.loop_closures
             if c.query_id in new and c.match_id in old]
    moved = [np.linalg.norm(k.T_map_cam[:3, 3] - old[k.id][:3, 3]) for k in sys2.keyframes()
             if k.id in old]
    err = np.array([pose_errors(k.T_map_cam, gt[k.stamp_ns], sim) for k in sys2.keyframes()
                    if k.id in new])
    print(f"\nresumed: {len(new)} new keyframes, errors in the old map's frame max "
          f"{err[:, 0].max():.3f} m / {err[:, 1].max():.2f} deg; {len(cross)} pairs new<->old, "
          f"{len(loops)} loops new->old; old keyframes moved max {1e3 * max(moved):.1f} mm; "
          f"states {''.join(r.state.name[0] for r in res)}")
    assert all(r.T_map_cam is not None for r in res)
    assert cross, "no new keyframe was paired with an old one"
    assert loops, "no loop closed against the loaded keyframes"
    assert err[:, 0].max() <= TOL_M and err[:, 1].max() <= TOL_DEG
    assert max(moved) < 0.10


# ----------------------------------------------------------------------------- set_pose / reset


def test_set_pose_moves_the_mapper_and_reset_clears_it(world, built):
    seq, _ = world
    path, _, _ = built
    s = make_system(seq)
    s.load_map(path)
    # track one frame of the mapping walk so there is a current pose
    f = seq.frames[3]
    s.process(f.rgb, f.stamp_ns, f.K, frame_id=f.frame_id)
    T_last = s.trajectory()[-1][1]
    C = np.eye(4)
    C[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    C[:3, 3] = [1.0, -2.0, 0.5]
    before = {k: T.copy() for k, T in s.mapper.poses().items()}
    s.set_pose(C @ T_last)
    after = s.mapper.poses()
    for k in before:
        np.testing.assert_allclose(after[k], C @ before[k], atol=1e-9)
    for kf in s.keyframes():  # (keyframes: the mapper's float32 rotations re-orthonormalised)
        np.testing.assert_allclose(kf.T_map_cam, after[kf.id], atol=1e-5)
        np.testing.assert_allclose(s.relocalizer.get_reference(kf.id).T_map_cam, after[kf.id],
                                   atol=1e-5)
    np.testing.assert_allclose(s.trajectory()[-1][1], C @ T_last, atol=1e-9)
    s.reset()
    assert len(s.mapper) == 0 and not s.keyframes() and not s.relocalizer.reference_ids()


def test_localization_without_a_map_tracks_nothing_and_set_pose_is_a_hint(world, built):
    seq, n_map = world
    path, _, _ = built
    s = make_system(seq, localization_only=True)
    f = seq.frames[n_map]
    r = s.process(f.rgb, f.stamp_ns, f.K, frame_id=f.frame_id)
    assert r.state is TrackingState.LOST and r.T_map_cam is None and not s.keyframes()
    s.load_map(path)
    poses = {k.id: k.T_map_cam.copy() for k in s.keyframes()}
    s.set_pose(seq.frames[n_map].T_world_cam)  # a hint: the map does not move
    for k in s.keyframes():
        np.testing.assert_array_equal(k.T_map_cam, poses[k.id])


# ----------------------------------------------------------------------------- refusals


def _resave(path: Path, out: Path, edit) -> Path:
    """Copy of the map at ``out`` with ``edit(manifest, arrays)`` applied, saved properly
    (valid checksum and array table: only the content is wrong)."""
    manifest, arrays = load_map_folder(path)
    for k in ("format_version", "created_utc", "arrays", "arrays_sha256"):
        manifest.pop(k)
    edit(manifest, arrays)
    save_map_folder(out, manifest, arrays)
    return out


def _set_manifest(path: Path, key: str, value) -> None:
    m = json.loads((path / MANIFEST_FILE).read_text())
    m[key] = value
    (path / MANIFEST_FILE).write_text(json.dumps(m))


def _pair_out_of_range(m, a):
    pv = a["mapper.pair_views"].copy()
    pv[0, 1] = len(m["mapper"]["keyframes"]) + 3
    a["mapper.pair_views"] = pv


def _bad_offsets(m, a):
    off = a["mapper.match_offsets"].copy()
    off[1] = off[-1] + 1
    a["mapper.match_offsets"] = off


def _nan_pose(m, a):
    T = a["mapper.T_world_cam"].copy()
    T[1, 0, 0] = 2.0   # not a rotation
    a["mapper.T_world_cam"] = T


@pytest.mark.parametrize("edit, message", [
    (lambda m, a: a.pop("mapper.pair_views"), "mapper array 'pair_views' is missing"),
    (_pair_out_of_range, "pair_views must name two different keyframes"),
    (_bad_offsets, "'match_offsets' is not a split"),
    (_nan_pose, "T_world_cam of keyframe .* is not a rigid transform"),
    (lambda m, a: m["mapper"].update(state_version=7), "mapper state_version 7 is unknown"),
    (lambda m, a: m["mapper"]["keyframes"].append("kf999999"), "not keyframes of the map"),
    (lambda m, a: a.__setitem__(next(k for k in a if k.endswith(".delta")),
                                np.zeros(3, np.float32)), "delta' has shape \\(3,\\)"),
    (lambda m, a: m.pop("mapper"), "have no 'mapper' section"),
], ids=["missing", "pair_range", "offsets", "pose", "state_version", "ids", "delta_shape",
        "no_section"])
def test_inconsistent_mapper_state_is_refused_and_the_current_map_kept(world, built, tmp_path,
                                                                       edit, message):
    seq, _ = world
    path, slam, _ = built
    bad = _resave(path, tmp_path / "bad", edit)
    s = make_system(seq)
    s.load_map(path)
    ids = [k.id for k in s.keyframes()]
    m0, _ = s.mapper.state_dict()
    with pytest.raises(MapFormatError, match=message):
        s.load_map(bad)
    assert [k.id for k in s.keyframes()] == ids and s.mapper.state_dict()[0] == m0
    assert s.relocalizer.reference_ids() == ids


def test_newer_version_and_corrupt_bytes_are_refused_old_maps_load(world, built, tmp_path):
    seq, _ = world
    path, slam, _ = built
    import shutil

    newer = tmp_path / "newer"
    shutil.copytree(path, newer)
    _set_manifest(newer, "format_version", 3)
    s = make_system(seq, localization_only=True)
    with pytest.raises(MapFormatError, match="unknown format_version 3"):
        s.load_map(newer)
    flipped = tmp_path / "flipped"
    shutil.copytree(path, flipped)
    b = bytearray((flipped / ARRAYS_FILE).read_bytes())
    b[len(b) // 3] ^= 0x5A
    (flipped / ARRAYS_FILE).write_bytes(bytes(b))
    with pytest.raises(MapFormatError, match="checksum mismatch"):
        s.load_map(flipped)
    # a format-1 map (keyframes only, as written before the mapper's state was saved)
    old = _resave(path, tmp_path / "v1", lambda m, a: [m.pop("mapper")] + [
        a.pop(k) for k in [k for k in a if k.startswith("mapper.")]])
    _set_manifest(old, "format_version", 1)
    assert s.load_map(old) == len(slam.keyframes())
    assert len(s.mapper) == 0, "localization mode: the old map is used as saved, not re-aligned"
    for k0, k1 in zip(slam.keyframes(), s.keyframes()):
        np.testing.assert_allclose(k1.T_map_cam, k0.T_map_cam, atol=1e-12)


# ----------------------------------------------------------------------------- killed saves


_KILLER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from mast3r_ros.maps import load_map_folder, save_map_folder
    src, dst, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    manifest, arrays = load_map_folder(src)
    for k in ("format_version", "created_utc", "arrays", "arrays_sha256"):
        manifest.pop(k)
    manifest["note"] = "the new map"
    die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    if mode == "writing_arrays":
        real = np.savez
        def savez(f, **arrs):   # half the arrays written, then the process dies
            items = list(arrs.items())
            real(f, **dict(items[: len(items) // 2]))
            f.flush()
            die()
        np.savez = savez
    elif mode in ("before_renames", "between_renames"):
        real_replace, n = os.replace, [0]
        def replace(a, b):
            n[0] += 1
            if mode == "before_renames" or n[0] == 2:
                die()
            return real_replace(a, b)
        os.replace = replace
    elif mode == "loop":
        print("ready", flush=True)
        while True:
            save_map_folder(dst, manifest, arrays, overwrite=True)
    save_map_folder(dst, manifest, arrays, overwrite=True)
    print("saved", flush=True)
""")


def test_a_save_killed_midway_leaves_the_previous_map_loadable(world, built, tmp_path):
    """A process re-saving the (mapper-bearing) map is SIGKILLed while writing the arrays,
    before the renames, between them, and at a random moment of a save loop: every time the
    previous map loads in full (mapper state included), and it is the old one."""
    import shutil
    import time

    seq, _ = world
    path, slam, _ = built
    dst = tmp_path / "map"
    shutil.copytree(path, dst)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    s = make_system(seq, localization_only=True)
    for mode in ("writing_arrays", "before_renames", "between_renames"):
        p = subprocess.run([sys.executable, "-c", _KILLER, str(path), str(dst), mode], env=env,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == -signal.SIGKILL, (mode, p.returncode, p.stderr[-2000:])
        manifest, _ = load_map_folder(dst)
        assert "note" not in manifest, f"{mode}: not the previous map"
        assert s.load_map(dst) == len(slam.keyframes()) and len(s.mapper) == len(slam.keyframes())
    rng = np.random.default_rng(0)
    for trial in range(3):
        p = subprocess.Popen([sys.executable, "-c", _KILLER, str(path), str(dst), "loop"], env=env,
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.2, 1.5)))
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        assert s.load_map(dst) == len(slam.keyframes()), f"random kill {trial}"
