"""Parameters every mast3r_ros node shares, validated once into a frozen config, and the
one place an engine is created from them.

Use in a node::

    from mast3r_ros.ros import params

    class MyNode(Node):
        def __init__(self, **kw):
            super().__init__("my_node", **kw)
            params.declare_common(self)
            self.cfg = params.read_common(self)      # raises ParameterError on bad values
            self.engine = params.create_engine(self.cfg, self.get_logger())

    def main(args=None):
        return params.run_node(MyNode, args)        # ParameterError -> log line, exit 2

Names and defaults follow ``ROS_API.md`` (a contract: keep them). Validation lives in
``config_from_values`` (plain dict in, ``NodeConfig`` out) so it is testable without ROS.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

log = logging.getLogger(__name__)


class ParameterError(ValueError):
    """A node parameter has a bad value; the message names the parameter, what was
    expected and what arrived. ``run_node`` turns it into one log line and exit code 2."""


class EngineKind(Enum):
    """What answers the pair predictions."""

    NETWORK = "network"        # MASt3R from a checkpoint
    SIMULATOR = "simulator"    # network-output simulator over a synthetic bag (tests/evaluation)


class SimulatorProfile(Enum):
    """Noise profile of the network-output simulator (values of
    ``mast3r_ros.synth.simulator.SimulatorProfile``; kept here so validating parameters does
    not import torch)."""

    EXACT = "exact"
    MODERATE = "moderate"
    REALISTIC = "realistic"
    HARD = "hard"


DTYPES = ("float32", "bfloat16", "float16")
DEVICES = ("", "cpu", "cuda")


# name -> (default, description, read_only). Order = declaration order.
COMMON_PARAMETERS: dict[str, tuple[Any, str, bool]] = {
    "engine": ("network", "'network' (MASt3R from 'checkpoint') or 'simulator' (TEST/EVALUATION "
               "ONLY: answers from the ground truth in 'simulator_bag'; logs a warning)", True),
    "checkpoint": ("", "path to the official MASt3R .pth / .safetensors checkpoint; "
                   "required when engine is 'network'", True),
    "device": ("", "torch device: 'cuda', 'cuda:N', 'cpu' or '' = CUDA when available", True),
    "dtype": ("float32", "trunk precision: float32, bfloat16 or float16", True),
    "image_size": (512, "long side of the network input in pixels (multiple of 16, 64..2048)", True),
    "simulator_bag": ("", "rosbag2 folder with ground truth the simulator answers from "
                      "(engine 'simulator' only)", True),
    "simulator_profile": ("realistic", "simulator noise profile: exact, moderate, realistic or hard", True),
    "simulator_config": ("", "JSON file of SimulatorConfig fields overriding the profile "
                         "(unknown keys are errors); '' = none", True),
    "map_frame": ("map", "global frame of poses, paths and the map (REP-105)", True),
    "odom_frame": ("odom", "odometry frame (REP-105); the node publishes map -> odom", True),
    "base_frame": ("", "'' = poses are of the camera (optical) frame itself; otherwise the robot "
                   "frame whose pose is published, through 'camera_to_base'", True),
    "camera_to_base": ([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
                       "static pose of the camera optical frame in base_frame as "
                       "[x, y, z, qx, qy, qz, qw] (T_base_cam, maps camera points to base "
                       "points); used only when base_frame is set", True),
    "publish_tf": (True, "publish TF (map -> odom, and odom -> base/camera where the node tracks)", False),
    "map_path": ("", "map folder to load at start ('' = start empty)", True),
    "localization_only": (False, "with a loaded map: relocalize/track against it, never change it", True),
}


@dataclass(frozen=True)
class NodeConfig:
    """The validated common parameters (see ``COMMON_PARAMETERS`` for meanings)."""

    engine: EngineKind = EngineKind.NETWORK
    checkpoint: str = ""
    device: str = ""
    dtype: str = "float32"
    image_size: int = 512
    simulator_bag: str = ""
    simulator_profile: SimulatorProfile = SimulatorProfile.REALISTIC
    simulator_config: str = ""
    map_frame: str = "map"
    odom_frame: str = "odom"
    base_frame: str = ""
    camera_to_base: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    publish_tf: bool = True
    map_path: str = ""
    localization_only: bool = False
    # derived: T_base_cam as a (4, 4) array (identity when base_frame is '')
    T_base_cam: np.ndarray = field(default_factory=lambda: np.eye(4), compare=False, repr=False)

    @property
    def robot_frame_is_camera(self) -> bool:
        return self.base_frame == ""


def _enum(cls: type[Enum], name: str, value: Any) -> Enum:
    try:
        return cls(str(value))
    except ValueError:
        raise ParameterError(f"parameter '{name}': expected one of "
                             f"{[m.value for m in cls]}, got {value!r}") from None


def _frame(name: str, value: Any, allow_empty: bool = False) -> str:
    value = str(value)
    if (not value and not allow_empty) or value.startswith("/") or any(c.isspace() for c in value):
        raise ParameterError(f"parameter '{name}': expected a TF frame name (non-empty, no leading "
                             f"'/', no spaces), got {value!r}")
    return value


def config_from_values(values: Mapping[str, Any]) -> NodeConfig:
    """Validate raw parameter values (missing names take their defaults) into a NodeConfig.

    Raises:
        ParameterError: a value is out of range or inconsistent; the message names it.
    """
    unknown = sorted(set(values) - set(COMMON_PARAMETERS))
    if unknown:
        raise ParameterError(f"unknown common parameter(s) {unknown}")
    v = {k: values.get(k, d[0]) for k, d in COMMON_PARAMETERS.items()}
    engine = _enum(EngineKind, "engine", v["engine"])
    profile = _enum(SimulatorProfile, "simulator_profile", v["simulator_profile"])
    dtype = str(v["dtype"])
    if dtype not in DTYPES:
        raise ParameterError(f"parameter 'dtype': expected one of {list(DTYPES)}, got {dtype!r}")
    device = str(v["device"])
    if not (device in DEVICES or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ParameterError(f"parameter 'device': expected '', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    try:
        size = int(v["image_size"])
    except (TypeError, ValueError):
        raise ParameterError(f"parameter 'image_size': expected an integer, got {v['image_size']!r}") from None
    if size % 16 or not 64 <= size <= 2048:
        raise ParameterError(f"parameter 'image_size': expected a multiple of 16 in [64, 2048], got {size}")
    checkpoint = str(v["checkpoint"])
    bag = str(v["simulator_bag"])
    sim_config = str(v["simulator_config"])
    if engine is EngineKind.NETWORK:
        if not checkpoint:
            raise ParameterError("parameter 'checkpoint' is required with engine 'network' "
                                 "(or set engine:=simulator with simulator_bag for tests)")
        if not Path(checkpoint).is_file():
            raise ParameterError(f"parameter 'checkpoint': file not found: {checkpoint!r}")
    else:
        if not bag:
            raise ParameterError("parameter 'simulator_bag' is required with engine 'simulator'")
        if not Path(bag).is_dir():
            raise ParameterError(f"parameter 'simulator_bag': expected a rosbag2 folder, got {bag!r} "
                                 "(not a directory)")
        if sim_config and not Path(sim_config).is_file():
            raise ParameterError(f"parameter 'simulator_config': file not found: {sim_config!r}")
    map_frame = _frame("map_frame", v["map_frame"])
    odom_frame = _frame("odom_frame", v["odom_frame"])
    base_frame = _frame("base_frame", v["base_frame"], allow_empty=True)
    named = [f for f in (map_frame, odom_frame, base_frame) if f]
    if len(set(named)) != len(named):
        raise ParameterError(f"parameters 'map_frame', 'odom_frame', 'base_frame' must differ, got "
                             f"{map_frame!r}, {odom_frame!r}, {base_frame!r}")
    try:
        c2b = tuple(float(x) for x in v["camera_to_base"])
    except (TypeError, ValueError):
        raise ParameterError("parameter 'camera_to_base': expected 7 numbers [x, y, z, qx, qy, qz, qw], "
                             f"got {v['camera_to_base']!r}") from None
    if len(c2b) != 7 or not all(math.isfinite(x) for x in c2b):
        raise ParameterError("parameter 'camera_to_base': expected 7 finite numbers "
                             f"[x, y, z, qx, qy, qz, qw], got {list(c2b)}")
    qn = math.sqrt(sum(x * x for x in c2b[3:]))
    if abs(qn - 1.0) > 1e-3:
        raise ParameterError(f"parameter 'camera_to_base': quaternion (qx, qy, qz, qw) must have unit "
                             f"norm, got norm {qn:.6g}")
    from mast3r_ros.geometry.transforms import pose_to_T

    T_base_cam = pose_to_T(np.array(c2b[:3]), np.array(c2b[3:]) / qn) if base_frame else np.eye(4)
    map_path = str(v["map_path"])
    if map_path and not Path(map_path).is_dir():
        raise ParameterError(f"parameter 'map_path': expected a map folder, got {map_path!r} "
                             f"({'a file' if Path(map_path).exists() else 'missing'})")
    if bool(v["localization_only"]) and not map_path:
        log.info("localization_only without map_path: the map must come from load_map")
    return NodeConfig(engine=engine, checkpoint=checkpoint, device=device, dtype=dtype,
                      image_size=size, simulator_bag=bag, simulator_profile=profile,
                      simulator_config=sim_config, map_frame=map_frame, odom_frame=odom_frame,
                      base_frame=base_frame, camera_to_base=c2b, publish_tf=bool(v["publish_tf"]),
                      map_path=map_path, localization_only=bool(v["localization_only"]),
                      T_base_cam=T_base_cam)


# -- ROS side -------------------------------------------------------------------------
def declare_common(node, overrides: Mapping[str, Any] | None = None) -> None:
    """Declare every common parameter on ``node`` with its description (read-only where it
    cannot change at run time). ``overrides`` changes defaults (e.g. per-node)."""
    from rcl_interfaces.msg import ParameterDescriptor

    overrides = dict(overrides or {})
    for name, (default, desc, read_only) in COMMON_PARAMETERS.items():
        node.declare_parameter(name, overrides.get(name, default),
                               ParameterDescriptor(description=desc, read_only=read_only))


def read_common(node) -> NodeConfig:
    """The validated common parameters of ``node`` (raises ParameterError)."""
    values = {}
    for name in COMMON_PARAMETERS:
        values[name] = node.get_parameter(name).value
    return config_from_values(values)


def simulator_config(cfg: NodeConfig):
    """The ``SimulatorConfig`` for ``cfg``: its profile, then the ``simulator_config`` JSON file
    on top (``synth.simulator.simulator_config_from``), with ``size`` = ``image_size`` unless
    the file sets it. Raises ParameterError on a bad file or key."""
    from mast3r_ros.synth.simulator import SimulatorProfile as Profile
    from mast3r_ros.synth.simulator import simulator_config_from

    try:
        sim = simulator_config_from(Profile(cfg.simulator_profile.value), cfg.simulator_config or None)
        if not cfg.simulator_config or "size" not in _json_keys(cfg.simulator_config):
            sim = dataclasses.replace(sim, size=cfg.image_size)
        return sim
    except (OSError, TypeError, ValueError) as exc:
        raise ParameterError(f"parameter 'simulator_config' ({cfg.simulator_config!r}): {exc}") from None


def _json_keys(path: str) -> set[str]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return set()
    return set(data) if isinstance(data, dict) else set()


def create_engine(cfg: NodeConfig, logger=None):
    """THE engine of a node process (create it once): MASt3R from ``checkpoint``, or the
    network-output simulator over ``simulator_bag`` with a loud warning.

    Raises:
        ParameterError: the checkpoint or bag cannot be loaded (message names the file).
    """
    warn = logger.warning if logger is not None else log.warning
    info = logger.info if logger is not None else log.info
    if cfg.engine is EngineKind.SIMULATOR:
        from mast3r_ros.synth.simulator import NetworkOutputSimulator

        sim_cfg = simulator_config(cfg)
        warn("engine 'simulator': NOT A NETWORK. Predictions come from the ground truth in "
             f"{cfg.simulator_bag} (profile {cfg.simulator_profile.value}); for tests and "
             "evaluation only")
        try:
            return NetworkOutputSimulator.from_bag(cfg.simulator_bag, sim_cfg,
                                                   device=_device(cfg.device))
        except (OSError, ValueError, KeyError) as exc:
            raise ParameterError(f"parameter 'simulator_bag': cannot use {cfg.simulator_bag!r} "
                                 f"as a simulator bag: {exc}") from None
    from mast3r_ros.model.engine import Mast3rEngine

    try:
        engine = Mast3rEngine.from_checkpoint(cfg.checkpoint, device=cfg.device or None,
                                              dtype=cfg.dtype, size=cfg.image_size)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ParameterError(f"parameter 'checkpoint': cannot load {cfg.checkpoint!r}: {exc}") from None
    info(f"engine 'network' from {cfg.checkpoint} on {engine.device} ({cfg.dtype}, size {cfg.image_size})")
    return engine


def _device(device: str) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_node(factory: Callable[..., Any], args=None, *, num_threads: int | None = None) -> int:
    """Init rclpy, build the node with ``factory()``, spin it on a MultiThreadedExecutor, and
    shut down cleanly. A ``ParameterError`` while building is one log line and exit 2."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    rclpy.init(args=args)
    node = None
    try:
        try:
            node = factory()
        except ParameterError as exc:
            # one line on stderr (rcutils console logging), then exit code 2
            rclpy.logging.get_logger("mast3r_ros").fatal(f"bad parameter: {exc}")
            return 2
        executor = MultiThreadedExecutor(num_threads=num_threads)
        executor.add_node(node)
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            executor.shutdown()
        return 0
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


def exit_main(factory: Callable[..., Any], args=None) -> None:
    """``sys.exit(run_node(factory, args))`` for scripts."""
    sys.exit(run_node(factory, args))


def answer_service(logger, resp, fn: Callable[[Any], None]):
    """Run ``fn(resp)`` for a service callback; any error becomes ``success=False`` with the
    reason in ``message`` (and a warning), so a node answers bad requests and keeps serving."""
    try:
        fn(resp)
    except Exception as exc:  # answer bad requests and keep serving
        resp.success = False
        resp.message = f"{type(exc).__name__}: {exc}"
        logger.warning(f"service request failed: {resp.message}")
    return resp
