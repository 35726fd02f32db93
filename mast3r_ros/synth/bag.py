"""rosbag2 files of synthetic sequences, written and read with ``rosbags`` (no ROS needed).

Topics (``BagTopics``), one message per frame, all stamped with the frame's stamp (header
and bag receive time alike):

- ``/camera/image_raw``: ``sensor_msgs/msg/Image`` in rgb8, bgr8 or mono8 (written; any
  colour encoding of ``mast3r_ros.image_codec`` is read).
- ``/camera/camera_info``: ``sensor_msgs/msg/CameraInfo`` (plumb_bob, zero distortion).
- ``/camera/depth/image_raw``: ``sensor_msgs/msg/Image`` 32FC1, metres (camera z).
- ``/tf``: ``tf2_msgs/msg/TFMessage`` with ``gt_world -> gt_camera`` (ground truth). Its own
  frames, on purpose: ``map -> camera_optical_frame`` is what a localizer publishes, and a
  replayed bag must not fight the nodes under test over that link. (Bags written before this
  change carry ``map -> camera_optical_frame``; ``read_bag`` still reads them.)
- ``/ground_truth/pose``: ``geometry_msgs/msg/PoseStamped`` in ``gt_world``, the same pose.
- ``/synth/info``: one ``std_msgs/msg/String`` with the JSON settings that made the bag.

Header frame of images and camera info: ``camera_optical_frame`` (OpenCV optical frame).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from mast3r_ros import image_codec
from mast3r_ros.geometry.transforms import T_to_pose, pose_to_T

from .scene import _parse_enum
from .sequence import SyntheticFrame, SyntheticSequence

log = logging.getLogger(__name__)

# rosbags writes metadata version 8 or 9. Version 9 stores ``offered_qos_profiles`` as a
# YAML list, which Humble's and Iron's rosbag2 (which parse it as a string) cannot load;
# version 8 keeps the string form. Humble's reader ignores the keys it does not know
# (``type_description_hash``, ``ros_distro``, ``custom_data``), Jazzy and Kilted read
# version 8 natively. So 8 is the newest version every distribution from Humble to Kilted
# reads. (Humble reads MCAP through its ``rosbag2_storage_mcap`` package.)
BAG_METADATA_VERSION = 8


class ImageEncoding(Enum):
    """``sensor_msgs/Image.encoding`` of the colour topic."""

    RGB8 = "rgb8"
    BGR8 = "bgr8"
    MONO8 = "mono8"


class BagStorage(Enum):
    """rosbag2 storage plugin."""

    MCAP = "mcap"
    SQLITE3 = "sqlite3"


@dataclass(frozen=True)
class BagTopics:
    """Topic and frame names of a synthetic bag."""

    image: str = "/camera/image_raw"
    camera_info: str = "/camera/camera_info"
    depth: str = "/camera/depth/image_raw"
    tf: str = "/tf"
    pose: str = "/ground_truth/pose"
    info: str = "/synth/info"
    camera_frame: str = "camera_optical_frame"   # header frame of images and camera info
    gt_world_frame: str = "gt_world"             # ground truth: parent frame on /tf and pose
    gt_camera_frame: str = "gt_camera"           # ground truth: camera frame on /tf
    # ground truth as bags before the move wrote it on /tf (read only; it collides with what
    # localizers publish, so it is never written any more)
    legacy_map_frame: str = "map"


_TYPES = {
    "image": "sensor_msgs/msg/Image", "camera_info": "sensor_msgs/msg/CameraInfo",
    "depth": "sensor_msgs/msg/Image", "tf": "tf2_msgs/msg/TFMessage",
    "pose": "geometry_msgs/msg/PoseStamped", "info": "std_msgs/msg/String",
}


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    # Humble's message definitions: identical for these types up to Kilted.
    return get_typestore(Stores.ROS2_HUMBLE)


def _header(ts, stamp_ns: int, frame: str):
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    sec, nsec = divmod(int(stamp_ns), 10**9)
    return Header(stamp=Time(sec=sec, nanosec=nsec), frame_id=frame)


def frame_messages(ts, frame: SyntheticFrame, encoding: ImageEncoding, topics: BagTopics,
                   ) -> dict[str, object]:
    """The messages of one frame, keyed like ``BagTopics`` fields."""
    T = ts.types
    h, w = frame.rgb.shape[:2]
    cam_hdr = _header(ts, frame.stamp_ns, topics.camera_frame)
    data, step = image_codec.encode(image_codec.from_rgb(frame.rgb, encoding.value), encoding.value)
    msgs: dict[str, object] = {
        "image": T["sensor_msgs/msg/Image"](
            header=cam_hdr, height=h, width=w, encoding=encoding.value, is_bigendian=0,
            step=step, data=np.frombuffer(data, dtype=np.uint8)),
    }
    K = np.asarray(frame.K, dtype=np.float64)
    P = np.concatenate([K, np.zeros((3, 1))], axis=1)
    msgs["camera_info"] = T["sensor_msgs/msg/CameraInfo"](
        header=cam_hdr, height=h, width=w, distortion_model="plumb_bob", d=np.zeros(5),
        k=K.reshape(-1).copy(), r=np.eye(3).reshape(-1), p=P.reshape(-1),
        binning_x=0, binning_y=0,
        roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                   do_rectify=False))
    if frame.depth is not None:
        depth, dstep = image_codec.encode(np.asarray(frame.depth, dtype=np.float32), "32FC1")
        msgs["depth"] = T["sensor_msgs/msg/Image"](
            header=cam_hdr, height=h, width=w, encoding="32FC1", is_bigendian=0, step=dstep,
            data=np.frombuffer(depth, dtype=np.uint8))
    if frame.T_world_cam is not None:
        (x, y, z), q = T_to_pose(frame.T_world_cam)  # quaternion xyzw, ROS order
        map_hdr = _header(ts, frame.stamp_ns, topics.gt_world_frame)
        Vec, Quat = T["geometry_msgs/msg/Vector3"], T["geometry_msgs/msg/Quaternion"]
        Point = T["geometry_msgs/msg/Point"]
        quat = Quat(x=q[0], y=q[1], z=q[2], w=q[3])
        tfs = T["geometry_msgs/msg/TransformStamped"](
            header=map_hdr, child_frame_id=topics.gt_camera_frame,
            transform=T["geometry_msgs/msg/Transform"](
                translation=Vec(x=x, y=y, z=z),
                rotation=quat))
        msgs["tf"] = T["tf2_msgs/msg/TFMessage"](transforms=[tfs])
        msgs["pose"] = T["geometry_msgs/msg/PoseStamped"](
            header=map_hdr, pose=T["geometry_msgs/msg/Pose"](
                position=Point(x=x, y=y, z=z),
                orientation=quat))
    return msgs


def write_bag(sequence: SyntheticSequence, bag_dir: str | Path, *,
              encoding: ImageEncoding | str = ImageEncoding.RGB8,
              storage: BagStorage | str = BagStorage.MCAP,
              topics: BagTopics = BagTopics()) -> Path:
    """Write ``sequence`` to a new rosbag2 directory.

    Args:
        bag_dir: directory to create (must not exist).
        encoding: colour image encoding; storage: MCAP (default) or sqlite3.

    Returns:
        ``bag_dir``.

    Raises:
        FileExistsError: ``bag_dir`` exists; ValueError: bad encoding/storage or empty sequence.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    encoding = _parse_enum(ImageEncoding, encoding, "image encoding")
    storage = _parse_enum(BagStorage, storage, "bag storage")
    bag_dir = Path(bag_dir)
    if bag_dir.exists():
        raise FileExistsError(f"bag directory {bag_dir} already exists; choose a new --out")
    if not sequence.frames:
        raise ValueError("cannot write an empty sequence")
    ts = _typestore()
    plugin = StoragePlugin.MCAP if storage is BagStorage.MCAP else StoragePlugin.SQLITE3
    first = sequence.frames[0]
    has_depth = first.depth is not None
    has_pose = first.T_world_cam is not None
    keys = ["image", "camera_info"] + (["depth"] if has_depth else []) + (
        ["tf", "pose"] if has_pose else [])
    with Writer(bag_dir, version=BAG_METADATA_VERSION, storage_plugin=plugin) as writer:
        conns = {k: writer.add_connection(getattr(topics, k), _TYPES[k], typestore=ts)
                 for k in keys + ["info"]}
        info = ts.types["std_msgs/msg/String"](data=json.dumps(sequence.info, sort_keys=True))
        writer.write(conns["info"], first.stamp_ns, ts.serialize_cdr(info, _TYPES["info"]))
        for frame in sequence.frames:
            if (frame.depth is not None) != has_depth or (frame.T_world_cam is not None) != has_pose:
                raise ValueError(f"frame {frame.index} lacks depth or pose that frame 0 has")
            for key, msg in frame_messages(ts, frame, encoding, topics).items():
                writer.write(conns[key], frame.stamp_ns, ts.serialize_cdr(msg, _TYPES[key]))
    log.info("wrote %d frames to %s (%s, %s)", len(sequence), bag_dir, storage.value,
             encoding.value)
    return bag_dir


