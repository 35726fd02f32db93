"""Issue 12, class 5: geometry and data that must be checked: non-orthonormal rotations,
NaN covariances, distorted cameras (undistorted with OpenCV, exact against ground truth),
K and message types in bags, absurd synth rates, valid JSON from eval, descriptors that
cannot be matched."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hostile import assert_refused, run_main
from mast3r_ros.errors import InputError, NonFiniteError
from mast3r_ros.geometry import (
    T_to_pose, check_T, intrinsics_matrix, invert_T, make_T, matrix_to_quaternion_xyzw,
    pose_covariance,
)
from mast3r_ros.geometry.distortion import (
    Undistorter, check_distortion, undistort_image, undistort_points,
)

R0 = cv2.Rodrigues(np.array([0.3, -0.2, 0.1]))[0]


@pytest.mark.parametrize("R,match", [
    (R0 * 1.01, r"not a rotation.*differs from the identity by 0\.0201"),
    (R0 @ np.array([[1, 0.05, 0], [0, 1, 0], [0, 0, 1]]), r"not a rotation"),
    (R0 @ np.diag([1.0, 1.0, -1.0]), r"reflection \(det -1\.000\)"),
    (np.zeros((3, 3)), r"not a rotation"),
    (np.where(np.eye(3) > 0, np.nan, R0), r"non-finite"),
], ids=["scaled", "sheared", "reflection", "zero", "nan"])
def test_non_rotations_refused_everywhere(R, match):
    T = make_T(R, [1, 2, 3])
    for fn in (check_T, invert_T, T_to_pose, matrix_to_quaternion_xyzw):
        with pytest.raises(InputError, match=match):
            fn(T)


def test_float32_rotations_still_accepted():
    T = make_T(R0, [1, 2, 3]).astype(np.float32)
    np.testing.assert_allclose(invert_T(T) @ T, np.eye(4), atol=1e-6)
    with pytest.raises(InputError, match=r"last row"):
        check_T(np.vstack([T[:3], [0, 0, 1, 1]]))
    with pytest.raises(InputError, match=r"array of numbers"):
        check_T("not a matrix")


def test_pose_covariance_refuses_nan_and_degenerate_inputs():
    K = intrinsics_matrix(500, 320, 240)
    rng = np.random.default_rng(0)
    X = rng.uniform([-1, -1, 3], [1, 1, 6], (20, 3))
    uv = X[:, :2] / X[:, 2:] * 500 + [320, 240]
    assert np.all(np.isfinite(pose_covariance(np.eye(4), uv, X, K)))
    bad = uv.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf"):
        pose_covariance(np.eye(4), bad, X, K)
    Xz = X.copy()
    Xz[:, 2] = 0.0  # every point in the camera plane: projections divide by zero
    with np.errstate(all="ignore"), pytest.raises(NonFiniteError, match=r"not finite"):
        pose_covariance(np.eye(4), uv, Xz, K)


# ----------------------------------------------------------------------------- distortion
K = intrinsics_matrix(300.0, 159.5, 119.5)
MODELS = {
    "plumb_bob": [-0.28, 0.09, 0.001, -0.0005, -0.01],
    "rational_polynomial": [0.5, -0.1, 0.001, 0.0005, 0.01, 0.8, -0.05, 0.02],
    "equidistant": [0.05, -0.01, 0.002, -0.0005],
}


def _project(model: str, X: np.ndarray) -> np.ndarray:
    """Ground truth: OpenCV's forward (distorting) projection of camera-frame points."""
    D = np.array(MODELS[model])
    if model == "equidistant":
        return cv2.fisheye.projectPoints(X.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, D)[0].reshape(-1, 2)
    return cv2.projectPoints(X, np.zeros(3), np.zeros(3), K, D)[0].reshape(-1, 2)


