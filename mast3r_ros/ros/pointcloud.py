"""``sensor_msgs/PointCloud2`` with xyz + rgb from numpy arrays, and back (vectorised).

Layout (the one rviz2 and PCL expect for coloured clouds): per point ``x, y, z`` as float32
and ``rgb`` as a float32 field whose 4 bytes hold ``0x00RRGGBB`` (little endian), 16 bytes
per point, ``height = 1`` (unordered), ``is_dense = True`` (non-finite points are dropped).
Only message packages are imported, never rclpy.
"""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField

# x, y, z, rgb at offsets 0, 4, 8, 12; little-endian float32 each.
POINT_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
_FIELDS = (("x", 0), ("y", 4), ("z", 8), ("rgb", 12))


def xyz_rgb_to_pointcloud2(xyz: np.ndarray, rgb: np.ndarray | None = None, header=None,
                           ) -> PointCloud2:
    """Build an unordered coloured cloud.

    Args:
        xyz: (N, 3) float, metres, in ``header.frame_id``.
        rgb: (N, 3) uint8 colours, or None (grey 128).
        header: ``std_msgs/Header`` (stamp, frame); None leaves the default.

    Returns:
        ``PointCloud2`` with the finite points (rows with NaN/inf are dropped).

    Raises:
        ValueError: ``xyz`` is not (N, 3), or ``rgb`` is not (N, 3) with the same N.
    """
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must be (N, 3), got shape {xyz.shape}")
    if rgb is None:
        rgb = np.full(xyz.shape, 128, dtype=np.uint8)
    rgb = np.asarray(rgb)
    if rgb.shape != xyz.shape:
        raise ValueError(f"rgb must be (N, 3) like xyz {xyz.shape}, got shape {rgb.shape}")
    keep = np.isfinite(xyz).all(axis=1)
    xyz, rgb = xyz[keep], rgb[keep].astype(np.uint32)
    points = np.empty(len(xyz), dtype=POINT_DTYPE)
    points["x"], points["y"], points["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    points["rgb"] = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    msg = PointCloud2()
    if header is not None:
        msg.header = header
    msg.height, msg.width = 1, int(len(points))
    msg.fields = [PointField(name=n, offset=o, datatype=PointField.FLOAT32, count=1)
                  for n, o in _FIELDS]
    msg.is_bigendian = False
    msg.point_step = POINT_DTYPE.itemsize
    msg.row_step = msg.point_step * msg.width
    msg.is_dense = True
    msg.data = points.tobytes()
    return msg


def pointcloud2_to_xyz_rgb(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray]:
    """Decode a cloud with float32 ``x, y, z`` and packed ``rgb`` fields (any offsets/step).

    Returns:
        (xyz (N, 3) float32, rgb (N, 3) uint8).

    Raises:
        ValueError: a field is missing or not FLOAT32, or the buffer size is inconsistent.
    """
    offsets = {}
    for f in msg.fields:
        offsets[f.name] = (f.offset, f.datatype)
    for name in ("x", "y", "z", "rgb"):
        if name not in offsets:
            raise ValueError(f"PointCloud2 has no field {name!r}; it has {sorted(offsets)}")
        if offsets[name][1] != PointField.FLOAT32:
            raise ValueError(f"PointCloud2 field {name!r} has datatype {offsets[name][1]}, "
                             f"expected FLOAT32 ({PointField.FLOAT32})")
    n = int(msg.width) * int(msg.height)
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if data.size != n * msg.point_step:
        raise ValueError(f"PointCloud2 data has {data.size} bytes, expected width*height*"
                         f"point_step = {n * msg.point_step}")
    order = ">" if msg.is_bigendian else "<"
    dtype = np.dtype({"names": ["x", "y", "z", "rgb"],
                      "formats": [order + "f4"] * 3 + [order + "u4"],
                      "offsets": [offsets[k][0] for k in ("x", "y", "z", "rgb")],
                      "itemsize": msg.point_step})
    pts = data.view(dtype)
    xyz = np.stack([pts["x"], pts["y"], pts["z"]], axis=1).astype(np.float32)
    packed = pts["rgb"]
    rgb = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255],
                   axis=1).astype(np.uint8)
    return xyz, rgb
