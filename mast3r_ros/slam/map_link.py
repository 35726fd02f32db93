"""The one place where tracking's keyframes meet the mapper (``SlamSystem`` + ``Mapper``).

The tracking core's ``Keyframe`` and the mapper's ``KeyframeLike`` differ in two ways that
matter, both adapted here:

* intrinsics: a keyframe whose ``K`` was *estimated* (no camera info) hands the mapper
  ``K=None``, so sparse global alignment optimises the focal instead of freezing an estimate;
* poses: inside ``SlamSystem`` the tracker follows the mapper's corrections (the corrected
  keyframe poses are written back), so a new keyframe's ``T_map_cam`` is already in the
  corrected map frame; the mapper is told so (``pose_is_corrected=True``) and does not apply
  the previous keyframe's correction a second time. A separate mapper (``mapping_node``),
  whose tracker never sees corrections, uses the default (``False``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mast3r_ros.model.types import EncodedView

__all__ = ["MapperKeyframe", "to_mapper_keyframe", "add_to_mapper"]


@dataclass
class MapperKeyframe:
    """A tracking keyframe as the mapper reads it (``mapper.KeyframeLike``)."""

    id: str
    stamp_ns: int
    T_map_cam: np.ndarray
    K: np.ndarray | None
    view: EncodedView
    image: np.ndarray | None
    colors: np.ndarray | None = None


def to_mapper_keyframe(kf) -> MapperKeyframe:
    """A tracking ``Keyframe`` (or anything alike) as a ``MapperKeyframe``."""
    estimated = bool(getattr(kf, "intrinsics_estimated", False))
    K = None if (estimated or kf.K is None) else np.asarray(kf.K, dtype=np.float64)
    image = getattr(kf, "image", None)
    colors = getattr(kf, "colors", None)
    if image is None and colors is None and hasattr(kf, "rgb"):
        image = kf.rgb()
    return MapperKeyframe(str(kf.id), int(kf.stamp_ns), np.asarray(kf.T_map_cam, np.float64).copy(),
                          K, kf.view, image, colors)


def add_to_mapper(mapper, kf, *, pose_is_corrected: bool = True, connect_to=()):
    """``mapper.add_keyframe`` for a tracking keyframe; returns its ``MapUpdate``.
    ``connect_to``: ids of keyframes it must be paired with (the one it was tracked against).
    Mappers without these keywords (duck-typed ones) get the keyframe alone."""
    mkf = to_mapper_keyframe(kf)
    kw = {"pose_is_corrected": pose_is_corrected}
    if connect_to:
        kw["connect_to"] = tuple(connect_to)
    try:
        return mapper.add_keyframe(mkf, **kw)
    except TypeError as exc:
        if not any(k in str(exc) for k in kw):
            raise
        return mapper.add_keyframe(mkf)