@pytest.mark.parametrize("model", list(MODELS))
def test_undistort_points_recovers_the_pinhole_projection(model):
    rng = np.random.default_rng(3)
    X = np.column_stack([rng.uniform(-0.4, 0.4, 200), rng.uniform(-0.3, 0.3, 200), np.ones(200)])
    pinhole = X[:, :2] * 300.0 + [159.5, 119.5]
    distorted = _project(model, X)
    assert np.abs(distorted - pinhole).max() > 2.0  # the distortion is not negligible
    err = np.abs(undistort_points(distorted, K, model, MODELS[model]) - pinhole).max()
    assert err < 1e-3, err


@pytest.mark.parametrize("model", list(MODELS))
def test_undistort_image_restores_the_pinhole_image(model):
    """A smooth pinhole image is distorted by resampling (each distorted pixel takes the
    pinhole image at its undistorted position); undistorting gives it back (interior, two
    bilinear passes: mean error under 1 grey level)."""
    h, w = 240, 320
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    pin = (127 + 60 * np.sin(xx / 9.0) * np.cos(yy / 7.0) + 0.2 * xx).clip(0, 255).astype(np.uint8)
    pts = np.stack([xx.ravel(), yy.ravel()], 1)
    und = undistort_points(pts, K, model, MODELS[model]).reshape(h, w, 2).astype(np.float32)
    distorted = cv2.remap(pin, und[..., 0], und[..., 1], cv2.INTER_LINEAR)
    back = undistort_image(distorted, K, model, MODELS[model])
    inner = (slice(60, 180), slice(80, 240))
    diff = np.abs(back[inner].astype(float) - pin[inner].astype(float))
    before = np.abs(distorted[inner].astype(float) - pin[inner]).mean()
    assert diff.mean() < 0.5 and before > max(1.0, 10 * diff.mean()), (diff.mean(), before)


@pytest.mark.parametrize("model,D,match", [
    ("kannala_brandt", [0.1, 0, 0, 0], r"'kannala_brandt' is not supported"),
    ("", [0.1, 0, 0, 0, 0], r"'' is not supported"),
    ("plumb_bob", [0.1, 0.2], r"plumb_bob takes 4 or 5 or 8 coefficients, got 2"),
    ("equidistant", [0.1, 0, 0, 0, 0], r"equidistant takes 4 coefficients, got 5"),
    ("plumb_bob", [np.nan, 0, 0, 0, 0], r"finite"),
    ("rational_polynomial", [1e9] * 8, r"\|d\| <= 10000"),
])
def test_bad_distortion_refused(model, D, match):
    with pytest.raises(InputError, match=match):
        check_distortion(model, D)
    assert Undistorter.create(K, model, np.zeros(len(D))) is None  # zero D: a pinhole


def test_ros_camera_info_with_distortion_is_never_ignored():
    pytest.importorskip("sensor_msgs.msg", reason="ROS message packages not installed")
    from mast3r_ros.ros.conversions import (
        K_to_camera_info, array_to_image, camera_info_to_K, camera_info_undistorter,
        pose_with_covariance, undistorted_rgb_and_K,
    )

    info = K_to_camera_info(K, 320, 240)
    info.d = MODELS["plumb_bob"]
    with pytest.raises(InputError, match=r"distortion_model 'plumb_bob' with non-zero coefficients"):
        camera_info_to_K(info)
    np.testing.assert_array_equal(camera_info_to_K(info, allow_distortion=True), K)
    rgb = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    out, K2 = undistorted_rgb_and_K(array_to_image(rgb, "rgb8"), info)
    np.testing.assert_array_equal(out, undistort_image(rgb, K, "plumb_bob", MODELS["plumb_bob"]))
    np.testing.assert_array_equal(K2, K)
    info.distortion_model = "fancy"
    with pytest.raises(InputError, match=r"'fancy' is not supported"):
        camera_info_undistorter(info)
    cov = np.eye(6)
    cov[2, 2] = np.nan
    with pytest.raises(InputError, match=r"covariance has 1 non-finite"):
        pose_with_covariance(np.eye(4), cov)
    cov = np.eye(6)
    cov[0, 1] = 0.5
    with pytest.raises(InputError, match=r"not symmetric"):
        pose_with_covariance(np.eye(4), cov)
    with pytest.raises(InputError, match=r"not a rotation"):
        pose_with_covariance(np.diag([2.0, 1, 1, 1]), np.eye(6))


