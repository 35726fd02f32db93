"""Fast reciprocal matching (FRM) of dense descriptor maps, and a dense mutual-NN baseline.

FRM (MASt3R, Leroy et al. 2024, Sec. 3.3) starts from seeds in image 1 (a regular grid every
``subsample`` pixels, or given pixels), maps each to its nearest neighbour (NN) in image 2 and
back, keeps the seeds whose cycle closes (converged) and iterates the rest from the point the
cycle landed on, for at most ``max_iterations`` rounds.

Definitions used here (they reproduce the reference matcher exactly on the shared fixtures):

- NN in descriptor space is the argmax of the dot product (descriptors are unit-norm); on an
  exact tie the lowest linear pixel index wins.
- Grid seeds are at ``x, y = subsample // 2 + k * subsample``; linear index ``x + W * y``.
- A seed converges when ``NN_1(NN_2(p1)) == p1``; it contributes ``(p1, NN_2(p1))`` where
  ``p1`` is its *current* image-1 point (not the original seed pixel). Seeds still moving after
  ``max_iterations`` are discarded.
- Results are de-duplicated and sorted by image-1 linear index, then image-2 index.

Every FRM match is therefore a mutual nearest neighbour. Nearest neighbours are computed in
blocks (``block_elems`` scores at a time), so memory stays bounded at any image size, on
whatever device the descriptors live on; previously computed NNs are cached so no pixel is
ever searched twice. ``faiss`` can be used as an alternative CPU backend.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping

import numpy as np
import torch

from mast3r_ros.config import config_from_dict

from mast3r_ros.model.types import ImageTransform, PairPrediction

logger = logging.getLogger(__name__)

__all__ = [
    "NNBackend",
    "FRMConfig",
    "RawMatches",
    "Matches",
    "nearest_neighbors",
    "grid_seeds",
    "fast_reciprocal_nn",
    "mutual_nn",
    "border_mask",
    "match_descriptors",
    "match_prediction",
]


class NNBackend(Enum):
    """How nearest neighbours are searched."""

    TORCH = "torch"  # blocked matmul + argmax on the descriptors' device (exact, first index wins ties)
    FAISS = "faiss"  # faiss IndexFlatIP on CPU (exact up to float rounding; tie order is faiss's)


@dataclass(frozen=True)
class FRMConfig:
    """Fast reciprocal matching settings; defaults are the reference demo's."""

    subsample: int = 8  # grid step of the seeds in image 1, pixels
    max_iterations: int = 10  # seeds not converged after this many NN round trips are dropped
    border: int = 3  # drop matches closer than this to any image edge (pixels); 0 keeps all
    min_desc_conf: float = 0.0  # drop matches whose desc_conf (either view) is below this
    min_conf: float = 0.0  # drop matches whose pointmap conf (either view) is below this
    backend: NNBackend = NNBackend.TORCH  # nearest-neighbour search backend
    block_elems: int = 2**25  # scores held at once by the blocked NN search (memory bound)

    def __post_init__(self) -> None:
        if isinstance(self.backend, str):  # allow "torch"/"faiss" from YAML/CLI
            object.__setattr__(self, "backend", NNBackend(self.backend))
        if self.subsample < 1:
            raise ValueError(f"subsample must be >= 1, got {self.subsample}")
        if self.max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {self.max_iterations}")
        if self.border < 0:
            raise ValueError(f"border must be >= 0 pixels, got {self.border}")
        if self.block_elems < 1:
            raise ValueError(f"block_elems must be >= 1, got {self.block_elems}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FRMConfig":
        """Build from a dict, rejecting unknown keys (and listing the valid ones)."""
        return config_from_dict(cls, data)


@dataclass
class RawMatches:
    """Matches as linear pixel indices of two maps (before any filter).

    Attributes:
        idx1: (N,) int64, linear index ``x + W1 * y`` in image 1.
        idx2: (N,) int64, linear index ``x + W2 * y`` in image 2.
        n_iterations: NN round trips performed.
        n_unconverged: seeds dropped because they had not converged after the last round.
    """

    idx1: torch.Tensor
    idx2: torch.Tensor
    n_iterations: int = 0
    n_unconverged: int = 0


@dataclass
class Matches:
    """Correspondences between two images.

    Attributes:
        xy1_net: (N, 2) int64, (x, y) in image 1's network-resolution map.
        xy2_net: (N, 2) int64, (x, y) in image 2's network-resolution map.
        xy1: (N, 2) float64, (x, y) in image 1's original pixels.
        xy2: (N, 2) float64, (x, y) in image 2's original pixels.
        n_iterations: FRM round trips performed (0 for mutual NN).
        n_unconverged: FRM seeds dropped as not converged.
    """

    xy1_net: np.ndarray
    xy2_net: np.ndarray
    xy1: np.ndarray
    xy2: np.ndarray
    n_iterations: int = 0
    n_unconverged: int = 0

    def __len__(self) -> int:
        return int(self.xy1_net.shape[0])


# ----------------------------------------------------------------------------- NN search


def _check_desc_map(name: str, desc: torch.Tensor) -> None:
    if not isinstance(desc, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(desc).__name__}")
    if desc.ndim != 3 or desc.shape[0] < 1 or desc.shape[1] < 1 or desc.shape[2] < 1:
        raise ValueError(f"{name} must have shape (H, W, D), got {tuple(desc.shape)}")
    if not desc.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {desc.dtype}")


def check_desc_values(name: str, desc: torch.Tensor) -> None:
    """Refuse descriptor maps that cannot be matched: NaN / inf values, or all zero (no
    information), instead of silently returning 0 (or arbitrary) matches.

    Raises:
        NonFiniteError: non-finite values (with their count). InputError: an all-zero map.
    """
    from mast3r_ros.errors import InputError, NonFiniteError

    _check_desc_map(name, desc)
    n_bad = int((~torch.isfinite(desc)).sum())
    if n_bad:
        what = "entirely" if n_bad == desc.numel() else f"{n_bad} of {desc.numel()} values"
        raise NonFiniteError(f"{name} {tuple(desc.shape)} is {what} NaN/inf; descriptors must be "
                             "finite (is the network output or the .npz corrupt?)", argument=name)
    if desc.numel() and float(desc.abs().amax()) == 0.0:
        raise InputError(f"{name} {tuple(desc.shape)} is all zero: there is nothing to match; "
                         "expected unit-norm descriptors", argument=name)


_CPU_BLOCK_ELEMS = 2**22  # score-buffer size that suits the CPU caches (see _nn_torch)


def _nn_torch(query: torch.Tensor, base_t: torch.Tensor, block_elems: int) -> torch.Tensor:
    """argmax_j <query_i, base_j> with ``base_t`` = base^T (D, M) contiguous (the fastest
    right-hand side for the blocked mm), blocked over queries so that at most ``block_elems``
    scores live at once."""
    n, m = query.shape[0], base_t.shape[1]
    out = torch.empty(n, dtype=torch.int64, device=query.device)
    if n == 0:
        return out
    rows = max(1, min(n, block_elems // max(m, 1)))
    if query.device.type == "cpu":
        # Measured on a 2-core Xeon at M = 512*384 (min of 4 interleaved runs, 3072 queries):
        # blocks of 16 queries (12 MB of scores) 258 ms, 42: 297 ms, 256: ~500 ms; blocking
        # over targets instead (all queries x 128..1024 targets, running max) 268-378 ms. The
        # argmax pass is memory bound, and < 8 rows make the matmul inefficient.
        rows = max(1, min(rows, max(8, _CPU_BLOCK_ELEMS // max(m, 1))))
    buf = torch.empty(rows, m, dtype=query.dtype, device=query.device)  # (rows, M) scores
    on_cpu = query.device.type == "cpu"
    for s in range(0, n, rows):
        e = min(n, s + rows)
        scores = buf[: e - s]
        torch.mm(query[s:e], base_t, out=scores)
        if on_cpu:
            # numpy's argmax is several times faster than torch's on CPU; both return the
            # first maximal index.
            out[s:e] = torch.from_numpy(scores.numpy().argmax(axis=1))
        else:
            out[s:e] = scores.argmax(dim=1)
    return out


def _nn_faiss(query: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise RuntimeError("backend=faiss needs faiss: pip install faiss-cpu") from exc
    # Without this faiss uses its slow non-BLAS path for < 128000 queries (measured here).
    faiss.cvar.distance_compute_blas_threshold = 20
    b = np.ascontiguousarray(base.detach().cpu().numpy(), dtype=np.float32)
    q = np.ascontiguousarray(query.detach().cpu().numpy(), dtype=np.float32)
    index = faiss.IndexFlatIP(b.shape[1])
    index.add(b)
    _, idx = index.search(q, 1)
    return torch.from_numpy(idx[:, 0].astype(np.int64)).to(query.device)


def nearest_neighbors(
    query: torch.Tensor,
    base: torch.Tensor,
    *,
    backend: NNBackend = NNBackend.TORCH,
    block_elems: int = 2**25,
) -> torch.Tensor:
    """Index of the maximum dot product of each query in ``base``.

    Args:
        query: (N, D) descriptors.
        base: (M, D) descriptors, same device and dtype.
        backend: search backend.
        block_elems: at most this many scores are held at once (torch backend).

    Returns:
        (N,) int64 indices into ``base`` on ``query``'s device; the first index wins ties
        (torch backend).
    """
    if query.ndim != 2 or base.ndim != 2 or query.shape[1] != base.shape[1]:
        raise ValueError(
            f"query and base must be (N, D) and (M, D) with the same D, got "
            f"{tuple(query.shape)} and {tuple(base.shape)}"
        )
    if base.shape[0] == 0:
        raise ValueError("base is empty: nothing to match against")
    if backend is NNBackend.FAISS:
        return _nn_faiss(query, base)
    return _nn_torch(query, base.t().contiguous(), block_elems)


class _CachedNN:
    """NN lookups from one flattened map into another, each pixel searched at most once."""

    def __init__(self, src: torch.Tensor, dst: torch.Tensor, backend: NNBackend, block_elems: int):
        self.src, self.dst = src, dst  # (Ns, D), (Nd, D)
        self.backend, self.block_elems = backend, block_elems
        self.cache = torch.full((src.shape[0],), -1, dtype=torch.int64, device=src.device)
        self.dst_t = dst.t().contiguous() if backend is NNBackend.TORCH else None  # (D, Nd), once

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        todo = torch.unique(idx[self.cache[idx] < 0])
        if todo.numel():
            if self.dst_t is not None:
                self.cache[todo] = _nn_torch(self.src[todo], self.dst_t, self.block_elems)
            else:
                self.cache[todo] = nearest_neighbors(self.src[todo], self.dst, backend=self.backend)
        return self.cache[idx]


# ----------------------------------------------------------------------------- matching


def grid_seeds(h: int, w: int, subsample: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Linear indices ``x + w * y`` of the grid ``x, y = subsample // 2 + k * subsample``.

    Returns:
        (Ny * Nx,) int64, row-major (y outer).
    """
    if subsample < 1:
        raise ValueError(f"subsample must be >= 1, got {subsample}")
    ys = torch.arange(subsample // 2, h, subsample, device=device)
    xs = torch.arange(subsample // 2, w, subsample, device=device)
    return (xs[None, :] + w * ys[:, None]).reshape(-1)


def fast_reciprocal_nn(
    desc1: torch.Tensor,
    desc2: torch.Tensor,
    *,
    subsample: int = 8,
    seeds_xy: torch.Tensor | np.ndarray | None = None,
    max_iterations: int = 10,
    backend: NNBackend = NNBackend.TORCH,
    block_elems: int = 2**25,
) -> RawMatches:
    """Fast reciprocal matching of two descriptor maps (see module docstring).

    Args:
        desc1: (H1, W1, D) unit-norm descriptors of image 1.
        desc2: (H2, W2, D) unit-norm descriptors of image 2 (same device/dtype).
        subsample: grid step of the seeds when ``seeds_xy`` is None.
        seeds_xy: optional (S, 2) integer (x, y) seed pixels in image 1.
        max_iterations: maximum NN round trips.
        backend: nearest-neighbour backend.
        block_elems: memory bound of the blocked search (scores held at once).

    Returns:
        ``RawMatches`` with linear indices on the descriptors' device, sorted by idx1 then idx2.
    """
    _check_desc_map("desc1", desc1)
    _check_desc_map("desc2", desc2)
    if desc1.shape[2] != desc2.shape[2]:
        raise ValueError(
            f"desc1 and desc2 must have the same descriptor size, got {desc1.shape[2]} and "
            f"{desc2.shape[2]}"
        )
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
    h1, w1, d = desc1.shape
    dev = desc1.device
    dtype = desc1.dtype
    if dev.type == "cpu" and dtype not in (torch.float32, torch.float64):
        dtype = torch.float32  # half types: slow CPU matmul and no numpy argmax
    f1 = desc1.to(dtype).reshape(-1, d)  # (H1*W1, D)
    f2 = desc2.to(device=dev, dtype=dtype).reshape(-1, d)  # (H2*W2, D)

    if seeds_xy is None:
        p1 = grid_seeds(h1, w1, subsample, dev)
    else:
        xy = seeds_xy if isinstance(seeds_xy, torch.Tensor) else torch.from_numpy(np.asarray(seeds_xy))
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise ValueError(f"seeds_xy must be (S, 2) (x, y), got {tuple(xy.shape)}")
        xy = xy.to(device=dev, dtype=torch.int64)
        if ((xy[:, 0] < 0) | (xy[:, 0] >= w1) | (xy[:, 1] < 0) | (xy[:, 1] >= h1)).any():
            raise ValueError(f"seeds_xy must lie inside image 1 ({w1}x{h1})")
        p1 = torch.unique(xy[:, 0] + w1 * xy[:, 1])

    nn12 = _CachedNN(f1, f2, backend, block_elems)
    nn21 = _CachedNN(f2, f1, backend, block_elems)
    done1, done2 = [], []
    it = 0
    while p1.numel() and it < max_iterations:
        it += 1
        p2 = nn12(p1)  # (S,) image-2 match of the current image-1 points
        back = nn21(p2)  # (S,) where the round trip lands in image 1
        conv = back == p1
        done1.append(p1[conv])
        done2.append(p2[conv])
        # A seed that landed on a point another seed already holds follows the same path.
        p1 = torch.unique(back[~conv])
    n_unconverged = int(p1.numel())
    if done1:
        i1, i2 = torch.cat(done1), torch.cat(done2)
    else:
        i1 = i2 = torch.empty(0, dtype=torch.int64, device=dev)
    n2 = f2.shape[0]
    key = torch.unique(i1 * n2 + i2)  # sorted: by idx1, then idx2; duplicates removed
    logger.debug("FRM: %d matches after %d iterations, %d unconverged", key.numel(), it, n_unconverged)
    return RawMatches(key // n2, key % n2, it, n_unconverged)


def mutual_nn(
    desc1: torch.Tensor,
    desc2: torch.Tensor,
    *,
    backend: NNBackend = NNBackend.TORCH,
    block_elems: int = 2**25,
) -> RawMatches:
    """Dense mutual nearest neighbours (every pixel of image 1 is a query): the baseline.

    Args:
        desc1: (H1, W1, D); desc2: (H2, W2, D).

    Returns:
        ``RawMatches`` sorted by idx1.
    """
    _check_desc_map("desc1", desc1)
    _check_desc_map("desc2", desc2)
    d = desc1.shape[2]
    dtype = desc1.dtype
    if desc1.device.type == "cpu" and dtype not in (torch.float32, torch.float64):
        dtype = torch.float32
    f1 = desc1.to(dtype).reshape(-1, d)
    f2 = desc2.to(device=desc1.device, dtype=dtype).reshape(-1, d)
    nn12 = nearest_neighbors(f1, f2, backend=backend, block_elems=block_elems)  # (N1,)
    nn21 = nearest_neighbors(f2, f1, backend=backend, block_elems=block_elems)  # (N2,)
    i1 = torch.arange(f1.shape[0], device=f1.device)
    keep = nn21[nn12] == i1
    return RawMatches(i1[keep], nn12[keep])


# ----------------------------------------------------------------------------- filters


def border_mask(
    xy1: np.ndarray, xy2: np.ndarray, hw1: tuple[int, int], hw2: tuple[int, int], border: int
) -> np.ndarray:
    """Keep matches with ``border <= x < W - border`` and ``border <= y < H - border`` in both
    images (each with its own size), as the reference demo's post-filter.

    Args:
        xy1, xy2: (N, 2) pixel coordinates; hw1, hw2: (H, W) of each image.

    Returns:
        (N,) bool.
    """
    xy1, xy2 = np.asarray(xy1), np.asarray(xy2)

    def inside(xy: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        h, w = hw
        return (
            (xy[:, 0] >= border) & (xy[:, 0] < w - border)
            & (xy[:, 1] >= border) & (xy[:, 1] < h - border)
        )

    return inside(xy1, hw1) & inside(xy2, hw2)


def _idx_to_xy(idx: torch.Tensor, w: int) -> np.ndarray:
    idx = idx.detach().cpu().numpy().astype(np.int64)
    return np.stack([idx % w, idx // w], axis=1)


def match_descriptors(
    desc1: torch.Tensor,
    desc2: torch.Tensor,
    config: FRMConfig = FRMConfig(),
    *,
    desc_conf1: torch.Tensor | None = None,
    desc_conf2: torch.Tensor | None = None,
    conf1: torch.Tensor | None = None,
    conf2: torch.Tensor | None = None,
    transform1: ImageTransform | None = None,
    transform2: ImageTransform | None = None,
    seeds_xy: torch.Tensor | np.ndarray | None = None,
) -> Matches:
    """FRM plus the border and confidence filters, with results in network and original pixels.

    Args:
        desc1: (H1, W1, D); desc2: (H2, W2, D) descriptor maps at network resolution.
        config: matching settings.
        desc_conf1, desc_conf2: optional (H, W) descriptor confidences (for ``min_desc_conf``).
        conf1, conf2: optional (H, W) pointmap confidences (for ``min_conf``).
        transform1, transform2: network -> original pixels (identity when None).
        seeds_xy: optional (S, 2) seeds in image 1 (network pixels) instead of the grid.

    Returns:
        ``Matches``.

    Raises:
        NonFiniteError / InputError: a descriptor map with NaN / inf, or all zero.
    """
    check_desc_values("desc1", desc1)
    check_desc_values("desc2", desc2)
    raw = fast_reciprocal_nn(
        desc1, desc2, subsample=config.subsample, seeds_xy=seeds_xy,
        max_iterations=config.max_iterations, backend=config.backend,
        block_elems=config.block_elems,
    )
    h1, w1 = desc1.shape[:2]
    h2, w2 = desc2.shape[:2]
    # Confidence filters on the device: only the (N,) mask crosses to the host, not the maps.
    conf_ok = torch.ones_like(raw.idx1, dtype=torch.bool)
    for name, thr, m1, m2 in (
        ("desc_conf", config.min_desc_conf, desc_conf1, desc_conf2),
        ("conf", config.min_conf, conf1, conf2),
    ):
        if thr <= 0:
            continue
        if m1 is None or m2 is None:
            raise ValueError(f"min_{name}={thr} needs both {name} maps; pass {name}1 and {name}2")
        c1 = m1.detach().reshape(-1).to(raw.idx1.device)[raw.idx1]
        c2 = m2.detach().reshape(-1).to(raw.idx2.device)[raw.idx2]
        conf_ok &= (c1 >= thr) & (c2 >= thr)
    xy1, xy2 = _idx_to_xy(raw.idx1, w1), _idx_to_xy(raw.idx2, w2)
    keep = border_mask(xy1, xy2, (h1, w1), (h2, w2), config.border) & conf_ok.cpu().numpy()
    xy1, xy2 = xy1[keep], xy2[keep]
    t1 = transform1 or ImageTransform.identity(h1, w1)
    t2 = transform2 or ImageTransform.identity(h2, w2)
    for name, t, hw in (("transform1", t1, (h1, w1)), ("transform2", t2, (h2, w2))):
        if tuple(t.network_size) != hw:
            raise ValueError(
                f"{name}.network_size {tuple(t.network_size)} does not match the descriptor "
                f"map size {hw}"
            )
    return Matches(
        xy1_net=xy1, xy2_net=xy2, xy1=t1.net_to_orig(xy1), xy2=t2.net_to_orig(xy2),
        n_iterations=raw.n_iterations, n_unconverged=raw.n_unconverged,
    )


def match_prediction(pred: PairPrediction, config: FRMConfig = FRMConfig()) -> Matches:
    """``match_descriptors`` on a ``PairPrediction`` (network output or simulator)."""
    v1, v2 = pred.view1, pred.view2
    return match_descriptors(
        v1.desc, v2.desc, config,
        desc_conf1=v1.desc_conf, desc_conf2=v2.desc_conf, conf1=v1.conf, conf2=v2.conf,
        transform1=v1.transform, transform2=v2.transform,
    )
