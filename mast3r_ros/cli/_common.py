"""Pieces shared by the subcommands: output-path checks (every command), image loading and
the engine (infer, match)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

import numpy as np


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
