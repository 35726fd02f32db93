"""Stream colour images (and their camera info) out of a rosbag2, one frame at a time.

``read_bag`` in ``mast3r_ros.synth.bag`` loads a whole sequence (with depth and ground
truth) into memory; for long bags, ``iter_bag_images`` yields one ``BagImage`` at a time,
in bag order, holding at most ``max_pending`` images while it waits for the camera info
with the same header stamp. ROS-free (``rosbags``).
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from mast3r_ros import image_codec

log = logging.getLogger(__name__)

__all__ = ["BagImage", "bag_topics", "iter_bag_images"]


@dataclass(frozen=True, eq=False)
class BagImage:
    """One image of a bag: header stamp (ns), (H, W, 3) uint8 RGB, (3, 3) K or None."""

    stamp_ns: int
    rgb: np.ndarray
    K: np.ndarray | None


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


def bag_topics(bag_dir: str | Path) -> dict[str, tuple[str, int]]:
    """{topic: (message type, message count)} of a rosbag2 folder.

    Raises:
        FileNotFoundError: ``bag_dir`` is not a rosbag2 folder.
    """
    from rosbags.rosbag2 import Reader

    bag_dir = Path(bag_dir)
    if not (bag_dir / "metadata.yaml").is_file():
        raise FileNotFoundError(f"no rosbag2 at {bag_dir} (metadata.yaml missing)")
    with Reader(bag_dir) as reader:
        out: dict[str, tuple[str, int]] = {}
        for c in reader.connections:
            t, n = out.get(c.topic, (c.msgtype, 0))
            out[c.topic] = (t, n + c.msgcount)
        return out


def _stamp(header) -> int:
    return int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)


def _valid_K(k) -> np.ndarray | None:
    K = np.asarray(k, dtype=np.float64).reshape(3, 3)
    return K if np.all(np.isfinite(K)) and K[0, 0] > 0 and K[1, 1] > 0 else None


def iter_bag_images(bag_dir: str | Path, image_topic: str = "/camera/image_raw",
                    camera_info_topic: str | None = "/camera/camera_info", *,
                    max_pending: int = 8) -> Iterator[BagImage]:
    """Yield the bag's images in order, each with the K of the camera info of its stamp.

    With ``camera_info_topic=None`` every ``K`` is None (intrinsics unknown). An image whose
    camera info has not come within ``max_pending`` images gets the newest K seen (or None).

    Raises:
        FileNotFoundError: no bag. ValueError: a topic is missing or has the wrong type, or
            an image encoding is unsupported (the message names the stamp).
    """
    from rosbags.rosbag2 import Reader

    topics = bag_topics(bag_dir)
    want = {image_topic: "sensor_msgs/msg/Image"}
    if camera_info_topic is not None:
        want[camera_info_topic] = "sensor_msgs/msg/CameraInfo"
    for topic, typ in want.items():
        if topic not in topics:
            hint = " (or pass --no-camera-info)" if typ.endswith("CameraInfo") else ""
            raise ValueError(f"bag {bag_dir} has no topic {topic}{hint}; it has {sorted(topics)}")
        if topics[topic][0] != typ:
            raise ValueError(f"topic {topic} in {bag_dir} is {topics[topic][0]}, expected {typ}")
    ts = _typestore()
    pending: OrderedDict[int, np.ndarray] = OrderedDict()
    infos: OrderedDict[int, np.ndarray | None] = OrderedDict()
    last_K: np.ndarray | None = None

    def flush_until(stamp: int | None) -> Iterator[BagImage]:
        while pending and (stamp is None or next(iter(pending)) <= stamp):
            s, rgb = pending.popitem(last=False)
            K = infos.pop(s, last_K) if camera_info_topic is not None else None
            yield BagImage(s, rgb, None if K is None else K.copy())

    with Reader(Path(bag_dir)) as reader:
        conns = [c for c in reader.connections if c.topic in want]
        for conn, _, raw in reader.messages(connections=conns):
            msg = ts.deserialize_cdr(raw, conn.msgtype)
            stamp = _stamp(msg.header)
            if conn.topic == image_topic:
                try:
                    arr = image_codec.decode(msg.data, msg.height, msg.width, msg.step,
                                             msg.encoding, bool(msg.is_bigendian))
                    rgb = image_codec.to_rgb(arr, msg.encoding)
                except ValueError as exc:
                    raise ValueError(f"image at stamp {stamp} ns on {image_topic}: {exc}") from None
                pending[stamp] = rgb
                if camera_info_topic is None or stamp in infos:
                    yield from flush_until(stamp)
                elif len(pending) > max_pending:
                    yield from flush_until(next(iter(pending)))
            else:
                K = _valid_K(msg.k)
                last_K = K if K is not None else last_K
                infos[stamp] = K
                while len(infos) > 4 * max_pending:
                    infos.popitem(last=False)
                if stamp in pending:
                    yield from flush_until(stamp)
        yield from flush_until(None)
