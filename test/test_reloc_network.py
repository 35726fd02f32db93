"""The relocalization core end to end on the real network code with the tiny public
checkpoint (random weights, 48 x 64 fixture images).

Random weights predict no real geometry, so with the default thresholds relocalization must
fail honestly; with the checks opened wide (``OPEN``) the success path runs through the
network and every field is checked for shape, units and consistency. Accuracy is tested
with the simulator (test_reloc.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mast3r_ros.reloc import RelocConfig, Relocalizer

pytestmark = [pytest.mark.reference, pytest.mark.usefixtures("one_torch_thread")]

OPEN = RelocConfig(subsample=1, border=0, min_matches=5, min_inliers=5, min_inlier_ratio=0.0,
                   pnp_reprojection_px=1e3, epipolar_px=1e3, max_rotation_disagreement_deg=180,
                   max_direction_disagreement_deg=180)


@pytest.fixture(scope="module")
def engine(reference_dir: Path):
    from mast3r_ros.model.engine import Mast3rEngine

    return Mast3rEngine.from_checkpoint(reference_dir / "public" / "mast3r_tiny_public.pth",
                                        device="cpu", resize=False)


@pytest.fixture(scope="module")
def images(reference_dir: Path):
    return [np.asarray(Image.open(reference_dir / "public" / "images" / f"pair{p}_view{v}.png")
                       .convert("RGB")) for p in (0, 1) for v in (1, 2)]


def test_global_descriptor_is_unit_and_deterministic(engine, images):
    views = [engine.encode(im) for im in images]
    g = np.stack([engine.global_descriptor(v) for v in views])
    assert g.dtype == np.float32 and g.shape == (4, 48)  # enc_embed_dim of the tiny model
    np.testing.assert_allclose(np.linalg.norm(g, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(g[0], engine.global_descriptor(engine.encode(images[0])))
    assert g[0] @ g[0] > max(g[0] @ g[k] for k in (1, 2, 3)) + 1e-4


@pytest.mark.parametrize("known_K", [True, False])
def test_success_path_fields(engine, images, known_K):
    K = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
    rl = Relocalizer(engine, OPEN)
    T_ref = np.eye(4)
    T_ref[:3, 3] = [1.0, 2.0, 3.0]
    rl.add_reference(images[0], T_ref, K if known_K else None, "ref0")
    rl.add_reference(images[2], np.eye(4), K if known_K else None, "ref1")
    res = rl.relocalize(images[1], K if known_K else None, "ref0")
    assert res.success, res.message
    assert res.reference_id == "ref0" and res.candidates == ["ref0"]
    T = res.T_map_cam
    assert T.shape == (4, 4) and np.allclose(T[3], [0, 0, 0, 1])
    assert np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-9)
    cov = res.covariance
    assert cov.shape == (6, 6) and np.allclose(cov, cov.T) and np.linalg.eigvalsh(cov).min() > 0
    assert res.K.shape == (3, 3) and res.K[0, 0] > 0 and res.intrinsics_estimated is (not known_K)
    if known_K:
        np.testing.assert_array_equal(res.K, K)
    assert 0 < res.num_inliers <= res.num_matches and 0.0 <= res.confidence <= 1.0
    for k in ("encode", "retrieval", "decode", "match", "pose", "total"):
        assert k in res.timings_ms and res.timings_ms[k] >= 0
    assert res.timings_ms["decode"] > 0 and res.timings_ms["total"] >= res.timings_ms["decode"]
    xy_r, xy_q = res.inlier_xy
    assert xy_r.shape == xy_q.shape == (res.num_inliers, 2)
    assert xy_q[:, 0].max() < 64 and xy_q[:, 1].max() < 48
    # retrieval path (no id) answers too
    res2 = rl.relocalize(images[1], K if known_K else None)
    assert res2.success and set(res2.candidates) == {"ref0", "ref1"}


def test_default_thresholds_fail_honestly(engine, images):
    rl = Relocalizer(engine)
    rl.add_reference(images[0], np.eye(4), None, "ref0")
    for im in (images[1], np.full_like(images[1], 128)):
        res = rl.relocalize(im)
        assert not res.success and res.T_map_cam is None
        assert "too few" in res.message or "inconsistent" in res.message, res.message
        assert res.timings_ms["decode"] > 0


def test_save_load_with_network(engine, images, tmp_path):
    rl = Relocalizer(engine, OPEN)
    rl.add_reference(images[0], np.eye(4), None, "ref0")
    a = rl.relocalize(images[1], None, "ref0")
    assert rl.save(tmp_path / "m") == 1
    import json

    ident = json.loads((tmp_path / "m" / "manifest.json").read_text())["engine"]
    assert ident["type"] == "Mast3rEngine" and ident["checkpoint"]["name"] == "mast3r_tiny_public.pth"
    rl2 = Relocalizer(engine, OPEN)
    assert rl2.load(tmp_path / "m") == 1
    b = rl2.relocalize(images[1], None, "ref0")
    assert a.success == b.success
    if a.success:
        np.testing.assert_allclose(a.T_map_cam, b.T_map_cam, atol=1e-6)
