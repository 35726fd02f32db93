"""``mast3r-ros bench``: time the encoder and decoder+heads of a MASt3R config.

Prints one JSON object: encoder ms per image, decoder, heads and decoder+heads ms per pair
(from cached encoder features), fast reciprocal matching and the tracker's local matcher ms
on the pair's outputs,
pairs/s (two fresh images encoded + decoded, and decode-only), peak memory (CUDA: max
allocated; CPU: the process's peak RSS), min / median / max of every timing, the thread
count and the load average before and after (with a warning on a busy machine). ViT-L needs
no weights: ``--config vitl`` builds it with random values. On CUDA: ``--device cuda
--dtype bfloat16 [--compile] [--tf32]``; attention runs through SDPA (flash / memory-efficient
kernels where the GPU has them) and nothing synchronises with the host inside a pair.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time the MASt3R encoder and decoder+heads",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="tiny",
                   help="'tiny' (public fixture size), 'vitl' (official size, random weights), "
                        "or a checkpoint path (.pth / .safetensors)")
    p.add_argument("--height", type=int, default=384, help="input height, multiple of 16")
    p.add_argument("--width", type=int, default=512, help="input width, multiple of 16")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", default="float32", help="trunk dtype: float32, bfloat16, float16")
    p.add_argument("--tf32", action="store_true", help="allow TF32 on CUDA")
    p.add_argument("--batch", type=int, default=1, help="images per encoder call and pairs per decoder call")
    p.add_argument("--iters", type=int, default=5, help="timed iterations (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile encoder, decoder and heads for the fixed input shape "
                        "(CPU inductor or CUDA; the first call compiles, minutes for ViT-L)")
    p.add_argument("--no-frm", action="store_true", help="skip timing fast reciprocal matching and the local matcher")
    p.set_defaults(func=run)


def random_model(cfg, device, seed: int = 0):
    """A ``Mast3rNet`` with small random weights, built without a default init pass."""
    import torch

    from mast3r_ros.model.network import Mast3rNet

    with torch.device("meta"):
        model = Mast3rNet(cfg)
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and name.endswith(".weight"):
                p.fill_(1.0)
            elif p.ndim == 1:
                p.zero_()
            else:
                p.normal_(0.0, 0.02, generator=gen)
    return model.eval().requires_grad_(False)


def build_engine(args: argparse.Namespace):
    from mast3r_ros.model.engine import Mast3rEngine, resolve_device
    from mast3r_ros.model.network import Mast3rConfig

    device = resolve_device(args.device)
    if args.config in ("tiny", "vitl"):
        cfg = Mast3rConfig.tiny() if args.config == "tiny" else Mast3rConfig()
        model = random_model(cfg, device)
    else:
        if not Path(args.config).is_file():
            raise FileNotFoundError(f"--config {args.config!r} is neither 'tiny', 'vitl' nor a checkpoint file")
        from mast3r_ros.model.checkpoint import load_model

        model = load_model(args.config, device=device)
    return Mast3rEngine(model, device=device, dtype=args.dtype, tf32=args.tf32,
                        max_batch=args.batch, resize=False, compile=args.compile)


def run(args: argparse.Namespace) -> int:
    import torch

    from mast3r_ros.benchmarking import MachineState, time_fn
    from mast3r_ros.model.preprocess import check_network_size

    from mast3r_ros.errors import LimitError
    from mast3r_ros.limits import check_network_input

    check_network_size(args.height, args.width)
    check_network_input(args.height, args.width, "--height x --width")
    if args.batch < 1 or args.iters < 1 or args.warmup < 0:
        raise ValueError("--batch and --iters must be >= 1, --warmup >= 0")
    if args.batch > 64 or args.iters > 10_000 or args.warmup > 1_000:
        raise LimitError(f"expected --batch <= 64, --iters <= 10000, --warmup <= 1000, got "
                         f"{args.batch}, {args.iters}, {args.warmup}")
    if args.threads is not None and not 1 <= args.threads <= 1024:
        raise ValueError(f"--threads must be in [1, 1024], got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = MachineState.now()
    engine = build_engine(args)
    dev = engine.device
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else None
    gen = torch.Generator().manual_seed(0)
    imgs = [torch.rand(1, 3, args.height, args.width, generator=gen) * 2 - 1 for _ in range(2 * args.batch)]
    imgs = [im.to(dev) for im in imgs]
    views = engine.encode_tensors(imgs, [None] * len(imgs), [None] * len(imgs))
    pairs = [(views[2 * i], views[2 * i + 1]) for i in range(args.batch)]
    hw = (args.height // 16, args.width // 16)
    enc1 = torch.cat([p[0].features.tokens for p in pairs])
    enc2 = torch.cat([p[1].features.tokens for p in pairs])
    model = engine.model

    def decoder():
        with torch.inference_mode():
            return engine._decode_fn(enc1, enc2, hw, hw)

    dec1, dec2 = decoder()

    def heads():
        with torch.inference_mode():
            return engine._heads_fn(enc1, enc2, dec1, dec2, hw, hw)

    from mast3r_ros.cli._common import progress

    def bar(name):
        return lambda r: progress(r, desc=name, unit="run")

    t = {}
    t["encoder"] = time_fn(lambda: engine.encode_tensors(imgs[:args.batch], [None] * args.batch,
                                                         [None] * args.batch),
                           runs=args.iters, warmup=args.warmup, sync=sync, iterate=bar("encoder"))
    t["decoder"] = time_fn(decoder, runs=args.iters, warmup=args.warmup, sync=sync, iterate=bar("decoder"))
    t["heads"] = time_fn(heads, runs=args.iters, warmup=args.warmup, sync=sync, iterate=bar("heads"))
    t["decoder_heads"] = time_fn(lambda: engine.decode_batch(pairs), runs=args.iters,
                                 warmup=args.warmup, sync=sync, iterate=bar("decoder+heads"))
    pred = engine.decode_batch(pairs[:1])[0]
    if not args.no_frm:
        from mast3r_ros.matching.frm import match_prediction

        t["frm"] = time_fn(lambda: match_prediction(pred),
                           runs=args.iters, warmup=args.warmup, sync=sync, iterate=bar("FRM"))
    if not args.no_frm:
        # the tracker's local matcher on the same pair (frame = view 2 into keyframe = view 1);
        # its cost is fixed per seed, so a nominal K serves random weights as well as real ones
        import numpy as np

        from mast3r_ros.slam.local_match import local_match

        h_net, w_net = pred.view1.desc.shape[:2]
        K_net = np.array([[max(h_net, w_net), 0, (w_net - 1) / 2], [0, max(h_net, w_net), (h_net - 1) / 2],
                          [0, 0, 1.0]])
        t["tracking_match"] = time_fn(
            lambda: local_match(pred.view2.desc, pred.view1.desc, pred.view2.pts3d, K_net),
            runs=args.iters, warmup=args.warmup, sync=sync, iterate=bar("local matcher"))
    machine.finish()
    per = {k: v.median_ms / (1 if k in ("frm", "tracking_match") else args.batch) for k, v in t.items()}
    enc_ms, dec_ms = per["encoder"], per["decoder_heads"]
    if dev.type == "cuda":
        peak = {"peak_cuda_memory_mb": round(torch.cuda.max_memory_allocated(dev) / 2**20, 1),
                "device_name": torch.cuda.get_device_name(dev)}
    else:
        peak = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "device_name": machine.cpu}
    del model
    report = {
        "config": args.config, "device": str(dev), "dtype": str(engine.dtype).replace("torch.", ""),
        "compiled": engine.compiled, "height": args.height, "width": args.width,
        "batch": args.batch, "iters": args.iters, "threads": torch.get_num_threads(),
        "encoder_ms_per_image": round(enc_ms, 3),
        "decoder_ms_per_pair": round(per["decoder"], 3),
        "heads_ms_per_pair": round(per["heads"], 3),
        "decoder_heads_ms_per_pair": round(dec_ms, 3),
        **({"frm_ms": round(per["frm"], 3)} if "frm" in per else {}),
        **({"tracking_match_ms": round(per["tracking_match"], 3)} if "tracking_match" in per else {}),
        "pairs_per_s": round(1e3 / (2 * enc_ms + dec_ms), 3),
        "cached_pairs_per_s": round(1e3 / dec_ms, 3),
        "timings": {k: v.summary() for k, v in t.items()},
        "machine": machine.report(),
        **peak,
    }
    print(json.dumps(report, indent=2))
    machine.warn_if_busy(lambda m: print(m, file=sys.stderr))
    return 0