def _stamp_ns(header) -> int:
    return int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)


def _check_topic_types(bag_dir: Path, by_topic: dict, topics: BagTopics) -> None:
    """Each topic we read must carry the message type we expect (named in the error)."""
    from mast3r_ros.errors import InputError

    for key, msgtype in _TYPES.items():
        conn = by_topic.get(getattr(topics, key))
        if conn is not None and conn.msgtype != msgtype:
            raise InputError(f"bag {bag_dir}: topic {conn.topic} carries {conn.msgtype}; expected "
                             f"{msgtype}")


def _camera(bag_dir: Path, msg, stamp: int):
    """(K, undistorter or None) of a CameraInfo message, K checked with ``check_K``."""
    from mast3r_ros.geometry.distortion import Undistorter
    from mast3r_ros.geometry.intrinsics import check_K

    try:
        K = check_K(np.asarray(msg.k, dtype=np.float64).reshape(3, 3), "camera_info.k")
        und = Undistorter.create(K, msg.distortion_model, np.asarray(msg.d, dtype=np.float64))
    except ValueError as exc:
        raise type(exc)(f"bag {bag_dir}: camera info at stamp {stamp} ns: {exc}") from None
    return K, und


def iter_bag(bag_dir: str | Path, topics: BagTopics = BagTopics(), *, max_pending: int = 64):
    """Stream the frames of a bag (see ``read_bag``) without holding the sequence.

    Messages are joined by header stamp; a frame is yielded once its image, camera info and
    the depth / pose messages the bag has are in, or when more than ``max_pending`` stamps
    wait (oldest first, with what arrived). Images of a camera with distortion are
    undistorted (OpenCV, ``geometry.distortion``) and keep ``K``.

    Yields:
        ``SyntheticFrame`` in stamp order of completion (index counts from 0).

    Raises:
        FileNotFoundError: no bag. ValueError (``InputError``): a missing image or camera-info
            topic, a topic of the wrong message type, a bad K or distortion, an image without
            camera info at its stamp, an unsupported encoding.
    """
    from rosbags.rosbag2 import Reader

    bag_dir = Path(bag_dir)
    if not (bag_dir / "metadata.yaml").is_file():
        raise FileNotFoundError(f"no rosbag2 at {bag_dir} (metadata.yaml missing)")
    ts = _typestore()
    cams: dict[tuple, tuple] = {}
    with Reader(bag_dir) as reader:
        by_topic = {c.topic: c for c in reader.connections}
        for need in (topics.image, topics.camera_info):
            if need not in by_topic:
                raise ValueError(f"bag {bag_dir} has no topic {need}; it has {sorted(by_topic)}")
        _check_topic_types(bag_dir, by_topic, topics)
        use_pose = topics.pose in by_topic
        # ground truth on /tf: our own frames, or the link older bags used
        gt_links = {(topics.gt_world_frame, topics.gt_camera_frame),
                    (topics.legacy_map_frame, topics.camera_frame)}
        need = {"image", "info"} | ({"depth"} if topics.depth in by_topic else set()) | (
            {"pose"} if use_pose or topics.tf in by_topic else set())
        wanted = [c for c in reader.connections
                  if c.topic in {topics.image, topics.camera_info, topics.depth, topics.pose,
                                 topics.tf, topics.info}]
        pending: dict[int, dict] = {}
        index = 0

        def make(stamp: int, parts: dict):
            nonlocal index
            if "info" not in parts:
                raise ValueError(f"image at stamp {stamp} ns has no camera info with the same stamp")
            K, und = parts["info"]
            rgb = parts["image"] if und is None else und(parts["image"])
            frame = SyntheticFrame(index, stamp, rgb, K, parts.get("depth"), parts.get("pose"))
            index += 1
            return frame

        def ready():
            while pending:
                done = [s for s, p in pending.items() if need <= p.keys()]
                if done:
                    s = min(done)
                elif len(pending) > max_pending:
                    s = min(pending)
                    if "image" not in pending[s]:
                        pending.pop(s)  # camera info / pose without an image: nothing to yield
                        continue
                else:
                    return
                yield make(s, pending.pop(s))

        for conn, _, raw in reader.messages(connections=wanted):
            msg = ts.deserialize_cdr(raw, conn.msgtype)
            if conn.topic == topics.info:
                continue
            if conn.topic == topics.tf:
                if use_pose:
                    continue
                for tf in msg.transforms:
                    if (tf.header.frame_id, tf.child_frame_id) in gt_links:
                        t, q = tf.transform.translation, tf.transform.rotation
                        pending.setdefault(_stamp_ns(tf.header), {})["pose"] = pose_to_T(
                            [t.x, t.y, t.z], [q.x, q.y, q.z, q.w])
                yield from ready()
                continue
            stamp = _stamp_ns(msg.header)
            slot = pending.setdefault(stamp, {})
            if conn.topic == topics.image:
                arr = image_codec.decode(msg.data, msg.height, msg.width, msg.step,
                                         msg.encoding, bool(msg.is_bigendian))
                slot["image"] = image_codec.to_rgb(arr, msg.encoding)
            elif conn.topic == topics.camera_info:
                key = (tuple(np.asarray(msg.k, dtype=np.float64)), msg.distortion_model,
                       tuple(np.asarray(msg.d, dtype=np.float64)))
                if key not in cams:
                    cams[key] = _camera(bag_dir, msg, stamp)
                slot["info"] = cams[key]
            elif conn.topic == topics.depth:
                if msg.encoding != "32FC1":
                    raise ValueError(f"depth encoding {msg.encoding!r} not supported (32FC1 only)")
                slot["depth"] = image_codec.decode(msg.data, msg.height, msg.width, msg.step,
                                                   "32FC1", bool(msg.is_bigendian))
            elif conn.topic == topics.pose:
                p, q = msg.pose.position, msg.pose.orientation
                slot["pose"] = pose_to_T([p.x, p.y, p.z], [q.x, q.y, q.z, q.w])
            yield from ready()
        for s in sorted(pending):
            if "image" in pending[s]:
                yield make(s, pending[s])


