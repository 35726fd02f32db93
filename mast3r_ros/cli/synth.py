"""``mast3r-ros synth``: render a synthetic sequence into a rosbag2 plus ground truth."""
from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger(__name__)

_SCENES = ("room", "cluttered")
_TRAJECTORIES = ("walk", "rotation", "loop", "tracking_loss", "reloc_30", "reloc_90", "reloc_180")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth", help="render a synthetic scene along a trajectory into a rosbag2 + groundtruth.tum",
        description="Render a procedural textured room along a camera trajectory and write "
                    "DIR/bag/ (rosbag2: image, camera_info, 32FC1 depth, /tf and PoseStamped "
                    "ground truth) and DIR/groundtruth.tum. For tests and evaluation.")
    p.add_argument("--scene", default="room", choices=_SCENES, help="procedural scene")
    p.add_argument("--trajectory", default="walk", choices=_TRAJECTORIES, help="camera path")
    p.add_argument("--frames", type=int, default=100, help="number of frames")
    p.add_argument("--seed", type=int, default=0, help="scene and trajectory seed")
    p.add_argument("--width", type=int, default=512, help="image width, pixels")
    p.add_argument("--height", type=int, default=384, help="image height, pixels")
    p.add_argument("--rate", type=float, default=10.0, help="frame rate, Hz (sets stamps)")
    p.add_argument("--hfov", type=float, default=70.0, help="horizontal field of view, degrees")
    p.add_argument("--encoding", default="rgb8", choices=("rgb8", "bgr8", "mono8"),
                   help="colour image encoding")
    p.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"),
                   help="rosbag2 storage plugin")
    p.add_argument("--out", required=True, help="output directory (DIR/bag must not exist)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mast3r_ros.cli._common import check_output_path, progress
    from mast3r_ros.errors import OutputPathError
    from mast3r_ros.synth.bag import write_dataset
    from mast3r_ros.synth.sequence import SynthConfig, generate

    check_output_path(args.out, "--out", kind="dir")
    if (Path(args.out) / "bag").exists():
        raise OutputPathError(f"--out {args.out!r} already holds a bag/ folder; choose a new --out")
    config = SynthConfig(scene=args.scene, trajectory=args.trajectory, frames=args.frames,
                         seed=args.seed, width=args.width, height=args.height,
                         rate_hz=args.rate, hfov_deg=args.hfov)
    # everything that can make the write fail is checked before minutes of rendering
    out = Path(args.out)
    if (out / "groundtruth.tum").is_dir():
        raise ValueError(f"--out {out}: {out / 'groundtruth.tum'} is a folder")
    sequence = generate(config, progress=lambda frames: progress(
        frames, total=config.frames, desc="render", unit="frame"))
    bag_dir, tum = write_dataset(sequence, args.out, encoding=args.encoding, storage=args.storage)
    print(json.dumps({"bag": str(bag_dir), "groundtruth": str(tum), "frames": len(sequence),
                      **config.to_dict(), "encoding": args.encoding, "storage": args.storage},
                     indent=2))
    return 0
