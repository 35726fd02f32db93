"""The real ``slam.launch.py`` as colcon installs it, with the simulator engine (a TEST
STAND-IN for the network) and bag_player playing a synthetic rosbag2:

- ``ros2 launch mast3r_ros slam.launch.py engine:=simulator simulator_bag:=B bag:=B`` in its
  own process group; ``ros2 topic echo --once`` (with the type) gets odometry, TF and status;
  ``ros2 service call /mast3r/get_keyframes`` answers with keyframes; SIGINT stops it;
- launch_pytest: the same launch file included in a test launch description; an rclpy
  client checks that every frame the node processes gets a pose near the ground truth.

Skips with the reason where ``launch`` / launch_pytest / ``ros2`` are missing (a user's pip
install) or the package is not built.
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

# No module-level importorskip: launch_testing's pytest plugin imports every test module of
# the folder while collecting, and a Skip raised there would skip the whole folder.
try:
    import launch
    import launch_pytest
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    _SKIP = ""
except ImportError as exc:
    _SKIP = f"ROS 2 'launch' / launch_pytest not installed (see ../shared/ros2_launch): {exc}"
try:
    import rclpy
    from geometry_msgs.msg import PoseStamped

    from mast3r_ros.msg import TrackingStatus
    from mast3r_ros.ros.conversions import pose_to_matrix
    from mast3r_ros.srv import GetKeyframes
except ImportError as exc:
    _SKIP = _SKIP or f"rclpy or the generated interfaces missing (run scripts/setup.sh): {exc}"

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.skipif(bool(_SKIP), reason=_SKIP)]
W, H, FRAMES = 160, 120, 12


def _installed_launch_file() -> Path:
    try:
        from ament_index_python.packages import get_package_share_directory

        path = Path(get_package_share_directory("mast3r_ros")) / "launch" / "slam.launch.py"
    except Exception:  # noqa: BLE001 -- PackageNotFoundError or no ament index
        path = None
    if path is None or not path.is_file():
        pytest.skip("mast3r_ros not installed with its launch files (run scripts/setup.sh)")
    return path


@pytest.fixture(scope="module")
def isolated_env():
    """A private DDS domain on this machine only; launch's temp files in a folder we remove."""
    saved = {k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE",
                                            "TMPDIR", "ROS_LOG_DIR")}
    tmp = tempfile.mkdtemp(prefix="m3r_slam_launch_")
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


def _launch_args(bag: Path) -> dict[str, str]:
    return {"engine": "simulator", "simulator_bag": str(bag), "bag": str(bag),
            "image_size": "160", "bag_rate": "0.1"}


