"""Typed errors of mast3r_ros: every one names the input, what was expected and what arrived.

All derive from the built-in class callers already catch (``ValueError`` for bad input,
``RuntimeError`` for checkpoints and network results), so existing ``except ValueError``
code keeps working; the CLI (``mast3r_ros.cli.main``) turns them into
``mast3r-ros CMD: error: ...`` and exit status 2.

``argument`` (optional) names the command-line argument or API parameter the value came
from (``"--out"``, ``"IMG1"``, ``"config.enc_depth"``); the CLI prefixes it.
"""
from __future__ import annotations

__all__ = ["Mast3rError", "InputError", "ConfigError", "LimitError", "CheckpointError",
           "NonFiniteError", "OutputPathError"]


class Mast3rError(Exception):
    """Base of the typed errors. ``argument``: which input was wrong (or None)."""

    def __init__(self, message: str, *, argument: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument


class InputError(Mast3rError, ValueError):
    """A value given by a user, a file or a message is malformed or out of range."""


class ConfigError(InputError):
    """A configuration (dataclass fields, constructor string, JSON) is wrong."""


class LimitError(InputError):
    """A size a user or message controls exceeds its ceiling (memory / time bound)."""


class OutputPathError(InputError):
    """An output path cannot be written (checked before the expensive work starts)."""


class CheckpointError(Mast3rError, RuntimeError):
    """A checkpoint file is unreadable, unsafe, inconsistent or holds bad weights."""


class NonFiniteError(Mast3rError, RuntimeError):
    """Numbers that must be finite (weights, network outputs, descriptors) are not."""
