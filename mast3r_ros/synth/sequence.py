"""Rendered sequences: frames with image, exact depth, intrinsics, pose and stamp.

Frame ids: a frame is named by its stamp as ``"<sec>.<nanosec>"`` with nanoseconds
zero-padded to 9 digits (``stamp_id``), the string a ROS node would build from the image
header, e.g. ``"1700000000.100000000"``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from mast3r_ros.config import config_from_dict
from .render import pinhole_K, render
from .scene import SceneKind, _parse_enum, make_scene
from .trajectory import TrajectoryKind, make_trajectory

log = logging.getLogger(__name__)

DEFAULT_START_NS = 1_700_000_000 * 10**9  # a plausible wall-clock epoch (not 0: TF treats 0 as "latest")


def stamp_id(stamp_ns: int) -> str:
    """``"sec.nanosec"`` (nanoseconds zero-padded to 9 digits) of a stamp in nanoseconds."""
    sec, nsec = divmod(int(stamp_ns), 10**9)
    return f"{sec}.{nsec:09d}"


def parse_stamp_id(frame_id: str) -> int:
    """Inverse of ``stamp_id``: ``"sec.nanosec"`` -> nanoseconds. Raises ValueError."""
    sec, dot, nsec = str(frame_id).partition(".")
    if not dot or not sec.isdigit() or not nsec.isdigit() or len(nsec) > 9:
        raise ValueError(f"frame id {frame_id!r} is not a stamp 'sec.nanosec' (e.g. '12.000500000')")
    return int(sec) * 10**9 + int(nsec.ljust(9, "0"))


@dataclass(frozen=True, eq=False)
class SyntheticFrame:
    """One frame with ground truth.

    Attributes:
        index: position in the sequence.
        stamp_ns: header stamp, nanoseconds.
        rgb: (H, W, 3) uint8 RGB.
        K: (3, 3) float64 intrinsics (OpenCV pixel centres).
        depth: (H, W) float32 camera-frame z in metres, or None (bag without depth).
        T_world_cam: (4, 4) float64 ground-truth pose, or None (bag without poses).
    """

    index: int
    stamp_ns: int
    rgb: np.ndarray
    K: np.ndarray
    depth: np.ndarray | None
    T_world_cam: np.ndarray | None

    @property
    def frame_id(self) -> str:
        return stamp_id(self.stamp_ns)


@dataclass(frozen=True, eq=False)
class SyntheticSequence:
    """Frames in time order plus how they were made (``info``: JSON-able dict)."""

    frames: tuple[SyntheticFrame, ...]
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def stamps_ns(self) -> np.ndarray:
        """(N,) int64 stamps."""
        return np.array([f.stamp_ns for f in self.frames], dtype=np.int64)

    @property
    def poses(self) -> np.ndarray:
        """(N, 4, 4) T_world_cam; raises ValueError if a frame has none."""
        if any(f.T_world_cam is None for f in self.frames):
            raise ValueError("this sequence has frames without ground-truth poses")
        return np.stack([f.T_world_cam for f in self.frames])


def _check_synth(cfg: "SynthConfig") -> None:
    """Types, finite values and ceilings (``mast3r_ros.limits``) of a ``SynthConfig``."""
    import math
    import numbers

    from mast3r_ros import limits
    from mast3r_ros.errors import ConfigError, LimitError

    for name in ("frames", "seed", "width", "height", "start_ns"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise ConfigError(f"SynthConfig.{name}: expected an integer, got {v!r} ({type(v).__name__})",
                              argument=name)
    for name in ("rate_hz", "hfov_deg"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise ConfigError(f"SynthConfig.{name}: expected a finite number, got {v!r}", argument=name)
    if cfg.frames < 2:
        raise ValueError(f"frames must be >= 2, got {cfg.frames}")
    if cfg.width < 16 or cfg.height < 16:
        raise ValueError(f"image must be at least 16x16, got {cfg.width}x{cfg.height}")
    if not cfg.rate_hz > 0:
        raise ValueError(f"rate_hz must be > 0, got {cfg.rate_hz}")
    if cfg.seed < 0 or cfg.seed >= 2**63:
        raise ValueError(f"seed must be in [0, 2^63), got {cfg.seed}")
    if not 1.0 <= cfg.hfov_deg <= 170.0:
        raise ConfigError(f"hfov_deg must be in [1, 170] degrees (a pinhole camera), got {cfg.hfov_deg}",
                          argument="hfov_deg")
    if cfg.rate_hz > limits.MAX_SYNTH_RATE_HZ or cfg.rate_hz < 1e-3:
        raise ConfigError(f"rate_hz must be in [0.001, {limits.MAX_SYNTH_RATE_HZ:g}] Hz, got {cfg.rate_hz}",
                          argument="rate_hz")
    if not 0 <= cfg.start_ns < 2**62:
        raise ConfigError(f"start_ns must be in [0, 2^62), got {cfg.start_ns}", argument="start_ns")
    if max(cfg.width, cfg.height) > limits.MAX_SYNTH_SIDE:
        raise LimitError(f"synthetic images of {cfg.width}x{cfg.height} exceed the ceiling of "
                         f"{limits.MAX_SYNTH_SIDE} pixels a side", argument="width/height")
    if cfg.frames > limits.MAX_SYNTH_FRAMES:
        raise LimitError(f"frames {cfg.frames} exceeds the ceiling of {limits.MAX_SYNTH_FRAMES}",
                         argument="frames")
    nbytes = cfg.frames * cfg.width * cfg.height * 7  # rgb uint8 + float32 depth per pixel
    if nbytes > limits.MAX_SYNTH_BYTES:
        raise LimitError(f"{cfg.frames} frames of {cfg.width}x{cfg.height} need {nbytes / 2**30:.1f} GiB "
                         f"in memory; the ceiling is {limits.MAX_SYNTH_BYTES / 2**30:.0f} GiB "
                         "(fewer frames or smaller images)", argument="frames x width x height")
    end = cfg.start_ns + (cfg.frames - 1) * 1e9 / cfg.rate_hz
    if end >= 2**62:
        raise ConfigError(f"the last stamp ({end:.3g} ns) overflows; use a higher rate or fewer frames",
                          argument="rate_hz")


@dataclass(frozen=True)
class SynthConfig:
    """What ``mast3r-ros synth`` renders."""

    scene: SceneKind = SceneKind.ROOM            # procedural scene
    trajectory: TrajectoryKind = TrajectoryKind.WALK  # camera path
    frames: int = 100                            # number of frames (>= 2)
    seed: int = 0                                # scene and trajectory seed
    width: int = 512                             # image width, pixels
    height: int = 384                            # image height, pixels
    rate_hz: float = 10.0                        # frame rate (sets stamps only)
    hfov_deg: float = 70.0                       # horizontal field of view
    start_ns: int = DEFAULT_START_NS             # stamp of the first frame

    def __post_init__(self) -> None:
        object.__setattr__(self, "scene", _parse_enum(SceneKind, self.scene, "scene kind"))
        object.__setattr__(self, "trajectory",
                           _parse_enum(TrajectoryKind, self.trajectory, "trajectory kind"))
        _check_synth(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "SynthConfig":
        return config_from_dict(cls, values)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scene"], d["trajectory"] = self.scene.value, self.trajectory.value
        return d


def render_sequence(scene, poses: np.ndarray, K: np.ndarray, width: int, height: int,
                    rate_hz: float, start_ns: int = DEFAULT_START_NS,
                    info: dict | None = None, progress=None) -> SyntheticSequence:
    """Render ``poses`` (N, 4, 4) into a sequence stamped at ``rate_hz`` from ``start_ns``.

    ``progress``: optional wrapper of the pose iterable (e.g. a CLI progress bar).
    """
    frames = []
    t0 = time.perf_counter()
    poses_iter = enumerate(np.asarray(poses, dtype=np.float64))
    for i, T in (progress(poses_iter) if progress is not None else poses_iter):
        view = render(scene, K, T, width, height)
        stamp = int(start_ns) + int(round(i * 1e9 / rate_hz))
        frames.append(SyntheticFrame(i, stamp, view.rgb, view.K, view.depth, view.T_world_cam))
    log.info("rendered %d frames %dx%d in %.1f s", len(frames), width, height,
             time.perf_counter() - t0)
    return SyntheticSequence(tuple(frames), dict(info or {}))


def generate(config: SynthConfig, progress=None) -> SyntheticSequence:
    """Build the scene and trajectory of ``config`` and render every frame (``progress``: see
    ``render_sequence``)."""
    scene = make_scene(config.scene, config.seed)
    poses = make_trajectory(scene, config.trajectory, config.frames, config.seed)
    K = pinhole_K(config.width, config.height, config.hfov_deg)
    return render_sequence(scene, poses, K, config.width, config.height, config.rate_hz,
                           config.start_ns, info=config.to_dict(), progress=progress)
