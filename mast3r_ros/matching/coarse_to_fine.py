"""Coarse-to-fine matching for images larger than the network input.

1. Coarse: both full images go through the engine (resized to the network size) and FRM gives
   coarse matches in original pixels.
2. Windows: each image is tiled by overlapping windows of the network size (sides multiples of
   16, ``overlap`` = 50 % by default, the last window flush with the border).
3. Each (window of image 1, window of image 2) pair is scored by the coarse matches it
   contains; pairs are picked greedily (most still-uncovered matches first) until ``coverage``
   (90 %) of the coarse matches are covered.
4. Fine: each selected crop is encoded once, the crop pairs are decoded in one
   ``decode_batch`` call, FRM runs on each, and the matches are mapped back to full resolution
   (crop transform, then the window offset) and merged without duplicates.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from mast3r_ros.config import config_from_dict
from mast3r_ros.matching.frm import FRMConfig, Matches, match_prediction
from mast3r_ros.model.types import PairEngine

logger = logging.getLogger(__name__)

__all__ = ["CoarseToFineConfig", "CoarseToFineResult", "window_grid", "select_window_pairs",
           "coarse_to_fine_match"]


@dataclass(frozen=True)
class CoarseToFineConfig:
    """Coarse-to-fine settings."""

    window_size: tuple[int, int] = (384, 512)  # (h, w) of a crop for a landscape image (swapped
    # for portrait images); should be the network input size; multiples of 16
    overlap: float = 0.5  # window overlap fraction, 0 <= overlap < 1
    coverage: float = 0.9  # stop selecting window pairs once this fraction of coarse matches is covered
    max_window_pairs: int = 64  # hard cap on fine crop pairs
    coarse: FRMConfig = field(default_factory=FRMConfig)  # FRM settings of the coarse pass
    fine: FRMConfig = field(default_factory=FRMConfig)  # FRM settings inside each crop pair

    def __post_init__(self) -> None:
        h, w = self.window_size
        if h <= 0 or w <= 0 or h % 16 or w % 16:
            raise ValueError(f"window_size must be positive multiples of 16, got {self.window_size}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if not 0 < self.coverage <= 1:
            raise ValueError(f"coverage must be in (0, 1], got {self.coverage}")
        if self.max_window_pairs < 1:
            raise ValueError(f"max_window_pairs must be >= 1, got {self.max_window_pairs}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CoarseToFineConfig":
        """Build from a dict (nested FRM settings as dicts), rejecting unknown keys."""
        data = dict(data)
        for k in ("coarse", "fine"):
            if isinstance(data.get(k), Mapping):
                data[k] = FRMConfig.from_dict(data[k])
        if "window_size" in data:
            data["window_size"] = tuple(data["window_size"])
        return config_from_dict(cls, data)


@dataclass
class CoarseToFineResult:
    """Merged fine matches at full resolution.

    Attributes:
        xy1: (N, 2) float64, (x, y) in image 1's original pixels.
        xy2: (N, 2) float64, (x, y) in image 2's original pixels.
        coarse: the coarse matches (network resolution of the full images).
        windows1: (K1, 4) int, windows of image 1 as (x0, y0, x1, y1), x1/y1 exclusive.
        windows2: (K2, 4) int, windows of image 2.
        window_pairs: (P, 2) int, selected (window of image 1, window of image 2), in order.
        covered: fraction of coarse matches covered by the selected pairs.
    """

    xy1: np.ndarray
    xy2: np.ndarray
    coarse: Matches
    windows1: np.ndarray
    windows2: np.ndarray
    window_pairs: np.ndarray
    covered: float

    def __len__(self) -> int:
        return int(self.xy1.shape[0])


def _starts(length: int, win: int, step: int) -> list[int]:
    if win >= length:
        return [0]
    s = list(range(0, length - win + 1, step))
    if s[-1] != length - win:
        s.append(length - win)  # last window flush with the border
    return s


def _oriented(window_size: tuple[int, int], hw: tuple[int, int]) -> tuple[int, int]:
    h, w = window_size
    if (hw[0] > hw[1]) != (h > w):  # portrait image: portrait windows
        h, w = w, h
    # never larger than the image; keep multiples of 16
    h = min(h, hw[0] // 16 * 16) or h
    w = min(w, hw[1] // 16 * 16) or w
    return h, w


def window_grid(image_hw: tuple[int, int], window_hw: tuple[int, int], overlap: float = 0.5) -> np.ndarray:
    """Overlapping windows covering an image.

    Args:
        image_hw: (H, W) of the image. window_hw: (h, w) of a window (multiples of 16).
        overlap: fraction of a window shared with its neighbour.

    Returns:
        (K, 4) int64 windows (x0, y0, x1, y1), row-major; x1, y1 exclusive.
    """
    H, W = image_hw
    h, w = window_hw
    if h > H or w > W:
        raise ValueError(f"window {h}x{w} (hxw) is larger than the image {H}x{W}")
    sy, sx = max(16, int(round(h * (1 - overlap) / 16)) * 16), max(16, int(round(w * (1 - overlap) / 16)) * 16)
    out = [(x, y, x + w, y + h) for y in _starts(H, h, sy) for x in _starts(W, w, sx)]
    return np.asarray(out, dtype=np.int64)


def _inside(xy: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """(N, 2) points, (K, 4) windows -> (N, K) bool."""
    x, y = xy[:, 0:1], xy[:, 1:2]
    return (x >= windows[:, 0]) & (x < windows[:, 2]) & (y >= windows[:, 1]) & (y < windows[:, 3])


def select_window_pairs(xy1: np.ndarray, xy2: np.ndarray, windows1: np.ndarray, windows2: np.ndarray,
                        coverage: float = 0.9, max_pairs: int = 64) -> tuple[np.ndarray, float]:
    """Greedy choice of window pairs covering the coarse matches.

    Args:
        xy1, xy2: (N, 2) coarse matches in original pixels. windows1, windows2: (K, 4).
        coverage: stop once this fraction of matches lies in a selected pair.
        max_pairs: cap on the number of pairs.

    Returns:
        ((P, 2) int64 selected pairs, covered fraction).
    """
    n = len(xy1)
    if n == 0:
        return np.zeros((0, 2), np.int64), 0.0
    in1 = _inside(np.asarray(xy1, float), windows1).astype(np.float32)  # (N, K1)
    in2 = _inside(np.asarray(xy2, float), windows2).astype(np.float32)  # (N, K2)
    uncovered = np.ones(n, bool)
    pairs: list[tuple[int, int]] = []
    while uncovered.mean() > 1 - coverage and len(pairs) < max_pairs:
        u = uncovered.astype(np.float32)[:, None]
        score = (in1 * u).T @ in2  # (K1, K2) uncovered matches in each window pair
        i, j = np.unravel_index(int(np.argmax(score)), score.shape)
        if score[i, j] <= 0:
            break
        pairs.append((int(i), int(j)))
        uncovered &= ~((in1[:, i] > 0) & (in2[:, j] > 0))
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2), float(1 - uncovered.mean())


def _merge(xy1_list: list[np.ndarray], xy2_list: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate in priority order; drop repeated pairs and keep one match per pixel of each
    image (the first, i.e. from the best-scored window pair)."""
    if not xy1_list:
        return np.zeros((0, 2)), np.zeros((0, 2))
    a, b = np.concatenate(xy1_list), np.concatenate(xy2_list)
    for side in (0, 1):
        key = np.round(a if side == 0 else b).astype(np.int64)
        _, first = np.unique(key[:, 0] + (1 << 32) * key[:, 1], return_index=True)
        keep = np.zeros(len(a), bool)
        keep[first] = True
        a, b = a[keep], b[keep]
    order = np.lexsort((a[:, 0], a[:, 1]))  # row-major in image 1
    return a[order], b[order]


