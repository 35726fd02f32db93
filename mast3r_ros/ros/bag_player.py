"""``bag_player``: play a rosbag2 folder on its topics, for environments without ``ros2 bag``.

    bag_player BAG [--rate R] [--loop] [--topics T ...] [--exclude T ...] [--no-clock]
               [--clock-hz HZ] [--delay S] [--wait-for-subscribers [TIMEOUT]]

Reads MCAP and sqlite3 bags with ``rosbags`` (pure Python) and republishes each message's
serialized bytes unchanged (header stamps untouched) at the bag's recording times scaled by
``--rate``. Publishes ``/clock`` (``rosgraph_msgs/Clock``) with the bag time, so nodes with
``use_sim_time`` follow the bag; if ``rosgraph_msgs`` is not installed it says so and plays
without a clock. Topics whose message type is not importable here are skipped with a warning.

QoS: RELIABLE, depth 100 (a reliable publisher serves both reliable and best-effort
subscribers); ``/tf_static`` latched (depth 1, TRANSIENT_LOCAL) as tf2 expects.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

log = logging.getLogger(__name__)

PROG = "bag_player"


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str          # e.g. "sensor_msgs/msg/Image"
    log_time_ns: int      # bag receive time
    data: bytes           # CDR, as recorded


def bag_topics(bag_dir: str | Path) -> dict[str, tuple[str, int]]:
    """topic -> (message type, message count) of a rosbag2 folder. Raises ValueError."""
    from rosbags.highlevel import AnyReader

    with AnyReader([Path(bag_dir)]) as reader:
        out: dict[str, tuple[str, int]] = {}
        for c in reader.connections:
            t, n = out.get(c.topic, (c.msgtype, 0))
            out[c.topic] = (t, n + c.msgcount)
        return out


def read_messages(bag_dir: str | Path, topics: Sequence[str] | None = None,
                  exclude: Sequence[str] = ()) -> Iterator[BagMessage]:
    """Messages of a rosbag2 folder in recording order, filtered by topic (ROS-free)."""
    from rosbags.highlevel import AnyReader

    with AnyReader([Path(bag_dir)]) as reader:
        conns = [c for c in reader.connections
                 if (topics is None or c.topic in topics) and c.topic not in exclude]
        if not conns:
            return
        for conn, t_ns, raw in reader.messages(connections=conns):
            yield BagMessage(conn.topic, conn.msgtype, int(t_ns), bytes(raw))


def message_class(msgtype: str):
    """``pkg/msg/Name`` -> the generated Python class, or None when not importable here."""
    parts = msgtype.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3:
        return None
    try:
        return getattr(importlib.import_module(f"{parts[0]}.{parts[1]}"), parts[2])
    except (ImportError, AttributeError):
        return None


def clock_class():
    """``rosgraph_msgs.msg.Clock`` or None when the package is not installed."""
    return message_class("rosgraph_msgs/msg/Clock")


class BagPlayer:
    """Publishes a bag's messages from ``node``; ``play()`` blocks until done (or ``stop()``)."""

    def __init__(self, node, bag_dir: str | Path, *, rate: float = 1.0, loop: bool = False,
                 topics: Sequence[str] | None = None, exclude: Sequence[str] = (),
                 clock: bool = True, clock_hz: float = 100.0) -> None:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        if not rate > 0:
            raise ValueError(f"--rate must be > 0, got {rate}")
        if not clock_hz > 0:
            raise ValueError(f"--clock-hz must be > 0, got {clock_hz}")
        self.node, self.bag_dir = node, Path(bag_dir)
        self.rate, self.loop, self.clock_period = float(rate), bool(loop), 1.0 / clock_hz
        self.exclude = tuple(exclude)
        available = bag_topics(self.bag_dir)
        if topics is not None:
            missing = sorted(set(topics) - set(available))
            if missing:
                raise ValueError(f"--topics {missing} not in the bag; it has {sorted(available)}")
        self.publishers = {}
        selected = [t for t in available if (topics is None or t in topics) and t not in self.exclude]
        for topic in selected:
            msgtype = available[topic][0]
            cls = message_class(msgtype)
            if cls is None:
                log.warning("skipping %s: message type %s is not installed here", topic, msgtype)
                node.get_logger().warning(f"skipping {topic}: message type {msgtype} is not installed here")
                continue
            if topic == "/tf_static":
                qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            else:
                qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
            self.publishers[topic] = node.create_publisher(cls, topic, qos)
        self.clock_pub = None
        self.Clock = clock_class() if clock else None
        if clock and self.Clock is None:
            node.get_logger().warning("rosgraph_msgs is not installed: /clock is NOT published "
                                      "(nodes with use_sim_time will not advance)")
        elif clock:
            self.clock_pub = node.create_publisher(self.Clock, "/clock", QoSProfile(depth=10))
        self._stop = False
        self.published = 0

    def stop(self) -> None:
        self._stop = True

    def wait_for_subscribers(self, timeout_s: float, minimum: dict[str, int] | None = None) -> bool:
        """Wait until every publisher (but /clock) has a subscriber (``minimum[topic]`` of
        them where given, e.g. a tracker and a mapper on the image topic), at most ``timeout_s``."""
        minimum = minimum or {}
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and not self._stop:
            if all(p.get_subscription_count() >= minimum.get(t, 1)
                   for t, p in self.publishers.items()):
                return True
            time.sleep(0.05)
        return False

    def _clock(self, t_ns: int) -> None:
        if self.clock_pub is not None:
            from builtin_interfaces.msg import Time

            sec, nsec = divmod(int(t_ns), 1_000_000_000)
            self.clock_pub.publish(self.Clock(clock=Time(sec=sec, nanosec=nsec)))

    def play_once(self) -> int:
        """Play the bag once at ``rate``; returns messages published."""
        n = 0
        t0_bag = None
        t0_wall = 0.0
        for m in read_messages(self.bag_dir, list(self.publishers), self.exclude):
            if self._stop:
                break
            if t0_bag is None:   # the clock starts at the first message (opening a bag takes time)
                t0_bag, t0_wall = m.log_time_ns, time.monotonic()
                self._clock(t0_bag)
            due = t0_wall + (m.log_time_ns - t0_bag) * 1e-9 / self.rate
            while not self._stop:
                now = time.monotonic()
                if now >= due:
                    break
                time.sleep(min(due - now, self.clock_period))
                # bag time now, for /clock between messages
                self._clock(t0_bag + int(min(time.monotonic() - t0_wall, due - t0_wall) * self.rate * 1e9))
            self._clock(m.log_time_ns)
            self.publishers[m.topic].publish(m.data)
            n += 1
        self.published += n
        return n

    def play(self) -> int:
        total = self.play_once()
        while self.loop and not self._stop:
            total += self.play_once()
        return total


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Play a rosbag2 folder (MCAP or sqlite3) on "
                                "its topics, honouring stamps, and publish /clock.")
    p.add_argument("bag", help="rosbag2 folder (with metadata.yaml)")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (> 0, default 1)")
    p.add_argument("--loop", action="store_true", help="play again from the start when done")
    p.add_argument("--topics", nargs="+", default=None, metavar="T", help="play only these topics")
    p.add_argument("--exclude", nargs="+", default=[], metavar="T", help="do not play these topics")
    p.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    p.add_argument("--clock-hz", type=float, default=100.0, help="/clock rate between messages (Hz)")
    p.add_argument("--delay", type=float, default=0.5, help="seconds to wait before playing (discovery)")
    p.add_argument("--wait-for-subscribers", type=float, default=None, nargs="?", const=10.0,
                   metavar="TIMEOUT", help="wait (at most TIMEOUT s, default 10) until every "
                   "played topic has a subscriber")
    p.add_argument("--min-subscribers", nargs="+", default=[], metavar="TOPIC=N",
                   help="with --wait-for-subscribers: wait for N subscribers on TOPIC (default 1)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import rclpy
    from rclpy.utilities import remove_ros_args

    argv = list(sys.argv if argv is None else [PROG, *argv])
    parser = build_parser()
    args = parser.parse_args(remove_ros_args(argv)[1:])
    bag = Path(args.bag)
    if not (bag / "metadata.yaml").is_file():
        parser.error(f"{bag} is not a rosbag2 folder (no metadata.yaml)")
    if args.delay < 0:
        parser.error(f"--delay must be >= 0, got {args.delay}")
    minimum = {}
    for item in args.min_subscribers:
        topic, _, n = item.rpartition("=")
        if not topic or not n.isdigit():
            parser.error(f"--min-subscribers: expected TOPIC=N (N a whole number), got {item!r}")
        minimum[topic] = int(n)
    rclpy.init(args=argv)
    node = rclpy.create_node("bag_player")
    try:
        try:
            player = BagPlayer(node, bag, rate=args.rate, loop=args.loop, topics=args.topics,
                               exclude=args.exclude, clock=not args.no_clock, clock_hz=args.clock_hz)
        except Exception as exc:  # noqa: BLE001 -- rosbags raises its own types for bad bags
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 2
        if not player.publishers:
            print(f"{PROG}: error: no topic left to play", file=sys.stderr)
            return 2
        if args.wait_for_subscribers is not None and not player.wait_for_subscribers(args.wait_for_subscribers,
                                                                                  minimum):
            node.get_logger().warning("not every topic has a subscriber; playing anyway")
        time.sleep(args.delay)
        node.get_logger().info(f"playing {bag} ({', '.join(player.publishers)}) at rate {args.rate}")
        n = player.play()
        node.get_logger().info(f"done: {n} messages")
        time.sleep(0.2)   # let reliable writers flush the last messages
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
