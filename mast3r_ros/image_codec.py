"""``sensor_msgs/Image`` byte layouts <-> numpy arrays, without ROS.

One codec for every place images cross a byte boundary: the ROS layer
(``mast3r_ros.ros.conversions``, rclpy messages) and rosbag2 files written or read with
``rosbags`` (``mast3r_ros.synth.bag``). Both pass the message fields; neither needs
cv_bridge, which does not exist in every environment we support.
"""
from __future__ import annotations

import cv2
import numpy as np

# encoding -> (channels, numpy dtype, channel order as stored)
ENCODINGS: dict[str, tuple[int, np.dtype, str]] = {
    "rgb8": (3, np.dtype(np.uint8), "rgb"),
    "bgr8": (3, np.dtype(np.uint8), "bgr"),
    "rgba8": (4, np.dtype(np.uint8), "rgba"),
    "bgra8": (4, np.dtype(np.uint8), "bgra"),
    "mono8": (1, np.dtype(np.uint8), "mono"),
    "8UC1": (1, np.dtype(np.uint8), "mono"),
    "8UC3": (3, np.dtype(np.uint8), "bgr"),  # OpenCV's convention for untyped 3-channel
    "mono16": (1, np.dtype(np.uint16), "mono"),
    "16UC1": (1, np.dtype(np.uint16), "mono"),
    "32FC1": (1, np.dtype(np.float32), "mono"),
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "8UC3")


def _spec(encoding: str) -> tuple[int, np.dtype, str]:
    if encoding not in ENCODINGS:
        raise ValueError(
            f"image encoding {encoding!r} is not supported; use one of {sorted(ENCODINGS)}"
        )
    return ENCODINGS[encoding]


def decode(data, height: int, width: int, step: int, encoding: str,
           is_bigendian: bool = False) -> np.ndarray:
    """Image message fields -> array in the stored layout.

    Args:
        data: the message's bytes (bytes, array.array or a uint8 array).
        height, width, step: as in ``sensor_msgs/Image`` (rows may be padded: step >= row bytes).
        encoding: one of ``ENCODINGS``. is_bigendian: byte order of multi-byte types.

    Returns:
        (H, W) for one-channel encodings, (H, W, C) otherwise; dtype from the encoding,
        native byte order. A copy: the message buffer is not aliased.

    Raises:
        ValueError: unsupported encoding, zero size, or a buffer inconsistent with
            height, width and step.
    """
    channels, dtype, _ = _spec(encoding)
    h, w, step = int(height), int(width), int(step)
    if h <= 0 or w <= 0:
        raise ValueError(f"image has size {w}x{h}; width and height must be positive")
    row_bytes = w * channels * dtype.itemsize
    if step < row_bytes:
        raise ValueError(f"image step {step} is smaller than width*channels*itemsize = {row_bytes}")
    buf = np.frombuffer(data.tobytes() if hasattr(data, "tobytes") else bytes(data), np.uint8)
    if buf.size < step * h:
        raise ValueError(f"image data has {buf.size} bytes, expected step*height = {step * h}")
    rows = buf[: step * h].reshape(h, step)[:, :row_bytes]
    order = ">" if is_bigendian else "<"
    arr = np.ascontiguousarray(rows).view(dtype.newbyteorder(order)).reshape(h, w, channels)
    arr = arr.astype(dtype.newbyteorder("="), copy=True)
    return arr[..., 0] if channels == 1 else arr


def to_rgb(arr: np.ndarray, encoding: str) -> np.ndarray:
    """A decoded colour or mono 8-bit image -> (H, W, 3) uint8 RGB (mono replicated)."""
    if encoding not in COLOR_ENCODINGS:
        raise ValueError(
            f"image encoding {encoding!r} is not a colour/mono 8-bit image; "
            f"expected one of {list(COLOR_ENCODINGS)}"
        )
    order = ENCODINGS[encoding][2]
    if order == "mono":
        return np.repeat(arr.reshape(arr.shape[0], arr.shape[1], 1), 3, axis=2)
    if order == "rgb":
        return arr
    if order == "rgba":
        return np.ascontiguousarray(arr[..., :3])
    return np.ascontiguousarray(arr[..., 2::-1])  # bgr / bgra -> rgb


def from_rgb(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> array in ``encoding``'s colour layout (alpha = 255)."""
    if encoding not in COLOR_ENCODINGS:
        raise ValueError(f"cannot encode RGB as {encoding!r}; expected one of {list(COLOR_ENCODINGS)}")
    order = ENCODINGS[encoding][2]
    if order == "mono":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    out = rgb if order in ("rgb", "rgba") else rgb[..., ::-1]
    if order in ("rgba", "bgra"):
        out = np.dstack([out, np.full(rgb.shape[:2], 255, np.uint8)])
    return np.ascontiguousarray(out)


def encode(arr: np.ndarray, encoding: str) -> tuple[bytes, int]:
    """Array already in ``encoding``'s layout -> (little-endian data, step), unpadded rows.

    Raises:
        ValueError: the array's channels or dtype do not fit the encoding.
    """
    channels, dtype, _ = _spec(encoding)
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] != channels:
        raise ValueError(f"array of shape {arr.shape} does not fit encoding {encoding!r} ({channels} channels)")
    if arr.dtype != dtype:
        raise ValueError(f"array dtype {arr.dtype} does not fit encoding {encoding!r} ({dtype})")
    step = int(arr.shape[1] * channels * dtype.itemsize)
    return np.ascontiguousarray(arr, dtype=dtype.newbyteorder("<")).tobytes(), step
