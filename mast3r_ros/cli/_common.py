"""Pieces shared by the subcommands: output-path checks (every command), image loading, the
network and simulator engines from flags, progress bars."""
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


def save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """Write ``arrays`` to exactly ``path`` (``np.savez`` alone would append ``.npz`` to a
    name like ``x.txt``); parent folders are created."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "wb") as f:
        np.savez(f, **arrays)
    return p


def check_output_path(path: str | Path | None, argument: str = "--out", *, kind: str = "file",
                      overwrite: bool = True, image_writer: bool = False,
                      suffixes: Sequence[str] | None = None, is_dir: bool | None = None) -> Path | None:
    """Check that ``path`` can be written, before any expensive work starts.

    Args:
        path: the output (None: nothing to check, returns None).
        argument: the command-line argument it came from, named in the error.
        kind: ``"file"`` (must not be an existing directory) or ``"dir"`` (must not be an
            existing file). Missing parent folders are fine (created later) as long as the
            nearest existing one is a writable directory.
        overwrite: False refuses an existing path.
        image_writer: the file is written with ``cv2.imwrite``: its extension must have an
            OpenCV writer.
        suffixes: allowed suffixes (lower case, with the dot), e.g. ``(".npz",)``; empty or
            None: any.
        is_dir: same as ``kind="dir"`` (True) / ``kind="file"`` (False).

    Returns:
        ``Path(path)``.

    Raises:
        OutputPathError: naming ``argument``, the path and what is wrong.
    """
    from mast3r_ros.errors import OutputPathError

    if is_dir is not None:
        kind = "dir" if is_dir else "file"
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir', got {kind!r}")
    if path is None:
        return None
    if not str(path).strip():
        raise OutputPathError("expected a file or folder name, got an empty string", argument=argument)
    p = Path(path)
    where = f"{argument} {str(p)!r}"
    if kind == "file" and p.is_dir():
        raise OutputPathError(f"{where} is an existing directory; expected a file name")
    if kind == "dir" and p.exists() and not p.is_dir():
        raise OutputPathError(f"{where} exists and is not a directory; expected a folder")
    if p.exists() and not overwrite:
        raise OutputPathError(f"{where} already exists; choose another name (or --force where offered)")
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputPathError(f"{where} exists and is not writable (permission denied)")
    if suffixes and p.suffix.lower() not in tuple(suffixes):
        raise OutputPathError(f"{where} must end in one of {list(suffixes)}, got {p.suffix or 'no suffix'!r}")
    if image_writer:
        import cv2

        if not p.suffix or not cv2.haveImageWriter(str(p)):
            raise OutputPathError(f"{where}: OpenCV has no image writer for the extension "
                                  f"{p.suffix or '(none)'!r}; use .png or .jpg")
    parent = p if (kind == "dir" and not p.exists()) else p.parent
    parent = Path(os.path.abspath(parent))
    while not parent.exists() and not parent.is_symlink():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputPathError(f"{where} cannot be created: {str(parent)!r} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{where} cannot be created: directory {str(parent)!r} is not "
                              "writable (permission denied)")
    return p


def load_rgb(path: str | Path, argument: str | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB, EXIF orientation applied (as the reference loader does).

    The pixel count is checked from the header before decoding (``limits.MAX_IMAGE_PIXELS``).
    """
    from PIL import Image, ImageOps

    from mast3r_ros.errors import InputError
    from mast3r_ros.limits import check_image_pixels

    path = Path(path)
    if path.is_dir():
        raise InputError(f"image {str(path)!r} is a directory, expected an image file", argument=argument)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our ceiling rules
            im = Image.open(path)
        with im:
            check_image_pixels(im.height, im.width, f"image {path}")
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except Image.DecompressionBombError as exc:
        raise InputError(f"image {path} is too large to decode safely: {exc}", argument=argument) from None
    except Exception as exc:  # noqa: BLE001 - decoders raise many types on hostile files
        if isinstance(exc, MemoryError):
            raise
        if isinstance(exc, InputError):
            exc.argument = exc.argument or argument
            raise
        raise InputError(f"cannot read image {path}: {exc} (expected a PNG/JPEG/... file)",
                         argument=argument) from None


def engine_from_args(args: argparse.Namespace, paths: Sequence[str], images: Sequence[np.ndarray]):
    """A ``Mast3rEngine`` from ``--checkpoint --device --dtype --size --no-resize``.

    With ``--no-resize`` every image must already have sides that are multiples of 16;
    the error names the file.
    """
    from mast3r_ros.errors import InputError
    from mast3r_ros.limits import MAX_NETWORK_SIDE
    from mast3r_ros.model.engine import Mast3rEngine
    from mast3r_ros.model.preprocess import check_network_size

    if not 16 <= args.size <= MAX_NETWORK_SIDE:
        raise InputError(f"expected a network long side between 16 and {MAX_NETWORK_SIDE} pixels "
                         f"(512 for the official checkpoint), got {args.size}", argument="--size")
    if args.no_resize:
        for path, im in zip(paths, images):
            try:
                check_network_size(*im.shape[:2])
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
    return Mast3rEngine.from_checkpoint(args.checkpoint, device=args.device, dtype=args.dtype,
                                        size=args.size, resize=not args.no_resize)


# --------------------------------------------------------------------------- simulator engine

SIM_PROFILES = ("exact", "moderate", "realistic", "hard")  # = SimulatorProfile values (checked by a test)


def add_simulator_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--sim-noise`` and ``--sim-config`` to a command with a simulator engine.

    The simulator (``mast3r_ros.synth.simulator``) stands in for the network on synthetic
    bags (tests and evaluation only). Read the options back with ``simulator_from_args``.
    """
    g = parser.add_argument_group("network-output simulator (stand-in for the weights, "
                                  "synthetic bags only)")
    g.add_argument("--sim-noise", choices=SIM_PROFILES, default="realistic",
                   help="noise profile of the simulator: exact (none), moderate (the "
                        "pre-recalibration realistic: 2 %% scale jitter, white noise), realistic "
                        "(published error sizes, the default), hard (about twice, plus "
                        "descriptor aliasing)")
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
