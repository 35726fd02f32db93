"""`mast3r-ros slam`: bad input ends with `mast3r-ros slam: error: ...` and exit 2; a short
bag runs end to end (the 300-frame run is in test_slam.py); the bag is streamed."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mast3r_ros.cli import main

W, H = 128, 96


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    from mast3r_ros.synth.bag import write_dataset
    from mast3r_ros.synth.sequence import SynthConfig, generate

    seq = generate(SynthConfig(frames=8, width=W, height=H, seed=2))
    bag, _ = write_dataset(seq, tmp_path_factory.mktemp("slamcli") / "d")
    return bag, seq


def _err(capsys) -> str:
    return capsys.readouterr().err


def test_bad_inputs_exit_2(bag, tmp_path, capsys):
    b, _ = bag
    cases = [
        (["--bag", str(tmp_path / "nope"), "--engine", "simulator"], "no rosbag2"),
        (["--bag", str(b)], "--checkpoint"),
        (["--bag", str(b), "--engine", "simulator", "--image-topic", "/x"], "no image topic /x"),
        (["--bag", str(b), "--engine", "simulator", "--camera-info-topic", "/ci"], "--no-camera-info"),
        (["--bag", str(b), "--engine", "simulator", "--size", "100"], "multiple of 16"),
        (["--bag", str(b), "--engine", "simulator", "--sim-config", str(tmp_path / "c.json")],
         "not found"),
    ]
    for extra, msg in cases:
        rc = main(["slam", "--out", str(tmp_path / "o"), "--no-progress", *extra])
        err = _err(capsys)
        assert rc == 2 and "mast3r-ros slam: error:" in err and msg in err, (extra, err)
    (tmp_path / "c.json").write_text("{not json")
    rc = main(["slam", "--out", str(tmp_path / "o"), "--bag", str(b), "--engine", "simulator",
               "--sim-config", str(tmp_path / "c.json"), "--no-progress"])
    assert rc == 2 and "not valid JSON" in _err(capsys)
    (tmp_path / "c.json").write_text(json.dumps({"depth_noise": 1}))
    rc = main(["slam", "--out", str(tmp_path / "o"), "--bag", str(b), "--engine", "simulator",
               "--sim-config", str(tmp_path / "c.json"), "--no-progress"])
    assert rc == 2 and "unknown SimulatorConfig key" in _err(capsys)
    with pytest.raises(SystemExit) as exc:
        main(["slam", "--out", "o"])  # --bag missing: argparse
    assert exc.value.code == 2


def test_short_bag_end_to_end(bag, tmp_path, capsys, one_torch_thread):
    b, seq = bag
    out = tmp_path / "out"
    rc = main(["slam", "--bag", str(b), "--out", str(out), "--engine", "simulator", "--size", "128",
               "--sim-noise", "exact", "--no-progress"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == summary["poses"] == len(seq)
    assert set(summary) >= {"frames", "keyframes", "lost", "relocalized", "fps"}
    lines = [l for l in (out / "trajectory.tum").read_text().splitlines() if not l.startswith("#")]
    assert len(lines) == len(seq) and len(lines[0].split()) == 8
    assert lines[0].split()[0] == "1700000000.000000000"
    assert (out / "keyframes.tum").is_file() and (out / "cloud.ply").is_file()


def test_stream_reader_matches_read_bag(bag):
    from mast3r_ros.bag_stream import iter_bag_images
    from mast3r_ros.synth.bag import read_bag

    b, seq = bag
    ref = read_bag(b)
    got = list(iter_bag_images(b))
    assert [g.stamp_ns for g in got] == [f.stamp_ns for f in ref.frames]
    for g, f in zip(got, ref.frames):
        np.testing.assert_array_equal(g.rgb, f.rgb)
        np.testing.assert_allclose(g.K, f.K)
    assert all(g.K is None for g in iter_bag_images(b, camera_info_topic=None))
    with pytest.raises(ValueError, match="no topic /nope"):
        next(iter_bag_images(b, "/nope"))
