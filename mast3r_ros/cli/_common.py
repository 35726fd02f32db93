"""Pieces shared by the subcommands: image loading, the network engine, the simulator engine."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np


def load_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB, EXIF orientation applied (as the reference loader does)."""
    from PIL import Image, ImageOps

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except OSError as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from None


def engine_from_args(args: argparse.Namespace, paths: Sequence[str], images: Sequence[np.ndarray]):
    """A ``Mast3rEngine`` from ``--checkpoint --device --dtype --size --no-resize``.

    With ``--no-resize`` every image must already have sides that are multiples of 16;
    the error names the file.
    """
    from mast3r_ros.model.engine import Mast3rEngine
    from mast3r_ros.model.preprocess import check_network_size

    if args.no_resize:
        for path, im in zip(paths, images):
            try:
                check_network_size(*im.shape[:2])
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
    return Mast3rEngine.from_checkpoint(args.checkpoint, device=args.device, dtype=args.dtype,
                                        size=args.size, resize=not args.no_resize)


# --------------------------------------------------------------------------- simulator engine

SIM_PROFILES = ("exact", "realistic", "hard")  # = SimulatorProfile values (checked by a test)


def add_simulator_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--sim-noise`` and ``--sim-config`` to a command with a simulator engine.

    The simulator (``mast3r_ros.synth.simulator``) stands in for the network on synthetic
    bags (tests and evaluation only). Read the options back with ``simulator_from_args``.
    """
    g = parser.add_argument_group("network-output simulator (stand-in for the weights, "
                                  "synthetic bags only)")
    g.add_argument("--sim-noise", choices=SIM_PROFILES, default="realistic",
                   help="noise profile of the simulator: exact (none), realistic (published "
                        "error sizes, the default), hard (about twice, plus descriptor aliasing)")
    g.add_argument("--sim-config", metavar="FILE.json", default=None,
                   help="JSON object of SimulatorConfig fields applied on top of --sim-noise "
                        "(e.g. {\"scale_jitter\": 0.1, \"seed\": 3}); unknown keys are errors")


def simulator_config_from_args(args: argparse.Namespace):
    """The ``SimulatorConfig`` of ``--sim-noise`` / ``--sim-config`` (ValueError or
    FileNotFoundError naming the file on bad input)."""
    from mast3r_ros.synth.simulator import simulator_config_from

    return simulator_config_from(getattr(args, "sim_noise", "realistic"),
                                 getattr(args, "sim_config", None))


def simulator_from_args(args: argparse.Namespace, bag, *, device: str = "cpu"):
    """A ``NetworkOutputSimulator`` over ``bag`` (a synthetic bag folder, or an in-memory
    ``SyntheticSequence``) configured by ``--sim-noise`` / ``--sim-config``."""
    from mast3r_ros.synth.sequence import SyntheticSequence
    from mast3r_ros.synth.simulator import NetworkOutputSimulator

    config = simulator_config_from_args(args)
    if isinstance(bag, SyntheticSequence):
        return NetworkOutputSimulator(bag, config, device)
    return NetworkOutputSimulator.from_bag(bag, config, device)
