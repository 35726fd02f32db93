"""Frozen config dataclasses from plain dicts (YAML, JSON, ROS parameters), rejecting unknown keys."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

C = TypeVar("C")


def config_from_dict(cls: type[C], values: Mapping[str, Any]) -> C:
    """Build the dataclass ``cls`` from ``values``; unknown keys raise ValueError.

    Raises:
        ValueError: a key is not a field of ``cls`` (the message lists the valid ones).
    """
    from mast3r_ros.errors import ConfigError

    if not isinstance(values, Mapping):
        raise ConfigError(f"{cls.__name__}: expected a mapping of field names to values, got "
                          f"{type(values).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    if any(not isinstance(k, str) for k in values):
        raise ConfigError(f"{cls.__name__}: keys must be strings, got {sorted(map(repr, values))}")
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} key(s) {unknown}; valid keys are {sorted(names)}"
        )
    return cls(**dict(values))
