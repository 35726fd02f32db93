"""Our Image / CameraInfo / Pose conversions (cv_bridge does not exist everywhere)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="ROS message packages not installed")
from scipy.spatial.transform import Rotation  # noqa: E402

from mast3r_ros.ros.conversions import (  # noqa: E402
    K_to_camera_info,
    array_to_image,
    camera_info_to_K,
    image_to_array,
    image_to_rgb,
    matrix_to_pose,
    pose_to_matrix,
    pose_with_covariance,
)

RNG = np.random.default_rng(1)
RGB = RNG.integers(0, 256, size=(7, 9, 3), dtype=np.uint8)  # odd sizes on purpose


@pytest.mark.parametrize(
    "encoding, stored",
    [
        ("rgb8", RGB),
        ("bgr8", RGB[..., ::-1]),
        ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)])),
        ("bgra8", np.dstack([RGB[..., ::-1], np.zeros(RGB.shape[:2], np.uint8)])),
    ],
)
def test_colour_encodings_give_rgb(encoding, stored):
    msg = array_to_image(np.ascontiguousarray(stored), encoding)
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)


def test_mono8_becomes_grey_rgb():
    mono = RGB[..., 0]
    out = image_to_rgb(array_to_image(mono, "mono8"))
    assert out.shape == (7, 9, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], mono)


def test_padded_rows_and_big_endian_depth():
    depth = RNG.uniform(0.5, 8, size=(5, 6)).astype(np.float32)
    msg = array_to_image(depth, "32FC1")
    # re-encode big-endian with 8 bytes of row padding
    rows = depth.astype(">f4").tobytes()
    padded = b"".join(rows[i * 24:(i + 1) * 24] + b"\xff" * 8 for i in range(5))
    msg.is_bigendian, msg.step, msg.data = 1, 32, padded
    np.testing.assert_array_equal(image_to_array(msg), depth)


def test_bad_images_are_refused_with_reasons():
    msg = array_to_image(RGB, "rgb8")
    msg.encoding = "yuv422"
    with pytest.raises(ValueError, match="encoding 'yuv422' is not supported"):
        image_to_array(msg)
    msg = array_to_image(RGB, "rgb8")
    msg.data = bytes(msg.data)[:-5]
    with pytest.raises(ValueError, match="expected step\\*height"):
        image_to_array(msg)
    msg = array_to_image(RGB, "rgb8")
    msg.width = 0
    with pytest.raises(ValueError, match="must be positive"):
        image_to_array(msg)
    with pytest.raises(ValueError, match="not a colour/mono"):
        image_to_rgb(array_to_image(np.zeros((2, 2), np.float32), "32FC1"))
    with pytest.raises(ValueError, match="does not fit encoding"):
        array_to_image(RGB, "mono8")


def test_camera_info_roundtrip_unknown_and_invalid():
    K = np.array([[500.0, 0, 319.5], [0, 505.0, 239.5], [0, 0, 1]])
    info = K_to_camera_info(K, 640, 480)
    np.testing.assert_array_equal(camera_info_to_K(info), K)
    assert (info.width, info.height) == (640, 480)
    assert camera_info_to_K(K_to_camera_info(np.zeros((3, 3)), 640, 480)) is None
    assert camera_info_to_K(None) is None
    bad = K.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        camera_info_to_K(K_to_camera_info(bad, 640, 480))
    bad = K.copy()
    bad[1, 1] = -3
    with pytest.raises(ValueError, match="fx, fy > 0"):
        camera_info_to_K(K_to_camera_info(bad, 640, 480))


def test_pose_roundtrip_and_quaternion_order():
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("xyz", [10, -20, 170], degrees=True).as_matrix()
    T[:3, 3] = [1.0, -2.0, 3.5]
    pose = matrix_to_pose(T)
    q = [pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w]
    np.testing.assert_allclose(
        np.abs(q), np.abs(Rotation.from_matrix(T[:3, :3]).as_quat()), atol=1e-12
    )  # xyzw, ROS order
    assert pose.orientation.w >= 0
    np.testing.assert_allclose(pose_to_matrix(pose), T, atol=1e-12)
    pose.orientation.w = 5.0
    with pytest.raises(ValueError, match="not a unit quaternion"):
        pose_to_matrix(pose)
    cov = np.diag([1, 2, 3, 4, 5, 6]).astype(float)
    msg = pose_with_covariance(T, cov)
    np.testing.assert_array_equal(np.asarray(msg.pose.covariance).reshape(6, 6), cov)
    with pytest.raises(ValueError, match="6x6"):
        pose_with_covariance(T, np.eye(3))
