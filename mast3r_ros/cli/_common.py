"""Pieces shared by the subcommands that run the network (infer, match)."""
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
