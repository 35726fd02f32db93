"""A real ROS 2 round trip: rclpy + Fast DDS + our generated Relocalize service.

Two nodes in one process, a server offering ``mast3r_ros/srv/Relocalize`` and a client
calling it with a 512x384 rgb8 image. The server records what it received and answers
with values derived from it; the test checks every request field arrived intact and
every response field came back intact.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (run scripts/setup.sh)")
srv_mod = pytest.importorskip(
    "mast3r_ros.srv", reason="generated interfaces not built (run scripts/setup.sh)"
)
from rclpy.executors import MultiThreadedExecutor  # noqa: E402

from mast3r_ros.ros.conversions import K_to_camera_info, array_to_image  # noqa: E402

Relocalize = srv_mod.Relocalize
pytestmark = pytest.mark.ros


def _fill_response(req, resp):
    """Server side: every response field set from the request, deterministically."""
    resp.success = True
    resp.message = f"got {req.image.width}x{req.image.height} {req.image.encoding}"
    resp.pose.header.stamp = req.image.header.stamp
    resp.pose.header.frame_id = "map"
    p = resp.pose.pose.pose
    p.position.x, p.position.y, p.position.z = 1.5, -2.25, 0.125
    p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = 0.5, 0.5, -0.5, 0.5
    resp.pose.pose.covariance = [float(i) * 0.01 for i in range(36)]
    resp.reference_id = req.reference_id or "kf_0007"
    resp.num_matches = 4321
    resp.num_inliers = 3210
    resp.confidence = 0.875
    resp.camera_info = req.camera_info
    resp.intrinsics_estimated = not any(req.camera_info.k)
    resp.elapsed_ms = 12.5
    return resp


@pytest.fixture()
def ros_context():
    context = rclpy.context.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)


def test_relocalize_roundtrip_every_field(ros_context):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(384, 512, 3), dtype=np.uint8)
    K = np.array([[400.0, 0, 255.5], [0, 401.0, 191.5], [0, 0, 1]])

    server = rclpy.create_node("reloc_test_server", context=ros_context)
    client_node = rclpy.create_node("reloc_test_client", context=ros_context)
    received = {}

    def handle(req, resp):
        received["req"] = req
        return _fill_response(req, resp)

    server.create_service(Relocalize, "/test/relocalize", handle)
    client = client_node.create_client(Relocalize, "/test/relocalize")
    executor = MultiThreadedExecutor(num_threads=2, context=ros_context)
    executor.add_node(server)
    executor.add_node(client_node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    try:
        assert client.wait_for_service(timeout_sec=10.0), "service never appeared"
        req = Relocalize.Request()
        req.image = array_to_image(image, "rgb8")
        req.image.header.stamp.sec, req.image.header.stamp.nanosec = 1700000000, 123456789
        req.image.header.frame_id = "camera_optical"
        req.camera_info = K_to_camera_info(K, 512, 384, header=req.image.header)
        req.reference_id = "kf_0042"
        done = threading.Event()
        future = client.call_async(req)
        future.add_done_callback(lambda _: done.set())
        assert done.wait(timeout=20.0), "no response within 20 s"
        resp = future.result()
    finally:
        executor.shutdown()
        server.destroy_node()
        client_node.destroy_node()
        spin.join(timeout=5.0)

    # request: every field arrived intact
    got = received["req"]
    assert (got.image.height, got.image.width, got.image.step) == (384, 512, 512 * 3)
    assert got.image.encoding == "rgb8" and got.image.is_bigendian == 0
    assert (got.image.header.stamp.sec, got.image.header.stamp.nanosec) == (1700000000, 123456789)
    assert got.image.header.frame_id == "camera_optical"
    np.testing.assert_array_equal(
        np.frombuffer(bytes(got.image.data), np.uint8).reshape(384, 512, 3), image
    )
    np.testing.assert_array_equal(np.asarray(got.camera_info.k).reshape(3, 3), K)
    assert (got.camera_info.width, got.camera_info.height) == (512, 384)
    assert got.camera_info.distortion_model == "plumb_bob"
    assert got.reference_id == "kf_0042"

    # response: every field came back intact
    expected = _fill_response(got, Relocalize.Response())
    for field in Relocalize.Response.get_fields_and_field_types():
        assert getattr(resp, field) == getattr(expected, field), field
    assert resp.success and resp.reference_id == "kf_0042" and resp.num_inliers == 3210
    assert resp.pose.pose.covariance[35] == pytest.approx(0.35)
    assert resp.intrinsics_estimated is False


def test_all_interfaces_are_generated():
    """Every interface the package declares is importable with its designed fields."""
    from mast3r_ros.msg import Keyframe, TrackingStatus
    from mast3r_ros.srv import GetKeyframes, LoadMap, Reset, SaveMap, SetPose, SetReference

    assert TrackingStatus.STATE_LOST == 2 and TrackingStatus.STATE_RELOCALIZED == 3
    assert "pose" in Keyframe.get_fields_and_field_types()
    assert SetReference.Request.get_fields_and_field_types()["pose"] == "geometry_msgs/PoseStamped"
    assert GetKeyframes.Response.get_fields_and_field_types()["keyframes"] == "sequence<mast3r_ros/Keyframe>"
    for srv in (LoadMap, SaveMap, Reset, SetPose):
        assert "success" in srv.Response.get_fields_and_field_types()
