"""``mast3r-ros slam``: run the tracking core offline on a rosbag2 (no ROS needed).

Writes DIR/trajectory.tum (every frame with a pose, ``stamp tx ty tz qx qy qz qw``,
camera-to-map), DIR/keyframes.tum, DIR/cloud.ply (keyframes' fused pointmaps,
confidence-filtered, voxel-subsampled) and DIR/status.jsonl (one JSON object per frame).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "slam", help="track a rosbag2 offline -> trajectory.tum, keyframes.tum, cloud.ply, status.jsonl",
        description="Run the SLAM core (the same SlamSystem as slam_node) on the images of a "
                    "rosbag2, streaming it frame by frame, and write DIR/trajectory.tum (every "
                    "frame with a pose), DIR/keyframes.tum, DIR/cloud.ply and DIR/status.jsonl. "
                    "With --engine simulator the network-output simulator (tests and evaluation "
                    "only) answers from the ground truth in the same bag.")
    p.add_argument("--bag", required=True, help="rosbag2 folder")
    p.add_argument("--out", required=True, help="output folder (created; files are replaced)")
    p.add_argument("--engine", default="network", choices=("network", "simulator"),
                   help="network (MASt3R, needs --checkpoint) or simulator (needs depth and "
                        "ground truth in the bag)")
    p.add_argument("--checkpoint", help="MASt3R .pth / .safetensors (for --engine network)")
    p.add_argument("--device", default=None, help="torch device (default: CUDA when available)")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    p.add_argument("--size", type=int, default=512, help="network long side (default 512)")
    p.add_argument("--image-topic", default="/camera/image_raw", help="sensor_msgs/Image topic")
    p.add_argument("--camera-info-topic", default="/camera/camera_info",
                   help="sensor_msgs/CameraInfo topic")
    p.add_argument("--no-camera-info", action="store_true",
                   help="ignore camera info: estimate the intrinsics from the pointmaps")
    from mast3r_ros.cli._common import add_simulator_args

    add_simulator_args(p)
    p.add_argument("--config", help="JSON file of SlamConfig ({'tracker': {...}, 'reloc': {...}})")
    p.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: all)")
    p.add_argument("--voxel-size", type=float, default=0.02, help="cloud voxel edge, metres")
    p.add_argument("--cloud-min-conf", type=float, default=3.0,
                   help="cloud: minimum mean fused confidence of a point")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _read_json(path: str, what: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file not found: {p}")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} file {p} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} file {p} must hold a JSON object, got {type(data).__name__}")
    return data


def _engine(args: argparse.Namespace):
    if args.engine == "simulator":
        from mast3r_ros.synth.bag import BagTopics, read_bag
        from mast3r_ros.synth.simulator import NetworkOutputSimulator

        import dataclasses

        from mast3r_ros.cli._common import simulator_config_from_args

        cfg = dataclasses.replace(simulator_config_from_args(args), size=args.size)
        topics = BagTopics(image=args.image_topic, camera_info=args.camera_info_topic)
        log.warning("engine: the network-output SIMULATOR (ground truth + %s noise), not MASt3R",
                    args.sim_noise)
        return NetworkOutputSimulator(read_bag(args.bag, topics), cfg), "simulator"
    if not args.checkpoint:
        raise ValueError("--engine network needs --checkpoint CKPT (or use --engine simulator "
                         "on a synthetic bag)")
    from mast3r_ros.model.engine import Mast3rEngine

    return Mast3rEngine.from_checkpoint(args.checkpoint, device=args.device, dtype=args.dtype,
                                        size=args.size), "network"


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from mast3r_ros.bag_stream import bag_topics, iter_bag_images
    from mast3r_ros.evaluation.trajectory import write_tum
    from mast3r_ros.slam import SlamConfig, SlamSystem
    from mast3r_ros.slam.cloud import keyframe_cloud, write_ply
    from mast3r_ros.synth.sequence import stamp_id

    if args.size < 16 or args.size % 16:
        raise ValueError(f"--size must be a positive multiple of 16, got {args.size}")
    if args.max_frames < 0:
        raise ValueError(f"--max-frames must be >= 0, got {args.max_frames}")
    if args.voxel_size <= 0:
        raise ValueError(f"--voxel-size must be > 0, got {args.voxel_size}")
    topics = bag_topics(args.bag)  # FileNotFoundError when there is no bag
    if args.image_topic not in topics:
        raise ValueError(f"bag {args.bag} has no image topic {args.image_topic}; it has "
                         f"{sorted(topics)} (choose one with --image-topic)")
    info_topic = None if args.no_camera_info else args.camera_info_topic
    if info_topic is not None and info_topic not in topics:
        raise ValueError(f"bag {args.bag} has no camera info topic {info_topic}; pass "
                         "--camera-info-topic T, or --no-camera-info to estimate intrinsics")
    config = SlamConfig.from_dict(_read_json(args.config, "--config")) if args.config else SlamConfig()
    engine, kind = _engine(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    system = SlamSystem(engine, config)
    total = topics[args.image_topic][1]
    if args.max_frames:
        total = min(total, args.max_frames)
    from tqdm import tqdm

    n = 0
    t0 = time.perf_counter()
    with open(out / "status.jsonl", "w") as status, tqdm(
            total=total, unit="frame", disable=args.no_progress, file=sys.stderr) as bar:
        for frame in iter_bag_images(args.bag, args.image_topic, info_topic):
            if args.max_frames and n >= args.max_frames:
                break
            res = system.process(frame.rgb, frame.stamp_ns, frame.K,
                                 frame_id=stamp_id(frame.stamp_ns))
            n += 1
            status.write(json.dumps({
                "stamp": frame.stamp_ns / 1e9, "stamp_ns": frame.stamp_ns,
                "state": int(res.state), "state_name": res.state_name,
                "keyframe_id": res.keyframe_id, "num_matches": res.num_matches,
                "num_inliers": res.num_inliers, "inlier_ratio": round(res.inlier_ratio, 4),
                "confidence": round(res.confidence, 4),
                "num_keyframes": system.counts["keyframes"],
                "new_keyframe": res.new_keyframe.id if res.new_keyframe is not None else None,
                "matcher": res.matcher,
                "processing_ms": round(res.timings_ms.get("total", 0.0), 3),
                "timings_ms": {k: round(v, 3) for k, v in res.timings_ms.items()},
                "intrinsics_estimated": res.intrinsics_estimated,
                "focal_px": None if res.K is None else float(res.K[0, 0]),
            }) + "\n")
            bar.update(1)
            bar.set_postfix_str(f"{res.state_name} kf={system.counts['keyframes']}", refresh=False)
    elapsed = time.perf_counter() - t0
    if n == 0:
        raise ValueError(f"bag {args.bag} has no images on {args.image_topic}")
    traj = system.trajectory()
    stamps = np.array([s for s, _ in traj], dtype=np.int64)
    poses = np.stack([T for _, T in traj]) if traj else np.zeros((0, 4, 4))
    write_tum(out / "trajectory.tum", stamps, poses)
    kfs = system.keyframes()
    write_tum(out / "keyframes.tum", np.array([k.stamp_ns for k in kfs], dtype=np.int64),
              np.stack([k.T_map_cam for k in kfs]) if kfs else np.zeros((0, 4, 4)))
    xyz, rgb = keyframe_cloud(kfs, min_conf=args.cloud_min_conf, voxel_size=args.voxel_size)
    write_ply(out / "cloud.ply", xyz, rgb)
    summary = {"engine": kind if kind == "network" else f"simulator ({args.sim_noise} noise; NOT the network)",
               "frames": n, "poses": len(traj), "keyframes": len(kfs),
               "lost": system.counts["lost"], "relocalized": system.counts["relocalized"],
               "fps": round(n / elapsed, 3) if elapsed > 0 else None,
               "seconds": round(elapsed, 2), "cloud_points": int(len(xyz)),
               "focal_px": float(kfs[0].K[0, 0]) if kfs else None,
               "intrinsics_estimated": bool(kfs[0].intrinsics_estimated) if kfs else None,
               "out": str(out)}
    print(json.dumps(summary, indent=2))
    return 0
