"""Test helper: one synthetic world, two different trajectories through it (saved maps and
localization mode, test_map_persistence.py / test_slam_node_maps.py).

The mapping trajectory is the ``walk`` of ``seed_map`` (an arc of ~100 deg around the
objects); the query trajectory is the ``walk`` of ``seed_query`` (other radii, heights, look
targets and shake), turned about the vertical axis through the scene's target so that its
middle lies ``offset_deg`` from the mapping walk's middle: the two overlap in what they see,
never in their poses. Both are rendered into ONE sequence (mapping frames first), so one
simulator (or one bag) answers for both.
"""
from __future__ import annotations

import math

import numpy as np

from mast3r_ros.geometry import rotation_angle_deg
from mast3r_ros.synth.render import pinhole_K
from mast3r_ros.synth.scene import make_scene
from mast3r_ros.synth.sequence import SyntheticSequence, render_sequence
from mast3r_ros.synth.trajectory import make_trajectory


def _mid_azimuth(poses: np.ndarray, target: np.ndarray) -> float:
    d = poses[:, :2, 3] - target[:2]
    a = np.arctan2(d[:, 1], d[:, 0])
    return float(np.arctan2(np.sin(a).mean(), np.cos(a).mean()))


def two_walks(n_map: int, n_query: int, *, width: int, height: int, scene: str = "room",
              seed_scene: int = 2, seed_map: int = 2, seed_query: int = 7,
              offset_deg: float = 10.0) -> tuple[SyntheticSequence, int]:
    """(sequence, n_map): frames ``[:n_map]`` map the world, ``[n_map:]`` are queries."""
    world = make_scene(scene, seed_scene)
    A = make_trajectory(world, "walk", n_map, seed_map)
    B = make_trajectory(world, "walk", n_query, seed_query)
    turn = _mid_azimuth(A, world.target) - _mid_azimuth(B, world.target) + math.radians(offset_deg)
    c, s = math.cos(turn), math.sin(turn)
    C = np.eye(4)
    C[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    C[:3, 3] = world.target - C[:3, :3] @ world.target
    seq = render_sequence(world, np.concatenate([A, C @ B]), pinhole_K(width, height), width,
                          height, 10.0, info={"scene": scene, "seed": seed_scene})
    return seq, n_map


class MapFrame:
    """A similarity taking map coordinates to the world, fitted on the map's keyframes only:
    rotation = chordal mean of the keyframes' ``R_world @ R_map^T`` (their orientations),
    then scale and translation by least squares on their centres with that rotation."""

    def __init__(self, est_kf: dict, seq: SyntheticSequence) -> None:
        gt = {f.stamp_ns: f.T_world_cam for f in seq.frames}
        stamps = sorted(est_kf)
        M = sum(gt[s][:3, :3] @ est_kf[s][:3, :3].T for s in stamps)
        U, _, Vt = np.linalg.svd(M)
        self.R = U @ np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))]) @ Vt
        pe = np.stack([est_kf[s][:3, 3] for s in stamps]) @ self.R.T
        pg = np.stack([gt[s][:3, 3] for s in stamps])
        ce, cg = pe.mean(0), pg.mean(0)
        self.scale = float(((pe - ce) * (pg - cg)).sum() / ((pe - ce) ** 2).sum())
        self.t = cg - self.scale * ce
        res = [pose_errors(est_kf[s], gt[s], self) for s in stamps]
        self.kf_rmse_m = float(np.sqrt(np.mean([r[0] ** 2 for r in res])))
        self.kf_rot_deg = float(np.median([r[1] for r in res]))

    def apply(self, pts: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(pts, dtype=np.float64) @ self.R.T + self.t


def map_alignment(est_kf: dict, seq: SyntheticSequence) -> MapFrame:
    """The map -> world similarity of the keyframes ``est_kf`` ({stamp_ns: (4, 4) T_map_cam});
    evaluating query poses through it measures relocalization *in the map* (its scale and
    frame are the map's, fitted without the queries)."""
    return MapFrame(est_kf, seq)


def pose_errors(T_est: np.ndarray, T_gt: np.ndarray, sim=None) -> tuple[float, float]:
    """(position error m, rotation error deg) of a map pose against the truth, after the
    map's similarity ``sim`` (None: compared as is)."""
    if sim is not None:
        p = sim.apply(T_est[:3, 3][None])[0]
        R = sim.R @ T_est[:3, :3]
    else:
        p, R = T_est[:3, 3], T_est[:3, :3]
    return float(np.linalg.norm(p - T_gt[:3, 3])), rotation_angle_deg(R, T_gt[:3, :3])


def folder_digest(path) -> str:
    """sha256 over a folder's file names and bytes (a saved map unchanged byte for byte)."""
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    for p in sorted(Path(path).rglob("*")):
        h.update(p.name.encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()
