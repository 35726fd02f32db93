"""launch_pytest: the real ``relocalization.launch.py`` (as installed by colcon) starts
relocalization_node in namespace ``mast3r`` with the simulator engine (TEST STAND-IN for the
network, exact profile) and its default params file; set_reference + relocalize over DDS give the ground-truth
pose; SIGINT at the end stops the node with exit code 0.

Skips with the reason where ``launch`` / ``launch_pytest`` are not importable (a user's pip
install without ROS 2's launch) or the package is not built.
"""
from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from mast3r_ros.geometry.transforms import rotation_angle_deg
from mast3r_ros.synth.bag import write_bag
from mast3r_ros.synth.sequence import SynthConfig, generate

try:  # no module-level importorskip (see test_ros_params_tf.py)
    import launch
    import launch_pytest
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    _SKIP = ""
except ImportError as exc:
    _SKIP = f"ROS 2 'launch' / launch_pytest not installed (see ../shared/ros2_launch): {exc}"
try:
    import rclpy

    import mast3r_ros.reloc  # noqa: F401
    from mast3r_ros.ros.conversions import (K_to_camera_info, array_to_image, matrix_to_pose,
                                            ns_to_stamp, pose_to_matrix)
    from mast3r_ros.srv import Relocalize, SetReference
except ImportError as exc:
    _SKIP = _SKIP or f"rclpy, the generated interfaces or mast3r_ros.reloc missing (run scripts/setup.sh): {exc}"

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.skipif(bool(_SKIP), reason=_SKIP)]
W, H = 160, 120


def _installed_launch_file() -> Path:
    try:
        from ament_index_python.packages import get_package_share_directory

        path = Path(get_package_share_directory("mast3r_ros")) / "launch" / "relocalization.launch.py"
    except Exception:  # noqa: BLE001 -- PackageNotFoundError or no ament index
        path = None
    if path is None or not path.is_file():
        pytest.skip("mast3r_ros not installed with its launch files (run scripts/setup.sh)")
    return path


@pytest.fixture(scope="module")
def isolated_env():
    """A private DDS domain on this machine only, and launch's temp files in a folder we remove."""
    saved = {k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "TMPDIR")}
    tmp = tempfile.mkdtemp(prefix="m3r_launch_")
    os.environ["ROS_DOMAIN_ID"] = str(random.randint(120, 200))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["TMPDIR"] = tmp
    tempfile.tempdir = None
    yield Path(tmp)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    tempfile.tempdir = None
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def seq_bag(isolated_env):
    seq = generate(SynthConfig(trajectory="walk", frames=6, width=W, height=H, seed=5))
    return seq, write_bag(seq, isolated_env / "bag")


@pytest.fixture(scope="module")
def include(seq_bag):
    _, bag = seq_bag
    return IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(_installed_launch_file())),
        launch_arguments={"engine": "simulator", "simulator_bag": str(bag),
                          "simulator_profile": "exact"}.items())   # node plumbing, not noise


if _SKIP:
    def test_relocalization_launch():
        pytest.skip(_SKIP)
else:
    @launch_pytest.fixture
    def launch_description(include):
        return launch.LaunchDescription([include, launch_pytest.actions.ReadyToTest()])


    @pytest.mark.launch(fixture=launch_description)
    def test_relocalization_launch(seq_bag, launch_context):
        seq, _ = seq_bag
        rclpy.init()
        try:
            node = rclpy.create_node("launch_test_client")
            set_ref = node.create_client(SetReference, "/mast3r/set_reference")
            reloc = node.create_client(Relocalize, "/mast3r/relocalize")
            assert set_ref.wait_for_service(timeout_sec=180), "relocalization_node never offered set_reference"

            def call(client, req):
                fut = client.call_async(req)
                rclpy.spin_until_future_complete(node, fut, timeout_sec=120)
                assert fut.result() is not None, "no answer"
                return fut.result()

            ref, q = seq.frames[0], seq.frames[2]
            req = SetReference.Request(image=array_to_image(ref.rgb, "rgb8"), id="r")
            req.image.header.stamp = ns_to_stamp(ref.stamp_ns)
            req.camera_info = K_to_camera_info(ref.K, W, H)
            req.pose.header.frame_id = "map"
            req.pose.pose = matrix_to_pose(ref.T_world_cam)
            r = call(set_ref, req)
            assert r.success, r.message
            req = Relocalize.Request(image=array_to_image(q.rgb, "rgb8"))
            req.image.header.stamp = ns_to_stamp(q.stamp_ns)
            req.camera_info = K_to_camera_info(q.K, W, H)
            r = call(reloc, req)
            assert r.success, r.message
            T = pose_to_matrix(r.pose.pose.pose)
            assert np.linalg.norm(T[:3, 3] - q.T_world_cam[:3, 3]) < 0.02
            assert rotation_angle_deg(T, q.T_world_cam) < 0.5
            node.destroy_node()
        finally:
            rclpy.try_shutdown()
        yield
