"""``mast3r-ros doctor`` on this (healthy) environment and on deliberately broken ones: a
missing torch / poselib, a second OpenCV on the path, ROS without our interfaces, ROS message
extensions that refuse the numpy in use, unreadable checkpoints."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from mast3r_ros.cli import main
from mast3r_ros.cli.doctor import Status, check_checkpoint, check_opencv, check_ros, collect

REPO = Path(__file__).resolve().parents[1]


def _by_name(findings):
    return {f.what: f for f in findings}


def test_healthy_environment_passes(capsys):
    """This machine has everything (CPU torch, Kilted wheels, built interfaces): exit 0."""
    pytest.importorskip("mast3r_ros.srv", reason="generated interfaces not built (run scripts/setup.sh)")
    assert main(["doctor", "--json"]) == 0
    findings = {f["what"]: f for f in json.loads(capsys.readouterr().out)}
    assert not [f for f in findings.values() if f["status"] == "FAIL"], findings
    for what in ("numpy", "torch", "cv2", "rclpy", "interfaces", "numpy vs ROS extensions",
                 "OpenCV copies"):
        assert findings[what]["status"] == "ok", findings[what]


def test_missing_torch_and_poselib_fail_with_the_fix(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    monkeypatch.setitem(sys.modules, "poselib", None)
    found = _by_name(collect(ros=False))
    assert found["torch"].status is Status.FAIL and "cannot import torch" in found["torch"].detail
    assert "CUDA" in found["torch"].fix or "cuda" in found["torch"].fix.lower()
    assert found["poselib"].status is Status.FAIL and "pip install poselib" in found["poselib"].fix
    assert found["numpy"].status is Status.OK
    assert main(["doctor", "--no-ros"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  torch: cannot import torch" in out and "2 failed" in out


def test_missing_optional_faiss_is_a_warning(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    found = _by_name(collect(ros=False))
    assert found["faiss"].status is Status.WARN and "torch backend" in found["faiss"].detail


def test_second_opencv_on_the_path_fails(tmp_path, monkeypatch):
    """A cv2 package in another folder on sys.path (python3-opencv beside a pip wheel)."""
    import importlib.util

    if importlib.util.find_spec("cv2") is None:
        pytest.skip("no OpenCV installed here")
    (tmp_path / "cv2").mkdir()
    (tmp_path / "cv2" / "__init__.py").write_text("# a second OpenCV\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    [finding] = check_opencv()
    assert finding.status is Status.FAIL and str(tmp_path) in finding.detail
    assert "keep one" in finding.fix


def test_ros_without_our_interfaces(monkeypatch):
    """rclpy importable, but the workspace is not sourced: the interfaces check fails and
    says to build and source the workspace."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # our sources, not the colcon install
    found = _by_name(check_ros())
    assert found["interfaces"].status is Status.FAIL
    assert "source install/setup.bash" in found["interfaces"].fix


def test_ros_extensions_built_for_another_numpy(tmp_path, monkeypatch):
    """What Humble/Jazzy show after a pip numpy 2: the generated type support refuses to load
    ("compiled using NumPy 1.x"). Stand-in: a rosidl_generator_py first on PYTHONPATH that
    fails the same way."""
    fake = tmp_path / "rosidl_generator_py"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import sys\n"
        "def import_type_support(pkg):\n"
        "    print('A module that was compiled using NumPy 1.x cannot be run in NumPy 2.4.6',"
        " file=sys.stderr)\n"
        "    raise ImportError('numpy.core.multiarray failed to import')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    found = _by_name(check_ros())
    f = found["numpy vs ROS extensions"]
    assert f.status is Status.FAIL and "another numpy" in f.detail
    assert "ros-constraints.txt" in f.fix


def test_checkpoints(tmp_path, reference_dir):
    [missing] = check_checkpoint(str(tmp_path / "nope.pth"))
    assert missing.status is Status.FAIL and "does not exist" in missing.detail
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint" * 10)
    [bad] = check_checkpoint(str(junk))
    assert bad.status is Status.FAIL and "cannot be read" in bad.detail
    [good] = check_checkpoint(str(reference_dir / "public" / "mast3r_tiny_public.pth"))
    assert good.status is Status.OK and "tensors" in good.detail, good
