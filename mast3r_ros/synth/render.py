"""A vectorised numpy ray caster: RGB and exact metric depth of a ``Scene``.

Conventions: pinhole ``K`` with OpenCV's pixel centres (pixel (u, v) is the point
``(u, v)`` in image coordinates, the image spans ``[-0.5, W - 0.5]``); camera frame is
OpenCV's optical frame (x right, y down, z forward); ``T_world_cam`` (4, 4) maps camera
coordinates to world. Depth is the z coordinate in the camera frame (not the range), in
metres, float32. Rays are intersected analytically in float64 (boxes by slabs, spheres by
the quadratic), so depth is exact to rounding.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from mast3r_ros.geometry.intrinsics import intrinsics_matrix

from .scene import Scene

_EPS = 1e-9
# Lambertian shading with one directional light (world frame): brightness depends only on
# the surface, not the viewpoint, so a surface point looks the same from every view.
_LIGHT = np.array([0.35, -0.45, 0.82]) / np.linalg.norm([0.35, -0.45, 0.82])
_AMBIENT, _DIFFUSE = 0.62, 0.38


@dataclass(frozen=True)
class RayHits:
    """First hits of N rays.

    Attributes:
        t: (N,) float64 ray parameter of the hit (``point = origin + t * dir``); inf on a miss.
        prim: (N,) int32 primitive id (boxes first, then spheres); -1 on a miss.
        face: (N,) int8 box face (0..5 = -x, +x, -y, +y, -z, +z in box axes); 0 for spheres.
        point: (N, 3) float64 world hit points (nan on a miss).
        normal: (N, 3) float64 unit world normals facing the ray's side.
    """

    t: np.ndarray
    prim: np.ndarray
    face: np.ndarray
    point: np.ndarray
    normal: np.ndarray


@dataclass(frozen=True)
class RenderedView:
    """One rendered camera view.

    Attributes:
        rgb: (H, W, 3) uint8 RGB.
        depth: (H, W) float32 camera-frame z of each pixel's surface point, metres.
        prim: (H, W) int16 id of the primitive seen at each pixel.
        K: (3, 3) float64 intrinsics; ``T_world_cam``: (4, 4) float64 pose.
    """

    rgb: np.ndarray
    depth: np.ndarray
    prim: np.ndarray
    K: np.ndarray
    T_world_cam: np.ndarray


def pinhole_K(width: int, height: int, hfov_deg: float = 70.0) -> np.ndarray:
    """(3, 3) intrinsics with square pixels, principal point at the image centre.

    The centre of an image of width W is x = (W - 1) / 2 with OpenCV's pixel centres.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height} (WxH)")
    if not 1.0 < hfov_deg < 179.0:
        raise ValueError(f"hfov_deg must be in (1, 179), got {hfov_deg}")
    f = 0.5 * width / np.tan(np.deg2rad(hfov_deg) / 2)
    return intrinsics_matrix(f, (width - 1) / 2, (height - 1) / 2)


def pixel_rays(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W, 3) float64 camera-frame ray directions with z = 1 (so ray t = depth)."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)  # (H, W, 3)
    return pix @ np.linalg.inv(np.asarray(K, dtype=np.float64)).T


def _check_pose(T: np.ndarray) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"T_world_cam must be (4, 4), got {T.shape}")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-6) or np.linalg.det(R) < 0:
        raise ValueError("T_world_cam[:3, :3] is not a rotation matrix")
    return T


def _slab_t(box, o: np.ndarray, inv: tuple, inside: bool) -> np.ndarray:
    """Ray parameter of the first hit with ``box`` (inf on a miss).

    ``o``: (3,) or (N, 3) ray origins in box axes relative to the centre; ``inv``: three
    (N,) reciprocal direction components in box axes.
    """
    h = box.half_size
    t_near = t_far = None
    for a in range(3):
        oa = o[..., a]
        t1 = (-h[a] - oa) * inv[a]
        t2 = (h[a] - oa) * inv[a]
        lo, hi = np.fmin(t1, t2), np.fmax(t1, t2)
        t_near = lo if t_near is None else np.fmax(t_near, lo)
        t_far = hi if t_far is None else np.fmin(t_far, hi)
    if inside:
        return np.where(t_far > _EPS, t_far, np.inf)
    return np.where((t_near <= t_far) & (t_near > _EPS), t_near, np.inf)


