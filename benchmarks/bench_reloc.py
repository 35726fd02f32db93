"""Relocalization timings on CPU: per-query split (encode, decode, match, pose) with the
network-output simulator and the tiny network, and retrieval over 10 / 100 / 1000 references.
Optionally (--scale-study) the accuracy of single-reference vs fused answers when the
network's metric scale errs (the simulator's per-pair scale jitter).

    python benchmarks/bench_reloc.py [--queries 5] [--threads 1] [--scale-study]

Prints markdown tables and the load average (figures on a shared machine are noisy; the
ratios between rows measured in one run are the meaningful part).
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TINY = REPO.parent / "shared" / "mast3r_reference" / "public"


def med(rows, key):
    return float(np.median([r[key] for r in rows]))


def sim_world(angle, w, n_map, n_query, seed, scale_jitter=None):
    from mast3r_ros.synth.render import pinhole_K
    from mast3r_ros.synth.scene import make_scene
    from mast3r_ros.synth.sequence import render_sequence
    from mast3r_ros.synth.simulator import NetworkOutputSimulator, SimulatorConfig
    from mast3r_ros.synth.trajectory import relocalization_views

    h = w * 3 // 4
    scene = make_scene("cluttered", seed)
    vs = relocalization_views(scene, angle, n_map, n_query, seed=seed)
    seq = render_sequence(scene, np.concatenate([vs.map_poses, vs.query_poses]), pinhole_K(w, h), w, h, 10.0)
    over = {} if scale_jitter is None else {"scale_jitter": scale_jitter}
    return seq, NetworkOutputSimulator(seq, SimulatorConfig.realistic(size=w, **over))


def stage_rows(rl, queries, known=True, ref_id=None):
    rows = []
    for f in queries:
        r = rl.relocalize(f.rgb, f.K if known else None, ref_id, frame_id=f.frame_id)
        rows.append(r.timings_ms)
    return rows


def print_stage_table(title_rows):
    print("| engine | input | mode | encode | retrieval | decode | match | pose | total ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, size, mode, rows in title_rows:
        print(f"| {name} | {size} | {mode} | " + " | ".join(
            f"{med(rows, k):.1f}" for k in ("encode", "retrieval", "decode", "match", "pose", "total")) + " |")


def tiny_rows(args):
    from PIL import Image

    from mast3r_ros.model.engine import Mast3rEngine
    from mast3r_ros.reloc import RelocConfig, Relocalizer

    # the tiny random-weight network predicts no geometry: open the checks so the whole
    # success path (all solvers) runs, as test_reloc_network.py does
    open_cfg = RelocConfig(subsample=1, border=0, min_matches=5, min_inliers=5, min_inlier_ratio=0.0,
                           pnp_reprojection_px=1e3, epipolar_px=1e3, max_rotation_disagreement_deg=180,
                           max_direction_disagreement_deg=180)
    ims = [np.asarray(Image.open(TINY / "images" / f"pair0_view{v}.png").convert("RGB")) for v in (1, 2)]
    out = []
    for size, cfg in ((64, open_cfg), (256, RelocConfig(subsample=8, **{k: getattr(open_cfg, k) for k in (
            "min_matches", "min_inliers", "min_inlier_ratio", "pnp_reprojection_px", "epipolar_px",
            "max_rotation_disagreement_deg", "max_direction_disagreement_deg")}))):
        eng = Mast3rEngine.from_checkpoint(TINY / "mast3r_tiny_public.pth", device="cpu", size=size)
        rl = Relocalizer(eng, cfg)
        rl.add_reference(ims[0], np.eye(4), None, "r")
        K = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
        rl.relocalize(ims[1], K, "r")  # warm-up
        h, w = eng.preprocess(ims[1])[1].network_size
        for mode, KK in (("1 ref, K known", K), ("1 ref, K estimated", None)):
            rows = [rl.relocalize(ims[1], KK, "r").timings_ms for _ in range(args.queries)]
            out.append(("tiny network", f"{w}x{h}", mode, rows))
    return out


def retrieval_rows(args):
    from mast3r_ros.reloc.store import Reference, ReferenceStore

    rng = np.random.default_rng(0)
    print("\n| references | D=48 (tiny) | D=280 (simulator) | D=1024 (ViT-L) |  ms per search (median of 200) |")
    print("|---|---|---|---|---|")
    for n in (10, 100, 1000):
        cells = []
        for d in (48, 280, 1024):
            st = ReferenceStore()
            for i in range(n):
                g = rng.normal(size=d).astype(np.float32)
                st.add(Reference(f"r{i}", np.zeros((1, 1, 3), np.uint8), None, np.eye(4), None, g / np.linalg.norm(g)))
            q = rng.normal(size=d).astype(np.float32)
            st.search(q, 5)
            ts = []
            for _ in range(200):
                t = time.perf_counter()
                st.search(q, 5)
                ts.append((time.perf_counter() - t) * 1e3)
            cells.append(f"{np.median(ts):.3f}")
        print(f"| {n} | " + " | ".join(cells) + " | |")


def scale_study(args):
    """Single reference vs retrieval + fusion when the per-pair scale jitters."""
    from mast3r_ros.geometry import rotation_angle_deg
    from mast3r_ros.reloc import RelocConfig, Relocalizer

    print("\n| scale jitter (median error) | angle | mapping views | mode | within 0.25 m / 2 deg | median m | median deg |")
    print("|---|---|---|---|---|---|---|")
    for jit in (0.02, 0.18):
        for angle in (30, 90, 180):
            for n_map, spread in ((3, "3 views, +-10 deg"),):
                seq, sim = sim_world(angle, 160, n_map, args.study_queries, 20 + angle, scale_jitter=jit)
                rl = Relocalizer(sim, RelocConfig(subsample=4, top_k=3, scale_sigma=max(0.1, 1.5 * jit)))
                for f in seq.frames[:n_map]:
                    rl.add_reference(f.rgb, f.T_world_cam, f.K, f"m{f.index}", frame_id=f.frame_id)
                for mode, rid in (("1 reference", f"m{n_map // 2}"), ("top-3 + fusion", None)):
                    te, re = [], []
                    for f in seq.frames[n_map:]:
                        r = rl.relocalize(f.rgb, f.K, rid, frame_id=f.frame_id)
                        if r.success:
                            te.append(np.linalg.norm(r.T_map_cam[:3, 3] - f.T_world_cam[:3, 3]))
                            re.append(rotation_angle_deg(r.T_map_cam[:3, :3], f.T_world_cam[:3, :3]))
                        else:
                            te.append(np.inf)
                            re.append(np.inf)
                    te, re = np.array(te), np.array(re)
                    print(f"| {jit} ({100 * (np.exp(0.6745 * jit) - 1):.0f} %) | {angle} | {spread} | {mode} | "
                          f"{np.mean((te <= 0.25) & (re <= 2)):.0%} | {np.median(te):.3f} | {np.median(re):.2f} |",
                          flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--scale-study", action="store_true")
    p.add_argument("--study-queries", type=int, default=10)
    p.add_argument("--skip-timing", action="store_true")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__} ({args.threads} thread(s)); load average before: "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if not args.skip_timing:
        rows = []
        from mast3r_ros.reloc import RelocConfig, Relocalizer  # noqa: F401

        for w in (160, 320):
            seq, sim = sim_world(30, w, 3, args.queries, 3)
            rl = Relocalizer(sim, RelocConfig(subsample=4 if w <= 160 else 8, top_k=3))
            for f in seq.frames[:3]:
                rl.add_reference(f.rgb, f.T_world_cam, f.K, f"m{f.index}", frame_id=f.frame_id)
            qs = seq.frames[3:]
            stage_rows(rl, qs[:1])  # warm-up
            rows.append(("simulator", f"{w}x{w * 3 // 4}", "1 ref, K known", stage_rows(rl, qs, True, "m1")))
            rows.append(("simulator", f"{w}x{w * 3 // 4}", "1 ref, K estimated", stage_rows(rl, qs, False, "m1")))
            rows.append(("simulator", f"{w}x{w * 3 // 4}", "top-3 + fusion, K known", stage_rows(rl, qs, True)))
        if (TINY / "mast3r_tiny_public.pth").is_file():
            rows += tiny_rows(args)
        print()
        print_stage_table(rows)
        retrieval_rows(args)
    if args.scale_study:
        scale_study(args)
    print(f"\nload average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
