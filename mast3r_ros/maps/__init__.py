"""Versioned, atomic on-disk map folders shared by relocalization and SLAM (ROS-free).

``save_map_folder`` / ``load_map_folder``: a folder with ``manifest.json`` (format version,
kind, engine identity, keyframes, array table) and ``arrays.npz`` (no pickle). See
``mast3r_ros.maps.folder`` for the format and the atomic-save protocol.
"""
from mast3r_ros.maps.folder import (
    ARRAYS_FILE, FORMAT_VERSION, MANIFEST_FILE, READABLE_VERSIONS, MapFormatError, keyframe_entry,
    load_map_folder, parse_keyframes, save_map_folder,
)

__all__ = ["ARRAYS_FILE", "FORMAT_VERSION", "MANIFEST_FILE", "MapFormatError", "READABLE_VERSIONS",
           "keyframe_entry",
           "load_map_folder", "parse_keyframes", "save_map_folder"]
