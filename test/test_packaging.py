"""Packaging tells the truth: package.xml against the imports, the ROS-workspace requirements
against the distribution's numpy, and `colcon test` registering the suite."""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# import name -> rosdep key. PIP_ONLY: no rosdep key exists (see the comment in package.xml);
# None: not a dependency of its own (part of one named elsewhere, or a test-local module).
PIP_ONLY = "pip-only"
IMPORT_TO_KEY: dict[str, str | None] = {
    "numpy": "python3-numpy",
    "scipy": "python3-scipy",
    "cv2": "python3-opencv",
    "PIL": "python3-pil",
    "matplotlib": "python3-matplotlib",
    "mpl_toolkits": "python3-matplotlib",
    "skimage": "python3-skimage",
    "tqdm": "python3-tqdm",
    "yaml": "python3-yaml",
    "pytest": "python3-pytest",
    "hypothesis": "python3-hypothesis",
    "psutil": "python3-psutil",
    "rclpy": "rclpy",
    "launch": "launch",
    "launch_ros": "launch_ros",
    "launch_pytest": "launch_pytest",
    "launch_testing": "launch_testing",
    "launch_testing_ros": "launch_testing_ros",
    "rosidl_generator_py": "rosidl_default_runtime",
    "rosidl_runtime_py": "rosidl_default_runtime",
    "builtin_interfaces": "builtin_interfaces",
    "std_msgs": "std_msgs",
    "std_srvs": "std_srvs",
    "sensor_msgs": "sensor_msgs",
    "geometry_msgs": "geometry_msgs",
    "nav_msgs": "nav_msgs",
    "visualization_msgs": "visualization_msgs",
    "tf2_msgs": "tf2_msgs",
    "tf2_ros": "tf2_ros",
    "rosbag2_py": "rosbag2_py",
    "ament_index_python": "ament_index_python",
    "torch": PIP_ONLY,
    "safetensors": PIP_ONLY,
    "poselib": PIP_ONLY,
    "rosbags": PIP_ONLY,
    "faiss": PIP_ONLY,
    "mcap": PIP_ONLY,
    "mcap_ros2": PIP_ONLY,
    "evo": PIP_ONLY,
    "conftest": None,
    "hostile": None,               # test/hostile.py, the RLIMIT_AS harness of the hardening tests
    "two_walks": None,             # test/two_walks.py, two trajectories through one world (map tests)
    "surface_check": None,         # test/surface_check.py, distance of points to the true surface
    "bench_network_modes": None,   # benchmarks/bench_network_modes.py, imported by bench_heads.py
    "rcl_interfaces": "rcl_interfaces",
}
# Declared for the nodes and launch files that ../shared/ROS_API.md names and that parallel
# work is adding (MarkerArray keyframes, /tf, launch/, fuzz and memory tests): allowed to be
# unimported until they land. Remove an entry once its import exists.
ANNOUNCED = {"visualization_msgs", "tf2_msgs", "launch", "launch_ros", "python3-hypothesis",
             "python3-psutil"}


def _declared() -> dict[str, set[str]]:
    root = ET.parse(REPO / "package.xml").getroot()
    out: dict[str, set[str]] = {}
    for tag in ("depend", "exec_depend", "build_depend", "test_depend", "buildtool_depend"):
        out[tag] = {e.text.strip() for e in root.findall(tag)}
    return out


def _python_files(folder: Path) -> list[Path]:
    files = [f for f in folder.rglob("*.py") if "__pycache__" not in f.parts]
    if folder.name == "scripts":  # executables without .py (node scripts, mast3r-ros)
        files += [f for f in folder.iterdir() if f.is_file() and f.suffix == ""
                  and f.read_text(errors="ignore").startswith("#!/usr/bin/env python")]
    return files


def _third_party_imports(files: list[Path]) -> dict[str, set[str]]:
    """top-level import name -> files importing it (absolute imports outside stdlib/us)."""
    found: dict[str, set[str]] = {}
    for f in files:
        tree = ast.parse(f.read_text(), filename=str(f))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "mast3r_ros":
                    continue
                found.setdefault(top, set()).add(str(f.relative_to(REPO)))
    return found


def _interface_packages() -> set[str]:
    """Packages msg/ and srv/ refer to (``pkg/Type``)."""
    pkgs = set()
    for f in list((REPO / "msg").glob("*.msg")) + list((REPO / "srv").glob("*.srv")):
        for line in f.read_text().splitlines():
            m = re.match(r"\s*([a-z_][a-z0-9_]*)/[A-Z]\w*", line.split("#")[0])
            if m:
                pkgs.add(m.group(1))
    return pkgs


