"""``mast3r-ros convert``: official ``.pth`` checkpoint -> ``.safetensors`` (no pickle at load)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a MASt3R .pth checkpoint to .safetensors",
                       description="Read a .pth checkpoint safely (weights_only, argparse.Namespace "
                                   "only) and write its weights as .safetensors, with the config in "
                                   "the file's metadata (alias keys dropped, recorded in metadata).")
    p.add_argument("src", help="input .pth (or .safetensors) checkpoint")
    p.add_argument("dst", help="output .safetensors")
    p.add_argument("--force", action="store_true", help="overwrite dst if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mast3r_ros.model.checkpoint import build_model, read_checkpoint, save_safetensors

    from mast3r_ros.cli._common import check_output_path
    from mast3r_ros.errors import OutputPathError

    dst = Path(args.dst)
    if dst.suffix != ".safetensors":
        raise OutputPathError(f"output {dst} must end in .safetensors", argument="DST")
    if dst.exists() and not args.force:
        raise OutputPathError(f"output {dst} exists; pass --force to overwrite", argument="DST")
    check_output_path(dst, "DST")
    ckpt = read_checkpoint(args.src)
    build_model(ckpt)  # strict key/shape check before writing anything
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(ckpt, dst)
    logger.info("wrote %s (%d tensors, config %s)", dst, len(ckpt.state_dict), ckpt.config)
    return 0
