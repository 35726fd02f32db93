"""``mast3r-ros doctor``: is this environment able to run mast3r_ros, and if not, why.

Checks, in plain words: the Python packages the library needs (numpy, scipy, OpenCV, Pillow,
safetensors, poselib, rosbags), torch and its CUDA, one copy of OpenCV (a pip wheel next to
the distribution's python3-opencv breaks one of them), numpy against the ROS Python extensions
(ROS Humble and Jazzy build their generated message code with numpy 1.x: a pip numpy 2 breaks
them), rclpy and our generated interfaces (``mast3r_ros.msg`` / ``.srv``), faiss, and optionally
that a checkpoint can be read (safe load, no pickle code runs).

Every finding is OK, WARN (works, but slower or with less) or FAIL (something needed is
missing or broken). Exit status: 0 without FAIL, 1 with one (2 stays for bad command lines).
The ROS checks run in a child Python so that a crashing extension cannot take this one down.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

# torch releases the code is written and tested for (the CPU or CUDA build: the user's choice)
TORCH_MIN, TORCH_MAX_MAJOR = (2, 2), 2
# Python modules the ROS-free core imports at run time: (module, pip name, rosdep key)
REQUIRED = (
    ("numpy", "numpy", "python3-numpy"),
    ("scipy", "scipy", "python3-scipy"),
    ("cv2", "opencv-python-headless", "python3-opencv"),
    ("PIL", "pillow", "python3-pil"),
    ("safetensors", "safetensors", "(pip only)"),
    ("poselib", "poselib", "(pip only)"),
    ("rosbags", "rosbags", "(pip only)"),
)
OPTIONAL = (
    ("faiss", "faiss-cpu (or faiss-gpu-cu12)", "fast reciprocal matching falls back to its torch backend"),
    ("matplotlib", "matplotlib", "`eval --plot` cannot draw"),
    ("skimage", "scikit-image", "some synthetic textures are unavailable"),
    ("tqdm", "tqdm", "no progress bars"),
)
OPENCV_DISTS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python",
                "opencv-contrib-python-headless")


class Status(str, Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass
class Finding:
    """One check: ``what`` was checked, its ``status``, what was found and (if not OK) the fix."""

    what: str
    status: Status
    detail: str
    fix: str = ""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check this environment (numpy ABI, torch/CUDA, rclpy, interfaces, OpenCV)",
                       description=__doc__)
    p.add_argument("--checkpoint", default=None,
                   help="also check that this MASt3R checkpoint (.pth / .safetensors) can be read")
    p.add_argument("--no-ros", action="store_true",
                   help="a pip install without ROS: rclpy and the interfaces are not required")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.set_defaults(func=run)


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split("+")[0].split("."):
        digits = "".join(c for c in part if c.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def _import(module: str):
    """(module, None) or (None, reason) without letting an odd import error escape."""
    try:
        return importlib.import_module(module), None
    except Exception as exc:  # noqa: BLE001 - a broken extension raises anything
        return None, f"{type(exc).__name__}: {exc}"


def _version_of(mod, dist: str) -> str:
    v = getattr(mod, "__version__", None)
    if v is None:
        try:
            v = md.version(dist)
        except md.PackageNotFoundError:
            v = "?"
    return str(v)


def _where(mod) -> str:
    f = getattr(mod, "__file__", None)
    if f:
        return str(Path(f).parent)
    return ", ".join(getattr(mod, "__path__", [])) or "?"


def check_python_modules() -> list[Finding]:
    out = []
    for module, pip_name, key in REQUIRED:
        mod, err = _import(module)
        if mod is None:
            out.append(Finding(module, Status.FAIL, f"cannot import {module} ({err})",
                               f"pip install {pip_name}" if key == "(pip only)" else
                               f"in a ROS install: rosdep key {key} (apt); otherwise pip install {pip_name}"))
        else:
            out.append(Finding(module, Status.OK, f"{_version_of(mod, pip_name)} ({_where(mod)})"))
    for module, pip_name, without in OPTIONAL:
        mod, err = _import(module)
        if mod is None:
            out.append(Finding(module, Status.WARN, f"not available ({err}): {without}",
                               f"pip install {pip_name}"))
        else:
            out.append(Finding(module, Status.OK, _version_of(mod, pip_name.split()[0])))
    return out


def check_torch() -> list[Finding]:
    torch, err = _import("torch")
    if torch is None:
        return [Finding("torch", Status.FAIL, f"cannot import torch ({err})",
                        f"install the build you want first, CPU: pip install torch --index-url "
                        f"https://download.pytorch.org/whl/cpu, or a CUDA build (torch >= "
                        f"{TORCH_MIN[0]}.{TORCH_MIN[1]}, < {TORCH_MAX_MAJOR + 1})")]
    v = _version_tuple(torch.__version__)
    out = []
    if v[:2] < TORCH_MIN or v[0] > TORCH_MAX_MAJOR:
        out.append(Finding("torch", Status.FAIL, f"torch {torch.__version__} is outside the supported "
                           f"range >= {TORCH_MIN[0]}.{TORCH_MIN[1]}, < {TORCH_MAX_MAJOR + 1}",
                           "install a torch 2.x release >= 2.2"))
    else:
        out.append(Finding("torch", Status.OK, f"{torch.__version__} ({Path(torch.__file__).parent})"))
    if torch.cuda.is_available():
        out.append(Finding("CUDA", Status.OK, f"{torch.cuda.get_device_name(0)} (torch built for "
                                              f"CUDA {torch.version.cuda})"))
    elif torch.version.cuda:
        out.append(Finding("CUDA", Status.WARN, f"torch is built for CUDA {torch.version.cuda} but sees "
                           "no GPU: everything runs on the CPU (slow for ViT-L)",
                           "check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES"))
    else:
        out.append(Finding("CUDA", Status.WARN, "CPU-only torch build: fine for tests, slow for "
                           "the ViT-L network", "for a GPU install a CUDA torch build"))
    return out


def _opencv_locations() -> list[str]:
    """Every folder on sys.path holding a cv2 module (package folder or extension file)."""
    found = []
    for entry in sys.path:
        p = Path(entry or ".")
        if not p.is_dir():
            continue
        if (p / "cv2").is_dir() or any(p.glob("cv2*.so")) or any(p.glob("cv2*.pyd")):
            found.append(str(p.resolve()))
    return list(dict.fromkeys(found))


def check_opencv() -> list[Finding]:
    dists = sorted({d.metadata["Name"].lower() for d in md.distributions()
                    if (d.metadata["Name"] or "").lower() in OPENCV_DISTS})
    places = _opencv_locations()
    if len(dists) > 1 or len(places) > 1:
        return [Finding("OpenCV copies", Status.FAIL,
                        f"more than one OpenCV: pip wheels {dists or 'none'} in {places}; the one "
                        "found first shadows the other and may need a different numpy",
                        "keep one: in a ROS workspace the distribution's python3-opencv "
                        "(pip uninstall " + " ".join(dists) + "), elsewhere one pip wheel")]
    return [Finding("OpenCV copies", Status.OK, f"one ({dists[0] if dists else 'system'} in "
                                                f"{places[0] if places else '?'})")]


def check_numpy_copies() -> list[Finding]:
    """Two numpy installs with different major versions (pip 2.x over the distribution's 1.x)."""
    versions = {}
    for d in md.distributions():
        if (d.metadata["Name"] or "").lower() == "numpy":
            versions[str(Path(str(d.locate_file(""))).resolve())] = d.version
    majors = {v.split(".")[0] for v in versions.values()}
    if len(majors) > 1:
        where = ", ".join(f"{v} in {p}" for p, v in versions.items())
        return [Finding("numpy copies", Status.WARN,
                        f"numpy {' and '.join(sorted(majors))}.x both installed ({where}); the ROS "
                        "extensions were built against the distribution's",
                        "install with the constraints file: pip install -r "
                        "requirements/ros-workspace.txt -c requirements/ros-constraints.txt")]
    return []


# Run in a child interpreter: imports rclpy and the generated type support of our and
# sensor_msgs' interfaces (C extensions built against numpy), reports JSON on stdout.
_ROS_PROBE = r"""
import json, sys
r = {}
def attempt(key, fn):
    try:
        r[key] = [True, fn() or ""]
    except BaseException as exc:
        lines = str(exc).strip().splitlines()
        r[key] = [False, (type(exc).__name__ + ": " + (lines[-1] if lines else ""))[:300]]
def rclpy_():
    import rclpy
    return getattr(rclpy, "__file__", "")
def interfaces():
    from mast3r_ros.msg import TrackingStatus
    from mast3r_ros.srv import Relocalize
    import mast3r_ros.srv as s
    return str(s.__path__[0]) if hasattr(s, "__path__") else s.__file__
def typesupport():
    from rosidl_generator_py import import_type_support
    import_type_support("mast3r_ros")
    import_type_support("sensor_msgs")
    from sensor_msgs.msg import Image
    Image(data=[1, 2, 3])
    import numpy
    return numpy.__version__
attempt("rclpy", rclpy_)
attempt("interfaces", interfaces)
attempt("typesupport", typesupport)
print("@@" + json.dumps(r))
"""


def check_ros(timeout: float = 120.0) -> list[Finding]:
    proc = subprocess.run([sys.executable, "-c", _ROS_PROBE], capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("@@")), None)
    if line is None:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return [Finding("ROS", Status.FAIL, f"the ROS probe crashed (exit {proc.returncode}): {tail}",
                        "source your ROS setup (source /opt/ros/$ROS_DISTRO/setup.bash) and the "
                        "workspace (source install/setup.bash), then run doctor again")]
    r = json.loads(line[2:])
    numpy_msg = "compiled using NumPy 1.x" in proc.stderr or any(
        "numpy" in str(v[1]).lower() and not v[0] for v in r.values())
    out = []
    ok, detail = r["rclpy"]
    out.append(Finding("rclpy", Status.OK if ok else Status.FAIL,
                       detail if ok else f"cannot import rclpy ({detail})",
                       "" if ok else "source /opt/ros/$ROS_DISTRO/setup.bash (or, without a ROS "
                       "install, pip install -r requirements/ros.txt for the Kilted wheels)"))
    ok, detail = r["interfaces"]
    out.append(Finding("interfaces", Status.OK if ok else Status.FAIL,
                       f"mast3r_ros.msg / .srv in {detail}" if ok else
                       f"our generated interfaces are not importable ({detail})",
                       "" if ok else "build the workspace (colcon build --packages-select "
                       "mast3r_ros) and source install/setup.bash"))
    ok, detail = r["typesupport"]
    if ok:
        out.append(Finding("numpy vs ROS extensions", Status.OK,
                           f"generated message code loads with numpy {detail}"))
    elif numpy_msg:
        out.append(Finding("numpy vs ROS extensions", Status.FAIL,
                           f"the ROS message extensions were built against another numpy than the "
                           f"one imported ({detail})",
                           "keep the distribution's numpy: pip uninstall numpy in this environment, "
                           "then pip install -r requirements/ros-workspace.txt -c "
                           "requirements/ros-constraints.txt"))
    else:
        out.append(Finding("numpy vs ROS extensions", Status.FAIL,
                           f"generated message code does not load ({detail})",
                           "source the ROS setup and the workspace; rebuild with colcon if "
                           "numpy changed since the build"))
    return out


