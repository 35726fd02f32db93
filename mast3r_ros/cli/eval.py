"""``mast3r-ros eval``: ATE / RPE of an estimated TUM trajectory against ground truth."""
from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="ATE/RPE of a TUM trajectory against ground truth, with a plot",
        description="Associate two TUM trajectories by stamp, align the estimate (SE(3), or "
                    "Sim(3) with --sim3) and print ATE and RPE as JSON (metres, degrees).")
    p.add_argument("--gt", required=True, help="ground-truth TUM file")
    p.add_argument("--est", required=True, help="estimated TUM file")
    p.add_argument("--sim3", action="store_true", help="align with scale (Sim(3)) instead of SE(3)")
    p.add_argument("--plot", default=None, help="write a trajectory plot (PNG) here")
    p.add_argument("--max-diff", type=float, default=0.01,
                   help="max stamp difference for association, seconds")
    p.add_argument("--delta", type=int, default=1, help="RPE frame distance")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mast3r_ros.evaluation.metrics import Alignment, ate, rpe
    from mast3r_ros.evaluation.trajectory import read_tum

    gt, est = read_tum(args.gt), read_tum(args.est)
    alignment = Alignment.SIM3 if args.sim3 else Alignment.SE3
    a = ate(gt, est, alignment, args.max_diff)
    r = rpe(gt, est, alignment, args.delta, args.max_diff)
    out = {
        "alignment": alignment.value,
        "matched": len(a.pair.gt),
        "gt_poses": len(gt),
        "est_poses": len(est),
        "scale": a.pair.scale,
        "ate": a.stats.to_dict(),
        "rpe_trans": r.trans.to_dict(),
        "rpe_rot_deg": r.rot_deg.to_dict(),
        "rpe_delta": r.delta,
    }
    if args.plot:
        from mast3r_ros.evaluation.plot import plot_trajectories

        out["plot"] = str(plot_trajectories(a, args.plot, r, title=f"{args.est} vs {args.gt}"))
    print(json.dumps(out, indent=2))
    return 0
