"""Ceilings on every size a user, a file or a message controls, and readers that honour them.

No input may drive a process past a few GB or into a hang: image pixels are checked from
the file header before decoding, ``.npz`` members from their zip and ``.npy`` headers
before anything is allocated, network inputs and synthetic sequences from their
parameters. Each ceiling is a module constant (callers may pass another) and is
exceeded with a ``LimitError`` naming the input, the size and the ceiling.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np

from mast3r_ros.errors import InputError, LimitError

MAX_IMAGE_PIXELS = 100_000_000       # decoded image files (100 MP, 300 MB as RGB)
MAX_NETWORK_SIDE = 2048              # network input height / width, pixels
MAX_NETWORK_TOKENS = 16_384          # (H/16) * (W/16) per image (attention is O(tokens^2))
MAX_NPZ_MEMBER_BYTES = 1 << 30       # one decompressed .npz array (1 GiB)
MAX_DESC_PIXELS = 1 << 22            # descriptor map H * W read from files (4 MP)
MAX_DESC_DIM = 1024                  # descriptor length D
MAX_SYNTH_BYTES = 2 << 30            # frames x (rgb + depth) held by `synth` (2 GiB)
MAX_SYNTH_SIDE = 4096                # synthetic image side, pixels
MAX_SYNTH_FRAMES = 100_000
MAX_SYNTH_RATE_HZ = 10_000.0
MAX_BAG_BYTES = 4 << 30              # decoded frames `read_bag` holds at once (4 GiB)

__all__ = [
    "MAX_IMAGE_PIXELS", "MAX_NETWORK_SIDE", "MAX_NETWORK_TOKENS", "MAX_NPZ_MEMBER_BYTES",
    "MAX_DESC_PIXELS", "MAX_DESC_DIM", "MAX_SYNTH_BYTES", "MAX_SYNTH_SIDE", "MAX_SYNTH_FRAMES",
    "MAX_SYNTH_RATE_HZ", "MAX_BAG_BYTES", "check_image_pixels", "check_network_input",
    "npz_member_shapes", "load_npz",
]


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def check_image_pixels(h: int, w: int, name: str = "image", limit: int | None = None) -> None:
    """Refuse an image of more than ``limit`` (default ``MAX_IMAGE_PIXELS``) pixels."""
    limit = MAX_IMAGE_PIXELS if limit is None else limit
    if int(h) * int(w) > limit:
        raise LimitError(f"{name} is {w}x{h} (WxH) = {int(h) * int(w):,} pixels; the ceiling is "
                         f"{limit:,} pixels (mast3r_ros.limits.MAX_IMAGE_PIXELS)")


def check_network_input(h: int, w: int, name: str = "network input") -> None:
    """Refuse a network input larger than ``MAX_NETWORK_SIDE`` / ``MAX_NETWORK_TOKENS``."""
    tokens = (int(h) // 16) * (int(w) // 16)
    if max(h, w) > MAX_NETWORK_SIDE or tokens > MAX_NETWORK_TOKENS:
        raise LimitError(f"{name} of {h}x{w} (HxW, {tokens} tokens) is too large; the ceiling is "
                         f"{MAX_NETWORK_SIDE} pixels a side and {MAX_NETWORK_TOKENS} tokens "
                         "(16x16 patches); use a smaller --size or resize the image")


def npz_member_shapes(path: str | Path, *, max_member_bytes: int = MAX_NPZ_MEMBER_BYTES,
                      ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``{name: (shape, dtype)}`` of every array of an ``.npz``, read from the zip and
    ``.npy`` headers only; checks sizes before anything is decompressed in full.

    Raises:
        InputError: not a zip of ``.npy`` members, an object dtype, or a header whose shape
            disagrees with the member's size. LimitError: a member above ``max_member_bytes``.
    """
    path = Path(path)
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if info.file_size > max_member_bytes:
                    raise LimitError(f"{path}: array {name!r} decompresses to {_gib(info.file_size)}; "
                                     f"the ceiling is {_gib(max_member_bytes)}")
                with zf.open(info) as f:
                    try:
                        version = np.lib.format.read_magic(f)
                        shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                                 else np.lib.format.read_array_header_2_0(f))
                    except (ValueError, EOFError, OSError) as exc:
                        raise InputError(f"{path}: member {info.filename!r} is not a .npy array: {exc}") from None
                    header_len = f.tell()
                if dtype.hasobject:
                    raise InputError(f"{path}: array {name!r} has dtype {dtype} (Python objects); "
                                     "only numeric arrays are read")
                nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if nbytes + header_len != info.file_size:
                    raise InputError(f"{path}: array {name!r} declares shape {shape} {dtype} "
                                     f"({nbytes:,} bytes) but its member holds "
                                     f"{info.file_size - header_len:,} bytes; the file is corrupt")
                out[name] = (tuple(int(s) for s in shape), dtype)
    except zipfile.BadZipFile as exc:
        raise InputError(f"{path}: not an .npz (zip) archive, or it is truncated: {exc}") from None
    return out


def load_npz(path: str | Path, keys: Iterable[str] | None = None, *,
             max_member_bytes: int = MAX_NPZ_MEMBER_BYTES) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz`` (all, or ``keys`` that exist), after ``npz_member_shapes``
    checked every header; never unpickles (``allow_pickle=False``).

    Raises:
        FileNotFoundError, InputError, LimitError.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a directory, expected an .npz file")
    shapes = npz_member_shapes(path, max_member_bytes=max_member_bytes)
    wanted = list(shapes) if keys is None else [k for k in keys if k in shapes]
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in wanted}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read the arrays (corrupt .npz?): {exc}") from None
