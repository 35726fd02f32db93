"""Synthetic rosbag2 files: byte-exact with rosbags, independently readable with
mcap-ros2-support, counts/stamps/encodings as asked; the synth command end to end."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from mast3r_ros.cli import main
from mast3r_ros.evaluation.trajectory import read_tum
from mast3r_ros.synth.bag import (
    BAG_METADATA_VERSION, BagTopics, ImageEncoding, _typestore, frame_messages, read_bag,
    write_bag, write_dataset,
)
from mast3r_ros.synth.sequence import SynthConfig, generate, stamp_id

N, W, H, RATE = 5, 64, 48, 7.0
TOPICS = BagTopics()


@pytest.fixture(scope="module")
def sequence():
    return generate(SynthConfig(trajectory="walk", frames=N, width=W, height=H, rate_hz=RATE,
                                seed=2))


def _expected_stamps(seq) -> list[int]:
    return [seq.frames[0].stamp_ns + round(i * 1e9 / RATE) for i in range(N)]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_bag_reads_back_byte_exact_with_rosbags(sequence, tmp_path, storage, encoding):
    from rosbags.rosbag2 import Reader

    bag = write_bag(sequence, tmp_path / "bag", encoding=encoding, storage=storage)
    ts = _typestore()
    expected = {}
    for f in sequence.frames:
        for key, msg in frame_messages(ts, f, ImageEncoding(encoding), TOPICS).items():
            expected[(getattr(TOPICS, key), f.stamp_ns)] = ts.serialize_cdr(msg, msg.__msgtype__)
    counts: Counter = Counter()
    with Reader(bag) as reader:
        assert reader.message_count == 5 * N + 1
        for conn, t, raw in reader.messages():
            counts[conn.topic] += 1
            if conn.topic == TOPICS.info:
                continue
            assert bytes(raw) == expected[(conn.topic, t)]  # byte-exact, stamped at receive time
    assert counts == {TOPICS.image: N, TOPICS.camera_info: N, TOPICS.depth: N, TOPICS.tf: N,
                      TOPICS.pose: N, TOPICS.info: 1}
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == BAG_METADATA_VERSION == 8
    assert meta["storage_identifier"] == storage

    back = read_bag(bag)
    assert [f.stamp_ns for f in back.frames] == _expected_stamps(sequence)
    assert back.info["trajectory"] == "walk" and back.info["width"] == W
    for a, b in zip(sequence.frames, back.frames):
        if encoding == "mono8":
            grey = b.rgb[..., 0].astype(int)
            ref = a.rgb.astype(float) @ [0.299, 0.587, 0.114]
            assert np.abs(grey - ref).max() <= 1 and (b.rgb == b.rgb[..., :1]).all()
        else:
            np.testing.assert_array_equal(b.rgb, a.rgb)
        np.testing.assert_array_equal(b.depth, a.depth)
        np.testing.assert_array_equal(b.K, a.K)
        np.testing.assert_allclose(b.T_world_cam, a.T_world_cam, atol=1e-12)


def test_mcap_reads_independently_with_mcap_ros2(sequence, tmp_path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    bag = write_bag(sequence, tmp_path / "bag", encoding="bgr8")
    files = list(Path(bag).glob("*.mcap"))
    assert len(files) == 1
    counts: Counter = Counter()
    stamps: dict[str, list[int]] = {}
    with open(files[0], "rb") as fh:
        decoded = list(make_reader(fh, decoder_factories=[DecoderFactory()])
                       .iter_decoded_messages(log_time_order=True))
    for _, channel, raw_msg, msg in decoded:
        topic = channel.topic
        counts[topic] += 1
        if topic == TOPICS.info:
            continue
        if topic == TOPICS.tf:
            header, = (tf.header for tf in msg.transforms)
            # ground truth on its own frames, never the map -> camera link localizers publish
            tf, = msg.transforms
            assert (tf.header.frame_id, tf.child_frame_id) == ("gt_world", "gt_camera")
        else:
            header = msg.header
        stamp = header.stamp.sec * 10**9 + header.stamp.nanosec
        assert raw_msg.log_time == stamp
        stamps.setdefault(topic, []).append(stamp)
        i = _expected_stamps(sequence).index(stamp)
        frame = sequence.frames[i]
        if topic == TOPICS.image:
            assert (msg.encoding, msg.width, msg.height, msg.step) == ("bgr8", W, H, 3 * W)
            assert bytes(msg.data) == frame.rgb[..., ::-1].tobytes()
            assert header.frame_id == "camera_optical_frame"
        elif topic == TOPICS.depth:
            assert (msg.encoding, msg.step, msg.is_bigendian) == ("32FC1", 4 * W, 0)
            np.testing.assert_array_equal(
                np.frombuffer(bytes(msg.data), "<f4").reshape(H, W), frame.depth)
        elif topic == TOPICS.camera_info:
            np.testing.assert_array_equal(np.array(msg.k).reshape(3, 3), frame.K)
            assert msg.distortion_model == "plumb_bob"
        elif topic == TOPICS.pose:
            assert header.frame_id == "gt_world"
            p = msg.pose.position
            np.testing.assert_allclose([p.x, p.y, p.z], frame.T_world_cam[:3, 3], atol=1e-12)
    assert counts == {TOPICS.image: N, TOPICS.camera_info: N, TOPICS.depth: N, TOPICS.tf: N,
                      TOPICS.pose: N, TOPICS.info: 1}
    for topic, s in stamps.items():
        assert s == _expected_stamps(sequence), topic


def test_read_bag_takes_ground_truth_from_tf_alone_new_and_legacy_frames(sequence, tmp_path):
    """Without the pose topic, ground truth comes from /tf: the gt_world -> gt_camera link,
    or the map -> camera_optical_frame link of bags written before the move."""
    for name, topics in (("new", BagTopics(pose="/elsewhere/pose")),
                         ("legacy", BagTopics(pose="/elsewhere/pose", gt_world_frame="map",
                                              gt_camera_frame="camera_optical_frame"))):
        bag = write_bag(sequence, tmp_path / name, topics=topics)
        back = read_bag(bag)  # default topics: /ground_truth/pose is absent
        np.testing.assert_allclose(back.poses, sequence.poses, atol=1e-12)
    other = write_bag(sequence, tmp_path / "other",
                      topics=BagTopics(pose="/elsewhere/pose", gt_world_frame="odom"))
    assert all(f.T_world_cam is None for f in read_bag(other).frames)  # no gt link: no pose


def test_dataset_writes_groundtruth_tum_beside_the_bag(sequence, tmp_path):
    bag, tum = write_dataset(sequence, tmp_path, storage="mcap")
    assert bag == tmp_path / "bag" and tum == tmp_path / "groundtruth.tum"
    traj = read_tum(tum)
    np.testing.assert_allclose(traj.poses, sequence.poses, atol=1e-12)
    first = tum.read_text().splitlines()[1].split()[0]
    assert first == stamp_id(sequence.frames[0].stamp_ns) == "1700000000.000000000"
    np.testing.assert_allclose(np.diff(traj.stamps), 1 / RATE, atol=1e-6)
    with pytest.raises(FileExistsError, match="already exists"):
        write_bag(sequence, bag)


def test_synth_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "ds"
    rc = main(["synth", "--scene", "cluttered", "--trajectory", "loop", "--frames", "4",
               "--seed", "3", "--width", "48", "--height", "32", "--rate", "20", "--encoding",
               "mono8", "--storage", "sqlite3", "--out", str(out)])
    assert rc == 0
    assert (out / "bag" / "metadata.yaml").is_file() and (out / "groundtruth.tum").is_file()
    seq = read_bag(out / "bag")
    assert len(seq) == 4 and seq.frames[0].rgb.shape == (32, 48, 3)
    assert seq.info["scene"] == "cluttered" and seq.info["rate_hz"] == 20.0
    np.testing.assert_allclose(seq.poses[-1], seq.poses[0], atol=1e-9)  # a loop
    assert '"frames": 4' in capsys.readouterr().out


def test_synth_command_rejects_bad_input(tmp_path, capsys):
    assert main(["synth", "--frames", "1", "--out", str(tmp_path / "a")]) == 2
    assert "frames must be >= 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["synth", "--trajectory", "spiral", "--out", str(tmp_path / "b")])


def test_read_bag_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="metadata.yaml"):
        read_bag(tmp_path)
    with pytest.raises(ValueError, match="unknown SynthConfig key"):
        SynthConfig.from_dict({"frame": 3})
