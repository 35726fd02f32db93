"""Long replay with mapping on: memory (RSS) and per-frame time per block of frames, and the
map's size (keyframes, stored pairs), to show they grow by keyframes, not by frames.

    python benchmarks/bench_long_replay.py [--frames 2000] [--laps 4] [--mode background]
        [--width 128] [--height 96] [--profile moderate] [--block 200] [--threads 1]

The camera goes ``--laps`` times around the synthetic ``loop`` (rendered at the given size;
the network-output SIMULATOR stands in for MASt3R at network size = the image's long side),
through ``SlamSystem`` with a default ``Mapper`` (as ``slam_node`` runs it, except
``--loop-full-min-hops``, 5 here), mapping in the
``--mode`` thread model (``background``: the node's default; ``sync``: deterministic).
Per block: RSS at its end, per-frame ``process`` time median / 95th percentile / max,
tracking keyframes, keyframes the mapper holds, its ordered pairs and stored matches, loop
closures, frames lost. ``--hover N`` appends N frames standing still at the last pose (no
new keyframes: memory must stay flat). Prints the load average: a shared machine's times
are upper bounds.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch


def long_loop_sequence(frames: int, laps: int, width: int, height: int, seed: int = 3,
                       hover: int = 0, progress: bool = False):
    """``frames`` poses going ``laps`` times around the synthetic loop (each lap from the
    ``loop`` trajectory), then ``hover`` frames at the last pose; rendered."""
    from mast3r_ros.synth.render import pinhole_K
    from mast3r_ros.synth.scene import make_scene
    from mast3r_ros.synth.sequence import SynthConfig, render_sequence
    from mast3r_ros.synth.trajectory import make_trajectory

    cfg = SynthConfig(trajectory="loop", frames=frames + hover, width=width, height=height,
                      seed=seed)
    scene = make_scene(cfg.scene, cfg.seed)
    per_lap = int(np.ceil(frames / laps))
    lap = make_trajectory(scene, "loop", per_lap + 1, seed)[:-1]  # the last repeats the first
    poses = np.concatenate([lap] * laps)[:frames]
    if hover:
        poses = np.concatenate([poses, np.repeat(poses[-1:], hover, axis=0)])
    K = pinhole_K(width, height, cfg.hfov_deg)
    wrap = None
    if progress:
        def wrap(it):
            t0 = time.perf_counter()
            for k, x in enumerate(it):
                if k and k % 200 == 0:
                    print(f"  rendered {k} frames ({time.perf_counter() - t0:.0f} s)", flush=True)
                yield x
    return render_sequence(scene, poses, K, width, height, cfg.rate_hz, cfg.start_ns,
                           info=cfg.to_dict(), progress=wrap)


class _Proc:
    """RSS of this process from /proc (Linux; no psutil needed)."""

    class _Mem:
        def __init__(self, rss: int) -> None:
            self.rss = rss

    def memory_info(self) -> "_Proc._Mem":
        with open("/proc/self/statm", encoding="ascii") as f:
            return self._Mem(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))


MODERATE = dict(depth_noise_abs=0.005, depth_noise_rel=0.01, scale_jitter=0.02, desc_noise=0.03,
                outlier_fraction=0.02)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--laps", type=int, default=4)
    ap.add_argument("--hover", type=int, default=0)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--profile", choices=["moderate", "realistic"], default="moderate")
    ap.add_argument("--mode", choices=["background", "sync"], default="background")
    ap.add_argument("--block", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--loop-full-min-hops", type=int, default=5,
                    help="MapperConfig.loop_full_min_hops (default 5 here: lap after lap, "
                         "every keyframe revisits a place; 1 = a full pass per loop)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from mast3r_ros.benchmarking import MachineState
    from mast3r_ros.slam import SlamSystem
    from mast3r_ros.slam.mapper import Mapper, MapperConfig
    from mast3r_ros.slam.system import SlamConfig
    from mast3r_ros.synth.simulator import NetworkOutputSimulator, SimulatorConfig

    machine = MachineState.now()
    print(f"machine: {machine.cpu}, {machine.cores} cores, torch {torch.__version__}, threads "
          f"{args.threads}, load average {machine.load_before}", flush=True)
    t = time.perf_counter()
    seq = long_loop_sequence(args.frames, args.laps, args.width, args.height, args.seed,
                             args.hover, progress=True)
    print(f"rendered {len(seq.frames)} frames {args.width}x{args.height} in "
          f"{time.perf_counter() - t:.0f} s", flush=True)
    size = max(args.width, args.height)
    sim = (SimulatorConfig(size=size, **MODERATE) if args.profile == "moderate"
           else SimulatorConfig.realistic(size=size))
    eng = NetworkOutputSimulator(seq, sim)
    mapper = Mapper(eng, MapperConfig(loop_full_min_hops=args.loop_full_min_hops))
    slam = SlamSystem(eng, SlamConfig(mapping_mode=args.mode), mapper=mapper)
    proc = _Proc()
    print(f"SlamSystem + Mapper (defaults, loop_full_min_hops {args.loop_full_min_hops}), mapping {args.mode}, simulator {args.profile}, "
          f"{args.laps} laps; RSS at start {proc.memory_info().rss / 2**20:.0f} MiB", flush=True)
    print("| frames | RSS (MiB) | per-frame ms: median / p95 / max | tracking keyframes | "
          "mapped keyframes | ordered pairs | stored matches | loops | lost | load |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    times: list[float] = []
    lost = 0
    t_all = time.perf_counter()
    for i, f in enumerate(seq.frames):
        t = time.perf_counter()
        res = slam.process(f.rgb, f.stamp_ns, f.K, frame_id=f.frame_id)
        times.append(1e3 * (time.perf_counter() - t))
        lost += res.T_map_cam is None
        if (i + 1) % args.block == 0 or i + 1 == len(seq.frames):
            blk = np.array(times[-((i % args.block) + 1):])
            st = mapper.stats()
            print(f"| {i + 1} | {proc.memory_info().rss / 2**20:.0f} | {np.median(blk):.0f} / "
                  f"{np.percentile(blk, 95):.0f} / {blk.max():.0f} | {len(slam.keyframes())} | "
                  f"{st['keyframes']} | {st['pairs']} | {st['matches']} | {st['loop_closures']} | "
                  f"{lost} | {os.getloadavg()[0]:.1f} |", flush=True)
    wall = time.perf_counter() - t_all
    t = time.perf_counter()
    slam.wait_for_mapping()
    st = mapper.stats()
    print(f"\n{len(seq.frames)} frames in {wall:.0f} s ({1e3 * wall / len(seq.frames):.0f} ms per "
          f"frame); the mapper finished its queue {time.perf_counter() - t:.0f} s after the last "
          f"frame; final map {st}; counts {slam.counts}; RSS {proc.memory_info().rss / 2**20:.0f} MiB")
    from mast3r_ros.evaluation import Trajectory, ate

    traj = slam.trajectory()
    est = Trajectory(np.array([s for s, _ in traj]) / 1e9, np.stack([T for _, T in traj]))
    gt = Trajectory(seq.stamps_ns / 1e9, seq.poses)
    print(f"ATE Sim(3) {1e3 * ate(gt, est, 'sim3').stats.rmse:.1f} mm over {len(traj)} frames "
          f"with a pose; load average {machine.finish().load_after}")
    machine.warn_if_busy(print)
    slam.close()


if __name__ == "__main__":
    main()
