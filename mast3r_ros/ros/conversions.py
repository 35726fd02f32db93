"""The one seam where ROS messages become numbers (and back).

cv_bridge and sensor_msgs_py do not exist in every environment we support (ROS 2 from
PyPI wheels), so the few conversions we need are written here, small and tested.
Only message packages are imported, never rclpy.
"""
from __future__ import annotations

import math

import numpy as np
from geometry_msgs.msg import Pose, PoseWithCovarianceStamped
from sensor_msgs.msg import CameraInfo, Image

from mast3r_ros.geometry.intrinsics import check_K
from mast3r_ros.geometry.transforms import T_to_pose, pose_to_T

# encoding -> (channels, numpy dtype, channel order as stored)
_ENCODINGS: dict[str, tuple[int, np.dtype, str]] = {
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


def image_to_array(msg: Image) -> np.ndarray:
    """A ``sensor_msgs/Image`` as an array in its stored layout.

    Returns:
        (H, W) for one-channel encodings, (H, W, C) otherwise; dtype from the encoding,
        native byte order. A copy: the message buffer is not aliased.

    Raises:
        ValueError: unsupported encoding, zero size, or a buffer inconsistent with
            height, width and step.
    """
    enc = msg.encoding
    if enc not in _ENCODINGS:
        raise ValueError(
            f"image encoding {enc!r} is not supported; use one of {sorted(_ENCODINGS)}"
        )
    channels, dtype, _ = _ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ValueError(f"image has size {w}x{h}; width and height must be positive")
    row_bytes = w * channels * dtype.itemsize
    if step < row_bytes:
        raise ValueError(f"image step {step} is smaller than width*channels*itemsize = {row_bytes}")
    data = msg.data
    buf = np.frombuffer(data.tobytes() if hasattr(data, "tobytes") else bytes(data), np.uint8)
    if buf.size < step * h:
        raise ValueError(f"image data has {buf.size} bytes, expected step*height = {step * h}")
    rows = buf[: step * h].reshape(h, step)[:, :row_bytes]
    order = ">" if msg.is_bigendian else "<"
    arr = np.ascontiguousarray(rows).view(dtype.newbyteorder(order)).reshape(h, w, channels)
    arr = arr.astype(dtype.newbyteorder("="), copy=True)
    return arr[..., 0] if channels == 1 else arr


def image_to_rgb(msg: Image) -> np.ndarray:
    """A colour or mono ``sensor_msgs/Image`` as (H, W, 3) uint8 RGB, the network's input."""
    if msg.encoding not in COLOR_ENCODINGS:
        raise ValueError(
            f"image encoding {msg.encoding!r} is not a colour/mono 8-bit image; "
            f"expected one of {list(COLOR_ENCODINGS)}"
        )
    arr = image_to_array(msg)
    order = _ENCODINGS[msg.encoding][2]
    if order == "mono":
        return np.repeat(arr[..., None], 3, axis=2)
    if order == "rgb":
        return arr
    if order == "rgba":
        return np.ascontiguousarray(arr[..., :3])
    return np.ascontiguousarray(arr[..., 2::-1])  # bgr / bgra -> rgb


def array_to_image(arr: np.ndarray, encoding: str, header=None) -> Image:
    """Build a ``sensor_msgs/Image`` from an array already in ``encoding``'s layout."""
    if encoding not in _ENCODINGS:
        raise ValueError(f"image encoding {encoding!r} is not supported; use one of {sorted(_ENCODINGS)}")
    channels, dtype, _ = _ENCODINGS[encoding]
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] != channels:
        raise ValueError(f"array of shape {arr.shape} does not fit encoding {encoding!r} ({channels} channels)")
    if arr.dtype != dtype:
        raise ValueError(f"array dtype {arr.dtype} does not fit encoding {encoding!r} ({dtype})")
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(arr.shape[1] * channels * dtype.itemsize)
    msg.data = np.ascontiguousarray(arr, dtype=dtype.newbyteorder("<")).tobytes()
    return msg


def camera_info_to_K(msg: CameraInfo | None) -> np.ndarray | None:
    """3x3 intrinsics from ``CameraInfo``, or None when unknown (absent or all-zero K).

    Raises:
        ValueError: K has NaN/inf, a non-positive focal length, or a malformed last row
            (checked by ``mast3r_ros.geometry.check_K``).
    """
    if msg is None:
        return None
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.any(K):
        return None
    return check_K(K, "camera_info.k")


def K_to_camera_info(K: np.ndarray, width: int, height: int, header=None) -> CameraInfo:
    """A ``CameraInfo`` for an undistorted pinhole camera with intrinsics ``K``."""
    K = np.asarray(K, dtype=np.float64)
    msg = CameraInfo()
    if header is not None:
        msg.header = header
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = K.ravel().tolist()
    msg.r = np.eye(3).ravel().tolist()
    P = np.zeros((3, 4))
    P[:, :3] = K
    msg.p = P.ravel().tolist()
    return msg


def matrix_to_pose(T: np.ndarray) -> Pose:
    """4x4 rigid transform ``T_parent_child`` -> ``geometry_msgs/Pose`` (xyzw, w >= 0)."""
    (x, y, z), (qx, qy, qz, qw) = T_to_pose(T)
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = x, y, z
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = qx, qy, qz, qw
    return pose


def pose_to_matrix(pose: Pose) -> np.ndarray:
    """``geometry_msgs/Pose`` -> 4x4 rigid transform. Rejects non-finite or non-unit quaternions."""
    q = np.array([pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w])
    t = np.array([pose.position.x, pose.position.y, pose.position.z])
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(t))):
        raise ValueError("pose has non-finite position or orientation")
    n = float(np.linalg.norm(q))
    if not math.isclose(n, 1.0, abs_tol=1e-3):
        raise ValueError(f"pose orientation is not a unit quaternion (norm {n:.4g})")
    return pose_to_T(t, q)


def pose_with_covariance(T: np.ndarray, covariance: np.ndarray | None, header=None) -> PoseWithCovarianceStamped:
    """``PoseWithCovarianceStamped`` from a 4x4 transform and a 6x6 covariance
    (ROS order: x, y, z, rotation about X, Y, Z)."""
    msg = PoseWithCovarianceStamped()
    if header is not None:
        msg.header = header
    msg.pose.pose = matrix_to_pose(T)
    cov = np.zeros((6, 6)) if covariance is None else np.asarray(covariance, dtype=np.float64)
    if cov.shape != (6, 6):
        raise ValueError(f"covariance must be 6x6, got {cov.shape}")
    msg.pose.covariance = cov.ravel().tolist()
    return msg
