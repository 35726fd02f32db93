"""Shared ROS layer: common parameters (validation, declaration on a real node, engine
creation) and our TF broadcaster / listener over real rclpy topics."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from mast3r_ros.geometry.transforms import invert_T, pose_to_T

# No module-level importorskip: launch_testing's pytest plugin imports every test module of
# the folder while collecting, and a Skip raised there would skip the whole folder.
try:
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter

    from mast3r_ros.ros import params, tf
    _SKIP = ""
except ImportError as exc:
    _SKIP = f"rclpy / tf2_msgs not available (run scripts/setup.sh): {exc}"

pytestmark = [pytest.mark.ros, pytest.mark.skipif(bool(_SKIP), reason=_SKIP)]


def _rand_T(rng) -> np.ndarray:
    q = rng.normal(size=4)
    return pose_to_T(rng.normal(size=3), q / np.linalg.norm(q))


# -- params ------------------------------------------------------------------------------
def test_defaults_need_a_checkpoint():
    with pytest.raises(params.ParameterError, match="'checkpoint' is required"):
        params.config_from_values({})


@pytest.mark.parametrize("values, match", [
    ({"engine": "magic"}, "parameter 'engine': expected one of"),
    ({"engine": "simulator"}, "'simulator_bag' is required"),
    ({"engine": "simulator", "simulator_bag": "/nonexistent/bag"}, "not a directory"),
    ({"checkpoint": "/nonexistent.pth"}, "file not found"),
    ({"engine": "simulator", "simulator_bag": "BAG", "dtype": "float64"}, "parameter 'dtype'"),
    ({"engine": "simulator", "simulator_bag": "BAG", "device": "tpu"}, "parameter 'device'"),
    ({"engine": "simulator", "simulator_bag": "BAG", "image_size": 500}, "multiple of 16"),
    ({"engine": "simulator", "simulator_bag": "BAG", "simulator_profile": "nice"}, "simulator_profile"),
    ({"engine": "simulator", "simulator_bag": "BAG", "map_frame": "/map"}, "parameter 'map_frame'"),
    ({"engine": "simulator", "simulator_bag": "BAG", "odom_frame": "map"}, "must differ"),
    ({"engine": "simulator", "simulator_bag": "BAG", "base_frame": "base_link",
      "camera_to_base": [0, 0, 0, 0, 0, 0, 2]}, "unit norm"),
    ({"engine": "simulator", "simulator_bag": "BAG", "camera_to_base": [0, 0, 0]}, "7 finite numbers"),
    ({"engine": "simulator", "simulator_bag": "BAG", "map_path": "FILE"}, "a file"),
    ({"engine": "simulator", "simulator_bag": "BAG", "map_path": "/nonexistent/map"}, "missing"),
])
def test_bad_values_name_the_parameter(tmp_path, values, match):
    f = tmp_path / "file.txt"
    f.write_text("x")
    values = {k: (str(tmp_path) if v == "BAG" else str(f) if v == "FILE" else v) for k, v in values.items()}
    with pytest.raises(params.ParameterError, match=match):
        params.config_from_values(values)


def test_valid_config_and_camera_to_base(tmp_path):
    q = np.array([0.5, -0.5, 0.5, -0.5])  # optical -> body
    cfg = params.config_from_values({"engine": "simulator", "simulator_bag": str(tmp_path),
                                     "base_frame": "base_link",
                                     "camera_to_base": [0.1, 0.0, 0.3, *q]})
    assert cfg.engine is params.EngineKind.SIMULATOR
    assert cfg.simulator_profile is params.SimulatorProfile.REALISTIC
    np.testing.assert_allclose(cfg.T_base_cam, pose_to_T([0.1, 0.0, 0.3], q), atol=1e-12)
    cfg2 = params.config_from_values({"engine": "simulator", "simulator_bag": str(tmp_path)})
    np.testing.assert_array_equal(cfg2.T_base_cam, np.eye(4))   # base_frame '' -> camera itself


def test_simulator_config_profiles_and_json(tmp_path):
    base = {"engine": "simulator", "simulator_bag": str(tmp_path), "image_size": 256}
    exact = params.simulator_config(params.config_from_values({**base, "simulator_profile": "exact"}))
    real = params.simulator_config(params.config_from_values(base))
    assert exact.size == 256 and exact.depth_noise_rel == 0.0
    assert real.depth_noise_rel > 0.0
    j = tmp_path / "sim.json"
    j.write_text('{"seed": 7}')
    cfg = params.config_from_values({**base, "simulator_config": str(j)})
    assert params.simulator_config(cfg).seed == 7
    j.write_text('{"no_such_field": 1}')
    with pytest.raises(params.ParameterError, match="no_such_field"):
        params.simulator_config(params.config_from_values({**base, "simulator_config": str(j)}))


@pytest.fixture()
def ctx():
    context = rclpy.context.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)


def test_declared_on_a_node_with_descriptions_and_read_only(ctx, tmp_path):
    node = rclpy.create_node("params_probe", context=ctx, parameter_overrides=[
        Parameter("engine", value="simulator"), Parameter("simulator_bag", value=str(tmp_path)),
        Parameter("base_frame", value="base_link"),
        Parameter("camera_to_base", value=[0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])])
    try:
        params.declare_common(node)
        for name in params.COMMON_PARAMETERS:
            d = node.describe_parameter(name)
            assert d.description, name
        assert node.describe_parameter("checkpoint").read_only
        assert not node.describe_parameter("publish_tf").read_only
        cfg = params.read_common(node)
        assert cfg.base_frame == "base_link" and cfg.T_base_cam[2, 3] == 1.0
        res = node.set_parameters([Parameter("image_size", value=256)])
        assert not res[0].successful            # read-only
    finally:
        node.destroy_node()


# -- tf ---------------------------------------------------------------------------------------
def test_transform_stamped_round_trip_and_rep105():
    rng = np.random.default_rng(3)
    T = _rand_T(rng)
    msg = tf.transform_stamped(T, "map", "odom", 1_700_000_000_123_456_789)
    assert (msg.header.frame_id, msg.child_frame_id) == ("map", "odom")
    assert tf.stamp_to_ns(msg.header.stamp) == 1_700_000_000_123_456_789
    np.testing.assert_allclose(tf.transform_to_matrix(msg), T, atol=1e-12)
    msg.transform.rotation.w = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        tf.transform_to_matrix(msg)
    T_map_cam, T_odom_cam, T_base_cam = _rand_T(rng), _rand_T(rng), _rand_T(rng)
    T_map_odom = tf.map_to_odom(T_map_cam, T_odom_cam)
    np.testing.assert_allclose(T_map_odom @ T_odom_cam, T_map_cam, atol=1e-12)
    T_odom_base = tf.odom_to_base(T_odom_cam, T_base_cam)
    np.testing.assert_allclose(T_odom_base @ T_base_cam, T_odom_cam, atol=1e-12)


def test_broadcaster_and_listener_over_real_topics(ctx):
    rng = np.random.default_rng(5)
    T_map_odom, T_odom_base, T_base_cam = _rand_T(rng), _rand_T(rng), _rand_T(rng)
    pub_node = rclpy.create_node("tf_pub_probe", context=ctx)
    sub_node = rclpy.create_node("tf_sub_probe", context=ctx)
    ex = MultiThreadedExecutor(context=ctx)
    ex.add_node(pub_node)
    ex.add_node(sub_node)
    th = threading.Thread(target=ex.spin, daemon=True)
    th.start()
    try:
        br = tf.TfBroadcaster(pub_node)
        # static first: the latched topic must reach a listener created later
        br.send_static(tf.transform_stamped(T_base_cam, "base_link", "camera", 0))
        listener = tf.TfListener(sub_node)
        stamp = 1_700_000_001_000_000_000
        found = None
        for _ in range(100):
            br.send([tf.transform_stamped(T_map_odom, "map", "odom", stamp),
                     tf.transform_stamped(T_odom_base, "odom", "base_link", stamp)])
            time.sleep(0.05)
            found = listener.lookup("map", "camera", stamp)
            if found is not None:
                break
        assert found is not None, "TF never arrived"
        np.testing.assert_allclose(found, T_map_odom @ T_odom_base @ T_base_cam, atol=1e-9)
        back = listener.lookup("camera", "odom", stamp)
        np.testing.assert_allclose(back, invert_T(T_odom_base @ T_base_cam), atol=1e-9)
        assert listener.lookup("map", "camera", stamp + 10**9) is None   # no sample near that stamp
        assert listener.lookup("map", "elsewhere") is None
        # /tf_static QoS is what tf2 expects
        assert br._static_pub.qos_profile.depth == 1          # depth is not in discovery data
        info = sub_node.get_publishers_info_by_topic("/tf_static")
        assert len(info) == 1
        from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

        assert info[0].qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
        assert info[0].qos_profile.reliability == ReliabilityPolicy.RELIABLE
    finally:
        ex.shutdown()
        pub_node.destroy_node()
        sub_node.destroy_node()
