"""Batch alignment of an unordered image set (``mast3r-ros align``)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from mast3r_ros.model.types import PairEngine

from .alignment import AlignmentConfig, AlignmentProblem, SceneGraph, align_views, make_pairs
from .point_cloud import build_point_cloud, network_colors
from .loop_closure import global_descriptor

__all__ = ["BatchAlignment", "align_images"]


@dataclass
class BatchAlignment:
    """Result of ``align_images``.

    Attributes:
        T_world_cam: (N, 3) -> (N, 4, 4) float64 poses (world = the chain root's camera).
        K: (N, 3, 3) float64 intrinsics at each image's original resolution.
        view_weight: (N,) float in [0, 1]: how strongly each image is tied to the others
            after alignment (an outlier image gets a small value).
        pairs: unordered pairs decoded. timings_ms: encode, decode, init, stage1, stage2, total.
        problem: the solved problem (canonical depths, for ``point_cloud``).
    """

    T_world_cam: np.ndarray
    K: np.ndarray
    view_weight: np.ndarray
    pairs: list
    timings_ms: dict
    problem: AlignmentProblem
    images: list = field(repr=False, default_factory=list)
    min_conf: float = 3.0

    def point_cloud(self, max_points: int = 500_000, voxel_size: float = 0.01,
                    stride: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """xyz (N, 3) float32 and rgb (N, 3) uint8, confidence-filtered and voxel-averaged."""
        colors = [network_colors(im, self.problem.views[i].transform) for i, im in enumerate(self.images)]
        return build_point_cloud(self.problem, list(range(len(self.images))), colors,
                                 min_conf=self.min_conf, stride=stride, max_points=max_points,
                                 voxel_size=voxel_size)


def align_images(engine: PairEngine, images: Sequence[np.ndarray], graph: SceneGraph, k: int = 0,
                 config: AlignmentConfig = AlignmentConfig(), *, K: np.ndarray | None = None,
                 frame_ids: Sequence[str | None] | None = None) -> BatchAlignment:
    """Encode every image once, decode the scene graph's pairs, align.

    Args:
        images: (H, W, 3) uint8 RGB images (sizes may differ).
        graph, k: scene graph (``complete``, ``swin`` with K, ``retrieval`` with K).
        K: known (3, 3) intrinsics shared by every image, or None (estimated per image).
        frame_ids: optional ids handed to ``engine.encode`` (the simulator's lookup).
    """
    t0 = time.perf_counter()
    ids = list(frame_ids) if frame_ids is not None else [None] * len(images)
    views = [engine.encode(np.asarray(im), frame_id=fid) for im, fid in zip(images, ids)]
    t_enc = time.perf_counter() - t0
    desc = None
    if graph is SceneGraph.RETRIEVAL:
        desc = np.stack([global_descriptor(engine, v, im) for v, im in zip(views, images)])
    pairs = make_pairs(len(views), graph, k, desc)
    res, prob = align_views(engine, views, pairs, config,
                            K=None if K is None else [K] * len(views))
    Ks = np.stack([v.transform.intrinsics_to_orig(Kn) for v, Kn in zip(views, res.K_net)])
    vw = np.array([res.view_weight.get(i, 0.0) for i in range(len(views))])
    timings = dict(res.timings_ms, encode=1e3 * t_enc, total=1e3 * (time.perf_counter() - t0))
    return BatchAlignment(res.T_world_cam, Ks, vw, pairs, timings, prob, list(images))
