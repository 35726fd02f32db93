"""The heads alone, channels-last (today) against NCHW (before issue 13), interleaved.

Same random weights and the same cached encoder/decoder tokens for both; the NCHW variant
hands every head convolution a contiguous NCHW input through pre-hooks, which is what the
old ``transpose(1, 2).unflatten(2, (h, w))`` token-to-image step amounted to. Prints the
median (min-max) ms per pair of heads and the ratio, with the machine's load.

    python benchmarks/bench_heads.py --config vitl --height 384 --width 512 --rounds 5
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from mast3r_ros.benchmarking import MachineState, interleaved, ratio
from mast3r_ros.cli.bench import random_model
from mast3r_ros.model.network import Mast3rConfig

sys.path.insert(0, __file__.rsplit("/", 1)[0])  # benchmarks/ beside this file
from bench_network_modes import force_nchw_heads  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=("tiny", "vitl"), default="vitl")
    ap.add_argument("--height", type=int, default=384)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = Mast3rConfig.tiny() if args.config == "tiny" else Mast3rConfig()
    machine = MachineState.now()
    nhwc = random_model(cfg, torch.device("cpu"), seed=0)
    nchw = random_model(cfg, torch.device("cpu"), seed=0)
    force_nchw_heads(nchw)
    hw = (args.height // 16, args.width // 16)
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        imgs = torch.rand(2, 3, args.height, args.width, generator=gen) * 2 - 1
        enc1, enc2 = nhwc.encode(imgs).chunk(2)
        dec1, dec2 = nhwc.decode(enc1, enc2, hw, hw)

    def heads(model):
        with torch.inference_mode():
            return model.heads(enc1, enc2, dec1, dec2, hw, hw)

    a, b = heads(nchw), heads(nhwc)
    err = max(float((a[0] - b[0]).abs().max()), float((a[1] - b[1]).abs().max()))
    t_nchw, t_nhwc = interleaved([lambda: heads(nchw), lambda: heads(nhwc)], rounds=args.rounds, warmup=0)
    machine.finish()
    report = {"config": args.config, "height": args.height, "width": args.width,
              "threads": torch.get_num_threads(), "rounds": args.rounds,
              "heads_nchw_ms": t_nchw.summary(), "heads_channels_last_ms": t_nhwc.summary(),
              "speedup": round(ratio(t_nchw, t_nhwc), 3), "max_abs_diff": err,
              "machine": machine.report()}
    print(json.dumps(report, indent=2))
    machine.warn_if_busy(lambda s: print(s, file=sys.stderr))
    return 0


if __name__ == "__main__":
    sys.exit(main())
