"""``slam_node`` and ``tracker_node``: the ROS face of ``mast3r_ros.slam.SlamSystem``.

One node class, two roles (``Role``):

- ``slam`` (node ``slam``): tracking + relocalization (+ mapping when the mapper is
  available) on ONE engine; services ``reset``, ``get_keyframes``, ``set_pose``,
  ``relocalize``, ``save_map``, ``load_map``; latched map outputs (``map/keyframe_path``,
  ``map/points``, ``map/keyframes``).
- ``tracker`` (node ``tracker``): tracking (+ relocalization against its own keyframes)
  only; publishes every new keyframe on ``tracking/keyframes`` for a separate mapper;
  services ``reset``, ``set_pose``, ``get_keyframes``.

Both: subscribe ``image`` (sensor-data QoS) and ``camera_info``; publish
``tracking/odometry``, ``tracking/pose``, ``tracking/path``, ``tracking/status``,
``tracking/keyframes`` and TF ``map -> odom -> base_frame`` (or the camera frame), REP-105.
Who owns ``map -> odom``: this node, unless ``publish_map_odom`` is false (a tracker beside a
separate ``mapping_node``, which then publishes the mapper's correction there; see
``mast3r_ros.ros.mapping_node``).

Threading: the image callback only stores the message in a ``LatestFrameQueue`` (depth
``queue_depth``) and returns; ONE worker thread takes frames from it and runs inference.
Why a thread and not an executor callback: inference takes longer than the frame period,
and a callback would block an executor thread per frame, the rmw queue would hold stale
frames, and drops could not be counted. The services run on the MultiThreadedExecutor in a
reentrant group and share the engine with the worker through ``_engine_lock``, so a
service call waits at most one frame and never runs the engine concurrently.

Frames (REP-105): ``odom -> robot`` follows tracking continuously; jumps of the map pose
(relocalization, ``set_pose``, ``load_map``, ``reset``) go into ``map -> odom``, so
``map -> odom -> robot`` always equals the published map pose at the image stamp.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from enum import Enum

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rcl_interfaces.msg import IntegerRange, ParameterDescriptor

from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from mast3r_ros.geometry.transforms import invert_T
from mast3r_ros.msg import Keyframe as KeyframeMsg
from mast3r_ros.msg import TrackingStatus
from mast3r_ros.srv import GetKeyframes, LoadMap, Relocalize, Reset, SaveMap, SetPose

from . import params
from .config_params import declare_config, read_config
from .conversions import K_to_camera_info, image_to_rgb, matrix_to_pose, pose_to_matrix, \
    pose_with_covariance
from .frame_queue import LatestFrameQueue
from .markers import keyframe_markers
from .paths import header, make_path, odometry, pose_stamped, stamp_ns_of
from .pointcloud import xyz_rgb_to_pointcloud2
from .tf import TfBroadcaster, transform_stamped


class Role(Enum):
    SLAM = "slam"
    TRACKER = "tracker"


@dataclass(frozen=True)
class NodeOptions:
    """The node's own parameters (besides ``params.COMMON_PARAMETERS`` and ``tracking.*``)."""

    use_camera_info: bool = True    # false: always estimate intrinsics from the pointmaps
    queue_depth: int = 1            # frames waiting for the worker (1-2); older are dropped
    camera_frame: str = "camera_optical_frame"  # used when an image header has no frame_id
    path_max_poses: int = 10000     # tracking/path keeps the newest poses only (bounded)
    map_min_conf: float = 3.0       # map/points: fused confidence at least this
    map_voxel_size: float = 0.02    # map/points: one point per voxel (metres)
    map_max_points: int = 200000    # map/points: at most this many points
    frustum_depth: float = 0.1      # map/keyframes: drawn frustum depth (metres)
    map_pixel_stride: int = 2       # map/points: every n-th pointmap pixel per axis
    map_publish_period: float = 1.0  # map outputs are rebuilt at most this often (seconds)
    mapping: bool = True            # slam role: use the mapper when this build has one
    publish_map_odom: bool = True   # TF map -> odom; false when a mapping_node owns it
    mapping_mode: str = "background"  # sync | background: where the mapper runs (SlamConfig)


