"""SlamSystem with the mapper in a background thread (``MappingMode.BACKGROUND``, issue 10):
tracking never waits for an alignment pass, keyframes that queue up meanwhile are mapped
together (one local pass), the queue is bounded, corrections come back between frames, and
``reset`` drops what is queued.

The network-output SIMULATOR stands in for MASt3R (recalibrated realistic profile, network
size 128x96),
on a 30-frame synthetic walk (256x192) with exact ground truth. "A pass is running" is made
deterministic by holding the real mapper's lock from the test (what a long pass does), so no
assertion depends on timing; waits have generous timeouts only to fail instead of hanging.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from mast3r_ros.evaluation import Trajectory, ate
from mast3r_ros.slam import SlamSystem
from mast3r_ros.slam.alignment import AlignmentConfig
from mast3r_ros.slam.mapper import Mapper, MapperConfig
from mast3r_ros.slam.system import MappingMode, SlamConfig
from mast3r_ros.synth.sequence import SynthConfig, generate
from mast3r_ros.synth.simulator import NetworkOutputSimulator, SimulatorConfig

W, H, NET, FRAMES = 256, 192, 128, 30
FAST_LOCAL = AlignmentConfig(stage1_iters=60, stage2_iters=40, match_subsample=4)
FAST_FULL = AlignmentConfig(stage1_iters=100, stage2_iters=60, match_subsample=4)
WAIT_S = 300.0   # safety timeouts only (a loaded CI machine); nothing asserts a duration


@pytest.fixture(scope="module")
def seq():
    return generate(SynthConfig(trajectory="walk", frames=FRAMES, width=W, height=H, seed=2))


def _system(seq, mode: MappingMode, queue: int = 8) -> SlamSystem:
    eng = NetworkOutputSimulator(seq, SimulatorConfig.realistic(size=NET))
    mapper = Mapper(eng, MapperConfig(alignment=FAST_LOCAL, full_alignment=FAST_FULL, neighbors=2))
    return SlamSystem(eng, SlamConfig(mapping_mode=mode, mapping_queue=queue), mapper=mapper)


def _ate(seq, traj, alignment: str) -> float:
    est = Trajectory(np.array([s for s, _ in traj]) / 1e9, np.stack([T for _, T in traj]))
    gt = Trajectory(seq.stamps_ns / 1e9, seq.poses)
    return float(ate(gt, est, alignment).stats.rmse)


def test_config_and_mode_errors():
    assert SlamConfig.from_dict({"mapping_mode": "background"}).mapping_mode is MappingMode.BACKGROUND
    assert SlamConfig().mapping_mode is MappingMode.SYNC   # deterministic by default
    with pytest.raises(ValueError, match="mapping_mode must be one of"):
        SlamConfig(mapping_mode="later")
    with pytest.raises(ValueError, match="mapping_queue must be >= 1"):
        SlamConfig(mapping_queue=0)


@pytest.mark.slow
def test_tracking_runs_while_a_pass_holds_the_mapper_and_queued_keyframes_coalesce(
        seq, one_torch_thread):
    slam = _system(seq, MappingMode.BACKGROUND)
    mapper = slam.mapper
    try:
        frames = list(seq.frames)
        with mapper._lock:   # a pass that lasts as long as this block
            results = [slam.process(f.rgb, f.stamp_ns, f.K, frame_id=f.frame_id)
                       for f in frames[:20]]
            # every frame was tracked although the mapper could not run at all
            assert all(r.T_map_cam is not None for r in results)
            kfs = slam.keyframes()
            assert len(kfs) >= 3
            assert len(mapper) == 0                           # nothing mapped yet ...
            st = slam.mapping_status()
            assert st["mode"] == "background"
            # ... the thread took the first keyframe and waits for the lock; the rest queued
            assert st["queued"] == len(kfs) - 1
        assert slam.wait_for_mapping(WAIT_S)
        # the queued keyframes were mapped as ONE batch after the first: 2 passes in all
        assert slam.counts["mapped_batches"] == 2
        assert mapper.keyframe_ids() == [k.id for k in kfs]
        # corrections applied: every keyframe has the mapper's pose (re-orthonormalised)
        poses = mapper.poses()
        for kf in kfs:
            np.testing.assert_allclose(kf.T_map_cam, poses[kf.id], atol=1e-5)
        assert slam.counts["map_updates"] >= 1
        # the next frame reports nothing new (the update was applied between frames), the
        # trajectory follows the corrected keyframes
        rest = [slam.process(f.rgb, f.stamp_ns, f.K, frame_id=f.frame_id) for f in frames[20:]]
        assert all(r.T_map_cam is not None for r in rest)
        assert slam.wait_for_mapping(WAIT_S)
        traj = dict(slam.trajectory())
        for kf in slam.keyframes():
            np.testing.assert_allclose(traj[kf.stamp_ns], kf.T_map_cam, atol=1e-9)
        a_sim3 = _ate(seq, slam.trajectory(), "sim3")
        length = float(np.linalg.norm(np.diff(seq.poses[:, :3, 3], axis=0), axis=1).sum())
        print(f"\nbackground mapping, {FRAMES} frames, {len(slam.keyframes())} keyframes, "
              f"{slam.counts['mapped_batches']} batches: ATE Sim(3) {1e3 * a_sim3:.1f} mm "
              f"({100 * a_sim3 / length:.2f} % of {length:.2f} m)")
        assert a_sim3 <= 0.025 * length   # the tracking bound of test_slam_node
    finally:
        slam.close()


@pytest.mark.slow
def test_a_full_queue_makes_tracking_wait_instead_of_growing(seq, one_torch_thread):
    slam = _system(seq, MappingMode.BACKGROUND, queue=2)
    mapper = slam.mapper
    frames = list(seq.frames)
    done = threading.Event()
    box: dict = {}

    def run() -> None:
        try:
            box["res"] = [slam.process(f.rgb, f.stamp_ns, f.K, frame_id=f.frame_id)
                          for f in frames]
        finally:
            done.set()

    try:
        with mapper._lock:
            th = threading.Thread(target=run, daemon=True)
            th.start()
            deadline = time.monotonic() + WAIT_S
            while slam.counts["mapping_waits"] == 0 and not done.is_set() \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            # tracking reached a full queue: it waits, the queue holds mapping_queue keyframes
            assert slam.counts["mapping_waits"] == 1 and not done.is_set()
            assert slam.mapping_status()["queued"] == 2
        th.join(WAIT_S)
        assert done.is_set() and all(r.T_map_cam is not None for r in box["res"])
        assert slam.wait_for_mapping(WAIT_S)
        assert mapper.keyframe_ids() == [k.id for k in slam.keyframes()]
    finally:
        slam.close()


@pytest.mark.slow
def test_reset_drops_queued_keyframes(seq, one_torch_thread):
    slam = _system(seq, MappingMode.BACKGROUND)
    mapper = slam.mapper
    try:
        with mapper._lock:
            for f in seq.frames[:12]:
                slam.process(f.rgb, f.stamp_ns, f.K, frame_id=f.frame_id)
            assert slam.mapping_status()["queued"] >= 1
        slam.reset()
        assert slam.wait_for_mapping(WAIT_S)
        assert len(mapper) == 0 and slam.keyframes() == []
        # and the system maps again afterwards
        for f in seq.frames[:12]:
            slam.process(f.rgb, f.stamp_ns, f.K, frame_id=f.frame_id)
        assert slam.wait_for_mapping(WAIT_S)
        assert mapper.keyframe_ids() == [k.id for k in slam.keyframes()]
    finally:
        slam.close()
