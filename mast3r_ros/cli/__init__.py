"""The ``mast3r-ros`` command line.

Each subcommand lives in its own module of this package and exposes
``add_parser(subparsers)`` (registers its arguments, sets ``func``) and is imported
lazily, so ``mast3r-ros --help`` stays fast and works without torch.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand name -> (module, one-line help). Modules are imported only when needed.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "info": ("mast3r_ros.cli.info", "print versions and what is available (torch, CUDA, ROS)"),
    "match": ("mast3r_ros.cli.match", "match two images (or an infer .npz) with fast reciprocal matching"),
    "bench-match": ("mast3r_ros.cli.bench_match", "time FRM vs dense mutual NN (and PnP solvers) on CPU/GPU"),
    "synth": ("mast3r_ros.cli.synth", "render a synthetic scene into a rosbag2 + groundtruth.tum"),
    "eval": ("mast3r_ros.cli.eval", "ATE/RPE of a TUM trajectory against ground truth, with a plot"),
    "infer": ("mast3r_ros.cli.infer", "run MASt3R on an image pair and write an .npz"),
    "convert": ("mast3r_ros.cli.convert", "convert a MASt3R .pth checkpoint to .safetensors"),
    "bench": ("mast3r_ros.cli.bench", "time the MASt3R encoder and decoder+heads"),
    "align": ("mast3r_ros.cli.align", "sparse global alignment of an image set -> poses.tum, intrinsics.json, cloud.ply"),
}


def build_parser(load: str | None = None) -> argparse.ArgumentParser:
    """Build the parser; only the subcommand ``load`` (if any) has its module imported."""
    parser = argparse.ArgumentParser(
        prog="mast3r-ros",
        description="MASt3R relocalization, matching and SLAM tools (ROS-free).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        if name == load:
            importlib.import_module(module).add_parser(sub)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as exc:
        # e.g. a pip install without torch: say what to install instead of a traceback
        print(f"mast3r-ros {args.command}: error: needs the Python package {exc.name!r}, which is "
              f"not installed (torch: install the CPU or CUDA build you want first; see README)",
              file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        # Bad input ends with a clear message and a non-zero exit, not a traceback.
        logging.getLogger("mast3r_ros").debug("failure", exc_info=True)
        print(f"mast3r-ros {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
