"""Sparse global alignment of many views from MASt3R pair predictions (written from the
MASt3R paper's description, not from its code).

What is estimated, per view ``v`` (network resolution h x w):

- ``T_world_cam[v]`` (4, 4): poses, parameterised along a kinematic chain: a minimum spanning
  tree over the pair graph weighted by match strength; each non-root view's pose is its
  parent's pose times a learned relative correction times the initial relative pose.
- ``focal[v]`` (network pixels, fx = fy; the principal point stays at the image centre of the
  network image, or where a known K puts it): fixed when K is known.
- anchor depths: one log-scale correction per cell of a regular ``anchor_step`` grid. A pixel
  ``p`` of view ``v`` has depth ``z_canon[v](p) * exp(delta[anchor(p)])``: it is tied to its
  anchor by the fixed relative offset ``z_canon(p) / z_canon(anchor)`` of the canonical
  pointmap, so a few hundred unknowns per view describe its whole depth map.

The canonical pointmap of a view is the confidence-weighted fusion of the depth it is given
in its own frame by every ordered pair (view, other) it is the first view of.

Observations: for each ordered pair (i, j) the decoder's prediction and FRM matches. A match
is kept when the pair's own two pointmaps agree on it (3D distance below
``consistency_rel`` x depth, both points being in i's frame): a cheap per-pair outlier test.
A pair with fewer than ``min_pair_matches`` consistent matches falls back to the regression
term (pointmap of j predicted in i's frame on a grid, compared with j's canonical points;
weight ``fallback_weight`` x confidence), as the paper does for pairs with poor matches.

Stage 1 minimises a robust (Cauchy) 3D distance between matched points (relative to their
depth) over poses and anchor depths. Stage 2 minimises a robust 2D reprojection error over
poses, focals and anchor depths. Both with Adam on the engine's device, every pair's
residuals in one batched tensor. Gauge: the chain root's pose is fixed; the scale is fixed by
centring the log-depth corrections (batch), or by the fixed views (local window), during the
optimisation; afterwards ``metric_rescale`` sets the metric scale to the robust geometric mean
of all pairs' predicted scales (every pair is a metric measurement with its own error: the
network's per-pair scale errors average away over many pairs, not over the chain's few).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from mast3r_ros.config import config_from_dict
from mast3r_ros.geometry.align import umeyama
from mast3r_ros.geometry.intrinsics import estimate_focal
from mast3r_ros.matching.frm import FRMConfig, match_prediction
from mast3r_ros.model.types import EncodedView, PairEngine, PairPrediction

log = logging.getLogger(__name__)

__all__ = ["AlignmentConfig", "SceneGraph", "make_pairs", "PairObservation", "CanonicalView",
           "AlignmentProblem", "AlignmentResult", "observe_pair", "align_views"]


@dataclass(frozen=True)
class AlignmentConfig:
    """Settings of the sparse global alignment (``align_views`` / ``Mapper``)."""

    anchor_step: int = 8            # anchor grid step, network pixels
    match_subsample: int = 8        # FRM seed grid step, network pixels
    max_matches_per_pair: int = 3000  # matches kept per ordered pair (strongest first)
    consistency_rel: float = 0.05   # a match is kept when its two pair points agree within this x depth
    min_pair_matches: int = 30      # fewer consistent matches: regression fallback for the pair
    fallback_weight: float = 0.1    # weight of the regression term (x confidence) of poor pairs
    fallback_step: int = 8          # grid step of the regression term's pixels
    min_conf: float = 1.5           # pointmap confidence below which a pixel is not used
    stage1_iters: int = 300         # Adam iterations of stage 1 (3D matching)
    stage1_lr: float = 0.01         # its peak learning rate (cosine decay to 1 %)
    stage2_iters: int = 300         # Adam iterations of stage 2 (2D reprojection)
    stage2_lr: float = 0.003        # its peak learning rate
    converge_rel_tol: float = 2e-3  # a stage has converged when its mean loss over the last
                                    # converge_window iterations is less than this fraction
                                    # below the window's before; it then runs the schedule's
                                    # last window (learning rate near 1 %) and stops (0: never)
    converge_window: int = 10       # iterations per convergence window
    loss3d_scale: float = 0.02      # Cauchy scale of the 3D residual, fraction of depth
    loss2d_scale_px: float = 2.0    # Cauchy scale of the reprojection residual, network pixels
    optimize_focal: bool = True     # refine unknown focals in stage 2
    symmetric: bool = True          # decode both orders (i, j) and (j, i) of a pair
    metric_scale: bool = True       # after a batch alignment, set the reconstruction's scale to
                                    # the robust geometric mean of every pair's metric scale
                                    # relative to it (``AlignmentProblem.metric_rescale``): each
                                    # pair's scale error counts once, instead of the few pairs of
                                    # the chain's initialisation fixing the scale
    dtype: str = "float32"          # optimisation dtype on the engine's device

    def __post_init__(self) -> None:
        for name in ("anchor_step", "match_subsample", "fallback_step", "max_matches_per_pair",
                     "converge_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"AlignmentConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("stage1_iters", "stage2_iters", "min_pair_matches"):
            if getattr(self, name) < 0:
                raise ValueError(f"AlignmentConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("consistency_rel", "loss3d_scale", "loss2d_scale_px", "stage1_lr", "stage2_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"AlignmentConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.converge_rel_tol < 0:
            raise ValueError(f"AlignmentConfig.converge_rel_tol must be >= 0, got {self.converge_rel_tol}")
        if self.fallback_weight < 0:
            raise ValueError(f"AlignmentConfig.fallback_weight must be >= 0, got {self.fallback_weight}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"AlignmentConfig.dtype must be 'float32' or 'float64', got {self.dtype!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "AlignmentConfig":
        """Build from a dict, rejecting unknown keys."""
        return config_from_dict(cls, values)

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == "float64" else torch.float32


class SceneGraph(Enum):
    """Which pairs of an unordered image set are decoded."""

    COMPLETE = "complete"    # every pair
    SWIN = "swin"            # each image with the next K (sliding window, cyclic)
    RETRIEVAL = "retrieval"  # each image with its K most similar by global descriptor


def parse_scene_graph(text: str) -> tuple[SceneGraph, int]:
    """``complete`` | ``swin-K`` | ``retrieval-K`` -> (kind, K). Raises ValueError."""
    kind, _, k = str(text).partition("-")
    try:
        graph = SceneGraph(kind)
    except ValueError:
        raise ValueError(f"scene graph {text!r} is not one of complete, swin-K, retrieval-K") from None
    if graph is SceneGraph.COMPLETE:
        if k:
            raise ValueError(f"scene graph 'complete' takes no K, got {text!r}")
        return graph, 0
    if not k.isdigit() or int(k) < 1:
        raise ValueError(f"scene graph {text!r}: K must be a positive integer (e.g. {kind}-3)")
    return graph, int(k)


def make_pairs(n: int, graph: SceneGraph, k: int = 0,
               descriptors: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Unordered pairs (i < j) of ``n`` views for a scene graph.

    Args:
        descriptors: (n, D) unit global descriptors, needed by ``RETRIEVAL``.
    """
    if n < 2:
        raise ValueError(f"need at least 2 views to align, got {n}")
    pairs: set[tuple[int, int]] = set()
    if graph is SceneGraph.COMPLETE:
        pairs = {(i, j) for i in range(n) for j in range(i + 1, n)}
    elif graph is SceneGraph.SWIN:
        for i in range(n):
            for d in range(1, k + 1):
                j = (i + d) % n
                if i != j:
                    pairs.add((min(i, j), max(i, j)))
    else:
        if descriptors is None or len(descriptors) != n:
            raise ValueError("the retrieval scene graph needs one global descriptor per view")
        sim = descriptors @ descriptors.T
        np.fill_diagonal(sim, -np.inf)
        for i in range(n):
            for j in np.argsort(-sim[i])[:k]:
                pairs.add((min(i, int(j)), max(i, int(j))))
        # keep the graph connected: chain each view to its best neighbour is already done;
        # join components through their most similar cross pair
        pairs |= _connect(n, pairs, sim)
    return sorted(pairs)


