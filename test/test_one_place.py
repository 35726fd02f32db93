"""One obvious place for each thing: one rotation-angle function, one home for the stand-in
engines (no test helper imported through sys.path)."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import mast3r_ros
from mast3r_ros import evaluation, geometry
from mast3r_ros.geometry.transforms import make_T, rotation_angle_deg

PKG = Path(mast3r_ros.__file__).resolve().parent
REPO = PKG.parent


def test_one_rotation_angle_function():
    defs = [f"{f.relative_to(PKG)}" for f in PKG.rglob("*.py")
            for node in ast.walk(ast.parse(f.read_text()))
            if isinstance(node, ast.FunctionDef) and node.name == "rotation_angle_deg"]
    assert defs == ["geometry/transforms.py"], defs
    assert evaluation.rotation_angle_deg is geometry.rotation_angle_deg is rotation_angle_deg


def test_rotation_angle_single_pair_batch_and_transforms():
    rng = np.random.default_rng(0)
    angles = np.array([0.0, 1e-7, 0.5, 37.0, 90.0, 179.0, 180.0 - 1e-6, 180.0])
    axes = rng.normal(size=(len(angles), 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    R = Rotation.from_rotvec(axes * np.radians(angles)[:, None]).as_matrix()
    got = rotation_angle_deg(R)  # batch of single rotations
    assert got.shape == (len(angles),)
    np.testing.assert_allclose(got, angles, atol=1e-9)
    # relative rotation a -> b, single: a float; 4x4 transforms give the same
    Ra = Rotation.from_rotvec(rng.normal(size=3)).as_matrix()
    for k, Rk in enumerate(R):
        Rb = Ra @ Rk
        a = rotation_angle_deg(Ra, Rb)
        assert isinstance(a, float) and abs(a - angles[k]) < 1e-7
        assert abs(rotation_angle_deg(make_T(Ra, [1, 2, 3]), make_T(Rb, [0, 0, 0])) - a) < 1e-12
    # batched pairs broadcast
    np.testing.assert_allclose(rotation_angle_deg(np.broadcast_to(Ra, R.shape), Ra @ R), angles,
                               atol=1e-7)
    with pytest.raises(ValueError, match=r"R_b must be \(\.\.\., 3, 3\)"):
        rotation_angle_deg(np.eye(3), np.eye(2))


def test_stand_in_engines_live_in_synth():
    from mast3r_ros.synth.homography import HomographyDescriptorEngine
    from mast3r_ros.synth.simulator import NetworkOutputSimulator

    assert callable(HomographyDescriptorEngine(np.eye(3)).decode_batch)
    assert NetworkOutputSimulator.__module__ == "mast3r_ros.synth.simulator"
    offenders = [str(f.relative_to(REPO)) for f in (REPO / "test").glob("*.py")
                 if "sys.path.insert" in f.read_text() and f.name != Path(__file__).name]
    assert not offenders, f"tests importing helpers through sys.path: {offenders}"
