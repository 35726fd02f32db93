"""The README's main job: a synthetic bag through the real ``slam_node``, scored against
ground truth.

    python -m mast3r_ros.ros.demo [--frames N] [--out DIR] [--checkpoint CKPT]
    (scripts/demo.sh; scripts/setup.sh runs it at the end unless MAST3R_SKIP_DEMO=1)

1. renders a synthetic sequence (room, walking camera, exact ground truth) into a rosbag2,
   cached under ``~/.cache/mast3r_ros/demo/`` (a second run reuses it);
2. plays it frame by frame through ``slam_node`` running in this process (real rclpy
   publishers, subscriptions and services; see ``mast3r_ros.ros.replay``);
3. prints ATE (Sim(3)- and SE(3)-aligned) and RPE of the live poses, then ATE of the final
   (corrected) trajectory, against the ground truth, and writes
   ``DIR/trajectory.tum``, ``DIR/groundtruth.tum``, ``DIR/trajectory.png`` (estimate vs
   truth) and ``DIR/cloud.ply`` (the node's ``map/points``).

Without a checkpoint the network-output SIMULATOR answers instead of MASt3R (it derives the
network's outputs from the bag's ground truth, with realistic noise) and the demo says so;
with ``MAST3R_CHECKPOINT=...`` (or ``--checkpoint``) the network runs.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mast3r_ros" / "demo"


def ensure_bag(frames: int, width: int, height: int, seed: int, cache: Path) -> Path:
    """The demo's rosbag2 folder, rendered once per settings (``cache/<hash>/bag``)."""
    from mast3r_ros.synth.bag import write_dataset
    from mast3r_ros.synth.sequence import SynthConfig, generate

    cfg = SynthConfig(scene="room", trajectory="walk", frames=frames, width=width,
                      height=height, rate_hz=10.0, seed=seed)
    key = hashlib.sha1(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    folder = cache / key
    bag = folder / "bag"
    if (folder / "done").is_file():
        print(f"[demo] synthetic bag: {bag} (cached)")
        return bag
    if folder.exists():
        import shutil

        shutil.rmtree(folder)  # an interrupted render
    t = time.perf_counter()
    write_dataset(generate(cfg), folder)
    (folder / "done").write_text(json.dumps(cfg.to_dict()))
    print(f"[demo] synthetic bag: rendered {frames} frames {width}x{height} to {bag} "
          f"({time.perf_counter() - t:.1f} s)")
    return bag


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mast3r_ros.ros.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=100, help="frames of the synthetic walk")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--height", type=int, default=192)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=128,
                   help="network input long side (multiple of 16; 512 = the checkpoint's)")
    p.add_argument("--out", default="demo_output", help="output folder")
    p.add_argument("--checkpoint", default=os.environ.get("MAST3R_CHECKPOINT", ""),
                   help="MASt3R checkpoint (default: $MAST3R_CHECKPOINT; none = simulator)")
    p.add_argument("--device", default="", help="torch device ('' = CUDA when available)")
    p.add_argument("--cache", default=str(_cache_root()), help="where the rendered bag is kept")
    args = p.parse_args(argv)

    import numpy as np

    from mast3r_ros.evaluation.metrics import ate, rpe
    from mast3r_ros.evaluation.plot import plot_trajectories
    from mast3r_ros.evaluation.trajectory import Trajectory, write_tum
    from mast3r_ros.slam.cloud import write_ply
    from mast3r_ros.synth.bag import read_bag

    from .replay import replay_sequence

    t_start = time.perf_counter()
    bag = ensure_bag(args.frames, args.width, args.height, args.seed, Path(args.cache))
    seq = read_bag(bag)
    if args.checkpoint:
        if not Path(args.checkpoint).is_file():
            print(f"[demo] error: checkpoint {args.checkpoint!r} not found", file=sys.stderr)
            return 2
        engine = "network (MASt3R from %s)" % args.checkpoint
        params = {"engine": "network", "checkpoint": args.checkpoint, "device": args.device,
                  "image_size": args.size}
    else:
        engine = ("SIMULATOR: no checkpoint given, so the network-output simulator answers "
                  "from the bag's ground truth (realistic noise). These are NOT MASt3R results; "
                  "set MAST3R_CHECKPOINT=/path/to/checkpoint.pth to run the network")
        params = {"engine": "simulator", "simulator_bag": str(bag), "device": args.device or "cpu",
                  "image_size": args.size}
    print(f"[demo] engine: {engine}")
    print(f"[demo] playing {len(seq)} frames through slam_node (in-process, real rclpy) ...")
    t = time.perf_counter()
    res = replay_sequence(seq, params, log=lambda *a: None)
    wall = time.perf_counter() - t
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamps, poses = res.trajectory()
    write_tum(out / "trajectory.tum", stamps, poses)
    write_tum(out / "groundtruth.tum", seq.stamps_ns, seq.poses)
    states = [s["state_name"] for s in res.statuses]
    kfs = max((s["num_keyframes"] for s in res.statuses), default=0)
    print(f"[demo] {len(res.statuses)} frames processed in {wall:.1f} s "
          f"({len(res.statuses) / max(wall, 1e-9):.1f} FPS end to end), {len(stamps)} with a pose, "
          f"{kfs} keyframes, states: " + ", ".join(f"{k} {states.count(k)}" for k in
                                                   dict.fromkeys(states)))
    if len(stamps) < 3:
        print("[demo] error: fewer than 3 poses; nothing to evaluate", file=sys.stderr)
        return 1
    gt = Trajectory(seq.stamps_ns / 1e9, seq.poses)
    est = Trajectory(stamps / 1e9, poses)
    length = float(np.linalg.norm(np.diff(seq.poses[:, :3, 3], axis=0), axis=1).sum())
    a_sim3, a_se3 = ate(gt, est, "sim3"), ate(gt, est, "se3")
    r = rpe(gt, est, "se3")
    print(f"[demo] path length {length:.2f} m")
    print(f"[demo] ATE Sim(3)-aligned: RMSE {a_sim3.stats.rmse:.4f} m "
          f"({100 * a_sim3.stats.rmse / length:.2f} % of the path), scale {a_sim3.pair.scale:.4f}")
    print(f"[demo] ATE SE(3)-aligned:  RMSE {a_se3.stats.rmse:.4f} m "
          f"({100 * a_se3.stats.rmse / length:.2f} % of the path)")
    print(f"[demo] RPE (1 frame, SE(3)): translation RMSE {r.trans.rmse:.4f} m, rotation RMSE "
          f"{r.rot_deg.rmse:.3f} deg")
    print("[demo] (the poses above are the live ones, as published frame by frame; the mapper "
          "corrects them afterwards)")
    final = {}
    if res.final_trajectory:
        fs = np.array([t for t, _ in res.final_trajectory], dtype=np.int64)
        fin = Trajectory(fs / 1e9, np.stack([T for _, T in res.final_trajectory]))
        f_sim3, f_se3 = ate(gt, fin, "sim3"), ate(gt, fin, "se3")
        print(f"[demo] final trajectory (every frame after the mapper's corrections): ATE "
              f"Sim(3) {f_sim3.stats.rmse:.4f} m ({100 * f_sim3.stats.rmse / length:.2f} %), "
              f"scale {f_sim3.pair.scale:.4f}; SE(3) {f_se3.stats.rmse:.4f} m "
              f"({100 * f_se3.stats.rmse / length:.2f} %)")
        final = {"final_ate_sim3_rmse_m": f_sim3.stats.rmse, "final_ate_se3_rmse_m": f_se3.stats.rmse,
                 "final_scale": f_sim3.pair.scale}
    title = ("slam_node on a synthetic walk; engine: "
             + ("MASt3R" if args.checkpoint else "network-output SIMULATOR (not the network)"))
    plot = plot_trajectories(a_sim3, out / "trajectory.png", r, title=title)
    print(f"[demo] wrote {out / 'trajectory.tum'}, {out / 'groundtruth.tum'}, {plot}")
    if res.cloud is not None:
        xyz, rgb = res.cloud
        write_ply(out / "cloud.ply", xyz, rgb)
        print(f"[demo] wrote {out / 'cloud.ply'} ({len(xyz)} points from map/points)")
    summary = {"engine": "network" if args.checkpoint else "simulator", "frames": len(seq),
               "frames_with_pose": int(len(stamps)), "keyframes": int(kfs),
               "path_length_m": length, "ate_sim3_rmse_m": a_sim3.stats.rmse,
               "ate_se3_rmse_m": a_se3.stats.rmse, "rpe_trans_rmse_m": r.trans.rmse,
               "rpe_rot_rmse_deg": r.rot_deg.rmse, "wall_s": wall, **final}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"[demo] done in {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