_OPTION_DOCS = {
    "use_camera_info": "use camera_info intrinsics (false, or a K of zeros/NaN: estimated from the pointmaps)",
    "queue_depth": "input frames waiting for inference (1-2); older frames are dropped and counted",
    "camera_frame": "camera frame name when an image header has no frame_id",
    "path_max_poses": "tracking/path keeps at most this many (newest) poses",
    "map_min_conf": "map/points: keep points whose fused confidence is at least this",
    "map_voxel_size": "map/points: voxel size of the subsampling, metres (> 0)",
    "map_max_points": "map/points: at most this many points",
    "frustum_depth": "map/keyframes: depth of the drawn camera frusta, metres",
    "map_pixel_stride": "map/points: use every n-th pointmap pixel per axis (>= 1)",
    "map_publish_period": "map/* outputs are rebuilt at most this often, seconds (> 0)",
    "mapping": "slam_node: run the mapper (pose-graph corrections) when this build has one",
    "publish_map_odom": "publish TF map -> odom (false: a separate mapping_node owns it, as "
                        "with slam.launch.py separate_mapping:=true; odom -> robot is still published)",
    "mapping_mode": "background: the mapper runs in its own thread and tracking never waits "
                    "for an alignment pass (corrections arrive a few frames later); sync: "
                    "inside each keyframe's frame (deterministic, tracking stalls during passes)",
}


def _latched(depth: int = 1) -> QoSProfile:
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