def _connect(n: int, pairs: set[tuple[int, int]], sim: np.ndarray) -> set[tuple[int, int]]:
    comp = _components(n, pairs)
    extra: set[tuple[int, int]] = set()
    while len(set(comp)) > 1:
        c0 = comp[0]
        inside = np.array([c == c0 for c in comp])
        s = np.where(inside[:, None] & ~inside[None, :], sim, -np.inf)
        i, j = np.unravel_index(int(np.argmax(s)), s.shape)
        extra.add((min(i, j), max(i, j)))
        comp = _components(n, pairs | extra)
    return extra


def _components(n: int, pairs) -> list[int]:
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j in pairs:
        parent[find(i)] = find(j)
    return [find(i) for i in range(n)]


# ----------------------------------------------------------------------------- observations


@dataclass
class PairObservation:
    """What alignment keeps of one ordered pair (i = view 1, j = view 2). Device tensors.

    Attributes:
        i, j: view keys (keyframe ids or indices).
        idx_i, idx_j: (M,) int64 linear network-pixel indices ``x + w * y`` of the matches.
        weight: (M,) match weights (sqrt of the two pointmap confidences).
        n_matches: FRM matches before the consistency test; n_consistent: after it.
        fallback: True when the pair uses the regression term instead of matches.
        reg_idx_j: (R,) pixels of j on a grid; reg_pts_i: (R, 3) their points predicted in
            i's frame; reg_weight: (R,) confidences.
        focal_i: focal of view i estimated from this pair's pointmap (network pixels).
        scale: pair scale relative to the canonical pointmaps (filled in by the problem).
    """

    i: Any
    j: Any
    idx_i: torch.Tensor
    idx_j: torch.Tensor
    weight: torch.Tensor
    n_matches: int
    n_consistent: int
    fallback: bool
    reg_idx_j: torch.Tensor
    reg_pts_i: torch.Tensor
    reg_weight: torch.Tensor
    focal_i: float

    @property
    def strength(self) -> float:
        """Match strength (sum of consistent match weights; small for fallback pairs)."""
        if self.fallback:
            return 1e-3 * float(self.reg_weight.sum())
        return float(self.weight.sum())


@dataclass
class CanonicalView:
    """The fused canonical depth of one view (own camera frame, network resolution).

    Attributes:
        h, w: network size. transform: network <-> original pixels.
        z_sum, w_sum: (h*w,) confidence-weighted depth sum and weight sum; n: pairs fused.
        focal_sum, focal_w: weighted sum of per-pair focal estimates.
    """

    h: int
    w: int
    transform: Any
    z_sum: torch.Tensor
    w_sum: torch.Tensor
    n: int = 0
    focal_sum: float = 0.0
    focal_w: float = 0.0

    @property
    def depth(self) -> torch.Tensor:
        """(h*w,) fused depth (metres; 0 where no pair saw the pixel confidently)."""
        return self.z_sum / self.w_sum.clamp_min(1e-12)

    @property
    def conf(self) -> torch.Tensor:
        """(h*w,) mean confidence over the fused pairs."""
        return self.w_sum / max(self.n, 1)

    @property
    def focal(self) -> float:
        return self.focal_sum / self.focal_w if self.focal_w > 0 else float(max(self.h, self.w))

    def fuse(self, pts3d: torch.Tensor, conf: torch.Tensor, focal: float) -> None:
        """Add one pair's own-frame pointmap (h, w, 3) with confidence (h, w)."""
        z = pts3d[..., 2].reshape(-1).to(self.z_sum.dtype)
        c = conf.reshape(-1).to(self.z_sum.dtype) * (z > 0)
        self.z_sum += c * z.clamp_min(0)
        self.w_sum += c
        self.n += 1
        wt = float(c.sum())
        self.focal_sum += focal * wt
        self.focal_w += wt


