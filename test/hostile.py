"""Helpers of the hardening tests (issue 12): run ``mast3r-ros`` commands on hostile inputs
in-process or in a subprocess under an address-space limit, and check how they fail."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GIB = 1 << 30

_HARNESS = textwrap.dedent("""
    import io, json, logging, resource, sys, traceback
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch  # noqa: F401 - import once, inside the limit
    from mast3r_ros.cli import main
    out = []
    for argv in json.loads(sys.stdin.read()):
        err = io.StringIO()
        old, sys.stderr = sys.stderr, err
        root = logging.getLogger()
        for h in list(root.handlers):
            root.removeHandler(h)
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 2
        except BaseException:
            rc = "raised"
            traceback.print_exc(file=err)
        finally:
            sys.stderr = old
        out.append({"argv": argv, "rc": rc, "stderr": err.getvalue()})
    print("@@RESULTS@@" + json.dumps(out))
""")


def run_cli_limited(cases: list[list[str]], limit: int = 3 * GIB, timeout: float = 300) -> list[dict]:
    """Run each argv through ``mast3r_ros.cli.main`` in ONE subprocess whose address space is
    capped at ``limit`` bytes (``RLIMIT_AS``): an input that makes a regression allocate
    without bound fails with MemoryError instead of swapping the machine."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run([sys.executable, "-c", _HARNESS, str(limit)], input=json.dumps(cases),
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=str(REPO))
    marker = proc.stdout.rfind("@@RESULTS@@")
    assert marker >= 0, f"harness failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout[marker + len("@@RESULTS@@"):])


def assert_refused(result: dict, command: str, *patterns: str, rc: int = 2) -> None:
    """Exit status ``rc``, one ``mast3r-ros CMD: error: ...`` line matching every pattern
    (regular expressions, case-insensitive), and no traceback."""
    import re

    err = result["stderr"]
    assert "Traceback" not in err, f"{result['argv']}: traceback:\n{err}"
    assert result["rc"] == rc, f"{result['argv']}: exit {result['rc']}, expected {rc}:\n{err}"
    lines = [ln for ln in err.splitlines() if ln.startswith(f"mast3r-ros {command}: error: ")]
    assert len(lines) == 1, f"{result['argv']}: expected one error line:\n{err}"
    for pat in patterns:
        assert re.search(pat, lines[0], re.IGNORECASE), f"{result['argv']}: {pat!r} not in {lines[0]!r}"


def run_main(argv: list[str], capsys) -> dict:
    """In-process ``main(argv)``: {"argv", "rc", "stderr"}; an exception escaping main fails."""
    from mast3r_ros.cli import main

    rc = main(argv)
    return {"argv": argv, "rc": rc, "stderr": capsys.readouterr().err}


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height RGB with a tiny (truncated) image stream: what
    a decompression bomb or a lying file looks like to a loader that trusts the header."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path
