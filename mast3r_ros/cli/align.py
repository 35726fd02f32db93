"""``mast3r-ros align``: sparse global alignment of an unordered image set.

Writes into ``--out``:

- ``poses.tum``: one line per image, ``stamp tx ty tz qx qy qz qw`` (TUM; T_world_cam, the
  world being the best-connected image's camera frame). The stamp is the image's index in
  the command line (0, 1, 2, ...); ``images.txt`` lists index and path in the same order.
- ``intrinsics.json``: per image ``{"path", "index", "K" (3x3, original pixels), "width",
  "height", "estimated" (true when not given)}``.
- ``cloud.ply``: binary little-endian PLY, float xyz + uchar rgb (confidence-filtered,
  voxel-averaged, at most ``--max-points``).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from mast3r_ros.cli._common import load_rgb

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "align", help="sparse global alignment of an unordered image set (poses, K, cloud.ply)",
        description="Decode the pairs of a scene graph, match them, and align every image by "
                    "sparse global alignment. Writes DIR/poses.tum (stamp = image index), "
                    "DIR/images.txt, DIR/intrinsics.json and DIR/cloud.ply.")
    p.add_argument("images", nargs="+", help="two or more images")
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--scene-graph", default="complete",
                   help="complete | swin-K | retrieval-K (default complete)")
    p.add_argument("--engine", choices=["network", "simulator"], default="network",
                   help="network (needs --checkpoint) or the test-only network-output simulator "
                        "(needs --simulator-bag)")
    p.add_argument("--checkpoint", help="MASt3R .pth or .safetensors checkpoint")
    p.add_argument("--simulator-bag", help="synthetic bag the simulator finds the images in "
                                           "(by their exact bytes)")
    p.add_argument("--sim-noise", default="realistic",
                   help="simulator noise profile: exact | realistic | any SimulatorConfig profile")
    p.add_argument("--sim-config", help="JSON object (or .json file) of SimulatorConfig overrides")
    p.add_argument("--size", type=int, default=512, help="network long side (default 512)")
    p.add_argument("--config", help="JSON object (or .json file) of AlignmentConfig overrides")
    p.add_argument("--K", dest="K", help="known intrinsics 'fx,fy,cx,cy' for every image "
                                         "(default: estimated)")
    p.add_argument("--max-points", type=int, default=500_000, help="cloud.ply point budget")
    p.add_argument("--voxel-size", type=float, default=0.01, help="cloud voxel size, metres")
    p.add_argument("--device", default=None, help="torch device (network engine)")
    p.add_argument("--dtype", default="float32", help="trunk dtype (network engine)")
    p.set_defaults(func=run)


def _json_arg(text: str | None, what: str) -> dict:
    if not text:
        return {}
    src = Path(text)
    raw = src.read_text() if src.suffix == ".json" and src.is_file() else text
    try:
        val = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is not a JSON object or .json file: {exc}") from None
    if not isinstance(val, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(val).__name__}")
    return val


def make_engine(args: argparse.Namespace, images: list[np.ndarray]):
    """The engine of ``--engine``: network from ``--checkpoint``, or the simulator."""
    if args.engine == "network":
        if not args.checkpoint:
            raise ValueError("--engine network needs --checkpoint CKPT")
        from mast3r_ros.model.engine import Mast3rEngine

        return Mast3rEngine.from_checkpoint(args.checkpoint, device=args.device, dtype=args.dtype,
                                            size=args.size)
    if not args.simulator_bag:
        raise ValueError("--engine simulator needs --simulator-bag BAG (the synthetic bag the "
                         "images come from)")
    from mast3r_ros.synth.simulator import NetworkOutputSimulator, SimulatorConfig

    profile = getattr(SimulatorConfig, args.sim_noise, None)
    if not callable(profile) or args.sim_noise.startswith("_") or args.sim_noise == "from_dict":
        raise ValueError(f"--sim-noise {args.sim_noise!r} is not a SimulatorConfig profile "
                         "(exact, realistic, ...)")
    cfg = profile(size=args.size, **_json_arg(args.sim_config, "--sim-config"))
    log.warning("engine: the network-output SIMULATOR (test only), noise %s", args.sim_noise)
    return NetworkOutputSimulator.from_bag(args.simulator_bag, cfg)


def _parse_K(text: str | None) -> np.ndarray | None:
    if not text:
        return None
    try:
        fx, fy, cx, cy = (float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"--K must be 'fx,fy,cx,cy' (four numbers), got {text!r}") from None
    from mast3r_ros.geometry import check_K

    return check_K(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), "--K")


def write_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Binary little-endian PLY with float x, y, z and uchar red, green, blue."""
    n = len(xyz)
    rec = np.empty(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                             ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    rec["x"], rec["y"], rec["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    rec["red"], rec["green"], rec["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"element vertex {n}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(rec.tobytes())


def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``write_ply``: (xyz float32 (N, 3), rgb uint8 (N, 3))."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    n = int([ln for ln in data[:end].decode().splitlines() if ln.startswith("element vertex")][0].split()[2])
    rec = np.frombuffer(data[end:], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                           ("red", "u1"), ("green", "u1"), ("blue", "u1")], count=n)
    return (np.stack([rec["x"], rec["y"], rec["z"]], 1),
            np.stack([rec["red"], rec["green"], rec["blue"]], 1))


def run(args: argparse.Namespace) -> int:
    from mast3r_ros.geometry.transforms import T_to_pose
    from mast3r_ros.slam.alignment import AlignmentConfig, SceneGraph, parse_scene_graph
    from mast3r_ros.slam.batch import align_images

    if len(args.images) < 2:
        raise ValueError(f"need at least 2 images, got {len(args.images)}")
    graph, k = parse_scene_graph(args.scene_graph)
    if graph is not SceneGraph.COMPLETE and k >= len(args.images):
        raise ValueError(f"--scene-graph {args.scene_graph}: K must be < the number of images "
                         f"({len(args.images)})")
    if args.max_points < 0 or not args.voxel_size > 0:
        raise ValueError("--max-points must be >= 0 and --voxel-size > 0")
    config = AlignmentConfig.from_dict(_json_arg(args.config, "--config"))
    K = _parse_K(args.K)
    images = [load_rgb(p) for p in args.images]
    engine = make_engine(args, images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = align_images(engine, images, graph, k, config, K=K)
    xyz, rgb = result.point_cloud(args.max_points, args.voxel_size)
    with open(out / "poses.tum", "w") as fh:
        fh.write("# stamp = image index (see images.txt); T_world_cam, qx qy qz qw\n")
        for i, T in enumerate(result.T_world_cam):
            t, q = T_to_pose(T)
            fh.write(f"{i} " + " ".join(f"{x:.9f}" for x in (*t, *q)) + "\n")
    (out / "images.txt").write_text("".join(f"{i} {p}\n" for i, p in enumerate(args.images)))
    intr = [{"index": i, "path": str(p), "K": result.K[i].tolist(), "width": int(im.shape[1]),
             "height": int(im.shape[0]), "estimated": K is None}
            for i, (p, im) in enumerate(zip(args.images, images))]
    (out / "intrinsics.json").write_text(json.dumps(intr, indent=1))
    write_ply(out / "cloud.ply", xyz, rgb)
    low = [args.images[i] for i, w in enumerate(result.view_weight) if w < 0.1]
    print(f"aligned {len(images)} images ({len(result.pairs)} pairs, scene graph "
          f"{args.scene_graph}) in {result.timings_ms['total'] / 1e3:.1f} s; "
          f"{len(xyz)} points -> {out}")
    if low:
        print(f"weakly connected (weight < 0.1, likely outliers): {', '.join(low)}")
    return 0
