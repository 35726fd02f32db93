"""Camera trajectories through a ``Scene``: poses ``T_world_cam`` (N, 4, 4).

The camera frame is OpenCV's optical frame (x right, y down, z forward); world is z up.
Every trajectory is a deterministic function of ``(scene, kind, n_frames, seed)``, is
parameterised by the progress ``s`` in [0, 1] (so the frame rate only sets the stamps),
and keeps the camera within the scene's free annulus around the object cluster.

Kinds:
    ``walk``: smooth handheld-like walk along ~100 deg of arc around the objects, looking
        at them, with a few centimetres / degrees of smooth shake.
    ``rotation``: pure rotation about a fixed camera centre (yaw sweep +-70 deg, pitch +-8
        deg); the position never changes.
    ``loop``: one full turn around the objects; the last pose equals the first exactly.
    ``tracking_loss``: walk towards the scene's blank panel, look at it from ~0.6 m so the
        whole view is uniform (progress 0.4 to 0.6, i.e. frames ``0.4 (N-1)`` to
        ``0.6 (N-1)``), then turn back to the objects and walk on.
    ``reloc_30`` / ``reloc_90`` / ``reloc_180``: the first ``ceil(N / 2)`` frames are a
        short mapping arc (+-10 deg around azimuth ``a0``); the rest are query views from
        azimuth ``a0 + 30/90/180 deg`` (+-3 deg), other radii and heights, all looking at
        the objects (see ``relocalization_views``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np
from scipy.interpolate import PchipInterpolator

from .scene import Scene, _parse_enum


class TrajectoryKind(Enum):
    """Which camera path to generate (see the module docstring)."""

    WALK = "walk"
    ROTATION = "rotation"
    LOOP = "loop"
    TRACKING_LOSS = "tracking_loss"
    RELOC_30 = "reloc_30"
    RELOC_90 = "reloc_90"
    RELOC_180 = "reloc_180"


_RELOC_ANGLES = {TrajectoryKind.RELOC_30: 30.0, TrajectoryKind.RELOC_90: 90.0,
                 TrajectoryKind.RELOC_180: 180.0}


@dataclass(frozen=True)
class RelocViewSet:
    """Views for relocalization tests.

    Attributes:
        map_poses: (M, 4, 4) T_world_cam of the mapping arc around azimuth ``azimuth0_deg``.
        query_poses: (Q, 4, 4) T_world_cam of the query views.
        angle_deg: azimuth offset of the queries from the mapping arc's middle.
        azimuth0_deg: azimuth of the mapping arc's middle around ``scene.target``.
    """

    map_poses: np.ndarray
    query_poses: np.ndarray
    angle_deg: float
    azimuth0_deg: float


def look_at(position: np.ndarray, target: np.ndarray, roll_rad: float = 0.0) -> np.ndarray:
    """(4, 4) T_world_cam of a camera at ``position`` looking at ``target``, z-up world.

    The image x axis stays horizontal (before ``roll_rad``, a rotation about the optical
    axis). Raises ValueError when the view direction is vertical or zero.
    """
    position = np.asarray(position, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - position
    norm = np.linalg.norm(z)
    if norm < 1e-9:
        raise ValueError("look_at: target equals position")
    z = z / norm
    x = np.cross(z, [0.0, 0.0, 1.0])
    if np.linalg.norm(x) < 1e-6:
        raise ValueError("look_at: viewing straight up or down has no defined image x axis")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c, s = math.cos(roll_rad), math.sin(roll_rad)
    x, y = c * x + s * y, -s * x + c * y
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], axis=1)
    T[:3, 3] = position
    return T


def _smooth_noise(rng: np.random.Generator, s: np.ndarray, dims: int, amplitude: float,
                  periodic: bool = False) -> np.ndarray:
    """(N, dims) smooth noise: three sinusoids per dimension, peak about ``amplitude``."""
    out = np.zeros((s.shape[0], dims))
    for d in range(dims):
        for _ in range(3):
            f = rng.integers(1, 5) if periodic else rng.uniform(0.5, 4.0)
            out[:, d] += amplitude / 3 * np.sin(2 * np.pi * f * s + rng.uniform(0, 2 * np.pi))
    return out


def _polar(scene: Scene, azimuth: np.ndarray | float, radius, height) -> np.ndarray:
    a = np.asarray(azimuth, dtype=np.float64)
    return np.stack(np.broadcast_arrays(scene.target[0] + radius * np.cos(a),
                                        scene.target[1] + radius * np.sin(a),
                                        np.asarray(height, dtype=np.float64)), axis=-1)


def _poses(positions: np.ndarray, targets: np.ndarray, rolls: np.ndarray) -> np.ndarray:
    return np.stack([look_at(p, t, r) for p, t, r in zip(positions, targets, rolls)])


def _shake(rng, s, positions, targets, pos_amp=0.03, look_amp=0.06, roll_amp_deg=2.0,
           periodic=False):
    positions = positions + _smooth_noise(rng, s, 3, pos_amp, periodic)
    targets = targets + _smooth_noise(rng, s, 3, look_amp * np.linalg.norm(
        targets - positions, axis=1, keepdims=True).mean(), periodic)
    rolls = np.deg2rad(_smooth_noise(rng, s, 1, roll_amp_deg, periodic)[:, 0])
    return positions, targets, rolls


def _walk(scene: Scene, s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    a0 = rng.uniform(0, 2 * np.pi)
    knots = np.linspace(0, 1, 5)
    az = a0 + np.deg2rad(np.linspace(0, 100, 5))
    r = rng.uniform(*scene.camera_radius, size=5)
    z = rng.uniform(*scene.camera_height, size=5)
    look = scene.target + rng.uniform(-0.4, 0.4, size=(5, 3)) * [1, 1, 0.5]
    pos = PchipInterpolator(knots, _polar(scene, az, r, z))(s)
    tgt = PchipInterpolator(knots, look)(s)
    return _poses(*_shake(rng, s, pos, tgt))


def _rotation(scene: Scene, s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    a0 = rng.uniform(0, 2 * np.pi)
    pos = _polar(scene, a0, np.mean(scene.camera_radius), np.mean(scene.camera_height))
    base = look_at(pos, scene.target)
    yaw = np.deg2rad(70.0) * np.sin(2 * np.pi * s)
    pitch = np.deg2rad(8.0) * np.sin(4 * np.pi * s)
    out = []
    for y, p in zip(yaw, pitch):
        cy, sy, cp, sp = np.cos(y), np.sin(y), np.cos(p), np.sin(p)
        R_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])  # about camera y (down)
        R_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])  # about camera x
        T = base.copy()
        T[:3, :3] = base[:3, :3] @ R_yaw @ R_pitch
        out.append(T)
    return np.stack(out)


def _loop(scene: Scene, s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    a0 = rng.uniform(0, 2 * np.pi)
    az = a0 + 2 * np.pi * s
    r_mid, r_amp = np.mean(scene.camera_radius), np.ptp(scene.camera_radius) / 2 * 0.8
    z_mid, z_amp = np.mean(scene.camera_height), np.ptp(scene.camera_height) / 2 * 0.8
    r = r_mid + r_amp * np.cos(2 * az - a0)
    z = z_mid + z_amp * np.sin(az - a0)
    pos = _polar(scene, az, r, z)
    tgt = np.broadcast_to(scene.target, pos.shape)
    return _poses(*_shake(rng, s, pos, tgt, periodic=True))


def _tracking_loss(scene: Scene, s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    c, n = scene.blank_center, scene.blank_normal
    stand = c + 0.6 * n  # 0.6 m in front of the blank panel
    stand[2] = 1.4
    panel_look = stand - 2.0 * n
    tangent = np.cross([0.0, 0.0, 1.0], n)
    a_p = math.atan2(stand[1] - scene.target[1], stand[0] - scene.target[0])
    r0 = np.mean(scene.camera_radius)
    knots = np.array([0.0, 0.25, 0.4, 0.6, 0.75, 1.0])
    pos = np.stack([
        _polar(scene, a_p - np.deg2rad(60), r0, 1.3), _polar(scene, a_p - np.deg2rad(25), r0, 1.4),
        stand, stand + 0.3 * tangent,
        _polar(scene, a_p + np.deg2rad(25), r0, 1.4), _polar(scene, a_p + np.deg2rad(60), r0, 1.5),
    ])
    look = np.stack([scene.target, scene.target, panel_look, panel_look + 0.3 * tangent,
                     scene.target, scene.target])
    P = PchipInterpolator(knots, pos)(s)
    L = PchipInterpolator(knots, look)(s)
    return _poses(*_shake(rng, s, P, L, pos_amp=0.01, look_amp=0.03, roll_amp_deg=1.0))


def relocalization_views(scene: Scene, angle_deg: float, n_map: int, n_query: int,
                         seed: int = 0) -> RelocViewSet:
    """A mapping arc and query views ``angle_deg`` further around the objects.

    Args:
        angle_deg: azimuth offset of the queries (30, 90, 180 for the standard sets).
        n_map: mapping views, spread over +-10 deg of azimuth; n_query: query views.

    Raises:
        ValueError: n_map < 1 or n_query < 0.
    """
    if n_map < 1 or n_query < 0:
        raise ValueError(f"need n_map >= 1 and n_query >= 0, got {n_map}, {n_query}")
    rng = np.random.default_rng([int(seed), 0x2E10C])
    a0 = rng.uniform(0, 2 * np.pi)
    r_mid, z_mid = np.mean(scene.camera_radius), np.mean(scene.camera_height)
    az_map = a0 + np.deg2rad(np.linspace(-10, 10, n_map) if n_map > 1 else np.zeros(1))
    map_poses = _poses(_polar(scene, az_map, r_mid, z_mid),
                       np.broadcast_to(scene.target, (n_map, 3)), np.zeros(n_map))
    az_q = a0 + np.deg2rad(angle_deg + rng.uniform(-3, 3, n_query))
    pos_q = _polar(scene, az_q, rng.uniform(*scene.camera_radius, n_query),
                   rng.uniform(*scene.camera_height, n_query))
    look_q = scene.target + rng.uniform(-0.2, 0.2, (n_query, 3))
    rolls = np.deg2rad(rng.uniform(-3, 3, n_query))
    query = _poses(pos_q, look_q, rolls) if n_query else np.zeros((0, 4, 4))
    return RelocViewSet(map_poses, query, float(angle_deg), float(np.rad2deg(a0) % 360))


def make_trajectory(scene: Scene, kind: TrajectoryKind | str, n_frames: int,
                    seed: int = 0) -> np.ndarray:
    """Camera poses along a trajectory of the given kind.

    Args:
        scene: the scene (sets the look-at target, free annulus, blank panel).
        kind: ``TrajectoryKind`` or its value (``"walk"``, ``"loop"``, ...).
        n_frames: number of poses, >= 2.
        seed: changes start azimuth, waypoints and shake.

    Returns:
        (n_frames, 4, 4) float64 T_world_cam.

    Raises:
        ValueError: unknown kind or n_frames < 2.
    """
    kind = _parse_enum(TrajectoryKind, kind, "trajectory kind")
    if n_frames < 2:
        raise ValueError(f"n_frames must be >= 2, got {n_frames}")
    rng = np.random.default_rng([int(seed), 0x7EA1])
    s = np.linspace(0.0, 1.0, n_frames)
    if kind in _RELOC_ANGLES:
        n_map = math.ceil(n_frames / 2)
        views = relocalization_views(scene, _RELOC_ANGLES[kind], n_map, n_frames - n_map, seed)
        return np.concatenate([views.map_poses, views.query_poses])
    builder = {TrajectoryKind.WALK: _walk, TrajectoryKind.ROTATION: _rotation,
               TrajectoryKind.LOOP: _loop, TrajectoryKind.TRACKING_LOSS: _tracking_loss}[kind]
    return builder(scene, s, rng)
