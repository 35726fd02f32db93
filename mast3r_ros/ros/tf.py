"""A small TF layer of our own: tf2_ros is not available as a wheel.

- ``transform_stamped`` / ``transform_to_matrix``: 4x4 ``T_parent_child`` <-> ``TransformStamped``.
- ``TfBroadcaster``: ``tf2_msgs/TFMessage`` on ``/tf`` (depth 100, reliable, volatile, as
  tf2_ros) and ``/tf_static`` (depth 1, RELIABLE, TRANSIENT_LOCAL: latched; every static
  transform sent so far is republished together, as tf2_ros's static broadcaster does, since
  a depth-1 latched topic keeps only the last message).
- ``TfListener``: a bounded buffer of what arrives on ``/tf`` and ``/tf_static`` with
  ``lookup(target, source, stamp_ns)`` along the tree (nearest stamp per edge within a
  tolerance; no interpolation).
- REP-105 helpers: ``map_to_odom``, ``odom_to_base``, ``base_pose``.

Convention (``mast3r_ros.geometry.transforms``): ``T_a_b`` maps points in ``b`` to ``a`` and
is published as the TF edge ``a -> b`` (``header.frame_id = a``, ``child_frame_id = b``).
"""
from __future__ import annotations

import bisect
import threading
from collections import deque

import numpy as np
from geometry_msgs.msg import TransformStamped
from tf2_msgs.msg import TFMessage

from mast3r_ros.geometry.transforms import T_to_pose, check_T, invert_T, pose_to_T

TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"


# -- conversions -------------------------------------------------------------------------
def stamp_to_ns(stamp) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int):
    """Integer nanoseconds -> ``builtin_interfaces/Time``."""
    from builtin_interfaces.msg import Time

    sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nsec)


def transform_stamped(T_parent_child: np.ndarray, parent: str, child: str, stamp) -> TransformStamped:
    """``TransformStamped`` for the edge ``parent -> child`` (``stamp``: a Time message or ns)."""
    (x, y, z), (qx, qy, qz, qw) = T_to_pose(T_parent_child)
    msg = TransformStamped()
    msg.header.stamp = ns_to_stamp(stamp) if isinstance(stamp, (int, np.integer)) else stamp
    msg.header.frame_id = parent
    msg.child_frame_id = child
    t, r = msg.transform.translation, msg.transform.rotation
    t.x, t.y, t.z = x, y, z
    r.x, r.y, r.z, r.w = qx, qy, qz, qw
    return msg


def transform_to_matrix(msg: TransformStamped) -> np.ndarray:
    """``TransformStamped`` -> 4x4 ``T_parent_child``. Raises ValueError on a non-finite or
    zero quaternion (a non-unit one is normalised, as tf2 does)."""
    t, r = msg.transform.translation, msg.transform.rotation
    q = np.array([r.x, r.y, r.z, r.w], dtype=np.float64)
    p = np.array([t.x, t.y, t.z], dtype=np.float64)
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(p))) or np.linalg.norm(q) < 1e-9:
        raise ValueError(f"transform {msg.header.frame_id} -> {msg.child_frame_id} is not finite "
                         "or has a zero quaternion")
    return pose_to_T(p, q / np.linalg.norm(q))


# -- REP-105 -----------------------------------------------------------------------------
def map_to_odom(T_map_cam: np.ndarray, T_odom_cam: np.ndarray) -> np.ndarray:
    """``T_map_odom`` such that ``T_map_odom @ T_odom_cam == T_map_cam``: the correction a
    localizer publishes so the odometry chain lands on its map pose (same frame ``cam``
    on both sides: camera or base)."""
    return check_T(T_map_cam, "T_map_cam") @ invert_T(T_odom_cam)


def odom_to_base(T_odom_cam: np.ndarray, T_base_cam: np.ndarray) -> np.ndarray:
    """``T_odom_base`` of a robot whose camera sits at ``T_base_cam`` in its base frame."""
    return check_T(T_odom_cam, "T_odom_cam") @ invert_T(T_base_cam)


def base_pose(T_x_cam: np.ndarray, T_base_cam: np.ndarray) -> np.ndarray:
    """The base pose ``T_x_base`` in any frame ``x`` from the camera pose ``T_x_cam``."""
    return odom_to_base(T_x_cam, T_base_cam)


# -- QoS -----------------------------------------------------------------------------------
def tf_qos():
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


def tf_static_qos():
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


