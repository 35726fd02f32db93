"""``mast3r-ros reloc-eval``: map-free relocalization metrics on a bag with ground truth."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from mast3r_ros.cli._reloc_common import add_engine_args, network_engine, reloc_config, sim_config

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reloc-eval", help="map-free relocalization metrics on reference/query pairs of a bag",
        description="Pick reference/query pairs from BAG (ground-truth poses and depth, e.g. "
                    "`mast3r-ros synth`) spread over viewpoint change and distance, relocalize each "
                    "query against its single reference through the Relocalizer, and report per "
                    "intrinsics mode: median translation/rotation error, recall at (0.25 m, 2 deg), "
                    "(0.5 m, 5 deg), (1 m, 10 deg), VCRE precision at 90 px (failures count as "
                    "failures) and the median time per query.")
    p.add_argument("--bag", required=True, help="rosbag2 folder with images, camera_info, depth, poses")
    add_engine_args(p, bag_flag="--bag")
    p.add_argument("--pairs", type=int, default=50, help="number of reference/query pairs (default 50)")
    p.add_argument("--seed", type=int, default=0, help="pair selection seed")
    p.add_argument("--min-overlap", type=float, default=0.15,
                   help="least fraction of the reference seen by the query (default 0.15)")
    p.add_argument("--intrinsics", choices=("known", "estimated", "both"), default="both",
                   help="query/reference intrinsics given (known) or estimated from the pointmaps")
    p.add_argument("--json", help="write {mode: metrics} here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mast3r_ros.reloc import Relocalizer
    from mast3r_ros.reloc.evaluate import evaluate_pairs, pick_pairs, summarize
    from mast3r_ros.synth.bag import read_bag

    if args.pairs < 1:
        raise ValueError(f"--pairs must be >= 1, got {args.pairs}")
    bag = Path(args.bag)
    if not bag.exists():
        raise FileNotFoundError(f"bag not found: {bag}")
    seq = read_bag(bag)
    frames = seq.frames
    if any(f.depth is None or f.T_world_cam is None for f in frames):
        raise ValueError(f"{bag} lacks depth or ground-truth poses; reloc-eval needs both "
                         "(write it with `mast3r-ros synth`)")
    if len(frames) < 2:
        raise ValueError(f"{bag} has {len(frames)} frame(s); need at least 2")
    pairs = pick_pairs(frames, args.pairs, args.seed, args.min_overlap)
    if args.engine == "simulator":
        from mast3r_ros.synth.simulator import NetworkOutputSimulator

        engine = NetworkOutputSimulator(seq, sim_config(args, max(frames[0].rgb.shape[:2])))
    else:
        engine = network_engine(args)
    reloc = Relocalizer(engine, reloc_config(args))
    modes = ["known", "estimated"] if args.intrinsics == "both" else [args.intrinsics]
    views: dict = {}
    report = {}
    for mode in modes:
        outcomes = evaluate_pairs(reloc, frames, pairs, mode == "known", views)
        report[mode] = summarize(outcomes)
        r = report[mode]
        print(f"{mode:9s} n={r['n']} median {r['median_trans_m']:.3f} m / {r['median_rot_deg']:.2f} deg, "
              f"recall 0.25m/2deg {r['recall_0.25m_2deg']:.2f}, 0.5m/5deg {r['recall_0.5m_5deg']:.2f}, "
              f"1m/10deg {r['recall_1m_10deg']:.2f}, VCRE<90px {r['vcre_90px_precision']:.2f}, "
              f"failures {r['failures']}, median {r['median_ms']:.0f} ms")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0
