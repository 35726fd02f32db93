"""Stamped trajectories: TUM files and timestamp association.

TUM format: one pose per line, ``timestamp tx ty tz qx qy qz qw`` (seconds, metres,
quaternion in xyzw order, the pose T_world_cam), ``#`` starts a comment.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation


@dataclass(frozen=True, eq=False)
class Trajectory:
    """Poses in time order.

    Attributes:
        stamps: (N,) float64 seconds, strictly increasing.
        poses: (N, 4, 4) float64 T_world_cam.
    """

    stamps: np.ndarray
    poses: np.ndarray

    def __post_init__(self) -> None:
        stamps = np.asarray(self.stamps, dtype=np.float64).reshape(-1)
        poses = np.asarray(self.poses, dtype=np.float64)
        if poses.shape != (stamps.shape[0], 4, 4):
            raise ValueError(f"poses must be ({stamps.shape[0]}, 4, 4) to match the stamps, "
                             f"got {poses.shape}")
        if stamps.shape[0] > 1 and not (np.diff(stamps) > 0).all():
            raise ValueError("trajectory stamps must be strictly increasing")
        object.__setattr__(self, "stamps", stamps)
        object.__setattr__(self, "poses", poses)

    def __len__(self) -> int:
        return self.stamps.shape[0]

    @property
    def positions(self) -> np.ndarray:
        """(N, 3) camera centres in the world."""
        return self.poses[:, :3, 3]


def poses_to_tum_rows(poses: np.ndarray) -> np.ndarray:
    """(N, 4, 4) poses -> (N, 7) ``tx ty tz qx qy qz qw`` (qw >= 0)."""
    poses = np.asarray(poses, dtype=np.float64)
    q = Rotation.from_matrix(poses[:, :3, :3]).as_quat()  # xyzw
    q *= np.where(q[:, 3:] < 0, -1.0, 1.0)
    return np.concatenate([poses[:, :3, 3], q], axis=1)


def tum_rows_to_poses(rows: np.ndarray) -> np.ndarray:
    """(N, 7) ``tx ty tz qx qy qz qw`` -> (N, 4, 4) poses (quaternions are normalised)."""
    rows = np.asarray(rows, dtype=np.float64)
    T = np.tile(np.eye(4), (rows.shape[0], 1, 1))
    T[:, :3, :3] = Rotation.from_quat(rows[:, 3:7]).as_matrix()
    T[:, :3, 3] = rows[:, :3]
    return T


def write_tum(path: str | Path, stamps: np.ndarray | list, poses: np.ndarray) -> None:
    """Write a TUM file. ``stamps``: (N,) seconds (float) or (N,) int nanoseconds
    (written exactly as ``sec.nanosec``); ``poses``: (N, 4, 4) T_world_cam."""
    stamps = np.asarray(stamps)
    rows = poses_to_tum_rows(poses)
    if rows.shape[0] != stamps.shape[0]:
        raise ValueError(f"{stamps.shape[0]} stamps for {rows.shape[0]} poses")
    lines = ["# timestamp tx ty tz qx qy qz qw"]
    for s, r in zip(stamps, rows):
        if np.issubdtype(stamps.dtype, np.integer):
            sec, nsec = divmod(int(s), 10**9)
            ts = f"{sec}.{nsec:09d}"
        else:
            ts = f"{float(s):.9f}"
        lines.append(ts + " " + " ".join(f"{v:.17g}" for v in r))
    Path(path).write_text("\n".join(lines) + "\n")


MAX_TUM_POSES = 5_000_000  # rows read_tum accepts (a few hundred MB as Python lists)
_MAX_TUM_LINE = 4096  # characters in one line


def read_tum(path: str | Path, max_poses: int = MAX_TUM_POSES) -> Trajectory:
    """Read a TUM file (sorted by stamp on return), line by line with bounded memory.

    Raises:
        FileNotFoundError: no such file; ValueError (``InputError``): a line without 8
            finite numbers, a zero quaternion, a line longer than 4096 characters, more than
            ``max_poses`` poses, binary content, or no poses.
    """
    from mast3r_ros.errors import InputError, LimitError

    path = Path(path)
    if path.is_dir():
        raise InputError(f"trajectory {str(path)!r} is a directory, expected a TUM text file")
    if not path.is_file():
        raise FileNotFoundError(f"trajectory file {path} does not exist")
    rows = []
    with open(path, "rb") as f:
        n = 0
        while True:
            raw = f.readline(_MAX_TUM_LINE + 1)
            if not raw:
                break
            n += 1
            if len(raw) > _MAX_TUM_LINE and not raw.endswith(b"\n"):
                raise InputError(f"{path}:{n}: line longer than {_MAX_TUM_LINE} characters; "
                                 "expected 'timestamp tx ty tz qx qy qz qw'")
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise InputError(f"{path}:{n}: not UTF-8 text; expected a TUM trajectory "
                                 "(text lines 'timestamp tx ty tz qx qy qz qw')") from None
            if not line or line.startswith("#"):
                continue
            parts = line.replace(",", " ").split()
            if len(parts) != 8:
                raise InputError(f"{path}:{n}: expected 8 values 'timestamp tx ty tz qx qy qz qw', "
                                 f"got {len(parts)}")
            try:
                row = [float(p) for p in parts]
            except ValueError:
                raise InputError(f"{path}:{n}: not a number in {line!r}") from None
            if not all(np.isfinite(row)):
                raise InputError(f"{path}:{n}: expected finite numbers, got {line!r}")
            if sum(q * q for q in row[4:]) < 1e-12:
                raise InputError(f"{path}:{n}: the quaternion (qx qy qz qw) is zero, expected a rotation")
            rows.append(row)
            if len(rows) > max_poses:
                raise LimitError(f"{path}: more than {max_poses:,} poses; the ceiling is "
                                 "evaluation.trajectory.MAX_TUM_POSES")
    if not rows:
        raise InputError(f"{path} holds no poses")
    data = np.array(rows)
    order = np.argsort(data[:, 0], kind="stable")
    data = data[order]
    return Trajectory(data[:, 0], tum_rows_to_poses(data[:, 1:]))


def associate(first: Trajectory, second: Trajectory, max_diff: float = 0.01,
              offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Pair poses whose stamps differ by at most ``max_diff`` seconds.

    Each stamp of ``first`` takes the nearest stamp of ``second`` (shifted by ``offset``)
    and keeps it when within ``max_diff`` and not already taken.

    Returns:
        (idx_first, idx_second): (M,) int arrays of matched indices, in time order.
    """
    s2 = second.stamps + offset
    idx1, idx2, used = [], [], set()
    for i, t in enumerate(first.stamps):
        j = int(np.searchsorted(s2, t))
        cands = [k for k in (j - 1, j) if 0 <= k < s2.shape[0]]
        k = min(cands, key=lambda c: abs(s2[c] - t))
        if abs(s2[k] - t) <= max_diff and k not in used:
            used.add(k)
            idx1.append(i)
            idx2.append(k)
    return np.array(idx1, dtype=np.int64), np.array(idx2, dtype=np.int64)
