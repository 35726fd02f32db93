"""Scenes, the ray caster and trajectories: exact depth, pixel conventions, determinism."""
from __future__ import annotations

import numpy as np
import pytest

from mast3r_ros.synth.render import pinhole_K, pixel_rays, ray_cast, render
from mast3r_ros.synth.scene import Box, Material, Scene, SceneKind, Sphere, load_textures, make_scene
from mast3r_ros.synth.trajectory import (
    TrajectoryKind, look_at, make_trajectory, relocalization_views,
)

W, H = 160, 120


def _mini_scene() -> Scene:
    """A room (x in [-5, 5], y in [-4, 4], z in [0, 3]), one yawed box and one sphere."""
    mat = Material(0, (1.0, 1.0, 1.0))
    room = Box(np.array([0.0, 0.0, 1.5]), np.array([5.0, 4.0, 1.5]), 0.0, (mat,) * 6, inside=True)
    box = Box(np.array([2.0, -1.0, 0.5]), np.array([0.3, 0.5, 0.5]), 0.4, (mat,) * 6)
    sph = Sphere(np.array([1.5, 1.2, 1.2]), 0.4, mat)
    return Scene(SceneKind.ROOM, 0, (room, box), (sph,), load_textures(), np.array([5.0, 4.0, 1.5]),
                 np.zeros(3), np.array([0.0, 4.0, 1.5]), np.array([0.0, -1.0, 0.0]))