# ----------------------------------------------------------------------------- bags
def _bag(path: Path, seq, *, info_type: str = "sensor_msgs/msg/CameraInfo", k=None,
         model="plumb_bob", d=None) -> Path:
    """A bag of ``seq``'s frames with a chosen camera-info message type, K and distortion."""
    from rosbags.rosbag2 import Writer

    from mast3r_ros.synth.bag import BagTopics, ImageEncoding, _typestore, frame_messages

    ts = _typestore()
    topics = BagTopics()
    with Writer(path, version=8) as w:
        ci = w.add_connection(topics.camera_info, info_type, typestore=ts)
        im = w.add_connection(topics.image, "sensor_msgs/msg/Image", typestore=ts)
        for f in seq.frames:
            msgs = frame_messages(ts, f, ImageEncoding.RGB8, topics)
            w.write(im, f.stamp_ns, ts.serialize_cdr(msgs["image"], "sensor_msgs/msg/Image"))
            if info_type == "sensor_msgs/msg/CameraInfo":
                msg = msgs["camera_info"]
                if k is not None:
                    msg.k = np.asarray(k, dtype=np.float64).ravel()
                if d is not None:
                    msg.d = np.asarray(d, dtype=np.float64)
                    msg.distortion_model = model
                w.write(ci, f.stamp_ns, ts.serialize_cdr(msg, info_type))
            else:
                s = ts.types["std_msgs/msg/String"](data="not a camera info")
                w.write(ci, f.stamp_ns, ts.serialize_cdr(s, info_type))
    return path


@pytest.fixture(scope="module")
def seq():
    from mast3r_ros.synth.sequence import SynthConfig, generate

    return generate(SynthConfig(frames=3, width=64, height=48, trajectory="rotation"))


def test_read_bag_checks_types_K_and_distortion(seq, tmp_path):
    from mast3r_ros.synth.bag import read_bag

    with pytest.raises(InputError, match=r"topic /camera/camera_info carries std_msgs/msg/String; "
                                          r"expected sensor_msgs/msg/CameraInfo"):
        read_bag(_bag(tmp_path / "t", seq, info_type="std_msgs/msg/String"))
    Kbad = seq.frames[0].K.copy()
    Kbad[0, 0] = 0.0
    with pytest.raises(ValueError, match=r"camera info at stamp \d+ ns: camera_info\.k must have fx, fy > 0"):
        read_bag(_bag(tmp_path / "k", seq, k=Kbad))
    Knan = seq.frames[0].K.copy()
    Knan[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"non-finite"):
        read_bag(_bag(tmp_path / "kn", seq, k=Knan))
    with pytest.raises(ValueError, match=r"'fisheye62' is not supported"):
        read_bag(_bag(tmp_path / "m", seq, model="fisheye62", d=[0.1, 0, 0, 0]))
    D = [-0.2, 0.05, 0.0, 0.0, 0.0]
    got = read_bag(_bag(tmp_path / "pb", seq, d=D))
    for f, s in zip(got.frames, seq.frames):
        np.testing.assert_array_equal(f.rgb, undistort_image(s.rgb, s.K, "plumb_bob", D))
        np.testing.assert_array_equal(f.K, s.K)


# ----------------------------------------------------------------------------- CLI
def _tum(path: Path, rows) -> str:
    path.write_text("".join(" ".join(str(v) for v in r) + "\n" for r in rows))
    return str(path)