def read_bag(bag_dir: str | Path, topics: BagTopics = BagTopics(), *,
             max_bytes: int | None = None) -> SyntheticSequence:
    """Load a bag (ours, or any with colour/mono 8-bit images and camera info) into frames.

    Images, camera info, depth and ground-truth poses are joined by header stamp; depth
    and poses are None when the bag lacks those topics. Pose comes from ``topics.pose``,
    else from ``/tf`` (``gt_world_frame -> gt_camera_frame``, or in older bags
    ``legacy_map_frame -> camera_frame``). K is checked (``check_K``), topics
    must carry the expected message types, distorted images are undistorted. The frames
    held may not exceed ``max_bytes`` (default ``limits.MAX_BAG_BYTES``): stream long bags
    with ``iter_bag`` instead.

    Raises:
        FileNotFoundError: no bag at ``bag_dir``; ValueError: see ``iter_bag``;
        LimitError: the decoded frames exceed ``max_bytes``.
    """
    from mast3r_ros.errors import LimitError
    from mast3r_ros.limits import MAX_BAG_BYTES

    bag_dir = Path(bag_dir)
    limit = MAX_BAG_BYTES if max_bytes is None else int(max_bytes)
    frames, total = [], 0
    for f in iter_bag(bag_dir, topics):
        total += f.rgb.nbytes + (f.depth.nbytes if f.depth is not None else 0)
        if total > limit:
            raise LimitError(f"bag {bag_dir}: the decoded frames exceed {limit / 2**30:.2f} GiB after "
                             f"{len(frames)} frames; read it with iter_bag() (streaming) or pass max_bytes")
        frames.append(f)
    frames.sort(key=lambda f: f.stamp_ns)
    frames = [SyntheticFrame(i, f.stamp_ns, f.rgb, f.K, f.depth, f.T_world_cam)
              for i, f in enumerate(frames)]
    meta = _read_info(bag_dir, topics)
    log.info("read %d frames from %s", len(frames), bag_dir)
    return SyntheticSequence(tuple(frames), meta)


