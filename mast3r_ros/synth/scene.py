"""Procedural textured indoor scenes with exact geometry (for tests and evaluation).

A scene is a closed room (an inside-out box: walls, floor, ceiling) holding yaw-rotated
boxes and spheres. Every surface carries a material: a texture from the CC0 images that
ship with scikit-image (``brick``, ``grass``, ``gravel`` and photographs used as posters
and object skins), tinted, tiled in metres and rotated per face so that repeats differ.
One wall carries a *blank panel* of uniform colour: the ``tracking_loss`` trajectory
fills the view with it.

World frame: z up (REP-103 ``map``), metres; the room spans
``[-half_size, +half_size]`` in x and y and ``[0, 2 * half_size[2]]`` in z.
Everything is a deterministic function of ``(kind, seed)``.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

log = logging.getLogger(__name__)

# Texture names in the order of ``Scene.textures``; photographs come after the
# three material textures. All ship inside scikit-image (no download).
TEXTURE_NAMES: tuple[str, ...] = (
    "brick", "grass", "gravel", "camera", "astronaut", "coffee", "chelsea", "rocket",
    "hubble_deep_field", "immunohistochemistry", "colorwheel", "moon",
)
_MATERIAL_TEXTURES = (0, 1, 2)  # brick, grass, gravel
_PHOTO_TEXTURES = tuple(range(3, len(TEXTURE_NAMES)))
_TEXTURE_MAX_SIDE = 512


class SceneKind(Enum):
    """Which procedural scene to build."""

    ROOM = "room"            # textured room, a few boxes and spheres in the middle, posters
    CLUTTERED = "cluttered"  # the same room with twice the objects


@dataclass(frozen=True)
class Material:
    """How a surface is coloured.

    Attributes:
        texture: index into ``Scene.textures``; -1 paints the uniform ``color``.
        color: (3,) RGB tint in [0, 1], multiplied with the texture.
        tile_m: metres covered by one repeat of the texture.
        offset: (2,) texture offset in repeats.
        angle: rotation of the texture on the surface, radians.
    """

    texture: int
    color: tuple[float, float, float]
    tile_m: float = 1.0
    offset: tuple[float, float] = (0.0, 0.0)
    angle: float = 0.0


@dataclass(frozen=True, eq=False)
class Box:
    """A box rotated by ``yaw`` about the world z axis.

    Attributes:
        center: (3,) world position of the centre, metres.
        half_size: (3,) half extents along the box's own axes, metres.
        yaw: rotation about world z, radians.
        materials: six materials, faces ordered -x, +x, -y, +y, -z, +z (box axes).
        inside: True for the room: rays start inside and hit its inner faces.
    """

    center: np.ndarray
    half_size: np.ndarray
    yaw: float
    materials: tuple[Material, ...]
    inside: bool = False

    @property
    def rotation(self) -> np.ndarray:
        """(3, 3) box-to-world rotation."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True, eq=False)
class Sphere:
    """A sphere. ``center``: (3,) metres; ``radius``: metres."""

    center: np.ndarray
    radius: float
    material: Material


@dataclass(frozen=True, eq=False)
class Scene:
    """A room with objects, ready for ``render``.

    Attributes:
        kind: which generator built it; ``seed``: its seed.
        boxes: the room (index 0, ``inside=True``), objects, posters and the blank panel.
        spheres: spherical objects. Primitive ids: boxes first, then spheres.
        textures: float32 (Ht, Wt, 3) images in [0, 1], see ``TEXTURE_NAMES``.
        half_size: (3,) room half extents (x, y, half the height), metres.
        target: (3,) point the trajectories look at (middle of the object cluster).
        blank_center: (3,) centre of the blank panel's visible face; ``blank_normal``:
            (3,) its unit normal, pointing into the room.
        camera_radius: (min, max) horizontal distance from ``target`` that keeps cameras
            clear of objects and walls; ``camera_height``: (min, max) camera z.
    """

    kind: SceneKind
    seed: int
    boxes: tuple[Box, ...]
    spheres: tuple[Sphere, ...]
    textures: tuple[np.ndarray, ...]
    half_size: np.ndarray
    target: np.ndarray
    blank_center: np.ndarray
    blank_normal: np.ndarray
    camera_radius: tuple[float, float] = (2.2, 2.9)
    camera_height: tuple[float, float] = (1.1, 1.8)
    meta: dict = field(default_factory=dict)

    @property
    def num_primitives(self) -> int:
        return len(self.boxes) + len(self.spheres)


@functools.lru_cache(maxsize=1)
def load_textures() -> tuple[np.ndarray, ...]:
    """The scikit-image textures and photos as float32 (Ht, Wt, 3) arrays in [0, 1]."""
    import cv2
    import skimage.data

    out = []
    for name in TEXTURE_NAMES:
        img = np.asarray(getattr(skimage.data, name)())
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        img = img[..., :3]
        scale = _TEXTURE_MAX_SIDE / max(img.shape[:2])
        if scale < 1:
            img = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)),
                             interpolation=cv2.INTER_AREA)
        tex = np.ascontiguousarray(img, dtype=np.float32) / 255.0
        tex.setflags(write=False)
        out.append(tex)
    return tuple(out)


def _random_material(rng: np.random.Generator, textures: tuple[int, ...],
                     tile: tuple[float, float]) -> Material:
    tint = tuple(float(v) for v in rng.uniform(0.55, 1.0, size=3))
    return Material(
        texture=int(rng.choice(textures)),
        color=tint,  # type: ignore[arg-type]
        tile_m=float(rng.uniform(*tile)),
        offset=(float(rng.uniform()), float(rng.uniform())),
        angle=float(rng.uniform(0, 2 * np.pi)),
    )


