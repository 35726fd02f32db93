"""``mapping_node`` (node ``mapping``): the mapper as its own process, beside a ``tracker_node``.

Thin over the ROS-free ``mast3r_ros.slam.mapper.Mapper``, with its OWN engine (one per
process, built from the common parameters like every node's).

Inputs: ``tracking/keyframes`` (``mast3r_ros/Keyframe``: stamp, id, the tracker's
uncorrected ``T_map_cam``, intrinsics; no image) and ``image`` (sensor-data QoS, the same
camera topic the tracker hears). Recent images are buffered by stamp (``image_buffer_size``,
oldest dropped); a keyframe takes the image with exactly its stamp. A keyframe whose image
is not buffered (yet) waits at most ``keyframe_wait_s`` (at most ``max_pending_keyframes``
wait at once), then is dropped with a warning and counted (``keyframes_dropped``; the
``get_keyframes`` message says how many). Paired keyframes go through a bounded queue
(``keyframe_queue_depth``; the oldest is dropped and counted when the mapper falls behind)
to ONE worker thread, which encodes the image once (``frame_id`` = the stamp id, which the
simulator engine needs) and calls ``add_to_mapper(mapper, kf, pose_is_corrected=False)``:
the tracker never sees the mapper's corrections, so the mapper carries them over itself
(see ``mast3r_ros.slam.map_link``). The executor callbacks only store and hand over.

Outputs (REP-105):

- TF ``map -> odom``: the correction ``T_map_odom = T_map_robot(corrected, latest keyframe)
  @ inv(T_odom_robot(tracker, same stamp))``, so ``map -> odom -> robot`` puts the latest
  keyframe at its corrected pose. ``T_odom_robot`` is read from the tracker's ``odom -> robot``
  TF at the keyframe stamp (falling back to the keyframe's own pose, i.e. a tracker whose
  ``map -> odom`` is identity, when that edge was not heard). Published at the keyframe
  stamp after each map update and re-published at the stamp of every ``odom -> *`` edge the
  tracker sends, so the chain resolves at every tracked frame. The tracker beside this node
  must NOT publish ``map -> odom`` itself: ``tracker_node`` with ``publish_map_odom: false``
  (``slam.launch.py separate_mapping:=true`` sets it).
- ``map/keyframe_path`` (latched), ``map/points`` (xyz + rgb, bounded, latched),
  ``map/keyframes`` (frusta, latched): corrected keyframes, rebuilt by a timer at most every
  ``map_publish_period`` s, never on the mapping thread's path.

Services: ``reset`` (resets the tracker first through its Reset service at
``tracker_reset_service``, by default ``tracking/reset`` where ``slam.launch.py`` remaps the
tracker's, then drops the map), ``get_keyframes``
(corrected poses and the mapper's intrinsics), ``save_map`` / ``load_map`` (answered with a
clear "not supported" error while the Mapper has no save/load API in this build).
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from nav_msgs.msg import Path
from sensor_msgs.msg import Image, PointCloud2
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from mast3r_ros.geometry.transforms import invert_T
from mast3r_ros.msg import Keyframe as KeyframeMsg
from mast3r_ros.srv import GetKeyframes, LoadMap, Reset, SaveMap

from . import params
from .config_params import declare_config, read_config
from .conversions import K_to_camera_info, image_to_rgb, matrix_to_pose, pose_to_matrix
from .frame_queue import LatestFrameQueue
from .markers import keyframe_markers
from .paths import header, make_path, stamp_ns_of
from .pointcloud import xyz_rgb_to_pointcloud2
from .stamp_pairing import StampPairing
from .tf import TF_TOPIC, TfBroadcaster, tf_qos, transform_stamped, transform_to_matrix


@dataclass(frozen=True)
class MappingOptions:
    """The mapping node's own parameters (besides ``params.COMMON_PARAMETERS`` and ``mapper.*``)."""

    image_buffer_size: int = 30     # recent images kept for pairing (oldest dropped)
    keyframe_wait_s: float = 2.0    # a keyframe waits this long for its image, then is dropped
    max_pending_keyframes: int = 10  # keyframes waiting for their image at once (oldest dropped)
    keyframe_queue_depth: int = 16  # paired keyframes waiting for the mapper (oldest dropped)
    camera_frame: str = "camera_optical_frame"  # used when an image header has no frame_id
    map_voxel_size: float = 0.02    # map/points: one point per voxel (metres)
    map_max_points: int = 200000    # map/points: at most this many points
    frustum_depth: float = 0.1      # map/keyframes: drawn frustum depth (metres)
    map_publish_period: float = 1.0  # map outputs are rebuilt at most this often (seconds)
    tracker_reset_service: str = "tracking/reset"  # reset also resets the tracker there ("" = no)