def _read_info(bag_dir: Path, topics: BagTopics) -> dict:
    """The ``/synth/info`` JSON settings of a bag ({} when absent or not a JSON object)."""
    from rosbags.rosbag2 import Reader

    ts = _typestore()
    with Reader(bag_dir) as reader:
        conns = [c for c in reader.connections if c.topic == topics.info
                 and c.msgtype == _TYPES["info"]]
        if not conns:  # rosbags reads every topic when given no connections
            return {}
        for conn, _, raw in reader.messages(connections=conns):
            try:
                meta = json.loads(ts.deserialize_cdr(raw, conn.msgtype).data)
            except (ValueError, RecursionError):
                log.warning("bag %s: %s is not JSON; ignored", bag_dir, topics.info)
                return {}
            return meta if isinstance(meta, dict) else {}
    return {}


def write_dataset(sequence: SyntheticSequence, out_dir: str | Path, *,
                  encoding: ImageEncoding | str = ImageEncoding.RGB8,
                  storage: BagStorage | str = BagStorage.MCAP,
                  topics: BagTopics = BagTopics()) -> tuple[Path, Path]:
    """Write ``out_dir/bag/`` and ``out_dir/groundtruth.tum`` (stamps as ``sec.nanosec``).

    Returns:
        (bag directory, TUM file). Raises FileExistsError if ``out_dir/bag`` exists.
    """
    from mast3r_ros.evaluation.trajectory import write_tum

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bag_dir = write_bag(sequence, out_dir / "bag", encoding=encoding, storage=storage,
                        topics=topics)
    tum = out_dir / "groundtruth.tum"
    write_tum(tum, sequence.stamps_ns, sequence.poses)
    return bag_dir, tum
