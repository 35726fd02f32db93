"""``mast3r-ros match`` and ``bench-match`` end to end: the --desc path and the network path
(tiny public checkpoint) both reproduce the reference demo's matches exactly."""
from __future__ import annotations

import numpy as np
import pytest

from mast3r_ros.cli import main


@pytest.fixture()
def infer_npz(reference_dir, tmp_path):
    """The public fixture's pair-0 predictions in the `infer` .npz layout (no batch dim)."""
    z = np.load(reference_dir / "public" / "reference_outputs.npz")
    path = tmp_path / "pred.npz"
    np.savez(path, **{f"view{k}_{name}": z[f"pair0_view{k}_{name}"][0]
                      for k in (1, 2) for name in ("desc", "desc_conf", "conf")})
    return path, z


def test_match_desc_equals_reference(infer_npz, tmp_path):
    path, z = infer_npz
    out = tmp_path / "m.npz"
    assert main(["match", "--desc", str(path), "--out", str(out)]) == 0
    m = np.load(out)
    assert m["xy1"].dtype == np.int64 and m["xy1"].shape[1] == 2
    np.testing.assert_array_equal(m["xy1"], z["pair0_frm_dot_border3_xy1"])
    np.testing.assert_array_equal(m["xy2"], z["pair0_frm_dot_border3_xy2"])
    assert main(["match", "--desc", str(path), "--out", str(out), "--border", "0", "--subsample", "8"]) == 0
    np.testing.assert_array_equal(np.load(out)["xy1"], z["pair0_frm_dot_xy1"])


def test_match_desc_with_images_checks_network_size(infer_npz, reference_dir, tmp_path, capsys):
    path, z = infer_npz
    imgs = [str(reference_dir / "public" / "images" / f"pair0_view{k}.png") for k in (1, 2)]
    out = tmp_path / "m.npz"
    assert main(["match", "--desc", str(path), *imgs, "--no-resize", "--out", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out)["xy2"], z["pair0_frm_dot_border3_xy2"])
    # 48x64 images resized to 512 would be 384x512, not the stored 48x64 maps
    assert main(["match", "--desc", str(path), *imgs, "--out", str(out)]) == 2
    assert "network size" in capsys.readouterr().err


def test_match_checkpoint_end_to_end(reference_dir, tmp_path):
    """Network (tiny public weights) + FRM on the fixture images = the reference's matches."""
    pytest.importorskip("cv2")
    pub = reference_dir / "public"
    imgs = [str(pub / "images" / f"pair0_view{k}.png") for k in (1, 2)]
    out, viz = tmp_path / "m.npz", tmp_path / "m.png"
    rc = main(["match", "--checkpoint", str(pub / "mast3r_tiny_public.pth"), *imgs, "--no-resize",
               "--out", str(out), "--viz", str(viz), "--device", "cpu"])
    assert rc == 0
    z = np.load(pub / "reference_outputs.npz")
    m = np.load(out)
    np.testing.assert_array_equal(m["xy1"], z["pair0_frm_dot_border3_xy1"])
    np.testing.assert_array_equal(m["xy2"], z["pair0_frm_dot_border3_xy2"])
    import cv2

    assert cv2.imread(str(viz)).shape == (48, 128, 3)


def test_match_bad_arguments(infer_npz, tmp_path, capsys):
    path, _ = infer_npz
    out = str(tmp_path / "m.npz")
    assert main(["match", "--desc", str(tmp_path / "nope.npz"), "--out", out]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["match", "--desc", str(path), "--coarse-to-fine", "--out", out]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert main(["match", "--desc", str(path), "--viz", str(tmp_path / "v.png"), "--out", out]) == 2
    np.savez(tmp_path / "bad.npz", view1_desc=np.zeros((1, 4, 4, 24)), view2_desc=np.zeros((1, 4, 4, 24)))
    assert main(["match", "--desc", str(tmp_path / "bad.npz"), "--out", out]) == 2
    assert "batch" in capsys.readouterr().err


def test_bench_match_small(capsys):
    assert main(["bench-match", "--height", "48", "--width", "64", "--repeat", "1", "--subsample", "4",
                 "--dense"]) == 0
    text = capsys.readouterr().out
    frm = next(line for line in text.splitlines() if line.startswith("FRM torch"))
    within = float(frm.split("matches")[1].split("%")[0].split()[-1])
    assert within >= 90.0, frm  # FRM on the synthetic warp is correct
    assert "ratio dense/FRM" in text


def test_core_does_not_import_rclpy():
    import subprocess
    import sys

    code = ("import sys, mast3r_ros.matching, mast3r_ros.matching.coarse_to_fine, mast3r_ros.geometry;"
            "print('rclpy' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