def _room(rng: np.random.Generator, half: np.ndarray) -> Box:
    walls = tuple(
        Material(0, tuple(float(v) for v in rng.uniform(0.6, 1.0, 3)), float(rng.uniform(1.2, 1.8)),
                 (float(rng.uniform()), float(rng.uniform())), float(rng.choice([0.0, np.pi / 2])))
        for _ in range(4)
    )
    floor = _random_material(rng, (2,), (1.0, 1.5))
    ceiling = Material(1, (0.9, 0.9, 0.95), 2.0, (0.3, 0.7), 0.4)
    return Box(np.array([0.0, 0.0, half[2]]), half.copy(), 0.0, walls + (floor, ceiling), inside=True)


def _wall_panel(center: np.ndarray, wall_axis: int, width: float, height: float,
                material: Material, thickness: float = 0.02) -> Box:
    """A thin box lying on a wall; ``wall_axis`` 0 for x-walls, 1 for y-walls."""
    half = np.array([width / 2, width / 2, height / 2])
    half[wall_axis] = thickness / 2
    return Box(center, half, 0.0, (material,) * 6)


def _place_objects(rng: np.random.Generator, n_boxes: int, n_spheres: int, radius: float,
                   ) -> tuple[list[Box], list[Sphere]]:
    """Non-overlapping boxes on the floor within ``radius`` of the origin, some spheres on top."""
    all_tex = _MATERIAL_TEXTURES + _PHOTO_TEXTURES
    boxes: list[Box] = []
    footprints: list[tuple[float, float, float]] = []
    tries = 0
    while len(boxes) < n_boxes and tries < 2000:
        tries += 1
        half = rng.uniform([0.15, 0.15, 0.15], [0.45, 0.45, 0.6])
        foot = float(np.hypot(half[0], half[1]))
        r = rng.uniform(0, radius - foot)
        a = rng.uniform(0, 2 * np.pi)
        xy = np.array([r * np.cos(a), r * np.sin(a)])
        if any(np.hypot(xy[0] - x, xy[1] - y) < foot + f + 0.05 for x, y, f in footprints):
            continue
        footprints.append((float(xy[0]), float(xy[1]), foot))
        mats = tuple(_random_material(rng, all_tex, (0.4, 1.0)) for _ in range(6))
        boxes.append(Box(np.array([xy[0], xy[1], half[2]]), half, float(rng.uniform(0, np.pi)), mats))
    spheres = []
    for box in boxes[:n_spheres]:
        r = float(min(box.half_size[0], box.half_size[1], rng.uniform(0.12, 0.3)))
        top = box.center[2] + box.half_size[2]
        spheres.append(Sphere(np.array([box.center[0], box.center[1], top + r]), r,
                              _random_material(rng, all_tex, (0.3, 0.8))))
    return boxes, spheres


def make_scene(kind: SceneKind | str = SceneKind.ROOM, seed: int = 0) -> Scene:
    """Build a procedural room, deterministic per ``(kind, seed)``.

    Args:
        kind: ``SceneKind`` or its value (``"room"``, ``"cluttered"``).
        seed: any non-negative integer.

    Returns:
        The ``Scene``; the room is 9 m x 7 m x 3 m, objects stay within 1.4 m of its centre.

    Raises:
        ValueError: unknown kind or negative seed.
    """
    kind = _parse_enum(SceneKind, kind, "scene kind")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    rng = np.random.default_rng([int(seed), 0x5CE7E])
    textures = load_textures()
    half = np.array([4.5, 3.5, 1.5])
    room = _room(rng, half)
    n_boxes, n_spheres = (4, 2) if kind is SceneKind.ROOM else (8, 4)
    objects, spheres = _place_objects(rng, n_boxes, n_spheres, radius=1.4)

    # The blank panel on the +y wall, and photo posters on the other walls.
    blank_x = float(rng.uniform(-1.5, 1.5))
    blank_face_y = half[1] - 0.02
    blank = _wall_panel(np.array([blank_x, half[1] - 0.01, 1.4]), 1, 2.6, 2.2,
                        Material(-1, (0.82, 0.80, 0.76)))
    posters: list[Box] = []
    slots = [(0, -1), (0, 1), (1, -1), (1, -1), (0, -1), (0, 1)]
    for axis, sign in slots:
        w, h = rng.uniform(0.7, 1.4), rng.uniform(0.6, 1.1)
        along = rng.uniform(-1.0, 1.0) * (half[1 - axis] - 1.2)
        c = np.zeros(3)
        c[axis] = sign * (half[axis] - 0.01)
        c[1 - axis] = along
        c[2] = rng.uniform(1.1, 1.9)
        mat = Material(int(rng.choice(_PHOTO_TEXTURES)), (1.0, 1.0, 1.0), float(max(w, h)))
        posters.append(_wall_panel(c, axis, float(w), float(h), mat))
    target = np.array([0.0, 0.0, 0.6])
    scene = Scene(
        kind=kind, seed=int(seed), boxes=(room, *objects, *posters, blank), spheres=tuple(spheres),
        textures=textures, half_size=half, target=target,
        blank_center=np.array([blank_x, blank_face_y, 1.4]), blank_normal=np.array([0.0, -1.0, 0.0]),
        meta={"kind": kind.value, "seed": int(seed)},
    )
    log.debug("scene %s seed %d: %d boxes, %d spheres", kind.value, seed, len(scene.boxes),
              len(scene.spheres))
    return scene


def _parse_enum(enum_cls, value, what: str):
    if isinstance(value, enum_cls):
        return value
    try:
        return enum_cls(value)
    except ValueError:
        valid = ", ".join(e.value for e in enum_cls)
        raise ValueError(f"unknown {what} {value!r}; choose one of: {valid}") from None