_OPTION_DOCS = {
    "image_buffer_size": "images kept by stamp for pairing with keyframes (>= 1; oldest dropped)",
    "keyframe_wait_s": "seconds a keyframe waits for its image before it is dropped (> 0)",
    "max_pending_keyframes": "keyframes waiting for their image at once (>= 1; oldest dropped)",
    "keyframe_queue_depth": "paired keyframes waiting for the mapper (>= 1; oldest dropped, counted)",
    "camera_frame": "camera frame name when an image header has no frame_id",
    "map_voxel_size": "map/points: voxel size of the subsampling, metres (> 0)",
    "map_max_points": "map/points: at most this many points",
    "frustum_depth": "map/keyframes: depth of the drawn camera frusta, metres",
    "map_publish_period": "map/* outputs are rebuilt at most this often, seconds (> 0)",
    "tracker_reset_service": "the tracker's Reset service (relative names are in this node's "
                             "namespace): 'reset' resets the tracker there first, so one call "
                             "restarts both; '' = reset the map only",
}


@dataclass
class ReceivedKeyframe:
    """A tracker keyframe as ``map_link.add_to_mapper`` reads it (the image joined by stamp)."""

    id: str
    stamp_ns: int
    T_map_cam: np.ndarray     # (4, 4) the tracker's (uncorrected) pose
    K: np.ndarray | None      # (3, 3) at image resolution
    intrinsics_estimated: bool
    view: object              # EncodedView of ``image``
    image: np.ndarray         # (H, W, 3) uint8 RGB


@dataclass
class _KeyframeRecord:
    """What the node keeps per mapped keyframe (besides the mapper's own state)."""

    stamp_ns: int
    T_track: np.ndarray
    intrinsics_estimated: bool
    num_points: int
    width: int
    height: int
    camera_frame: str


def _latched(depth: int = 1) -> QoSProfile:
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


