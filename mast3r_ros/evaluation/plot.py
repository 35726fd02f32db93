"""A trajectory figure a person can read: top view, side view, ATE over time."""
from __future__ import annotations

from pathlib import Path

from .metrics import ATEResult, RPEResult


def plot_trajectories(result: ATEResult, path: str | Path, rpe: RPEResult | None = None,
                      title: str = "") -> Path:
    """Write a PNG: x-y (top) and x-z (side) views of ground truth and the aligned
    estimate with error segments, and the ATE (and RPE) over time. Uses the Agg canvas
    directly, so it never touches the global matplotlib backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    g, e = result.pair.gt.positions, result.pair.est.positions
    t = result.pair.gt.stamps - result.pair.gt.stamps[0]
    fig = Figure(figsize=(13, 9), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    for ax, (a, b), names in ((axes[0, 0], (0, 1), ("x", "y")), (axes[0, 1], (0, 2), ("x", "z"))):
        for k in range(0, len(g), max(1, len(g) // 60)):
            ax.plot([g[k, a], e[k, a]], [g[k, b], e[k, b]], color="tab:red", lw=0.6, alpha=0.6)
        ax.plot(g[:, a], g[:, b], "-", color="black", lw=2, label="ground truth")
        ax.plot(e[:, a], e[:, b], "-", color="tab:blue", lw=1.5, label="estimate (aligned)")
        ax.plot(g[0, a], g[0, b], "o", color="tab:green", ms=9, label="start")
        ax.plot(g[-1, a], g[-1, b], "s", color="tab:orange", ms=8, label="end")
        ax.set_xlabel(f"{names[0]} [m]")
        ax.set_ylabel(f"{names[1]} [m]")
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(True, alpha=0.3)
        ax.set_title(f"{'top' if b == 1 else 'side'} view ({names[0]}-{names[1]}); "
                     "red: error vectors")
    axes[0, 0].legend(loc="best", fontsize=9)
    ax = axes[1, 0]
    ax.plot(t, result.errors, color="tab:red")
    ax.axhline(result.stats.rmse, color="gray", ls="--", label=f"RMSE {result.stats.rmse:.4f} m")
    ax.set_xlabel("time [s]")
    ax.set_ylabel("ATE [m]")
    ax.set_title("absolute trajectory error")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    ax = axes[1, 1]
    if rpe is not None and rpe.trans_errors.size:
        tt = t[: rpe.trans_errors.size * rpe.delta: rpe.delta][: rpe.trans_errors.size]
        ax.plot(tt, rpe.trans_errors, color="tab:purple", label="translation [m]")
        ax2 = ax.twinx()
        ax2.plot(tt, rpe.rot_errors_deg, color="tab:olive", label="rotation [deg]")
        ax2.set_ylabel("RPE rotation [deg]", color="tab:olive")
        ax.set_ylabel("RPE translation [m]", color="tab:purple")
        ax.set_title(f"relative pose error (delta {rpe.delta} frame(s))")
    else:
        ax.axis("off")
    ax.set_xlabel("time [s]")
    ax.grid(True, alpha=0.3)
    pair = result.pair
    fig.suptitle((title + "\n" if title else "")
                 + f"alignment {pair.alignment.value}, scale {pair.scale:.4f}, "
                   f"{len(pair.gt)} associated poses, ATE RMSE {result.stats.rmse:.4f} m")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