def test_package_xml_matches_the_imports():
    """Every import of mast3r_ros/, scripts/, launch/, benchmarks/ is an exec/depend; every
    import of test/ at least a test_depend; every declared key is used (or announced)."""
    declared = _declared()
    runtime_keys = declared["depend"] | declared["exec_depend"]
    test_keys = runtime_keys | declared["test_depend"]
    runtime = _third_party_imports([f for d in ("mast3r_ros", "scripts", "launch", "benchmarks")
                                    if (REPO / d).is_dir() for f in _python_files(REPO / d)])
    tests = _third_party_imports(_python_files(REPO / "test"))

    unknown = sorted((set(runtime) | set(tests)) - set(IMPORT_TO_KEY))
    assert not unknown, (f"imports with no rosdep mapping: {unknown}; add them to IMPORT_TO_KEY "
                         f"in {Path(__file__).name} and to package.xml")
    problems = []
    for name, files in sorted(runtime.items()):
        key = IMPORT_TO_KEY[name]
        if key not in (None, PIP_ONLY) and key not in runtime_keys:
            problems.append(f"{name} (imported by {sorted(files)[0]}) needs <exec_depend>{key}")
    for name, files in sorted(tests.items()):
        key = IMPORT_TO_KEY[name]
        if key not in (None, PIP_ONLY) and key not in test_keys:
            problems.append(f"{name} (imported by {sorted(files)[0]}) needs <test_depend>{key}")
    used = {IMPORT_TO_KEY[n] for n in set(runtime) | set(tests)} | _interface_packages()
    used |= set(re.findall(r"find_package\((\w+)", (REPO / "CMakeLists.txt").read_text()))
    used |= {"rosidl_default_runtime"}  # what the generated msg/srv code runs on
    for tag in ("depend", "exec_depend", "test_depend"):
        for key in sorted(declared[tag] - used - ANNOUNCED):
            problems.append(f"<{tag}>{key}</{tag}> is declared but nothing imports it")
    assert not problems, "\n".join(problems)


def test_one_opencv_and_a_real_maintainer():
    root = ET.parse(REPO / "package.xml").getroot()
    keys = [e.text for e in root.iter() if e.tag.endswith("depend")]
    assert keys.count("python3-opencv") == 1 and not any("opencv-python" in k for k in keys)
    email = root.find("maintainer").get("email")
    assert "@" in email and not email.endswith(".invalid"), email
    ros_ws = (REPO / "requirements" / "ros-workspace.txt").read_text()
    lines = [ln.split("#")[0].strip().lower() for ln in ros_ws.splitlines()]
    assert not [ln for ln in lines if ln.startswith(("opencv", "torch", "numpy"))], \
        "the ROS-workspace requirements must leave OpenCV, numpy and torch to the distribution/user"


def test_colcon_test_registers_the_suite():
    cmake = (REPO / "CMakeLists.txt").read_text()
    block = cmake[cmake.index("if(BUILD_TESTING)"):]
    assert "find_package(ament_cmake_pytest REQUIRED)" in block
    assert re.search(r"ament_add_pytest_test\(\w+ test\b", block)
    assert "ament_cmake_pytest" in _declared()["test_depend"]
    assert "ros-kilted-ament-cmake-pytest" in (REPO / "requirements" / "ros.txt").read_text()


def _pypi_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/safetensors/", timeout=10).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_ros_workspace_requirements_keep_numpy_1(tmp_path):
    """A venv that starts like Jazzy's Python (numpy 1.26.4): resolving our ROS-workspace
    requirements under the constraints installs no numpy, OpenCV or torch; and the
    constraints really refuse a pip OpenCV (the control)."""
    if not _pypi_reachable():
        pytest.skip("PyPI is not reachable from this machine: cannot resolve requirements")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["install", "numpy==1.26.4"], check=True, timeout=300,
                   capture_output=True)
    req = REPO / "requirements"
    report = tmp_path / "report.json"
    subprocess.run(pip + ["install", "--dry-run", "--report", str(report),
                          "-r", str(req / "ros-workspace.txt"), "-c", str(req / "ros-constraints.txt")],
                   check=True, timeout=300, capture_output=True)
    plan = {i["metadata"]["name"].lower(): i["metadata"]["version"]
            for i in json.loads(report.read_text())["install"]}
    assert {"safetensors", "rosbags", "poselib"} <= set(plan), plan
    assert "numpy" not in plan, f"the resolver would replace numpy 1.26.4: {plan}"
    assert not [n for n in plan if n.startswith(("opencv", "torch"))], plan
    # control: under the same constraints a pip OpenCV cannot come in
    out = subprocess.run(pip + ["install", "--dry-run", "opencv-python-headless",
                                "-c", str(req / "ros-constraints.txt")],
                         timeout=300, capture_output=True, text=True)
    assert out.returncode != 0 and "opencv-python-headless" in out.stderr, out.stderr[-2000:]