class MappingNode(Node):
    """See the module docstring. Raises ``params.ParameterError`` on bad parameters."""

    def __init__(self, **kwargs) -> None:
        super().__init__("mapping", **kwargs)
        self._warned: set[str] = set()
        params.declare_common(self)
        self.cfg = params.read_common(self)
        self.opts = self._declare_and_read_options()
        mapper_config = self._declare_and_read_mapper_config()
        if self.cfg.map_path:
            raise params.ParameterError(
                f"parameter 'map_path' ({self.cfg.map_path!r}): mapping_node cannot load maps in "
                "this build (the Mapper has no load API yet); leave it empty")
        self.engine = params.create_engine(self.cfg, self.get_logger())
        from mast3r_ros.slam.mapper import Mapper

        self.mapper = Mapper(self.engine, mapper_config)
        self._map_lock = threading.Lock()     # one mapper update (or reset) at a time
        self._state_lock = threading.Lock()   # records and correction: held briefly only
        self._records: OrderedDict[str, _KeyframeRecord] = OrderedDict()
        self._T_map_odom = np.eye(4)
        self._odom_edges: OrderedDict[int, np.ndarray] = OrderedDict()  # stamp -> T_odom_robot
        self._odom_lock = threading.Lock()
        self.pairing = StampPairing(self.opts.image_buffer_size, self.opts.keyframe_wait_s,
                                    self.opts.max_pending_keyframes)
        self.queue = LatestFrameQueue(self.opts.keyframe_queue_depth)
        self.keyframes_received = 0    # keyframe messages heard
        self.keyframes_mapped = 0      # ... added to the mapper
        self.keyframes_failed = 0      # ... whose mapping raised (logged)
        self.tf_fallbacks = 0          # map -> odom computed without the tracker's odom edge
        self.map_publications = 0      # map/* rebuilds
        self._work_left = 0            # keyframes queued or in the worker (under _state_lock)
        self._map_dirty: int | None = None
        self._make_interfaces()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="mapping_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"mapping ready: engine {self.cfg.engine.value}, image buffer "
            f"{self.opts.image_buffer_size}, keyframe queue {self.opts.keyframe_queue_depth}")

    # ------------------------------------------------------------------ parameters
    def _declare_and_read_options(self) -> MappingOptions:
        defaults = MappingOptions()
        values = {}
        for name in MappingOptions.__dataclass_fields__:
            self.declare_parameter(name, getattr(defaults, name),
                                   ParameterDescriptor(description=_OPTION_DOCS[name],
                                                       read_only=True))
            values[name] = self.get_parameter(name).value
        opts = MappingOptions(**values)
        for name in ("image_buffer_size", "max_pending_keyframes", "keyframe_queue_depth",
                     "map_max_points"):
            if getattr(opts, name) < 1:
                raise params.ParameterError(f"parameter '{name}': expected >= 1, got {getattr(opts, name)}")
        for name in ("keyframe_wait_s", "map_voxel_size", "frustum_depth", "map_publish_period"):
            if not getattr(opts, name) > 0:
                raise params.ParameterError(f"parameter '{name}': expected > 0, got {getattr(opts, name)}")
        return opts

    def _declare_and_read_mapper_config(self):
        from mast3r_ros.slam.mapper import MapperConfig

        names = declare_config(self, MapperConfig, "mapper", "MapperConfig", "config/mapping.yaml")
        try:
            return MapperConfig.from_dict(read_config(self, names, "mapper"))
        except (TypeError, ValueError) as exc:
            raise params.ParameterError(f"parameters 'mapper.*': {exc}") from None

    # ------------------------------------------------------------------ interfaces
    def _make_interfaces(self) -> None:
        inputs = MutuallyExclusiveCallbackGroup()   # cheap callbacks: store and hand over
        services = ReentrantCallbackGroup()
        self.create_subscription(Image, "image", self._on_image, qos_profile_sensor_data,
                                 callback_group=inputs)
        self.create_subscription(KeyframeMsg, "tracking/keyframes", self._on_keyframe, 100,
                                 callback_group=inputs)
        self.pub_kf_path = self.create_publisher(Path, "map/keyframe_path", _latched())
        self.pub_points = self.create_publisher(PointCloud2, "map/points", _latched())
        self.pub_markers = self.create_publisher(MarkerArray, "map/keyframes", _latched())
        self.tf = TfBroadcaster(self) if self.cfg.publish_tf else None
        if self.tf is not None:
            # the tracker's odom -> robot edges: their stamps and values anchor map -> odom
            self.create_subscription(TFMessage, TF_TOPIC, self._on_tf, tf_qos(),
                                     callback_group=MutuallyExclusiveCallbackGroup())
        self.create_service(Reset, "reset", self._srv_reset, callback_group=services)
        self._tracker_reset = (self.create_client(Reset, self.opts.tracker_reset_service,
                                                  callback_group=services)
                               if self.opts.tracker_reset_service else None)
        self.create_service(GetKeyframes, "get_keyframes", self._srv_get_keyframes,
                            callback_group=services)
        self.create_service(SaveMap, "save_map", self._srv_save_map, callback_group=services)
        self.create_service(LoadMap, "load_map", self._srv_load_map, callback_group=services)
        # steady clock: with use_sim_time a paused or finished bag must not stop the map
        # outputs; the same timer expires keyframes whose image never came
        self.create_timer(min(self.opts.map_publish_period, 0.25), self._on_timer,
                          callback_group=MutuallyExclusiveCallbackGroup(),
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._last_map_publish = -np.inf

    def _warn_once(self, kind: str, text: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            self.get_logger().warning(f"{text} (logged once per kind)")

    # ------------------------------------------------------------------ input
    def _on_image(self, msg: Image) -> None:
        for pair in self.pairing.add_image(stamp_ns_of(msg.header.stamp), msg):
            self._enqueue(*pair)

    def _on_keyframe(self, msg: KeyframeMsg) -> None:
        self.keyframes_received += 1
        pairs, dropped = self.pairing.add_keyframe(stamp_ns_of(msg.header.stamp), msg)
        self._report_dropped(dropped)
        for pair in pairs:
            self._enqueue(*pair)

    def _enqueue(self, kf_msg: KeyframeMsg, image: Image) -> None:
        with self._state_lock:
            self._work_left += 1
            n = self.queue.put((kf_msg, image))
            self._work_left -= n
        if n:
            self.get_logger().warning(
                f"the mapper is behind: a keyframe was dropped unmapped ({self.queue.dropped} so "
                f"far; keyframe_queue_depth {self.opts.keyframe_queue_depth})")

    def _report_dropped(self, dropped: list) -> None:
        for m in dropped:
            self.get_logger().warning(
                f"keyframe {m.id!r} (stamp {stamp_ns_of(m.header.stamp)} ns) dropped: its image "
                f"did not arrive within keyframe_wait_s={self.opts.keyframe_wait_s} "
                f"({self.keyframes_dropped} dropped so far)")

    @property
    def keyframes_dropped(self) -> int:
        """Keyframes never mapped: no image in time, or pushed out of the mapper's queue."""
        return self.pairing.counts.keyframes_dropped + self.queue.dropped

    def _on_tf(self, msg: TFMessage) -> None:
        out = []
        odom = self.cfg.odom_frame
        for t in msg.transforms:
            if t.header.frame_id != odom or t.child_frame_id == odom or (
                    not self.cfg.robot_frame_is_camera and t.child_frame_id != self.cfg.base_frame):
                continue
            try:
                T = transform_to_matrix(t)
            except ValueError:
                continue
            stamp = stamp_ns_of(t.header.stamp)
            with self._odom_lock:
                self._odom_edges[stamp] = T
                while len(self._odom_edges) > max(self.opts.image_buffer_size, 100):
                    self._odom_edges.popitem(last=False)
            with self._state_lock:
                mapped = bool(self._records)
                T_map_odom = self._T_map_odom.copy()
            if mapped:
                out.append(transform_stamped(T_map_odom, self.cfg.map_frame, odom, stamp))
        if out:
            self.tf.send(out)

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        while not self._stop.is_set():
            item = self.queue.get(timeout=0.1)
            if item is None:
                continue
            kf_msg, image = item
            try:
                self._map_keyframe(kf_msg, image)
            except Exception as exc:  # never fatal: count, log once per kind, keep mapping
                self.keyframes_failed += 1
                self._warn_once(f"map {type(exc).__name__}",
                                f"keyframe {kf_msg.id!r} could not be mapped: "
                                f"{type(exc).__name__}: {exc}")
            finally:
                with self._state_lock:
                    self._work_left -= 1

    def _map_keyframe(self, msg: KeyframeMsg, image: Image) -> None:
        from mast3r_ros.slam.map_link import add_to_mapper
        from mast3r_ros.synth.sequence import stamp_id

        rgb = image_to_rgb(image)
        stamp = stamp_ns_of(msg.header.stamp)
        h, w = rgb.shape[:2]
        K = np.asarray(msg.camera_info.k, dtype=np.float64).reshape(3, 3)
        if (int(msg.camera_info.width), int(msg.camera_info.height)) not in ((w, h), (0, 0)):
            raise ValueError(f"its camera_info is for {msg.camera_info.width}x"
                             f"{msg.camera_info.height} but the image is {w}x{h}")
        if not np.all(np.isfinite(K)) or K[0, 0] <= 0:
            K = None
        kf = ReceivedKeyframe(id=str(msg.id), stamp_ns=stamp, T_map_cam=pose_to_matrix(msg.pose),
                              K=K, intrinsics_estimated=bool(msg.intrinsics_estimated) or K is None,
                              view=self.engine.encode(rgb, frame_id=stamp_id(stamp)), image=rgb)
        camera_frame = image.header.frame_id or self.opts.camera_frame
        with self._map_lock:
            update = add_to_mapper(self.mapper, kf, pose_is_corrected=False)
            T_map_odom = self._correction(kf, np.asarray(update.poses[kf.id], dtype=np.float64))
            with self._state_lock:
                self._records[kf.id] = _KeyframeRecord(stamp, kf.T_map_cam,
                                                       kf.intrinsics_estimated,
                                                       int(msg.num_points), w, h, camera_frame)
                self._T_map_odom = T_map_odom
            self.keyframes_mapped += 1
        if self.tf is not None:
            self.tf.send(transform_stamped(T_map_odom, self.cfg.map_frame, self.cfg.odom_frame,
                                           stamp))
        self._map_dirty = stamp

    def _robot(self, T_x_cam: np.ndarray) -> np.ndarray:
        return T_x_cam if self.cfg.robot_frame_is_camera else T_x_cam @ invert_T(self.cfg.T_base_cam)

    def _correction(self, kf: ReceivedKeyframe, T_corr_cam: np.ndarray) -> np.ndarray:
        """``T_map_odom`` putting the keyframe's robot at its corrected pose."""
        with self._odom_lock:
            T_odom_robot = self._odom_edges.get(kf.stamp_ns)
        if T_odom_robot is None:   # not heard: a tracker whose map -> odom is identity
            self.tf_fallbacks += 1
            if self.tf is not None:
                self._warn_once("no odom edge", "no odom -> robot TF from the tracker at a "
                                "keyframe stamp: map -> odom assumes the tracker's map and odom "
                                "frames coincide")
            T_odom_robot = self._robot(kf.T_map_cam)
        T_corr = T_corr_cam.copy()
        U, _, Vt = np.linalg.svd(T_corr[:3, :3])   # float32 rotations: re-orthonormalise
        T_corr[:3, :3] = U @ Vt
        return self._robot(T_corr) @ invert_T(T_odom_robot)

    @property
    def idle(self) -> bool:
        """No keyframe waiting for or inside the mapper (pending images aside)."""
        with self._state_lock:
            return self._work_left == 0

    # ------------------------------------------------------------------ map outputs
    def _on_timer(self) -> None:
        self._report_dropped(self.pairing.expire())
        t = time.monotonic()
        if self._map_dirty is None or t - self._last_map_publish < self.opts.map_publish_period:
            return
        stamp, self._map_dirty = self._map_dirty, None
        self._last_map_publish = t
        try:
            self._publish_map(stamp)
        except Exception as exc:  # never fatal
            self._warn_once(f"map outputs {type(exc).__name__}", f"map outputs failed: {exc}")

    def _snapshot(self):
        """(ids, records, corrected T_map_cam (N, 4, 4), K (N, 3, 3)) in map order."""
        order = self.mapper.keyframe_ids()
        poses = self.mapper.poses()     # (each call holds the mapper's lock; a keyframe
        Ks = self.mapper.intrinsics()   # added between them is left for the next rebuild)
        with self._state_lock:
            ids = [k for k in order if k in self._records and k in poses and k in Ks]
            recs = [self._records[k] for k in ids]
        T = np.array([poses[k] for k in ids], dtype=np.float64).reshape(-1, 4, 4)
        for i in range(len(T)):
            U, _, Vt = np.linalg.svd(T[i, :3, :3])
            T[i, :3, :3] = U @ Vt
        K = np.array([Ks[k] for k in ids], dtype=np.float64).reshape(-1, 3, 3)
        return ids, recs, T, K

    def _publish_map(self, stamp_ns: int) -> None:
        ids, recs, T, K = self._snapshot()
        frame = self.cfg.map_frame
        self.pub_kf_path.publish(make_path([r.stamp_ns for r in recs], T, frame, stamp_ns))
        if recs:
            w, h = recs[0].width, recs[0].height
        else:
            w, h, K = 1, 1, np.eye(3)
        self.pub_markers.publish(keyframe_markers(T, K, w, h, header(stamp_ns, frame),
                                                  depth=self.opts.frustum_depth))
        if ids:
            xyz, rgb = self.mapper.point_cloud(self.opts.map_max_points, self.opts.map_voxel_size)
        else:
            xyz, rgb = np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
        self.pub_points.publish(xyz_rgb_to_pointcloud2(xyz, rgb, header(stamp_ns, frame)))
        self.map_publications += 1

    # ------------------------------------------------------------------ services
    def _service(self, resp, fn):
        """Run ``fn(resp)``; any error becomes ``success=False`` with the reason."""
        return params.answer_service(self.get_logger(), resp, fn)

    def _srv_reset(self, req, resp):
        def run(r):
            tracker = self._reset_tracker()   # first: no keyframe of the old map comes after
            with self._state_lock:
                self._work_left -= self.queue.clear()
            self.pairing.clear()
            with self._map_lock:
                self.mapper.reset()
                with self._state_lock:
                    self._records.clear()
                    self._T_map_odom = np.eye(4)
            self._map_dirty = None
            self._publish_map(self.get_clock().now().nanoseconds)
            r.success, r.message = True, f"map dropped; {tracker}"
        return self._service(resp, run)

    def _reset_tracker(self, timeout_s: float = 5.0) -> str:
        """Call the tracker's reset service; returns what happened (for the reply)."""
        client = self._tracker_reset
        if client is None:
            return "tracker not reset (tracker_reset_service is '')"
        name = client.srv_name
        if not client.wait_for_service(timeout_sec=min(timeout_s, 1.0)):
            return f"no tracker reset service at {name} (tracker not reset)"
        done = threading.Event()
        fut = client.call_async(Reset.Request())
        fut.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout_s):
            fut.cancel()
            return f"the tracker's reset at {name} did not answer within {timeout_s} s"
        res = fut.result()
        return (f"tracker reset at {name}" if res is not None and res.success
                else f"tracker reset at {name} failed: {getattr(res, 'message', '')}")

    def _srv_get_keyframes(self, req, resp):
        def run(r):
            ids, recs, T, K = self._snapshot()
            r.keyframes = []
            for kid, rec, T_i, K_i in zip(ids, recs, T, K):
                m = KeyframeMsg()
                m.header = header(rec.stamp_ns, self.cfg.map_frame)
                m.id = kid
                m.pose = matrix_to_pose(T_i)
                m.camera_info = K_to_camera_info(K_i, rec.width, rec.height,
                                                 header(rec.stamp_ns, rec.camera_frame))
                m.intrinsics_estimated = rec.intrinsics_estimated
                m.num_points = rec.num_points
                r.keyframes.append(m)
            r.path = make_path([rec.stamp_ns for rec in recs], T, self.cfg.map_frame,
                               self.get_clock().now().nanoseconds)
            r.success = True
            r.message = (f"{len(ids)} keyframes (received {self.keyframes_received}, dropped "
                         f"{self.keyframes_dropped}, failed {self.keyframes_failed})")
        return self._service(resp, run)

    def _srv_save_map(self, req, resp):
        def run(r):
            raise NotImplementedError(
                "mapping_node cannot save maps in this build (the Mapper has no save API yet); "
                "use slam_node's save_map")
        return self._service(resp, run)

    def _srv_load_map(self, req, resp):
        def run(r):
            raise NotImplementedError(
                "mapping_node cannot load maps in this build (the Mapper has no load API yet); "
                "use slam_node's load_map")
        return self._service(resp, run)

    # ------------------------------------------------------------------ shutdown
    def destroy_node(self) -> None:
        if threading.current_thread() is threading.main_thread():
            import signal

            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second SIGINT must not interrupt
        if hasattr(self, "_worker"):
            self._stop.set()
            self.queue.close()
            # a keyframe inside the mapper cannot be interrupted (a full pass may take
            # seconds on a CPU): wait briefly, then leave it (daemon thread) so SIGINT stops
            # the process within launch's grace period; queued keyframes are not mapped
            for _ in range(3):
                try:
                    self._worker.join(timeout=2.0)
                    break
                except KeyboardInterrupt:
                    continue
        super().destroy_node()


def main(args=None) -> None:
    import sys

    # 4 executor threads: the map timer and a service may wait on the mapper while the
    # image / keyframe / TF callbacks keep flowing
    sys.exit(params.run_node(MappingNode, args, num_threads=4))
