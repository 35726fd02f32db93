"""``ros2 launch mast3r_ros slam.launch.py separate_mapping:=true`` as colcon installs it: tracker_node and
mapping_node (two processes, two engines; the simulator is a TEST STAND-IN for the network)
with bag_player playing a synthetic rosbag2 once both hear the camera. An rclpy client
checks that the two talk: the mapping node maps the tracker's keyframes (same ids, on
``/mast3r/get_keyframes``; the tracker's own under ``/mast3r/tracking/get_keyframes``),
publishes ``map/keyframe_path`` and owns TF ``map -> odom`` while the tracker publishes
``odom -> camera``.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mast3r_ros.synth.bag import write_bag
from mast3r_ros.synth.sequence import SynthConfig, generate

_SKIP = ""
try:
    import rclpy
    from nav_msgs.msg import Path as PathMsg
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage

    from mast3r_ros.srv import GetKeyframes
except ImportError as exc:
    _SKIP = f"rclpy or the generated interfaces missing (run scripts/setup.sh): {exc}"

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.skipif(bool(_SKIP), reason=_SKIP)]
W, H, FRAMES = 160, 120, 12


def _installed_launch_file() -> Path:
    try:
        from ament_index_python.packages import get_package_share_directory

        path = Path(get_package_share_directory("mast3r_ros")) / "launch" / "slam.launch.py"
    except Exception:  # noqa: BLE001 -- PackageNotFoundError or no ament index
        path = None
    if path is None or not path.is_file() or not (path.parents[1] / "config" / "mapping.yaml").is_file():
        pytest.skip("mast3r_ros not installed with its launch and config files (run scripts/setup.sh)")
    return path


@pytest.fixture(scope="module")
def isolated_env():
    """A private DDS domain on this machine only; launch's temp files in a folder we remove."""
    saved = {k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE",
                                            "TMPDIR", "ROS_LOG_DIR")}
    tmp = tempfile.mkdtemp(prefix="m3r_mapping_launch_")
    os.environ["ROS_DOMAIN_ID"] = str(random.randint(201, 230))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["TMPDIR"] = tmp
    os.environ["ROS_LOG_DIR"] = str(Path(tmp) / "log")
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
    seq = generate(SynthConfig(trajectory="walk", frames=FRAMES, width=W, height=H, seed=7))
    return seq, write_bag(seq, isolated_env / "bag")


def test_separate_mapping_launch_tracker_and_mapper_talk(seq_bag):
    """``ros2 launch`` in its own process group (no launch_pytest: a second module-scoped
    launch fixture in one session hung), an rclpy client in a private context."""
    ros2 = shutil.which("ros2")
    if ros2 is None:
        pytest.skip("the ros2 command is not installed (see ../shared/ros2_launch)")
    _installed_launch_file()
    seq, bag = seq_bag
    args = {"engine": "simulator", "simulator_bag": str(bag), "bag": str(bag),
            "image_size": "160", "bag_rate": "0.1", "separate_mapping": "true"}
    log = open(Path(os.environ["TMPDIR"]) / "launch.log", "w")
    proc = subprocess.Popen([ros2, "launch", "mast3r_ros", "slam.launch.py",
                             *[f"{k}:={v}" for k, v in args.items()]],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    paths: list = []
    edges: set = set()
    mapped, tracked = [], []
    try:
        node = rclpy.create_node("mapping_launch_test", context=ctx)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        node.create_subscription(PathMsg, "/mast3r/map/keyframe_path", paths.append, latched)
        node.create_subscription(
            TFMessage, "/tf",
            lambda m: edges.update((t.header.frame_id, t.child_frame_id) for t in m.transforms),
            100)
        executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        spin = threading.Thread(target=executor.spin, daemon=True)
        spin.start()

        def keyframes(name):
            client = node.create_client(GetKeyframes, name)
            assert client.wait_for_service(timeout_sec=120), (name, f"launch exit {proc.poll()}")
            fut = client.call_async(GetKeyframes.Request())
            end = time.monotonic() + 60
            while not fut.done() and time.monotonic() < end:
                time.sleep(0.1)
            assert fut.done() and fut.result().success, name
            return [k.id for k in fut.result().keyframes]

        # the bag plays once both nodes hear the camera; wait until the mapping node has
        # mapped at least two of the tracker's keyframes
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            mapped = keyframes("/mast3r/get_keyframes")      # first: the tracker's
            tracked = keyframes("/mast3r/tracking/get_keyframes")  # list can only grow
            if len(mapped) >= 2 and ("map", "odom") in edges and paths and \
                    len(paths[-1].poses) >= 2:
                break
            time.sleep(1.0)
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)   # launch forwards it to the nodes it started
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        log.close()
    print(f"\nseparate mapping: tracker keyframes {tracked}, mapped {mapped}, TF edges {sorted(edges)}")
    assert len(mapped) >= 2, (tracked, mapped)
    assert mapped == tracked[:len(mapped)]           # the tracker's keyframes, in order
    assert {("map", "odom"), ("odom", "camera_optical_frame")} <= edges
    assert paths and len(paths[-1].poses) >= 2
    assert np.isfinite([p.pose.position.x for p in paths[-1].poses]).all()
    text = (Path(os.environ["TMPDIR"]) / "launch.log").read_text()
    assert "NOT A NETWORK" in text and "mapping ready" in text
