"""A bounded "newest frames win" queue between a subscription callback and a worker thread.

ROS-free (no rclpy). A camera publishes faster than inference runs: instead of falling
behind (and answering with ever older poses), the queue keeps at most ``depth`` frames and
drops the OLDEST when a new one arrives, counting every drop.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any


class LatestFrameQueue:
    """Thread-safe bounded queue that drops stale items.

    Args:
        depth: items kept (1 or 2 for live tracking: the newest, and the one behind it).

    Raises:
        ValueError: depth < 1.
    """

    def __init__(self, depth: int = 1) -> None:
        if int(depth) < 1:
            raise ValueError(f"queue depth must be >= 1, got {depth}")
        self._items: deque = deque()
        self._depth = int(depth)
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0      # items pushed out unprocessed, since creation

    def put(self, item: Any) -> int:
        """Add ``item``; drops the oldest items beyond ``depth``. Returns how many it dropped."""
        with self._cond:
            self._items.append(item)
            n = 0
            while len(self._items) > self._depth:
                self._items.popleft()
                n += 1
            self.dropped += n
            self._cond.notify()
            return n

    def get(self, timeout: float | None = None) -> Any | None:
        """The oldest kept item, waiting up to ``timeout`` s; None on timeout or once closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                return None
            if self._closed:
                return None
            return self._items.popleft()

    def clear(self) -> int:
        """Drop every waiting item (counted as dropped); returns how many."""
        with self._cond:
            n = len(self._items)
            self._items.clear()
            self.dropped += n
            return n

    def close(self) -> None:
        """Wake every waiting ``get`` (returns None from now on)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
