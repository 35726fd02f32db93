"""Mapping accuracy per simulator profile (issue 14 item 4): the scenes of the mapping tests,
each under ``exact``, ``moderate``, ``realistic`` and ``hard``.

    python benchmarks/bench_mapping_profiles.py [--profiles exact moderate realistic hard]
        [--parts batch loop slam]

Every figure comes from the network-output SIMULATOR (no network weights), at network size
128x96 over 256x192 renders, with exact ground truth:

- ``batch``: 10 views of a walk + 1 unrelated view (another room, 100 m away), complete
  graph, unknown K (``test_slam_mapping.py``'s fixture): max camera error, max rotation error,
  max focal error, the Sim(3) scale and the scale its pairs' draws average to (the
  simulator's per-pair scale errors, ``pair_scale``).
- ``loop``: 20 keyframes around a loop, tracking emulated by a noisy chain (1 deg / 2 cm per
  keyframe), mapper without and with loop closure: ATE SE(3) / Sim(3), scale, end-to-start
  drift, verified loops and the worst verified loop's rotation error.
- ``slam``: ``SlamSystem`` over a 40-frame walk, tracking alone and with the mapper (sync):
  ATE SE(3) / Sim(3) over every frame.

Prints a Markdown table; one run each (one seed): indications, not statistics.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

W, H, NET = 256, 192, 128


def _rot_err(Ra: np.ndarray, Rb: np.ndarray) -> float:
    c = (np.trace(Ra.T @ Rb) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(c, -1, 1))))


def _pairs_scale(pairs, engine, keep=lambda i, j: True) -> float:
    logs = [np.log(engine.pair_scale(int(i), int(j))) for i, j in pairs if keep(int(i), int(j))]
    return float(np.exp(np.mean(logs)))


def batch(profile: str) -> str:
    from mast3r_ros.geometry.align import umeyama
    from mast3r_ros.slam.alignment import AlignmentConfig, SceneGraph
    from mast3r_ros.slam.batch import align_images
    from mast3r_ros.synth.render import render
    from mast3r_ros.synth.scene import make_scene
    from mast3r_ros.synth.sequence import SynthConfig, SyntheticFrame, SyntheticSequence, generate
    from mast3r_ros.synth.simulator import NetworkOutputSimulator, SimulatorConfig

    walk = generate(SynthConfig(trajectory="walk", frames=10, width=W, height=H, seed=1))
    T = walk.frames[3].T_world_cam.copy()
    view = render(make_scene("room", seed=7), walk.frames[0].K, T, W, H)
    T[:3, 3] += [100.0, 0.0, 0.0]
    odd = SyntheticFrame(10, walk.frames[-1].stamp_ns + 10**8, view.rgb, view.K, view.depth, T)
    seq = SyntheticSequence(walk.frames + (odd,), walk.info)
    eng = NetworkOutputSimulator(seq, SimulatorConfig.profile(profile, size=NET))
    res = align_images(eng, [f.rgb for f in seq.frames], SceneGraph.COMPLETE, 0,
                       AlignmentConfig(match_subsample=4, stage1_iters=200, stage2_iters=150),
                       frame_ids=[f.frame_id for f in seq.frames])
    gt, est = seq.poses[:10], res.T_world_cam[:10]
    sim = umeyama(est[:, :3, 3], gt[:, :3, 3], with_scale=True)
    pos = np.linalg.norm(sim.apply(est[:, :3, 3]) - gt[:, :3, 3], axis=1).max()
    rot = max(_rot_err(sim.R @ e[:3, :3], g[:3, :3]) for e, g in zip(est, gt))
    focal = np.abs(res.K[:10, 0, 0] / seq.frames[0].K[0, 0] - 1).max()
    expected = _pairs_scale(res.problem.pairs, eng, lambda i, j: i < 10 and j < 10)
    return (f"{1e3 * pos:.1f} mm / {rot:.2f} deg / {100 * focal:.2f} %; scale {1 / sim.scale:.3f} "
            f"(pairs' mean {expected:.3f}); outlier view weight {res.view_weight[10]:.3f}")


def loop(profile: str) -> str:
    from scipy.spatial.transform import Rotation

    from mast3r_ros.geometry.align import umeyama
    from mast3r_ros.slam.alignment import AlignmentConfig
    from mast3r_ros.slam.loop_closure import LoopClosureConfig
    from mast3r_ros.slam.mapper import KeyframeData, Mapper, MapperConfig
    from mast3r_ros.synth.sequence import SynthConfig, generate
    from mast3r_ros.synth.simulator import NetworkOutputSimulator, SimulatorConfig

    n = 20
    seq = generate(SynthConfig(trajectory="loop", frames=n + 1, width=W, height=H, seed=2))
    gt = seq.poses[:n]
    rng = np.random.default_rng(0)
    trk = [gt[0].copy()]
    for k in range(1, n):
        noise = np.eye(4)
        noise[:3, :3] = Rotation.from_rotvec(rng.normal(0, np.deg2rad(1.0), 3)).as_matrix()
        noise[:3, 3] = rng.normal(0, 0.02, 3)
        trk.append(trk[-1] @ np.linalg.inv(gt[k - 1]) @ gt[k] @ noise)
    trk = np.stack(trk)
    eng = NetworkOutputSimulator(seq, SimulatorConfig.profile(profile, size=NET))
    views = [eng.encode(f.rgb, frame_id=f.frame_id) for f in seq.frames[:n]]
    kfs = [KeyframeData(str(i), f.stamp_ns, trk[i], None, views[i], f.rgb)
           for i, f in enumerate(seq.frames[:n])]

    def ate(est, sim3):
        s = umeyama(est[:, :3, 3], gt[:, :3, 3], with_scale=sim3)
        return float(np.sqrt(np.mean(np.sum((s.apply(est[:, :3, 3]) - gt[:, :3, 3]) ** 2, 1))))

    def drift(est):
        re, rg = np.linalg.inv(est[0]) @ est[-1], np.linalg.inv(gt[0]) @ gt[-1]
        path = float(np.sum(np.linalg.norm(np.diff(gt[:, :3, 3], axis=0), axis=1)))
        return 100 * float(np.linalg.norm(re[:3, 3] - rg[:3, 3])) / path

    out = {}
    for closing in (False, True):
        mapper = Mapper(eng, MapperConfig(
            alignment=AlignmentConfig(stage1_iters=60, stage2_iters=40), neighbors=2,
            full_alignment=AlignmentConfig(stage1_iters=200, stage2_iters=150),
            loop=LoopClosureConfig(enabled=closing)))
        ups = [mapper.add_keyframe(kf) for kf in kfs]
        est = np.stack([ups[-1].poses[str(i)] for i in range(n)])
        loops = [c for u in ups for c in u.loop_closures]
        worst = max((_rot_err(c.T_match_query[:3, :3],
                              (np.linalg.inv(gt[int(c.match_id)]) @ gt[int(c.query_id)])[:3, :3])
                     for c in loops), default=float("nan"))
        scale = 1 / umeyama(est[:, :3, 3], gt[:, :3, 3], with_scale=True).scale
        out[closing] = (est, loops, worst, scale, _pairs_scale(mapper.problem.pairs, eng))
    (e0, _, _, s0, _), (e1, loops, worst, s1, exp1) = out[False], out[True]
    return (f"SE(3) {100 * ate(trk, False):.1f} / {100 * ate(e0, False):.1f} / "
            f"{100 * ate(e1, False):.1f} cm, Sim(3) {100 * ate(trk, True):.1f} / "
            f"{100 * ate(e0, True):.1f} / {100 * ate(e1, True):.1f} cm, scale {s0:.3f} / {s1:.3f} "
            f"(pairs' mean {exp1:.3f}), drift {drift(trk):.2f} / {drift(e0):.2f} / {drift(e1):.2f} %; "
            f"{len(loops)} loops, worst {worst:.1f} deg")


def slam(profile: str) -> str:
    from mast3r_ros.evaluation import Trajectory, ate
    from mast3r_ros.slam import SlamSystem
    from mast3r_ros.slam.alignment import AlignmentConfig
    from mast3r_ros.slam.mapper import Mapper, MapperConfig
    from mast3r_ros.synth.sequence import SynthConfig, generate
    from mast3r_ros.synth.simulator import NetworkOutputSimulator, SimulatorConfig

    seq = generate(SynthConfig(trajectory="walk", frames=40, width=W, height=H, seed=2))
    gt = Trajectory(seq.stamps_ns / 1e9, seq.poses)
    figs = []
    for with_mapper in (False, True):
        eng = NetworkOutputSimulator(seq, SimulatorConfig.profile(profile, size=NET))
        mapper = None
        if with_mapper:
            mapper = Mapper(eng, MapperConfig(
                alignment=AlignmentConfig(stage1_iters=60, stage2_iters=40, match_subsample=4),
                full_alignment=AlignmentConfig(stage1_iters=100, stage2_iters=60, match_subsample=4),
                neighbors=2))
        s = SlamSystem(eng, None, mapper=mapper)
        res = [s.process(f.rgb, f.stamp_ns, f.K, frame_id=f.frame_id) for f in seq.frames]
        tr = s.trajectory()
        est = Trajectory(np.array([t for t, _ in tr]) / 1e9, np.stack([T for _, T in tr]))
        figs.append((1e3 * ate(gt, est, "se3").stats.rmse, 1e3 * ate(gt, est, "sim3").stats.rmse,
                     sum(r.T_map_cam is not None for r in res)))
    (a0, b0, n0), (a1, b1, n1) = figs
    return (f"{a0:.1f} / {b0:.1f} mm -> {a1:.1f} / {b1:.1f} mm ({n0} / {n1} of 40 frames "
            "with a pose)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", nargs="+", default=["exact", "moderate", "realistic", "hard"])
    ap.add_argument("--parts", nargs="+", default=["batch", "loop", "slam"],
                    choices=["batch", "loop", "slam"])
    args = ap.parse_args()
    import logging

    import torch

    torch.set_num_threads(1)
    logging.getLogger("mast3r_ros").setLevel(logging.ERROR)
    parts = {"batch": batch, "loop": loop, "slam": slam}
    print("| part | profile | figures | s | load |")
    print("|---|---|---|---|---|")
    for part in args.parts:
        for p in args.profiles:
            t0 = time.perf_counter()
            try:
                fig = parts[part](p)
            except Exception as exc:  # a profile that breaks a part is a result too
                fig = f"FAILED: {type(exc).__name__}: {exc}"
            print(f"| {part} | {p} | {fig} | {time.perf_counter() - t0:.0f} | "
                  f"{os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
