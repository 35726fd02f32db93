"""Keyframe camera frusta as a ``visualization_msgs/MarkerArray`` (rviz2 "MarkerArray").

One ``LINE_LIST`` marker per keyframe (namespace ``keyframes``, id = index), preceded by a
``DELETEALL`` so a shrinking map (reset, load) leaves no stale frusta. Corners are computed
for all keyframes at once. Only message packages are imported, never rclpy.
"""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

# the 8 segments of a frustum: apex to the 4 image corners, then the image rectangle
_SEGMENTS = np.array([[0, 1], [0, 2], [0, 3], [0, 4], [1, 2], [2, 3], [3, 4], [4, 1]])


def frustum_points(T_map_cam: np.ndarray, K: np.ndarray, width: int, height: int,
                   depth: float = 0.1) -> np.ndarray:
    """Apex and image corners of camera frusta, in the map frame.

    Args:
        T_map_cam: (N, 4, 4) or (4, 4) camera (OpenCV optical) -> map.
        K: (3, 3) or (N, 3, 3) intrinsics at (width, height).
        depth: distance of the drawn image plane from the apex, metres.

    Returns:
        (N, 5, 3): apex, then corners (0,0), (W,0), (W,H), (0,H) at ``depth``.
    """
    T = np.asarray(T_map_cam, dtype=np.float64).reshape(-1, 4, 4)
    K = np.broadcast_to(np.asarray(K, dtype=np.float64), (len(T), 3, 3))
    uv = np.array([[0, 0, 1], [width, 0, 1], [width, height, 1], [0, height, 1]], float)
    rays = np.einsum("nij,kj->nki", np.linalg.inv(K), uv)          # (N, 4, 3), z = 1
    corners = np.concatenate([np.zeros((len(T), 1, 3)), rays * depth], axis=1)  # (N, 5, 3)
    return np.einsum("nij,nkj->nki", T[:, :3, :3], corners) + T[:, None, :3, 3]


def keyframe_markers(T_map_cam: np.ndarray, K: np.ndarray, width: int, height: int,
                     header, *, depth: float = 0.1, line_width: float = 0.005,
                     color: tuple[float, float, float, float] = (0.1, 0.6, 1.0, 1.0),
                     ) -> MarkerArray:
    """A ``MarkerArray`` with a ``DELETEALL`` marker then one frustum per keyframe.

    Args:
        T_map_cam: (N, 4, 4) keyframe poses (N may be 0); K: (3, 3) or (N, 3, 3).
        header: header of every marker (frame = map frame).
    """
    T = np.asarray(T_map_cam, dtype=np.float64).reshape(-1, 4, 4)
    out = MarkerArray()
    clear = Marker()
    clear.header = header
    clear.ns = "keyframes"
    clear.action = Marker.DELETEALL
    out.markers.append(clear)
    if len(T) == 0:
        return out
    segs = frustum_points(T, K, width, height, depth)[:, _SEGMENTS.ravel()]  # (N, 16, 3)
    rgba = ColorRGBA(r=float(color[0]), g=float(color[1]), b=float(color[2]),
                     a=float(color[3]))
    for i, pts in enumerate(segs.tolist()):
        m = Marker()
        m.header = header
        m.ns = "keyframes"
        m.id = i
        m.type = Marker.LINE_LIST
        m.action = Marker.ADD
        m.pose.orientation.w = 1.0
        m.scale.x = float(line_width)
        m.color = rgba
        m.points = [Point(x=p[0], y=p[1], z=p[2]) for p in pts]
        out.markers.append(m)
    return out
