# Source me: activates .venv and the colcon install, with this checkout's sources first on
# PYTHONPATH (so edits are live and the generated mast3r_ros.msg/.srv still resolve).
_M3R_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_M3R_VENV="$(readlink -f "$_M3R_REPO/.venv")"
# shellcheck disable=SC1091
source "$_M3R_VENV/bin/activate"
export AMENT_PREFIX_PATH="$_M3R_VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$_M3R_VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
if [ -f "$_M3R_REPO/install/setup.bash" ]; then
  _m3r_u=$(set +o | grep nounset); set +u
  # shellcheck disable=SC1091
  source "$_M3R_REPO/install/setup.bash"
  eval "$_m3r_u"; unset _m3r_u
fi
export PYTHONPATH="$_M3R_REPO${PYTHONPATH:+:$PYTHONPATH}"
# Keep DDS traffic of tests on this machine.
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
unset _M3R_REPO _M3R_VENV
