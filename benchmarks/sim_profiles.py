"""Print the measured statistics of each simulator profile as a Markdown table.

    python benchmarks/sim_profiles.py [--frames 12] [--width 256] [--height 192] [--seed 3]

What is measured is what ``test/test_synth_simulator_profiles.py`` checks (see
``mast3r_ros.synth.simulator_stats``): per-pair scale, fitted smooth depth distortion
(RMS, wavelength), AbsRel after the per-pair scale, implied focal (``estimate_focal``)
and wrong best descriptor matches on aliasing texture, all against ground truth.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--scene", default="room")
    args = ap.parse_args()

    import torch

    from mast3r_ros.synth.sequence import SynthConfig, generate
    from mast3r_ros.synth.simulator import SimulatorConfig, SimulatorProfile
    from mast3r_ros.synth.simulator_stats import measure

    torch.set_num_threads(1)
    seq = generate(SynthConfig(scene=args.scene, trajectory="walk", frames=args.frames,
                               width=args.width, height=args.height, seed=args.seed))
    n = args.frames
    pairs = [(i, j) for i in range(n) for j in range(n) if 0 < abs(i - j) <= 3]
    alias_pairs = [(i, i + 3) for i in range(0, n - 3, 2)]
    print(f"load average {os.getloadavg()[0]:.1f}; {args.scene} walk seed {args.seed}, "
          f"{args.width}x{args.height}, {len(pairs)} pairs, {len(alias_pairs)} aliasing pairs")
    print("| profile | scale log-std (cfg) | median abs scale err | distortion RMS (cfg) "
          "| distortion wavelength (cfg) | AbsRel | focal log-std (cfg) "
          "| wrong best match: aliasing / other | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for p in SimulatorProfile:
        cfg = SimulatorConfig.profile(p, size=max(args.width, args.height))
        t0 = time.perf_counter()
        st = measure(seq, cfg, pairs, alias_pairs)
        dt = time.perf_counter() - t0
        lam = "-" if st.distortion_rms < 1e-9 else f"{st.distortion_wavelength:.2f}"
        wa = "-" if np.isnan(st.alias_wrong_fraction) else f"{100 * st.alias_wrong_fraction:.0f} %"
        print(f"| {p.value} | {st.scale_log_std:.3f} ({cfg.scale_jitter:g}) "
              f"| {100 * st.scale_median_error:.1f} % "
              f"| {st.distortion_rms:.3f} ({cfg.depth_distortion:g}) "
              f"| {lam} ({cfg.depth_distortion_wavelength:g}) "
              f"| {100 * st.abs_rel:.1f} % "
              f"| {st.focal_log_std:.3f} ({cfg.focal_error:g}) "
              f"| {wa} / {100 * st.other_wrong_fraction:.1f} % | {dt:.0f} |", flush=True)


if __name__ == "__main__":
    main()
