"""PointCloud2, keyframe frusta and path/odometry/TF messages: built from numbers, decoded
back from the bytes and compared with the numbers."""
from __future__ import annotations

import numpy as np
import pytest

# No module-level importorskip: launch_testing's pytest plugin imports every test module of
# the folder while collecting, and a Skip raised there would skip the whole folder.
try:
    from scipy.spatial.transform import Rotation
    from visualization_msgs.msg import Marker

    from mast3r_ros.ros.markers import frustum_points, keyframe_markers
    from mast3r_ros.ros.paths import header, make_path, odometry, path_to_arrays, stamp_ns_of
    from mast3r_ros.ros.pointcloud import pointcloud2_to_xyz_rgb, xyz_rgb_to_pointcloud2
    _SKIP = ""
except ImportError as exc:
    _SKIP = f"ROS message packages (sensor_msgs, visualization_msgs) not installed: {exc}"
pytestmark = pytest.mark.skipif(bool(_SKIP), reason=_SKIP)

RNG = np.random.default_rng(4)


def _poses(n: int) -> np.ndarray:
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = Rotation.random(n, random_state=5).as_matrix()
    T[:, :3, 3] = RNG.normal(size=(n, 3))
    return T


def test_pointcloud_roundtrip_is_exact_and_drops_non_finite():
    xyz = RNG.normal(size=(1000, 3)).astype(np.float32)
    rgb = RNG.integers(0, 256, size=(1000, 3), dtype=np.uint8)
    xyz[[3, 500]] = np.nan
    msg = xyz_rgb_to_pointcloud2(xyz, rgb, header(1_000_000_007, "map"))
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 998, 16, 16 * 998)
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb"] and msg.is_dense
    assert msg.header.frame_id == "map" and stamp_ns_of(msg.header.stamp) == 1_000_000_007
    keep = np.isfinite(xyz).all(axis=1)
    back_xyz, back_rgb = pointcloud2_to_xyz_rgb(msg)
    np.testing.assert_array_equal(back_xyz, xyz[keep])
    np.testing.assert_array_equal(back_rgb, rgb[keep])
    # the packed rgb field is PCL's 0x00RRGGBB in little endian: byte 12 = blue
    raw = np.frombuffer(bytes(msg.data), np.uint8).reshape(-1, 16)
    np.testing.assert_array_equal(raw[:, 12:15], rgb[keep][:, ::-1])
    np.testing.assert_array_equal(raw[:, 15], 0)


def test_pointcloud_empty_and_bad_shapes():
    msg = xyz_rgb_to_pointcloud2(np.zeros((0, 3)), np.zeros((0, 3), np.uint8))
    assert msg.width == 0 and len(msg.data) == 0
    xyz, rgb = pointcloud2_to_xyz_rgb(msg)
    assert xyz.shape == (0, 3) and rgb.shape == (0, 3)
    with pytest.raises(ValueError, match=r"xyz must be \(N, 3\), got shape \(4, 2\)"):
        xyz_rgb_to_pointcloud2(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="rgb must be"):
        xyz_rgb_to_pointcloud2(np.zeros((4, 3)), np.zeros((3, 3), np.uint8))
    bad = xyz_rgb_to_pointcloud2(np.zeros((2, 3)))
    bad.fields = bad.fields[:3]
    with pytest.raises(ValueError, match="no field 'rgb'"):
        pointcloud2_to_xyz_rgb(bad)


def test_frusta_project_onto_the_image_corners():
    K = np.array([[200.0, 0, 128], [0, 210, 96], [0, 0, 1]])
    T = _poses(3)
    pts = frustum_points(T, K, 256, 192, depth=0.5)            # (3, 5, 3) in the map
    assert pts.shape == (3, 5, 3)
    np.testing.assert_allclose(pts[:, 0], T[:, :3, 3])          # apex = camera centre
    cam = np.einsum("nji,nkj->nki", T[:, :3, :3], pts - T[:, None, :3, 3])  # back to camera
    np.testing.assert_allclose(cam[:, 1:, 2], 0.5)              # on the plane z = depth
    uv = np.einsum("ij,nkj->nki", K, cam[:, 1:])
    uv = uv[..., :2] / uv[..., 2:]
    np.testing.assert_allclose(uv[0], [[0, 0], [256, 0], [256, 192], [0, 192]], atol=1e-9)
    arr = keyframe_markers(T, K, 256, 192, header(5, "map"), depth=0.5)
    assert arr.markers[0].action == Marker.DELETEALL and len(arr.markers) == 4
    m = arr.markers[2]
    assert (m.type, m.id, m.ns, m.header.frame_id) == (Marker.LINE_LIST, 1, "keyframes", "map")
    got = np.array([[p.x, p.y, p.z] for p in m.points])
    assert got.shape == (16, 3)
    np.testing.assert_allclose(got[0], T[1, :3, 3])
    np.testing.assert_allclose(got[1], pts[1, 1])
    assert len(keyframe_markers(np.zeros((0, 4, 4)), K, 256, 192, header(0, "map")).markers) == 1


def test_path_and_odometry_roundtrip():
    T = _poses(4)
    stamps = [10**9 * 3 + i * 123 for i in range(4)]
    path = make_path(stamps, T, "map")
    s, P = path_to_arrays(path)
    np.testing.assert_array_equal(s, stamps)
    np.testing.assert_allclose(P, T, atol=1e-12)
    assert path.header.frame_id == "map" and stamp_ns_of(path.header.stamp) == stamps[-1]
    with pytest.raises(ValueError, match="3 stamps for 4 poses"):
        make_path(stamps[:3], T, "map")
    odom = odometry(T[1], stamps[1], "odom", "camera")
    assert (odom.header.frame_id, odom.child_frame_id) == ("odom", "camera")
    assert odom.pose.pose.position.x == pytest.approx(T[1, 0, 3])
