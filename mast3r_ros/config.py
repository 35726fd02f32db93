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
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(
            f"unknown {cls.__name__} key(s) {unknown}; valid keys are {sorted(names)}"
        )
    return cls(**dict(values))