def coarse_to_fine_match(engine: PairEngine, image1: np.ndarray, image2: np.ndarray,
                         config: CoarseToFineConfig = CoarseToFineConfig(), *,
                         coarse: Matches | None = None) -> CoarseToFineResult:
    """Coarse-to-fine FRM of two (possibly large) images through a ``PairEngine``.

    Args:
        engine: anything implementing ``PairEngine`` (the network or a simulator).
        image1, image2: (H, W, 3) uint8 RGB images at full resolution.
        config: settings.
        coarse: precomputed coarse matches (original pixels); computed here when None.

    Returns:
        ``CoarseToFineResult``.
    """
    for name, im in (("image1", image1), ("image2", image2)):
        if not isinstance(im, np.ndarray) or im.ndim != 3 or im.shape[2] != 3:
            raise ValueError(f"{name} must be an (H, W, 3) RGB array, got "
                             f"{getattr(im, 'shape', type(im).__name__)}")
    if coarse is None:
        v1, v2 = engine.encode(image1, frame_id="full1"), engine.encode(image2, frame_id="full2")
        coarse = match_prediction(engine.decode(v1, v2), config.coarse)
    hw1, hw2 = image1.shape[:2], image2.shape[:2]
    win1 = window_grid(hw1, _oriented(config.window_size, hw1), config.overlap)
    win2 = window_grid(hw2, _oriented(config.window_size, hw2), config.overlap)
    pairs, covered = select_window_pairs(coarse.xy1, coarse.xy2, win1, win2, config.coverage,
                                         config.max_window_pairs)
    logger.debug("coarse-to-fine: %d coarse matches, %d window pairs cover %.0f%%",
                 len(coarse), len(pairs), 100 * covered)
    crops: dict[tuple[int, int], Any] = {}

    def crop(img_idx: int, k: int):
        if (img_idx, k) not in crops:
            img, win = (image1, win1) if img_idx == 0 else (image2, win2)
            x0, y0, x1, y1 = win[k]
            crops[(img_idx, k)] = engine.encode(np.ascontiguousarray(img[y0:y1, x0:x1]),
                                                frame_id=f"crop{img_idx + 1}_{k}")
        return crops[(img_idx, k)]

    jobs = [(crop(0, i), crop(1, j)) for i, j in pairs]
    preds = engine.decode_batch(jobs) if jobs else []
    xy1_list, xy2_list = [], []
    for (i, j), pred in zip(pairs, preds):
        m = match_prediction(pred, config.fine)
        xy1_list.append(m.xy1 + win1[i, :2])
        xy2_list.append(m.xy2 + win2[j, :2])
    xy1, xy2 = _merge(xy1_list, xy2_list)
    return CoarseToFineResult(xy1, xy2, coarse, win1, win2, pairs, covered)
