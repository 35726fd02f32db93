"""One place that turns any exception of a subcommand into ``error: ...`` text.

``describe(exc, args, parser)`` returns ``(message, exit_status)``. Bad input of every kind
(typed ``mast3r_ros.errors``, ``ValueError``, file-system errors, image-decoder and OpenCV
errors, corrupt archives, exhausted memory) is status 2 with a message that names the
argument when it can be found; anything else is an internal error (status 1, the
traceback only with ``-v``).
"""
from __future__ import annotations

import argparse
import errno
import os

_OS_REASONS = {
    IsADirectoryError: "is a directory, expected a file",
    NotADirectoryError: "a part of the path is a file, not a directory",
    PermissionError: "permission denied",
    FileExistsError: "already exists",
    FileNotFoundError: "no such file or directory",
}
_ERRNO_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EROFS: "the file system is read-only",
    errno.ENAMETOOLONG: "the file name is too long",
    errno.ELOOP: "too many levels of symbolic links",
    errno.EACCES: "permission denied",
}
OOM_HINT = ("the inputs are too large for this machine's memory; use smaller images, a smaller "
            "--size or --batch, or another device")


def _norm(p: str) -> str:
    return os.path.normpath(os.path.abspath(os.fspath(p)))


def _label(action: argparse.Action) -> str:
    if action.option_strings:
        return max(action.option_strings, key=len)
    return str(action.metavar or action.dest).upper()


def argument_for_path(path, args: argparse.Namespace, parser: argparse.ArgumentParser | None) -> str | None:
    """The argument (``--out``, ``IMG1``) whose value is ``path`` or a folder above it."""
    if path is None or parser is None:
        return None
    try:
        target = _norm(path)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        actions = sub.choices[args.command]._actions
    except Exception:  # noqa: BLE001 - best effort; the message still names the path
        return None
    best: tuple[int, str] | None = None
    for action in actions:
        value = getattr(args, action.dest, None)
        if not isinstance(value, str) or not value:
            continue
        v = _norm(value)
        if target == v or target.startswith(v.rstrip(os.sep) + os.sep):
            if best is None or len(v) > best[0]:
                best = (len(v), _label(action))
        elif v.startswith(target.rstrip(os.sep) + os.sep) and best is None:
            best = (0, f"the folder of {_label(action)}")  # e.g. creating its parent failed
    return best[1] if best else None


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("not enough memory", "out of memory", "can't allocate memory",
                            "cannot allocate memory", "bad_alloc"))


def describe(exc: BaseException, args: argparse.Namespace,
             parser: argparse.ArgumentParser | None = None) -> tuple[str, int]:
    """``(message, exit status)`` for an exception raised by a subcommand."""
    from mast3r_ros.errors import Mast3rError

    name = type(exc).__name__
    module = type(exc).__module__
    if isinstance(exc, Mast3rError):
        msg = str(exc)
        arg = exc.argument
        return (f"{arg}: {msg}" if arg and not msg.startswith(arg) else msg), 2
    if _is_oom(exc):
        what = "MemoryError" if isinstance(exc, MemoryError) else _first_line(exc)[:200]
        return f"out of memory ({what}): {OOM_HINT}", 2
    if isinstance(exc, RecursionError):
        return ("an input is nested too deeply to process (Python recursion limit); "
                "check the files given"), 2
    if isinstance(exc, OSError):
        filename = exc.filename
        if filename is None or (len(exc.args) == 1 and isinstance(exc.args[0], str)):
            # our own messages (e.g. FileNotFoundError("image not found: x")) and PIL's
            return str(exc) or name, 2
        reason = next((r for cls, r in _OS_REASONS.items() if isinstance(exc, cls)), None)
        reason = reason or _ERRNO_REASONS.get(exc.errno or -1) or (exc.strerror or name)
        arg = argument_for_path(filename, args, parser)
        where = f"{arg} {os.fspath(filename)!r}" if arg else repr(os.fspath(filename))
        if exc.filename2:
            where += f" -> {os.fspath(exc.filename2)!r}"
        return f"{where}: {reason}", 2
    if name == "DecompressionBombError" or (module.startswith("PIL") and "bomb" in str(exc).lower()):
        return f"image too large to decode safely: {_first_line(exc)}", 2
    if module == "cv2" and name == "error":
        detail = getattr(exc, "err", None) or _first_line(exc)
        return f"OpenCV refused the operation: {detail}", 2
    if name == "BadZipFile":
        return f"not a valid zip archive (.npz / .pth), or it is truncated: {exc}", 2
    if isinstance(exc, EOFError):
        return f"a file ended early (truncated?): {exc or name}", 2
    if isinstance(exc, UnicodeDecodeError):
        return f"expected a text file, got bytes that are not UTF-8 text ({exc.reason} at byte {exc.start})", 2
    if isinstance(exc, (ValueError, RuntimeError)):
        return str(exc), 2
    return (f"internal error {name}: {exc} (this is a bug; rerun with -v for the traceback "
            "and report it)"), 1
