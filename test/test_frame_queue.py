"""The bounded newest-frames queue between the image callback and the inference worker."""
from __future__ import annotations

import threading

import pytest

from mast3r_ros.ros.frame_queue import LatestFrameQueue


def test_keeps_the_newest_and_counts_drops():
    q = LatestFrameQueue(2)
    assert [q.put(i) for i in range(5)] == [0, 0, 1, 1, 1]
    assert q.dropped == 3 and len(q) == 2
    assert (q.get(0), q.get(0), q.get(0.01)) == (3, 4, None)
    q.put(7)
    assert q.clear() == 1 and q.dropped == 4 and q.get(0.01) is None


def test_a_fast_producer_never_grows_the_queue_and_every_item_is_seen_or_dropped():
    q = LatestFrameQueue(1)
    seen = []
    done = threading.Event()

    def consume():
        while not done.is_set() or len(q):
            item = q.get(0.01)
            if item is not None:
                seen.append(item)

    t = threading.Thread(target=consume)
    t.start()
    for i in range(2000):
        q.put(i)
        assert len(q) <= 1
    done.set()
    t.join(10)
    assert len(seen) + q.dropped == 2000
    assert seen == sorted(seen) and seen[-1] == 1999      # in order, the last one kept


def test_close_wakes_the_consumer_and_bad_depth_is_refused():
    q = LatestFrameQueue(1)
    out = []
    t = threading.Thread(target=lambda: out.append(q.get(30)))
    t.start()
    q.close()
    t.join(5)
    assert out == [None] and not t.is_alive()
    with pytest.raises(ValueError, match="queue depth must be >= 1, got 0"):
        LatestFrameQueue(0)
