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


def _finite_or_null(value):
    """NaN / inf -> None (JSON null), recursively; json.dumps would write invalid ``NaN``."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def run(args: argparse.Namespace) -> int:
    import math

    from mast3r_ros.cli._common import check_output_path
    from mast3r_ros.errors import InputError
    from mast3r_ros.evaluation.metrics import Alignment, ate, rpe
    from mast3r_ros.evaluation.trajectory import read_tum

    if not (math.isfinite(args.max_diff) and args.max_diff >= 0):
        raise InputError(f"expected a finite number of seconds >= 0, got {args.max_diff}",
                         argument="--max-diff")
    if args.plot:
        from matplotlib.backend_bases import FigureCanvasBase

        kinds = tuple("." + k for k in FigureCanvasBase.get_supported_filetypes())
        check_output_path(args.plot, "--plot", suffixes=kinds)
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
    # valid JSON only: a statistic that does not exist (e.g. RPE of too few poses) is null
    print(json.dumps(_finite_or_null(out), indent=2, allow_nan=False))
    return 0
