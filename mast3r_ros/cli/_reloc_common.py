"""Pieces shared by ``relocalize`` and ``reloc-eval``: engine choice and simulator profile."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def add_engine_args(p: argparse.ArgumentParser, *, bag_flag: str) -> None:
    p.add_argument("--engine", choices=("network", "simulator"), default="network",
                   help="network (needs --checkpoint) or simulator (tests/evaluation only: "
                        f"outputs from the ground truth of {bag_flag})")
    p.add_argument("--checkpoint", help="MASt3R .pth or .safetensors checkpoint (network engine)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", default="float32", help="trunk dtype (float32, bfloat16, float16)")
    p.add_argument("--size", type=int, default=None,
                   help="network long side (default 512; simulator: min(512, image long side))")
    p.add_argument("--sim-noise", default="realistic",
                   help="simulator noise profile: exact, moderate, realistic, hard")
    p.add_argument("--sim-config", help="JSON file of SimulatorConfig overrides on top of --sim-noise")
    p.add_argument("--reloc-config", help="JSON file of RelocConfig overrides")


def sim_config(args: argparse.Namespace, image_long_side: int):
    """``SimulatorConfig`` of ``--sim-noise`` (+ ``--sim-config`` overrides, + size)."""
    from mast3r_ros.synth.simulator import SimulatorConfig

    name = str(args.sim_noise)
    make = getattr(SimulatorConfig, name, None) if not name.startswith("_") else None
    if name in ("from_dict",) or not callable(make):
        raise ValueError(f"--sim-noise {name!r} is not a simulator profile of this build; "
                         "choose exact, realistic (or hard where available)")
    overrides = {}
    if args.sim_config:
        overrides = read_json_object(args.sim_config, "--sim-config")
    if "size" not in overrides:
        overrides["size"] = args.size or min(512, (int(image_long_side) + 15) // 16 * 16)
    return make(**overrides)


def read_json_object(path: str, flag: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{flag} file not found: {p}")
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{flag} {p}: bad JSON ({exc})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{flag} {p}: expected a JSON object of settings, got {type(d).__name__}")
    return d


def reloc_config(args: argparse.Namespace):
    from mast3r_ros.reloc import RelocConfig

    if not args.reloc_config:
        return RelocConfig()
    return RelocConfig.from_dict(read_json_object(args.reloc_config, "--reloc-config"))


def network_engine(args: argparse.Namespace):
    from mast3r_ros.model.engine import Mast3rEngine

    if not args.checkpoint:
        raise ValueError("--engine network needs --checkpoint CKPT (or use --engine simulator "
                         "with a synthetic bag, for tests)")
    if not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint not found: {args.checkpoint}")
    return Mast3rEngine.from_checkpoint(args.checkpoint, device=args.device, dtype=args.dtype,
                                        size=args.size or 512)


def parse_floats(text: str, n: int, flag: str, what: str) -> np.ndarray:
    parts = str(text).replace(",", " ").split()
    try:
        vals = np.array([float(p) for p in parts], dtype=np.float64)
    except ValueError:
        raise ValueError(f"{flag} must be {n} numbers \"{what}\", got {text!r}") from None
    if len(vals) != n or not np.all(np.isfinite(vals)):
        raise ValueError(f"{flag} must be {n} finite numbers \"{what}\", got {text!r}")
    return vals