def check_checkpoint(path: str) -> list[Finding]:
    p = Path(path)
    if not p.is_file():
        return [Finding("checkpoint", Status.FAIL, f"{p} does not exist or is not a file",
                        "pass the path of the downloaded .pth or .safetensors")]
    try:
        from mast3r_ros.model.checkpoint import read_checkpoint

        ckpt = read_checkpoint(p)  # weights_only / safetensors: no code from the file runs
    except Exception as exc:  # noqa: BLE001 - any failure is the finding
        return [Finding("checkpoint", Status.FAIL, f"{p} cannot be read: {type(exc).__name__}: {exc}",
                        "download it again (the official .pth or the Hugging Face .safetensors "
                        "with its config.json)")]
    size = p.stat().st_size / 2**20
    return [Finding("checkpoint", Status.OK, f"{p} ({size:.0f} MiB, {len(ckpt.state_dict)} tensors)")]


def collect(*, ros: bool = True, checkpoint: str | None = None) -> list[Finding]:
    """All findings, in the order they are printed."""
    import platform

    findings = [Finding("python", Status.OK, f"{platform.python_version()} ({sys.executable})")]
    if sys.version_info < (3, 10):
        findings[0] = Finding("python", Status.FAIL, f"Python {platform.python_version()}",
                              "mast3r_ros needs Python >= 3.10")
    findings += check_python_modules()
    findings += check_numpy_copies()
    findings += check_opencv()
    findings += check_torch()
    if ros:
        findings += check_ros()
    if checkpoint:
        findings += check_checkpoint(checkpoint)
    return findings


def run(args: argparse.Namespace) -> int:
    findings = collect(ros=not args.no_ros, checkpoint=args.checkpoint)
    failed = [f for f in findings if f.status is Status.FAIL]
    if args.json:
        print(json.dumps([{**asdict(f), "status": f.status.value} for f in findings], indent=2))
    else:
        for f in findings:
            print(f"{f.status.value:5s} {f.what}: {f.detail}")
            if f.fix:
                print(f"      -> {f.fix}")
        warned = sum(f.status is Status.WARN for f in findings)
        print(f"{len(findings)} checks: {len(failed)} failed, {warned} warnings"
              + ("" if failed else " - ready" + ("" if args.no_ros else " (with ROS)")))
    return 1 if failed else 0
