"""Pair keyframes with their images by stamp: a bounded buffer of recent images and a
bounded, short-lived list of keyframes still waiting for theirs (``mapping_node``).

ROS-free (no rclpy). A separate mapper hears the camera's images and the tracker's keyframe
messages (which carry no image) on two topics; a keyframe's image is the one with exactly
its stamp. Images usually arrive first (the tracker publishes a keyframe after processing
its image), so recent images are kept, newest win: at most ``max_images``, the oldest
dropped. A keyframe whose image is not buffered waits at most ``max_wait_s`` (and at most
``max_pending`` keyframes wait, the oldest dropped first); then it is dropped and counted.
Memory is bounded by ``max_images`` images and ``max_pending`` keyframes.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class PairingCounts:
    """What the buffer has done since creation (or ``clear``)."""

    images_dropped: int = 0         # images pushed out of the buffer unpaired
    keyframes_paired: int = 0       # keyframes that found their image
    keyframes_dropped: int = 0      # keyframes whose image never came (timeout or overflow)


class StampPairing:
    """Thread-safe stamp-keyed pairing of keyframes with images.

    Args:
        max_images: images kept (>= 1); the oldest by arrival is dropped beyond it.
        max_wait_s: seconds a keyframe waits for its image (> 0).
        max_pending: keyframes waiting at once (>= 1); the oldest is dropped beyond it.
        clock: monotonic seconds (tests may pass their own).

    Raises:
        ValueError: a bound is out of range (the message names it).
    """

    def __init__(self, max_images: int = 30, max_wait_s: float = 2.0, max_pending: int = 10,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if int(max_images) < 1:
            raise ValueError(f"max_images must be >= 1, got {max_images}")
        if int(max_pending) < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        if not float(max_wait_s) > 0:
            raise ValueError(f"max_wait_s must be > 0, got {max_wait_s}")
        self.max_images, self.max_pending = int(max_images), int(max_pending)
        self.max_wait_s = float(max_wait_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._images: OrderedDict[int, Any] = OrderedDict()     # stamp -> image, arrival order
        self._pending: OrderedDict[int, tuple[float, Any]] = OrderedDict()  # stamp -> (t, kf)
        self.counts = PairingCounts()

    def add_image(self, stamp_ns: int, image: Any) -> list[tuple[Any, Any]]:
        """Buffer ``image``; returns the (keyframe, image) pairs it completes (0 or 1)."""
        stamp_ns = int(stamp_ns)
        with self._lock:
            waiting = self._pending.pop(stamp_ns, None)
            if waiting is not None:
                self.counts.keyframes_paired += 1
                return [(waiting[1], image)]
            self._images.pop(stamp_ns, None)      # a repeated stamp: the newer image wins
            self._images[stamp_ns] = image
            while len(self._images) > self.max_images:
                self._images.popitem(last=False)
                self.counts.images_dropped += 1
            return []

    def add_keyframe(self, stamp_ns: int, keyframe: Any) -> tuple[list[tuple[Any, Any]], list[Any]]:
        """Pair ``keyframe`` with its buffered image, or keep it waiting.

        Returns:
            (pairs completed: [(keyframe, image)] or [], keyframes dropped by the pending
            bound or by timeouts checked now).
        """
        stamp_ns = int(stamp_ns)
        with self._lock:
            dropped = self._expire_locked()
            image = self._images.pop(stamp_ns, None)
            if image is not None:
                self.counts.keyframes_paired += 1
                return [(keyframe, image)], dropped
            self._pending.pop(stamp_ns, None)
            self._pending[stamp_ns] = (self._clock(), keyframe)
            while len(self._pending) > self.max_pending:
                dropped.append(self._pending.popitem(last=False)[1][1])
                self.counts.keyframes_dropped += 1
            return [], dropped

    def expire(self) -> list[Any]:
        """Drop (and return) keyframes that waited longer than ``max_wait_s``."""
        with self._lock:
            return self._expire_locked()

    def _expire_locked(self) -> list[Any]:
        now = self._clock()
        out = []
        for stamp in [s for s, (t, _) in self._pending.items() if now - t > self.max_wait_s]:
            out.append(self._pending.pop(stamp)[1])
            self.counts.keyframes_dropped += 1
        return out

    def clear(self) -> None:
        """Forget every image and waiting keyframe (counts are kept)."""
        with self._lock:
            self._images.clear()
            self._pending.clear()

    @property
    def num_images(self) -> int:
        with self._lock:
            return len(self._images)

    @property
    def num_pending(self) -> int:
        with self._lock:
            return len(self._pending)