def test_ros2_launch_cli_gives_odometry_tf_status_and_keyframes(seq_bag):
    """The user's commands: ros2 launch, ros2 topic echo, ros2 service call."""
    ros2 = shutil.which("ros2")
    if ros2 is None:
        pytest.skip("the ros2 command is not installed (see ../shared/ros2_launch)")
    _installed_launch_file()
    seq, bag = seq_bag
    args = [f"{k}:={v}" for k, v in _launch_args(bag).items()]
    log = open(Path(os.environ["TMPDIR"]) / "launch.log", "w")
    # its own process group: SIGINT reaches launch and the nodes it started, nothing else
    proc = subprocess.Popen([ros2, "launch", "mast3r_ros", "slam.launch.py", *args],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    daemon_used = False
    try:
        # the echos start with the launch (the node needs longer to load its engine than
        # they need to subscribe), so they hear the bag's frames while it plays
        echos = {topic: subprocess.Popen([ros2, "topic", "echo", "--once", topic, msg_type],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for topic, msg_type in (
                     ("/mast3r/tracking/status", "mast3r_ros/msg/TrackingStatus"),
                     ("/mast3r/tracking/odometry", "nav_msgs/msg/Odometry"),
                     ("/tf", "tf2_msgs/msg/TFMessage"))}
        got = {}
        deadline = time.monotonic() + 300
        for topic, p in echos.items():
            # wait for the message, but stop at once if the launch itself has ended
            while p.poll() is None and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
            if p.poll() is None:
                p.kill()
            out, err = p.communicate()
            assert p.returncode == 0, (topic, err, f"launch exit code: {proc.poll()}")
            got[topic] = out
        status = got["/mast3r/tracking/status"]
        assert "state_name: initializing" in status or "state_name: tracking" in status, status
        odom = got["/mast3r/tracking/odometry"]
        assert "frame_id: odom" in odom and "child_frame_id: camera_optical_frame" in odom, odom
        tf = got["/tf"]
        assert "frame_id: map" in tf and "child_frame_id: odom" in tf, tf
        daemon_used = True
        out = subprocess.run([ros2, "service", "call", "/mast3r/get_keyframes",
                              "mast3r_ros/srv/GetKeyframes"], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        assert "success=True" in out.stdout and "id='kf" in out.stdout, out.stdout
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)   # launch forwards it to the nodes it started
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        log.close()
        if daemon_used:
            subprocess.run([ros2, "daemon", "stop"], capture_output=True, timeout=60)
    text = (Path(os.environ["TMPDIR"]) / "launch.log").read_text()
    assert "NOT A NETWORK" in text       # the simulator says what it is
    assert "Traceback" not in text, text[-3000:]


if _SKIP:
    def test_slam_launch_every_processed_frame_gets_a_pose():
        pytest.skip(_SKIP)
else:
    @pytest.fixture(scope="module")
    def include(seq_bag):
        _, bag = seq_bag
        return IncludeLaunchDescription(PythonLaunchDescriptionSource(str(_installed_launch_file())),
                                        launch_arguments=_launch_args(bag).items())

    @launch_pytest.fixture(scope="module")
    def launch_description(include):
        return launch.LaunchDescription([include, launch_pytest.actions.ReadyToTest()])

    @pytest.mark.launch(fixture=launch_description)
    def test_slam_launch_every_processed_frame_gets_a_pose(seq_bag, launch_context):
        seq, _ = seq_bag
        ctx = rclpy.Context()
        rclpy.init(context=ctx)
        poses: dict[int, np.ndarray] = {}
        states: list[str] = []
        try:
            node = rclpy.create_node("slam_launch_test", context=ctx)
            node.create_subscription(
                PoseStamped, "/mast3r/tracking/pose",
                lambda m: poses.__setitem__(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec,
                                            pose_to_matrix(m.pose)), 100)
            node.create_subscription(TrackingStatus, "/mast3r/tracking/status",
                                     lambda m: states.append(m.state_name), 100)
            executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
            executor.add_node(node)
            spin = threading.Thread(target=executor.spin, daemon=True)
            spin.start()
            # the bag plays once the node subscribes: 12 frames at 1 Hz; wait for the last one
            deadline = time.monotonic() + 300
            last = int(seq.stamps_ns[-1])
            while last not in poses and time.monotonic() < deadline:
                time.sleep(0.2)
            client = node.create_client(GetKeyframes, "/mast3r/get_keyframes")
            assert client.wait_for_service(timeout_sec=60)
            fut = client.call_async(GetKeyframes.Request())
            deadline = time.monotonic() + 60
            while not fut.done() and time.monotonic() < deadline:
                time.sleep(0.1)
            executor.shutdown()
            node.destroy_node()
        finally:
            rclpy.try_shutdown(context=ctx)
        # every processed frame gets a pose (frames arriving while the node is busy may be
        # dropped on a loaded machine: at least 4 are processed), close to the truth after
        # a Sim(3) alignment (frames are dropped, so the motion between processed frames is
        # larger than in the lockstep node tests, which hold the tighter bounds)
        from mast3r_ros.evaluation.metrics import ate
        from mast3r_ros.evaluation.trajectory import Trajectory

        stamps = [int(s) for s in seq.stamps_ns]
        assert set(poses) <= set(stamps) and len(poses) >= 4, (len(poses), states)
        assert stamps[0] in poses and stamps[-1] in poses
        got = sorted(poses)
        est = Trajectory(np.array(got) / 1e9, np.array([poses[s] for s in got]))
        a = ate(Trajectory(seq.stamps_ns / 1e9, seq.poses), est, "sim3")
        print(f"\nslam.launch.py: {len(poses)}/{FRAMES} frames with a pose, states {states}, "
              f"ATE Sim(3) {a.stats.rmse:.4f} m")
        length = float(np.linalg.norm(np.diff(seq.poses[:, :3, 3], axis=0), axis=1).sum())
        # 0.105 m measured on this 12-frame walk with the realistic simulator profile (the
        # lockstep node tests measure the long-run accuracy); bound with margin
        assert a.stats.rmse < 0.2, (a.stats.rmse, length, states)
        resp = fut.result()
        assert resp is not None and resp.success and len(resp.keyframes) >= 1
        assert len(resp.path.poses) == len(resp.keyframes)
        # (a plain function, not a generator: launch_pytest 3.8.8's generator path with a
        # module-scoped launch fixture calls getfixtureinfo(funcargs=...), which pytest 8.3
        # no longer accepts)