def test_cli_data_checks(tmp_path, capsys):
    """synth rates / fov, eval inputs and JSON output, FRM on unusable descriptors."""
    out = str(tmp_path / "s")
    base = ["synth", "--frames", "2", "--width", "32", "--height", "32", "--out", out]
    for extra, pat in ((["--rate", "nan"], r"rate_hz.*finite.*nan"), (["--rate", "inf"], r"rate_hz.*finite"),
                       (["--rate", "-1"], r"rate_hz must be > 0"), (["--rate", "0"], r"rate_hz must be > 0"),
                       (["--rate", "1e9"], r"rate_hz must be in"), (["--rate", "1e-9"], r"rate_hz must be in"),
                       (["--hfov", "nan"], r"hfov_deg.*finite"), (["--hfov", "0"], r"hfov_deg must be in \[1, 170\]"),
                       (["--hfov", "180"], r"hfov_deg"), (["--seed", "-5"], r"seed")):
        assert_refused(run_main(base + extra, capsys), "synth", pat)
    assert not Path(out).exists()

    good = [(i, np.sin(i / 3), np.cos(i / 3), 0.1 * i, 0, 0, 0, 1) for i in range(10)]
    gt = _tum(tmp_path / "gt.tum", good)
    for rows, pat in (([*good[:4], (4, "nan", 0, 0, 0, 0, 0, 1)], r"bad\.tum:5: expected finite numbers"),
                      ([*good[:4], (4, 0, 0, 0, 0, 0, 0, 0)], r"bad\.tum:5: the quaternion .* is zero"),
                      ([*good[:4], (4, "inf", 0, 0, 0, 0, 0, 1)], r"finite"),
                      ([(0, 1, 2)], r"expected 8 values")):
        assert_refused(run_main(["eval", "--gt", gt, "--est", _tum(tmp_path / "bad.tum", rows)], capsys),
                       "eval", pat)


def test_eval_json_is_valid_without_nan(tmp_path, capsys):
    from mast3r_ros.cli import main

    good = [(i, np.sin(i / 3), np.cos(i / 3), 0.1 * i, 0, 0, 0, 1) for i in range(10)]
    gt = _tum(tmp_path / "gt.tum", good)
    assert main(["eval", "--gt", gt, "--est", gt, "--delta", "100"]) == 0
    text = capsys.readouterr().out

    def no_constants(name):
        raise AssertionError(f"invalid JSON constant {name} in eval output")

    data = json.loads(text, parse_constant=no_constants)
    assert data["rpe_trans"]["rmse"] is None and data["ate"]["rmse"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("fill,pat", [
    ("nan", r"desc1 \(8, 8, 24\) is entirely NaN/inf"),
    ("some", r"desc2 \(8, 8, 24\) is 3 of 1536 values NaN/inf"),
    ("zero", r"desc1 \(8, 8, 24\) is all zero: there is nothing to match"),
    ("inf", r"desc1 .* NaN/inf"),
])
def test_unmatchable_descriptors_are_named(tmp_path, capsys, fill, pat):
    rng = np.random.default_rng(0)
    d1 = rng.normal(size=(8, 8, 24)).astype(np.float32)
    d2 = rng.normal(size=(8, 8, 24)).astype(np.float32)
    if fill == "nan":
        d1[:] = np.nan
    elif fill == "inf":
        d1[0, 0, 0] = np.inf
    elif fill == "zero":
        d1[:] = 0
    else:
        d2[1, 2, :3] = np.nan
    np.savez(tmp_path / "d.npz", view1_desc=d1, view2_desc=d2)
    r = run_main(["match", "--desc", str(tmp_path / "d.npz"), "--out", str(tmp_path / "m.npz")], capsys)
    assert_refused(r, "match", pat)
    assert not (tmp_path / "m.npz").exists()
    from mast3r_ros.matching import match_descriptors

    with pytest.raises(ValueError if fill == "zero" else RuntimeError, match=pat.split(" ")[0]):
        match_descriptors(torch.from_numpy(d1), torch.from_numpy(d2))
