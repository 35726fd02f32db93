"""``mast3r-ros relocalize``: the metric pose of a query image from one reference image
(map-free relocalization), through the same ``Relocalizer`` the node uses.

Exit status: 0 with a pose; 1 when relocalization fails honestly (the reason is printed);
2 on bad input.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from mast3r_ros.cli._common import load_rgb
from mast3r_ros.cli._reloc_common import (
    add_engine_args, network_engine, parse_floats, reloc_config, sim_config,
)

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "relocalize", help="metric pose of a query image from one reference image (map-free)",
        description="Relocalize QUERY against REFERENCE (whose pose in the map is --reference-pose, "
                    "default the identity) and print both poses as 'x y z qx qy qz qw' (quaternion "
                    "xyzw, camera -> map, OpenCV optical frames). Without --intrinsics the focal "
                    "is estimated from the pointmaps.")
    p.add_argument("--reference", required=True, help="reference image")
    p.add_argument("--query", required=True, help="query image")
    p.add_argument("--reference-pose", default="0 0 0 0 0 0 1",
                   help="reference camera pose in the map, 'x y z qx qy qz qw' (default identity)")
    p.add_argument("--intrinsics", default=None,
                   help="'fx fy cx cy' of both images (same camera), original pixels; omit to "
                        "estimate them")
    add_engine_args(p, bag_flag="--simulator-bag")
    p.add_argument("--simulator-bag", help="synthetic bag the images come from (simulator engine; "
                                           "frames are found by their exact image bytes)")
    p.add_argument("--viz", help="draw the inlier matches to this .png/.jpg")
    p.add_argument("--max-viz", type=int, default=300, help="at most this many lines in --viz")
    p.add_argument("--json", help="write the result as JSON here")
    p.set_defaults(func=run)


def pose_text(T: np.ndarray) -> str:
    from mast3r_ros.geometry import T_to_pose

    (x, y, z), q = T_to_pose(T)
    return " ".join(f"{v:.6f}" for v in (x, y, z, *q))


def result_dict(res, T_map_ref: np.ndarray) -> dict:
    """The JSON of a ``RelocResult`` (poses as 'x y z qx qy qz qw' and 4x4 lists)."""
    def arr(a):
        return None if a is None else np.asarray(a).tolist()

    return {"success": res.success, "message": res.message,
            "reference_pose": pose_text(T_map_ref), "query_pose": None if res.T_map_cam is None
            else pose_text(res.T_map_cam), "T_map_cam": arr(res.T_map_cam),
            "covariance": arr(res.covariance), "reference_id": res.reference_id,
            "num_matches": res.num_matches, "num_inliers": res.num_inliers,
            "confidence": res.confidence, "K": arr(res.K),
            "intrinsics_estimated": res.intrinsics_estimated, "timings_ms": res.timings_ms}


def run(args: argparse.Namespace) -> int:
    from mast3r_ros.geometry import intrinsics_matrix, pose_to_T
    from mast3r_ros.reloc import Relocalizer

    ref_img, q_img = load_rgb(args.reference), load_rgb(args.query)
    pose = parse_floats(args.reference_pose, 7, "--reference-pose", "x y z qx qy qz qw")
    if abs(np.linalg.norm(pose[3:]) - 1.0) > 1e-3:
        raise ValueError(f"--reference-pose quaternion must have unit norm, got norm "
                         f"{np.linalg.norm(pose[3:]):.4f}")
    T_map_ref = pose_to_T(pose[:3], pose[3:] / np.linalg.norm(pose[3:]))
    K = None
    if args.intrinsics is not None:
        fx, fy, cx, cy = parse_floats(args.intrinsics, 4, "--intrinsics", "fx fy cx cy")
        if fx <= 0 or fy <= 0:
            raise ValueError(f"--intrinsics needs fx, fy > 0, got {fx}, {fy}")
        K = intrinsics_matrix(fx, cx, cy, fy)
    if args.engine == "simulator":
        if not args.simulator_bag:
            raise ValueError("--engine simulator needs --simulator-bag BAG (the synthetic bag the "
                             "images were taken from)")
        from mast3r_ros.synth.simulator import NetworkOutputSimulator

        bag = Path(args.simulator_bag)
        if not bag.exists():
            raise FileNotFoundError(f"--simulator-bag not found: {bag}")
        engine = NetworkOutputSimulator.from_bag(bag, sim_config(args, max(ref_img.shape[:2])))
        try:
            engine.frame_index(ref_img, None), engine.frame_index(q_img, None)
        except KeyError as exc:
            raise ValueError(f"an image is not a frame of {bag}: {exc.args[0]}") from None
    else:
        engine = network_engine(args)
    reloc = Relocalizer(engine, reloc_config(args))
    ref_id = reloc.add_reference(ref_img, T_map_ref, K, "reference")
    res = reloc.relocalize(q_img, K, ref_id)
    print(f"reference {pose_text(T_map_ref)}")
    if res.success:
        print(f"query     {pose_text(res.T_map_cam)}")
        print(f"{res.message}: {res.num_inliers}/{res.num_matches} inliers, confidence "
              f"{res.confidence:.2f}, focal {res.K[0, 0]:.1f} px"
              f"{' (estimated)' if res.intrinsics_estimated else ''}, "
              f"{res.timings_ms['total']:.0f} ms")
    else:
        print(f"relocalization failed: {res.message}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result_dict(res, T_map_ref), indent=1))
    if args.viz:
        import cv2

        from mast3r_ros.cli.match import draw_matches

        xy_r, xy_q = res.inlier_xy if res.inlier_xy is not None else (np.zeros((0, 2)),) * 2
        pic = draw_matches(ref_img, q_img, xy_r, xy_q, args.max_viz)
        if not cv2.imwrite(str(args.viz), cv2.cvtColor(pic, cv2.COLOR_RGB2BGR)):
            raise ValueError(f"cannot write {args.viz} (use a .png or .jpg name)")
    return 0 if res.success else 1
