"""The network's execution modes side by side: speed ratio and output error against float32.

Modes (same random weights, built with the same seed; ViT-L needs no checkpoint):
  nchw      float32, heads forced to NCHW (the layout before issue 13: the baseline)
  f32       float32, heads channels-last by design (today's default)
  bf16      bfloat16 trunk (encoder + decoders), float32 heads
  compile   float32 + torch.compile (inductor) for the fixed input shape

Every round times one fresh pair (two images encoded + the pair decoded) per mode, the modes
interleaved so load changes hit all alike; the headline is each mode's ratio against ``nchw``
measured in the same run (median over median, and min over min: on a busy machine the minimum
is the least disturbed run). Errors against ``f32``: pts3d as max |a - b| over the view's
median depth (a per-pixel relative error explodes where random weights predict z ~ 0),
conf relative, desc absolute. ``--rounds 0`` measures the errors only. Prints JSON and a
markdown row per mode.

    python benchmarks/bench_network_modes.py --config vitl --height 384 --width 512 --rounds 3
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from mast3r_ros.benchmarking import MachineState, interleaved, ratio
from mast3r_ros.cli.bench import random_model
from mast3r_ros.model.engine import Mast3rEngine
from mast3r_ros.model.network import Mast3rConfig

HEAD_TYPES = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Upsample)


def force_nchw_heads(model: torch.nn.Module) -> None:
    """Pre-hooks that hand every head convolution a contiguous NCHW input."""
    for name, mod in model.named_modules():
        if name.startswith("downstream_head") and isinstance(mod, HEAD_TYPES):
            mod.register_forward_pre_hook(lambda m, inp: (inp[0].contiguous(),) + tuple(inp[1:]))


def build(mode: str, cfg: Mast3rConfig) -> Mast3rEngine:
    model = random_model(cfg, torch.device("cpu"), seed=0)
    if mode == "nchw":
        force_nchw_heads(model)
    dtype = "bfloat16" if mode == "bf16" else "float32"
    return Mast3rEngine(model, device="cpu", dtype=dtype, resize=False, compile=(mode == "compile"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=("tiny", "vitl"), default="vitl")
    ap.add_argument("--height", type=int, default=384)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per mode; 0 = output errors only")
    ap.add_argument("--modes", default="nchw,f32,bf16", help="comma-separated subset of nchw,f32,bf16,compile")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = args.modes.split(",")
    if modes[0] != "nchw" or any(m not in ("nchw", "f32", "bf16", "compile") for m in modes):
        ap.error("--modes must start with nchw (the baseline) and name only nchw,f32,bf16,compile")
    cfg = Mast3rConfig.tiny() if args.config == "tiny" else Mast3rConfig()
    machine = MachineState.now()
    engines = {m: build(m, cfg) for m in modes}
    gen = torch.Generator().manual_seed(0)
    imgs = [torch.rand(1, 3, args.height, args.width, generator=gen) * 2 - 1 for _ in range(2)]

    def pair(engine: Mast3rEngine):
        v = engine.encode_tensors(imgs, [None, None], [None, None])
        return engine.decode(*v)

    outs = {m: pair(e) for m, e in engines.items()}  # warm-up (and compilation) + outputs
    timings = (dict(zip(modes, interleaved([lambda e=e: pair(e) for e in engines.values()],
                                           rounds=args.rounds, warmup=0)))
               if args.rounds > 0 else {})
    machine.finish()
    ref = outs.get("f32", outs["nchw"])
    rows = {}
    for m in modes:
        o = outs[m]
        err = {
            "pts3d_rel_median_depth": float(max(
                (a.pts3d.float() - b.pts3d).norm(dim=-1).max() / b.pts3d[..., 2].abs().median().clamp(min=1e-9)
                for a, b in ((o.view1, ref.view1), (o.view2, ref.view2)))),
            "pts3d_median_rel_median_depth": float(max(
                (a.pts3d.float() - b.pts3d).norm(dim=-1).median() / b.pts3d[..., 2].abs().median().clamp(min=1e-9)
                for a, b in ((o.view1, ref.view1), (o.view2, ref.view2)))),
            "conf_rel": float(((o.view1.conf - ref.view1.conf).abs() / ref.view1.conf).max()),
            "desc_abs": float(max((o.view1.desc - ref.view1.desc).abs().max(),
                                  (o.view2.desc - ref.view2.desc).abs().max())),
        }
        rows[m] = {"max_error_vs_f32": err}
        if timings:
            rows[m].update(pair_ms=timings[m].summary(),
                           speedup_vs_nchw=round(ratio(timings["nchw"], timings[m]), 3),
                           speedup_vs_nchw_min=round(timings["nchw"].min_ms / timings[m].min_ms, 3))
    report = {"config": args.config, "height": args.height, "width": args.width,
              "rounds": args.rounds, "threads": torch.get_num_threads(), "modes": rows,
              "machine": machine.report()}
    print(json.dumps(report, indent=2))
    for m, r in rows.items():
        e = r["max_error_vs_f32"]
        t = (f"{r['pair_ms']['median_ms']:.0f} ({r['pair_ms']['min_ms']:.0f}-{r['pair_ms']['max_ms']:.0f}) | "
             f"{r['speedup_vs_nchw']:.2f}x / {r['speedup_vs_nchw_min']:.2f}x" if timings else "- | -")
        print(f"| {args.config} | {args.height}x{args.width} | {m} | {t} | "
              f"{e['pts3d_rel_median_depth']:.1e} (median {e['pts3d_median_rel_median_depth']:.1e}) | {e['conf_rel']:.1e} | {e['desc_abs']:.1e} |")
    machine.warn_if_busy(lambda s: print(s, file=sys.stderr))
    return 0


if __name__ == "__main__":
    sys.exit(main())
