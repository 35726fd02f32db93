"""Mapping benchmark: local-window and full sparse-global-alignment time against keyframe
count, and point-cloud build time against point count (CPU by default).

    python benchmarks/bench_mapping.py [--counts 10 50 200] [--device cpu] [--threads 1]
        [--baseline OLD_alignment.py] [--baseline-max-count 50]

Keyframes are a synthetic ``loop`` rendered at 128x96 and decoded by the network-output
SIMULATOR (realistic profile; its decode stands in for the network's, whose time is
benchmarked elsewhere): each keyframe is paired with its 2 successors (both orders), as the
mapper pairs a new keyframe with its recent ones. Timed, every run from the same saved state:

- local pass: the last 5 keyframes free, the keyframes sharing a pair with them fixed, the
  mapper's local iterations (``MapperConfig().alignment``: 150 + 100);
- full pass: every keyframe, chain re-initialised, ``AlignmentConfig()`` (300 + 300);

each for the current code with its convergence test (default), the current code running every
iteration (``converge_rel_tol=0``: the per-iteration speed-up alone) and, with ``--baseline``,
an older ``alignment.py`` (e.g. ``git show c0d51cc:mast3r_ros/slam/alignment.py``) on the
same pairs, round-robin (``benchmarking.interleaved``) so load changes hit all alike. Then
``build_point_cloud`` over 1e4 / 1e5 / 1e6 input points (keyframes at pixel stride 1).
Prints min / median / max and the load average: on a shared machine compare ratios.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import math
import sys

import numpy as np
import torch


def _load_module(path: str, name: str = "alignment_baseline"):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _state(prob) -> tuple:
    return (copy.deepcopy(prob.T), [d.clone() for d in prob.delta], list(prob.focal),
            set(prob.optimized))


def _restore(prob, st) -> None:
    prob.T, prob.delta = copy.deepcopy(st[0]), [d.clone() for d in st[1]]
    prob.focal, prob.optimized = list(st[2]), set(st[3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[10, 50, 200])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--neighbors", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3, help="timed runs per variant (local pass)")
    ap.add_argument("--full-runs", type=int, default=3, help="timed runs per variant (full pass)")
    ap.add_argument("--baseline", default="", help="an older alignment.py to compare with")
    ap.add_argument("--baseline-max-count", type=int, default=50,
                    help="run the baseline only up to this many keyframes (it is slow)")
    ap.add_argument("--points", type=float, nargs="+", default=[1e4, 1e5, 1e6])
    ap.add_argument("--no-alignment", action="store_true",
                    help="only the point-cloud timings (on the last count's keyframes)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from mast3r_ros.benchmarking import MachineState, Timing, interleaved
    from mast3r_ros.slam import alignment as cur
    from mast3r_ros.slam.mapper import MapperConfig
    from mast3r_ros.slam.point_cloud import build_point_cloud, network_colors
    from mast3r_ros.synth.sequence import SynthConfig, generate
    from mast3r_ros.synth.simulator import NetworkOutputSimulator, SimulatorConfig

    base = _load_module(args.baseline) if args.baseline else None
    machine = MachineState.now()
    print(f"machine: {machine.cpu}, {machine.cores} cores, torch {torch.__version__}, device "
          f"{args.device}, threads {args.threads}, load average {machine.load_before}", flush=True)
    local_it = MapperConfig().alignment
    full_it = cur.AlignmentConfig()

    def fmt(t: Timing) -> str:
        return f"{t.median_ms / 1e3:.2f} ({t.min_ms / 1e3:.2f}-{t.max_ms / 1e3:.2f})"

    rows = []
    last = None
    for n in (args.counts[-1:] if args.no_alignment else args.counts):
        seq = generate(SynthConfig(trajectory="loop", frames=n, width=128, height=96, seed=3))
        eng = NetworkOutputSimulator(seq, SimulatorConfig.realistic(size=128), device=args.device)
        views = [eng.encode(f.rgb, frame_id=f.frame_id) for f in seq.frames]
        preds = {}
        for i in range(n):
            for d in range(1, args.neighbors + 1):
                j = (i + d) % n
                for a, b in ((i, j), (j, i)):
                    preds[(a, b)] = eng.decode(views[a], views[b])
        variants = [("current", cur, {}), ("current, every iteration", cur, {"converge_rel_tol": 0.0})]
        if base is not None and n <= args.baseline_max_count:
            variants.append(("baseline", base, {}))
        probs = []
        for name, mod, extra in variants:
            prob = mod.AlignmentProblem(mod.AlignmentConfig(match_subsample=4, **extra), args.device)
            for i, (f, v) in enumerate(zip(seq.frames, views)):
                prob.add_view(i, v.transform, None, f.T_world_cam)
            for (a, b), pr in preds.items():
                prob.add_pair(pr, a, b)
            probs.append((name, mod, extra, prob, _state(prob)))
        del preds
        if args.no_alignment:
            last = (probs[0][3], seq)
            break
        n_matches = sum(len(o.weight) for o in probs[0][3].pairs.values())
        # warm-up (first optimiser use imports modules): a 2-iteration local pass each
        for _, mod, extra, prob, st in probs:
            prob.config = mod.AlignmentConfig(match_subsample=4, stage1_iters=2, stage2_iters=2, **extra)
            prob.optimize(list(range(n - 2, n)))
            _restore(prob, st)
        iters: dict = {}

        def runner(kind: str, name: str, mod, extra: dict, prob, st):
            it = local_it if kind == "local" else full_it
            cfg = mod.AlignmentConfig(match_subsample=4, stage1_iters=it.stage1_iters,
                                      stage2_iters=it.stage2_iters, **extra)

            def run():
                _restore(prob, st)
                prob.config = cfg
                if kind == "local":
                    res = prob.optimize(list(range(n - 5, n)))
                else:
                    res = prob.optimize(None, reinit=True)
                iters[(kind, name)] = getattr(res, "iterations", None) or {
                    "stage1": it.stage1_iters, "stage2": it.stage2_iters}
            return run

        out = {}
        for kind, runs in (("local", args.runs), ("full", args.full_runs)):
            fns = [runner(kind, name, mod, extra, prob, st) for name, mod, extra, prob, st in probs]
            for (name, *_), t in zip(probs, interleaved(fns, rounds=runs, warmup=0)):
                out[(kind, name)] = t
        for name, *_ in probs:
            row = (n, len(probs[0][3].pairs), n_matches, name, out[("local", name)],
                   iters[("local", name)], out[("full", name)], iters[("full", name)])
            rows.append(row)
            print(f"| {n} | {row[1]} | {n_matches} | {name} | {fmt(row[4])} | "
                  f"{row[5]['stage1']}+{row[5]['stage2']} | {fmt(row[6])} | "
                  f"{row[7]['stage1']}+{row[7]['stage2']} |", flush=True)
        if base is not None and n <= args.baseline_max_count:
            for kind in ("local", "full"):
                b = out[(kind, "baseline")].median_ms
                print(f"  {n} keyframes, {kind} pass: speed-up over the baseline "
                      f"{b / out[(kind, 'current')].median_ms:.1f}x (every iteration: "
                      f"{b / out[(kind, 'current, every iteration')].median_ms:.1f}x)", flush=True)
        last = (probs[0][3], seq)
        del probs
    print(f"load average {machine.finish().load_after}")
    print("\n| keyframes | ordered pairs | matches | code | local pass, s: median (min-max) | "
          "iterations | full pass, s: median (min-max) | iterations |")
    print("|---|---|---|---|---|---|---|---|")
    for n, p, m, name, tl, il, tf, i_f in rows:
        print(f"| {n} | {p} | {m} | {name} | {fmt(tl)} | {il['stage1']}+{il['stage2']} | "
              f"{fmt(tf)} | {i_f['stage1']}+{i_f['stage2']} |")

    # ------------------------------------------------------------------ point cloud
    from mast3r_ros.benchmarking import time_fn

    prob, seq = last
    state = MachineState.now()
    print(f"\npoint cloud, load average {state.load_before}")
    print("| input points | keyframes (stride 1) | output points (voxel 2 cm) | build, ms: median (min-max) |")
    print("|---|---|---|---|")
    colors = [network_colors(f.rgb, prob.views[i].transform) for i, f in enumerate(seq.frames)]
    per_view = [int((prob.views[v].depth > 0).sum()) for v in range(len(prob.keys))]
    for target in args.points:
        keys, total = [], 0   # keyframes in order (cycling when the problem has too few)
        while total < target:
            keys.append(len(keys) % len(per_view))
            total += per_view[keys[-1]]
        n_in = sum(per_view[v] for v in keys)
        res = {}

        def build():
            res["xyz"], _ = build_point_cloud(prob, keys, [colors[v] for v in keys], min_conf=0.0,
                                              stride=1, max_points=10**7, voxel_size=0.02)
        t = time_fn(build, runs=3, warmup=1)
        print(f"| {n_in} | {len(keys)} | {len(res['xyz'])} | {t.median_ms:.0f} "
              f"({t.min_ms:.0f}-{t.max_ms:.0f}) |", flush=True)
    print(f"load average {state.finish().load_after}")
    machine.warn_if_busy(print)


if __name__ == "__main__":
    main()
