"""``mast3r-ros bench-match``: FRM vs dense mutual NN on synthetic 24-d descriptor maps, and
(optionally) the PnP solvers; prints ms and ratios measured in the same run."""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import numpy as np


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench-match", help="time FRM vs dense mutual NN (and PnP solvers) on CPU/GPU",
                       description="Time fast reciprocal matching (k-pixel seed grid), and with --dense against dense "
                                   "mutual nearest neighbours on synthetic descriptor maps (a smooth "
                                   "random field seen through a homography, plus noise).")
    p.add_argument("--height", type=int, default=384, help="descriptor map height")
    p.add_argument("--width", type=int, default=512, help="descriptor map width")
    p.add_argument("--subsample", type=int, default=8, help="FRM seed grid step")
    p.add_argument("--repeat", type=int, default=5, help="FRM runs (median reported)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--dense", action="store_true",
                   help="also time the dense mutual-NN baseline (all pixels against all: slow, "
                        "minutes at 384x512 on CPU)")
    p.add_argument("--faiss", action="store_true", help="also time FRM with the faiss backend")
    p.add_argument("--pose", action="store_true", help="also compare PnP solvers (poselib, OpenCV)")
    p.set_defaults(func=run)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn, repeat: int, device: str, desc: str = ""):
    """(Timing over ``repeat`` runs, last output), with a progress bar named ``desc``."""
    from mast3r_ros.benchmarking import Timing
    from mast3r_ros.cli._common import progress

    out, ts = None, []
    for _ in progress(range(repeat), desc=desc, unit="run"):
        _sync(device)
        t = time.perf_counter()
        out = fn()
        _sync(device)
        ts.append((time.perf_counter() - t) * 1e3)
    return Timing(tuple(ts)), out


def bench_pose(n: int = 1000, outliers: float = 0.5, noise: float = 1.0, trials: int = 5) -> list[tuple]:
    """(name, median ms, median rot err deg, median centre err m) per PnP solver."""
    from scipy.spatial.transform import Rotation

    from mast3r_ros.geometry import PnPConfig, PnPSolver, intrinsics_matrix, rotation_angle_deg, solve_pnp

    K = intrinsics_matrix(500.0, 319.5, 239.5)
    rng = np.random.default_rng(0)
    scenes = []
    for _ in range(trials):
        R = Rotation.from_rotvec(rng.normal(size=3) * 0.3).as_matrix()
        t = rng.uniform(-0.5, 0.5, 3)
        uv = rng.uniform([0, 0], [639, 479], (n, 2))
        z = rng.uniform(2, 6, n)
        pc = np.concatenate([(uv - K[:2, 2]) / 500.0 * z[:, None], z[:, None]], 1)
        X = (pc - t) @ R  # world points: pc = R X + t
        obs = uv + rng.normal(scale=noise, size=uv.shape)
        bad = rng.random(n) < outliers
        obs[bad] = rng.uniform([0, 0], [639, 479], (bad.sum(), 2))
        scenes.append((obs, X, R, t))
    rows = []
    for solver in PnPSolver:
        cfg = PnPConfig(solver=solver, compute_covariance=False)
        ms, rot, pos = [], [], []
        for obs, X, R, t in scenes:
            t0 = time.perf_counter()
            res = solve_pnp(obs, X, K, cfg)
            ms.append((time.perf_counter() - t0) * 1e3)
            rot.append(rotation_angle_deg(res.T_cam_world[:3, :3], R))
            pos.append(np.linalg.norm(res.T_world_cam[:3, 3] - (-R.T @ t)))
        rows.append((solver.value, statistics.median(ms), statistics.median(rot), statistics.median(pos)))
    return rows


def run(args: argparse.Namespace) -> int:
    import torch

    from mast3r_ros.matching import NNBackend, fast_reciprocal_nn, mutual_nn
    from mast3r_ros.synth.homography import homography_pair

    from mast3r_ros.errors import InputError, LimitError
    from mast3r_ros.limits import MAX_DESC_PIXELS

    if not 1 <= args.repeat <= 1000:
        raise InputError(f"expected 1..1000, got {args.repeat}", argument="--repeat")
    if args.subsample < 1:
        raise InputError(f"expected >= 1, got {args.subsample}", argument="--subsample")
    if args.height < 16 or args.width < 16 or args.height * args.width > MAX_DESC_PIXELS:
        raise LimitError(f"--height x --width must be at least 16x16 and at most {MAX_DESC_PIXELS:,} "
                         f"pixels, got {args.height}x{args.width}")
    dev = args.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda but torch sees no CUDA device")
    from mast3r_ros.benchmarking import MachineState

    machine = MachineState.now()
    pair = homography_pair(args.height, args.width, noise=0.02)
    d1, d2 = pair.desc1.to(dev), pair.desc2.to(dev)
    print(f"# bench-match {datetime.date.today()} | {platform.node()} | {platform.processor() or platform.machine()}"
          f" | {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)"
          f" | device {dev}{' ' + torch.cuda.get_device_name(0) if dev.startswith('cuda') else ''}")
    print(f"# descriptor maps {args.height}x{args.width}x{d1.shape[2]} float32, FRM grid every {args.subsample} px")
    fast_reciprocal_nn(d1, d2, subsample=args.subsample)  # warm-up
    tm_frm, r = _time(lambda: fast_reciprocal_nn(d1, d2, subsample=args.subsample), args.repeat, dev,
                      "FRM torch")
    t_frm = tm_frm.median_ms
    x1 = np.stack([r.idx1.cpu().numpy() % args.width, r.idx1.cpu().numpy() // args.width], 1)
    x2 = np.stack([r.idx2.cpu().numpy() % args.width, r.idx2.cpu().numpy() // args.width], 1)
    p = np.concatenate([x1, np.ones((len(x1), 1))], 1) @ pair.H_21.T
    ok = np.mean(np.linalg.norm(p[:, :2] / p[:, 2:] - x2, axis=1) <= 1.5)
    print(f"FRM torch      : {t_frm:9.1f} ms (min {tm_frm.min_ms:.1f}, max {tm_frm.max_ms:.1f}, "
          f"n={args.repeat})  ({len(r.idx1)} matches, {r.n_iterations} iterations, "
          f"{ok:.1%} within 1.5 px of the truth)")
    if args.faiss:
        tm_f, rf = _time(lambda: fast_reciprocal_nn(d1, d2, subsample=args.subsample,
                                                    backend=NNBackend.FAISS), args.repeat, dev, "FRM faiss")
        t_f = tm_f.median_ms
        print(f"FRM faiss      : {tm_f}  ({len(rf.idx1)} matches)  ratio faiss/torch {t_f / t_frm:.2f}")
    if args.dense:
        tm_d, rd = _time(lambda: mutual_nn(d1, d2), 1, dev, "dense NN")
        t_d = tm_d.median_ms
        print(f"dense mutual NN: {t_d:9.1f} ms  ({len(rd.idx1)} matches)  ratio dense/FRM {t_d / t_frm:.1f}x")
    if args.pose:
        print("# PnP + RANSAC, 1000 matches, 50% outliers, 1 px noise, median of 5 scenes")
        for name, ms, rot, pos in bench_pose():
            print(f"PnP {name:14s}: {ms:7.1f} ms  rot {rot:.3f} deg  centre {pos * 1e3:.1f} mm")
    machine.finish()
    print(f"# load average {machine.load_before[0]:.2f} before, {machine.load_after[0]:.2f} after "
          f"({machine.cores} cores, {torch.get_num_threads()} torch threads)")
    machine.warn_if_busy(lambda m: print(m, file=sys.stderr))
    return 0
