"""ROS parameters mirroring a frozen config dataclass, so the core's config stays the one
source of names and defaults: ``TrackerConfig.min_inliers`` is the parameter
``tracking.min_inliers``, nested dataclasses nest (``tracking.match.radius``), Enums are
their string values, tuples are lists. The values read back are turned into the dataclass
by its own ``from_dict`` (unknown keys are errors there, bad values raise ValueError).
"""
from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any


def flatten_defaults(cls: type, prefix: str) -> dict[str, Any]:
    """``{"prefix.field": default}`` for every field of dataclass ``cls`` (recursively),
    as ROS parameter values (Enum -> value, tuple -> list)."""
    return _flatten_instance(cls(), prefix)


def _flatten_instance(inst, prefix: str) -> dict[str, Any]:
    """``flatten_defaults`` of one instance: a nested field keeps ITS value (e.g. the
    mapper's local ``alignment`` default differs from ``AlignmentConfig()``)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(inst):
        value = getattr(inst, f.name)
        name = f"{prefix}.{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(_flatten_instance(value, name))
        elif isinstance(value, Enum):
            out[name] = value.value
        elif isinstance(value, tuple):
            out[name] = list(value)
        elif isinstance(value, (bool, int, float, str, list)):
            out[name] = value
        # other types (None, objects) are not exposed as parameters
    return out


def declare_config(node, cls: type, prefix: str, description: str,
                   config_file: str = "config/slam.yaml") -> list[str]:
    """Declare one read-only parameter per field of ``cls``; returns their names."""
    from rcl_interfaces.msg import ParameterDescriptor

    names = []
    for name, default in flatten_defaults(cls, prefix).items():
        node.declare_parameter(name, default, ParameterDescriptor(
            description=f"{description}: field '{name[len(prefix) + 1:]}' (see {config_file})",
            read_only=True))
        names.append(name)
    return names


def read_config(node, names: list[str], prefix: str) -> dict[str, Any]:
    """The nested dict ``{"field": value, "match": {...}}`` of the parameters ``names``."""
    out: dict[str, Any] = {}
    for name in names:
        keys = name[len(prefix) + 1:].split(".")
        d = out
        for k in keys[:-1]:
            d = d.setdefault(k, {})
        d[keys[-1]] = node.get_parameter(name).value
    return out
