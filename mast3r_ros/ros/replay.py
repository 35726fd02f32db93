"""Play a synthetic sequence through a real, in-process ``slam_node`` and record what it
publishes (real rclpy publishers, subscriptions and DDS; no ROS CLI needed).

Two ways to feed it:

- lockstep (``period_s=None``): publish a frame, wait for its ``tracking/status``, then the
  next: every frame is processed, the result is deterministic (evaluation, the demo);
- timed (``period_s=P``): publish every ``P`` seconds regardless of the node (a live camera
  faster than inference: the node's bounded queue drops stale frames).

Used by the demo (``python -m mast3r_ros.ros.demo``) and the node tests.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass
class ReplayResult:
    """What the node published during a replay.

    Attributes:
        poses: image stamp (ns) -> (4, 4) ``T_map_robot`` from ``tracking/pose``.
        odometry: image stamp -> (4, 4) ``T_odom_robot`` from ``tracking/odometry``.
        statuses: every ``tracking/status`` as a dict (state_name, latency_ms, ...).
        tf: image stamp -> {(parent, child): (4, 4)} from ``/tf``.
        cloud: the last ``map/points`` as (xyz (N, 3), rgb (N, 3)), or None.
        published: frames published; wall_s: replay duration.
        samples: per-frame callback results (``on_frame``), e.g. memory readings.
        final_trajectory: the node's ``SlamSystem.trajectory()`` at the end of the replay
            (after background mapping has caught up): every frame's pose after the
            corrections made since it was published.
    """

    poses: dict[int, np.ndarray] = field(default_factory=dict)
    odometry: dict[int, np.ndarray] = field(default_factory=dict)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    tf: dict[int, dict[tuple[str, str], np.ndarray]] = field(default_factory=dict)
    cloud: tuple[np.ndarray, np.ndarray] | None = None
    published: int = 0
    wall_s: float = 0.0
    samples: list[Any] = field(default_factory=list)
    final_trajectory: list[tuple[int, np.ndarray]] = field(default_factory=list)

    def trajectory(self) -> tuple[np.ndarray, np.ndarray]:
        """(stamps_ns (N,) int64 sorted, poses (N, 4, 4)) of the published map poses."""
        s = np.array(sorted(self.poses), dtype=np.int64)
        return s, np.array([self.poses[k] for k in s]).reshape(-1, 4, 4)


def replay_sequence(sequence, node_parameters: dict[str, Any], *, namespace: str = "mast3r",
                    period_s: float | None = None, send_camera_info: bool = True,
                    frame_timeout_s: float = 60.0, on_frame: Callable[[int], Any] | None = None,
                    image_topic: str = "/camera/image_raw",
                    camera_info_topic: str = "/camera/camera_info", log=print) -> ReplayResult:
    """Run ``slam_node`` (role slam) in this process on ``sequence``'s frames.

    Args:
        sequence: ``SyntheticSequence`` (``mast3r_ros.synth.bag.read_bag``).
        node_parameters: parameter overrides of the node (engine, simulator_bag, ...).
        period_s: None = lockstep; else seconds between published frames.
        send_camera_info: publish ``CameraInfo`` before each image.
        on_frame: called with the frame index after each publication (timed mode) or after
            its status (lockstep); its return values are kept in ``samples``.

    Raises:
        TimeoutError: lockstep and a frame's status did not come within ``frame_timeout_s``.
    """
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from geometry_msgs.msg import PoseStamped
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from tf2_msgs.msg import TFMessage

    from mast3r_ros.msg import TrackingStatus

    from .conversions import K_to_camera_info, array_to_image, pose_to_matrix
    from .paths import header, stamp_ns_of
    from .pointcloud import pointcloud2_to_xyz_rgb
    from .slam_node import Role, SlamNode
    from .tf import transform_to_matrix

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    out = ReplayResult()
    cond = threading.Condition()
    done_stamps: set[int] = set()
    node = io = executor = spin = None
    try:
        node = SlamNode(Role.SLAM, context=ctx, namespace=namespace,
                        cli_args=["--ros-args", "-r", f"image:={image_topic}",
                                  "-r", f"camera_info:={camera_info_topic}"],
                        parameter_overrides=[Parameter(k, value=v)
                                             for k, v in node_parameters.items()])
        io = rclpy.create_node("replay", context=ctx)
        pub_img = io.create_publisher(Image, image_topic, 10)
        pub_info = io.create_publisher(CameraInfo, camera_info_topic, 10)
        ns = "/" + namespace.strip("/") if namespace.strip("/") else ""

        def on_status(m):
            with cond:
                out.statuses.append({
                    "stamp_ns": stamp_ns_of(m.header.stamp), "state": int(m.state),
                    "state_name": m.state_name, "num_matches": m.num_matches,
                    "num_inliers": m.num_inliers, "num_keyframes": m.num_keyframes,
                    "latency_ms": m.latency_ms, "processing_ms": m.processing_ms,
                    "frames_dropped": m.frames_dropped, "keyframe_id": m.keyframe_id,
                    # frames published when this status arrived: how far the node lags
                    "published_at_status": out.published})
                done_stamps.add(stamp_ns_of(m.header.stamp))
                cond.notify_all()

        def on_pose(m):
            out.poses[stamp_ns_of(m.header.stamp)] = pose_to_matrix(m.pose)

        def on_odom(m):
            out.odometry[stamp_ns_of(m.header.stamp)] = pose_to_matrix(m.pose.pose)

        def on_tf(m):
            for t in m.transforms:
                out.tf.setdefault(stamp_ns_of(t.header.stamp), {})[
                    (t.header.frame_id, t.child_frame_id)] = transform_to_matrix(t)

        def on_points(m):
            out.cloud = pointcloud2_to_xyz_rgb(m)

        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        io.create_subscription(TrackingStatus, f"{ns}/tracking/status", on_status, 100)
        io.create_subscription(PoseStamped, f"{ns}/tracking/pose", on_pose, 100)
        io.create_subscription(Odometry, f"{ns}/tracking/odometry", on_odom, 100)
        io.create_subscription(TFMessage, "/tf", on_tf, 100)
        io.create_subscription(PointCloud2, f"{ns}/map/points", on_points, latched)
        executor = MultiThreadedExecutor(num_threads=3, context=ctx)
        executor.add_node(node)
        executor.add_node(io)
        spin = threading.Thread(target=executor.spin, daemon=True)
        spin.start()
        # discovery: the node hears us and we hear it before the first frame
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
                pub_img.get_subscription_count() and pub_info.get_subscription_count()
                and node.pub_status.get_subscription_count()
                and node.pub_pose.get_subscription_count()):
            time.sleep(0.02)
        t0 = time.monotonic()
        next_t = t0
        for i, frame in enumerate(sequence.frames):
            h, w = frame.rgb.shape[:2]
            hdr = header(frame.stamp_ns, "camera_optical_frame")
            if send_camera_info:
                pub_info.publish(K_to_camera_info(frame.K, w, h, hdr))
                if i == 0:  # the first image must not overtake the first camera info
                    wait = time.monotonic() + 5
                    while node._K_info is None and time.monotonic() < wait:
                        time.sleep(0.01)
            pub_img.publish(array_to_image(frame.rgb, "rgb8", hdr))
            out.published += 1
            if period_s is None:
                with cond:
                    if not cond.wait_for(lambda: frame.stamp_ns in done_stamps, frame_timeout_s):
                        raise TimeoutError(f"no tracking/status for frame {i} "
                                           f"(stamp {frame.stamp_ns}) within {frame_timeout_s} s")
                if on_frame is not None:
                    out.samples.append(on_frame(i))
            else:
                if on_frame is not None:
                    out.samples.append(on_frame(i))
                next_t += period_s
                time.sleep(max(0.0, next_t - time.monotonic()))
        if period_s is not None:  # let the last queued frame finish
            deadline = time.monotonic() + frame_timeout_s
            while time.monotonic() < deadline and (len(node.queue) or not _idle(node, out)):
                time.sleep(0.05)
        deadline = time.monotonic() + frame_timeout_s
        while getattr(node, "_map_dirty", None) is not None and time.monotonic() < deadline:
            time.sleep(0.05)   # the map timer has not rebuilt map/* since the last keyframe
        time.sleep(0.3)  # the last messages (points, path) reach the recorder
        out.wall_s = time.monotonic() - t0
        slam = getattr(node, "slam", None)
        if slam is not None:
            if hasattr(slam, "wait_for_mapping"):   # background mapping: the queued keyframes
                slam.wait_for_mapping(frame_timeout_s)  # are mapped, their update applied
            out.final_trajectory = slam.trajectory()
        return out
    finally:
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        if io is not None:
            io.destroy_node()
        rclpy.try_shutdown(context=ctx)
        if spin is not None:
            spin.join(timeout=10)


def _idle(node, out: ReplayResult) -> bool:
    """The worker is not in the middle of a frame."""
    return node.frames_taken == node.frames_done
