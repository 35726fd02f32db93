"""The one seam where ROS messages become numbers (and back).

cv_bridge and sensor_msgs_py do not exist in every environment we support (ROS 2 from
PyPI wheels), so the few conversions we need are written here, small and tested; image
bytes go through the ROS-free ``mast3r_ros.image_codec``, shared with the bag tools.
Only message packages are imported, never rclpy.
"""
from __future__ import annotations

import math

import numpy as np
from geometry_msgs.msg import Pose, PoseWithCovarianceStamped
from sensor_msgs.msg import CameraInfo, Image

from mast3r_ros import image_codec
from mast3r_ros.geometry.intrinsics import check_K
from mast3r_ros.geometry.transforms import T_to_pose, pose_to_T


def image_to_array(msg: Image) -> np.ndarray:
    """A ``sensor_msgs/Image`` as an array in its stored layout (see ``image_codec.decode``).

    Raises:
        ValueError: unsupported encoding, zero size, or a buffer inconsistent with
            height, width and step.
    """
    return image_codec.decode(msg.data, msg.height, msg.width, msg.step, msg.encoding,
                              bool(msg.is_bigendian))


def image_to_rgb(msg: Image) -> np.ndarray:
    """A colour or mono ``sensor_msgs/Image`` as (H, W, 3) uint8 RGB, the network's input."""
    return image_codec.to_rgb(image_to_array(msg), msg.encoding)


def array_to_image(arr: np.ndarray, encoding: str, header=None) -> Image:
    """Build a ``sensor_msgs/Image`` from an array already in ``encoding``'s layout."""
    data, step = image_codec.encode(arr, encoding)
    arr = np.asarray(arr)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = step
    msg.data = data
    return msg


def camera_info_to_K(msg: CameraInfo | None) -> np.ndarray | None:
    """3x3 intrinsics from ``CameraInfo``, or None when unknown (absent, all-zero or all-NaN K:
    the conventions for "no calibration").

    Raises:
        ValueError: K is partly NaN/inf, has a non-positive focal length, or a malformed last
            row (checked by ``mast3r_ros.geometry.check_K``).
    """
    if msg is None:
        return None
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.any(K) or np.all(np.isnan(K)):
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
    msg.pose.covariance = covariance_to_list(covariance)
    return msg


def stamp_ns(stamp) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int):
    """Integer nanoseconds (>= 0) -> ``builtin_interfaces/Time``."""
    from builtin_interfaces.msg import Time

    sec, nsec = divmod(int(ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nsec)


def covariance_to_list(covariance: np.ndarray | None) -> list[float]:
    """6x6 covariance (ROS order x, y, z, rx, ry, rz) -> the 36 row-major floats of a message;
    None -> all zeros ("unknown"). Raises ValueError on a wrong shape or non-finite entries."""
    if covariance is None:
        return [0.0] * 36
    cov = np.asarray(covariance, dtype=np.float64)
    if cov.shape != (6, 6):
        raise ValueError(f"covariance must be 6x6, got {cov.shape}")
    if not np.all(np.isfinite(cov)):
        raise ValueError("covariance has non-finite entries")
    return cov.ravel().tolist()


def keyframe_msg(kf_id: str, T_map_cam: np.ndarray, K: np.ndarray | None, *, stamp_ns: int | None,
                 map_frame: str, width: int = 0, height: int = 0, intrinsics_estimated: bool = False,
                 num_points: int = 0):
    """A ``mast3r_ros/Keyframe`` (header: image stamp, map frame; K absent -> all-zero k)."""
    from mast3r_ros.msg import Keyframe

    msg = Keyframe()
    msg.header.stamp = ns_to_stamp(stamp_ns or 0)
    msg.header.frame_id = map_frame
    msg.id = str(kf_id)
    msg.pose = matrix_to_pose(T_map_cam)
    if K is not None:
        msg.camera_info = K_to_camera_info(K, width, height)
    msg.intrinsics_estimated = bool(intrinsics_estimated)
    msg.num_points = int(num_points)
    return msg


def path_msg(poses, map_frame: str, stamp=None):
    """``nav_msgs/Path`` in ``map_frame`` from ``[(stamp_ns, T_map_cam), ...]``."""
    from geometry_msgs.msg import PoseStamped
    from nav_msgs.msg import Path

    path = Path()
    path.header.frame_id = map_frame
    if stamp is not None:
        path.header.stamp = stamp
    for s, T in poses:
        ps = PoseStamped()
        ps.header.frame_id = map_frame
        ps.header.stamp = ns_to_stamp(s or 0)
        ps.pose = matrix_to_pose(T)
        path.poses.append(ps)
    return path
