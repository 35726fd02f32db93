#!/usr/bin/env bash
# The main job on an embedded demo: render a synthetic bag (cached), play it through the real
# slam_node, print ATE/RPE against ground truth, write demo_output/trajectory.png (estimate vs
# truth), trajectory.tum and cloud.ply. Without a checkpoint the network-output SIMULATOR
# answers (it says so); MAST3R_CHECKPOINT=/path/to/ckpt.pth runs the network.
#   bash scripts/demo.sh [--frames N] [--out DIR] [--checkpoint CKPT]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
# shellcheck disable=SC1091
source scripts/env.sh
# its own DDS domain, this machine only, so it never meets another run's nodes
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( ($$ % 100) + 101 ))}"
exec python -m mast3r_ros.ros.demo "$@"
