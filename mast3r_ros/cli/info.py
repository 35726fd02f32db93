"""``mast3r-ros info``: what this installation can do."""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print versions and what is available (torch, CUDA, ROS)")
    p.set_defaults(func=run)


def collect() -> dict:
    """Versions of the optional pieces, without importing rclpy."""
    import mast3r_ros

    info: dict = {"mast3r_ros": mast3r_ros.__version__, "python": platform.python_version()}
    for name in ("torch", "numpy", "cv2", "faiss", "poselib", "rosbags", "rclpy"):
        info[name] = importlib.util.find_spec(name) is not None
    if info["torch"]:
        import torch

        info["torch_version"] = torch.__version__
        info["cuda"] = torch.cuda.is_available()
        if info["cuda"]:
            info["cuda_device"] = torch.cuda.get_device_name(0)
    info["ros_interfaces"] = importlib.util.find_spec("mast3r_ros.srv") is not None
    return info


def run(args: argparse.Namespace) -> int:
    print(json.dumps(collect(), indent=2))
    return 0