def ray_cast(scene: Scene, origins: np.ndarray, dirs: np.ndarray) -> RayHits:
    """Intersect rays with every primitive of ``scene``, keep the nearest hit.

    Args:
        origins: (3,) world origin shared by all rays (fast path) or (N, 3) origins.
        dirs: (N, 3) world ray directions (any non-zero length; ``t`` is in their units).

    Returns:
        ``RayHits`` for the N rays.
    """
    dirs = np.asarray(dirs, dtype=np.float64)
    origins = np.asarray(origins, dtype=np.float64)
    if origins.shape not in ((3,), dirs.shape):
        raise ValueError(f"origins must be (3,) or {dirs.shape}, got {origins.shape}")
    n = dirs.shape[0]
    best_t = np.full(n, np.inf)
    best_prim = np.full(n, -1, dtype=np.int32)
    dx, dy, dz = (np.ascontiguousarray(dirs[:, a]) for a in range(3))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv_world = (1.0 / dx, 1.0 / dy, 1.0 / dz)  # shared by all axis-aligned boxes
        for i, box in enumerate(scene.boxes):
            oc = origins - box.center
            if box.yaw == 0.0:
                inv = inv_world
            else:  # box axes = R^T world, R a rotation about z
                c, s = np.cos(box.yaw), np.sin(box.yaw)
                oc = np.stack([c * oc[..., 0] + s * oc[..., 1], -s * oc[..., 0] + c * oc[..., 1],
                               oc[..., 2]], axis=-1)
                inv = (1.0 / (c * dx + s * dy), 1.0 / (c * dy - s * dx), inv_world[2])
            t = _slab_t(box, oc, inv, box.inside)
            closer = t < best_t
            np.copyto(best_t, t, where=closer)
            np.copyto(best_prim, i, where=closer)
        nb = len(scene.boxes)
        dd = dx * dx + dy * dy + dz * dz
        for j, sph in enumerate(scene.spheres):
            oc = origins - sph.center
            b = oc[..., 0] * dx + oc[..., 1] * dy + oc[..., 2] * dz
            c = np.einsum("...i,...i->...", oc, oc) - sph.radius ** 2
            disc = b * b - dd * c
            t = (-b - np.sqrt(disc)) / dd
            t = np.where((disc >= 0) & (t > _EPS), t, np.inf)
            closer = t < best_t
            np.copyto(best_t, t, where=closer)
            np.copyto(best_prim, nb + j, where=closer)
    point = origins + best_t[:, None] * dirs
    face, normal = _faces_and_normals(scene, point, best_prim, dirs)
    return RayHits(best_t, best_prim, face, point, normal)


@dataclass(frozen=True)
class _Tables:
    """Per-primitive geometry and per-(primitive, face) materials as flat arrays."""

    center: np.ndarray   # (P, 3)
    cos: np.ndarray      # (P,) cos(yaw)
    sin: np.ndarray      # (P,)
    half: np.ndarray     # (P, 3) box half sizes (radius repeated for spheres)
    inside: np.ndarray   # (P,) bool
    sphere: np.ndarray   # (P,) bool
    tex: np.ndarray      # (P * 6,) texture index, -1 = uniform colour
    tint: np.ndarray     # (P * 6, 3) float32
    tile: np.ndarray     # (P * 6,)
    offset: np.ndarray   # (P * 6, 2)
    angle: np.ndarray    # (P * 6,)


@functools.lru_cache(maxsize=16)
def _tables(scene: Scene) -> _Tables:
    prims = list(scene.boxes) + list(scene.spheres)
    nb = len(scene.boxes)
    mats = [m for b in scene.boxes for m in b.materials]
    mats += [s.material for s in scene.spheres for _ in range(6)]
    return _Tables(
        center=np.array([p.center for p in prims], dtype=np.float64),
        cos=np.array([np.cos(b.yaw) for b in scene.boxes] + [1.0] * len(scene.spheres)),
        sin=np.array([np.sin(b.yaw) for b in scene.boxes] + [0.0] * len(scene.spheres)),
        half=np.array([b.half_size for b in scene.boxes] + [[s.radius] * 3 for s in scene.spheres],
                      dtype=np.float64).reshape(-1, 3),
        inside=np.array([b.inside for b in scene.boxes] + [False] * len(scene.spheres)),
        sphere=np.arange(len(prims)) >= nb,
        tex=np.array([m.texture for m in mats], dtype=np.int64),
        tint=np.array([m.color for m in mats], dtype=np.float32),
        tile=np.array([m.tile_m for m in mats], dtype=np.float64),
        offset=np.array([m.offset for m in mats], dtype=np.float64),
        angle=np.array([m.angle for m in mats], dtype=np.float64),
    )


def _local(tab: _Tables, point: np.ndarray, prim: np.ndarray) -> np.ndarray:
    """(N, 3) hit points in their primitive's axes, relative to its centre."""
    d = point - tab.center[prim]
    c, s = tab.cos[prim], tab.sin[prim]
    return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], axis=1)