# -- broadcaster -------------------------------------------------------------------------
class TfBroadcaster:
    """Publishes transforms on ``/tf`` (``send``) and latched ones on ``/tf_static``
    (``send_static``). Thread-safe."""

    def __init__(self, node) -> None:
        self._node = node
        self._pub = node.create_publisher(TFMessage, TF_TOPIC, tf_qos())
        self._static_pub = None
        self._static: dict[str, TransformStamped] = {}   # child frame -> latest static edge
        self._lock = threading.Lock()

    def send(self, transforms: TransformStamped | list[TransformStamped]) -> None:
        if isinstance(transforms, TransformStamped):
            transforms = [transforms]
        self._pub.publish(TFMessage(transforms=list(transforms)))

    def send_T(self, T_parent_child: np.ndarray, parent: str, child: str, stamp) -> TransformStamped:
        """Publish one edge from a 4x4 transform; returns the message sent."""
        msg = transform_stamped(T_parent_child, parent, child, stamp)
        self.send(msg)
        return msg

    def send_static(self, transforms: TransformStamped | list[TransformStamped]) -> None:
        if isinstance(transforms, TransformStamped):
            transforms = [transforms]
        with self._lock:
            if self._static_pub is None:
                self._static_pub = self._node.create_publisher(TFMessage, TF_STATIC_TOPIC, tf_static_qos())
            for t in transforms:
                self._static[t.child_frame_id] = t
            self._static_pub.publish(TFMessage(transforms=list(self._static.values())))


# -- listener ------------------------------------------------------------------------------
class TfListener:
    """A bounded TF buffer fed by ``/tf`` and ``/tf_static`` subscriptions.

    Args:
        node: the node to subscribe with (callbacks in its default group).
        history: edges kept per (parent, child) (oldest dropped).
    """

    def __init__(self, node, history: int = 400, callback_group=None) -> None:
        self._lock = threading.Lock()
        self._history = int(history)
        self._parent: dict[str, str] = {}                     # child -> parent (latest seen)
        self._edges: dict[tuple[str, str], deque] = {}        # (parent, child) -> (stamp_ns, T)
        self._static: dict[tuple[str, str], np.ndarray] = {}
        node.create_subscription(TFMessage, TF_TOPIC, lambda m: self.add(m, False), tf_qos(),
                                 callback_group=callback_group)
        node.create_subscription(TFMessage, TF_STATIC_TOPIC, lambda m: self.add(m, True),
                                 tf_static_qos(), callback_group=callback_group)

    def add(self, msg: TFMessage, static: bool = False) -> None:
        """Store every valid transform of ``msg`` (invalid ones are skipped)."""
        with self._lock:
            for t in msg.transforms:
                try:
                    T = transform_to_matrix(t)
                except ValueError:
                    continue
                key = (t.header.frame_id, t.child_frame_id)
                self._parent[t.child_frame_id] = t.header.frame_id
                if static:
                    self._static[key] = T
                    continue
                q = self._edges.setdefault(key, deque(maxlen=self._history))
                s = stamp_to_ns(t.header.stamp)
                if q and s < q[-1][0]:        # out of order: keep the deque sorted
                    items = sorted([*q, (s, T)], key=lambda e: e[0])
                    q.clear()
                    q.extend(items[-self._history:])
                else:
                    q.append((s, T))

    def _edge(self, parent: str, child: str, stamp_ns: int | None, tol_ns: int) -> np.ndarray | None:
        key = (parent, child)
        if key in self._static:
            return self._static[key]
        q = self._edges.get(key)
        if not q:
            return None
        if stamp_ns is None:
            return q[-1][1]
        stamps = [e[0] for e in q]
        i = bisect.bisect_left(stamps, stamp_ns)
        best = min((j for j in (i - 1, i) if 0 <= j < len(q)), key=lambda j: abs(stamps[j] - stamp_ns))
        return q[best][1] if abs(stamps[best] - stamp_ns) <= tol_ns else None

    def _chain_to_root(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._parent and len(chain) < 64:
            chain.append(self._parent[chain[-1]])
        return chain

    def is_ancestor(self, ancestor: str, frame: str) -> bool:
        """Whether ``ancestor`` is above ``frame`` in the tree heard so far."""
        with self._lock:
            return ancestor in self._chain_to_root(frame)[1:]

    def lookup(self, target: str, source: str, stamp_ns: int | None = None,
               tolerance_ns: int = 50_000_000) -> np.ndarray | None:
        """``T_target_source`` at ``stamp_ns`` (None = latest), or None when the frames are not
        connected or an edge has no sample within ``tolerance_ns``."""
        with self._lock:
            if target == source:
                return np.eye(4)
            up_s, up_t = self._chain_to_root(source), self._chain_to_root(target)
            common = next((f for f in up_s if f in up_t), None)
            if common is None:
                return None

            def to_common(chain: list[str]) -> np.ndarray | None:
                T = np.eye(4)           # T_common_frame, built from the frame upwards
                for child, parent in zip(chain, chain[1:]):
                    if child == common:
                        break
                    E = self._edge(parent, child, stamp_ns, tolerance_ns)
                    if E is None:
                        return None
                    T = E @ T
                    if parent == common:
                        break
                return T

            T_c_s, T_c_t = to_common(up_s), to_common(up_t)
            if T_c_s is None or T_c_t is None:
                return None
            return invert_T(T_c_t) @ T_c_s
