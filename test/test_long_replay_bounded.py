"""A few hundred frames through SlamSystem with mapping on (issue 10: "the map grows by
keyframes, not by frames"; the 2000-frame figures are benchmarks/bench_long_replay.py's).

The camera moves along a quarter of the synthetic loop, then stands still (same pose, new
frames) for 140 frames. Asserted with structural counts, not timings:

- while moving, the map holds exactly what its keyframes bring: one view and one anchor grid
  per keyframe, ``2 x min(k, neighbors)`` ordered pairs for the k-th keyframe (plus loops),
  at most ``max_matches_per_pair`` matches per pair;
- while standing still, frames keep coming but no keyframe, pair, match, anchor or loop
  descriptor is added, and the process's RSS grows by less than 16 KiB per frame after a
  20-frame warm-up (least-squares slope; a 128x96 RGB frame is 36 KiB, so keeping anything of
  the size of a frame per frame would fail; the trajectory's own per-frame entry is ~0.3 KiB).

Network-output SIMULATOR (moderate profile) at 128x96, mapping ``sync`` (deterministic), loop
closure off for the CPU budget (every keyframe of this inward-looking loop would close loops
and start full passes; loops are covered by test_slam_mapping.py).
"""
from __future__ import annotations

import numpy as np
import pytest

from mast3r_ros.slam import SlamSystem
from mast3r_ros.slam.alignment import AlignmentConfig
from mast3r_ros.slam.loop_closure import LoopClosureConfig
from mast3r_ros.slam.mapper import Mapper, MapperConfig
from mast3r_ros.slam.system import MappingMode, SlamConfig
from mast3r_ros.synth.render import pinhole_K
from mast3r_ros.synth.scene import make_scene
from mast3r_ros.synth.sequence import SynthConfig, render_sequence
from mast3r_ros.synth.simulator import NetworkOutputSimulator, SimulatorConfig
from mast3r_ros.synth.trajectory import make_trajectory

W, H, MOVING, HOVER, WARMUP = 128, 96, 100, 140, 20
RSS_SLOPE_MAX = 16 * 1024   # bytes per frame while standing still


def _sequence():
    cfg = SynthConfig(trajectory="loop", frames=MOVING + HOVER, width=W, height=H, seed=3)
    scene = make_scene(cfg.scene, cfg.seed)
    poses = make_trajectory(scene, "loop", 4 * MOVING + 1, cfg.seed)[:MOVING]
    poses = np.concatenate([poses, np.repeat(poses[-1:], HOVER, axis=0)])
    return render_sequence(scene, poses, pinhole_K(W, H, cfg.hfov_deg), W, H, cfg.rate_hz,
                           cfg.start_ns, info=cfg.to_dict())


@pytest.fixture(scope="module")
def replay(one_torch_thread):
    psutil = pytest.importorskip("psutil")
    seq = _sequence()
    eng = NetworkOutputSimulator(seq, SimulatorConfig.moderate(size=W))
    cfg = MapperConfig(alignment=AlignmentConfig(stage1_iters=60, stage2_iters=40, match_subsample=4),
                       full_alignment=AlignmentConfig(stage1_iters=100, stage2_iters=60,
                                                      match_subsample=4), neighbors=2,
                       loop=LoopClosureConfig(enabled=False))  # CPU budget: no full passes
    mapper = Mapper(eng, cfg)
    slam = SlamSystem(eng, SlamConfig(mapping_mode=MappingMode.SYNC), mapper=mapper)
    proc = psutil.Process()
    rows = []
    for f in seq.frames:
        res = slam.process(f.rgb, f.stamp_ns, f.K, frame_id=f.frame_id)
        rows.append({"rss": proc.memory_info().rss, "tracked": res.T_map_cam is not None,
                     "kfs": len(slam.keyframes()), "traj": len(slam.trajectory()),
                     **mapper.stats()})
    return slam, mapper, cfg, rows


@pytest.mark.slow
def test_the_map_holds_what_its_keyframes_bring(replay):
    slam, mapper, cfg, rows = replay
    assert all(r["tracked"] for r in rows)
    assert rows[-1]["traj"] == MOVING + HOVER        # every frame has a pose (the trajectory)
    for r in rows:
        k = r["kfs"]
        assert r["keyframes"] == r["views"] == k       # sync: every keyframe is mapped at once
        expected = sum(2 * min(i, cfg.neighbors) for i in range(k)) + 2 * r["loop_closures"]
        assert r["pairs"] == expected
        assert r["matches"] <= cfg.alignment.max_matches_per_pair * r["pairs"]
        assert r["anchors"] == k * mapper.problem.delta[0].numel()
        assert r["descriptors"] == k
    assert rows[MOVING - 1]["kfs"] >= 4, "the moving part made too few keyframes to judge"
    print(f"\n{MOVING} moving frames: {rows[MOVING - 1]['kfs']} keyframes, "
          f"{rows[MOVING - 1]['pairs']} pairs, {rows[MOVING - 1]['matches']} matches")


@pytest.mark.slow
def test_standing_still_adds_nothing_and_memory_stays_flat(replay):
    slam, mapper, cfg, rows = replay
    still = rows[MOVING + 1:]                     # the first still frame may still be a keyframe
    keys = ("kfs", "keyframes", "pairs", "matches", "regression_points", "anchors",
            "loop_closures", "descriptors")
    for key in keys:
        assert len({r[key] for r in still}) == 1, f"{key} grew while the camera stood still"
    rss = np.array([r["rss"] for r in rows[MOVING + WARMUP:]], dtype=np.float64)
    slope = float(np.polyfit(np.arange(len(rss)), rss, 1)[0])
    print(f"\nstanding still for {HOVER} frames: RSS slope {slope / 1024:.2f} KiB/frame "
          f"(bound {RSS_SLOPE_MAX / 1024:.0f}), net {(rss[-1] - rss[0]) / 2**20:.2f} MiB over "
          f"{len(rss)} frames; map {mapper.stats()}")
    assert slope < RSS_SLOPE_MAX