class SlamNode(Node):
    """See the module docstring. Raises ``params.ParameterError`` on bad parameters."""

    def __init__(self, role: Role = Role.SLAM, **kwargs) -> None:
        super().__init__(role.value, **kwargs)
        self.role = role
        self._warned: set[str] = set()
        params.declare_common(self)
        self.cfg = params.read_common(self)
        self.opts = self._declare_and_read_options()
        slam_config = self._declare_and_read_core_config()
        self.engine = params.create_engine(self.cfg, self.get_logger())
        from mast3r_ros.slam import SlamSystem

        mapper = self._make_mapper() if role is Role.SLAM and self.opts.mapping else None
        self.slam = SlamSystem(self.engine, slam_config, mapper=mapper,
                               localization_only=self.cfg.localization_only)
        if self.slam.relocalizer is None:
            self.get_logger().info("relocalization core not in this build: lost tracking is "
                                   "recovered by the tracker's built-in keyframe search")
        self._engine_lock = threading.Lock()  # the engine runs in one thread at a time
        self._state_lock = threading.Lock()   # odom/path bookkeeping
        self._reset_bookkeeping()
        self._K_info: np.ndarray | None = None
        self._info_event = threading.Event()   # set by the first camera_info
        self._info_size: tuple[int, int] | None = None
        self.queue = LatestFrameQueue(self.opts.queue_depth)
        self.frames_processed = 0   # frames tracked and published
        self.frames_taken = 0       # frames the worker took from the queue
        self.frames_done = 0        # ... and finished with (published or skipped)
        self._make_interfaces()
        if self.cfg.map_path:
            try:
                n = self.slam.load_map(self.cfg.map_path)
            except (ValueError, OSError) as exc:  # MapFormatError is a ValueError
                raise params.ParameterError(f"parameter 'map_path': cannot load "
                                            f"{self.cfg.map_path!r}: {exc}") from None
            self.get_logger().info(f"loaded {n} keyframes from {self.cfg.map_path}"
                                   + (" (localization only: the map is not changed)"
                                      if self.cfg.localization_only else ""))
            self._publish_map(self.get_clock().now().nanoseconds)
        elif self.cfg.localization_only:
            self.get_logger().warning("localization_only without map_path: frames are not "
                                      "tracked until a map is loaded (service load_map)")
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name=f"{role.value}_inference",
                                        daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"{role.value} ready: engine {self.cfg.engine.value}, queue depth "
            f"{self.opts.queue_depth}, camera_info {'used' if self.opts.use_camera_info else 'ignored'}"
            f", mapper {'on' if mapper is not None else 'off'}")

    # ------------------------------------------------------------------ parameters
    def _declare_and_read_options(self) -> NodeOptions:
        defaults = NodeOptions()
        values = {}
        for name in NodeOptions.__dataclass_fields__:
            d = getattr(defaults, name)
            desc = ParameterDescriptor(description=_OPTION_DOCS[name], read_only=True)
            if name == "queue_depth":
                desc.integer_range = [IntegerRange(from_value=1, to_value=2, step=1)]
            self.declare_parameter(name, d, desc)
            values[name] = self.get_parameter(name).value
        opts = NodeOptions(**values)
        for name in ("path_max_poses", "map_max_points", "map_pixel_stride"):
            if getattr(opts, name) < 1:
                raise params.ParameterError(f"parameter '{name}': expected >= 1, got {getattr(opts, name)}")
        for name in ("map_voxel_size", "frustum_depth", "map_publish_period"):
            if not getattr(opts, name) > 0:
                raise params.ParameterError(f"parameter '{name}': expected > 0, got {getattr(opts, name)}")
        if opts.mapping_mode not in ("sync", "background"):
            raise params.ParameterError(f"parameter 'mapping_mode': expected 'sync' or "
                                        f"'background', got {opts.mapping_mode!r}")
        if not 1 <= opts.queue_depth <= 2:
            raise params.ParameterError(f"parameter 'queue_depth': expected 1 or 2, got {opts.queue_depth}")
        return opts

    def _declare_and_read_core_config(self):
        """``tracking.*`` (TrackerConfig) and ``reloc.*`` (RelocConfig, when present)."""
        from mast3r_ros.slam import SlamConfig, TrackerConfig

        names = declare_config(self, TrackerConfig, "tracking", "TrackerConfig")
        reloc = None
        try:
            from mast3r_ros.reloc import RelocConfig
        except ImportError:
            RelocConfig = None
        if RelocConfig is not None:
            rnames = declare_config(self, RelocConfig, "reloc", "RelocConfig")
            reloc = read_config(self, rnames, "reloc")
        try:
            return SlamConfig(tracker=TrackerConfig.from_dict(read_config(self, names, "tracking")),
                              reloc=reloc, mapping_mode=self.opts.mapping_mode)
        except (TypeError, ValueError) as exc:
            raise params.ParameterError(f"parameters 'tracking.*' / 'reloc.*': {exc}") from None

    def _make_mapper(self):
        try:
            from mast3r_ros.slam.mapper import Mapper
        except ImportError:
            self.get_logger().info("mapper not in this build: keyframe poses stay as tracked")
            return None
        return Mapper(self.engine)

    # ------------------------------------------------------------------ interfaces
    def _make_interfaces(self) -> None:
        # Subscriptions only enqueue: a mutually exclusive group keeps them cheap and ordered.
        inputs = MutuallyExclusiveCallbackGroup()
        # Services may overlap each other; SlamSystem's lock and _engine_lock serialise them.
        services = ReentrantCallbackGroup()
        self.create_subscription(Image, "image", self._on_image, qos_profile_sensor_data,
                                 callback_group=inputs)
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info,
                                 qos_profile_sensor_data, callback_group=inputs)
        self.pub_odom = self.create_publisher(Odometry, "tracking/odometry", 10)
        self.pub_pose = self.create_publisher(PoseStamped, "tracking/pose", 10)
        self.pub_path = self.create_publisher(Path, "tracking/path", 1)
        self.pub_status = self.create_publisher(TrackingStatus, "tracking/status", 10)
        self.pub_keyframe = self.create_publisher(KeyframeMsg, "tracking/keyframes", 10)
        self.tf = TfBroadcaster(self) if self.cfg.publish_tf else None
        if self.tf is not None and not self.cfg.robot_frame_is_camera:
            self._static_camera_sent = False
        self.create_service(Reset, "reset", self._srv_reset, callback_group=services)
        self.create_service(SetPose, "set_pose", self._srv_set_pose, callback_group=services)
        self.create_service(GetKeyframes, "get_keyframes", self._srv_get_keyframes,
                            callback_group=services)
        if self.role is Role.SLAM:
            self.pub_kf_path = self.create_publisher(Path, "map/keyframe_path", _latched())
            self.pub_points = self.create_publisher(PointCloud2, "map/points", _latched())
            self.pub_markers = self.create_publisher(MarkerArray, "map/keyframes", _latched())
            self.pub_reloc = self.create_publisher(PoseWithCovarianceStamped,
                                                   "relocalization/pose", _latched())
            self.create_service(Relocalize, "relocalize", self._srv_relocalize,
                                callback_group=services)
            self.create_service(SaveMap, "save_map", self._srv_save_map, callback_group=services)
            self.create_service(LoadMap, "load_map", self._srv_load_map, callback_group=services)
            # Map outputs (cloud, frusta, keyframe path) cost O(keyframes): rebuilt by a timer
            # in its own group, at most every map_publish_period, never on the inference path.
            self._map_dirty: int | None = None
            # (steady clock: with use_sim_time a paused or finished bag must not stop it)
            self.create_timer(self.opts.map_publish_period, self._on_map_timer,
                              callback_group=MutuallyExclusiveCallbackGroup(),
                              clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _warn_once(self, kind: str, text: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            self.get_logger().warning(f"{text} (logged once per kind; such input is skipped)")

    # ------------------------------------------------------------------ input
    def _on_image(self, msg: Image) -> None:
        self.queue.put((msg, time.monotonic()))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        if not self.opts.use_camera_info:
            return
        self._on_camera_info_K(msg)
        self._info_event.set()

    def _on_camera_info_K(self, msg: CameraInfo) -> None:
        K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
        if not np.any(K) or np.isnan(K).any():
            self._warn_once("camera_info unknown K", "camera_info has a K of zeros or NaN: "
                            "intrinsics will be estimated from the pointmaps")
            self._K_info = None
            return
        if (not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0
                or not np.allclose(K[2], [0, 0, 1])):
            self._warn_once("camera_info bad K", f"camera_info K is not a pinhole matrix "
                            f"(expected fx, fy > 0 and last row 0 0 1), got {K.ravel().tolist()}")
            return
        self._K_info = K
        self._info_size = (int(msg.width), int(msg.height))

    def _K_for(self, width: int, height: int) -> np.ndarray | None:
        K, size = self._K_info, self._info_size
        if K is None:
            return None
        if size is not None and size != (0, 0) and size != (width, height):
            self._warn_once("camera_info size", f"camera_info is for {size[0]}x{size[1]} but "
                            f"images are {width}x{height}: intrinsics will be estimated")
            return None
        return K

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        while not self._stop.is_set():
            item = self.queue.get(timeout=0.1)
            if item is None:
                continue
            msg, _t_received = item
            self.frames_taken += 1
            try:
                self._process(msg)
            except Exception as exc:  # never fatal: log once per kind, keep serving
                self._warn_once(f"process {type(exc).__name__}",
                                f"frame at {stamp_ns_of(msg.header.stamp)} ns failed: "
                                f"{type(exc).__name__}: {exc}")
            finally:
                self.frames_done += 1

    def _process(self, msg: Image) -> None:
        from mast3r_ros.synth.sequence import stamp_id

        try:
            rgb = image_to_rgb(msg)
        except ValueError as exc:
            self._warn_once(f"image {msg.encoding}", f"bad image on 'image' "
                            f"({msg.width}x{msg.height} {msg.encoding!r}): {exc}")
            return
        stamp_ns = stamp_ns_of(msg.header.stamp)
        if self.opts.use_camera_info and not self._info_event.is_set():
            # the first image may overtake the first camera_info (another topic): wait a
            # moment rather than fix estimated intrinsics for the whole run
            if not self._info_event.wait(timeout=1.0):
                self._warn_once("no camera_info", "no camera_info within 1 s of the first "
                                "image: intrinsics are estimated from the pointmaps")
        K = self._K_for(rgb.shape[1], rgb.shape[0]) if self.opts.use_camera_info else None
        t0 = time.perf_counter()
        with self._engine_lock:
            res = self.slam.process(rgb, stamp_ns, K, frame_id=stamp_id(stamp_ns))
        processing_ms = (time.perf_counter() - t0) * 1e3
        self.frames_processed += 1
        camera_frame = msg.header.frame_id or self.opts.camera_frame
        corrected = None
        if (res.new_keyframe is not None or res.map_updated) and self.slam.mapper is not None:
            # the mapper moved keyframes: every past frame's pose follows (tracking/path is
            # re-published from the corrected trajectory; map -> odom takes the correction)
            corrected = self.slam.trajectory()[-self.opts.path_max_poses:]
        self._publish_frame(res, stamp_ns, camera_frame, processing_ms, corrected)
        if res.new_keyframe is not None:
            self.pub_keyframe.publish(self._keyframe_msg(res.new_keyframe, rgb.shape))
        if res.new_keyframe is not None or res.map_updated:
            self._map_dirty = stamp_ns   # the map timer rebuilds map/* off this thread

    # ------------------------------------------------------------------ outputs
    def _reset_bookkeeping(self) -> None:
        self._T_map_odom = np.eye(4)
        self._T_odom_robot: np.ndarray | None = None
        self._jump = True     # the next pose re-anchors map -> odom
        self._path: deque = deque(maxlen=self.opts.path_max_poses)

    def _robot(self, T_x_cam: np.ndarray) -> np.ndarray:
        return T_x_cam if self.cfg.robot_frame_is_camera else T_x_cam @ invert_T(self.cfg.T_base_cam)

    def _publish_frame(self, res, stamp_ns: int, camera_frame: str, processing_ms: float,
                       corrected: list | None = None) -> None:
        """``corrected``: the whole (corrected) trajectory after a mapper update, or None."""
        cfg = self.cfg
        robot_frame = camera_frame if cfg.robot_frame_is_camera else cfg.base_frame
        if res.T_map_cam is not None:
            T_map_robot = self._robot(res.T_map_cam)
            with self._state_lock:
                from mast3r_ros.slam import TrackingState

                if corrected is not None and self._path and self._T_odom_robot is not None:
                    # odom continues by the motion since the previous frame, measured on the
                    # corrected trajectory; map -> odom absorbs the correction (REP-105)
                    prev = dict(corrected).get(self._path[-1][0])
                    if prev is not None:
                        step = invert_T(self._robot(prev)) @ T_map_robot
                        self._T_map_odom = T_map_robot @ invert_T(self._T_odom_robot @ step)
                    self._path = deque(((s, self._robot(T)) for s, T in corrected[:-1]),
                                       maxlen=self.opts.path_max_poses)
                jump = self._jump or res.state is TrackingState.RELOCALIZED
                if jump or self._T_odom_robot is None:
                    # odom stays continuous; the correction goes into map -> odom
                    T_odom_robot = (self._T_odom_robot if self._T_odom_robot is not None
                                    else T_map_robot)
                    self._T_map_odom = T_map_robot @ invert_T(T_odom_robot)
                    self._jump = False
                self._T_odom_robot = invert_T(self._T_map_odom) @ T_map_robot
                T_map_odom, T_odom_robot = self._T_map_odom.copy(), self._T_odom_robot.copy()
                self._path.append((stamp_ns, T_map_robot))
                path = list(self._path)
            self.pub_odom.publish(odometry(T_odom_robot, stamp_ns, cfg.odom_frame, robot_frame))
            self.pub_pose.publish(pose_stamped(T_map_robot, stamp_ns, cfg.map_frame))
            self.pub_path.publish(make_path([s for s, _ in path], np.array([T for _, T in path]),
                                            cfg.map_frame, stamp_ns))
            if self.tf is not None:
                tfs = [transform_stamped(T_odom_robot, cfg.odom_frame, robot_frame, stamp_ns)]
                if self.opts.publish_map_odom:   # else a mapping_node owns map -> odom
                    tfs.insert(0, transform_stamped(T_map_odom, cfg.map_frame, cfg.odom_frame,
                                                    stamp_ns))
                if not cfg.robot_frame_is_camera and not self._static_camera_sent:
                    self.tf.send_static(transform_stamped(cfg.T_base_cam, cfg.base_frame,
                                                          camera_frame, stamp_ns))
                    self._static_camera_sent = True
                self.tf.send(tfs)
        st = TrackingStatus()
        st.header = header(stamp_ns, cfg.map_frame)
        st.state = int(res.state)
        st.state_name = res.state.name.lower()
        st.keyframe_id = res.keyframe_id or ""
        st.num_matches, st.num_inliers = int(res.num_matches), int(res.num_inliers)
        st.inlier_ratio, st.confidence = float(res.inlier_ratio), float(res.confidence)
        st.num_keyframes = len(self.slam.keyframes())
        st.processing_ms = float(processing_ms)
        st.frames_dropped = int(self.queue.dropped)
        now = self.get_clock().now().nanoseconds
        # image stamp -> publication on this node's clock (the bag's /clock with use_sim_time)
        st.latency_ms = (now - stamp_ns) / 1e6 if now > 0 else float("nan")
        self.pub_status.publish(st)

    def _keyframe_msg(self, kf, shape) -> KeyframeMsg:
        m = KeyframeMsg()
        m.header = header(kf.stamp_ns, self.cfg.map_frame)
        m.id = kf.id
        m.pose = matrix_to_pose(kf.T_map_cam)
        h, w = shape[:2]
        m.camera_info = K_to_camera_info(kf.K, w, h, header(kf.stamp_ns, self.opts.camera_frame))
        m.intrinsics_estimated = bool(kf.intrinsics_estimated)
        m.num_points = int((kf.conf >= self.opts.map_min_conf).sum().item())
        return m

    def _image_size(self, kf) -> tuple[int, int]:
        h, w = kf.view.transform.orig_size
        return int(w), int(h)

    def _on_map_timer(self) -> None:
        stamp_ns, self._map_dirty = self._map_dirty, None
        if stamp_ns is not None:
            try:
                self._publish_map(stamp_ns)
            except Exception as exc:  # never fatal
                self._warn_once(f"map {type(exc).__name__}", f"map outputs failed: {exc}")

    def _publish_map(self, stamp_ns: int) -> None:
        """Latched map outputs from the current keyframes (called on every new keyframe)."""
        kfs = self.slam.keyframes()
        frame = self.cfg.map_frame
        T = np.array([kf.T_map_cam for kf in kfs]).reshape(-1, 4, 4)
        self.pub_kf_path.publish(make_path([kf.stamp_ns for kf in kfs], T, frame, stamp_ns))
        if kfs:
            w, h = self._image_size(kfs[0])
            Ks = np.array([kf.K for kf in kfs])
        else:
            w, h, Ks = 1, 1, np.eye(3)
        self.pub_markers.publish(keyframe_markers(T, Ks, w, h, header(stamp_ns, frame),
                                                  depth=self.opts.frustum_depth))
        xyz, rgb = self._cloud(kfs)
        self.pub_points.publish(xyz_rgb_to_pointcloud2(xyz, rgb, header(stamp_ns, frame)))

    def _cloud(self, kfs) -> tuple[np.ndarray, np.ndarray]:
        o = self.opts
        mapper = self.slam.mapper
        if mapper is not None and hasattr(mapper, "point_cloud") and len(mapper) > 0:
            return mapper.point_cloud(o.map_max_points, o.map_voxel_size)
        from mast3r_ros.slam.cloud import voxel_downsample

        s = o.map_pixel_stride
        xyz_all, rgb_all = [], []
        for kf in kfs:
            conf = kf.conf[::s, ::s].reshape(-1).cpu().numpy()
            keep = conf >= o.map_min_conf
            pts = kf.pts3d[::s, ::s].reshape(-1, 3).cpu().numpy()[keep].astype(np.float64)
            T = kf.T_map_cam
            xyz_all.append(pts @ T[:3, :3].T + T[:3, 3])
            rgb_all.append(kf.colors[::s, ::s].reshape(-1, 3)[keep])
        if not xyz_all:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
        xyz, rgb = voxel_downsample(np.concatenate(xyz_all), np.concatenate(rgb_all),
                                    o.map_voxel_size)
        if len(xyz) > o.map_max_points:
            sel = np.random.default_rng(0).choice(len(xyz), o.map_max_points, replace=False)
            xyz, rgb = xyz[sel], rgb[sel]
        return xyz, rgb

    # ------------------------------------------------------------------ services
    def _service(self, resp, fn):
        """Run ``fn(resp)``; any error becomes ``success=False`` with the reason."""
        return params.answer_service(self.get_logger(), resp, fn)

    def _srv_reset(self, req, resp):
        def run(r):
            with self._engine_lock:
                self.queue.clear()
                self.slam.reset()
                with self._state_lock:
                    self._reset_bookkeeping()
            if self.role is Role.SLAM:
                self._publish_map(self.get_clock().now().nanoseconds)
            r.success, r.message = True, "map and tracking state dropped"
        return self._service(resp, run)

    def _srv_set_pose(self, req, resp):
        def run(r):
            T_map_robot = pose_to_matrix(req.pose.pose.pose)
            frame = req.pose.header.frame_id
            if frame and frame != self.cfg.map_frame:
                raise ValueError(f"pose.header.frame_id must be '{self.cfg.map_frame}' (or empty), "
                                 f"got '{frame}'")
            T_map_cam = (T_map_robot if self.cfg.robot_frame_is_camera
                         else T_map_robot @ self.cfg.T_base_cam)
            with self._engine_lock:
                self.slam.set_pose(T_map_cam)
                with self._state_lock:
                    self._jump = True
            r.success, r.message = True, "pose set"
        return self._service(resp, run)

    def _srv_get_keyframes(self, req, resp):
        def run(r):
            kfs = self.slam.keyframes()
            stamp = self.get_clock().now().nanoseconds
            r.keyframes = []
            for kf in kfs:
                w, h = self._image_size(kf)
                r.keyframes.append(self._keyframe_msg(kf, (h, w)))
            T = np.array([kf.T_map_cam for kf in kfs]).reshape(-1, 4, 4)
            r.path = make_path([kf.stamp_ns for kf in kfs], T, self.cfg.map_frame, stamp)
            r.success, r.message = True, f"{len(kfs)} keyframes"
        return self._service(resp, run)

    def _srv_relocalize(self, req, resp):
        from mast3r_ros.ros.conversions import camera_info_to_K
        from mast3r_ros.synth.sequence import stamp_id

        t0 = time.perf_counter()

        def run(r):
            reloc = self.slam.relocalizer
            if reloc is None:
                raise RuntimeError("the relocalization core is not in this build")
            rgb = image_to_rgb(req.image)
            K = camera_info_to_K(req.camera_info)
            stamp_ns = stamp_ns_of(req.image.header.stamp)
            with self._engine_lock:
                out = reloc.relocalize(rgb, K, req.reference_id or None,
                                       frame_id=stamp_id(stamp_ns))
            r.success, r.message = bool(out.success), out.message
            r.reference_id = out.reference_id or ""
            r.num_matches, r.num_inliers = int(out.num_matches), int(out.num_inliers)
            r.confidence = float(out.confidence)
            r.intrinsics_estimated = bool(out.intrinsics_estimated)
            if out.K is not None:
                r.camera_info = K_to_camera_info(out.K, rgb.shape[1], rgb.shape[0])
            if out.success and out.T_map_cam is not None:
                r.pose = pose_with_covariance(self._robot(out.T_map_cam), out.covariance,
                                              header(stamp_ns, self.cfg.map_frame))
                self.pub_reloc.publish(r.pose)
        resp = self._service(resp, run)
        resp.elapsed_ms = (time.perf_counter() - t0) * 1e3
        return resp

    def _srv_save_map(self, req, resp):
        def run(r):
            if not req.map_path:
                raise ValueError("map_path is empty; give a folder to save the map to")
            with self._engine_lock:
                n = self.slam.save_map(req.map_path, overwrite=bool(req.overwrite))
            r.success, r.message, r.num_keyframes = True, f"saved {n} keyframes", int(n)
        return self._service(resp, run)

    def _srv_load_map(self, req, resp):
        def run(r):
            if not req.map_path:
                raise ValueError("map_path is empty; give a map folder to load")
            with self._engine_lock:
                n = self.slam.load_map(req.map_path)
                with self._state_lock:
                    self._jump = True
            self._publish_map(self.get_clock().now().nanoseconds)
            r.success, r.message, r.num_keyframes = True, f"loaded {n} keyframes", int(n)
        return self._service(resp, run)

    # ------------------------------------------------------------------ shutdown
    def destroy_node(self) -> None:
        if threading.current_thread() is threading.main_thread():
            # shutting down already: a second SIGINT (a process group's, then launch's
            # forwarded one) must not interrupt the clean-up with a traceback
            import signal

            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if hasattr(self, "_worker"):
            self._stop.set()
            self.queue.close()
            for _ in range(3):   # SIGINT may come twice (the group's, then launch's)
                try:
                    self._worker.join(timeout=30)
                    break
                except KeyboardInterrupt:
                    continue
        if hasattr(self, "slam"):
            self.slam.close()   # the mapping thread (background mode), after its running pass
        super().destroy_node()


def main_slam(args=None) -> None:
    params.exit_main(lambda: SlamNode(Role.SLAM), args)


def main_tracker(args=None) -> None:
    params.exit_main(lambda: SlamNode(Role.TRACKER), args)