def _pair_focal(pts3d: torch.Tensor, conf: torch.Tensor, min_conf: float) -> float:
    h, w = pts3d.shape[:2]
    step = max(1, min(h, w) // 48)  # a subsampled grid is plenty for one scalar
    p = pts3d[::step, ::step].detach().cpu().numpy().astype(np.float64)
    c = conf[::step, ::step].detach().cpu().numpy().astype(np.float64)
    # pixel coordinates of the subsampled grid: rescale the focal afterwards
    est = estimate_focal(p, weights=np.where(c >= min_conf, c, 0.0) + 1e-6,
                         principal_point=((w - 1) / 2 / step, (h - 1) / 2 / step))
    return est.focal * step


def observe_pair(pred: PairPrediction, i: Any, j: Any, config: AlignmentConfig) -> PairObservation:
    """Matches, consistency test and regression grid of one decoded ordered pair (i, j)."""
    v1, v2 = pred.view1, pred.view2
    h1, w1 = v1.pts3d.shape[:2]
    h2, w2 = v2.pts3d.shape[:2]
    dev = v1.pts3d.device
    frm = FRMConfig(subsample=config.match_subsample, min_conf=config.min_conf)
    m = match_prediction(pred, frm)
    idx_i = torch.as_tensor(m.xy1_net[:, 0] + w1 * m.xy1_net[:, 1], dtype=torch.long, device=dev)
    idx_j = torch.as_tensor(m.xy2_net[:, 0] + w2 * m.xy2_net[:, 1], dtype=torch.long, device=dev)
    P1 = v1.pts3d.reshape(-1, 3)[idx_i]
    P2 = v2.pts3d.reshape(-1, 3)[idx_j]
    c1 = v1.conf.reshape(-1)[idx_i]
    c2 = v2.conf.reshape(-1)[idx_j]
    dist = (P1 - P2).norm(dim=1)
    depth = 0.5 * (P1[:, 2].abs() + P2[:, 2].abs()).clamp_min(1e-6)
    ok = (dist <= config.consistency_rel * depth) & (P1[:, 2] > 0)
    weight = torch.sqrt(c1 * c2)
    idx_i, idx_j, weight = idx_i[ok], idx_j[ok], weight[ok]
    if len(weight) > config.max_matches_per_pair:
        top = torch.topk(weight, config.max_matches_per_pair).indices
        idx_i, idx_j, weight = idx_i[top], idx_j[top], weight[top]
    n_cons = int(len(weight))
    s = config.fallback_step
    ys, xs = torch.meshgrid(torch.arange(s // 2, h2, s, device=dev),
                            torch.arange(s // 2, w2, s, device=dev), indexing="ij")
    reg_idx = (xs + w2 * ys).reshape(-1)
    reg_pts = v2.pts3d.reshape(-1, 3)[reg_idx]
    reg_w = v2.conf.reshape(-1)[reg_idx]
    keep = (reg_w >= config.min_conf) & (reg_pts[:, 2] > 0)
    return PairObservation(
        i=i, j=j, idx_i=idx_i, idx_j=idx_j, weight=weight, n_matches=len(m), n_consistent=n_cons,
        fallback=n_cons < config.min_pair_matches, reg_idx_j=reg_idx[keep],
        reg_pts_i=reg_pts[keep], reg_weight=reg_w[keep],
        focal_i=_pair_focal(v1.pts3d, v1.conf, config.min_conf))


# ----------------------------------------------------------------------------- lie helpers


def _rodrigues(rv: torch.Tensor) -> torch.Tensor:
    """(N, 3) rotation vectors -> (N, 3, 3) rotations (smooth at zero)."""
    theta2 = (rv * rv).sum(-1, keepdim=True)
    theta = torch.sqrt(theta2 + 1e-20)
    small = theta2 < 1e-8
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / (theta2 + 1e-20))
    x, y, z = rv.unbind(-1)
    zero = torch.zeros_like(x)
    Kx = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(-1, 3, 3)
    eye = torch.eye(3, dtype=rv.dtype, device=rv.device).expand_as(Kx)
    return eye + a[..., None] * Kx + b[..., None] * (Kx @ Kx)


def _cauchy(r2: torch.Tensor, c: float) -> torch.Tensor:
    return torch.log1p(r2 / (c * c))


def _mst(n: int, edges: dict[tuple[int, int], float], roots: Sequence[int]) -> list[int]:
    """Parents of a maximum-strength spanning forest (Prim from the roots); -1 for roots.

    Views not reachable from any root become extra roots (their own chain)."""
    import heapq

    adj: list[list[tuple[float, int]]] = [[] for _ in range(n)]
    for (a, b), s in edges.items():
        adj[a].append((s, b))
        adj[b].append((s, a))
    parent = [-2] * n
    heap: list[tuple[float, int, int]] = []

    def push_root(r: int) -> None:
        parent[r] = -1
        for s, b in adj[r]:
            heapq.heappush(heap, (-s, r, b))

    for r in roots:
        if parent[r] == -2:
            push_root(r)
    while True:
        while heap:
            _, a, b = heapq.heappop(heap)
            if parent[b] != -2:
                continue
            parent[b] = a
            for s, c in adj[b]:
                if parent[c] == -2:
                    heapq.heappush(heap, (-s, b, c))
        rest = [v for v in range(n) if parent[v] == -2]
        if not rest:
            return parent
        push_root(rest[0])


# ----------------------------------------------------------------------------- problem


@dataclass
class AlignmentResult:
    """Output of one alignment run.

    Attributes:
        keys: view keys in the order of the arrays.
        T_world_cam: (V, 4, 4) float64 camera -> world.
        K_net: (V, 3, 3) float64 intrinsics at network resolution.
        pair_weight: {(i, j): final weight} = match strength x fraction of matches whose
            final residual is within the robust scale (0 for pairs that end up inconsistent).
        view_weight: {key: weight in [0, 1]}: the largest weight of its pairs over the
            largest in the problem; an outlier view gets a small value.
        fallback_pairs: ordered pairs that used the regression fallback.
        loss: final stage-1 and stage-2 losses. timings_ms: init, stage1, stage2, total.
        iterations: Adam iterations run per stage (fewer than configured when converged).
        scale_correction: factor applied to every length by ``metric_rescale`` (1: none).
    """

    keys: list
    T_world_cam: np.ndarray
    K_net: np.ndarray
    pair_weight: dict
    view_weight: dict
    fallback_pairs: list
    loss: dict
    timings_ms: dict
    iterations: dict = field(default_factory=dict)
    scale_correction: float = 1.0


class AlignmentProblem:
    """Views (canonical depth, intrinsics, pose, anchor corrections) and pair observations.

    The state persists across runs (the ``Mapper`` grows it by keyframes); ``optimize``
    optimises a chosen subset of views with the others fixed.
    """

    def __init__(self, config: AlignmentConfig = AlignmentConfig(),
                 device: torch.device | str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        self.dtype = config.torch_dtype
        self.keys: list = []
        self.index: dict = {}
        self.views: list[CanonicalView] = []
        self.K_known: list[np.ndarray | None] = []  # network-resolution K when known
        self.T: list[np.ndarray] = []               # (4, 4) float64 T_world_cam
        self.focal: list[float] = []
        self.delta: list[torch.Tensor] = []          # (ha*wa,) log-depth corrections
        self.pairs: dict[tuple, PairObservation] = {}
        self.optimized: set[int] = set()             # views whose focal was optimised

    # -- building

    def add_view(self, key: Any, transform, K_net: np.ndarray | None = None,
                 T_world_cam: np.ndarray | None = None) -> int:
        if key in self.index:
            raise ValueError(f"view {key!r} is already in the alignment problem")
        h, w = transform.network_size
        zeros = torch.zeros(h * w, dtype=self.dtype, device=self.device)
        self.index[key] = len(self.keys)
        self.keys.append(key)
        self.views.append(CanonicalView(h, w, transform, zeros.clone(), zeros.clone()))
        self.K_known.append(None if K_net is None else np.asarray(K_net, dtype=np.float64))
        self.T.append(np.eye(4) if T_world_cam is None else np.asarray(T_world_cam, np.float64).copy())
        self.focal.append(float(K_net[0, 0]) if K_net is not None else float("nan"))
        s = self.config.anchor_step
        self.delta.append(torch.zeros(math.ceil(h / s) * math.ceil(w / s), dtype=self.dtype,
                                      device=self.device))
        return self.index[key]

    def add_pair(self, pred: PairPrediction, i: Any, j: Any) -> PairObservation:
        """Fuse view i's own pointmap into its canonical depth and keep the observation."""
        obs = observe_pair(pred, i, j, self.config)
        vi = self.views[self.index[i]]
        conf = torch.where(pred.view1.conf >= self.config.min_conf, pred.view1.conf,
                           torch.zeros_like(pred.view1.conf))
        vi.fuse(pred.view1.pts3d, conf, obs.focal_i)
        v = self.index[i]
        if self.K_known[v] is None and v not in self.optimized:
            self.focal[v] = vi.focal  # until optimised, the fused pointmaps' estimate
        self.pairs[(i, j)] = obs
        return obs

    def K_net(self, v: int) -> np.ndarray:
        """(3, 3) current intrinsics of view ``v`` at network resolution."""
        if self.K_known[v] is not None:
            return self.K_known[v].copy()
        view = self.views[v]
        return np.array([[self.focal[v], 0, (view.w - 1) / 2], [0, self.focal[v], (view.h - 1) / 2],
                         [0, 0, 1.0]])

    def edge_strength(self) -> dict[tuple[int, int], float]:
        """Unordered view-index pair -> summed strength of its ordered pairs."""
        out: dict[tuple[int, int], float] = {}
        for (i, j), obs in self.pairs.items():
            a, b = self.index[i], self.index[j]
            k = (min(a, b), max(a, b))
            out[k] = out.get(k, 0.0) + obs.strength
        return out

    # -- initialisation

    def _backproject(self, v: int, idx: torch.Tensor, depth: torch.Tensor | None = None,
                     focal: torch.Tensor | float | None = None) -> torch.Tensor:
        view = self.views[v]
        K = self.K_net(v)
        f = K[0, 0] if focal is None else focal
        x = (idx % view.w).to(self.dtype)
        y = torch.div(idx, view.w, rounding_mode="floor").to(self.dtype)
        z = view.depth[idx] if depth is None else depth
        return torch.stack([(x - K[0, 2]) / f * z, (y - K[1, 2]) / f * z, z], -1)

    def relative_from_pair(self, obs: PairObservation) -> tuple[np.ndarray, float] | None:
        """Similarity from j's canonical points to the pair's points of j in i's frame:
        ``X_pair = s R X_j + t``, as (4, 4) [R | t] and s; None when too few points."""
        j = self.index[obs.j]
        z = self.views[j].depth[obs.reg_idx_j]
        ok = z > 0
        if int(ok.sum()) < 10:
            return None
        src = self._backproject(j, obs.reg_idx_j[ok]).double().cpu().numpy()
        dst = obs.reg_pts_i[ok].double().cpu().numpy()
        w = obs.reg_weight[ok].double().cpu().numpy()
        try:
            sim = umeyama(src, dst, with_scale=True, weights=w)
        except ValueError:
            return None
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = sim.R, sim.t
        return T, float(sim.scale)

    def initialize_chain(self, free: Sequence[int], fixed: Sequence[int]) -> list[int]:
        """Parents (MST) and, for ``free`` views, poses re-initialised along the chain from
        the pairs' relative poses. Returns the parent list over all views (-1 roots)."""
        n = len(self.keys)
        edges = self.edge_strength()
        roots = list(fixed) if fixed else [free[0]]
        parent = _mst(n, edges, roots)
        order = self._topological(parent)
        free_set = set(free)
        for v in order:
            p = parent[v]
            if p < 0 or v not in free_set:
                continue
            rel = self._relative(p, v)
            if rel is None:
                continue
            T_p_v, d_v = rel
            self.T[v] = self.T[p] @ T_p_v
            self.delta[v] = torch.full_like(self.delta[v], d_v)
        return parent

    def _relative(self, p: int, v: int) -> tuple[np.ndarray, float] | None:
        """T_p_v (metric, given p's log-depth correction) and v's log-depth correction.

        With true depths ``exp(d) x canonical``: from pair (p, v), ``X_p = s R X_v + t`` in
        p's canonical units gives ``d_v = d_p + log s`` and ``T_p_v = [R | exp(d_p) t]``;
        from pair (v, p), ``X_v = s R X_p + t`` gives ``d_v = d_p - log s`` and
        ``T_v_p = [R | exp(d_v) t]``.
        """
        kp, kv = self.keys[p], self.keys[v]
        dp = float(self.delta[p].mean())
        obs = self.pairs.get((kp, kv))
        rel = self.relative_from_pair(obs) if obs is not None else None
        if rel is not None:
            T, s = rel
            T[:3, 3] *= math.exp(dp)
            return T, dp + math.log(s)
        obs = self.pairs.get((kv, kp))
        rel = self.relative_from_pair(obs) if obs is not None else None
        if rel is not None:
            T, s = rel
            dv = dp - math.log(s)
            T[:3, 3] *= math.exp(dv)
            return np.linalg.inv(T), dv
        return None

    @staticmethod
    def _topological(parent: list[int]) -> list[int]:
        depth = [0] * len(parent)
        for v in range(len(parent)):
            d, u = 0, v
            while parent[u] >= 0:
                u = parent[u]
                d += 1
            depth[v] = d
        return sorted(range(len(parent)), key=lambda v: depth[v])

    # -- optimisation

    def optimize(self, free_keys: Sequence | None = None, *, reinit: bool = False,
                 center_scale: bool | None = None) -> AlignmentResult:
        """Optimise the ``free_keys`` views (all when None) with the others fixed.

        Only pairs touching a free view take part. ``reinit`` re-initialises the free poses
        along the MST chain from the pair relative poses first.
        """
        t0 = time.perf_counter()
        cfg = self.config
        n = len(self.keys)
        if n == 0:
            raise ValueError("the alignment problem has no views")
        free = list(range(n)) if free_keys is None else [self.index[k] for k in free_keys]
        free_set = set(free)
        pairs = [o for o in self.pairs.values()
                 if self.index[o.i] in free_set or self.index[o.j] in free_set]
        involved = sorted(free_set | {self.index[o.i] for o in pairs} | {self.index[o.j] for o in pairs})
        fixed = [v for v in involved if v not in free_set]
        if center_scale is None:
            center_scale = not fixed
        if not fixed:  # gauge: the best-connected free view is the fixed root
            strength = self.edge_strength()
            deg = np.zeros(n)
            for (a, b), s in strength.items():
                deg[a] += s
                deg[b] += s
            root = max(free, key=lambda v: deg[v])
            fixed = [root]
            free = [v for v in free if v != root]
            free_set = set(free)
        if reinit:
            parent = self.initialize_chain(free, fixed)
        else:
            parent = _mst(n, self.edge_strength(), fixed)
        t_init = time.perf_counter()
        # depths optimised: the free views', plus, when the scale gauge is the mean log-depth
        # correction (center_scale), the fixed views' too (only their poses stay fixed)
        depth_free = set(free) | (set(fixed) if center_scale else set())
        slot = {v: s for s, v in enumerate(involved)}
        self._aoff, off = {}, 0
        for v in involved:
            self._aoff[v] = off
            off += len(self.delta[v])
        batch = self._gather(pairs, slot) if pairs else (None, None)
        loss1, it1 = self._run_stage(1, involved, free, parent, pairs, center_scale, depth_free,
                                     batch)
        t1 = time.perf_counter()
        loss2, it2 = self._run_stage(2, involved, free, parent, pairs, center_scale, depth_free,
                                     batch)
        t2 = time.perf_counter()
        pair_w, view_w = self._weights(pairs)
        K = np.stack([self.K_net(v) for v in range(n)])
        return AlignmentResult(
            keys=list(self.keys), T_world_cam=np.stack(self.T), K_net=K, pair_weight=pair_w,
            view_weight=view_w, fallback_pairs=[(o.i, o.j) for o in pairs if o.fallback],
            loss={"stage1": loss1, "stage2": loss2}, iterations={"stage1": it1, "stage2": it2},
            timings_ms={"init": 1e3 * (t_init - t0), "stage1": 1e3 * (t1 - t_init),
                        "stage2": 1e3 * (t2 - t1), "total": 1e3 * (t2 - t0)})

    def _anchor_of(self, v: int, idx: torch.Tensor) -> torch.Tensor:
        view, s = self.views[v], self.config.anchor_step
        wa = math.ceil(view.w / s)
        return torch.div(idx // view.w, s, rounding_mode="floor") * wa + torch.div(
            idx % view.w, s, rounding_mode="floor")

    def _gather(self, pairs: list[PairObservation], slot: dict[int, int]):
        """Residual arrays over ``pairs``, built once per ``optimize`` and shared by both
        stages, padded per pair: ``m`` holds the consistent matches of the pairs that have
        enough of them, ``r`` the regression grid of the fallback pairs, each as (P, L)
        arrays (P pairs, L the longest pair; padding has weight 0, depth 1, ray 0, anchor
        0), with ``pid`` (P,) the pairs' indices in ``pairs`` and ``vi`` / ``vj`` (P,) their
        view slots. One layout per pair lets a batched matmul move a pair's points at once."""
        from torch.nn.utils.rnn import pad_sequence

        dt = self.dtype
        cols = {k: [] for k in ("ri", "rj", "ai", "aj", "zi", "zj", "w", "pid")}
        reg = {k: [] for k in ("pts", "rj", "aj", "zj", "w", "pid")}
        for pid, o in enumerate(pairs):
            a, b = self.index[o.i], self.index[o.j]
            if not o.fallback:
                zi = self.views[a].depth[o.idx_i]
                zj = self.views[b].depth[o.idx_j]
                ok = (zi > 0) & (zj > 0)
                if not bool(ok.any()):
                    continue
                ii, jj = o.idx_i[ok], o.idx_j[ok]
                cols["ri"].append(self._ray(a, ii))
                cols["rj"].append(self._ray(b, jj))
                cols["ai"].append(self._anchor_of(a, ii) + self._aoff[a])
                cols["aj"].append(self._anchor_of(b, jj) + self._aoff[b])
                cols["zi"].append(zi[ok])
                cols["zj"].append(zj[ok])
                cols["w"].append(o.weight[ok].to(dt))
                cols["pid"].append(pid)
            elif self.config.fallback_weight > 0 and len(o.reg_idx_j):
                zj = self.views[b].depth[o.reg_idx_j]
                ok = zj > 0
                if not bool(ok.any()):
                    continue
                jj = o.reg_idx_j[ok]
                reg["pts"].append(o.reg_pts_i[ok].to(dt))
                reg["rj"].append(self._ray(b, jj))
                reg["aj"].append(self._anchor_of(b, jj) + self._aoff[b])
                reg["zj"].append(zj[ok])
                reg["w"].append(self.config.fallback_weight * o.reg_weight[ok].to(dt))
                reg["pid"].append(pid)
        pad_value = {"zi": 1.0, "zj": 1.0, "pts": 1.0}

        def padded(d):
            if not d["pid"]:
                return None
            out = {k: pad_sequence(v, batch_first=True, padding_value=pad_value.get(k, 0.0))
                   for k, v in d.items() if k != "pid"}
            out["pid"] = torch.tensor(d["pid"], dtype=torch.long, device=self.device)
            out["vi"] = torch.tensor([slot[self.index[pairs[p].i]] for p in d["pid"]],
                                     dtype=torch.long, device=self.device)
            out["vj"] = torch.tensor([slot[self.index[pairs[p].j]] for p in d["pid"]],
                                     dtype=torch.long, device=self.device)
            out["valid"] = out["w"] > 0
            return out

        return padded(cols), padded(reg)

    def _pix(self, v: int, idx: torch.Tensor) -> torch.Tensor:
        w = self.views[v].w
        return torch.stack([(idx % w), torch.div(idx, w, rounding_mode="floor")], -1).to(self.dtype)

    def _ray(self, v: int, idx: torch.Tensor) -> torch.Tensor:
        """(M, 2) pixel offsets from the principal point (x - cx, y - cy)."""
        K = self.K_net(v)
        return self._pix(v, idx) - torch.tensor([K[0, 2], K[1, 2]], dtype=self.dtype, device=self.device)

    def _run_stage(self, stage: int, involved: list[int], free: list[int], parent: list[int],
                   pairs: list[PairObservation], center_scale: bool, depth_free: set,
                   batch) -> tuple[float, int]:
        """One Adam stage; returns (final loss, iterations run)."""
        cfg = self.config
        iters = cfg.stage1_iters if stage == 1 else cfg.stage2_iters
        lr = cfg.stage1_lr if stage == 1 else cfg.stage2_lr
        dev, dt = self.device, self.dtype
        if not free or not pairs:
            return 0.0, 0
        m, r = batch
        if m is None and r is None:
            return 0.0, 0
        slot = {v: s for s, v in enumerate(involved)}
        V = len(involved)
        free_set = set(free)
        T0 = torch.tensor(np.stack([self.T[v] for v in involved]), dtype=dt, device=dev)
        # kinematic chain: T_v = T_parent @ exp(xi_v) @ (T0_parent^-1 T0_v) for free views
        # with an involved parent; T0_v @ exp(xi_v) for free chain roots; T0_v for fixed ones
        par = [slot.get(parent[v], -1) if parent[v] >= 0 else -1 for v in involved]
        is_free_l = [v in free_set for v in involved]
        q = np.array([par[s] if (is_free_l[s] and par[s] >= 0) else V for s in range(V)]
                     + [V], dtype=np.int64)   # effective parent; V = identity sentinel
        chained = torch.tensor(q[:V] < V, device=dev)
        qs = torch.as_tensor(np.maximum(np.minimum(q[:V], V - 1), 0), device=dev)
        # (the exact inverse: stored poses are rigid only to float32 precision, and the
        # chain must give back T0 exactly at zero correction, whatever their drift)
        rel0 = torch.linalg.inv(T0[qs]) @ T0
        # pointer doubling: ceil(log2(chain depth)) batched products instead of one per level
        jumps = []
        while np.any(q != V):
            jumps.append(torch.as_tensor(q, device=dev))
            q = q[q]
        free_slots = torch.tensor([s for s in range(V) if is_free_l[s]], dtype=torch.long, device=dev)
        delta0 = torch.cat([self.delta[v] for v in involved])
        dmask = torch.cat([torch.full_like(self.delta[v], float(v in depth_free)) for v in involved])
        f0 = torch.tensor([self.focal[v] for v in involved], dtype=dt, device=dev)
        fmask = torch.tensor([float(v in free_set and self.K_known[v] is None
                                    and cfg.optimize_focal and stage == 2) for v in involved],
                             dtype=dt, device=dev)
        use_focal = float(fmask.sum()) > 0
        # every unknown in ONE leaf tensor (one Adam update per iteration, same arithmetic):
        # rotation and translation corrections of the free views, log-depth corrections of
        # the anchors, log-focal corrections
        nf, nd_all = len(free_slots), len(delta0)
        x = torch.zeros(6 * nf + nd_all + V, dtype=dt, device=dev, requires_grad=True)
        opt = torch.optim.Adam([x], lr=lr)

        def unknowns():
            return (x[:3 * nf].view(nf, 3), x[3 * nf:6 * nf].view(nf, 3),
                    x[6 * nf:6 * nf + nd_all], x[6 * nf + nd_all:])
        slot_of_free = torch.full((V,), -1, dtype=torch.long, device=dev)
        slot_of_free[free_slots] = torch.arange(len(free_slots), device=dev)
        is_free = slot_of_free >= 0
        eye4 = torch.eye(4, dtype=dt, device=dev)
        ident = eye4[None]
        nd = float(dmask.sum().clamp_min(1))

        def poses() -> torch.Tensor:
            """(V, 4, 4) camera -> world of the involved views."""
            rv, tv, _, _ = unknowns()
            E = torch.cat([torch.cat([_rodrigues(rv), tv[:, :, None]], 2),
                           eye4[3:].expand(len(free_slots), 1, 4)], 1)
            xi = torch.where(is_free[:, None, None], E[slot_of_free.clamp_min(0)], eye4)
            L = torch.where(chained[:, None, None], xi @ rel0, T0 @ xi)
            M = torch.cat([L, ident])
            for P in jumps:
                M = M[P] @ M
            return M[:V]

        def depth_corr() -> torch.Tensor:
            dd = unknowns()[2]
            if center_scale:  # the mean correction over the optimised depths stays unchanged
                return delta0 + (dd - (dd * dmask).sum() / nd) * dmask
            return delta0 + dd * dmask

        def transforms(T: torch.Tensor, x: dict) -> tuple[torch.Tensor, torch.Tensor]:
            """(P, 3, 3), (P, 1, 3): rotation and translation from j's frame to i's, per pair."""
            Rt_i = T[x["vi"], :3, :3].transpose(1, 2)
            R_ij = Rt_i @ T[x["vj"], :3, :3]
            t_ij = (Rt_i @ (T[x["vj"], :3, 3:] - T[x["vi"], :3, 3:])).transpose(1, 2)
            return R_ij, t_ij

        def points(x: dict, z: str, a: str, ray: str, v: str, d: torch.Tensor, f: torch.Tensor):
            """(P, L, 3) points of the pixels ``x[ray]`` at depth ``x[z] * exp(d[x[a]])``."""
            zz = (x[z] * torch.exp(d[x[a]]))[..., None]
            fv = f[x[v]][:, None, None]
            return torch.cat([x[ray] / fv, torch.ones_like(x[z])[..., None]], -1) * zz

        def residuals(T: torch.Tensor, d: torch.Tensor, f: torch.Tensor):
            """[(weights, robust losses, squared residuals / scale^2)] for matches, regression;
            each (P, L)."""
            out = []
            if m is not None:
                R_ij, t_ij = transforms(T, m)
                Xi = points(m, "zi", "ai", "ri", "vi", d, f)
                Xj = points(m, "zj", "aj", "rj", "vj", d, f)
                ci = Xj @ R_ij.transpose(1, 2) + t_ij                 # j's points in i's frame
                if stage == 1:
                    zr = 0.5 * (Xi[..., 2] + Xj[..., 2]).clamp_min(1e-6)
                    r2 = ((Xi - ci) ** 2).sum(-1) / zr ** 2
                    out.append((m["w"], _cauchy(r2, cfg.loss3d_scale), r2 / cfg.loss3d_scale ** 2))
                else:
                    # j's point into i's image and i's point into j's image
                    cj = (Xi - t_ij) @ R_ij                             # i's points in j's frame
                    pi = f[m["vi"]][:, None, None] * ci[..., :2] / ci[..., 2:].clamp_min(1e-6)
                    pj = f[m["vj"]][:, None, None] * cj[..., :2] / cj[..., 2:].clamp_min(1e-6)
                    r2 = 0.5 * (((pi - m["ri"]) ** 2).sum(-1) + ((pj - m["rj"]) ** 2).sum(-1))
                    r2 = torch.where((ci[..., 2] > 0) & (cj[..., 2] > 0), r2, torch.full_like(r2, 1e4))
                    out.append((m["w"], _cauchy(r2, cfg.loss2d_scale_px),
                                r2 / cfg.loss2d_scale_px ** 2))
            if r is not None:
                R_ij, t_ij = transforms(T, r)
                Xj = points(r, "zj", "aj", "rj", "vj", d, f)
                ci = Xj @ R_ij.transpose(1, 2) + t_ij
                r2 = ((ci - r["pts"]) ** 2).sum(-1) / r["pts"][..., 2].clamp_min(1e-6) ** 2
                out.append((r["w"], _cauchy(r2, cfg.loss3d_scale), r2 / cfg.loss3d_scale ** 2))
            return out

        def focal() -> torch.Tensor:
            return f0 * torch.exp(unknowns()[3] * fmask) if use_focal else f0

        wsum = sum(float(x["w"].sum()) for x in (m, r) if x is not None)
        win = cfg.converge_window
        hist: list[float] = []
        last, it, converged = 0.0, 0, False
        while it < iters:
            for g in opt.param_groups:
                g["lr"] = lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * it / max(iters, 1))))
            opt.zero_grad(set_to_none=True)
            loss = sum((w * l).sum() for w, l, _ in residuals(poses(), depth_corr(), focal())) / wsum
            loss.backward()
            opt.step()
            last = float(loss.detach())
            hist.append(last)
            it += 1
            # converged: the mean loss of the last window improved on the window before by
            # less than converge_rel_tol -> finish with the schedule's last window (low rate)
            if (cfg.converge_rel_tol > 0 and not converged and it % win == 0
                    and 2 * win <= it < iters - win):
                prev, cur = sum(hist[-2 * win:-win]) / win, sum(hist[-win:]) / win
                if prev - cur < cfg.converge_rel_tol * max(abs(cur), 1e-12):
                    converged = True
                    it = iters - win  # on to the schedule's tail (learning rate near 1 %)
        ran = len(hist)
        with torch.no_grad():
            Tt = poses()
            T = Tt.double().cpu().numpy()
            d = depth_corr()
            ft = focal()
            f = ft.double().cpu().numpy()
            res = residuals(Tt, d, ft)
        for s, v in enumerate(involved):
            if v in depth_free:
                self.delta[v] = d[self._aoff[v]:self._aoff[v] + len(self.delta[v])].detach().clone()
            if v in free_set:
                self.T[v] = T[s]
                self.focal[v] = float(f[s])
                if stage == 2:
                    self.optimized.add(v)
        # robust inlier fraction of each pair after this stage (for the weights)
        frac = torch.zeros(len(pairs), dtype=dt, device=dev)
        for (_, _, rr), x in zip(res, [x for x in (m, r) if x is not None]):
            ok = x["valid"]
            frac[x["pid"]] = ((rr <= 1.0) & ok).sum(1).to(dt) / ok.sum(1).clamp_min(1).to(dt)
        self._inlier_frac = {(o.i, o.j): float(frac[k]) for k, o in enumerate(pairs)}
        return last, ran

    def _points(self, ray: torch.Tensor, z: torch.Tensor, d: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        zz = z * torch.exp(d)
        return torch.cat([ray * (zz / f)[:, None], zz[:, None]], -1)

    def _weights(self, pairs: list[PairObservation]) -> tuple[dict, dict]:
        frac = getattr(self, "_inlier_frac", {})
        pw = {(o.i, o.j): o.strength * frac.get((o.i, o.j), 0.0) for o in pairs}
        vw: dict = {}
        for (i, j), w in pw.items():
            vw[i] = max(vw.get(i, 0.0), w)
            vw[j] = max(vw.get(j, 0.0), w)
        top = max(vw.values(), default=0.0)
        return pw, {k: (w / top if top > 0 else 0.0) for k, w in vw.items()}

    # -- metric scale

    def pair_log_scales(self, min_points: int = 10) -> dict[tuple, float]:
        """{(i, j): log s} for every pair that is not a fallback: ``s`` is the median ratio,
        over the pair's regression grid, of the distance from camera i of view j's points as
        the pair predicts them to the same distance in the reconstruction (j's optimised
        depth, moved into i's frame by the current poses). ``s > 1``: the pair says the scene
        is larger than the reconstruction. Distances, not a similarity fit over the points'
        spread: a focal error (the pointmap's or the estimated one) changes the lateral
        spread of the points to first order, their distance only to second order."""
        obs = [o for o in self.pairs.values() if not o.fallback and len(o.reg_idx_j) >= min_points]
        if not obs:
            return {}
        dev, f64 = self.device, torch.float64
        vi = [self.index[o.i] for o in obs]
        vj = [self.index[o.j] for o in obs]
        # every view j's optimised depth in one flat tensor (offsets per view)
        off, maps, n = {}, [], 0
        for v in dict.fromkeys(vj):
            off[v] = n
            maps.append(self.depth_map(v))
            n += len(maps[-1])
        D = torch.cat(maps).to(f64)
        lens = torch.tensor([len(o.reg_idx_j) for o in obs], device=dev)
        P = len(obs)
        pid = torch.repeat_interleave(torch.arange(P, device=dev), lens)
        pix = torch.cat([o.reg_idx_j for o in obs])
        z = D[pix + torch.tensor([off[v] for v in vj], device=dev)[pid]]
        Kj = np.stack([self.K_net(v) for v in vj])                       # (P, 3, 3)
        w = torch.tensor([self.views[v].w for v in vj], device=dev)[pid]
        f = torch.as_tensor(Kj[:, 0, 0], dtype=f64, device=dev)[pid]
        cx = torch.as_tensor(Kj[:, 0, 2], dtype=f64, device=dev)[pid]
        cy = torch.as_tensor(Kj[:, 1, 2], dtype=f64, device=dev)[pid]
        x = (pix % w).to(f64)
        y = torch.div(pix, w, rounding_mode="floor").to(f64)
        Xj = torch.stack([(x - cx) / f * z, (y - cy) / f * z, z], 1)
        Ti = np.stack([self.T[v] for v in vi])
        Tj = np.stack([self.T[v] for v in vj])
        T_ij = torch.as_tensor(np.linalg.inv(Ti) @ Tj, dtype=f64, device=dev)   # (P, 4, 4)
        Xi = (T_ij[pid, :3, :3] @ Xj[:, :, None])[:, :, 0] + T_ij[pid, :3, 3]
        d_rec = Xi.norm(dim=1)
        d_pair = torch.cat([o.reg_pts_i for o in obs]).to(f64).norm(dim=1)
        good = (z > 0) & (d_rec > 1e-9) & (d_pair > 1e-9)
        r = torch.where(good, torch.log(d_pair.clamp_min(1e-12) / d_rec.clamp_min(1e-12)),
                        torch.full_like(d_rec, float("nan")))
        # per-pair median over a (P, max length) NaN-padded table
        start = torch.cumsum(lens, 0) - lens
        pos = torch.arange(len(pid), device=dev) - start[pid]
        pad = torch.full((P, int(lens.max())), float("nan"), dtype=f64, device=dev)
        pad[pid, pos] = r
        med = torch.nanmedian(pad, dim=1).values
        count = torch.zeros(P, dtype=torch.long, device=dev).index_add_(0, pid, good.long())
        med, count = med.cpu().numpy(), count.cpu().numpy()
        return {(o.i, o.j): float(med[k]) for k, o in enumerate(obs)
                if count[k] >= min_points and np.isfinite(med[k])}

    def metric_log_scale(self, min_pairs: int = 3, extra: tuple[float, int] = (0.0, 0)
                         ) -> float | None:
        """Robust mean over pairs of ``pair_log_scales`` (pairs farther than 3 scaled MADs
        from the median left out; pairs the last pass found inconsistent too): the log of
        the factor that makes the reconstruction metric on average. ``extra``: (sum, count)
        of more such log ratios measured elsewhere (a tracker's pairs against the same
        map), averaged in with the same weight per pair. None with fewer than
        ``min_pairs`` pairs in all."""
        frac = getattr(self, "_inlier_frac", {})
        logs = [v for k, v in self.pair_log_scales().items() if frac.get(k, 1.0) >= 0.3]
        e_sum, e_n = float(extra[0]), int(extra[1])
        if len(logs) + e_n < min_pairs or not logs and e_n <= 0:
            return None
        total, count = e_sum, e_n
        if logs:
            x = np.asarray(logs)
            med = float(np.median(x))
            mad = 1.4826 * float(np.median(np.abs(x - med)))
            keep = np.abs(x - med) <= max(3.0 * mad, 1e-3)
            total += float(np.sum(x[keep]))
            count += int(keep.sum())
        return total / count

    def rescale(self, c: float, about: int = 0) -> None:
        """Multiply every length by ``c`` about view ``about``'s centre: positions move
        away from it, every depth (log-depth correction) grows by ``c``."""
        if not (c > 0 and math.isfinite(c)):
            raise ValueError(f"rescale factor must be finite and > 0, got {c}")
        if not self.T:
            return
        p0 = self.T[about][:3, 3].copy()
        for v in range(len(self.T)):
            self.T[v] = self.T[v].copy()
            self.T[v][:3, 3] = p0 + c * (self.T[v][:3, 3] - p0)
            self.delta[v] = self.delta[v] + math.log(c)

    def metric_rescale(self, tol: float = 0.0, min_pairs: int = 3,
                       extra: tuple[float, int] = (0.0, 0)) -> float:
        """Set the scale to the pairs' robust mean (``metric_log_scale``) when it differs by
        more than ``tol`` (relative); returns the factor applied (1.0: none)."""
        m = self.metric_log_scale(min_pairs, extra)
        if m is None or abs(m) <= tol:
            return 1.0
        c = math.exp(m)
        self.rescale(c)
        return c

    # -- outputs

    def depth_map(self, v: int) -> torch.Tensor:
        """(h*w,) optimised depth of view ``v`` (canonical x anchor corrections)."""
        idx = torch.arange(self.views[v].h * self.views[v].w, device=self.device)
        return self.views[v].depth * torch.exp(self.delta[v][self._anchor_of(v, idx)])

    def world_points(self, v: int, stride: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """World points (N, 3), their confidences (N,) and pixel indices (N,) of view ``v``
        on a ``stride`` grid (pixels without depth left out)."""
        view = self.views[v]
        ys, xs = torch.meshgrid(torch.arange(0, view.h, stride, device=self.device),
                                torch.arange(0, view.w, stride, device=self.device), indexing="ij")
        idx = (xs + view.w * ys).reshape(-1)
        z = view.depth[idx]
        idx = idx[z > 0]
        d = self.delta[v][self._anchor_of(v, idx)]
        K = self.K_net(v)
        ray = self._ray(v, idx)
        X = self._points(ray, view.depth[idx], d, torch.full_like(d, K[0, 0]))
        T = torch.as_tensor(self.T[v], dtype=self.dtype, device=self.device)
        return X @ T[:3, :3].T + T[:3, 3], view.conf[idx], idx


def align_views(engine: PairEngine, views: Sequence[EncodedView], pairs: Sequence[tuple[int, int]],
                config: AlignmentConfig = AlignmentConfig(), *,
                K: Sequence[np.ndarray | None] | None = None,
                batch_size: int = 8) -> tuple[AlignmentResult, AlignmentProblem]:
    """Batch sparse global alignment of ``views`` over the unordered ``pairs``.

    Args:
        engine: decodes the pairs (simulator or network).
        views: encoded views; keys of the result are their indices.
        pairs: unordered (i, j) view-index pairs (``make_pairs``).
        K: optional per-view (3, 3) intrinsics at *original* resolution (None = unknown).

    Returns:
        (``AlignmentResult``, the problem, which holds canonical depths for point clouds).
    """
    if len(views) < 2:
        raise ValueError(f"need at least 2 views to align, got {len(views)}")
    for a, b in pairs:
        if not (0 <= a < len(views) and 0 <= b < len(views)) or a == b:
            raise ValueError(f"pair ({a}, {b}) does not name two different views of {len(views)}")
    dev = _engine_device(engine)
    prob = AlignmentProblem(config, dev)
    for k, v in enumerate(views):
        Kn = None if K is None or K[k] is None else v.transform.intrinsics_to_net(K[k])
        prob.add_view(k, v.transform, Kn)
    ordered = [(a, b) for a, b in pairs] + ([(b, a) for a, b in pairs] if config.symmetric else [])
    t0 = time.perf_counter()
    for s in range(0, len(ordered), batch_size):
        chunk = ordered[s:s + batch_size]
        preds = engine.decode_batch([(views[a], views[b]) for a, b in chunk])
        for (a, b), pred in zip(chunk, preds):
            prob.add_pair(pred, a, b)
        del preds
    t_dec = time.perf_counter() - t0
    missing = [k for k in range(len(views)) if prob.views[k].n == 0]
    if missing:
        raise ValueError(f"views {missing} are never the first view of a pair; use a symmetric "
                         "scene graph (AlignmentConfig.symmetric=True)")
    res = prob.optimize(reinit=True)
    if config.metric_scale:
        c = prob.metric_rescale()
        res.scale_correction = c
        res.T_world_cam = np.stack(prob.T)
    res.timings_ms["decode"] = 1e3 * t_dec
    return res, prob


def _engine_device(engine: Any) -> torch.device:
    dev = getattr(engine, "device", None)
    return torch.device(dev) if dev is not None else torch.device("cpu")
