"""Local matcher vs fast reciprocal matching (FRM) for frame-to-keyframe tracking, and the
per-frame time split of ``SlamSystem``, at 512 x 384 on the network-output simulator.

Accuracy is measured against the simulator's exact ground truth: for every match (frame
pixel u, keyframe pixel q) the frame pixel's true surface point is projected into the
keyframe; the error is the distance to q (network pixels). Both matchers see the same
``PairPrediction`` (one decode per pair); only matching is timed.

    python benchmarks/bench_tracking.py [--frames 8] [--noise realistic] [--repeats 5]
        [--threads 1] [--device cpu] [--slam-frames 20]

Prints a Markdown table (paste into benchmarks/RESULTS.md with the machine and load).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

from mast3r_ros.matching import FRMConfig, match_prediction
from mast3r_ros.slam import LocalMatchConfig, SlamSystem, local_match
from mast3r_ros.synth.sequence import SynthConfig, generate
from mast3r_ros.synth.simulator import NetworkOutputSimulator, SimulatorConfig


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timeit(fn, repeats: int, device: torch.device) -> tuple[float, object]:
    out = fn()  # warm-up
    ts = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        out = fn()
        _sync(device)
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts), out


def gt_errors(kf_view, fr_view, xy_frame: np.ndarray, xy_kf: np.ndarray) -> np.ndarray:
    """Distance (network px) of each keyframe pixel to the true projection of its frame pixel."""
    fk, ff = kf_view.features, fr_view.features
    u = np.rint(xy_frame).astype(int)
    X = ff.world[u[:, 1], u[:, 0]]  # (N, 3) world points of the frame pixels
    T = np.linalg.inv(fk.T_world_cam)
    pc = X @ T[:3, :3].T + T[:3, 3]
    uv = pc @ fk.K_net.T
    uv = uv[:, :2] / uv[:, 2:]
    return np.linalg.norm(uv - xy_kf, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=8, help="frames of the walk (pairs: 0-i)")
    ap.add_argument("--step", type=int, default=1, help="frame step between pairs")
    ap.add_argument("--noise", default="realistic", choices=("exact", "realistic"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--height", type=int, default=384)
    ap.add_argument("--slam-frames", type=int, default=20, help="frames for the SlamSystem split (0: skip)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    seq = generate(SynthConfig(frames=max(args.frames, args.slam_frames), width=args.width,
                               height=args.height, seed=1))
    prof = SimulatorConfig.realistic if args.noise == "realistic" else SimulatorConfig.exact
    sim = NetworkOutputSimulator(seq, prof(size=max(args.width, args.height)), device=dev)
    views = [sim.encode(f.rgb, frame_id=f.frame_id) for f in seq.frames[:args.frames]]
    lm_cfg = LocalMatchConfig()
    frm_cfg = FRMConfig(subsample=8)
    rows = {"local": [], "frm": []}
    for i in range(args.step, args.frames, args.step):
        pred = sim.decode(views[0], views[i])
        K_net = views[0].features.K_net
        v1, v2 = pred.view1, pred.view2

        def run_local():
            m = local_match(v2.desc, v1.desc, v2.pts3d, K_net, lm_cfg, desc_conf_src=v2.desc_conf,
                            desc_conf_dst=v1.desc_conf, conf_src=v2.conf, conf_dst=v1.conf)
            return m.src_xy.cpu().numpy(), m.dst_xy.cpu().numpy()

        def run_frm():
            m = match_prediction(pred, frm_cfg)
            return m.xy2_net.astype(np.float64), m.xy1_net.astype(np.float64)

        for name, fn in (("local", run_local), ("frm", run_frm)):
            ms, (xy_f, xy_k) = _timeit(fn, args.repeats, dev)
            err = gt_errors(views[0], views[i], xy_f, xy_k)
            rows[name].append((ms, len(err), float(np.median(err)), float(np.mean(err < 1.0)),
                               float(np.mean(err < 3.0))))
    load = os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {args.threads} thread(s), device {dev}; "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"simulator {args.noise} noise, {args.width}x{args.height} images, network "
          f"{views[0].transform.network_size[1]}x{views[0].transform.network_size[0]}, "
          f"{len(rows['local'])} pairs (keyframe 0 vs frames {args.step}..{args.frames - 1})\n")
    print("| matcher | time (ms, median) | matches | median error (px) | < 1 px | < 3 px |")
    print("|---|---|---|---|---|---|")
    med = {}
    for name, r in rows.items():
        a = np.array(r)
        med[name] = np.median(a, axis=0)
        print(f"| {name} | {med[name][0]:.1f} | {med[name][1]:.0f} | {med[name][2]:.3f} | "
              f"{100 * med[name][3]:.1f} % | {100 * med[name][4]:.1f} % |")
    print(f"\nspeed-up local vs FRM: {med['frm'][0] / med['local'][0]:.1f}x")
    if args.slam_frames:
        slam = SlamSystem(sim)
        split: dict[str, list[float]] = {}
        for f in seq.frames[:args.slam_frames]:
            r = slam.process(f.rgb, f.stamp_ns, f.K, frame_id=f.frame_id)
            if r.state_name == "tracking" and r.matcher == "local":
                for k, v in r.timings_ms.items():
                    split.setdefault(k, []).append(v)
        print(f"\nSlamSystem per-frame split over {len(split.get('total', []))} tracked frames "
              "(median ms; simulator encode/decode are numpy ground truth, not the network):")
        print("| " + " | ".join(split) + " |")
        print("|" + "---|" * len(split))
        print("| " + " | ".join(f"{statistics.median(v):.1f}" for v in split.values()) + " |")


if __name__ == "__main__":
    main()
