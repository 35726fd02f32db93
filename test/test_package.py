"""Package-level guarantees: the ROS-free seam and the command line."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import mast3r_ros

PKG = Path(mast3r_ros.__file__).resolve().parent
CORE_PACKAGES = [p for p in PKG.iterdir() if p.is_dir() and p.name not in ("ros", "__pycache__", "msg", "srv")]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_never_imports_ros():
    """Model, matching, geometry, synth, evaluation and cli stay usable without ROS."""
    ros_roots = ("rclpy", "sensor_msgs", "geometry_msgs", "std_msgs", "nav_msgs", "tf2_msgs",
                 "builtin_interfaces", "mast3r_ros.ros", "mast3r_ros.msg", "mast3r_ros.srv")
    offenders = []
    files = sorted(PKG.glob("*.py")) + [f for d in CORE_PACKAGES for f in d.rglob("*.py")]
    for f in files:
        for name in _imports(f):
            if name.startswith(ros_roots):
                offenders.append(f"{f.relative_to(PKG)} imports {name}")
    assert not offenders, offenders


def test_import_and_cli_help_without_ros_on_path():
    """`import mast3r_ros` and `mast3r-ros --help` work with ROS hidden from sys.path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH")}
    env["PYTHONPATH"] = str(PKG.parent)
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('rclpy', 'sensor_msgs', 'geometry_msgs'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import mast3r_ros\n"
        "from mast3r_ros.cli import main\n"
        "sys.argv = ['mast3r-ros', '--help']\n"
        "main()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage: mast3r-ros" in out.stdout and "info" in out.stdout


def test_cli_info_runs():
    from mast3r_ros.cli import main

    assert main(["info"]) == 0


def test_missing_dependency_is_a_clear_error_not_a_traceback(tmp_path):
    """A pip user without torch running `infer` is told what to install (exit 2)."""
    import numpy as np
    from PIL import Image

    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["PYTHONPATH"] = str(PKG.parent)
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ModuleNotFoundError('No module named torch', name='torch')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from mast3r_ros.cli import main\n"
        "sys.exit(main(['infer', '--checkpoint', 'x.pth', 'a.png', 'b.png', '--out', 'o.npz']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "needs the Python package 'torch'" in out.stderr and "Traceback" not in out.stderr
