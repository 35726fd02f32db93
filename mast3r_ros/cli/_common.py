"""Pieces shared by the subcommands: image loading, the network and simulator engines from
flags, output-path checks, progress bars."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Iterable, Sequence, TypeVar

import numpy as np

T = TypeVar("T")


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", file=None) -> Iterable[T]:
    """A tqdm progress bar (count, rate and ETA on stderr) for a long CLI loop.

    Shown only when stderr is a terminal, so logs and pipes stay clean; ``MAST3R_PROGRESS=1``
    forces it on, ``=0`` off. Without tqdm installed the iterable is returned unchanged.
    Use as ``for x in progress(items, desc="render", unit="frame")``, or with ``iterable=None``
    as a manual bar (``bar.update(n)``; ``with progress(total=3) as bar``).
    """
    try:
        from tqdm import tqdm
    except ModuleNotFoundError:  # tqdm is a dependency, but keep the CLI usable without it
        return _NoBar(iterable)
    force = os.environ.get("MAST3R_PROGRESS", "")
    disable = {"1": False, "0": True}.get(force)  # None: tqdm decides (off when not a TTY)
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=file or sys.stderr,
                disable=disable, dynamic_ncols=True, leave=True)


class _NoBar:
    def __init__(self, iterable):
        self._it = iterable

    def __iter__(self):
        return iter(self._it)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass


def check_output_path(path: str | Path, flag: str = "--out", *, suffixes: Sequence[str] = (),
                      is_dir: bool = False) -> Path:
    """Check, before any work, that ``path`` can be written; returns it as a Path.

    Raises ValueError naming ``flag`` when a parent is a regular file, the path is a folder
    where a file is expected (or a file where a folder is), the suffix is not one of
    ``suffixes``, or the nearest existing parent is not writable.
    """
    p = Path(path)
    if suffixes and p.suffix.lower() not in suffixes:
        raise ValueError(f"{flag} {p}: expected a {' or '.join(suffixes)} file name, "
                         f"got suffix {p.suffix or '(none)'!r}")
    if p.exists() and not is_dir and p.is_dir():
        raise ValueError(f"{flag} {p} is a folder; give a file name")
    if p.exists() and is_dir and not p.is_dir():
        raise ValueError(f"{flag} {p} is a file; give a folder")
    existing = next(q for q in [p.parent, *p.parent.parents] if q.exists())
    if not existing.is_dir():
        raise ValueError(f"{flag} {p}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise ValueError(f"{flag} {p}: cannot write in {existing} (permission denied)")
    return p


def save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """Write ``arrays`` to exactly ``path`` (``np.savez`` alone would append ``.npz`` to a
    name like ``x.txt``); parent folders are created."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "wb") as f:
        np.savez(f, **arrays)
    return p


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
