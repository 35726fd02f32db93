"""Pose, odometry and path messages from 4x4 matrices (message packages only; TF edges are
built by ``mast3r_ros.ros.tf``).

Frames: ``T_parent_child`` maps child coordinates to the parent frame; every message names
its parent in ``header.frame_id`` (and the child in ``child_frame_id`` where it has one).
"""
from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, Path
from std_msgs.msg import Header

from .conversions import matrix_to_pose


def stamp_msg(stamp_ns: int) -> Time:
    """``builtin_interfaces/Time`` from integer nanoseconds."""
    sec, nsec = divmod(int(stamp_ns), 10**9)
    return Time(sec=sec, nanosec=nsec)


def stamp_ns_of(stamp: Time) -> int:
    """Integer nanoseconds of a ``builtin_interfaces/Time``."""
    return int(stamp.sec) * 10**9 + int(stamp.nanosec)


def header(stamp_ns: int, frame_id: str) -> Header:
    return Header(stamp=stamp_msg(stamp_ns), frame_id=frame_id)


def pose_stamped(T_parent_child: np.ndarray, stamp_ns: int, frame_id: str) -> PoseStamped:
    return PoseStamped(header=header(stamp_ns, frame_id), pose=matrix_to_pose(T_parent_child))


def odometry(T_odom_child: np.ndarray, stamp_ns: int, odom_frame: str, child_frame: str,
             pose_covariance: np.ndarray | None = None) -> Odometry:
    """``nav_msgs/Odometry`` of ``child_frame`` in ``odom_frame``; the twist is left zero
    (monocular tracking estimates no velocity)."""
    msg = Odometry(header=header(stamp_ns, odom_frame), child_frame_id=child_frame)
    msg.pose.pose = matrix_to_pose(T_odom_child)
    if pose_covariance is not None:
        msg.pose.covariance = np.asarray(pose_covariance, dtype=np.float64).ravel().tolist()
    return msg


def make_path(stamps_ns, poses: np.ndarray, frame_id: str, stamp_ns: int | None = None) -> Path:
    """``nav_msgs/Path`` of poses (N, 4, 4) at ``stamps_ns`` (N,); the path's own stamp is
    ``stamp_ns`` or the last pose's."""
    poses = np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4)
    stamps = [int(s) for s in stamps_ns]
    if len(stamps) != len(poses):
        raise ValueError(f"make_path: {len(stamps)} stamps for {len(poses)} poses")
    last = stamp_ns if stamp_ns is not None else (stamps[-1] if stamps else 0)
    return Path(header=header(last, frame_id),
                poses=[pose_stamped(T, s, frame_id) for s, T in zip(stamps, poses)])


def path_to_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(stamps_ns (N,) int64, poses (N, 4, 4)) of a ``nav_msgs/Path``."""
    from .conversions import pose_to_matrix

    stamps = np.array([stamp_ns_of(p.header.stamp) for p in path.poses], dtype=np.int64)
    poses = np.array([pose_to_matrix(p.pose) for p in path.poses]).reshape(-1, 4, 4)
    return stamps, poses
