"""Mapping benchmark: local-window and full sparse-global-alignment time against keyframe
count, and point-cloud build time against point count (CPU by default).

    python benchmarks/bench_mapping.py [--counts 10 50 200] [--device cpu] [--threads 2]

Keyframes are a synthetic ``loop`` rendered at 128x96 and decoded by the network-output
SIMULATOR (realistic noise; its decode stands in for the network's, whose time is
benchmarked elsewhere): each keyframe is paired with its 2 successors (both orders), as the
mapper pairs a new keyframe with its recent ones. Timed: one local pass (window of 5 free
keyframes + the fixed ones they share pairs with), one full pass (all keyframes, chain
re-initialised), each with the default ``AlignmentConfig`` iterations, and
``build_point_cloud`` over all keyframes at several strides. Prints the load average: on a
shared machine compare ratios within one run.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[10, 50, 200])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--neighbors", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from mast3r_ros.slam.alignment import AlignmentConfig, AlignmentProblem
    from mast3r_ros.slam.point_cloud import build_point_cloud, network_colors
    from mast3r_ros.synth.sequence import SynthConfig, generate
    from mast3r_ros.synth.simulator import NetworkOutputSimulator, SimulatorConfig

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, device {args.device}, threads {args.threads}, "
          f"load average {os.getloadavg()}")
    cfg = AlignmentConfig(match_subsample=4)
    print("| keyframes | ordered pairs | matches | local pass (s) | full pass (s) | full / local |")
    print("|---|---|---|---|---|---|")
    last = None
    for n in args.counts:
        seq = generate(SynthConfig(trajectory="loop", frames=n, width=128, height=96, seed=3))
        eng = NetworkOutputSimulator(seq, SimulatorConfig.realistic(size=128), device=args.device)
        views = [eng.encode(f.rgb, frame_id=f.frame_id) for f in seq.frames]
        prob = AlignmentProblem(cfg, args.device)
        for i, (f, v) in enumerate(zip(seq.frames, views)):
            prob.add_view(i, v.transform, None, f.T_world_cam)
        for i in range(n):
            for d in range(1, args.neighbors + 1):
                j = (i + d) % n
                for a, b in ((i, j), (j, i)):
                    prob.add_pair(eng.decode(views[a], views[b]), a, b)
        n_matches = sum(len(o.weight) for o in prob.pairs.values())
        t = time.perf_counter()
        prob.optimize(None, reinit=True)
        t_full = time.perf_counter() - t
        t = time.perf_counter()
        prob.optimize(list(range(n - 5, n)))
        t_local = time.perf_counter() - t
        print(f"| {n} | {len(prob.pairs)} | {n_matches} | {t_local:.2f} | {t_full:.2f} | "
              f"{t_full / t_local:.1f} |", flush=True)
        last = (prob, seq)
    prob, seq = last
    print(f"\nload average {os.getloadavg()}")
    print("| stride | input points | output points (voxel 2 cm) | build (ms) |")
    print("|---|---|---|---|")
    imgs = [network_colors(f.rgb, prob.views[i].transform) for i, f in enumerate(seq.frames)]
    for stride in (8, 4, 2, 1):
        n_in = sum(int((prob.views[v].conf[::1] >= 0).sum()) // (stride * stride)
                   for v in range(len(prob.keys)))
        t = time.perf_counter()
        xyz, _ = build_point_cloud(prob, prob.keys, imgs, min_conf=0.0, stride=stride,
                                   max_points=10**7, voxel_size=0.02)
        dt = time.perf_counter() - t
        print(f"| {stride} | ~{n_in} | {len(xyz)} | {1e3 * dt:.0f} |", flush=True)
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
