#!/usr/bin/env bash
# Run the whole test suite in the project environment (sets it up first if needed).
#
#   bash scripts/test.sh [pytest options]     # CI: the suite through `colcon test`
#   bash scripts/test.sh test/test_x.py [...] # file/node selections: plain pytest
#   MAST3R_TEST_RUNNER=pytest bash scripts/test.sh [...]   # plain pytest, always
#
# `colcon test --packages-select mast3r_ros` runs the pytest suite that CMakeLists.txt registers
# (ament_add_pytest_test); pytest options given here reach it through PYTEST_ADDOPTS
# (e.g. -x, -q, -k EXPR, -m "not slow", --device cuda). pytest's own output is printed
# afterwards (its closing line says N passed), then `colcon test-result`. The exit status is
# non-zero when a test fails.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
MAST3R_SKIP_DEMO=1 bash scripts/setup.sh   # CI runs the tests, not the demo
# shellcheck disable=SC1091
source scripts/env.sh
# Each test process gets its own DDS domain so parallel runs on one machine do not meet.
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( ($$ % 100) + 1 ))}"

runner="${MAST3R_TEST_RUNNER:-colcon}"
for arg in "$@"; do
  # a path selection (test/test_x.py, test/test_x.py::name): colcon's registered test always
  # collects all of test/, so run the selection with plain pytest
  if [ -e "${arg%%::*}" ]; then runner=pytest; fi
done
if [ "$runner" = pytest ]; then
  exec pytest "$@"
fi

PYTEST_ADDOPTS="$(python -c 'import shlex, sys; print(shlex.join(sys.argv[1:]))' "$@")${PYTEST_ADDOPTS:+ $PYTEST_ADDOPTS}"
export PYTEST_ADDOPTS
echo "==> colcon test --packages-select mast3r_ros (pytest options: ${PYTEST_ADDOPTS:-none})"
out="build/mast3r_ros/ament_cmake_pytest/pytest.txt"
rm -f "$out"  # never show an earlier run's output
set +e
colcon --log-level error test --packages-select mast3r_ros --return-code-on-test-failure \
  --event-handlers console_direct- console_cohesion- summary+
rc=$?
set -e
if [ -f "$out" ]; then
  echo "==> pytest output ($out)"
  cat "$out"
else
  echo "scripts/test.sh: no pytest output at $out (did the build register the test? BUILD_TESTING=ON)" >&2
  if [ "$rc" -eq 0 ]; then rc=1; fi
fi
echo "==> colcon test-result"
if ! colcon test-result --test-result-base build/mast3r_ros --verbose; then
  if [ "$rc" -eq 0 ]; then rc=1; fi
fi
exit "$rc"
