"""Trajectory evaluation: our ATE/RPE equal evo's (GPL-3.0, used here only as a test
oracle) on the same files; alignment recovers known transforms; reloc success rates;
the eval command."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mast3r_ros.cli import main
from mast3r_ros.evaluation import (
    Alignment, Trajectory, ate, read_tum, relocalization_success, rpe, write_tum,
)


def _gt(n=80, seed=0) -> Trajectory:
    rng = np.random.default_rng(seed)
    s = np.linspace(0, 1, n)
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, 3] = np.c_[2 * np.cos(3 * s), 1.5 * np.sin(3 * s), 1.2 + 0.2 * np.sin(9 * s)]
    T[:, :3, :3] = Rotation.from_rotvec(np.c_[0.1 * np.sin(5 * s), 0.2 * s, 3 * s]
                                        + 0.01 * rng.normal(size=(n, 3))).as_matrix()
    return Trajectory(100.0 + s * 8.0, T)


def _est(gt: Trajectory, scale=1.0, noise=0.03, seed=1) -> Trajectory:
    """Estimate in another frame and scale, with noise, jittered stamps, dropped poses."""
    rng = np.random.default_rng(seed)
    R = Rotation.from_rotvec([0.3, -0.2, 1.1]).as_matrix()
    t = np.array([4.0, -1.0, 0.5])
    P = gt.poses.copy()
    P[:, :3, 3] = (P[:, :3, 3] @ R.T + t) / scale + rng.normal(0, noise, (len(gt), 3))
    P[:, :3, :3] = R @ P[:, :3, :3] @ Rotation.from_rotvec(rng.normal(0, 0.02, (len(gt), 3))).as_matrix()
    keep = rng.random(len(gt)) > 0.1
    stamps = gt.stamps + rng.uniform(-0.004, 0.004, len(gt))
    return Trajectory(stamps[keep], P[keep])


def _evo(gt_path, est_path, sim3: bool):
    from evo.core import metrics, sync
    from evo.tools import file_interface

    ref = file_interface.read_tum_trajectory_file(str(gt_path))
    est = file_interface.read_tum_trajectory_file(str(est_path))
    ref, est = sync.associate_trajectories(ref, est, max_diff=0.01)
    est.align(ref, correct_scale=sim3)
    out = {}
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((ref, est))
    out["ate"] = ape.get_all_statistics()
    for name, rel in (("rpe_t", metrics.PoseRelation.translation_part),
                      ("rpe_r", metrics.PoseRelation.rotation_angle_deg)):
        r = metrics.RPE(rel, delta=1, delta_unit=metrics.Unit.frames, all_pairs=False)
        r.process_data((ref, est))
        out[name] = r.get_all_statistics()
    return out


@pytest.mark.parametrize("sim3", [False, True])
def test_ate_and_rpe_equal_evo(tmp_path, sim3):
    gt = _gt()
    est = _est(gt, scale=1.7 if sim3 else 1.0)
    write_tum(tmp_path / "gt.tum", gt.stamps, gt.poses)
    write_tum(tmp_path / "est.tum", est.stamps, est.poses)
    g, e = read_tum(tmp_path / "gt.tum"), read_tum(tmp_path / "est.tum")
    align = Alignment.SIM3 if sim3 else Alignment.SE3
    ours_ate = ate(g, e, align)
    ours_rpe = rpe(g, e, align)
    ref = _evo(tmp_path / "gt.tum", tmp_path / "est.tum", sim3)
    assert len(ours_ate.errors) == len(e)  # every estimate associated (10 % dropped from gt)
    for key in ("rmse", "mean", "median", "std", "min", "max"):
        assert abs(getattr(ours_ate.stats, key) - ref["ate"][key]) < 1e-6, key
        assert abs(getattr(ours_rpe.trans, key) - ref["rpe_t"][key]) < 1e-6, key
        assert abs(getattr(ours_rpe.rot_deg, key) - ref["rpe_r"][key]) < 1e-6, key
    if sim3:
        assert abs(ours_ate.pair.scale - 1.7) < 0.02
    # What is left is the 3 cm per-axis noise (in the estimate's units), once aligned.
    expected = 0.03 * np.sqrt(3) * (1.7 if sim3 else 1.0)
    assert 0.8 * expected < ours_ate.stats.rmse < 1.2 * expected


def test_alignment_recovers_an_exact_similarity():
    gt = _gt()
    est = _est(gt, scale=0.4, noise=0.0)
    res = ate(gt, est, "sim3")
    assert res.stats.max < 1e-9 and abs(res.pair.scale - 0.4) < 1e-9
    assert ate(gt, est, "se3").stats.rmse > 0.5  # SE(3) cannot absorb the scale
    r = rpe(gt, est, "sim3")
    assert r.rot_deg.max > 0.1 and r.trans.max < 0.01  # only the rotations were perturbed


def test_tum_round_trip_and_association(tmp_path):
    gt = _gt(10)
    write_tum(tmp_path / "a.tum", (gt.stamps * 1e9).astype(np.int64), gt.poses)
    back = read_tum(tmp_path / "a.tum")
    np.testing.assert_allclose(back.poses, gt.poses, atol=1e-12)
    np.testing.assert_allclose(back.stamps, gt.stamps, atol=1e-9)
    far = Trajectory(gt.stamps + 0.5, gt.poses)
    with pytest.raises(ValueError, match="within 0.01 s"):
        ate(gt, far)
    (tmp_path / "bad.tum").write_text("1 2 3\n")
    with pytest.raises(ValueError, match="expected 8 values"):
        read_tum(tmp_path / "bad.tum")
    with pytest.raises(FileNotFoundError):
        read_tum(tmp_path / "missing.tum")


def test_relocalization_success_rates():
    gt = np.tile(np.eye(4), (5, 1, 1))
    est = []
    for dt, deg in ((0.1, 1.0), (0.3, 1.0), (0.4, 4.0), (3.0, 9.0)):
        T = np.eye(4)
        T[:3, :3] = Rotation.from_rotvec([0, 0, np.radians(deg)]).as_matrix()
        T[:3, 3] = [dt, 0, 0]
        est.append(T)
    est.append(None)  # a failed query
    res = relocalization_success(est, gt)
    assert res.success_rate == {(0.25, 2.0): 0.2, (0.5, 5.0): 0.6, (5.0, 10.0): 0.8}
    np.testing.assert_allclose(res.rot_errors_deg[:4], [1, 1, 4, 9], atol=1e-9)
    assert np.isinf(res.trans_errors[4])
    assert res.to_dict()["0.25m_2deg"] == 0.2
    with pytest.raises(ValueError, match="as many"):
        relocalization_success(est[:2], gt)


def test_eval_command_prints_metrics_and_writes_a_plot(tmp_path, capsys):
    gt = _gt()
    est = _est(gt, scale=2.0)
    write_tum(tmp_path / "gt.tum", gt.stamps, gt.poses)
    write_tum(tmp_path / "est.tum", est.stamps, est.poses)
    png = tmp_path / "plot.png"
    rc = main(["eval", "--gt", str(tmp_path / "gt.tum"), "--est", str(tmp_path / "est.tum"),
               "--sim3", "--plot", str(png)])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["alignment"] == "sim3" and abs(out["scale"] - 2.0) < 0.03
    assert set(out) >= {"ate", "rpe_trans", "rpe_rot_deg", "matched", "plot"}
    assert set(out["ate"]) == {"rmse", "mean", "median", "std", "min", "max"}
    ref = ate(read_tum(tmp_path / "gt.tum"), read_tum(tmp_path / "est.tum"), "sim3")
    assert out["ate"]["rmse"] == pytest.approx(ref.stats.rmse, abs=1e-12)
    import matplotlib.image

    img = matplotlib.image.imread(png)
    assert img.shape[0] >= 800 and img.shape[1] >= 1200
    assert img[..., :3].std() > 0.05  # not blank
    assert main(["eval", "--gt", str(tmp_path / "nope.tum"), "--est", str(png)]) == 2
    assert "does not exist" in capsys.readouterr().err
