"""bag_player (the installed executable, as a subprocess) plays synthetic rosbag2 folders
(MCAP and sqlite3): a subscriber receives every image in order with the bag's stamps,
topic selection and exclusion work, /clock follows the bag time, and --rate slows playback."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mast3r_ros.synth.bag import write_bag
from mast3r_ros.synth.sequence import SynthConfig, generate

try:  # no module-level importorskip (see test_ros_params_tf.py)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    from mast3r_ros.ros.bag_player import bag_topics, clock_class, read_messages
    from mast3r_ros.ros.conversions import image_to_rgb, stamp_ns
    _SKIP = ""
except ImportError as exc:
    _SKIP = f"rclpy / tf2_msgs not available (run scripts/setup.sh): {exc}"

pytestmark = [pytest.mark.ros, pytest.mark.skipif(bool(_SKIP), reason=_SKIP)]
REPO = Path(__file__).resolve().parents[1]
N, RATE_HZ = 6, 10.0


@pytest.fixture(scope="module")
def seq():
    return generate(SynthConfig(trajectory="walk", frames=N, width=32, height=24, seed=4, rate_hz=RATE_HZ))


def _play(bag: Path, args: list[str], topics: dict, tmp_path: Path) -> tuple[dict, int, str]:
    """Run bag_player while subscribed to ``topics`` (name -> type); returns received
    {name: [(source_timestamp_ns, msg)]}, the exit code and the output."""
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("bag_probe", context=ctx)
    got = {t: [] for t in topics}
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    for name, typ in topics.items():
        # (source timestamp in ns = when the player published it, message)
        node.create_subscription(typ, name, lambda m, info, n=name: got[n].append((info["source_timestamp"], m)),
                                 qos if name != "/clock" else QoSProfile(depth=100))
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    th = threading.Thread(target=ex.spin, daemon=True)
    th.start()
    try:
        env = dict(os.environ, ROS_LOG_DIR=str(tmp_path))
        p = subprocess.run([sys.executable, str(REPO / "scripts" / "bag_player"), str(bag), *args],
                           capture_output=True, text=True, timeout=240, env=env)
        time.sleep(0.5)
    finally:
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    return got, p.returncode, p.stdout + p.stderr


def test_reader_and_clock_type(seq, tmp_path):
    bag = write_bag(seq, tmp_path / "b", storage="sqlite3")
    topics = bag_topics(bag)
    assert topics["/camera/image_raw"] == ("sensor_msgs/msg/Image", N)
    msgs = list(read_messages(bag, ["/camera/image_raw"]))
    assert [m.log_time_ns for m in msgs] == [f.stamp_ns for f in seq.frames]
    assert len(list(read_messages(bag, exclude=["/camera/image_raw"]))) > 0
    assert clock_class() is not None  # rosgraph_msgs is installed with the rclpy wheels here


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_plays_images_in_order_with_stamps(seq, tmp_path, storage):
    bag = write_bag(seq, tmp_path / "bag", storage=storage)
    Clock = clock_class()
    rate = 0.5 if storage == "sqlite3" else 2.0
    got, rc, out = _play(bag, ["--topics", "/camera/image_raw", "/camera/camera_info", "/tf",
                               "--exclude", "/tf", "--rate", str(rate), "--wait-for-subscribers", "30",
                               "--delay", "0.3"],
                         {"/camera/image_raw": Image, "/camera/camera_info": CameraInfo,
                          "/tf": TFMessage, "/clock": Clock}, tmp_path)
    assert rc == 0, out
    imgs = got["/camera/image_raw"]
    assert [stamp_ns(m.header.stamp) for _, m in imgs] == [f.stamp_ns for f in seq.frames], out
    for (_, m), f in zip(imgs, seq.frames):
        np.testing.assert_array_equal(image_to_rgb(m), f.rgb)
    assert len(got["/camera/camera_info"]) == N
    assert got["/tf"] == []                       # excluded
    clocks = [stamp_ns(m.clock) for _, m in got["/clock"]]
    assert clocks and clocks == sorted(clocks)
    assert seq.frames[0].stamp_ns <= clocks[0] and clocks[-1] == seq.frames[-1].stamp_ns
    # the stamps' spacing is honoured: publication times (DDS source timestamps) span the bag's
    # duration / rate (a lower bound: a loaded machine can only play slower). From the second
    # image on: the first write of a topic may be stamped late (first-sample allocation).
    span = (imgs[-1][0] - imgs[1][0]) * 1e-9
    assert span >= 0.95 * (N - 2) / RATE_HZ / rate, span


def test_bad_arguments_exit_2(tmp_path):
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "bag_player"), str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "not a rosbag2 folder" in p.stderr, p.stderr
