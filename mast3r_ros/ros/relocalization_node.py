"""``relocalization_node``: "where am I?" from one image, as ROS 2 services.

A thin node over the ROS-free ``mast3r_ros.reloc.Relocalizer``. Names (relative to the node's
namespace, ``mast3r`` in the launch files) follow ``ROS_API.md``:

Services: ``relocalize`` (Relocalize), ``set_reference`` (SetReference), ``save_map`` (SaveMap),
``load_map`` (LoadMap), ``reset`` (Reset), ``get_keyframes`` (GetKeyframes).
Publishes: ``relocalization/pose`` (PoseWithCovarianceStamped, latched: last success) and, with
``publish_tf``, ``map_frame -> odom_frame`` on ``/tf`` so that the odometry chain
(``odom -> base_frame`` or ``odom -> camera``, read from ``/tf``) lands on the last relocalized
pose; without any odometry on ``/tf`` the robot is taken to stand at the odom origin.

Bad requests never kill the node: every service answers ``success=false`` with a message
naming the problem (image, camera_info, pose, reference id, map path) and keeps serving.
"""
from __future__ import annotations

import threading
import time
import traceback

import numpy as np
import rclpy
from geometry_msgs.msg import PoseWithCovarianceStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from mast3r_ros.geometry.transforms import invert_T
from mast3r_ros.ros import params
from mast3r_ros.ros import tf as rtf
from mast3r_ros.ros.conversions import (
    K_to_camera_info,
    camera_info_to_K,
    covariance_to_list,
    image_to_rgb,
    keyframe_msg,
    matrix_to_pose,
    path_msg,
    pose_to_matrix,
    stamp_ns,
)
from mast3r_ros.srv import GetKeyframes, LoadMap, Relocalize, Reset, SaveMap, SetReference

NODE_NAME = "relocalization"
MAX_IMAGE_PIXELS_DEFAULT = 16_000_000
_MAX_MESSAGE = 300  # characters of an exception text echoed in a response


class RequestError(ValueError):
    """A request field is bad; the message names it (answered as success=false)."""


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "..."


def _field_comments(cls) -> dict[str, str]:
    """field name -> its trailing ``# comment`` in the dataclass source (the documentation of
    our config fields), for parameter descriptions."""
    import inspect
    import re

    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out = {}
    for m in re.finditer(r"^\s+(\w+)\s*:[^=\n]*=[^#\n]*#\s*(.+)$", src, re.M):
        out[m.group(1)] = m.group(2).strip()
    return out


