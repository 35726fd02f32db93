#!/usr/bin/env bash
# Run the whole test suite in the project environment (sets it up first if needed).
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
MAST3R_SKIP_DEMO=1 bash scripts/setup.sh   # CI runs the tests, not the demo
# shellcheck disable=SC1091
source scripts/env.sh
# Each test process gets its own DDS domain so parallel runs on one machine do not meet.
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( ($$ % 100) + 1 ))}"
exec pytest "$@"
