"""Issue 12, class 1: every command translates every error class in one place (cli/_errors.py):
file-system errors name the argument, image-decoder / OpenCV / allocation errors become
``mast3r-ros CMD: error: ...`` with exit 2, outputs are checked before the work starts,
Ctrl-C exits 130 quietly. No case may print a traceback."""
from __future__ import annotations

import argparse
import errno
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hostile import REPO, assert_refused, png_header_only, run_main


@pytest.fixture(scope="module")
def files(tmp_path_factory, reference_dir):
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(d / name)
    (d / "adir").mkdir()
    (d / "afile").write_text("not a folder")
    (d / "text.png").write_text("this is not an image")
    full = (d / "a.png").read_bytes()
    (d / "trunc.png").write_bytes(full[: len(full) // 2])
    png_header_only(d / "bomb.png", 12_000, 10_000)  # above our ceiling, below PIL's
    (d / "binary.tum").write_bytes(b"\xff\xfe\x80\x00" * 256)
    (d / "gt.tum").write_text("".join(f"{i} {i * 0.1} 0 0 0 0 0 1\n" for i in range(10)))
    (d / "withbag").mkdir()
    (d / "withbag" / "bag").mkdir()
    (d / "dir.safetensors").mkdir()
    (d / "dir.png").mkdir()
    np.savez(d / "desc.npz", view1_desc=np.ones((8, 8, 24), np.float32),
             view2_desc=np.ones((8, 8, 24), np.float32))
    return {"dir": d, "ckpt": str(reference_dir / "public" / "mast3r_tiny_public.pth")}


def _cases(f):
    d, ck = f["dir"], f["ckpt"]
    a, b = str(d / "a.png"), str(d / "b.png")
    infer = ["infer", "--checkpoint", ck, "--device", "cpu"]
    match = ["match", "--checkpoint", ck, "--device", "cpu"]
    return [
        # outputs, checked before any work
        ("infer", infer + [a, b, "--out", str(d / "adir")], [r"--out .*adir.* is an existing directory"]),
        ("infer", infer + [a, b, "--out", str(d / "afile" / "x.npz")], [r"--out", r"afile.* is a file, not a directory"]),
        ("infer", infer + [a, b, "--out", ""], [r"--out", r"empty"]),
        ("match", match + [a, b, "--out", str(d / "adir")], [r"--out .* is an existing directory"]),
        ("match", match + [a, b, "--out", str(d / "m.npz"), "--viz", str(d / "v.xyz")], [r"--viz", r"no image writer.*\.xyz"]),
        ("match", match + [a, b, "--out", str(d / "m.npz"), "--viz", str(d / "noext")], [r"--viz", r"no image writer"]),
        ("match", match + [a, b, "--out", str(d / "afile" / "deeper" / "m.npz")], [r"--out", r"is a file, not a directory"]),
        ("match", ["match", "--desc", str(d / "desc.npz"), "--out", str(d / "dir.png")], [r"--out .* is an existing directory"]),
        ("synth", ["synth", "--frames", "2", "--out", str(d / "afile")], [r"--out .*afile.* not a directory"]),
        ("synth", ["synth", "--frames", "2", "--out", str(d / "withbag")], [r"--out .* already holds a bag"]),
        ("synth", ["synth", "--frames", "2", "--out", str(d / "afile" / "sub")], [r"--out", r"is a file, not a directory"]),
        ("eval", ["eval", "--gt", str(d / "gt.tum"), "--est", str(d / "gt.tum"), "--plot", str(d / "p.xyz")], [r"--plot", r"must end in one of"]),
        ("eval", ["eval", "--gt", str(d / "gt.tum"), "--est", str(d / "gt.tum"), "--plot", str(d / "dir.png")], [r"--plot .* is an existing directory"]),
        ("convert", ["convert", ck, str(d / "dir.safetensors"), "--force"], [r"DST .* is an existing directory"]),
        ("convert", ["convert", ck, str(d / "afile" / "x.safetensors")], [r"DST", r"is a file, not a directory"]),
        ("convert", ["convert", ck, str(d / "x.bin")], [r"DST", r"must end in \.safetensors"]),
        # inputs
        ("infer", infer + [str(d / "adir"), b, "--out", str(d / "o.npz")], [r"IMG1", r"is a directory"]),
        ("infer", infer + [str(d / "text.png"), b, "--out", str(d / "o.npz")], [r"IMG1", r"cannot read image"]),
        ("infer", infer + [a, str(d / "trunc.png"), "--out", str(d / "o.npz")], [r"IMG2", r"cannot read image.*trunc"]),
        ("infer", infer + [str(d / "bomb.png"), b, "--out", str(d / "o.npz")], [r"IMG1", r"12000x10000 \(WxH\) = 120,000,000 pixels; the ceiling is 100,000,000"]),
        ("infer", infer + [str(d / "missing.png"), b, "--out", str(d / "o.npz")], [r"image not found"]),
        ("infer", ["infer", "--checkpoint", str(d / "adir"), a, b, "--out", str(d / "o.npz")], [r"--checkpoint", r"is a directory"]),
        ("infer", ["infer", "--checkpoint", str(d / "text.png"), a, b, "--out", str(d / "o.npz")], [r"text\.png", r"not a readable"]),
        ("infer", infer + [a, b, "--out", str(d / "o.npz"), "--size", "100000"], [r"--size", r"2048"]),
        ("eval", ["eval", "--gt", str(d / "adir"), "--est", str(d / "gt.tum")], [r"is a directory"]),
        ("eval", ["eval", "--gt", str(d / "binary.tum"), "--est", str(d / "gt.tum")], [r"binary\.tum", r"not UTF-8"]),
        ("eval", ["eval", "--gt", str(d / "gt.tum"), "--est", str(d / "gt.tum"), "--max-diff", "nan"], [r"--max-diff", r"finite"]),
        ("match", ["match", "--desc", str(d / "adir"), "--out", str(d / "m.npz")], [r"is a directory"]),
        ("match", ["match", "--desc", str(d / "text.png"), "--out", str(d / "m.npz")], [r"not an \.npz"]),
        ("bench", ["bench", "--config", str(d / "adir"), "--height", "32", "--width", "32"], [r"--config", r"neither"]),
    ]


def test_every_command_translates_bad_paths_and_files(files, capsys, one_torch_thread):
    """30 hostile invocations across infer, match, synth, eval, convert, bench: each exits 2
    with one error line naming the argument; nothing is written; no traceback escapes."""
    cases = _cases(files)
    for command, argv, patterns in cases:
        assert_refused(run_main(argv, capsys), command, *patterns)
    assert not (files["dir"] / "o.npz").exists() and not (files["dir"] / "m.npz").exists()
    assert len(cases) >= 30


def _ns(**kw):
    return argparse.Namespace(command="infer", **kw)


def _parser():
    from mast3r_ros.cli import build_parser

    return build_parser("infer")


def test_describe_translates_real_exceptions(tmp_path):
    """The translator on exceptions raised for real (not constructed by hand where possible)."""
    import cv2
    import torch
    from PIL import Image as PILImage

    from mast3r_ros.cli._errors import describe

    args = _ns(checkpoint="c.pth", img1=str(tmp_path / "a.png"), img2="b.png",
               out=str(tmp_path / "out"), verbose=False)
    parser = _parser()
    got = {}
    try:
        np.empty(2**50, np.uint8)  # numpy's own MemoryError
    except MemoryError as exc:
        got["numpy"] = describe(exc, args, parser)
    try:
        torch.empty(2**50, dtype=torch.uint8)  # torch: RuntimeError "not enough memory"
    except RuntimeError as exc:
        got["torch"] = describe(exc, args, parser)
    try:
        cv2.imwrite(str(tmp_path / "x.qqq"), np.zeros((4, 4, 3), np.uint8))
    except cv2.error as exc:
        got["cv2"] = describe(exc, args, parser)
    (tmp_path / "out").mkdir()
    try:
        open(tmp_path / "out", "wb")
    except IsADirectoryError as exc:
        got["isdir"] = describe(exc, args, parser)
    (tmp_path / "f").write_text("x")
    try:
        open(tmp_path / "f" / "g", "wb")
    except NotADirectoryError as exc:
        got["notdir"] = describe(exc, argparse.Namespace(command="infer", out=str(tmp_path / "f" / "g")), parser)
    try:
        zipfile.ZipFile(tmp_path / "f")
    except zipfile.BadZipFile as exc:
        got["zip"] = describe(exc, args, parser)
    old = PILImage.MAX_IMAGE_PIXELS
    try:
        PILImage.MAX_IMAGE_PIXELS = 10
        png_header_only(tmp_path / "b.png", 64, 64)
        PILImage.open(tmp_path / "b.png")
    except PILImage.DecompressionBombError as exc:
        got["bomb"] = describe(exc, args, parser)
    finally:
        PILImage.MAX_IMAGE_PIXELS = old
    try:
        def deep(n):
            return deep(n + 1)
        deep(0)
    except RecursionError as exc:
        got["recursion"] = describe(exc, args, parser)
    got["perm"] = describe(PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "out" / "x")), args, parser)
    got["nospace"] = describe(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out")), args, parser)
    got["type"] = describe(TypeError("unsupported operand"), args, parser)

    assert got["numpy"][1] == got["torch"][1] == 2
    assert got["numpy"][0].startswith("out of memory") and "smaller" in got["numpy"][0]
    assert got["torch"][0].startswith("out of memory")
    assert got["cv2"] == (got["cv2"][0], 2) and "OpenCV" in got["cv2"][0]
    assert got["isdir"] == (f"--out {str(tmp_path / 'out')!r}: is a directory, expected a file", 2)
    assert "--out" in got["notdir"][0] and "not a directory" in got["notdir"][0]
    assert "zip" in got["zip"][0] and got["zip"][1] == 2
    assert "too large" in got["bomb"][0] and got["bomb"][1] == 2
    assert "nested too deeply" in got["recursion"][0]
    assert got["perm"] == (f"--out {str(tmp_path / 'out' / 'x')!r}: permission denied", 2)
    assert got["nospace"][0].endswith("no space left on the device")
    assert got["type"][1] == 1 and "bug" in got["type"][0]


def test_write_failure_at_the_end_names_the_argument(tmp_path, capsys):
    """A file system that refuses the write itself (here /proc, which passes the early
    checks as root) still gives an error line naming --out, not a traceback."""
    target = "/proc/mast3r_ros_hostile/out"
    r = run_main(["eval", "--gt", str(_tum(tmp_path)), "--est", str(_tum(tmp_path)),
                  "--plot", target + ".png"], capsys)
    assert_refused(r, "eval", r"--plot")


def _tum(tmp_path: Path) -> Path:
    p = tmp_path / "t.tum"
    p.write_text("".join(f"{i} {np.sin(i)} {np.cos(i)} 0 0 0 0 1\n" for i in range(12)))
    return p


def test_ctrl_c_exits_130_quietly(tmp_path):
    """SIGINT in the middle of a long synth: exit 130, no traceback, nothing else printed."""
    code = ("import os, signal, sys, threading\n"
            "threading.Timer(3.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()\n"
            "from mast3r_ros.cli import main\n"
            f"sys.exit(main(['synth', '--frames', '20000', '--width', '64', '--height', '48', "
            f"'--out', {str(tmp_path / 'o')!r}]))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 130, p.stderr[-2000:]
    assert "Traceback" not in p.stderr and "KeyboardInterrupt" not in p.stderr, p.stderr[-2000:]
    assert signal.SIGINT == 2
