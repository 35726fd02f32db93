"""``mast3r-ros relocalize`` and ``mast3r-ros reloc-eval``: exit codes, printed poses, JSON
keys, on a synthetic bag through the simulator and on the tiny network checkpoint."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mast3r_ros.cli import main
from mast3r_ros.geometry import T_to_pose, rotation_angle_deg

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EVAL_KEYS = {"n", "median_trans_m", "median_rot_deg", "recall_0.25m_2deg", "recall_0.5m_5deg",
             "recall_1m_10deg", "vcre_90px_precision", "median_ms"}


@pytest.fixture(scope="module")
def pinned(tmp_path_factory):
    """--sim-config: realistic with the errors that scale a single reference's baseline
    pinned (see test_reloc.py)."""
    p = tmp_path_factory.mktemp("simcfg") / "pinned.json"
    p.write_text(json.dumps({"scale_jitter": 0.02, "depth_distortion": 0.0}))
    return str(p)


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    """A 10-frame reloc_30 bag (5 mapping views, 5 queries 30 deg away), 128 x 96."""
    from mast3r_ros.synth.bag import read_bag

    out = tmp_path_factory.mktemp("relocbag")
    assert main(["synth", "--scene", "cluttered", "--trajectory", "reloc_30", "--frames", "10",
                 "--seed", "2", "--width", "128", "--height", "96", "--out", str(out)]) == 0
    seq = read_bag(out / "bag")
    paths = []
    for f in seq.frames:
        p = out / f"frame{f.index}.png"
        Image.fromarray(f.rgb).save(p)
        paths.append(p)
    return out / "bag", seq, paths


def _pose_str(T):
    (x, y, z), q = T_to_pose(T)
    return " ".join(f"{v:.9f}" for v in (x, y, z, *q))


def test_relocalize_simulator(bag, pinned, tmp_path, capsys):
    bag_dir, seq, paths = bag
    ref, q = seq.frames[2], seq.frames[7]
    K = q.K
    out_json, viz = tmp_path / "r.json", tmp_path / "m.png"
    rc = main(["relocalize", "--engine", "simulator", "--simulator-bag", str(bag_dir),
               "--sim-config", pinned, "--reference", str(paths[2]), "--query", str(paths[7]),
               "--reference-pose", _pose_str(ref.T_world_cam),
               "--intrinsics", f"{K[0, 0]} {K[1, 1]} {K[0, 2]} {K[1, 2]}",
               "--json", str(out_json), "--viz", str(viz)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert text.startswith("reference ") and "\nquery " in text
    d = json.loads(out_json.read_text())
    for k in ("success", "message", "reference_pose", "query_pose", "T_map_cam", "covariance",
              "num_matches", "num_inliers", "confidence", "K", "intrinsics_estimated", "timings_ms"):
        assert k in d
    T = np.array(d["T_map_cam"])
    assert np.linalg.norm(T[:3, 3] - q.T_world_cam[:3, 3]) < 0.25
    assert rotation_angle_deg(T[:3, :3], q.T_world_cam[:3, :3]) < 2.0
    assert len(d["query_pose"].split()) == 7 and d["intrinsics_estimated"] is False
    assert Image.open(viz).size == (256, 96)
    # unknown intrinsics, identity reference pose: the relative pose
    rc = main(["relocalize", "--engine", "simulator", "--simulator-bag", str(bag_dir), "--sim-config",
               pinned, "--reference", str(paths[2]), "--query", str(paths[7]), "--json", str(out_json)])
    assert rc == 0
    d = json.loads(out_json.read_text())
    T_rel = np.linalg.inv(ref.T_world_cam) @ q.T_world_cam
    assert d["intrinsics_estimated"] is True
    assert np.linalg.norm(np.array(d["T_map_cam"])[:3, 3] - T_rel[:3, 3]) < 0.25


@pytest.mark.parametrize("args, message", [
    (["--engine", "network"], "needs --checkpoint"),
    (["--engine", "simulator"], "needs --simulator-bag"),
    (["--engine", "simulator", "--simulator-bag", "BAG", "--reference-pose", "1 2 3"], "7 finite numbers"),
    (["--engine", "simulator", "--simulator-bag", "BAG", "--reference-pose", "0 0 0 0 0 0 2"], "unit norm"),
    (["--engine", "simulator", "--simulator-bag", "BAG", "--intrinsics", "100 100 nan 5"], "4 finite numbers"),
    (["--engine", "simulator", "--simulator-bag", "BAG", "--intrinsics", "-1 100 5 5"], "fx, fy > 0"),
    (["--engine", "simulator", "--simulator-bag", "BAG", "--sim-noise", "loud"], "not a simulator profile"),
    (["--engine", "simulator", "--simulator-bag", "BAG", "--query", "BLANK"], "not a frame of"),
])
def test_relocalize_bad_input_exits_2(bag, tmp_path, capsys, args, message):
    bag_dir, seq, paths = bag
    blank = tmp_path / "blank.png"
    Image.fromarray(np.zeros((96, 128, 3), np.uint8)).save(blank)
    args = [str(bag_dir) if a == "BAG" else str(blank) if a == "BLANK" else a for a in args]
    base = ["relocalize", "--reference", str(paths[0]), "--query", str(paths[6])]
    if "--query" in args:
        base = base[:3]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert "mast3r-ros relocalize: error:" in err and message in err, err


def test_relocalize_network_honest_failure_exits_1(reference_dir, tmp_path, capsys):
    pub = reference_dir / "public"
    out = tmp_path / "r.json"
    rc = main(["relocalize", "--checkpoint", str(pub / "mast3r_tiny_public.pth"), "--device", "cpu",
               "--size", "64", "--reference", str(pub / "images" / "pair0_view1.png"),
               "--query", str(pub / "images" / "pair0_view2.png"), "--json", str(out)])
    assert rc == 1
    assert "relocalization failed:" in capsys.readouterr().out
    d = json.loads(out.read_text())
    assert d["success"] is False and d["query_pose"] is None and d["timings_ms"]["decode"] > 0


def test_reloc_eval_simulator(bag, pinned, tmp_path, capsys):
    bag_dir, seq, paths = bag
    out = tmp_path / "eval.json"
    rc = main(["reloc-eval", "--bag", str(bag_dir), "--engine", "simulator", "--sim-config", pinned, "--pairs", "4",
               "--seed", "1", "--intrinsics", "both", "--json", str(out)])
    assert rc == 0
    d = json.loads(out.read_text())
    assert set(d) == {"known", "estimated"}
    for mode in d.values():
        assert EVAL_KEYS <= set(mode) and mode["n"] == 4
        assert 0.0 <= mode["recall_0.25m_2deg"] <= mode["recall_0.5m_5deg"] <= mode["recall_1m_10deg"] <= 1.0
    # 30 deg pairs with the realistic simulator: the known-K answers are good
    assert d["known"]["recall_0.5m_5deg"] >= 0.75, d
    assert "known" in capsys.readouterr().out
    assert main(["reloc-eval", "--bag", str(bag_dir), "--engine", "simulator", "--pairs", "0"]) == 2
    assert main(["reloc-eval", "--bag", str(tmp_path / "nope"), "--engine", "simulator"]) == 2
    assert main(["reloc-eval", "--bag", str(bag_dir), "--engine", "simulator", "--pairs", "1000"]) == 2
    assert "overlap" in capsys.readouterr().err