def _faces_and_normals(scene: Scene, point: np.ndarray, prim: np.ndarray, dirs: np.ndarray,
                       ) -> tuple[np.ndarray, np.ndarray]:
    tab = _tables(scene)
    n = point.shape[0]
    hit = prim >= 0
    p = np.where(hit, prim, 0)
    local = _local(tab, np.where(hit[:, None], point, 0.0), p)
    half = tab.half[p]
    axis = np.argmax(np.abs(local) / half, axis=1)
    rows = np.arange(n)
    sign = np.sign(local[rows, axis])
    face = (2 * axis + (sign > 0)).astype(np.int8)
    nl = np.zeros_like(local)
    nl[rows, axis] = np.where(tab.inside[p], -sign, sign)
    sph = tab.sphere[p]
    nl[sph] = local[sph] / half[sph, :1]
    face[sph] = 0
    c, s = tab.cos[p], tab.sin[p]
    normal = np.stack([c * nl[:, 0] - s * nl[:, 1], s * nl[:, 0] + c * nl[:, 1], nl[:, 2]], axis=1)
    normal[~hit] = np.nan
    return face, normal


def _sample_bilinear(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Wrap-around bilinear lookup; ``u, v`` in texture repeats. Returns (N, 3) float32."""
    th, tw = tex.shape[:2]
    x = u * tw - 0.5
    y = v * th - 0.5
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = (x - x0)[:, None].astype(np.float32)
    fy = (y - y0)[:, None].astype(np.float32)
    x0 = x0.astype(np.int64) % tw
    y0 = y0.astype(np.int64) % th
    x1 = (x0 + 1) % tw
    y1 = (y0 + 1) % th
    top = tex[y0, x0] * (1 - fx) + tex[y0, x1] * fx
    bot = tex[y1, x0] * (1 - fx) + tex[y1, x1] * fx
    return top * (1 - fy) + bot * fy


def surface_coords(scene: Scene, hits: RayHits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Material and texture coordinates of hit points.

    Returns:
        ``(m, u, v)``: (N,) int64 material index ``prim * 6 + face`` (a sphere uses face 0)
        and (N,) float64 texture coordinates in texture repeats (the texture tiles with
        period 1 in both). Rays that hit nothing must not be passed.
    """
    tab = _tables(scene)
    n = hits.t.shape[0]
    local = _local(tab, hits.point, hits.prim)
    # Surface coordinates in metres: the two in-face box axes, or longitude/latitude
    # arc lengths on spheres.
    axis = hits.face.astype(np.int64) // 2
    rows = np.arange(n)
    s = local[rows, (axis + 1) % 3]
    t = local[rows, (axis + 2) % 3]
    sph = tab.sphere[hits.prim]
    if sph.any():
        r = tab.half[hits.prim[sph], 0]
        q = local[sph] / r[:, None]
        s[sph] = np.arctan2(q[:, 1], q[:, 0]) * r
        t[sph] = np.arcsin(np.clip(q[:, 2], -1, 1)) * r
    m = hits.prim.astype(np.int64) * 6 + hits.face
    c, si = np.cos(tab.angle[m]), np.sin(tab.angle[m])
    tile = tab.tile[m]
    u = (c * s - si * t) / tile + tab.offset[m, 0]
    v = (si * s + c * t) / tile + tab.offset[m, 1]
    return m, u, v


def shade(scene: Scene, hits: RayHits) -> np.ndarray:
    """(N, 3) float32 RGB in [0, 1] of the hit points (textures, tints, Lambertian light).

    Raises ValueError if a ray missed (``hits.prim`` < 0).
    """
    if (hits.prim < 0).any():
        raise ValueError("cannot shade rays that hit nothing")
    tab = _tables(scene)
    n = hits.t.shape[0]
    m, u, v = surface_coords(scene, hits)
    tex_id = tab.tex[m]
    color = np.ones((n, 3), dtype=np.float32)
    for k in np.unique(tex_id):
        if k < 0:
            continue
        sel = np.flatnonzero(tex_id == k)
        color[sel] = _sample_bilinear(scene.textures[k], u[sel], v[sel])
    color *= tab.tint[m]
    lambert = np.clip(hits.normal @ _LIGHT, 0.0, None)
    light = (_AMBIENT + _DIFFUSE * lambert).astype(np.float32)
    return np.clip(color * light[:, None], 0.0, 1.0)


def _corners(tab: _Tables, i: int) -> np.ndarray:
    """(8, 3) world corners of primitive i's bounding box (spheres: their bounding cube)."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
    local = signs * tab.half[i]
    c, s = tab.cos[i], tab.sin[i]
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return local @ R.T + tab.center[i]


def _screen_rect(corners: np.ndarray, K: np.ndarray, T: np.ndarray, width: int, height: int,
                 ) -> tuple[slice, slice] | None:
    """Pixel rows/cols that can see the convex hull of ``corners``; None if none can."""
    pc = (corners - T[:3, 3]) @ T[:3, :3]  # (8, 3) camera frame
    if (pc[:, 2] <= 1e-6).any():  # straddles or behind the image plane: be conservative
        return (slice(0, height), slice(0, width)) if (pc[:, 2] > 0).any() else None
    uv = pc[:, :2] / pc[:, 2:] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    uv = uv + np.outer(pc[:, 1] / pc[:, 2], [K[0, 1], 0.0])  # skew, if any
    x0, y0 = np.floor(uv.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(uv.max(axis=0)).astype(int) + 2
    x0, x1 = max(x0, 0), min(x1, width)
    y0, y1 = max(y0, 0), min(y1, height)
    if x0 >= x1 or y0 >= y1:
        return None
    return slice(y0, y1), slice(x0, x1)


def _cast_grid(scene: Scene, K: np.ndarray, T: np.ndarray, dirs: np.ndarray) -> RayHits:
    """``ray_cast`` for the (H, W, 3) pixel rays of one camera, testing each object only
    on the pixels its projected bounding box covers."""
    h, w = dirs.shape[:2]
    tab = _tables(scene)
    origin = T[:3, 3]
    best_t = np.full((h, w), np.inf)
    best_prim = np.full((h, w), -1, dtype=np.int32)
    dx, dy, dz = (np.ascontiguousarray(dirs[..., a]) for a in range(3))
    nb = len(scene.boxes)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv_world = (1.0 / dx, 1.0 / dy, 1.0 / dz)
        for i in range(scene.num_primitives):
            if i < nb and scene.boxes[i].inside:
                rect = (slice(0, h), slice(0, w))
            else:
                rect = _screen_rect(_corners(tab, i), K, T, w, h)
                if rect is None:
                    continue
            oc = origin - tab.center[i]
            if i < nb:
                box = scene.boxes[i]
                if box.yaw == 0.0:
                    inv = tuple(a[rect] for a in inv_world)
                else:
                    c, s = tab.cos[i], tab.sin[i]
                    oc = np.array([c * oc[0] + s * oc[1], -s * oc[0] + c * oc[1], oc[2]])
                    inv = (1.0 / (c * dx[rect] + s * dy[rect]), 1.0 / (c * dy[rect] - s * dx[rect]),
                           inv_world[2][rect])
                t = _slab_t(box, oc, inv, box.inside)
            else:
                sx, sy, sz = dx[rect], dy[rect], dz[rect]
                b = oc[0] * sx + oc[1] * sy + oc[2] * sz
                dd = sx * sx + sy * sy + sz * sz
                disc = b * b - dd * (oc @ oc - tab.half[i, 0] ** 2)
                t = (-b - np.sqrt(disc)) / dd
                t = np.where((disc >= 0) & (t > _EPS), t, np.inf)
            bt, bp = best_t[rect], best_prim[rect]
            closer = t < bt
            np.copyto(bt, t, where=closer)
            np.copyto(bp, i, where=closer)
    flat_t, flat_prim = best_t.reshape(-1), best_prim.reshape(-1)
    flat_dirs = dirs.reshape(-1, 3)
    point = origin + flat_t[:, None] * flat_dirs
    face, normal = _faces_and_normals(scene, point, flat_prim, flat_dirs)
    return RayHits(flat_t, flat_prim, face, point, normal)


def render(scene: Scene, K: np.ndarray, T_world_cam: np.ndarray, width: int, height: int,
           ) -> RenderedView:
    """Render RGB, depth and primitive ids of ``scene`` seen by a pinhole camera.

    Args:
        K: (3, 3) intrinsics (OpenCV pixel centres).
        T_world_cam: (4, 4) camera-to-world pose, OpenCV optical camera frame.
        width, height: image size in pixels.

    Returns:
        ``RenderedView`` with rgb (H, W, 3) uint8, depth (H, W) float32 metres.

    Raises:
        ValueError: bad K, pose or size; RuntimeError: a ray escaped the room (camera
            outside it).
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must be (3, 3), got {K.shape}")
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height} (WxH)")
    T = _check_pose(T_world_cam)
    rays_cam = pixel_rays(K, width, height)  # (H, W, 3), z = 1
    dirs = rays_cam @ T[:3, :3].T  # world directions; t along them is camera z
    hits = _cast_grid(scene, K, T, dirs)
    if not np.isfinite(hits.t).all():
        raise RuntimeError("some rays hit nothing: is the camera inside the room?")
    rgb = shade(scene, hits)
    return RenderedView(
        rgb=np.round(rgb * 255).astype(np.uint8).reshape(height, width, 3),
        depth=hits.t.astype(np.float32).reshape(height, width),
        prim=hits.prim.astype(np.int16).reshape(height, width),
        K=K.copy(), T_world_cam=T.copy(),
    )