class RelocalizationNode(Node):
    """See the module docstring. ``engine`` may be passed in (tests, composition); otherwise
    it is created once from the parameters (``params.create_engine``)."""

    def __init__(self, *, engine=None, **node_kwargs) -> None:
        super().__init__(node_kwargs.pop("node_name", NODE_NAME), **node_kwargs)
        params.declare_common(self)
        self.declare_parameter("max_image_pixels", MAX_IMAGE_PIXELS_DEFAULT, ParameterDescriptor(
            description="largest image (width*height) a request may carry; larger ones are refused",
            read_only=True))
        self.declare_parameter("tf_rate_hz", 20.0, ParameterDescriptor(
            description="rate of the map -> odom broadcast once a relocalization succeeded (Hz, > 0)",
            read_only=True))
        self.cfg = params.read_common(self)
        self.max_pixels = int(self.get_parameter("max_image_pixels").value)
        tf_rate = float(self.get_parameter("tf_rate_hz").value)
        if self.max_pixels <= 0:
            raise params.ParameterError(f"parameter 'max_image_pixels': expected > 0, got {self.max_pixels}")
        if not 0 < tf_rate <= 1000:
            raise params.ParameterError(f"parameter 'tf_rate_hz': expected in (0, 1000], got {tf_rate}")
        reloc_cfg = self._declare_reloc_config()

        from mast3r_ros.reloc import Relocalizer

        # ONE engine per process, created once (the network is the expensive part).
        self.engine = engine if engine is not None else params.create_engine(self.cfg, self.get_logger())
        self.reloc = Relocalizer(self.engine, reloc_cfg)
        self._sim = self.cfg.engine is params.EngineKind.SIMULATOR

        # Consistency under several clients:
        # - relocalize and set_reference run inference on the one engine: they share a
        #   MutuallyExclusiveCallbackGroup, so one inference runs at a time (parallel
        #   inference would only contend for the same cores / GPU and double peak memory).
        # - save_map, load_map, reset and get_keyframes sit in a ReentrantCallbackGroup so
        #   they are not stuck in the executor queue behind a long inference.
        # - Every access to the reference store, from either group, holds ``self._lock``:
        #   a load_map or reset never swaps the store under a running relocalize, a save
        #   sees a complete set, and get_keyframes a consistent snapshot. Request decoding
        #   and validation happen before taking the lock.
        # - ``self._tf_lock`` guards the last map -> odom correction, read by the TF timer
        #   (its own group, so TF keeps flowing during inference).
        self._lock = threading.RLock()
        self._tf_lock = threading.Lock()
        self._T_map_odom: np.ndarray | None = None
        infer = MutuallyExclusiveCallbackGroup()
        store = ReentrantCallbackGroup()
        tf_group = MutuallyExclusiveCallbackGroup()

        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pose_pub = self.create_publisher(PoseWithCovarianceStamped, "relocalization/pose", latched)
        self.create_service(Relocalize, "relocalize", self._relocalize, callback_group=infer)
        self.create_service(SetReference, "set_reference", self._set_reference, callback_group=infer)
        self.create_service(SaveMap, "save_map", self._save_map, callback_group=store)
        self.create_service(LoadMap, "load_map", self._load_map, callback_group=store)
        self.create_service(Reset, "reset", self._reset, callback_group=store)
        self.create_service(GetKeyframes, "get_keyframes", self._get_keyframes, callback_group=store)

        self.tf = None
        self.tf_listener = None
        if self.cfg.publish_tf:
            self.tf = rtf.TfBroadcaster(self)
            self.tf_listener = rtf.TfListener(self, callback_group=tf_group)
            self.create_timer(1.0 / tf_rate, self._publish_tf, callback_group=tf_group)

        if self.cfg.map_path:
            try:
                n = self.reloc.load(self.cfg.map_path)
            except (OSError, ValueError, KeyError) as exc:
                raise params.ParameterError(f"parameter 'map_path': cannot load {self.cfg.map_path!r}: "
                                            f"{_short(exc)}") from None
            self.get_logger().info(f"loaded map {self.cfg.map_path}: {n} keyframes")
        self.get_logger().info(
            f"relocalization ready ({self.cfg.engine.value} engine, map frame '{self.cfg.map_frame}', "
            f"{len(self.reloc.reference_ids())} references)")

    # -- parameters ------------------------------------------------------------------------
    def _declare_reloc_config(self):
        """``reloc.<field>`` parameters for every scalar field of ``RelocConfig``."""
        import dataclasses

        from mast3r_ros.reloc import RelocConfig

        values = {}
        docs = _field_comments(RelocConfig)
        for f in dataclasses.fields(RelocConfig):
            default = f.default if f.default is not dataclasses.MISSING else None
            if hasattr(default, "value") and not isinstance(default, (bool, int, float, str)):
                default = default.value          # Enum -> its value
            if not isinstance(default, (bool, int, float, str)):
                continue
            name = f"reloc.{f.name}"
            self.declare_parameter(name, default, ParameterDescriptor(
                description=docs.get(f.name) or f"RelocConfig.{f.name} (see mast3r_ros.reloc.RelocConfig)",
                read_only=True))
            values[f.name] = self.get_parameter(name).value
        try:
            return RelocConfig.from_dict(values)
        except (TypeError, ValueError) as exc:
            raise params.ParameterError(f"parameters 'reloc.*': {exc}") from None

    # -- request helpers ----------------------------------------------------------------------
    def _image(self, msg, field: str = "image") -> np.ndarray:
        h, w = int(msg.height), int(msg.width)
        if h * w > self.max_pixels:
            raise RequestError(f"{field}: {w}x{h} exceeds max_image_pixels = {self.max_pixels}")
        try:
            return image_to_rgb(msg)
        except ValueError as exc:
            raise RequestError(f"{field}: {exc}") from None

    @staticmethod
    def _K(info, rgb: np.ndarray, field: str = "camera_info") -> np.ndarray | None:
        try:
            K = camera_info_to_K(info)
        except ValueError as exc:
            raise RequestError(f"{field}: {exc}") from None
        if K is not None and info.width and info.height and (info.width, info.height) != (rgb.shape[1], rgb.shape[0]):
            raise RequestError(f"{field}: calibrated for {info.width}x{info.height}, image is "
                               f"{rgb.shape[1]}x{rgb.shape[0]}")
        return K

    def _frame_id(self, header) -> str:
        """The engine's frame id of an image: its stamp as ``sec.nanosec`` (the simulator
        finds its ground-truth frame by it; for the network it is a label)."""
        from mast3r_ros.synth.sequence import stamp_id

        return stamp_id(stamp_ns(header.stamp))

    def _guard(self, name: str, request, response, body):
        """Run ``body``; any failure becomes success=false with a message (never raises)."""
        try:
            return body(request, response)
        except RequestError as exc:
            response.success, response.message = False, str(exc)
        except Exception as exc:  # noqa: BLE001 -- a node must answer and keep serving
            self.get_logger().error(f"{name}: unexpected {type(exc).__name__}: {exc}\n"
                                    f"{traceback.format_exc()}")
            response.success = False
            response.message = f"{name} failed: {type(exc).__name__}: {_short(exc)}"
        if not response.success:
            self.get_logger().warning(f"{name}: {response.message}")
        return response

    # -- services -------------------------------------------------------------------------
    def _relocalize(self, request, response):
        t0 = time.perf_counter()
        out = self._guard("relocalize", request, response, self._relocalize_body)
        out.elapsed_ms = (time.perf_counter() - t0) * 1e3
        return out

    def _relocalize_body(self, req, resp):
        rgb = self._image(req.image)
        K = self._K(req.camera_info, rgb)
        ref_id = req.reference_id or None
        stamp = req.image.header.stamp
        with self._lock:
            ids = self.reloc.reference_ids()
            if not ids:
                raise RequestError("no reference keyframes yet: call set_reference or load_map first")
            if ref_id is not None and ref_id not in ids:
                shown = ids[:10] + (["..."] if len(ids) > 10 else [])
                raise RequestError(f"reference_id: unknown reference {ref_id!r}; known: {shown}")
            try:
                res = self.reloc.relocalize(rgb, K, ref_id, frame_id=self._frame_id(req.image.header))
            except KeyError as exc:
                if self._sim:
                    raise RequestError(f"image: not a frame of the simulator's bag ({_short(exc)})") from None
                raise
        resp.success, resp.message = bool(res.success), str(res.message)
        resp.reference_id = res.reference_id or ""
        resp.num_matches, resp.num_inliers = int(res.num_matches), int(res.num_inliers)
        resp.confidence = float(res.confidence)
        resp.intrinsics_estimated = bool(res.intrinsics_estimated)
        if res.K is not None:
            resp.camera_info = K_to_camera_info(res.K, rgb.shape[1], rgb.shape[0], req.image.header)
        if not res.success or res.T_map_cam is None:
            resp.success = False
            return resp
        resp.pose.header.stamp = stamp
        resp.pose.header.frame_id = self.cfg.map_frame
        resp.pose.pose.pose = matrix_to_pose(res.T_map_cam)
        resp.pose.pose.covariance = covariance_to_list(res.covariance)
        timing = ", ".join(f"{k} {v:.1f}" for k, v in res.timings_ms.items())
        resp.message = (f"relocalized against {res.reference_id} ({res.message}): "
                        f"{res.num_inliers}/{res.num_matches} inliers")
        resp.message += f" [ms: {timing}]" if timing else ""
        self.pose_pub.publish(resp.pose)
        if self.tf is not None:
            self._update_map_to_odom(res.T_map_cam, req.image.header)
        return resp

    def _set_reference(self, request, response):
        return self._guard("set_reference", request, response, self._set_reference_body)

    def _set_reference_body(self, req, resp):
        if self.cfg.localization_only:
            raise RequestError("localization_only is set: the map may not change (set_reference refused)")
        rgb = self._image(req.image)
        K = self._K(req.camera_info, rgb)
        frame = req.pose.header.frame_id
        if frame not in ("", self.cfg.map_frame):
            raise RequestError(f"pose.header.frame_id: expected '{self.cfg.map_frame}' (or ''), got {frame!r}")
        try:
            T = pose_to_matrix(req.pose.pose)
        except ValueError as exc:
            raise RequestError(f"pose: {exc}") from None
        if req.id and (len(req.id) > 256 or any(c in req.id for c in "/\\\0\n")):
            raise RequestError(f"id: {req.id[:40]!r} must be at most 256 characters without '/', '\\\\', "
                               "newlines or NUL")
        with self._lock:
            try:
                ref_id = self.reloc.add_reference(rgb, T, K, req.id or None,
                                                  frame_id=self._frame_id(req.image.header),
                                                  stamp_ns=stamp_ns(req.image.header.stamp))
            except KeyError as exc:
                if self._sim:
                    raise RequestError(f"image: not a frame of the simulator's bag ({_short(exc)})") from None
                raise
        resp.success, resp.id = True, ref_id
        resp.message = f"reference {ref_id!r} stored ({'known' if K is not None else 'estimated'} intrinsics)"
        return resp

    def _save_map(self, request, response):
        return self._guard("save_map", request, response, self._save_map_body)

    def _save_map_body(self, req, resp):
        if not req.map_path:
            raise RequestError("map_path: empty; give a folder path")
        with self._lock:
            if not self.reloc.reference_ids():
                raise RequestError("nothing to save: no reference keyframes")
            try:
                n = self.reloc.save(req.map_path, overwrite=bool(req.overwrite))
            except (OSError, ValueError) as exc:
                raise RequestError(f"map_path {req.map_path!r}: {_short(exc)}") from None
        resp.success, resp.num_keyframes = True, int(n)
        resp.message = f"saved {n} keyframes to {req.map_path}"
        return resp

    def _load_map(self, request, response):
        return self._guard("load_map", request, response, self._load_map_body)

    def _load_map_body(self, req, resp):
        if not req.map_path:
            raise RequestError("map_path: empty; give a map folder")
        with self._lock:
            try:
                n = self.reloc.load(req.map_path)
            except (OSError, ValueError, KeyError) as exc:
                raise RequestError(f"map_path {req.map_path!r}: {_short(exc)}") from None
        with self._tf_lock:
            self._T_map_odom = None          # a new map: the old correction means nothing
        resp.success, resp.num_keyframes = True, int(n)
        resp.message = f"loaded {n} keyframes from {req.map_path}"
        return resp

    def _reset(self, request, response):
        return self._guard("reset", request, response, self._reset_body)

    def _reset_body(self, req, resp):
        with self._lock:
            self.reloc.reset()
        with self._tf_lock:
            self._T_map_odom = None
        resp.success, resp.message = True, "all references dropped"
        return resp

    def _get_keyframes(self, request, response):
        return self._guard("get_keyframes", request, response, self._get_keyframes_body)

    def _get_keyframes_body(self, req, resp):
        with self._lock:
            infos = self._keyframe_infos()
        now = self.get_clock().now().to_msg()
        for info in infos:
            w, h = info.get("size", (0, 0))
            resp.keyframes.append(keyframe_msg(
                info["id"], info["T_map_cam"], info.get("K"), stamp_ns=info.get("stamp_ns"),
                map_frame=self.cfg.map_frame, width=w, height=h,
                intrinsics_estimated=bool(info.get("intrinsics_estimated", False))))
        resp.path = path_msg([(i.get("stamp_ns"), i["T_map_cam"]) for i in infos], self.cfg.map_frame, now)
        resp.success, resp.message = True, f"{len(infos)} keyframes"
        return resp

    def _keyframe_infos(self) -> list[dict]:
        """Per reference: id, T_map_cam, K (given or estimated), stamp_ns, size (under lock)."""
        out = []
        for ref in self.reloc.references():
            K = ref.K if ref.K is not None else getattr(ref, "K_estimated", None)
            out.append({"id": ref.id, "T_map_cam": np.asarray(ref.T_map_cam, dtype=np.float64),
                        "K": None if K is None else np.asarray(K, dtype=np.float64),
                        "intrinsics_estimated": ref.K is None and K is not None,
                        "stamp_ns": ref.stamp_ns,
                        "size": (int(ref.image.shape[1]), int(ref.image.shape[0]))})
        return out

    # -- TF ---------------------------------------------------------------------------------
    def _update_map_to_odom(self, T_map_cam: np.ndarray, header) -> None:
        """map -> odom from this relocalization and the odometry at the image stamp."""
        cfg = self.cfg
        robot = cfg.base_frame or header.frame_id
        T_map_robot = T_map_cam @ invert_T(cfg.T_base_cam) if cfg.base_frame else T_map_cam
        T_odom_robot = None
        if robot and self.tf_listener is not None and self.tf_listener.is_ancestor(cfg.odom_frame, robot):
            T_odom_robot = self.tf_listener.lookup(cfg.odom_frame, robot, stamp_ns(header.stamp))
        if T_odom_robot is None:
            if not getattr(self, "_warned_no_odom", False):
                self.get_logger().warning(
                    f"no {cfg.odom_frame} -> {robot or '<camera>'} transform on /tf at the image stamp: "
                    f"publishing {cfg.map_frame} -> {cfg.odom_frame} as if the robot stood at the "
                    f"{cfg.odom_frame} origin")
                self._warned_no_odom = True
            T_odom_robot = np.eye(4)
        with self._tf_lock:
            self._T_map_odom = rtf.map_to_odom(T_map_robot, T_odom_robot)
        self._publish_tf()

    def _publish_tf(self) -> None:
        with self._tf_lock:
            T = self._T_map_odom
        if T is None or self.tf is None:
            return
        self.tf.send_T(T, self.cfg.map_frame, self.cfg.odom_frame, self.get_clock().now().to_msg())

    def map_to_odom(self) -> np.ndarray | None:
        """The map -> odom correction now published (None before any relocalization)."""
        with self._tf_lock:
            return None if self._T_map_odom is None else self._T_map_odom.copy()


def main(args=None) -> None:
    params.exit_main(lambda: RelocalizationNode(), args)


if __name__ == "__main__":
    main()
