"""Reference keyframes and their retrieval index (not thread-safe by itself: the
``Relocalizer`` guards it with its lock)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np

from mast3r_ros.model.types import EncodedView

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Reference:
    """One reference keyframe.

    Attributes:
        id: unique name. image: (H, W, 3) uint8 RGB (kept for saving and drawing).
        view: the engine's encoding of ``image`` (computed once).
        T_map_cam: (4, 4) float64 camera -> map.
        K: (3, 3) float64 given intrinsics (original resolution) or None.
        K_estimated: (3, 3) estimated from the reference's own pointmap on first use
            (cached; None until then or when ``K`` is given).
        descriptor: (D,) float32 unit global descriptor.
        stamp_ns: image stamp (or None). frame_id: the id passed to ``engine.encode``.
        points: the reference's own map-scale 3D points, (h, w, 3) float32 at the engine's
            network resolution of ``view``, in the reference camera frame, in map units
            (zeros where unknown), or a zero-argument callable returning them (evaluated when
            the reference is verified, so a mapper's latest depth is used), or None: then
            the pair's predicted pointmap gives the 3D points (and its metric scale error
            scales the reference -> query baseline).
    """

    id: str
    image: np.ndarray
    view: EncodedView
    T_map_cam: np.ndarray
    K: np.ndarray | None
    descriptor: np.ndarray
    stamp_ns: int | None = None
    frame_id: str | None = None
    K_estimated: np.ndarray | None = None
    points: Union[np.ndarray, Callable[[], "np.ndarray | None"], None] = None

    def map_points(self) -> np.ndarray | None:
        """``points`` as an (h, w, 3) float32 array (calling it when callable), or None."""
        p = self.points() if callable(self.points) else self.points
        return None if p is None else np.asarray(p, dtype=np.float32)


class ReferenceStore:
    """References by id plus a faiss inner-product index of their global descriptors.

    Retrieval is exact (``IndexFlatIP``): a 1000 x D matrix product, well under a
    millisecond for D <= 1024 once faiss's BLAS threshold is low (see DATA_AND_TOOLS.md).
    The index is rebuilt lazily after a removal.
    """

    def __init__(self) -> None:
        import faiss

        faiss.cvar.distance_compute_blas_threshold = 20
        self._refs: dict[str, Reference] = {}
        self._order: list[str] = []   # index row -> id
        self._index = None
        self._dirty = False

    def __len__(self) -> int:
        return len(self._refs)

    def __contains__(self, ref_id: str) -> bool:
        return ref_id in self._refs

    def get(self, ref_id: str) -> Reference:
        return self._refs[ref_id]

    def ids(self) -> list[str]:
        return list(self._refs)

    def references(self) -> list[Reference]:
        return list(self._refs.values())

    def add(self, ref: Reference) -> None:
        """Add (or replace, when the id exists) a reference."""
        d = np.ascontiguousarray(ref.descriptor, dtype=np.float32).reshape(1, -1)
        if self._index is not None and d.shape[1] != self._index.d:
            raise ValueError(f"global descriptor has {d.shape[1]} dims, the store holds "
                             f"{self._index.d}-dim ones (another engine?)")
        if ref.id in self._refs:
            logger.info("reference %r replaced", ref.id)
            self._refs[ref.id] = ref
            self._dirty = True
            return
        self._refs[ref.id] = ref
        if self._dirty or self._index is None:
            self._dirty = True
            return
        self._index.add(d)
        self._order.append(ref.id)

    def remove(self, ref_id: str) -> None:
        del self._refs[ref_id]
        self._dirty = True

    def clear(self) -> None:
        self._refs.clear()
        self._order = []
        self._index = None
        self._dirty = False

    def _rebuild(self) -> None:
        import faiss

        self._order = list(self._refs)
        if not self._order:
            self._index = None
        else:
            D = np.stack([self._refs[i].descriptor for i in self._order]).astype(np.float32)
            self._index = faiss.IndexFlatIP(D.shape[1])
            self._index.add(np.ascontiguousarray(D))
        self._dirty = False

    def search(self, descriptor: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The ``k`` best references by inner product: [(id, score)], best first."""
        if self._dirty or (self._index is None and self._refs):
            self._rebuild()
        if self._index is None:
            return []
        q = np.ascontiguousarray(descriptor, dtype=np.float32).reshape(1, -1)
        if q.shape[1] != self._index.d:
            raise ValueError(f"query descriptor has {q.shape[1]} dims, the index {self._index.d}")
        scores, rows = self._index.search(q, min(k, len(self._order)))
        return [(self._order[r], float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0]