def _analytic_depth(scene: Scene, K: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Independent closed forms: planes of the room, the box faces, the sphere."""
    d = pixel_rays(K, W, H).reshape(-1, 3) @ T[:3, :3].T  # world rays, camera z = 1
    o = T[:3, 3]
    best = np.full(d.shape[0], np.inf)
    room, box = scene.boxes
    with np.errstate(divide="ignore", invalid="ignore"):
        # Room: smallest positive distance to its 6 planes, from inside.
        for a in range(3):
            for sgn in (-1, 1):
                plane = room.center[a] + sgn * room.half_size[a]
                t = (plane - o[a]) / d[:, a]
                best = np.where((t > 0) & (t < best), t, best)
        # Box: each face plane, hit point must lie within the face rectangle.
        R = box.rotation
        ol, dl = R.T @ (o - box.center), d @ R
        for a in range(3):
            for sgn in (-1, 1):
                t = (sgn * box.half_size[a] - ol[a]) / dl[:, a]
                p = ol + t[:, None] * dl
                others = [b for b in range(3) if b != a]
                inside = np.all(np.abs(p[:, others]) <= box.half_size[others] + 1e-12, axis=1)
                best = np.where(inside & (t > 0) & (t < best), t, best)
        sph = scene.spheres[0]
        oc = o - sph.center
        A = (d * d).sum(1)
        B = 2 * d @ oc
        C = oc @ oc - sph.radius**2
        disc = B * B - 4 * A * C
        t = (-B - np.sqrt(disc)) / (2 * A)
        best = np.where((disc >= 0) & (t > 0) & (t < best), t, best)
    return best.reshape(H, W)


@pytest.mark.parametrize("target", [[5.0, 0.3, 1.2], [2.0, -1.0, 0.6], [1.5, 1.2, 1.2]])
def test_depth_matches_analytic_ray_cast(target):
    """Depth of the far wall (about 4 m), the yawed box and the sphere vs closed forms:
    max error <= 1 mm (it is ~1e-6 m, float32 storage)."""
    scene = _mini_scene()
    K = pinhole_K(W, H, 60.0)
    T = look_at([1.0, 0.0, 1.3], target, roll_rad=0.2)
    view = render(scene, K, T, W, H)
    ref = _analytic_depth(scene, K, T)
    assert view.depth.dtype == np.float32 and view.depth.shape == (H, W)
    assert np.isfinite(ref).all()
    err = np.abs(view.depth - ref)
    assert err.max() <= 1e-3
    assert err.max() <= 1e-6 * ref.max() * 4  # in fact float32-exact
    assert set(np.unique(view.prim)) >= {0}


def test_far_wall_at_4m_exact():
    """A camera 4 m in front of the x = 5 wall looking straight at it sees depth 4.0 m."""
    scene = _mini_scene()
    T = look_at([1.0, -2.5, 2.0], [5.0, -2.5, 2.0])
    view = render(scene, pinhole_K(W, H, 30.0), T, W, H)
    assert np.abs(view.depth - 4.0).max() <= 1e-6


def test_principal_point_is_the_image_centre_pixel():
    """OpenCV pixel centres: pixel (cx, cy) = ((W-1)/2, (H-1)/2) looks along the optical
    axis, so a centred square target projects symmetrically about it."""
    K = pinhole_K(W, H)
    rays = pixel_rays(K, W, H)
    assert K[0, 2] == (W - 1) / 2 and K[1, 2] == (H - 1) / 2
    # Rays of mirrored pixels are mirrored.
    np.testing.assert_allclose(rays[:, ::-1, 0], -rays[:, :, 0], atol=1e-12)
    np.testing.assert_allclose(rays[::-1, :, 1], -rays[:, :, 1], atol=1e-12)


@pytest.mark.parametrize("kind", ["room", "cluttered"])
def test_culled_render_equals_full_ray_cast(kind):
    """``render`` tests each object only inside its projected bounding box; the result must
    equal the brute-force ray cast of every ray against every primitive."""
    scene = make_scene(kind, 4)
    K = pinhole_K(W, H)
    for T in make_trajectory(scene, "walk", 4, 1):
        view = render(scene, K, T, W, H)
        dirs = pixel_rays(K, W, H).reshape(-1, 3) @ T[:3, :3].T
        hits = ray_cast(scene, T[:3, 3], dirs)
        np.testing.assert_array_equal(view.depth.ravel(), hits.t.astype(np.float32))
        np.testing.assert_array_equal(view.prim.ravel(), hits.prim)


def test_reprojection_through_depth_and_poses_lands_on_same_point():
    """Pixel of view A -> depth -> world -> view B; B's depth there, back to world and
    into A lands within 0.5 px of the start (smooth surfaces, covisible pixels)."""
    scene = make_scene("room", 2)
    K = pinhole_K(W, H)
    poses = make_trajectory(scene, "walk", 6, 2)
    A, B = render(scene, K, poses[0], W, H), render(scene, K, poses[2], W, H)
    rng = np.random.default_rng(0)
    uv = np.stack([rng.integers(5, W - 5, 400), rng.integers(5, H - 5, 400)], 1).astype(float)
    z = A.depth[uv[:, 1].astype(int), uv[:, 0].astype(int)].astype(np.float64)
    Xa = (np.c_[uv, np.ones(len(uv))] @ np.linalg.inv(K).T) * z[:, None]
    Pw = Xa @ A.T_world_cam[:3, :3].T + A.T_world_cam[:3, 3]
    T_b = np.linalg.inv(B.T_world_cam)
    Xb = Pw @ T_b[:3, :3].T + T_b[:3, 3]
    uvb = (Xb @ K.T)[:, :2] / Xb[:, 2:]
    # Bilinear inverse depth in B where its 2x2 neighbourhood is smooth.
    x0, y0 = np.floor(uvb).astype(int).T
    ok = (x0 >= 0) & (x0 < W - 1) & (y0 >= 0) & (y0 < H - 1)
    x0, y0, uvb, Pw, uv = x0[ok], y0[ok], uvb[ok], Pw[ok], uv[ok]
    quad = np.stack([B.depth[y0, x0], B.depth[y0, x0 + 1], B.depth[y0 + 1, x0],
                     B.depth[y0 + 1, x0 + 1]], 1).astype(np.float64)
    fx, fy = uvb[:, 0] - x0, uvb[:, 1] - y0
    inv = ((1 - fx) * (1 - fy) / quad[:, 0] + fx * (1 - fy) / quad[:, 1]
           + (1 - fx) * fy / quad[:, 2] + fx * fy / quad[:, 3])
    Xb_z = (Pw @ T_b[:3, :3].T + T_b[:3, 3])[:, 2]
    visible = (quad.max(1) < 1.05 * quad.min(1)) & (np.abs(1 / inv - Xb_z) < 1e-3 * Xb_z)
    assert visible.sum() > 100
    zb = 1 / inv[visible]
    Xb2 = (np.c_[uvb[visible], np.ones(visible.sum())] @ np.linalg.inv(K).T) * zb[:, None]
    Pw2 = Xb2 @ B.T_world_cam[:3, :3].T + B.T_world_cam[:3, 3]
    T_a = np.linalg.inv(A.T_world_cam)
    Xa2 = Pw2 @ T_a[:3, :3].T + T_a[:3, 3]
    uva = (Xa2 @ K.T)[:, :2] / Xa2[:, 2:]
    err = np.linalg.norm(uva - uv[visible], axis=1)
    assert err.max() <= 0.5
    assert np.median(err) < 0.05


def test_scenes_are_deterministic_per_seed():
    K = pinhole_K(64, 48)
    s1, s2, s3 = make_scene("room", 7), make_scene("room", 7), make_scene("room", 8)
    T = make_trajectory(s1, "loop", 3, 0)[1]
    a, b, c = (render(s, K, T, 64, 48).rgb for s in (s1, s2, s3))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5
    assert len(make_scene("cluttered", 7).boxes) > len(s1.boxes)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="unknown scene kind"):
        make_scene("garden")
    with pytest.raises(ValueError, match="unknown trajectory kind"):
        make_trajectory(make_scene(), "spiral", 5)
    with pytest.raises(ValueError, match="n_frames"):
        make_trajectory(make_scene(), "walk", 1)
    with pytest.raises(ValueError, match="rotation"):
        render(make_scene(), pinhole_K(8, 8), np.diag([1.0, 1.0, -1.0, 1.0]), 8, 8)


def _is_rotation(R):
    return np.allclose(R @ np.swapaxes(R, -1, -2), np.eye(3), atol=1e-9) and np.allclose(
        np.linalg.det(R), 1.0)


@pytest.mark.parametrize("kind", [k.value for k in TrajectoryKind])
def test_trajectories_are_valid_and_stay_clear_of_objects(kind):
    scene = make_scene("cluttered", 1)
    P = make_trajectory(scene, kind, 40, 3)
    assert P.shape == (40, 4, 4) and _is_rotation(P[:, :3, :3])
    np.testing.assert_allclose(P[:, 3], np.tile([0, 0, 0, 1.0], (40, 1)))
    r = np.linalg.norm(P[:, :2, 3] - scene.target[:2], axis=1)
    assert r.min() > 2.1  # objects end within 2.04 m of the target
    assert (np.abs(P[:, :2, 3]) < scene.half_size[:2] - 0.3).all()
    steps = np.linalg.norm(np.diff(P[:, :3, 3], axis=0), axis=1)
    if kind == "rotation":
        assert steps.max() == 0.0
    elif kind == "loop":
        np.testing.assert_allclose(P[-1], P[0], atol=1e-9)
        assert steps.max() < 3 * np.median(steps)  # smooth
    elif kind == "walk":
        assert steps.max() < 3 * np.median(steps)


def test_tracking_loss_stretch_sees_only_the_blank_panel():
    scene = make_scene("room", 5)
    n = 21
    P = make_trajectory(scene, "tracking_loss", n, 5)
    blank = len(scene.boxes) - 1  # the blank panel is the last box
    K = pinhole_K(W, H)
    frac = [np.mean(render(scene, K, P[i], W, H).prim == blank) for i in range(n)]
    assert min(frac[8:13]) == 1.0          # progress 0.4 .. 0.6: nothing but the panel
    assert frac[0] < 0.05 and frac[-1] < 0.05


@pytest.mark.parametrize("angle", [30.0, 90.0, 180.0])
def test_relocalization_views_are_offset_by_the_angle(angle):
    scene = make_scene("room", 0)
    views = relocalization_views(scene, angle, n_map=5, n_query=6, seed=2)
    az = lambda P: np.degrees(np.arctan2(P[:, 1, 3] - scene.target[1], P[:, 0, 3] - scene.target[0]))
    mid = az(views.map_poses)[2]
    off = (az(views.query_poses) - mid + 180) % 360 - 180
    assert np.abs(np.abs(off) - angle).max() <= 3.0 + 1e-9
    # Every view looks at the objects: the target is in front and near the image centre.
    K = pinhole_K(W, H)
    for T in np.concatenate([views.map_poses, views.query_poses]):
        p = np.linalg.inv(T) @ np.r_[scene.target, 1.0]
        assert p[2] > 1.0
        uv = (K @ p[:3])[:2] / p[2]
        assert abs(uv[0] - K[0, 2]) < W / 4 and abs(uv[1] - K[1, 2]) < H / 4
